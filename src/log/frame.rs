//! Frames: how one payload is laid out inside a segment.
//!
//! ```text
//! len u32 LE | crc32c u32 LE | payload (len bytes)
//! ```
//! The CRC covers the payload only; `len` is checked against [`MAX_PAYLOAD`] and the bytes
//! left in the file, so a torn length cannot make a reader allocate or skip wildly.

/// Bytes before the payload: length and CRC.
pub const FRAME_HEADER: usize = 8;

/// The largest payload a frame may carry (32 MiB); anything larger is damage.
pub const MAX_PAYLOAD: usize = 32 * 1024 * 1024;

/// Appends one frame holding `payload` to `out`.
pub fn encode_into(out: &mut Vec<u8>, payload: &[u8]) {
    debug_assert!(!payload.is_empty() && payload.len() <= MAX_PAYLOAD);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Why the bytes at some offset are not a whole, intact frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameFault {
    /// Fewer bytes remain than the frame header or its declared length needs.
    Truncated { needed: usize, available: usize },
    /// A length of zero or above [`MAX_PAYLOAD`].
    BadLength(u32),
    /// The payload does not match its CRC.
    BadCrc { stored: u32, computed: u32 },
}

impl std::fmt::Display for FrameFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameFault::Truncated { needed, available } => {
                write!(f, "frame cut short ({available} of {needed} bytes present)")
            }
            FrameFault::BadLength(len) => write!(f, "impossible frame length {len}"),
            FrameFault::BadCrc { stored, computed } => {
                write!(
                    f,
                    "CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
        }
    }
}

/// Reads the frame at the start of `bytes`: its payload and the total bytes it spans.
pub fn decode(bytes: &[u8]) -> Result<(&[u8], usize), FrameFault> {
    if bytes.len() < FRAME_HEADER {
        return Err(FrameFault::Truncated {
            needed: FRAME_HEADER,
            available: bytes.len(),
        });
    }
    let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes"));
    let stored = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    if len == 0 || len as usize > MAX_PAYLOAD {
        return Err(FrameFault::BadLength(len));
    }
    let total = FRAME_HEADER + len as usize;
    if bytes.len() < total {
        return Err(FrameFault::Truncated {
            needed: total,
            available: bytes.len(),
        });
    }
    let payload = &bytes[FRAME_HEADER..total];
    let computed = crc32c::crc32c(payload);
    if computed != stored {
        return Err(FrameFault::BadCrc { stored, computed });
    }
    Ok((payload, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode_into(&mut buf, b"hello");
        encode_into(&mut buf, b"world!");
        let (p, n) = decode(&buf).unwrap();
        assert_eq!((p, n), (&b"hello"[..], 13));
        let (p, _) = decode(&buf[n..]).unwrap();
        assert_eq!(p, b"world!");
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let mut buf = Vec::new();
        encode_into(&mut buf, b"some payload bytes");
        for i in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(decode(&bad).is_err(), "flip of bit {i} went unnoticed");
        }
    }

    #[test]
    fn short_and_empty_frames_are_faults() {
        assert!(matches!(decode(&[1, 0]), Err(FrameFault::Truncated { .. })));
        assert_eq!(decode(&[0; 8]), Err(FrameFault::BadLength(0)));
        let mut buf = Vec::new();
        encode_into(&mut buf, b"abc");
        assert!(matches!(
            decode(&buf[..buf.len() - 1]),
            Err(FrameFault::Truncated { .. })
        ));
    }
}

//! The registry of format migrations: one forward step per format version, each turning one
//! segment file of version `from` into version `to`, cursors and records unchanged.
//! Included by `src/tool/migrate.rs`; each step has a fixture in `migrations/v<from>/` and a
//! test in `tests/it/log_tool.rs` and `tests/it/golden_format.rs`.

/// One forward step.
pub struct Step {
    /// The version it reads.
    pub from: u32,
    /// The version it writes.
    pub to: u32,
    /// What changes, for the operator.
    pub describe: &'static str,
    /// The new bytes of one segment.
    pub apply: fn(&[u8]) -> Result<Vec<u8>, String>,
}

/// Every step, in order.
pub const STEPS: &[Step] = &[Step {
    from: 1,
    to: 2,
    describe: "header grows from 32 to 48 bytes: flags, covers_upto and horizon for compaction",
    apply: v1_to_v2,
}];

/// Version 1 → 2: a new 48-byte header with the same first cursor and no compaction marks;
/// the frames after the old 32-byte header are copied byte for byte.
fn v1_to_v2(old: &[u8]) -> Result<Vec<u8>, String> {
    use crate::log::segment::{HEADER_LEN_V1, Header};
    let header = Header::decode(old).map_err(|f| f.to_string())?;
    if header.version != 1 {
        return Err(format!(
            "expected a version-1 segment, found version {}",
            header.version
        ));
    }
    let mut new = Header::new(header.first_cursor).encode().to_vec();
    new.extend_from_slice(&old[HEADER_LEN_V1..]);
    Ok(new)
}

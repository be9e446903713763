//! The SSE wire form of an event, encoded once per event and shared by every subscriber.

use bytes::{BufMut, Bytes, BytesMut};

use crate::log::Cursor;

/// `id: <cursor>\nevent: <name>\ndata: <json>\n\n`.
///
/// Event names carry no control characters and `data` is compact JSON (no raw newline),
/// so each field stays on its one line.
///
/// An event named like the server's own frames (`broker.…`, refused since, but possibly in a
/// log written before) is no frame at all: streams pass over it as over a filtered event, so
/// it can never pose as the server ending or resetting a stream. History still lists it.
pub fn event(cursor: Cursor, name: &str, data: &str) -> Bytes {
    if name.starts_with(crate::state::validate::RESERVED_EVENT_PREFIX) {
        return Bytes::new();
    }
    // Through `itoa`'s stack buffer: neither a string per event nor `fmt`'s machinery.
    let mut digits = itoa::Buffer::new();
    let cursor = digits.format(cursor);
    // Exactly the frame's length: a buffer with room to spare becomes `Bytes` through one
    // more allocation (a shared header), and the spare room stays with the frame as long as
    // the tenant's ring keeps it.
    let len = FRAME_FIXED.len() + cursor.len() + name.len() + data.len();
    let mut out = BytesMut::with_capacity(len);
    out.put_slice(b"id: ");
    out.put_slice(cursor.as_bytes());
    out.put_slice(b"\nevent: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(data.as_bytes());
    out.put_slice(b"\n\n");
    debug_assert_eq!(out.len(), len);
    out.freeze()
}

/// The bytes of an [`event`] frame besides its cursor, name and data.
const FRAME_FIXED: &str = "id: \nevent: \ndata: \n\n";

/// The `data:` of an envelope subscriber (`/sse?envelope=true`):
/// `{"id":"<uuid>","at":"<RFC 3339>","by":"<username>"|null,"data":<data>}`. `data` is
/// compact JSON already, so it is spliced in, not parsed again.
pub fn envelope(id: &[u8; 16], at_ms: i64, by: Option<&str>, data: &str) -> String {
    let mut out = envelope_head(id, at_ms, by, data.len() + 1);
    out.push_str(data);
    out.push_str(ENVELOPE_TAIL);
    out
}

/// What an envelope holds after its data.
pub const ENVELOPE_TAIL: &str = "}";

/// An envelope up to its data (`{"id":…,"data":`), with room for `more` bytes: a frame that
/// spans chunks sends the data between this and [`ENVELOPE_TAIL`] without copying it.
pub fn envelope_head(id: &[u8; 16], at_ms: i64, by: Option<&str>, more: usize) -> String {
    let by = serde_json::to_string(&by).expect("a string or null serializes");
    let mut out = String::with_capacity(more + by.len() + 90);
    out.push_str(r#"{"id":""#);
    out.push_str(
        uuid::Uuid::from_bytes(*id)
            .hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    );
    out.push_str(r#"","at":""#);
    out.push_str(&rfc3339(at_ms));
    out.push_str(r#"","by":"#);
    out.push_str(&by);
    out.push_str(r#","data":"#);
    out
}

/// Milliseconds since the Unix epoch as RFC 3339 in UTC with milliseconds,
/// `2026-12-04T19:12:56.123Z` (civil-from-days, H. Hinnant: no date crate for one format).
pub fn rfc3339(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let secs = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        ms_of_day % 1000
    )
}

/// The event name of a frame [`event`] encoded (its second line).
pub fn event_name(frame: &[u8]) -> Option<&str> {
    let rest = frame.strip_prefix(b"id: ")?;
    let line = rest.iter().position(|&b| b == b'\n')?;
    let rest = rest[line + 1..].strip_prefix(b"event: ")?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// The frame that tells a client its resume point could not be honoured and a snapshot
/// follows.
pub fn reset(reason: &str, cursor: Cursor) -> Bytes {
    let data = serde_json::json!({ "reason": reason, "cursor": cursor });
    Bytes::from(format!("event: broker.reset\ndata: {data}\n\n"))
}

/// Why the server ends a stream, sent as the last frame's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The user was revoked.
    Revoked,
    /// The user's password or tenant changed (or anything else that moved their credential
    /// epoch: new scopes, two-factor turned on).
    CredentialsChanged,
    /// The admin deleted the user.
    Deleted,
    /// The server is stopping: reconnect (here or to another node) with `Last-Event-ID`.
    Shutdown,
    /// The credential that opened the stream expired (a JWT's `exp`): reconnect with a fresh
    /// one and `Last-Event-ID`.
    Expired,
}

impl CloseReason {
    /// The word clients see.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Revoked => "revoked",
            CloseReason::Deleted => "deleted",
            CloseReason::CredentialsChanged => "credentials_changed",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Expired => "expired",
        }
    }
}

/// The last frame of a stream the server ends: `event: broker.closed`, `data:
/// {"reason": …, "cursor": …}`. `id:` is the subscriber's cursor, so an EventSource that
/// reconnects (after a restart, or a new login) resumes exactly where it was.
pub fn closed(reason: CloseReason, cursor: Cursor) -> Bytes {
    let data = serde_json::json!({ "reason": reason.as_str(), "cursor": cursor });
    Bytes::from(format!(
        "id: {cursor}\nevent: broker.closed\ndata: {data}\n\n"
    ))
}

/// A comment line that keeps proxies from closing an idle stream.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// How long a client should wait before reconnecting, sent once at connect.
pub fn retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_411_576_123), "2026-12-04T19:12:56.123Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn an_envelope_wraps_the_data_as_json() {
        let text = envelope(&[0xab; 16], 0, Some("al\"ice"), r#"{"a":[1]}"#);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["id"], "abababab-abab-abab-abab-abababababab");
        assert_eq!(v["at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["by"], "al\"ice");
        assert_eq!(v["data"], serde_json::json!({"a": [1]}));
        let admin: serde_json::Value =
            serde_json::from_str(&envelope(&[0; 16], 0, None, "1")).unwrap();
        assert!(admin["by"].is_null());
    }

    #[test]
    fn an_event_frame_carries_its_cursor_name_and_data() {
        for cursor in [0, 7, u64::MAX] {
            let frame = event(cursor, "e", "{}");
            assert_eq!(
                frame,
                format!("id: {cursor}\nevent: e\ndata: {{}}\n\n").as_bytes()
            );
        }
    }

    #[test]
    fn the_name_of_an_event_frame_is_read_back() {
        for name in ["e", "a b", "ünï:code", "x".repeat(255).as_str()] {
            let frame = event(1234, name, r#"{"event: no":"id: 1\n"}"#);
            assert_eq!(event_name(&frame), Some(name));
        }
        assert_eq!(event_name(&reset("r", 1)), None);
        assert_eq!(event_name(KEEP_ALIVE), None);
        assert_eq!(event_name(b"id: 1"), None);
    }
}

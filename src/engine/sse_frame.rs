//! The SSE wire form of an event, encoded once per event and shared by every subscriber.

use bytes::{BufMut, Bytes, BytesMut};

use crate::log::Cursor;

/// `id: <cursor>\nevent: <name>\ndata: <json>\n\n`.
///
/// Event names carry no control characters and `data` is compact JSON (no raw newline),
/// so each field stays on its one line.
pub fn event(cursor: Cursor, name: &str, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(name.len() + data.len() + 40);
    out.put_slice(b"id: ");
    out.put_slice(cursor.to_string().as_bytes());
    out.put_slice(b"\nevent: ");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(data.as_bytes());
    out.put_slice(b"\n\n");
    out.freeze()
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
}

impl CloseReason {
    /// The word clients see.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Revoked => "revoked",
            CloseReason::Deleted => "deleted",
            CloseReason::CredentialsChanged => "credentials_changed",
            CloseReason::Shutdown => "shutdown",
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

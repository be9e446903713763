//! The cursor: a record's position in the log, shared by the log (which orders bytes by it)
//! and the rules (which stamp records with it). A leaf module, so that `state` names a cursor
//! without depending on the log.

/// A record's position in the log: strictly increasing, starting at 1, never reused. It is
/// also the SSE `id:` of an event.
pub type Cursor = u64;

//! Broker: a real-time backend in one binary, event-sourced on an append-only log.
//!
//! Every write is a [`state::Record`] appended to the segmented [`log`]; the log folded by
//! [`state::evolve`] is the state; SSE subscribers tail the log. A map of the crate:
//!
//! - [`log`] — bytes on disk: segments, frames, group-committed appends, recovery, reads.
//! - [`state`] — the rules, no I/O: records, commands, `decide`, `evolve`, projections.
//! - [`cursor`] — a record's position, the one thing `log` and `state` share.
//! - [`engine`] — the writer thread (decide → append → evolve → publish), the published
//!   state, and per-tenant fan-out to subscribers.
//! - [`auth`] — passwords, JWT, credentials, TOTP, clock: pure helpers, no routes.
//! - [`http`] — `routes/` (the routes of API.md, one file per group) and `server/`
//!   (connections, limits, TLS, CORS, direct SSE connections, metrics); errors mapped in one
//!   place.
//! - [`tool`] — `broker log …` subcommands.
//! - [`config`] — flags → validated configuration.
//! - [`ntp`] — the background task that keeps the clock's offset right.
//! - [`coarse_clock`] — the kernel's tick-granular time, for per-request reads that need no
//!   finer (token expiry, insert ids and quota).
//!
//! Dependencies point one way: `http`, `tool` → `engine` → `log`, `state`; `http` → `auth`.

pub mod auth;
pub mod coarse_clock;
pub mod config;
pub mod cursor;
pub mod engine;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod log;
pub mod log_budget;
pub mod ntp;
pub mod state;
pub mod tool;

//! The rules of Broker, with no I/O: record kinds, commands, `decide`, `evolve`, projections.
//!
//! `decide(&impl View, Command, now)` says which records a command produces or why it is refused;
//! `evolve(&mut State, &Record)` folds one record into the projections. The server's writer,
//! the log tool's replay, the tests and the fuzz targets all use these two functions.

pub mod command;
pub mod decide;
pub mod evolve;
pub mod idempotency;
pub mod lookalike;
pub mod projection;
pub mod record;
pub mod validate;
pub mod view;

pub use command::{Author, Command};
pub use decide::{Decision, Rejection, TenantLimits, decide, recheck};
pub use evolve::{evolve, evolve_archived, evolve_into};
pub use projection::{LatestEvent, RESET_CODE_TRIES, ResetCode, State, User};
pub use record::{Record, RecordKind};
pub use view::{Fold, Inserted, Layered, Overlay, View};

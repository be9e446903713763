//! `broker log …`: tools that work on a log directory.

pub mod verify;

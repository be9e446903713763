//! Broker's integration tests, as one crate: one binary to build and link instead of one per
//! file (most of a clean build's link time). Each module is one area; `common` starts the real
//! `broker` binary on a loopback port with a fresh data directory and speaks its API.

mod common;

mod acme;
mod admin_insert;
mod admin_token;
mod api_docs;
mod browser_auth;
mod checkpoints;
mod console;
mod crash;
mod fake_clock;
mod faults;
mod file_modes;
mod filtered;
mod fuzz_corpus;
mod golden_format;
mod history;
mod hostile;
mod hostile_files;
mod http_api;
mod idempotency;
mod identity;
mod js_clients;
mod log_backend;
mod log_tool;
mod multinode;
mod operations;
mod readme;
mod recovery;
mod replay;
mod retention;
mod scopes;
mod security;
mod sse;
mod standing_memory;
mod stream_end;
mod ts_client;
mod user_deletion;
mod user_listing;

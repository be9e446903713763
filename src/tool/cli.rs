//! The `broker log …` command line, next to the tools it runs (the server's flags are in
//! `config`).

use std::path::PathBuf;

use clap::Subcommand;

/// `broker log …`.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Read every segment and check headers, CRCs, records and cursor order; exit 1 on any fault.
    Verify {
        /// The data directory (the server's --db).
        #[arg(long, env = "BROKER_DB", default_value = "db")]
        db: PathBuf,
    },
    /// Print records as JSON lines (secrets masked).
    Dump {
        /// The data directory (the server's --db).
        #[arg(long, env = "BROKER_DB", default_value = "db")]
        db: PathBuf,
        /// First cursor to print.
        #[arg(long)]
        from: Option<u64>,
        /// Last cursor to print.
        #[arg(long)]
        to: Option<u64>,
        /// Only events of this tenant (and user records of users in it).
        #[arg(long)]
        tenant: Option<String>,
        /// Only this record kind (user_created, user_updated, user_revoked, user_unrevoked,
        /// password_changed, event_inserted, login_code_used, password_reset,
        /// reset_code_issued, reset_code_failed, user_deleted, user_updated_with_password,
        /// totp_secret_replaced).
        #[arg(long)]
        kind: Option<String>,
    },
    /// Rebuild the projections from the log and print a summary.
    Replay {
        /// The data directory (the server's --db).
        #[arg(long, env = "BROKER_DB", default_value = "db")]
        db: PathBuf,
        /// Stop after this cursor.
        #[arg(long)]
        to: Option<u64>,
        /// Compare with the newest checkpoint and report any difference (exit 1).
        #[arg(long)]
        check: bool,
    },
    /// Shrink closed segments: keep users and the latest event per (tenant, name) below the
    /// retain point, everything from it on. Offline, or through a running server with --url.
    Compact {
        /// The data directory (the server's --db), for offline compaction.
        #[arg(long, env = "BROKER_DB", default_value = "db")]
        db: PathBuf,
        /// Keep everything younger than this age (7d, 12h, 30m) or from this cursor on.
        #[arg(long)]
        retain: String,
        /// A running server to compact (its POST /compact), instead of the files: a loopback
        /// http:// URL, with the admin token in the BROKER_ADMIN_TOKEN environment variable.
        #[arg(long)]
        url: Option<String>,
        /// Refused: other local users see command lines (`ps`); the token for --url is read
        /// from BROKER_ADMIN_TOKEN only. Kept, hidden, to say so instead of "unknown flag".
        #[arg(long = "admin_token", hide = true)]
        admin_token: Option<String>,
    },
    /// Upgrade a log written by an older format version, in place, after a backup.
    Migrate {
        /// The data directory (the server's --db).
        #[arg(long, env = "BROKER_DB", default_value = "db")]
        db: PathBuf,
    },
}

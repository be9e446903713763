//! Several broker nodes on one NATS JetStream stream (`--log nats://…`).
//!
//! [`JetStream`] is the second implementation of the engine's log interface
//! ([`LogBackend`]: append → cursors; read from a cursor; await "committed up to N"); the
//! embedded segmented log is the first. With `--log nats://…` a **JetStream stream** is the
//! log every node shares, and the three operations map onto it like this:
//!
//! - **Append**: a node publishes each record (the same rkyv encoding as on disk) to the
//!   stream and acknowledges the request only after JetStream's publish ack, which with
//!   replicas means a quorum of NATS servers stored it. The **stream sequence is the cursor**:
//!   the cursor written inside the published bytes is a placeholder, replaced by the sequence
//!   when the record is folded.
//! - **Read / committed**: every node follows the stream with an ordered consumer, in
//!   sequence order (and by batched direct gets while it has no working consumer, as during a
//!   failover: see `read`), and hands what it reads to its engine's writer thread, which appends it
//!   to a **local copy** (the ordinary segmented log under `<db>/log`, cursors = stream
//!   sequences), folds it with the same `evolve` into the node's projections and publishes it
//!   to the SSE fan-out. Logins, SSE snapshots, catch-up reads and checkpoints then work on
//!   every node exactly as on one: the local copy is a cache of the stream, never a second
//!   truth. A node that restarts replays its local copy from its checkpoint and asks the
//!   stream only for what came after its last local cursor.
//! - **Decide across nodes**: `decide` runs on the node's folded state, which may lag the
//!   stream by the replication delay, so state checks are made safe by a compare-and-set in
//!   JetStream itself. Every record about a user goes to that user's subject
//!   `<stream>.user.<hex(username)>`; the first record of a command is published with
//!   `Nats-Expected-Last-Subject-Sequence` = the last sequence on that subject, after the
//!   node has folded at least up to it. If another node wrote to that user in between,
//!   JetStream refuses the publish (wrong last sequence) and the node folds the newer records
//!   and decides again. Two nodes creating `bob` both expect "no record on bob's subject";
//!   exactly one publish wins and the other re-decides into `UsernameTaken`. The same holds
//!   for single-use codes (login and reset steps).
//! - Events go to `<stream>.event.<hex(tenant)>` without a compare-and-set, so inserts from
//!   many nodes never contend. An insert decided on one node in the same instant another
//!   node revokes its author, changes their password or moves them to another tenant may
//!   therefore be stored after that change. The insert is published with the credential
//!   epoch its author authenticated in, as the `Broker-Credential-Epoch` header (beside the
//!   record, so the on-disk format is unchanged), and every node folds the stream through
//!   `state::recheck`, which drops an insert whose epoch is no longer the author's: no
//!   projection, local copy or subscriber ever has it, on any node, and the node that
//!   published it answers the request 401, exactly as one node would have.
//! - Every command is one record (`state::decide`; an update that also sets a password is
//!   one `UserUpdatedWithPassword`), so one message stores a command whole or not at all, on
//!   every server version: there is no batch to commit or to leave half done.
//!
//! - **Nothing from the stream is trusted for having decoded.** Anyone who can publish to
//!   `<stream>.>` can put anything there, so before a record is folded every node checks it
//!   as `decide` would have: its values (`state::validate::record`), its subject (a user's
//!   records must all be under that user's subject, or the compare-and-set orders nothing), and
//!   what `state::recheck` checks of its place in the state (a new user's name is free; other
//!   user records name a known user). A message that fails, or does not decode at all, is
//!   skipped by every node alike, logged and counted, and the fold goes on past it.
//! - **Credentials and TLS** come from [`StreamOptions`]: a URL's userinfo is moved into
//!   [`NatsAuth`] by the configuration (async-nats ignores it in URLs but prints URLs in its
//!   debug lines), and any URL that is printed is [`redacted`].
//!
//! A reply waits for the node's own fold to reach the record, so a client sees its write on
//! the node that took it (read-your-writes per node); other nodes see it after their
//! consumer delivers it, typically within a millisecond on a LAN.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind};
use futures_util::StreamExt;

use super::backend::{Batches, BoxFuture, LogBackend};
use super::{Engine, EngineError};
use crate::log::Cursor;
use crate::state::{Author, Command, Decision, Record, RecordKind, Rejection, decide};

mod read;

/// How a node reaches the shared stream.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamOptions {
    /// NATS server URLs (`nats://host:4222`); the client fails over between them. Credentials
    /// belong in `auth`: userinfo left in a URL is ignored (async-nats never sends it) and
    /// never printed.
    pub servers: Vec<String>,
    /// The JetStream stream's name; its subjects are `<name>.>`.
    pub name: String,
    /// Replicas when this node creates the stream (an existing stream keeps its own).
    pub replicas: usize,
    /// How the node proves itself to NATS.
    pub auth: NatsAuth,
    /// TLS to the NATS servers; when set, a server that does not speak it is refused.
    pub tls: Option<NatsTls>,
}

impl std::fmt::Debug for StreamOptions {
    // Any URL may carry a password: print them as they would appear in a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamOptions")
            .field("servers", &redacted_list(&self.servers))
            .field("name", &self.name)
            .field("replicas", &self.replicas)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .finish()
    }
}

/// How a node authenticates to NATS.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum NatsAuth {
    /// No credentials (a NATS server without authorization: tests and trials only).
    #[default]
    None,
    /// A user and password (from a `nats://user:password@host` URL).
    UserPassword {
        /// The NATS user.
        user: String,
        /// Its password.
        password: String,
    },
    /// A token (`--log_token`, or a `nats://token@host` URL).
    Token(String),
    /// A `.creds` file: a user JWT and the NKey seed that signs the server's nonce.
    Creds(std::path::PathBuf),
}

impl std::fmt::Debug for NatsAuth {
    // The kind and the user only: passwords and tokens never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"***")
                .finish(),
            NatsAuth::Token(_) => f.write_str("Token(***)"),
            NatsAuth::Creds(path) => f.debug_tuple("Creds").field(path).finish(),
        }
    }
}

/// TLS to the NATS servers (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatsTls {
    /// Root certificates the servers' certificates must chain to, instead of the system's.
    pub ca: Option<std::path::PathBuf>,
    /// A client certificate and its private key, for servers that verify clients.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// Where a server URL's userinfo (`user:password@` or `token@`) is: the byte range between
/// the scheme and the last `@` (hosts never hold one, an unencoded password might).
fn userinfo_range(url: &str) -> Option<std::ops::Range<usize>> {
    let start = url.find("://").map_or(0, |i| i + 3);
    let at = url[start..].rfind('@')?;
    Some(start..start + at)
}

/// `url` as it may be printed: `nats://user:password@host:4222` → `nats://***@host:4222`.
pub fn redacted(url: &str) -> String {
    match userinfo_range(url) {
        Some(range) => format!("{}***{}", &url[..range.start], &url[range.end..]),
        None => url.to_owned(),
    }
}

/// Server URLs as they may be printed, comma-separated.
pub fn redacted_list(urls: &[String]) -> String {
    urls.iter()
        .map(|u| redacted(u))
        .collect::<Vec<_>>()
        .join(",")
}

/// Splits a server URL into the URL without userinfo and the credentials it held
/// (percent-decoded): `user:password` is a user and password, a lone value a token.
pub fn split_userinfo(url: &str) -> (String, Option<NatsAuth>) {
    let Some(range) = userinfo_range(url) else {
        return (url.to_owned(), None);
    };
    let info = &url[range.clone()];
    let bare = format!("{}{}", &url[..range.start], &url[range.end + 1..]);
    let auth = match info.split_once(':') {
        Some((user, password)) => NatsAuth::UserPassword {
            user: percent_decoded(user),
            password: percent_decoded(password),
        },
        None => NatsAuth::Token(percent_decoded(info)),
    };
    (bare, Some(auth))
}

/// `%XX` escapes decoded (URL userinfo must escape `:`, `@` and `/`); anything malformed is
/// kept as written.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Errors of attaching to the stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// No NATS server answered.
    #[error("cannot connect to NATS at {servers}: {why}")]
    Connect {
        /// The servers tried.
        servers: String,
        /// What the client said.
        why: String,
    },
    /// The `.creds` file could not be read or is not one.
    #[error("NATS credentials file {path}: {why}")]
    Credentials {
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// JetStream refused to create or describe the stream.
    #[error(
        "JetStream stream {name:?} at {servers}: {why} (do the credentials and TLS options fit the servers, and is JetStream enabled on them?)"
    )]
    Stream {
        /// The stream.
        name: String,
        /// The servers, userinfo redacted.
        servers: String,
        /// What the server said.
        why: String,
    },
    /// The local copy holds records the stream does not: another stream, or it was recreated.
    #[error(
        "the local copy in {dir} (up to cursor {local}) does not match stream {name:?} (last sequence {stream}): it was made from another stream, or the stream was recreated; move the data directory away and start again (the node refetches everything from the stream)"
    )]
    Diverged {
        /// The local log directory.
        dir: String,
        /// The stream.
        name: String,
        /// The local copy's newest cursor.
        local: Cursor,
        /// The stream's last sequence.
        stream: Cursor,
    },
    /// The nodes on the stream fold it with another setting than this node's.
    #[error(
        "stream {name:?} is shared by nodes with --{flag} {theirs}; this node has {ours}: every node must use the same value, or they fold the same stream differently"
    )]
    SettingMismatch {
        /// The stream.
        name: String,
        /// The flag.
        flag: &'static str,
        /// Its value in the stream's metadata.
        theirs: String,
        /// This node's.
        ours: String,
    },
}

/// The settings the fold reads, which every node of a stream must share: the flag, and the
/// stream's metadata key for it.
const FOLD_SETTINGS: [(&str, &str); 3] = [
    ("idempotency_window_secs", "broker_idempotency_window_secs"),
    ("max_event_names", "broker_max_event_names"),
    (
        "max_tenant_snapshot_bytes",
        "broker_max_tenant_snapshot_bytes",
    ),
];

/// Attempts at a compare-and-set before the command is refused as contended.
const MAX_ATTEMPTS: usize = 32;

/// How long a reply waits for its own records to be folded on this node.
const FOLD_WAIT: Duration = Duration::from_secs(10);

/// Silence after which the reader checks that the stream holds nothing newer; a consumer
/// silent through two checks while the stream grew is replaced. The fallback for a lost
/// consumer: a new stream leader or a reconnection replaces it at once.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// How long one attempt at a publish ack, or at a read of the stream's state, may wait before
/// it is sent again: while NATS elects a new stream leader nothing answers, and an attempt
/// sent after the election must not queue behind one that waits for a dead leader.
const ATTEMPT_WAIT: Duration = Duration::from_secs(1);

/// How long a publish waits for its ack before the same message (same id: stored once) is
/// sent again beside it.
const SEND_BESIDE: Duration = Duration::from_millis(250);

/// The most attempts at one publish waiting for their ack at once.
const MAX_BESIDE: usize = 4;

/// How often the client pings its NATS server; it gives up on a server that misses three.
const STALL_PING: Duration = Duration::from_millis(500);

/// How long a command's publishes and reads are retried (each attempt [`ATTEMPT_WAIT`]) before
/// the request answers 503: long enough to ride out a stream leader's election (a few seconds),
/// shorter than a client's patience.
const PUBLISH_PATIENCE: Duration = Duration::from_secs(10);

/// The message header carrying an insert's credential epoch beside its record (see
/// [`Entry::Record`]).
const EPOCH_HEADER: &str = "Broker-Credential-Epoch";

/// How long creating the stream's reader may take before it is tried again.
const CREATE_WAIT: Duration = Duration::from_secs(2);

/// Whether a nats-server that says it is `version` (`2.12.8`) is `major.minor` or later.
fn at_least(version: &str, wanted: (u32, u32)) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().ok());
    matches!((parts.next(), parts.next()), (Some(Some(major)), Some(Some(minor))) if (major, minor) >= wanted)
}

/// Whether a nats-server that says it is `version` answers batched direct gets (2.11+; an
/// older one ignores `batch` and answers one message).
fn answers_batched_direct_gets(version: &str) -> bool {
    at_least(version, (2, 11))
}

/// A node's connection to the shared stream: the JetStream implementation of [`LogBackend`].
pub struct JetStream {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    name: String,
    /// Woken when the client reconnects (to the same or another server) and when the stream
    /// elects a new leader (JetStream's advisory): a consumer on a lost server is then replaced
    /// at once instead of after the idle checks.
    replace_reader: Arc<tokio::sync::Notify>,
    /// How often the client has (re)connected: an answer awaited across a reconnection went to
    /// the lost connection and never comes, so the request is sent again at once instead of
    /// after [`ATTEMPT_WAIT`]. A watch, not a [`tokio::sync::Notify`]: a publish must see a
    /// reconnection that happened while it was being sent.
    connections: tokio::sync::watch::Receiver<u64>,
    /// Whether the stream answers batched direct gets (nats-server 2.11 or later,
    /// `allow_direct`): the reader then needs no consumer while one cannot be created.
    direct: bool,
    /// The engine whose state decides and whose fold a reply waits for. Weak: the engine
    /// holds this log, and a strong handle back would keep both alive for ever.
    engine: super::WeakEngine,
    /// Why the node must not write to the stream though it reaches it, if so (see
    /// [`watch_stream`]).
    broken: std::sync::Mutex<Option<Broken>>,
}

/// What happened to the stream under a running node.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Broken {
    /// It is gone: writes could not be stored until it comes back.
    Missing(String),
    /// It was replaced by another (deleted and created again): its sequences are not the
    /// cursors this node folded, so nothing may be written or folded until the node starts
    /// again on a fresh copy. For good.
    Replaced(String),
}

/// Subject tokens may not hold `.`, `*`, `>` or spaces: names are hex-encoded.
fn hex(name: &str) -> String {
    // Once per insert (its tenant's subject): a table, not the formatting machinery.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(name.len() * 2);
    for b in name.bytes() {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// A message id no other publish of any node uses within the stream's duplicate window: this
/// process's random prefix and a counter (a fresh random id per insert would cost a
/// `getrandom` system call each).
fn message_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string());
    format!("{prefix}.{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The user a command is about: every command names exactly one.
fn user_of(command: &Command) -> &str {
    match command {
        Command::CreateUser(user) => &user.username,
        // The admin's inserts are nobody's: their subject is never compared-and-set.
        Command::InsertEvent { by, .. } => match by {
            Author::User { username, .. } => username,
            Author::Admin { .. } => "",
        },
        Command::RevokeUser { username }
        | Command::UnrevokeUser { username }
        | Command::UseLoginCode { username, .. }
        | Command::ResetPassword { username, .. }
        | Command::IssueResetCode { username, .. }
        | Command::FailResetCode { username, .. }
        | Command::ChangePassword { username, .. }
        | Command::ReplaceTotpSecret { username, .. }
        | Command::DeleteUser { username } => username,
        Command::UpdateUser { update, .. } => &update.username,
    }
}

/// The subject of a user's records in stream `stream`.
fn user_subject(stream: &str, username: &str) -> String {
    format!("{stream}.user.{}", hex(username))
}

/// The one subject `record` belongs under in stream `stream`: the compare-and-set on a user's
/// subject orders that user's records only if they are all there.
fn subject_of(stream: &str, record: &Record) -> String {
    match &record.kind {
        RecordKind::EventInserted(e) => format!("{stream}.event.{}", hex(&e.tenant)),
        _ => user_subject(stream, record.username().unwrap_or_default()),
    }
}

impl JetStream {
    fn user_subject(&self, username: &str) -> String {
        user_subject(&self.name, username)
    }

    fn subject_of(&self, record: &Record) -> String {
        subject_of(&self.name, record)
    }

    /// `request`'s answer, waited for at most [`ATTEMPT_WAIT`]; `None` when none came in time or
    /// the client reconnected meanwhile (the answer went to the lost connection).
    async fn answer<T>(&self, request: impl std::future::Future<Output = T>) -> Option<T> {
        let mut connections = self.connections.clone();
        connections.mark_unchanged();
        tokio::select! {
            answer = tokio::time::timeout(ATTEMPT_WAIT, request) => answer.ok(),
            _ = connections.changed() => None,
        }
    }

    /// The last sequence stored on `subject`, 0 if none; asked again (each attempt bounded)
    /// until [`PUBLISH_PATIENCE`] runs out.
    async fn last_on(&self, subject: &str) -> Result<Cursor, EngineError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let deadline = tokio::time::Instant::now() + PUBLISH_PATIENCE;
        loop {
            let attempt = self.answer(self.stream.get_last_raw_message_by_subject(subject));
            let why = match attempt.await {
                Some(Ok(message)) => return Ok(message.sequence),
                Some(Err(e)) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                    return Ok(0);
                }
                Some(Err(e)) => e.to_string(),
                None => "no answer within 1 s, or the connection was replaced".to_owned(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(EngineError::Unavailable(format!("JetStream: {why}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes one record; `Ok(None)` when the compare-and-set lost. A failed publish is
    /// retried with the same message id until `patience` runs out: JetStream's duplicate
    /// window stores the record once however often it arrives.
    /// Publishes `record`: its sequence in the stream, and whether the stream took it for a
    /// duplicate of a message with the same id; `None` if `expected` was not the subject's
    /// last sequence.
    async fn publish(
        &self,
        record: &Record,
        id: &str,
        expected: Option<Cursor>,
        patience: Duration,
        credential_epoch: Option<Cursor>,
    ) -> Result<Option<(Cursor, bool)>, EngineError> {
        let subject = self.subject_of(record);
        let payload = bytes::Bytes::from(record.encode());
        let deadline = tokio::time::Instant::now() + patience;
        let send = || {
            let mut message = jetstream::message::PublishMessage::build()
                .payload(payload.clone())
                .message_id(id);
            if let Some(seq) = expected {
                message = message.expected_last_subject_sequence(seq);
            }
            if let Some(epoch) = credential_epoch {
                message = message.header(EPOCH_HEADER, epoch.to_string().as_str());
            }
            let subject = subject.clone();
            self.answer(async move { self.js.send_publish(subject, message).await?.await })
        };
        // Attempts still waiting for their ack. One sent during an election is never answered;
        // the next is sent beside it, not after it, so that the first attempt after the election
        // is answered at once.
        let mut waiting = futures_util::stream::FuturesUnordered::new();
        let mut sent = 0u32;
        let mut send_now = true;
        let mut why = String::new();
        loop {
            if send_now {
                if sent >= 3 && tokio::time::Instant::now() >= deadline {
                    return Err(EngineError::Unavailable(format!(
                        "JetStream did not acknowledge: {why}"
                    )));
                }
                waiting.push(send());
                sent += 1;
            }
            // Never empty here: an attempt was just sent, or some are still waiting.
            let answer = tokio::select! {
                Some(answer) = waiting.next() => answer,
                () = tokio::time::sleep(SEND_BESIDE), if waiting.len() < MAX_BESIDE => {
                    send_now = true;
                    continue;
                }
            };
            send_now = false;
            match answer {
                Some(Ok(ack)) => return Ok(Some((ack.sequence, ack.duplicate))),
                Some(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    return Ok(None);
                }
                // A copy sent beside one still in flight is refused as a duplicate in
                // progress: the first copy's ack answers.
                Some(Err(e)) => why = e.to_string(),
                None => why = "no publish ack within 1 s, or the connection was replaced".into(),
            }
            if waiting.is_empty() {
                // Refused or unanswered: soon again, the new leader answers once elected.
                tokio::time::sleep(Duration::from_millis(50 * u64::from(sent.min(4)))).await;
                send_now = true;
            }
        }
    }

    /// Decides `command` on the node's folded state and stores its records in the stream;
    /// resolves once they are acknowledged and folded here.
    async fn submit(&self, engine: &Engine, command: Command) -> Result<Vec<Record>, EngineError> {
        // Only a user's inserts carry one; inserts alone skip the compare-and-set.
        let (insert, credential_epoch, keyed) = match &command {
            Command::InsertEvent {
                by,
                idempotency_key,
                ..
            } => {
                let (caller, epoch) = match by {
                    Author::User {
                        username,
                        credential_epoch,
                    } => (Some(username.clone()), Some(*credential_epoch)),
                    Author::Admin { .. } => (None, None),
                };
                (
                    true,
                    epoch,
                    idempotency_key.clone().map(|key| (caller, key)),
                )
            }
            _ => (false, None, None),
        };
        // Inserts never compare-and-set: they need no user subject.
        let subject = (!insert).then(|| self.user_subject(user_of(&command)));
        // A keyed insert's message id is its caller and key: the stream's own duplicate
        // window (2 min) then stores a retry that reaches two nodes at once only once.
        let id = match &keyed {
            Some((caller, key)) => format!(
                "idem.{}.{}",
                caller.as_deref().map_or_else(|| "admin".to_owned(), hex),
                hex(key)
            ),
            None => message_id(),
        };
        for _ in 0..MAX_ATTEMPTS {
            let expected = if let Some(subject) = &subject {
                let last = self.last_on(subject).await?;
                tokio::time::timeout(FOLD_WAIT, engine.committed(last))
                    .await
                    .map_err(|_| {
                        EngineError::Unavailable(format!(
                            "this node has not folded the stream up to {last} yet"
                        ))
                    })??;
                Some(last)
            } else {
                None
            };
            if let Some(why) = self.broken_now() {
                return Err(EngineError::Unavailable(why));
            }
            // Every sequence the stream gives a new message is past what this node folded,
            // unless the stream is another one than the node folded.
            let folded = engine.committed_cursor();
            let at_ms = engine.now_ms();
            let record = match engine.read(|state| decide(state, command.clone(), at_ms))? {
                Decision::Append(records) => match <[Record; 1]>::try_from(records) {
                    Ok([record]) => record,
                    Err(records) => {
                        return Err(EngineError::Unavailable(format!(
                            "a change of {} records cannot be stored as one message",
                            records.len()
                        )));
                    }
                },
                Decision::Duplicate(earlier) => return Ok(vec![earlier]),
            };
            // The message id keeps its `-0` (the first record's, when a command had several),
            // so a retry from a node of either build is stored once.
            let stored = match self
                .publish(
                    &record,
                    &format!("{id}-0"),
                    expected,
                    PUBLISH_PATIENCE,
                    credential_epoch,
                )
                .await?
            {
                Some((cursor, duplicate)) if duplicate || cursor > folded => {
                    vec![Record { cursor, ..record }]
                }
                Some((cursor, _)) => {
                    // An attack review: after the stream was deleted and created again, an
                    // insert was answered 200 at cursor 1, which this node had folded long
                    // before, so the wait below passed at once and no node ever showed it.
                    let why = format!(
                        "stream {:?} gave a new message the sequence {cursor}, which this node folded before (up to {folded}): the stream was deleted and created again; restart the node on a fresh data directory",
                        self.name
                    );
                    self.set_broken(Broken::Replaced(why.clone()));
                    return Err(EngineError::Unavailable(why));
                }
                // Another node wrote to this user meanwhile: fold it, decide again.
                None => continue,
            };
            if let Some(last) = stored.last() {
                // The write is durable (acknowledged by JetStream) whatever happens now; the
                // wait gives read-your-writes on this node, and the verdict of
                // `state::recheck`, so it is bounded: a consumer re-created after a lost
                // NATS server may take a moment.
                let folded = tokio::time::timeout(FOLD_WAIT, engine.committed(last.cursor));
                if folded.await.is_err() {
                    tracing::warn!(
                        cursor = last.cursor,
                        "acknowledged by JetStream but not yet folded on this node"
                    );
                    if keyed.is_some() {
                        // Which use of the key the stream kept (ours, or another node's that
                        // its duplicate window matched ours to) only the fold can tell: an
                        // answer now might carry another insert's id. The insert is stored
                        // once whatever happens; the same key answers it once folded.
                        return Err(EngineError::Unavailable(
                            "stored, but not yet folded on this node: send it again with the same Idempotency-Key for its id and cursor".into(),
                        ));
                    }
                } else if let Some((caller, key)) = &keyed
                    && let Some(answer) = keyed_answer(engine, last, caller.as_deref(), key)
                {
                    // Another node stored this key first (the fold dropped ours, or the
                    // stream took ours for a duplicate): answer as that node did.
                    return answer;
                } else if let Some((cursor, why)) = stored
                    .iter()
                    .find_map(|r| engine.dropped(r.cursor).map(|why| (r.cursor, why)))
                {
                    return Err(match why {
                        // Another node's inserts, decided at the same time, took the tenant
                        // to its limits first: every node drops this one when folding.
                        Some(
                            why
                            @ (Rejection::TooManyEventNames(_) | Rejection::SnapshotTooLarge(_)),
                        ) => why.into(),
                        // Stored in the stream, but after its author was revoked or moved:
                        // every node drops it when folding, so it never happened.
                        _ if credential_epoch.is_some() => {
                            Rejection::CredentialsInvalid(user_of(&command).to_owned()).into()
                        }
                        // The compare-and-set keeps a node's own user records valid where
                        // they land, so only a bug or a foreign publisher gets here; never
                        // claim a change that no node folded.
                        _ => EngineError::Unavailable(format!(
                            "the stream's record at {cursor} was refused when folded; see the warning logged for it"
                        )),
                    });
                }
            }
            return Ok(stored);
        }
        Err(EngineError::Unavailable(
            "too many concurrent changes to this user; try again".into(),
        ))
    }
}

/// For a keyed insert stored as `ours`: `None` if the fold kept it as the key's use; else
/// the answer the key's earlier use gives (that insert again, or 422 for another request).
fn keyed_answer(
    engine: &Engine,
    ours: &Record,
    caller: Option<&str>,
    key: &str,
) -> Option<Result<Vec<Record>, EngineError>> {
    let RecordKind::EventInserted(event) = &ours.kind else {
        return None;
    };
    // `None`: the key is not live here. `Some(None)`: its live use is ours.
    let verdict = engine.read(|state| {
        let (cursor, used) = state.idempotency.live(caller, key, ours.at_ms)?;
        if cursor == ours.cursor && used.id == event.id {
            return Some(None);
        }
        let same = used.request
            == crate::state::idempotency::request_digest(&event.tenant, &event.event, &event.data);
        Some(Some(if same {
            Ok(vec![crate::state::idempotency::earlier_record(
                cursor,
                used,
                event.clone(),
            )])
        } else {
            Err(Rejection::KeyReused.into())
        }))
    });
    if let Some(answer) = verdict {
        return answer;
    }
    // Our insert, just folded, would have made the key live: the stream kept another one.
    // JetStream answers a message id it saw within its duplicate window (2 min) with the
    // sequence of the message it kept, which after this node's shorter
    // --idempotency_window_secs is an earlier use of the key: what is stored there, not our
    // record, is the answer (found by an attack review: a 200 claimed an insert that no node
    // had). Only then is the log read, off the usual path of a keyed insert.
    let mut stored = None;
    let _ = engine
        .log()
        .read_after(ours.cursor - 1, ours.cursor, |_, payload| {
            stored = Record::decode(payload).ok();
            false
        });
    let stored = stored?;
    let RecordKind::EventInserted(kept) = &stored.kind else {
        return None;
    };
    if kept.id == event.id {
        return None;
    }
    let digest = crate::state::idempotency::request_digest;
    Some(
        if digest(&kept.tenant, &kept.event, &kept.data)
            == digest(&event.tenant, &event.event, &event.data)
        {
            Ok(vec![stored])
        } else {
            Err(Rejection::KeyReused.into())
        },
    )
}

impl JetStream {
    /// Why writes are refused now, if they are.
    fn broken_now(&self) -> Option<String> {
        match &*self.broken.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(Broken::Missing(why) | Broken::Replaced(why)) => Some(why.clone()),
            None => None,
        }
    }

    /// Records what happened to the stream: a replaced stream stays so, and is logged once.
    fn set_broken(&self, now: Broken) {
        let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*broken, Some(Broken::Replaced(_))) || broken.as_ref() == Some(&now) {
            return;
        }
        match &now {
            Broken::Replaced(why) => {
                tracing::error!(%why, "writes and reads of the stream stopped");
                // The reader stops at once: it must fold nothing of the new stream.
                self.replace_reader.notify_waiters();
            }
            Broken::Missing(why) => tracing::warn!(%why, "writes are refused until it is back"),
        }
        *broken = Some(now);
    }

    /// Clears a missing stream's mark once it answers again as the same stream.
    fn set_found(&self) {
        let mut broken = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*broken, Some(Broken::Missing(_))) {
            tracing::info!(stream = %self.name, "the stream answers again; writes resume");
            *broken = None;
        }
    }
}

/// How often a node checks that its stream is still the one it attached to.
const STREAM_CHECK: Duration = Duration::from_secs(1);

/// Checks, every [`STREAM_CHECK`], that the stream exists and is the one the node attached
/// to (by its creation time), for as long as the log lives. An attack review deleted the
/// stream under running nodes: they stayed ready while every write waited 10 s for a 503,
/// and once it was created again they answered inserts 200 that no node ever showed.
async fn watch_stream(log: std::sync::Weak<JetStream>, created: String) {
    loop {
        tokio::time::sleep(STREAM_CHECK).await;
        let Some(log) = log.upgrade() else { return };
        let mut stream = log.stream.clone();
        let Ok(info) = tokio::time::timeout(ATTEMPT_WAIT, stream.info()).await else {
            // No answer: the connection's own state tells (`reachable`).
            continue;
        };
        match info {
            Ok(info) if info.created.to_string() != created => log.set_broken(Broken::Replaced(format!(
                "stream {:?} was deleted and created again while this node ran (created {}, the node attached to one created {}): its sequences are not this node's cursors; restart the node on a fresh data directory",
                log.name, info.created, created
            ))),
            Ok(_) => log.set_found(),
            Err(e) if e.to_string().to_ascii_lowercase().contains("stream not found") => log
                .set_broken(Broken::Missing(format!(
                    "stream {:?} is gone from JetStream: writes are refused until it is back",
                    log.name
                ))),
            Err(_) => {}
        }
    }
}

impl LogBackend for JetStream {
    fn reachable(&self) -> bool {
        self.js.client().connection_state() == async_nats::connection::State::Connected
    }

    fn broken(&self) -> Option<String> {
        self.broken_now()
    }

    fn kind(&self) -> &'static str {
        "jetstream"
    }

    fn append(&self, command: Command) -> BoxFuture<'_, Result<Vec<Record>, EngineError>> {
        Box::pin(async move {
            // The node's engine owns this log; once it is gone nothing is to be written.
            let engine = self.engine.upgrade().ok_or(EngineError::ShuttingDown)?;
            self.submit(&engine, command).await
        })
    }

    fn read_from(&self, after: Cursor) -> Batches {
        if let Some(Broken::Replaced(why)) = &*self.broken.lock().unwrap_or_else(|e| e.into_inner())
        {
            // Another stream's messages are not this node's history.
            let failed = Err(EngineError::Unavailable(why.clone()));
            return Box::pin(futures_util::stream::once(async move {
                // Not at once: the follower would ask again in a loop.
                tokio::time::sleep(STREAM_CHECK).await;
                failed
            }));
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let stream = self.stream.clone();
        let client = self.js.client();
        let name = self.name.clone();
        let direct = self.direct;
        let replace = Arc::clone(&self.replace_reader);
        tokio::spawn(async move {
            let reader = read::Reader {
                stream: &stream,
                client: &client,
                name: &name,
                direct,
                here: after,
                tx: &tx,
            };
            let outcome = tokio::select! {
                outcome = reader.run() => outcome,
                _ = tx.closed() => return,
                _ = replace.notified() => Err("reconnected to NATS, or a new stream leader".to_owned()),
            };
            if let Err(why) = outcome {
                let _ = tx.send(Err(EngineError::Unavailable(why))).await;
            }
        });
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }

    fn committed(&self, upto: Cursor) -> BoxFuture<'_, Result<Cursor, EngineError>> {
        Box::pin(async move {
            let mut stream = self.stream.clone();
            loop {
                let info = stream
                    .info()
                    .await
                    .map_err(|e| EngineError::Unavailable(format!("JetStream: {e}")))?;
                if info.state.last_sequence >= upto {
                    return Ok(info.state.last_sequence);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }
}

/// Connects to the stream (creating it if needed), starts following it from the local copy's
/// newest cursor, and returns once the node has folded everything the stream held at start.
pub(super) async fn attach(
    engine: &Engine,
    options: &StreamOptions,
) -> Result<Arc<JetStream>, StreamError> {
    let servers = redacted_list(&options.servers);
    let replace_reader = Arc::new(tokio::sync::Notify::new());
    let on_event = Arc::clone(&replace_reader);
    let (connected, connections) = tokio::sync::watch::channel(0u64);
    let connected = Arc::new(connected);
    let mut connect = async_nats::ConnectOptions::new();
    connect = match &options.auth {
        NatsAuth::None => connect,
        NatsAuth::UserPassword { user, password } => {
            connect.user_and_password(user.clone(), password.clone())
        }
        NatsAuth::Token(token) => connect.token(token.clone()),
        NatsAuth::Creds(path) => {
            connect
                .credentials_file(path)
                .await
                .map_err(|e| StreamError::Credentials {
                    path: path.display().to_string(),
                    why: e.to_string(),
                })?
        }
    };
    if let Some(tls) = &options.tls {
        connect = connect.require_tls(true);
        if let Some(ca) = &tls.ca {
            connect = connect.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &tls.client {
            connect = connect.add_client_certificate(cert.clone(), key.clone());
        }
    }
    // async-nats never authenticates with a URL's userinfo, but prints the URLs it tries in
    // its debug lines: they go to it bare.
    let bare: Vec<String> = options
        .servers
        .iter()
        .map(|url| split_userinfo(url).0)
        .collect();
    let client = connect
        .connection_timeout(Duration::from_secs(5))
        // A server that stalls (stopped, or a network that drops packets) keeps the TCP
        // connection open: only unanswered pings tell. Three missed ones (1.5 s) and the client
        // moves to another server; the default (60 s) would leave the node writing nowhere
        // for minutes.
        .ping_interval(STALL_PING)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .event_callback(move |event| {
            let on_event = Arc::clone(&on_event);
            let connected = Arc::clone(&connected);
            async move {
                if matches!(event, async_nats::Event::Connected) {
                    connected.send_modify(|n| *n += 1);
                    on_event.notify_waiters();
                }
            }
        })
        .connect(bare.as_slice());
    let client = tokio::time::timeout(Duration::from_secs(30), client)
        .await
        .map_err(|_| StreamError::Connect {
            servers: servers.clone(),
            why: "no server answered within 30 s".into(),
        })?
        .map_err(|e| StreamError::Connect {
            servers: servers.clone(),
            why: e.to_string(),
        })?;
    let js = jetstream::new(client);
    let stream_error = |e: &dyn std::fmt::Display| StreamError::Stream {
        name: options.name.clone(),
        servers: servers.clone(),
        why: e.to_string(),
    };
    let config = jetstream::stream::Config {
        name: options.name.clone(),
        subjects: vec![format!("{}.>", options.name)],
        storage: jetstream::stream::StorageType::File,
        num_replicas: options.replicas.max(1),
        duplicate_window: Duration::from_secs(120),
        // Direct gets are answered by followers too: the reader's way around a consumer that
        // cannot be created during a failover (see `read`).
        allow_direct: true,
        // The settings the fold reads, written by the node that creates the stream in the
        // same step: nodes that start at once cannot each write their own (`same_settings`).
        metadata: fold_settings(engine)
            .into_iter()
            .map(|(_, key, ours)| (key.to_owned(), ours))
            .collect(),
        ..Default::default()
    };
    // A cluster that is still starting has no JetStream leader yet: wait for it, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let stream = loop {
        // Until the cluster has elected its metadata leader a request hangs for the client's
        // whole timeout (10 s); a short wait per attempt starts the node soon after it.
        let attempt = tokio::time::timeout(CREATE_WAIT, js.get_or_create_stream(config.clone()));
        let why = match attempt.await {
            Ok(Ok(stream)) => break stream,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer within 2 s".to_owned(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(stream_error(&why));
        }
        tracing::info!(%why, "the JetStream stream is not available yet; retrying");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // A new stream leader means the consumers on the old one are gone (a lost or stalled
    // server): JetStream announces the election, and the reader is replaced on the spot
    // instead of after its silence checks. Without the permission to subscribe to
    // advisories, those checks remain.
    match js
        .client()
        .subscribe(format!(
            "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.{}",
            options.name
        ))
        .await
    {
        Ok(mut elections) => {
            let replace = Arc::clone(&replace_reader);
            tokio::spawn(async move {
                while elections.next().await.is_some() {
                    tracing::info!("the stream elected a new leader; replacing its reader");
                    replace.notify_waiters();
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot follow the stream's leader elections"),
    }
    let stream = enable_features(&js, stream).await;
    let stream = same_settings(&js, stream, engine, &options.name).await?;
    let version = js.client().server_info().version;
    let direct = stream.cached_info().config.allow_direct && answers_batched_direct_gets(&version);
    tracing::info!(
        server = %version,
        direct,
        "attached to the JetStream stream (direct: the stream is read without a consumer while none can be created)"
    );
    let log = Arc::new(JetStream {
        js,
        stream,
        direct,
        name: options.name.clone(),
        replace_reader,
        connections,
        engine: engine.downgrade(),
        broken: std::sync::Mutex::new(None),
    });
    // Compared as text: the timestamp's type is the NATS client's choice.
    tokio::spawn(watch_stream(
        Arc::downgrade(&log),
        log.stream.cached_info().created.to_string(),
    ));
    let last = log.committed(0).await.map_err(|e| stream_error(&e))?;
    let local = engine.committed_cursor();
    if local > last || (local > 0 && !same_record(engine, &log.stream, local).await) {
        return Err(StreamError::Diverged {
            dir: engine.log().dir().display().to_string(),
            name: options.name.clone(),
            local,
            stream: last,
        });
    }
    let backend: Arc<dyn LogBackend> = log.clone();
    tokio::spawn(super::backend::follow(engine.clone(), backend));
    if last > local {
        tracing::info!(from = local, to = last, "catching up from the stream");
    }
    engine.committed(last).await.map_err(|e| stream_error(&e))?;
    Ok(log)
}

/// The stream, set to answer direct gets (which the reader uses from 2.11 on) where its
/// server can and it does not yet: a stream made by an older broker, or before the servers
/// were upgraded. If the server refuses, the stream is used as it is, and the reader waits
/// for a consumer as before.
async fn enable_features(
    js: &jetstream::Context,
    mut stream: jetstream::stream::Stream,
) -> jetstream::stream::Stream {
    let config = &stream.cached_info().config;
    let version = js.client().server_info().version;
    let direct = config.allow_direct || answers_batched_direct_gets(&version);
    if direct == config.allow_direct {
        return stream;
    }
    let config = jetstream::stream::Config {
        allow_direct: direct,
        ..config.clone()
    };
    match tokio::time::timeout(CREATE_WAIT, js.update_stream(config)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, direct, "the stream's settings could not be updated")
        }
        Err(_) => tracing::warn!(
            direct,
            "the stream's settings could not be updated: no answer within 2 s"
        ),
    }
    let _ = stream.info().await;
    stream
}

/// Checks that the nodes sharing the stream fold it with the same [`FOLD_SETTINGS`]
/// (`recheck` reads them: nodes with different idempotency windows kept different inserts of
/// one stream, found by an attack review; different tenant limits would do the same). The
/// first node writes its settings into the stream's metadata (nats-server 2.10+), and the
/// first of a newer build adds those missing; a node with another value refuses to start. A
/// server that keeps no metadata (2.9) cannot be checked: the node says so.
async fn same_settings(
    js: &jetstream::Context,
    mut stream: jetstream::stream::Stream,
    engine: &Engine,
    name: &str,
) -> Result<jetstream::stream::Stream, StreamError> {
    let ours = fold_settings(engine);
    let config = stream.cached_info().config.clone();
    check_settings(&config.metadata, &ours, name)?;
    let mut metadata = config.metadata.clone();
    for (_, key, value) in &ours {
        metadata
            .entry((*key).to_owned())
            .or_insert_with(|| value.clone());
    }
    if metadata == config.metadata {
        return Ok(stream);
    }
    // A stream made by an older build lacks some: add ours, then read back what the stream
    // kept. Two nodes adding theirs at once both write; the one whose values were written
    // over is refused below, as if it had come second.
    let update = jetstream::stream::Config { metadata, ..config };
    let written = matches!(
        tokio::time::timeout(CREATE_WAIT, js.update_stream(update)).await,
        Ok(Ok(_))
    );
    let _ = stream.info().await;
    let kept = stream.cached_info().config.metadata.clone();
    if !written || ours.iter().any(|(_, key, _)| !kept.contains_key(*key)) {
        tracing::warn!(
            "the stream keeps no metadata (nats-server before 2.10): nothing checks that every node has the same --idempotency_window_secs, --max_event_names and --max_tenant_snapshot_bytes; give them the same"
        );
    }
    check_settings(&kept, &ours, name)?;
    Ok(stream)
}

/// This node's values of [`FOLD_SETTINGS`]: the flag, the metadata key, the value.
fn fold_settings(engine: &Engine) -> Vec<(&'static str, &'static str, String)> {
    let limits = engine.tenant_limits();
    let values = [
        (engine.read(|s| s.idempotency.window_ms) / 1000).to_string(),
        limits.event_names.to_string(),
        limits.snapshot_bytes.to_string(),
    ];
    FOLD_SETTINGS
        .into_iter()
        .zip(values)
        .map(|((flag, key), value)| (flag, key, value))
        .collect()
}

/// Refuses `ours` where the stream's `metadata` holds another value.
fn check_settings(
    metadata: &std::collections::HashMap<String, String>,
    ours: &[(&'static str, &'static str, String)],
    name: &str,
) -> Result<(), StreamError> {
    for (flag, key, value) in ours {
        if let Some(theirs) = metadata.get(*key)
            && theirs != value
        {
            return Err(StreamError::SettingMismatch {
                name: name.to_owned(),
                flag,
                theirs: theirs.clone(),
                ours: value.clone(),
            });
        }
    }
    Ok(())
}

/// Whether the local copy's record at `cursor` is the stream's: a copy made from another
/// stream, or from one since deleted and recreated, must not be continued.
async fn same_record(engine: &Engine, stream: &jetstream::stream::Stream, cursor: Cursor) -> bool {
    let Ok(theirs) = stream.get_raw_message(cursor).await else {
        return false;
    };
    let mut ours = None;
    let _ = engine.log().read_after(cursor - 1, cursor, |_, payload| {
        ours = Record::decode(payload).ok();
        false
    });
    match (ours, Record::decode(&theirs.payload)) {
        (Some(ours), Ok(theirs)) => ours == Record { cursor, ..theirs },
        // Compaction dropped our copy of it, or the fold dropped the record itself
        // (`state::recheck`): nothing to compare.
        (None, _) => true,
        (Some(_), Err(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_valid_subject_tokens() {
        // `.`, `*`, `>` and spaces would split or widen a subject; hex never does.
        assert_eq!(hex("bob"), "626f62");
        assert_eq!(hex("a.b *>"), "612e62202a3e");
        assert_eq!(hex("é"), "c3a9");
        assert_eq!(hex(""), "");
    }

    #[test]
    fn userinfo_is_never_printed() {
        for (url, shown) in [
            ("nats://user:hunter2@host:4222", "nats://***@host:4222"),
            ("nats://hunter2@host", "nats://***@host"),
            ("nats://us%40r:hun@ter2@host:1", "nats://***@host:1"),
            ("nats://u:hunter2/x@host:1", "nats://***@host:1"),
            ("u:hunter2@host", "***@host"),
            ("nats://host:4222", "nats://host:4222"),
            ("nats://[::1]:4222", "nats://[::1]:4222"),
        ] {
            assert_eq!(redacted(url), shown, "{url}");
        }
        assert_eq!(
            redacted_list(&["nats://a:hunter2@h:1".into(), "nats://h:2".into()]),
            "nats://***@h:1,nats://h:2"
        );
        let options = StreamOptions {
            servers: vec!["nats://a:hunter2@h:1".into()],
            name: "broker".into(),
            replicas: 1,
            auth: NatsAuth::UserPassword {
                user: "a".into(),
                password: "hunter2".into(),
            },
            tls: None,
        };
        let printed = format!("{options:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("nats://***@h:1"), "{printed}");
        let token = format!("{:?}", NatsAuth::Token("hunter2".into()));
        assert_eq!(token, "Token(***)");
    }

    #[test]
    fn userinfo_becomes_credentials() {
        assert_eq!(split_userinfo("nats://h:1"), ("nats://h:1".into(), None));
        assert_eq!(
            split_userinfo("nats://us%40r:p%3Aw%2f@h:1"),
            (
                "nats://h:1".into(),
                Some(NatsAuth::UserPassword {
                    user: "us@r".into(),
                    password: "p:w/".into()
                })
            )
        );
        assert_eq!(
            split_userinfo("nats://t%zz%4@h"),
            ("nats://h".into(), Some(NatsAuth::Token("t%zz%4".into())))
        );
    }

    #[test]
    fn message_ids_are_never_reused() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| message_id()).collect();
        assert_eq!(ids.len(), 1000);
        let first = message_id();
        let (prefix, _) = first.split_once('.').unwrap();
        // A random prefix per process: another node's counter never meets this one's.
        assert_eq!(prefix.len(), 32);
        assert!(prefix.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn batched_direct_gets_from_2_11_on() {
        for (version, direct) in [
            ("2.11.0", true),
            ("2.12.8", true),
            ("v2.11.3", true),
            ("2.10.29", false),
            ("2.9.25", false),
            ("", false),
        ] {
            assert_eq!(answers_batched_direct_gets(version), direct, "{version}");
        }
    }

    #[test]
    fn every_command_names_its_user() {
        let revoke = Command::RevokeUser {
            username: "eve".into(),
        };
        assert_eq!(user_of(&revoke), "eve");
        let update = Command::UpdateUser {
            update: crate::state::record::UserUpdated {
                username: "ann".into(),
                ..Default::default()
            },
            password_hash: None,
        };
        assert_eq!(user_of(&update), "ann");
    }
}

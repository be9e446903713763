//! Reading the shared stream: an ordered consumer, and batched direct gets whenever the
//! consumer cannot be had.
//!
//! Why two ways: an ordered consumer is an R1 consumer, and JetStream's meta leader places each
//! new one on a *random* server among the stream's peers it believes online (nats-server
//! 2.12.8, `createGroupForConsumer`). A server that vanished without saying so (`kill -9`, a
//! stall) counts as online until it has missed its stats heartbeats for 150 s (the orphan
//! check, `5 × eventsHBInterval`), so right after a fault about one creation in three is placed
//! on the lost server and never answered, and none is answered while the meta leader itself is
//! being elected. That was most of a node's wait beyond NATS's elections (issue 20).
//!
//! A **batched direct get** (`$JS.API.DIRECT.GET.<stream>` with `{"seq":N,"batch":K}`,
//! nats-server 2.11+, streams with `allow_direct`) is answered by any server that holds a
//! replica of the stream, followers included, and needs neither leader. Each replica stores a
//! message only once it is committed, so whatever one answers is stored by the stream's quorum,
//! in sequence order. The reader therefore reads that way while a consumer is being created
//! and while its consumer is silent although the stream grew; once the consumer delivers, it
//! skips what the direct gets already handed on. Both ways turn a message into an [`Entry`]
//! with the same [`entry`], so a forged message is skipped alike whichever read it.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures_util::StreamExt;
use tokio::time::Instant;

use super::{ATTEMPT_WAIT, EPOCH_HEADER, IDLE_CHECK, subject_of};
use crate::engine::EngineError;
use crate::engine::backend::{Entry, READ_BATCH};
use crate::log::Cursor;
use crate::state::{Record, RecordKind};

/// How long a new consumer may take before the reader reads by direct gets meanwhile: a
/// healthy cluster creates one within milliseconds.
const DIRECT_AFTER: Duration = Duration::from_millis(200);

/// How often the reader asks by direct get while it has no consumer, or while its consumer
/// lags the stream: a write's reply waits for this node's fold.
const DIRECT_EVERY: Duration = Duration::from_millis(50);

/// How long the reader waits before it asks for a consumer again after an attempt failed.
const CREATE_AGAIN: Duration = Duration::from_millis(100);

/// How long a direct get may take to bring its first message. Every replica answers the
/// stream's direct gets as one queue group, and a stalled server (`SIGSTOP`, a frozen VM)
/// keeps its place in that group until its routes time out, long after the election: a
/// request routed to it is never answered, and the next one, sent at once, most likely goes
/// to a live replica. Measured: with 1 s here, a write's answer (which waits for this node's
/// fold) waited 1–2 s past the election in half the `SIGSTOP` runs.
const DIRECT_FIRST: Duration = Duration::from_millis(250);

/// Where the reader sends what it read, in cursor order.
pub(super) type Sink = tokio::sync::mpsc::Sender<Result<Vec<Entry>, EngineError>>;

/// The ordered consumer's messages.
type Messages = jetstream::consumer::pull::Ordered;

/// One reader of the stream, from the cursor after which it reads.
pub(super) struct Reader<'a> {
    /// The stream, to create the consumer on and ask for its state.
    pub stream: &'a jetstream::stream::Stream,
    /// The connection the direct gets go over.
    pub client: &'a async_nats::Client,
    /// The stream's name (its subjects are `<name>.>`).
    pub name: &'a str,
    /// Whether the stream answers batched direct gets (`allow_direct`, nats-server 2.11+);
    /// without them the reader is the consumer alone, as before.
    pub direct: bool,
    /// The newest cursor handed on.
    pub here: Cursor,
    /// Where the entries go.
    pub tx: &'a Sink,
}

impl Reader<'_> {
    /// Reads until the consumer ends or stalls (an error, after which the caller starts a new
    /// reader from the fold's cursor) or nobody listens any more (`Ok`).
    pub(super) async fn run(mut self) -> Result<(), String> {
        match self.open().await? {
            Some(messages) => self.follow(messages).await,
            None => Ok(()),
        }
    }

    /// A consumer from the cursor reached, read by direct gets while it is being created;
    /// `None` once nobody listens. Without direct gets a failed creation is the reader's end.
    async fn open(&mut self) -> Result<Option<Messages>, String> {
        let stream = self.stream;
        let mut attempt = Box::pin(open_consumer(stream, self.here, Duration::ZERO));
        let mut next_read = Instant::now() + DIRECT_AFTER;
        loop {
            tokio::select! {
                opened = &mut attempt => match opened {
                    Ok(messages) => return Ok(Some(messages)),
                    Err(why) if !self.direct => return Err(why),
                    Err(why) => {
                        tracing::info!(%why, at = self.here, "no consumer on the stream yet; reading it by direct gets meanwhile");
                        attempt = Box::pin(open_consumer(stream, self.here, CREATE_AGAIN));
                    }
                },
                () = tokio::time::sleep_until(next_read), if self.direct => {
                    let Some(read) = self.read_direct().await else {
                        return Ok(None);
                    };
                    // A full batch means more is waiting.
                    let pause = if read == Direct::Read(READ_BATCH) { Duration::ZERO } else { DIRECT_EVERY };
                    next_read = Instant::now() + pause;
                }
            }
        }
    }

    /// Hands on what the consumer delivers until it ends or stalls. A quiet consumer is checked
    /// against the stream: by a direct get, which hands on what the consumer has not (and a
    /// consumer that stays behind for [`IDLE_CHECK`] is given up), or else by the stream's
    /// state, twice.
    async fn follow(&mut self, messages: Messages) -> Result<(), String> {
        // Fused: a chunk may end on the stream's end, and the next call polls it again.
        let mut chunks = std::pin::pin!(messages.fuse());
        // Since when the consumer has been behind what the direct gets found.
        let mut behind_since: Option<Instant> = None;
        let mut suspect = None;
        // The last direct get went unanswered (perhaps to a stalled replica): ask again soon.
        let mut unanswered = false;
        let mut probe = self.stream.clone();
        loop {
            let quiet = if behind_since.is_some() || unanswered {
                DIRECT_EVERY
            } else {
                IDLE_CHECK
            };
            let chunk = match tokio::time::timeout(quiet, next_chunk(&mut chunks)).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return Err("the stream's consumer ended".into()),
                Err(_) if self.direct => {
                    let Some(read) = self.read_direct().await else {
                        return Ok(());
                    };
                    unanswered = read == Direct::Failed;
                    match read {
                        Direct::Failed => continue,
                        Direct::Read(0) => {
                            behind_since = None;
                            continue;
                        }
                        Direct::Read(_) => {}
                    }
                    let since = *behind_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= IDLE_CHECK {
                        return Err(format!(
                            "the consumer stalled; direct gets read on to {}",
                            self.here
                        ));
                    }
                    continue;
                }
                Err(_) => {
                    // Quiet: fine if the stream is quiet too. No answer: the stream has no
                    // leader now; its election's advisory (or the next checks) tell what
                    // became of this consumer.
                    let Ok(info) = tokio::time::timeout(ATTEMPT_WAIT, probe.info()).await else {
                        continue;
                    };
                    let last = info.map_err(|e| e.to_string())?.state.last_sequence;
                    if last <= self.here {
                        suspect = None;
                    } else if suspect == Some(self.here) {
                        return Err(format!(
                            "the consumer stalled at {} with the stream at {last}",
                            self.here
                        ));
                    } else {
                        suspect = Some(self.here);
                    }
                    continue;
                }
            };
            behind_since = None;
            suspect = None;
            unanswered = false;
            let mut entries = Vec::with_capacity(chunk.len());
            for message in chunk {
                let message = message.map_err(|e| e.to_string())?;
                let info = message.info().map_err(|e| e.to_string())?;
                let stored_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
                entries.push(entry(
                    self.name,
                    info.stream_sequence,
                    message.subject.as_str(),
                    &message.payload,
                    message.headers.as_ref(),
                    Some(stored_ms),
                ));
            }
            if !self.hand_on(entries).await {
                return Ok(());
            }
        }
    }

    /// Reads by one batched direct get and hands on what it got; `None` once nobody listens.
    /// A failed read is logged: the consumer, or the next read, goes on.
    async fn read_direct(&mut self) -> Option<Direct> {
        match direct_batch(self.client, self.name, self.here).await {
            Ok(entries) => {
                let read = entries.len();
                self.hand_on(entries).await.then_some(Direct::Read(read))
            }
            Err(why) => {
                tracing::debug!(%why, at = self.here, "a direct get of the stream failed");
                Some(Direct::Failed)
            }
        }
    }

    /// Sends the entries after the cursor reached (a consumer repeats what direct gets read
    /// before it started); `false` once nobody listens.
    async fn hand_on(&mut self, mut entries: Vec<Entry>) -> bool {
        entries.retain(|e| e.cursor() > self.here);
        let Some(last) = entries.last() else {
            return true;
        };
        self.here = last.cursor();
        self.tx.send(Ok(entries)).await.is_ok()
    }
}

/// What one direct get came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direct {
    /// Answered, with this many entries (0: nothing newer).
    Read(usize),
    /// Not answered in time, or refused.
    Failed,
}

/// The consumer's next chunk: the next message and every one already there after it, up to
/// [`READ_BATCH`] (none while the failpoint `nats:consumer_silent` is on: a consumer on a lost
/// server).
///
/// Not `StreamExt::ready_chunks`: that reserves room for a full chunk on every chunk, and
/// 1,024 messages are over glibc's mmap threshold, so each chunk (one to a few messages under
/// load) cost an `mmap`, page faults and an `munmap` with its TLB shootdown across threads.
async fn next_chunk<S: futures_util::Stream + Unpin>(messages: &mut S) -> Option<Vec<S::Item>> {
    use futures_util::FutureExt;
    #[cfg(feature = "fault-injection")]
    if crate::log::fault::fails_at("nats:consumer_silent") {
        return std::future::pending().await;
    }
    let mut chunk = vec![messages.next().await?];
    while chunk.len() < READ_BATCH {
        // Polled once: a message already received, or nothing (the next `await` above registers
        // the task's waker again).
        match messages.next().now_or_never() {
            Some(Some(message)) => chunk.push(message),
            Some(None) | None => break,
        }
    }
    Some(chunk)
}

/// An ordered consumer of `stream` from after `after`, asked for after `pause`. While a lost
/// server's leadership is re-elected (the stream's, or JetStream's meta leader, which places
/// consumers), or when the consumer is placed on a lost server, creating it hangs until the
/// client's request timeout; a short wait lets the next attempt land soon after.
async fn open_consumer(
    stream: &jetstream::stream::Stream,
    after: Cursor,
    pause: Duration,
) -> Result<Messages, String> {
    tokio::time::sleep(pause).await;
    #[cfg(feature = "fault-injection")]
    if crate::log::fault::fails_at("nats:create_consumer") {
        // As on a lost server: no answer until the attempt gives up.
        tokio::time::sleep(ATTEMPT_WAIT).await;
        return Err("creating a consumer timed out (failpoint nats:create_consumer)".into());
    }
    let consumer = tokio::time::timeout(
        ATTEMPT_WAIT,
        stream.create_consumer(jetstream::consumer::pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
            ..Default::default()
        }),
    )
    .await
    .map_err(|_| "creating a consumer timed out (a NATS election in progress?)".to_owned())?
    .map_err(|e| e.to_string())?;
    tokio::time::timeout(ATTEMPT_WAIT, consumer.messages())
        .await
        .map_err(|_| "starting the consumer timed out".to_owned())?
        .map_err(|e| e.to_string())
}

/// The header a batched direct get's end of batch carries (status 204, "EOB").
const END_OF_BATCH: u16 = 204;

/// The messages after `after`, up to [`READ_BATCH`], by one batched direct get, as long as
/// their sequences follow on without a gap: a gap is a deleted message or a server that is
/// still catching up, which direct gets cannot tell apart, so what lies beyond it is left to
/// the consumer. Empty when the stream holds nothing newer (as far as the answering server
/// knows).
pub(super) async fn direct_batch(
    client: &async_nats::Client,
    name: &str,
    after: Cursor,
) -> Result<Vec<Entry>, String> {
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    let request = serde_json::json!({ "seq": after + 1, "batch": READ_BATCH });
    client
        .publish_with_reply(
            format!("$JS.API.DIRECT.GET.{name}"),
            inbox,
            request.to_string().into(),
        )
        .await
        .map_err(|e| e.to_string())?;
    // The first message soon, or another replica is asked; the rest of a batch follows from
    // the replica that answers, within the usual bound.
    let mut deadline = Instant::now() + DIRECT_FIRST;
    let mut entries = Vec::new();
    loop {
        let message = match tokio::time::timeout_at(deadline, replies.next()).await {
            Ok(Some(message)) => message,
            Ok(None) => return Err("the direct get's subscription ended".into()),
            Err(_) if entries.is_empty() => {
                return Err(format!(
                    "no answer to a direct get within {} ms",
                    DIRECT_FIRST.as_millis()
                ));
            }
            Err(_) => return Err("a direct get's batch stopped within 1 s".into()),
        };
        if entries.is_empty() {
            deadline = Instant::now() + ATTEMPT_WAIT;
        }
        match message.status.map(|s| s.as_u16()) {
            None => {}
            // Nothing after `after`, or the batch's end.
            Some(404 | END_OF_BATCH) => return Ok(entries),
            Some(status) => {
                return Err(format!(
                    "a direct get was answered {status} {}",
                    message.description.unwrap_or_default()
                ));
            }
        }
        let cursor = server_header(&message, "Nats-Sequence")
            .and_then(|s| s.parse::<Cursor>().ok())
            .ok_or("a direct get's answer without its sequence")?;
        if cursor != after + 1 + entries.len() as Cursor {
            return Ok(entries);
        }
        let subject = server_header(&message, "Nats-Subject").unwrap_or_default();
        // The server's own time stamp (its header comes last, as `server_header` says).
        let stored_ms = async_nats::jetstream::message::StreamMessage::try_from(message.clone())
            .ok()
            .map(|stored| (stored.time.unix_timestamp_nanos() / 1_000_000) as i64);
        entries.push(entry(
            name,
            cursor,
            subject,
            &message.payload,
            message.headers.as_ref(),
            stored_ms,
        ));
    }
}

/// A header the server added to a direct get's answer. The stored message's own headers come
/// first and the server appends its own (nats-server `genHeader`), so the last value is the
/// server's even if a publisher forged the header.
fn server_header<'m>(message: &'m async_nats::Message, name: &str) -> Option<&'m str> {
    let headers = message.headers.as_ref()?;
    headers.get_all(name).last().map(|v| v.as_str())
}

/// How far a record's time may be ahead of when the stream stored it: a node stamps a record
/// just before it publishes it, so only clocks set wrong by this much get there.
const MAX_AHEAD_OF_STORED_MS: i64 = 60 * 60 * 1000;

/// The message at `cursor`, which the stream stored at `stored_ms` (the server's clock), as
/// the fold takes it: a record, or [`Entry::Unreadable`] when it is no record of this
/// stream. It must not stop the fold, here or on any other node.
fn entry(
    name: &str,
    cursor: Cursor,
    subject: &str,
    payload: &[u8],
    headers: Option<&async_nats::HeaderMap>,
    stored_ms: Option<i64>,
) -> Entry {
    let record = match Record::decode(payload) {
        Ok(record) => Record { cursor, ..record },
        Err(e) => {
            return Entry::Unreadable {
                cursor,
                why: format!("does not decode as a record: {e}"),
            };
        }
    };
    if subject != subject_of(name, &record) {
        return Entry::Unreadable {
            cursor,
            why: format!("a record published under the wrong subject {subject:?}"),
        };
    }
    // A record far ahead of when it was stored was stamped by no node: one keyed insert
    // stamped in the year 292 million made every node forget every Idempotency-Key (their
    // window is record time), and age-based retention would never drop it (an attack review).
    // The stored time is the same on every node, so every node skips it alike.
    if let Some(stored_ms) = stored_ms
        && record.at_ms > stored_ms.saturating_add(MAX_AHEAD_OF_STORED_MS)
    {
        return Entry::Unreadable {
            cursor,
            why: format!(
                "a record stamped {} ms after the stream stored it",
                record.at_ms.saturating_sub(stored_ms)
            ),
        };
    }
    let credential_epoch = headers
        .and_then(|h| h.get(EPOCH_HEADER))
        .and_then(|v| v.as_str().parse().ok());
    // Every node sends a user's insert with the epoch its author authenticated in: one
    // without it (or with one that does not parse) was not written by a node, and would
    // otherwise be checked for revocation only (an attack review).
    if credential_epoch.is_none()
        && matches!(&record.kind, RecordKind::EventInserted(e) if e.by.is_some())
    {
        return Entry::Unreadable {
            cursor,
            why: format!("a user's insert without a valid {EPOCH_HEADER} header"),
        };
    }
    Entry::Record {
        record,
        credential_epoch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::record::EventInserted;

    /// An admin insert stamped `at_ms`, as the stream `s` would carry it.
    fn stamped(at_ms: i64) -> (String, Vec<u8>) {
        let record = Record {
            cursor: 0,
            at_ms,
            kind: RecordKind::EventInserted(EventInserted {
                id: [7; 16],
                tenant: "t".into(),
                event: "e".into(),
                data: "1".into(),
                by: None,
                idempotency_key: None,
            }),
        };
        (subject_of("s", &record), record.encode())
    }

    /// An attack review stamped a keyed insert in the year 292 million: every node then forgot
    /// every Idempotency-Key. A record far ahead of when the stream stored it is skipped.
    #[test]
    fn a_record_stamped_far_after_it_was_stored_is_no_record() {
        let stored = 1_700_000_000_000;
        for (at_ms, kept) in [
            (stored - 86_400_000, true),
            (stored + 5_000, true),
            (stored + MAX_AHEAD_OF_STORED_MS, true),
            (stored + MAX_AHEAD_OF_STORED_MS + 1, false),
            (i64::MAX, false),
        ] {
            let (subject, payload) = stamped(at_ms);
            let read = entry("s", 9, &subject, &payload, None, Some(stored));
            assert_eq!(matches!(read, Entry::Record { .. }), kept, "{at_ms}");
        }
        // No stored time to compare with (a server that sent none): nothing to check.
        let (subject, payload) = stamped(i64::MAX);
        assert!(matches!(
            entry("s", 9, &subject, &payload, None, None),
            Entry::Record { .. }
        ));
    }

    /// A chunk is what is already there, up to READ_BATCH; it waits only for its first item,
    /// and a stream's end comes after the last chunk, polled again without harm.
    #[tokio::test]
    async fn a_chunk_takes_what_is_ready_up_to_a_batch_and_waits_only_for_its_first() {
        let total = READ_BATCH + READ_BATCH / 2;
        let mut ready = std::pin::pin!(futures_util::stream::iter(0..total).fuse());
        let first = next_chunk(&mut ready).await.unwrap();
        assert_eq!(first, (0..READ_BATCH).collect::<Vec<_>>());
        let second = next_chunk(&mut ready).await.unwrap();
        assert_eq!(second, (READ_BATCH..total).collect::<Vec<_>>());
        assert_eq!(next_chunk(&mut ready).await, None);
        assert_eq!(next_chunk(&mut ready).await, None);

        // Two items now, the third only later: the chunk does not wait for it.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut later = Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)).fuse());
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(next_chunk(&mut later).await, Some(vec![1, 2]));
        let waiting = tokio::spawn(async move { next_chunk(&mut later).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiting.is_finished(),
            "an empty stream yields no empty chunk"
        );
        tx.send(3).unwrap();
        assert_eq!(waiting.await.unwrap(), Some(vec![3]));
    }
}

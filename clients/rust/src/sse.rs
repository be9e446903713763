//! The subscription's state machine: one SSE connection at a time, parsed by
//! `eventsource-stream`, reopened with `Last-Event-ID` after it ends.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use crate::{Auth, Client, Error, Event, SubscribeOptions, authorize, check, jittered};

/// Why the server ended a stream (`event: broker.closed`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The user was revoked.
    Revoked,
    /// The admin deleted the user.
    Deleted,
    /// The user's password, tenant, scopes or two-factor setting changed: log in again.
    CredentialsChanged,
    /// The server is shutting down; the subscription reconnects and resumes by itself.
    Shutdown,
    /// The JWT that opened the stream expired; the subscription reconnects with the client's
    /// current one (refreshed by itself, see [`Client::set_auto_refresh`]) and resumes.
    Expired,
    /// A reason this client does not know (from a newer server); treated as final.
    Other(String),
}

impl CloseReason {
    /// The reason as the server names it.
    pub fn as_str(&self) -> &str {
        match self {
            CloseReason::Revoked => "revoked",
            CloseReason::Deleted => "deleted",
            CloseReason::CredentialsChanged => "credentials_changed",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Expired => "expired",
            CloseReason::Other(s) => s,
        }
    }

    fn parse(s: &str) -> CloseReason {
        match s {
            "revoked" => CloseReason::Revoked,
            "deleted" => CloseReason::Deleted,
            "credentials_changed" => CloseReason::CredentialsChanged,
            "shutdown" => CloseReason::Shutdown,
            "expired" => CloseReason::Expired,
            other => CloseReason::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Frames =
    Pin<Box<dyn Stream<Item = Result<eventsource_stream::Event, EventStreamError<Error>>> + Send>>;

/// What one frame means to the subscription.
#[derive(Debug, PartialEq)]
pub(crate) enum Frame {
    /// An event of the tenant.
    Event(Event),
    /// `broker.closed` (or the older `broker.shutdown`).
    Closed {
        reason: CloseReason,
        cursor: Option<u64>,
    },
    /// `broker.reset`, a comment-only or `retry:`-only frame: nothing to deliver.
    Skip,
}

/// Reads one parsed SSE frame.
pub(crate) fn classify(frame: &eventsource_stream::Event) -> Result<Frame, Error> {
    let parse_data = || -> Value {
        // Broker's data is always JSON; keep the text otherwise.
        serde_json::from_str(&frame.data).unwrap_or_else(|_| Value::String(frame.data.clone()))
    };
    match frame.event.as_str() {
        "broker.closed" | "broker.shutdown" => {
            let data = parse_data();
            let reason = match (
                frame.event.as_str(),
                data.get("reason").and_then(Value::as_str),
            ) {
                ("broker.closed", Some(r)) => CloseReason::parse(r),
                _ => CloseReason::Shutdown,
            };
            let cursor = data
                .get("cursor")
                .and_then(Value::as_u64)
                .or_else(|| frame.id.parse().ok());
            Ok(Frame::Closed { reason, cursor })
        }
        "broker.reset" => Ok(Frame::Skip),
        name => {
            let cursor = frame.id.parse().map_err(|_| {
                Error::Protocol(format!("event {name:?} has no numeric id: {:?}", frame.id))
            })?;
            Ok(Frame::Event(Event {
                cursor,
                event: name.to_owned(),
                data: parse_data(),
            }))
        }
    }
}

pub(crate) struct State {
    client: Client,
    options: SubscribeOptions,
    last: Arc<Mutex<Option<u64>>>,
    frames: Option<Frames>,
    /// Failed attempts in a row (reset by a delivered event).
    failures: u32,
    /// Whether the next connection waits first.
    wait: bool,
    /// A 401 was answered by refreshing the JWT once.
    refreshed: bool,
    done: bool,
}

impl State {
    pub(crate) fn new(
        client: Client,
        options: SubscribeOptions,
        last: Arc<Mutex<Option<u64>>>,
    ) -> Self {
        State {
            client,
            options,
            last,
            frames: None,
            failures: 0,
            wait: false,
            refreshed: false,
            done: false,
        }
    }

    /// The next item of the stream, or `None` once it ended.
    pub(crate) async fn next_item(&mut self) -> Option<Result<Event, Error>> {
        loop {
            if self.done {
                return None;
            }
            let Some(frames) = self.frames.as_mut() else {
                if self.wait {
                    let delay = jittered(
                        self.options.min_retry,
                        self.failures.saturating_sub(1),
                        self.options.max_retry,
                    );
                    tokio::time::sleep(delay).await;
                }
                self.wait = true;
                match self.connect().await {
                    Ok(frames) => self.frames = Some(frames),
                    Err(e) => {
                        if let Some(fatal) = self.failed(e).await {
                            return Some(Err(fatal));
                        }
                    }
                }
                continue;
            };
            let frame = match frames.next().await {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    // The connection broke (or sent what is not SSE): reconnect.
                    self.frames = None;
                    let e = match e {
                        EventStreamError::Transport(e) => e,
                        other => Error::Protocol(other.to_string()),
                    };
                    if let Some(fatal) = self.failed(e).await {
                        return Some(Err(fatal));
                    }
                    continue;
                }
                None => {
                    // The server ended the stream without saying why (a crash, a proxy).
                    self.frames = None;
                    self.failures += 1;
                    continue;
                }
            };
            match classify(&frame) {
                Ok(Frame::Event(event)) => {
                    let mut last = self.last.lock().unwrap();
                    // Never twice: a cursor at or below the last one delivered was seen.
                    if last.is_some_and(|l| event.cursor <= l) {
                        continue;
                    }
                    *last = Some(event.cursor);
                    self.failures = 0;
                    self.refreshed = false;
                    return Some(Ok(event));
                }
                Ok(Frame::Closed { reason, cursor }) => {
                    self.frames = None;
                    if matches!(reason, CloseReason::Shutdown | CloseReason::Expired) {
                        // Reconnect (after the restart, to another node, or with the
                        // refreshed JWT) and resume.
                        self.failures = 1;
                        continue;
                    }
                    self.done = true;
                    return Some(Err(Error::Closed { reason, cursor }));
                }
                Ok(Frame::Skip) => continue,
                Err(e) => {
                    self.frames = None;
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// Counts a failed attempt; returns the error when the subscription must end.
    async fn failed(&mut self, error: Error) -> Option<Error> {
        self.failures += 1;
        match error.status() {
            Some(401) => {
                // A JWT may have expired while the stream was down: refresh it once.
                if !self.refreshed
                    && self.client.jwt().is_some()
                    && self.client.refresh().await.is_ok()
                {
                    self.refreshed = true;
                    self.wait = false;
                    return None;
                }
                self.done = true;
                return Some(error);
            }
            Some(400 | 403 | 404 | 413) => {
                self.done = true;
                return Some(error);
            }
            _ => {}
        }
        if let Error::Api {
            retry_after: Some(s),
            ..
        } = error
        {
            tokio::time::sleep(std::time::Duration::from_secs(s).min(self.options.max_retry)).await;
        }
        if self
            .options
            .max_attempts
            .is_some_and(|max| self.failures >= max)
        {
            self.done = true;
            return Some(error);
        }
        None
    }

    /// Opens one connection to `/sse`.
    async fn connect(&mut self) -> Result<Frames, Error> {
        let auth: Auth = self.client.auth()?;
        let mut query: Vec<(&str, &str)> = self
            .options
            .events
            .iter()
            .map(|e| ("event", e.as_str()))
            .collect();
        if self.options.envelope {
            query.push(("envelope", "true"));
        }
        let mut request = self
            .client
            .inner
            .http
            .get(self.client.url("/sse"))
            .query(&query)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .header(reqwest::header::CACHE_CONTROL, "no-cache");
        if let Some(last) = *self.last.lock().unwrap() {
            request = request.header("last-event-id", last.to_string());
        }
        // Bound the wait for the response head; the body is bounded by `idle_timeout`.
        let send = authorize(request, Some(auth)).send();
        let response = tokio::time::timeout(self.client.inner.request_timeout, send)
            .await
            .map_err(|_| Error::Idle(self.client.inner.request_timeout))?
            .map_err(Error::Transport)?;
        let response = check(response).await?;
        let idle = self.options.idle_timeout;
        let bytes = futures_util::stream::unfold(Some(response), move |response| async move {
            let mut response = response?;
            match tokio::time::timeout(idle, response.chunk()).await {
                Ok(Ok(Some(chunk))) => Some((Ok(chunk), Some(response))),
                Ok(Ok(None)) => None,
                Ok(Err(e)) => Some((Err(Error::Transport(e)), None)),
                Err(_) => Some((Err(Error::Idle(idle)), None)),
            }
        });
        Ok(Box::pin(bytes.eventsource()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    async fn frames(text: &str) -> Vec<Frame> {
        let chunks: Vec<Result<Vec<u8>, Error>> =
            text.as_bytes().chunks(7).map(|c| Ok(c.to_vec())).collect();
        let parsed: Vec<_> = futures_util::stream::iter(chunks)
            .eventsource()
            .try_collect::<Vec<_>>()
            .await
            .unwrap();
        parsed.iter().map(|f| classify(f).unwrap()).collect()
    }

    #[tokio::test]
    async fn parses_broker_frames_split_anywhere() {
        let got = frames(
            "retry: 3000\n\nid: 2\nevent: temperature\ndata: {\"celsius\":21}\n\n: keep-alive\n\n\
             id: 3\r\nevent: door\r\ndata: \"open\"\r\n\r\n\
             event: broker.reset\ndata: {\"reason\":\"ahead\",\"cursor\":3}\n\n\
             id: 3\nevent: broker.closed\ndata: {\"reason\":\"revoked\",\"cursor\":3}\n\n",
        )
        .await;
        assert_eq!(
            got,
            vec![
                Frame::Event(Event {
                    cursor: 2,
                    event: "temperature".into(),
                    data: serde_json::json!({"celsius": 21}),
                }),
                Frame::Event(Event {
                    cursor: 3,
                    event: "door".into(),
                    data: serde_json::json!("open"),
                }),
                Frame::Skip,
                Frame::Closed {
                    reason: CloseReason::Revoked,
                    cursor: Some(3),
                },
            ]
        );
    }

    #[tokio::test]
    async fn shutdown_and_the_older_frame_name() {
        let got = frames(
            "id: 7\nevent: broker.closed\ndata: {\"reason\":\"shutdown\",\"cursor\":7}\n\n\
             id: 8\nevent: broker.shutdown\ndata: {}\n\n\
             id: 9\nevent: broker.closed\ndata: {\"reason\":\"something_new\"}\n\n",
        )
        .await;
        assert_eq!(
            got,
            vec![
                Frame::Closed {
                    reason: CloseReason::Shutdown,
                    cursor: Some(7),
                },
                Frame::Closed {
                    reason: CloseReason::Shutdown,
                    cursor: Some(8),
                },
                Frame::Closed {
                    reason: CloseReason::Other("something_new".into()),
                    cursor: Some(9),
                },
            ]
        );
    }
}

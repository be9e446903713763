//! Broker's client for Rust: log in, insert events idempotently, page through history and
//! follow a tenant's events over Server-Sent Events, resuming with `Last-Event-ID` after a
//! dropped connection or a server restart.
//!
//! ```no_run
//! use futures_util::StreamExt;
//!
//! # async fn run() -> Result<(), broker_client::Error> {
//! let client = broker_client::Client::new("http://127.0.0.1:8080")?;
//! client.login("alice", "correct horse").await?;
//! let inserted = client.insert("temperature", serde_json::json!({"celsius": 21})).await?;
//! println!("stored at cursor {}", inserted.cursor);
//!
//! let mut events = client.subscribe(broker_client::SubscribeOptions::default());
//! while let Some(event) = events.next().await {
//!     let event = event?; // ends with an error when the user is revoked or deleted
//!     println!("#{} {}: {}", event.cursor, event.event, event.data);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! It mirrors the TypeScript client (`clients/js`): every insert carries an `Idempotency-Key`
//! and is retried with it, a subscription reconnects with jittered backoff and never delivers
//! an event twice, `broker.closed` frames end it (revoked, deleted, credentials changed) or
//! make it reconnect (shutdown), and the JWT is refreshed by itself at 80 % of its lifetime
//! (see [`Client::set_auto_refresh`]).

#![deny(missing_docs)]

mod admin;
mod sse;

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use admin::{Admin, Enrolment, NewUser, User};
pub use sse::CloseReason;

/// Everything that can go wrong talking to Broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error status and its `{"error": …}` sentence.
    #[error("HTTP {status}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The server's sentence (or `HTTP <status>` when the body was not Broker's JSON).
        message: String,
        /// Seconds from a `retry-after` header (429, 503), if any.
        retry_after: Option<u64>,
    },
    /// The server could not be reached, did not answer in time, or the connection broke.
    #[error("could not reach the server: {0}")]
    Transport(#[source] reqwest::Error),
    /// An SSE stream stayed silent (not even a keep-alive comment) longer than allowed.
    #[error("the stream was silent for {0:?} (no keep-alive): the connection is presumed dead")]
    Idle(Duration),
    /// The server ended the stream for good (`broker.closed`): the credentials are void,
    /// so the subscription does not reconnect. Log in again.
    #[error("the server closed the stream: {reason}")]
    Closed {
        /// Why (`revoked`, `deleted`, `credentials_changed`, or a newer server's reason).
        reason: CloseReason,
        /// The cursor a resume would start after, if the server said.
        cursor: Option<u64>,
    },
    /// The answer was not what Broker sends (bad JSON, a malformed SSE stream).
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// The event's data could not be serialized to JSON.
    #[error("the data could not be serialized to JSON: {0}")]
    Serialize(#[source] serde_json::Error),
    /// A request that needs credentials was made before `login`, `use_jwt` or `use_basic`,
    /// or `refresh` without a JWT.
    #[error("{0}")]
    Credentials(&'static str),
    /// TLS could not be set up (feature `rustls`): no root certificates, no protocol version.
    #[error("TLS could not be set up: {0}")]
    Tls(String),
    /// The HTTP client could not be built.
    #[error("the HTTP client could not be built: {0}")]
    Build(#[source] reqwest::Error),
}

impl Error {
    /// The HTTP status of an [`Error::Api`], else `None`.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether sending the same request again may succeed: no answer (timeout, connection
    /// refused or broken) or 429, 502, 503, 504.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Transport(e) => !e.is_builder() && !e.is_decode() && !e.is_redirect(),
            Error::Idle(_) => true,
            Error::Api { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            _ => false,
        }
    }
}

/// A JSON Web Token issued by `/login` or `/refresh`. Its `Debug` form hides the token.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Jwt(String);

impl Jwt {
    /// Wraps a token kept from an earlier login.
    pub fn new(token: impl Into<String>) -> Self {
        Jwt(token.into())
    }

    /// The token text (what goes after `Bearer `).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The token text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Jwt(***)")
    }
}

/// What `/insert` answers once the event is durable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Inserted {
    /// The event's UUIDv7.
    pub id: String,
    /// The event's cursor: the SSE id subscribers see.
    pub cursor: u64,
}

/// One event of `GET /events`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HistoryEvent {
    /// The event's cursor.
    pub cursor: u64,
    /// The event's UUIDv7.
    pub id: String,
    /// The event name.
    pub event: String,
    /// When it was appended, RFC 3339 UTC.
    pub at: String,
    /// The username that inserted it; `None` for the admin.
    pub by: Option<String>,
    /// The event's data.
    pub data: Value,
}

/// One page of history.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Page {
    /// The events: oldest first with `after`, newest first otherwise.
    pub events: Vec<HistoryEvent>,
    /// The cursor to pass as `after` (or `before`) for the next page; `None`: no more that way.
    pub next: Option<u64>,
    /// The newest cursor of the log.
    pub head: u64,
}

/// What page of history to read (`GET /events`); the default is the newest 100 events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Cursors above this one, oldest first.
    pub after: Option<u64>,
    /// Cursors below this one, newest first (not together with `after`).
    pub before: Option<u64>,
    /// Events per page, 1–1000 (the server's default is 100).
    pub limit: Option<u32>,
    /// Only events of these names (empty: all).
    pub events: Vec<String>,
}

/// Options of [`Client::subscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Only events of these names (`/sse?event=…`), in the snapshot, on resume and live.
    /// Empty: every event of the tenant.
    pub events: Vec<String>,
    /// `true`: each event's data is the envelope `{"id","at","by","data"}` (see
    /// [`Event::envelope`]) instead of the bare data.
    pub envelope: bool,
    /// Resume after this cursor instead of starting with the snapshot.
    pub last_event_id: Option<u64>,
    /// First reconnection delay (default 500 ms); it doubles up to `max_retry`, with jitter.
    pub min_retry: Duration,
    /// Longest reconnection delay (default 30 s).
    pub max_retry: Duration,
    /// Give up after this many failed connection attempts in a row, ending the stream with
    /// the last error (default `None`: keep trying, like a browser's `EventSource`).
    pub max_attempts: Option<u32>,
    /// A connection that receives nothing, not even the server's keep-alive comment, for this
    /// long is dropped and reopened (default 60 s; the server's keep-alive is 15 s).
    pub idle_timeout: Duration,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            events: Vec::new(),
            envelope: false,
            last_event_id: None,
            min_retry: Duration::from_millis(500),
            max_retry: Duration::from_secs(30),
            max_attempts: None,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// One event of a subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's cursor (the SSE id): pass it as `last_event_id` to resume after it.
    pub cursor: u64,
    /// The event name.
    pub event: String,
    /// The event's data (with `envelope: true`, the envelope object).
    pub data: Value,
}

/// An event's envelope (`/sse?envelope=true`): who inserted it, when, and its data.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Envelope {
    /// The event's UUIDv7 (what `insert` returned as `id`).
    pub id: String,
    /// When it was appended, RFC 3339 UTC.
    pub at: String,
    /// The username that inserted it; `None` for the admin.
    pub by: Option<String>,
    /// The event's data.
    pub data: Value,
}

impl Event {
    /// Reads the data as an [`Envelope`] (for a subscription with `envelope: true`).
    pub fn envelope(&self) -> Result<Envelope, Error> {
        Envelope::deserialize(&self.data)
            .map_err(|e| Error::Protocol(format!("event {} is not an envelope: {e}", self.cursor)))
    }
}

/// How requests are authenticated.
#[derive(Clone)]
enum Auth {
    Bearer(String),
    Basic(String, String),
}

struct Inner {
    base: String,
    http: reqwest::Client,
    auth: RwLock<Option<Auth>>,
    request_timeout: Duration,
    insert_retries: u32,
    insert_retry_base: Duration,
    /// Whether a JWT in use is refreshed before it expires.
    auto_refresh: AtomicBool,
    /// The task that refreshes the JWT in use, if one is scheduled.
    refresher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.refresher.get_mut().unwrap().take() {
            task.abort();
        }
    }
}

/// Broker's client: the server's base URL and one user's credentials. Cheap to clone (the
/// clones share the connection pool and the credentials).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.inner.base)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8080`), not logged in.
    pub fn new(base_url: impl Into<String>) -> Result<Client, Error> {
        Self::with_insert_retries(base_url, 3)
    }

    /// Like [`Client::new`], retrying an insert at most `retries` times (default 3).
    pub fn with_insert_retries(base_url: impl Into<String>, retries: u32) -> Result<Client, Error> {
        let builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        #[cfg(feature = "rustls")]
        let builder = builder.use_preconfigured_tls(tls_config()?);
        let http = builder.build().map_err(Error::Build)?;
        Ok(Client {
            inner: Arc::new(Inner {
                base: base_url.into().trim_end_matches('/').to_owned(),
                http,
                auth: RwLock::new(None),
                request_timeout: Duration::from_secs(10),
                insert_retries: retries,
                insert_retry_base: Duration::from_millis(200),
                auto_refresh: AtomicBool::new(true),
                refresher: Mutex::new(None),
            }),
        })
    }

    /// The server's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// Uses this JWT (from an earlier login) for every request, and refreshes it before it
    /// expires (see [`Client::set_auto_refresh`]).
    pub fn use_jwt(&self, jwt: &Jwt) {
        *self.inner.auth.write().unwrap() = Some(Auth::Bearer(jwt.0.clone()));
        self.schedule_refresh(refresh_delay(&jwt.0, Issued::Earlier));
    }

    /// Uses HTTP Basic for every request instead of a JWT (not for two-factor users).
    pub fn use_basic(&self, username: impl Into<String>, password: impl Into<String>) {
        *self.inner.auth.write().unwrap() = Some(Auth::Basic(username.into(), password.into()));
        self.schedule_refresh(None);
    }

    /// Whether the JWT in use is refreshed by itself (`POST /refresh`) at about 80 % of its
    /// lifetime, so that a long-lived client and its subscriptions outlive `--jwt_expiry`
    /// (default: on). A refresh refused with 401 (the user was revoked or deleted, or their
    /// password changed) stops it until the next login; one that gets no answer is tried
    /// again with jittered backoff until the token expires. It runs on the tokio runtime the
    /// JWT was set from (a JWT set outside a runtime is not refreshed by itself), and holds
    /// no reference to the client: it ends when the client is dropped.
    pub fn set_auto_refresh(&self, on: bool) {
        self.inner.auto_refresh.store(on, Ordering::Relaxed);
        let delay = self
            .jwt()
            .and_then(|jwt| refresh_delay(&jwt.0, Issued::Earlier));
        self.schedule_refresh(if on { delay } else { None });
    }

    /// The JWT in use, if any (the latest, after [`Client::refresh`]).
    pub fn jwt(&self) -> Option<Jwt> {
        match &*self.inner.auth.read().unwrap() {
            Some(Auth::Bearer(t)) => Some(Jwt(t.clone())),
            _ => None,
        }
    }

    /// Logs in (`POST /login`), uses the JWT for later requests and returns it.
    pub async fn login(&self, username: &str, password: &str) -> Result<Jwt, Error> {
        self.login_with(serde_json::json!({"username": username, "password": password}))
            .await
    }

    /// Logs in a two-factor user with the authenticator's current code.
    pub async fn login_totp(
        &self,
        username: &str,
        password: &str,
        totp: &str,
    ) -> Result<Jwt, Error> {
        self.login_with(
            serde_json::json!({"username": username, "password": password, "totp": totp}),
        )
        .await
    }

    async fn login_with(&self, body: Value) -> Result<Jwt, Error> {
        #[derive(Deserialize)]
        struct Answer {
            jwt: Jwt,
        }
        let request = self.inner.http.post(self.url("/login")).json(&body);
        let answer: Answer = self.send(request, None).await?;
        *self.inner.auth.write().unwrap() = Some(Auth::Bearer(answer.jwt.0.clone()));
        self.schedule_refresh(refresh_delay(&answer.jwt.0, Issued::Now));
        Ok(answer.jwt)
    }

    /// Trades the JWT in use for one with a fresh expiry (`POST /refresh`) and uses it from
    /// then on. A 401 means it is expired, revoked or outdated: log in again. (With
    /// [`Client::set_auto_refresh`] on, the default, this happens by itself.)
    pub async fn refresh(&self) -> Result<Jwt, Error> {
        let jwt = self.exchange().await?;
        self.schedule_refresh(refresh_delay(&jwt.0, Issued::Now));
        Ok(jwt)
    }

    /// `POST /refresh` with the JWT in use; the answer replaces it unless another JWT was set
    /// meanwhile.
    async fn exchange(&self) -> Result<Jwt, Error> {
        #[derive(Deserialize)]
        struct Answer {
            jwt: Jwt,
        }
        let used = self.jwt().ok_or(Error::Credentials(
            "refresh needs a JWT: log in (or use_jwt) first",
        ))?;
        let request = self.inner.http.post(self.url("/refresh"));
        let answer: Answer = self
            .send(request, Some(Auth::Bearer(used.0.clone())))
            .await?;
        // A login or use_* meanwhile wins over this answer.
        let mut auth = self.inner.auth.write().unwrap();
        if matches!(&*auth, Some(Auth::Bearer(t)) if *t == used.0) {
            *auth = Some(Auth::Bearer(answer.jwt.0.clone()));
        }
        Ok(answer.jwt)
    }

    /// Inserts an event (`POST /insert`) with a fresh random `Idempotency-Key`, retried with
    /// the same key after a timeout, a connection error, 429, 502, 503 or 504 (bounded, with
    /// jittered backoff): the event is stored once however many attempts it takes.
    pub async fn insert(&self, event: &str, data: impl Serialize) -> Result<Inserted, Error> {
        let key = uuid::Uuid::new_v4().to_string();
        self.insert_with_key(event, data, &key).await
    }

    /// Like [`Client::insert`] with your own `Idempotency-Key` (1–255 printable ASCII bytes):
    /// the same key answers with the same `{id, cursor}` and stores nothing more, also across
    /// calls and restarts (within the server's idempotency window).
    pub async fn insert_with_key(
        &self,
        event: &str,
        data: impl Serialize,
        key: &str,
    ) -> Result<Inserted, Error> {
        let data = serde_json::to_value(data).map_err(Error::Serialize)?;
        let body = serde_json::json!({"event": event, "data": data});
        self.post_insert("/insert", &body, key, None).await
    }

    /// Inserts an event into any tenant as the admin (`POST /admin_insert`; its `by` is null,
    /// and a tenant without events is created by it), with an `Idempotency-Key` and the same
    /// retries as [`Client::insert`]. The admin token travels in the `X-Admin-Token` header.
    pub async fn admin_insert(
        &self,
        admin_token: &str,
        tenant: &str,
        event: &str,
        data: impl Serialize,
    ) -> Result<Inserted, Error> {
        let data = serde_json::to_value(data).map_err(Error::Serialize)?;
        let body = serde_json::json!({"tenant_name": tenant, "event": event, "data": data});
        let key = uuid::Uuid::new_v4().to_string();
        self.post_insert("/admin_insert", &body, &key, Some(admin_token))
            .await
    }

    /// Posts an insert with `key`, retrying what may be retried with the same key: as the
    /// caller logged in, or as the admin with `admin_token`.
    async fn post_insert(
        &self,
        path: &str,
        body: &Value,
        key: &str,
        admin_token: Option<&str>,
    ) -> Result<Inserted, Error> {
        let mut attempt = 0u32;
        loop {
            let auth = match admin_token {
                Some(_) => None,
                None => Some(self.auth()?),
            };
            let mut request = self
                .inner
                .http
                .post(self.url(path))
                .header("idempotency-key", key)
                .json(body);
            if let Some(token) = admin_token {
                request = request.header("x-admin-token", token);
            }
            match self.send::<Inserted>(request, auth).await {
                Ok(inserted) => return Ok(inserted),
                Err(e) if e.is_retriable() && attempt < self.inner.insert_retries => {
                    let mut delay =
                        jittered(self.inner.insert_retry_base, attempt, MAX_INSERT_DELAY);
                    if let Error::Api {
                        retry_after: Some(s),
                        ..
                    } = e
                    {
                        delay = delay.max(Duration::from_secs(s).min(MAX_INSERT_DELAY));
                    }
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads one page of the tenant's past events (`GET /events`).
    pub async fn history(&self, query: &HistoryQuery) -> Result<Page, Error> {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(after) = query.after {
            pairs.push(("after", after.to_string()));
        }
        if let Some(before) = query.before {
            pairs.push(("before", before.to_string()));
        }
        if let Some(limit) = query.limit {
            pairs.push(("limit", limit.to_string()));
        }
        for name in &query.events {
            pairs.push(("event", name.clone()));
        }
        let request = self.inner.http.get(self.url("/events")).query(&pairs);
        let auth = self.auth()?;
        self.send(request, Some(auth)).await
    }

    /// Every event `query` reaches, page after page (each page's `next`), as one stream:
    /// oldest first from `after`, newest first otherwise. It ends after the last page, or with
    /// the first error.
    pub fn history_all(
        &self,
        query: HistoryQuery,
    ) -> impl futures_util::Stream<Item = Result<HistoryEvent, Error>> + Send + 'static {
        use futures_util::TryStreamExt;
        let ascending = query.after.is_some();
        futures_util::stream::try_unfold(
            (self.clone(), Some(query)),
            move |(client, query)| async move {
                let Some(query) = query else {
                    return Ok(None);
                };
                let page = client.history(&query).await?;
                let from = if ascending { query.after } else { query.before };
                // A next page must start elsewhere, or the walk would never end.
                let next = page
                    .next
                    .filter(|next| Some(*next) != from)
                    .map(|next| HistoryQuery {
                        after: ascending.then_some(next),
                        before: (!ascending).then_some(next),
                        ..query
                    });
                let events = futures_util::stream::iter(page.events.into_iter().map(Ok));
                Ok(Some((events, (client, next))))
            },
        )
        .try_flatten()
    }

    /// Follows the tenant's events over SSE: the snapshot (or, with `last_event_id`, every
    /// event after it), then live. After a dropped connection or a server restart it
    /// reconnects with `Last-Event-ID` and jittered backoff, so nothing is missed or
    /// delivered twice. The stream ends with [`Error::Closed`] when the server closes it for
    /// good (user revoked or deleted, credentials changed), with the error when a connection
    /// is refused for good (400, 401 after one refresh, 403), and after `max_attempts` failed
    /// attempts in a row if set. Dropping it closes the connection.
    pub fn subscribe(&self, options: SubscribeOptions) -> Subscription {
        let last = Arc::new(Mutex::new(options.last_event_id));
        let state = sse::State::new(self.clone(), options, Arc::clone(&last));
        let stream = futures_util::stream::unfold(state, |mut state| async move {
            let item = state.next_item().await?;
            Some((item, state))
        });
        Subscription {
            stream: Box::pin(stream),
            last,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.inner.base, path)
    }

    /// Replaces the refresh task: none, or one that refreshes the JWT in use after `delay`
    /// and then at 80 % of each new token's lifetime.
    fn schedule_refresh(&self, delay: Option<Duration>) {
        let mut slot = self.inner.refresher.lock().unwrap();
        if let Some(task) = slot.take() {
            task.abort();
        }
        let Some(delay) = delay.filter(|_| self.inner.auto_refresh.load(Ordering::Relaxed)) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        *slot = Some(runtime.spawn(refresh_loop(Arc::downgrade(&self.inner), delay)));
    }

    fn auth(&self) -> Result<Auth, Error> {
        self.inner
            .auth
            .read()
            .unwrap()
            .clone()
            .ok_or(Error::Credentials(
                "not logged in: call login, use_jwt or use_basic first",
            ))
    }

    /// Sends a request (with a timeout) and reads the JSON answer or Broker's error.
    async fn send<T: for<'de> Deserialize<'de>>(
        &self,
        request: reqwest::RequestBuilder,
        auth: Option<Auth>,
    ) -> Result<T, Error> {
        let request = authorize(request, auth).timeout(self.inner.request_timeout);
        let response = request.send().await.map_err(Error::Transport)?;
        let response = check(response).await?;
        let bytes = response.bytes().await.map_err(Error::Transport)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Protocol(e.to_string()))
    }
}

/// rustls with aws-lc-rs (the server's provider) and the platform's root certificates.
#[cfg(feature = "rustls")]
fn tls_config() -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(Error::Tls(format!(
            "no root certificate found on this system ({:?})",
            found.errors
        )));
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth())
    .map_err(|e| Error::Tls(e.to_string()))
}

const MAX_INSERT_DELAY: Duration = Duration::from_secs(10);

fn authorize(request: reqwest::RequestBuilder, auth: Option<Auth>) -> reqwest::RequestBuilder {
    match auth {
        Some(Auth::Bearer(token)) => request.bearer_auth(token),
        Some(Auth::Basic(user, password)) => request.basic_auth(user, Some(password)),
        None => request,
    }
}

/// Passes a success through; turns an error status into [`Error::Api`] with the server's
/// sentence and `retry-after`.
async fn check(response: reqwest::Response) -> Result<reqwest::Response, Error> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let message = response
        .bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| format!("HTTP {}", status.as_u16()));
    Err(Error::Api {
        status: status.as_u16(),
        message,
        retry_after,
    })
}

/// Refreshes the JWT in use after `delay`, then again at 80 % of each new token's lifetime,
/// for as long as the client lives and the server agrees. Holds the client only while a
/// refresh runs, so that dropping every `Client` ends it.
async fn refresh_loop(inner: Weak<Inner>, mut delay: Duration) {
    let mut attempt = 0;
    loop {
        tokio::time::sleep(delay).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let client = Client { inner };
        let before = client.jwt();
        match client.exchange().await {
            Ok(jwt) => match refresh_delay(&jwt.0, Issued::Now) {
                Some(next) => {
                    attempt = 0;
                    delay = next;
                }
                None => return,
            },
            // No answer or a busy server: try again, while the token may still be valid.
            Err(e) if e.is_retriable() => {
                let left = before.as_ref().and_then(|jwt| expires_in(&jwt.0));
                if left.is_none_or(|left| left.is_zero()) {
                    return;
                }
                delay = jittered(Duration::from_secs(1), attempt, Duration::from_secs(30))
                    .min(left.unwrap_or_default());
                attempt += 1;
            }
            // 401: the credentials are void (revoked, deleted, new password): only a new
            // login helps, and it schedules its own refresh.
            Err(_) => return,
        }
    }
}

/// Whether a JWT was issued just now (its lifetime starts now, whatever the clocks say) or
/// earlier (kept from a login before; its `iat` is read against this machine's clock).
#[derive(Clone, Copy)]
enum Issued {
    Now,
    Earlier,
}

/// The `iat` and `exp` claims of a JWT, in seconds (the server signs them; this client
/// only reads them to time the refresh).
fn claims(jwt: &str) -> Option<(u64, u64)> {
    use base64::Engine;
    #[derive(Deserialize)]
    struct Claims {
        iat: u64,
        exp: u64,
    }
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    (claims.exp > claims.iat).then_some((claims.iat, claims.exp))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When to refresh `jwt`: at 80 % of its lifetime, less a second, for `iat` and `exp` count
/// whole seconds (a token issued at 10.9 s with a 3-second lifetime says 10 and 13, so it
/// lives 2.1 s), but never before half of it. `None` when it carries no readable lifetime
/// (then it is not refreshed by itself).
fn refresh_delay(jwt: &str, issued: Issued) -> Option<Duration> {
    let (iat, exp) = claims(jwt)?;
    let lifetime = Duration::from_secs(exp - iat);
    let at = lifetime
        .mul_f64(0.8)
        .saturating_sub(Duration::from_secs(1))
        .max(lifetime / 2);
    Some(match issued {
        Issued::Now => at,
        Issued::Earlier => {
            let age = Duration::from_secs(unix_now().saturating_sub(iat));
            at.saturating_sub(age)
        }
    })
}

/// How long `jwt` stays valid by this machine's clock.
fn expires_in(jwt: &str) -> Option<Duration> {
    let (_, exp) = claims(jwt)?;
    Some(Duration::from_secs(exp.saturating_sub(unix_now())))
}

/// A delay that doubles per attempt up to `max`, with jitter: half to all of it, so clients
/// dropped together (a restart) do not all come back at once.
pub(crate) fn jittered(base: Duration, attempt: u32, max: Duration) -> Duration {
    let full = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    let half = full / 2;
    half + half.mul_f64(fastrand::f64())
}

/// A live subscription: a [`Stream`] of events (see [`Client::subscribe`]).
pub struct Subscription {
    stream: Pin<Box<dyn Stream<Item = Result<Event, Error>> + Send>>,
    last: Arc<Mutex<Option<u64>>>,
}

impl Subscription {
    /// The cursor of the last event delivered (where a reconnection resumes), or the
    /// `last_event_id` it started from.
    pub fn last_event_id(&self) -> Option<u64> {
        *self.last.lock().unwrap()
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("last_event_id", &self.last_event_id())
            .finish_non_exhaustive()
    }
}

impl Stream for Subscription {
    type Item = Result<Event, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.stream.poll_next_unpin(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_to_all_and_caps() {
        let base = Duration::from_millis(100);
        for attempt in 0..40 {
            let full = base
                .saturating_mul(1u32 << attempt.min(16))
                .min(Duration::from_secs(5));
            let d = jittered(base, attempt, Duration::from_secs(5));
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?} vs {full:?}");
        }
    }

    #[test]
    fn retriable_statuses() {
        let api = |status| Error::Api {
            status,
            message: String::new(),
            retry_after: None,
        };
        for s in [429, 502, 503, 504] {
            assert!(api(s).is_retriable(), "{s}");
        }
        for s in [400, 401, 403, 413, 422, 500] {
            assert!(!api(s).is_retriable(), "{s}");
        }
    }

    fn token(claims: &str) -> String {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64(claims))
    }

    #[test]
    fn a_fresh_token_is_refreshed_at_80_percent_of_its_lifetime() {
        let jwt = token(r#"{"sub":"a","iat":1000,"exp":1100}"#);
        assert_eq!(
            refresh_delay(&jwt, Issued::Now),
            Some(Duration::from_secs(79))
        );
        // A kept token issued long ago is due at once; one without a lifetime never.
        assert_eq!(refresh_delay(&jwt, Issued::Earlier), Some(Duration::ZERO));
        assert_eq!(
            refresh_delay(&token(r#"{"iat":5,"exp":5}"#), Issued::Now),
            None
        );
        assert_eq!(refresh_delay(&token(r#"{"sub":"a"}"#), Issued::Now), None);
        assert_eq!(refresh_delay("not a jwt", Issued::Now), None);
        assert_eq!(refresh_delay("a.%%%.c", Issued::Now), None);
        let now = unix_now();
        let recent = token(&format!(r#"{{"iat":{},"exp":{}}}"#, now - 10, now + 90));
        let delay = refresh_delay(&recent, Issued::Earlier).unwrap();
        assert!(
            delay <= Duration::from_secs(69) && delay >= Duration::from_secs(67),
            "{delay:?}"
        );
        // A short lifetime: never sooner than half of it.
        assert_eq!(
            refresh_delay(&token(r#"{"iat":0,"exp":2}"#), Issued::Now),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn jwt_debug_hides_the_token() {
        assert_eq!(format!("{:?}", Jwt::new("secret.token.here")), "Jwt(***)");
    }
}

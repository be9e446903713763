//! Request bodies: JSON whatever the Content-Type says (15.x clients and `curl -d` send form
//! types), bounded by `--max_body_bytes`, and every failure a 4xx naming the problem.

use bytes::{Bytes, BytesMut};
use poem::http::StatusCode;
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde::de::DeserializeOwned;

use super::body_budget::BodyCharge;
use super::error::ApiError;

/// A JSON request body of type `T`: documented in the OpenAPI schema through `T: Type`,
/// parsed with serde whatever the Content-Type (poem-openapi's own `Json` would refuse
/// the form types 15.x clients send).
pub struct JsonBody<T>(pub T);

impl<'a, T: Type + DeserializeOwned + Send> ApiExtractor<'a> for JsonBody<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some("JSON, whatever the Content-Type header says"),
            content: vec![MetaMediaType {
                content_type: "application/json",
                schema: T::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        req: &'a Request,
        body: &mut RequestBody,
        _: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        parse(req, body).await.map(JsonBody)
    }
}

/// Reads and decodes a JSON body under `--max_body_bytes` (what [`JsonBody`] extracts).
pub(crate) async fn parse<T: DeserializeOwned>(
    req: &Request,
    body: &mut RequestBody,
) -> poem::Result<T> {
    // No silent default: a route reached without its App is a bug, not a 1 MiB limit.
    let app = super::authn::app_of(req)?;
    // The routes read here carry their credentials in the body, or are checked after it:
    // their senders are not known yet.
    let charge = app
        .bodies
        .charge(super::server::client::of(req).ip, None)
        .with_head(head_bytes(req));
    parse_declared(
        declared_length(req),
        body,
        app.config.limits.max_body_bytes,
        charge,
    )
    .await
}

/// The request's `Content-Length`, if it gives a number.
pub(crate) fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads and decodes a JSON body of at most `limit` bytes, whose request declared `declared`
/// bytes (its head need not be kept while the body is read); what it holds while awaiting
/// more is held against `charge`.
pub(crate) async fn parse_declared<T: DeserializeOwned>(
    declared: Option<u64>,
    body: &mut RequestBody,
    limit: usize,
    mut charge: BodyCharge<'_>,
) -> poem::Result<T> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large().into());
    }
    let body = body
        .take()
        .map_err(|_| ApiError::bad_request("request body missing"))?;
    let bytes = read_limited(body, limit, &mut charge)
        .await
        .map_err(|e| match e {
            ReadError::TooLarge => too_large(),
            ReadError::OverBudget(refused) => refused,
            ReadError::Io(e) if timed_out(&e) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "no complete request body within --request_timeout_secs",
            ),
            ReadError::Io(e) => {
                ApiError::bad_request(format!("could not read the request body: {e}"))
            }
        })?;
    Ok(parse_json(&bytes)?)
}

/// Gives `req`'s body a deadline `after` from now: a read past it fails (`TimedOut`).
///
/// For requests the connection's own deadline cannot see through: over HTTP/2 the server's
/// frames (SETTINGS, WINDOW_UPDATE, PING answers) count as answers to it, and after an HTTP/1.1
/// `100 Continue` so does that line; a client could then send a body as slowly as it liked, or
/// stop short of its end, and the server held the part it had.
pub fn with_deadline(req: &mut Request, after: std::time::Duration) {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + after;
    let frames = req.take_body().into_bytes_stream();
    let bounded = futures_util::stream::unfold(Some(frames), move |frames| async move {
        let mut frames = frames?;
        match tokio::time::timeout_at(deadline, frames.next()).await {
            Ok(Some(frame)) => Some((frame, Some(frames))),
            Ok(None) => None,
            // The body is dropped here: what it held goes with it.
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no complete request body within --request_timeout_secs",
                )),
                None,
            )),
        }
    });
    req.set_body(poem::Body::from_bytes_stream(bounded));
}

/// About what a request's head takes in memory while its body is awaited: its target and
/// headers, and a few bytes a header for the separators.
pub(crate) fn head_bytes(req: &Request) -> usize {
    req.uri().path().len()
        + req.uri().query().map_or(0, str::len)
        + req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum::<usize>()
}

/// Whether reading failed for a deadline: the body's own (`with_deadline`), or the
/// connection's, which reaches here wrapped in hyper's error (a slow HTTP/1.1 body got 400
/// for it, an attack review noticed, where HTTP/2's got 408).
fn timed_out(e: &std::io::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = cause {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Why a body could not be read.
enum ReadError {
    TooLarge,
    /// Holding more of it would pass the bodies' budget (see [`super::body_budget`]).
    OverBudget(ApiError),
    Io(std::io::Error),
}

/// The body's bytes, refused once they pass `limit`.
///
/// Why not poem's `into_bytes_limit`: it reads through a zeroed 4 KiB array kept inside its
/// future, which made every request's future over 5 KB — zeroed, then copied whole each time
/// the future was moved (a quarter of an insert's instructions). A body of one frame, what
/// small JSON bodies are, is kept as it came, without a copy.
///
/// Before each wait for more of it, the bytes it holds are held against `charge`: a body that
/// has come whole holds nothing there.
async fn read_limited(
    body: poem::Body,
    limit: usize,
    charge: &mut BodyCharge<'_>,
) -> Result<Bytes, ReadError> {
    use futures_util::{FutureExt, StreamExt};
    let mut frames = std::pin::pin!(body.into_bytes_stream());
    let mut first: Option<Bytes> = None;
    let mut more = BytesMut::new();
    let mut len = 0usize;
    loop {
        let next = match frames.next().now_or_never() {
            Some(next) => next,
            None => {
                charge.hold(len).map_err(ReadError::OverBudget)?;
                frames.next().await
            }
        };
        let Some(frame) = next else { break };
        let frame = frame.map_err(ReadError::Io)?;
        len = len.saturating_add(frame.len());
        if len > limit {
            return Err(ReadError::TooLarge);
        }
        match &first {
            None => first = Some(frame),
            Some(head) => {
                if more.is_empty() {
                    more.extend_from_slice(head);
                }
                more.extend_from_slice(&frame);
            }
        }
    }
    Ok(if more.is_empty() {
        first.unwrap_or_default()
    } else {
        more.freeze()
    })
}

/// Parses a request body (already read and within the limit) as JSON of type `T`; every
/// failure is a 400 that names the problem.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::bad_request("request body is not valid UTF-8"))?;
    if text.trim().is_empty() {
        // An admin route whose only field is the token, called with `X-Admin-Token`, has
        // nothing left to send: an empty body is then `{}`.
        return serde_json::from_str("{}")
            .map_err(|_| ApiError::bad_request("request body is empty: send a JSON object"));
    }
    // Every body is an object; serde would also fill a struct from an array (`[]` gives all
    // defaults), which the schema does not allow.
    if text.trim_start().starts_with('[') {
        return Err(ApiError::bad_request(
            "invalid request body: send a JSON object, not an array",
        ));
    }
    // The happy path parses once, plainly; path tracking (a third of a small body's parse)
    // runs only for a body that fails, to name the field at fault.
    if let Ok(value) = serde_json::from_str(text) {
        return Ok(value);
    }
    let mut json = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut json)
        .map_err(|e| ApiError::bad_request(describe(&e)))?;
    json.end()
        .map_err(|e| ApiError::bad_request(format!("malformed JSON in request body: {e}")))?;
    Ok(value)
}

/// serde_json's message with the path of the field at fault, phrased for a client
/// ("username: invalid type: integer `5`, expected a string").
fn describe(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    use serde_json::error::Category;
    let inner = e.inner();
    let path = e.path().to_string();
    let at = if path == "." {
        String::new()
    } else {
        format!("{path}: ")
    };
    match inner.classify() {
        Category::Data => format!("invalid request body: {at}{inner}"),
        Category::Syntax | Category::Eof => format!("malformed JSON in request body: {inner}"),
        Category::Io => format!("could not read the request body: {inner}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_a_body_keeps_its_future_small() {
        // Every request's future holds this one; a buffer inside it (poem's reader keeps
        // 4 KiB) is zeroed and copied on every request.
        let req = Request::default();
        let (req, mut body) = req.split();
        let reading = parse::<serde_json::Value>(&req, &mut body);
        assert!(
            std::mem::size_of_val(&reading) < 1024,
            "{}",
            std::mem::size_of_val(&reading)
        );
    }

    #[tokio::test]
    async fn bodies_of_several_frames_are_joined_and_the_limit_holds() {
        let budget = crate::http::body_budget::BodyBudget::new(100, 100);
        let mut charge = budget.charge("192.0.2.1".parse().unwrap(), None);
        let charge = &mut charge;
        let frames = futures_util::stream::iter(
            ["{\"a\":", "[1,", "2]}"].map(|s| Ok::<_, std::io::Error>(Bytes::from(s))),
        );
        let body = poem::Body::from_bytes_stream(frames);
        let bytes = read_limited(body, 100, charge).await.ok().unwrap();
        assert_eq!(&bytes[..], b"{\"a\":[1,2]}");
        let frames = futures_util::stream::iter(
            ["12345", "67890", "x"].map(|s| Ok::<_, std::io::Error>(Bytes::from(s))),
        );
        let body = poem::Body::from_bytes_stream(frames);
        assert!(matches!(
            read_limited(body, 10, charge).await,
            Err(ReadError::TooLarge)
        ));
        let body = poem::Body::from_bytes_stream(futures_util::stream::iter(
            ["1234567890"].map(|s| Ok::<_, std::io::Error>(Bytes::from(s))),
        ));
        assert_eq!(
            &read_limited(body, 10, charge).await.ok().unwrap()[..],
            b"1234567890"
        );
    }

    #[tokio::test]
    async fn only_bytes_kept_across_a_wait_are_charged() {
        let budget = crate::http::body_budget::BodyBudget::new(16, 8);
        let ip = "192.0.2.1".parse().unwrap();
        // Ready at once, whatever its size: nothing charged.
        let whole = futures_util::stream::iter(
            ["12345", "67890"].map(|s| Ok::<_, std::io::Error>(Bytes::from(s))),
        );
        let mut charge = budget.charge(ip, None);
        let body = poem::Body::from_bytes_stream(whole);
        assert!(read_limited(body, 100, &mut charge).await.is_ok());
        // Five bytes, then a wait: five charged; then five more and a wait: refused.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let frames = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        });
        let body = poem::Body::from_bytes_stream(frames);
        tx.send(Ok(Bytes::from("12345"))).await.unwrap();
        let mut charge = budget.charge(ip, None);
        {
            let mut read = std::pin::pin!(read_limited(body, 100, &mut charge));
            assert!(futures_util::poll!(read.as_mut()).is_pending());
            assert_eq!(budget.held(ip), (5, 5));
            tx.send(Ok(Bytes::from("67890"))).await.unwrap();
            match read.await {
                Err(ReadError::OverBudget(refused)) => assert_eq!(refused.status, 429),
                other => panic!("{:?}", other.map(|b| b.len()).map_err(|_| ())),
            }
        }
        drop(charge);
        assert_eq!(budget.held(ip), (0, 0));
    }
}

//! Request bodies: JSON whatever the Content-Type says (15.x clients and `curl -d` send form
//! types), bounded by `--max_body_bytes`, and every failure a 4xx naming the problem.

use poem::http::StatusCode;
use poem::{Request, RequestBody};
use poem_openapi::registry::{MetaMediaType, MetaRequest, Registry};
use poem_openapi::types::Type;
use poem_openapi::{ApiExtractor, ApiExtractorType, ExtractParamOptions};
use serde::de::DeserializeOwned;

use super::App;
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
    let limit = req
        .data::<App>()
        .map_or(1024 * 1024, |app| app.config.limits.max_body_bytes);
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large().into());
    }
    let bytes = body
        .take()
        .map_err(|_| ApiError::bad_request("request body missing"))?
        .into_bytes_limit(limit)
        .await
        .map_err(|e| match e {
            poem::error::ReadBodyError::PayloadTooLarge => too_large(),
            other => ApiError::bad_request(format!("could not read the request body: {other}")),
        })?;
    Ok(parse_json(&bytes)?)
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

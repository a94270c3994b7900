//! JSON response helpers: every answer cardgate gives over HTTP is JSON (metrics
//! excepted), errors included, in one shape: `{"error":{"code","message"}}`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use super::Body;

/// A JSON body with `status`.
pub fn json_ok(status: StatusCode, body: &'static [u8]) -> Response<Body> {
    json_bytes(status, Bytes::from_static(body))
}

/// A JSON body with `status` from owned bytes.
pub fn json_bytes(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    // Built in place, not through `Response::builder`, which parses the header
    // name and copies the value into a new allocation on every answer.
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// `{"error":{"code":…,"message":…}}` with `status`.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_bytes(status, error_body(code, message))
}

/// The error body shared by every JSON error, webhook or not.
pub fn error_body(code: &str, message: &str) -> Bytes {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// A last-resort 500 that cannot itself fail to build.
pub fn internal() -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(
        br#"{"error":{"code":"internal","message":"internal error"}}"#,
    )));
    *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    r
}

/// Reads a whole request body of at most `limit` bytes before `deadline`. The
/// error is the answer to send: 413 (declared or actual size over the limit), 408
/// (the body did not arrive in time) or 400 (the connection broke mid-body).
pub async fn read_body(
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
    deadline: tokio::time::Instant,
) -> Result<Bytes, Response<Body>> {
    let declared_too_big = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64);
    if declared_too_big {
        return Err(too_large(limit));
    }
    match tokio::time::timeout_at(deadline, Limited::new(body, limit).collect()).await {
        Err(_) => Err(json_error(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "request body did not arrive within the deadline",
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(limit)),
        Ok(Err(_)) => Err(json_error(
            StatusCode::BAD_REQUEST,
            "body_unreadable",
            "request body could not be read",
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

fn too_large(limit: usize) -> Response<Body> {
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        &format!("request body is over the {} KiB limit", limit / 1024),
    )
}

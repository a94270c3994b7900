//! JSON response helpers: every answer cardgate gives over HTTP is JSON (metrics
//! excepted), errors included, in one shape: `{"error":{"code","message"}}`.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use super::Body;

/// A JSON body with `status`.
pub fn json_ok(status: StatusCode, body: &'static [u8]) -> Response<Body> {
    json_bytes(status, Bytes::from_static(body))
}

/// A JSON body with `status` from owned bytes.
pub fn json_bytes(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| internal())
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

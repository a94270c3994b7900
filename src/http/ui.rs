//! `/ui/`: the reviewer and analyst page (approval requests with what they change,
//! and the decisions explorer), static files under `ui/` compiled into the binary
//! (no build step, nothing fetched from elsewhere). The page holds the API key in
//! `sessionStorage` and sends it as a bearer header on each `fetch`: no cookies,
//! so a cross-site form cannot act with the reviewer's authority (no CSRF), and
//! the content security policy allows only this origin's script.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};

use super::Body;
use super::respond::json_error;

const INDEX: &str = include_str!("ui/index.html");
const APP: &str = include_str!("ui/app.js");
const REVIEW: &str = include_str!("ui/review.js");
const EXPLORER: &str = include_str!("ui/explorer.js");
const ICON: &str = include_str!("ui/favicon.svg");

/// Serves the page and its script.
pub fn handle<B>(req: &Request<B>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the reviewer page is read with GET",
        );
    }
    let (ctype, body) = match req.uri().path() {
        "/ui" => {
            return Response::builder()
                .status(StatusCode::MOVED_PERMANENTLY)
                .header("location", "/ui/")
                .body(Full::new(Bytes::new()))
                .unwrap_or_else(|_| super::respond::internal());
        }
        "/ui/" | "/ui/index.html" => ("text/html; charset=utf-8", INDEX),
        "/ui/app.js" => ("text/javascript; charset=utf-8", APP),
        "/ui/review.js" => ("text/javascript; charset=utf-8", REVIEW),
        "/ui/explorer.js" => ("text/javascript; charset=utf-8", EXPLORER),
        "/ui/favicon.svg" => ("image/svg+xml", ICON),
        other => {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no page {other}"),
            );
        }
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", ctype)
        .header(
            "content-security-policy",
            "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
        )
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_else(|_| super::respond::internal())
}

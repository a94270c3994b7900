//! `POST /v1/rulesets`: replace the live rule set with the TOML in the body.
//!
//! Local-only until the admin API with keys and two-party approval exists: a
//! request from a non-loopback peer is refused. The body is compiled and
//! validated off the request threads, then swapped in with one pointer store
//! ([`crate::rules::reload::install`]); an invalid body changes nothing and is
//! answered 422 with every error and its line and column. The set is held in
//! memory only: the next change of the rules file (or SIGHUP) reloads the file.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::respond::{json_bytes, json_error};
use super::{AppState, Body};
use crate::rules::{MAX_FILE_BYTES, reload};

/// Handles `POST /v1/rulesets`.
pub async fn rulesets(
    state: &std::sync::Arc<AppState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    if !peer.ip().is_loopback() {
        return json_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "rule sets can only be posted from this machine",
        );
    }
    let body = match Limited::new(req.into_body(), MAX_FILE_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "rules_too_large",
                &format!("rules file is over the {MAX_FILE_BYTES}-byte limit"),
            );
        }
        Err(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "body_unreadable",
                "request body could not be read",
            );
        }
    };
    let src = match String::from_utf8(Vec::from(body)) {
        Ok(s) => s,
        Err(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "invalid_rules",
                "rules file is not UTF-8",
            );
        }
    };
    let st = state.clone();
    let result = tokio::task::spawn_blocking(move || {
        let previous = st.rules.load().version().to_string();
        reload::install(&st.rules, &src, "api").map(|set| (set, previous))
    })
    .await;
    let body = match result {
        Ok(Ok((set, previous))) => serde_json::json!({
            "version": set.version(),
            "previous": previous,
            "rules": set.len(),
        }),
        Ok(Err(e)) => {
            let errors: Vec<_> = e
                .errors
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "rule": e.rule, "line": e.line, "col": e.col, "message": e.kind.to_string(),
                    })
                })
                .collect();
            let body = serde_json::json!({"error": {
                "code": "invalid_rules",
                "message": e.to_string(),
                "errors": errors,
            }});
            return json_bytes(
                StatusCode::UNPROCESSABLE_ENTITY,
                serde_json::to_vec(&body).unwrap_or_default(),
            );
        }
        Err(_) => {
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "rule compilation failed unexpectedly; the previous set stays live",
            );
        }
    };
    json_bytes(
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}

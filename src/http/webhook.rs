//! `POST /webhooks/stripe`: the HTTP shell of the authorization pipeline.
//!
//! Reads the body (≤ 256 KiB, else 413; within the deadline, else 408), hands it to
//! [`crate::authorize`], and maps the [`Answer`] to a status and headers: a decision
//! is 200 with `Stripe-Version`, a refused body 400 with a JSON error. The pipeline
//! guarantees the rest (never a 5xx once a request event is verified and parsed).

use std::time::Instant;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::respond::{json_bytes, read_body};
use super::{AppState, Body};
use crate::authorize::{Answer, Finished};

/// Largest accepted body; Stripe's events are a few KiB.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Handles one webhook delivery.
pub async fn handle(state: &AppState, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let deadline = start + state.authorizer.deadline();
    tracing::debug!("webhook request received");
    let (parts, body) = req.into_parts();
    let body = match read_body(&parts.headers, body, BODY_LIMIT, deadline.into()).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let signature = parts
        .headers
        .get("stripe-signature")
        .map(hyper::http::HeaderValue::as_bytes);
    let answer = match &state.legacy {
        // Legacy mode: the decision travels as an API call; the webhook only
        // acknowledges.
        Some(legacy) => {
            let finish = |f: Finished<'_>| {
                legacy.send_decision(&f, start);
                Answer::Received
            };
            state
                .authorizer
                .process_with(signature, body, start, deadline, finish)
                .await
        }
        None => {
            state
                .authorizer
                .process(signature, body, start, deadline)
                .await
        }
    };
    respond(state, answer)
}

/// Maps the pipeline's answer to HTTP.
pub fn respond(state: &AppState, answer: Answer) -> Response<Body> {
    match answer {
        Answer::Decision(body, version) => {
            let mut resp = json_bytes(StatusCode::OK, body);
            // The configured version's header is built once; an event in it (the
            // usual case) reuses it instead of copying the value per answer.
            let version = match (version, &state.stripe_version) {
                (Some(v), Some(configured)) if v.as_bytes() == configured.as_bytes() => {
                    Some(configured.clone())
                }
                (Some(v), _) => hyper::header::HeaderValue::from_str(&v)
                    .ok()
                    .or_else(|| state.stripe_version.clone()),
                (None, configured) => configured.clone(),
            };
            if let Some(v) = version {
                resp.headers_mut().insert("stripe-version", v);
            }
            resp
        }
        Answer::Received => json_bytes(StatusCode::OK, Bytes::from_static(br#"{"received":true}"#)),
        // Stripe retries a non-2xx delivery; the cause is in the log, not the body.
        Answer::Unavailable { message: _ } => json_bytes(
            StatusCode::SERVICE_UNAVAILABLE,
            super::respond::error_body(
                "store_unavailable",
                "the event could not be recorded; deliver it again",
            ),
        ),
        Answer::Rejected {
            code,
            message,
            path: None,
        } => json_bytes(
            StatusCode::BAD_REQUEST,
            super::respond::error_body(code, &message),
        ),
        Answer::Rejected {
            code,
            message,
            path: Some(path),
        } => {
            let body = serde_json::json!({"error": {
                "code": code,
                "message": message,
                "path": path,
            }});
            json_bytes(
                StatusCode::BAD_REQUEST,
                Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            )
        }
    }
}

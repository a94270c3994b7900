//! Legacy asynchronous mode: the decision goes to Stripe as a deprecated
//! `approve`/`decline` API call instead of in the webhook's response, which is
//! answered `200 {"received":true}` as soon as the decision is made, without
//! waiting for the call.
//!
//! The call runs in its own task so the webhook answer never waits for it. It is
//! bounded by `[legacy] timeout_ms` from the moment the request arrived (Stripe
//! only honours calls inside its ~2 s window), retried with a short backoff on
//! transport errors and 5xx (each attempt carries the same `Idempotency-Key`, so a
//! retry of a call that did land is harmless), and never retried on a 4xx: that is
//! Stripe refusing the call (say, after the window), which a retry cannot change.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderValue;
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{AppState, Body};
use crate::config::LegacyConfig;
use crate::metrics as m;
use crate::stripe::LegacyCall;

/// Handles a webhook delivery in its own task. hyper drops a handler when the
/// client hangs up, and in legacy mode Stripe may stop listening long before the
/// decision is made: the decision (and its approve/decline call) must still happen.
pub async fn handle_detached(
    state: std::sync::Arc<AppState>,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Body> {
    let task = tokio::spawn(async move { super::webhook::handle(&state, req).await });
    task.await.unwrap_or_else(|_| super::respond::internal())
}

/// The client that sends approve/decline calls.
pub struct LegacyClient {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    auth: HeaderValue,
    version: Option<HeaderValue>,
    timeout: Duration,
    retries: u32,
}

impl LegacyClient {
    /// Builds the client from validated config.
    pub fn new(config: &LegacyConfig, stripe_version: Option<HeaderValue>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let auth = HeaderValue::from_str(&format!("Bearer {}", config.api_key))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid-key"));
        LegacyClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            base: config.api_base.clone(),
            auth,
            version: stripe_version,
            timeout: config.timeout,
            retries: config.retries,
        }
    }

    /// Sends `call` in the background; `started` is when the webhook arrived and
    /// `key` identifies the request (the event id) for idempotency.
    pub fn spawn(self: &std::sync::Arc<Self>, call: LegacyCall, key: String, started: Instant) {
        let this = self.clone();
        tokio::spawn(async move {
            let deadline = started + this.timeout;
            let result =
                match tokio::time::timeout_at(deadline.into(), this.send(&call, &key)).await {
                    Ok(r) => r,
                    Err(_) => Err("the window passed before the call was accepted".to_string()),
                };
            match result {
                Ok(()) => {
                    metrics::counter!(m::LEGACY_CALLS, "result" => "ok").increment(1);
                    tracing::debug!(path = %call.path, "legacy decision sent");
                }
                Err(e) => {
                    let label = if e.starts_with("rejected") {
                        "rejected"
                    } else {
                        "failed"
                    };
                    metrics::counter!(m::LEGACY_CALLS, "result" => label).increment(1);
                    tracing::warn!(path = %call.path, "legacy decision not sent: {e}");
                }
            }
        });
    }

    async fn send(&self, call: &LegacyCall, key: &str) -> Result<(), String> {
        let uri: Uri = format!("{}{}", self.base, call.path)
            .parse()
            .map_err(|e| format!("rejected: bad URL: {e}"))?;
        let mut attempt = 0;
        loop {
            let mut req = Request::builder()
                .method(Method::POST)
                .uri(uri.clone())
                .header("authorization", self.auth.clone())
                .header("content-type", "application/x-www-form-urlencoded")
                .header("idempotency-key", format!("cardgate-{key}"));
            if let Some(v) = &self.version {
                req = req.header("stripe-version", v.clone());
            }
            let req = req
                .body(Full::new(Bytes::from(call.body.clone())))
                .map_err(|e| format!("rejected: {e}"))?;
            let outcome = match self.client.request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                    if status.is_success() {
                        return Ok(());
                    }
                    let text = body
                        .map(|b| String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned())
                        .unwrap_or_default();
                    if status.is_client_error() {
                        return Err(format!("rejected: HTTP {status}: {text}"));
                    }
                    format!("HTTP {status}: {text}")
                }
                Err(e) => e.to_string(),
            };
            if attempt >= self.retries {
                return Err(format!("after {} attempts: {outcome}", attempt + 1));
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(25 << attempt.min(4))).await;
        }
    }
}

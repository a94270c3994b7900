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
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{AppState, Body};
use crate::authorize::Finished;
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
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    auth: HeaderValue,
    version: Option<HeaderValue>,
    timeout: Duration,
    retries: u32,
}

impl LegacyClient {
    /// Builds the client from validated config.
    pub fn new(config: &LegacyConfig, stripe_version: Option<HeaderValue>) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        // https:// for api.stripe.com (Mozilla's roots, bundled: no dependence on
        // the host's CA store), plain http:// for the emulator. The ring provider
        // is named explicitly so no process-wide default has to be installed.
        http.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match builder
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        {
            Ok(b) => b.https_or_http().enable_http1().wrap_connector(http),
            Err(e) => {
                // Only fails if ring offers no safe protocol version: never with
                // the versions compiled in. Fall back to the default builder.
                tracing::error!("TLS setup failed ({e}); using the default provider");
                hyper_rustls::HttpsConnectorBuilder::new()
                    .with_webpki_roots()
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(http)
            }
        };
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

    /// The pipeline's legacy last step: sends `f`'s decision as an approve/decline
    /// call in the background; `started` is when the webhook arrived.
    pub fn send_decision(self: &std::sync::Arc<Self>, f: &Finished<'_>, started: Instant) {
        let call = crate::stripe::legacy_call(
            f.auth.id,
            f.decision,
            f.ruleset,
            f.auth.is_amount_controllable,
        );
        self.spawn(call, f.event_id.to_string(), started);
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
                    let body = resp
                        .into_body()
                        .collect()
                        .await
                        .map(http_body_util::Collected::to_bytes);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: String) -> LegacyClient {
        LegacyClient::new(
            &LegacyConfig {
                api_base: base,
                api_key: "sk_test_x".into(),
                timeout: Duration::from_millis(1500),
                retries: 1,
            },
            None,
        )
    }

    fn call() -> LegacyCall {
        LegacyCall {
            path: "/v1/issuing/authorizations/iauth_1/approve".into(),
            body: "metadata%5Breason%5D=approved".into(),
        }
    }

    #[tokio::test]
    async fn https_is_spoken_and_plain_text_answers_fail_cleanly() {
        // A plain-TCP peer that answers a TLS ClientHello with HTTP text: the
        // handshake fails, is retried once, and ends as an error, never a panic.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
            }
        });
        let err = client(format!("https://{addr}"))
            .send(&call(), "evt_1")
            .await
            .unwrap_err();
        assert!(err.starts_with("after 2 attempts"), "{err}");
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = hits.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                    .await;
            }
        });
        let err = client(format!("http://{addr}"))
            .send(&call(), "evt_1")
            .await
            .unwrap_err();
        assert!(err.starts_with("rejected: HTTP 400"), "{err}");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}

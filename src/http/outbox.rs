//! The HTTP client behind approvals' outgoing events: [`HttpDeliver`] implements
//! `approvals::events::Deliver`, so the delivery loop (schedule, signature,
//! backoff) stays in `approvals` and only this file names hyper's client.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::approvals::events::{Deliver, Outgoing};

/// One attempt's time limit, for the answer and again for draining its body.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// POSTs events over plain HTTP (config accepts only `http://` endpoints), reusing
/// connections between attempts.
#[derive(Debug, Clone)]
pub struct HttpDeliver {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpDeliver {
    /// A client with its own connection pool.
    pub fn new() -> Self {
        HttpDeliver {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl Default for HttpDeliver {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Deliver for HttpDeliver {
    async fn post(&self, out: Outgoing<'_>) -> Result<u16, String> {
        let req = hyper::Request::post(out.url)
            .header("content-type", "application/json")
            .header("cardgate-signature", out.signature)
            .header("cardgate-event-id", out.event_id)
            .header(
                "user-agent",
                concat!("cardgate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(out.body.to_string())))
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| "timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        // Drain the body so the connection can be reused; its content is ignored.
        let _ = tokio::time::timeout(ATTEMPT_TIMEOUT, resp.into_body().collect()).await;
        Ok(status)
    }
}

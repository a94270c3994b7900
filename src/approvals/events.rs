//! Outgoing events: delivery of the outbox.
//!
//! Every state change writes its event and one outbox row per configured
//! endpoint in the same transaction as the change (see `emit` in the parent
//! module), so a crash can lose neither; this loop POSTs due rows, signed with
//! cardgate's own secret in Stripe's `t=…,v1=…` scheme (header
//! `Cardgate-Signature`), and reschedules failures with exponential backoff
//! until `max_attempts`. Delivery is at least once: a receiver dedupes on the
//! event `id` (also sent as `Cardgate-Event-Id`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rusqlite::params;

use super::Approvals;

/// Most deliveries taken per pass.
const BATCH: i64 = 32;
/// One attempt's time limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest sleep between passes when nothing is due (expiry also runs then).
const IDLE: Duration = Duration::from_secs(1);

/// Unix milliseconds (delivery schedules are finer than the approvals clock and
/// do not follow its test offset).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Due {
    id: i64,
    endpoint: String,
    attempts: u32,
    body: String,
    event_id: String,
}

/// Delivers the outbox and expires due requests until the runtime stops.
pub async fn run(approvals: Arc<Approvals>) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    loop {
        let a = approvals.clone();
        let due = tokio::task::spawn_blocking(move || {
            if let Err(e) = a.expire_due() {
                tracing::warn!(error = ?e, "expiring approval requests failed");
            }
            a.due(now_ms())
        })
        .await;
        let due = match due {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "reading the event outbox failed");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        for d in &due {
            // Only endpoints configured now are contacted: a row queued for one
            // removed from the config since is given up, not sent.
            let outcome = if approvals.settings.endpoints.contains(&d.endpoint) {
                attempt(&client, &approvals, d).await
            } else {
                Err(Failure::Final("endpoint no longer configured".into()))
            };
            let a = approvals.clone();
            let (id, attempts) = (d.id, d.attempts + 1);
            let _ = tokio::task::spawn_blocking(move || a.record(id, attempts, outcome)).await;
        }
        if due.len() as i64 == BATCH {
            continue;
        }
        let a = approvals.clone();
        let next = tokio::task::spawn_blocking(move || a.next_due())
            .await
            .ok()
            .flatten();
        let wait = next
            .map(|ms| Duration::from_millis((ms - now_ms()).max(0) as u64))
            .unwrap_or(IDLE)
            .min(IDLE);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = approvals.wake.notified() => {}
        }
    }
}

/// Why an attempt failed.
enum Failure {
    /// Worth retrying.
    Retry(String),
    /// Never worth retrying.
    Final(String),
}

async fn attempt(
    client: &Client<HttpConnector, Full<Bytes>>,
    approvals: &Approvals,
    d: &Due,
) -> Result<(), Failure> {
    send(client, approvals, d).await.map_err(Failure::Retry)
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    approvals: &Approvals,
    d: &Due,
) -> Result<(), String> {
    let secret = approvals
        .settings
        .signing_secret
        .as_deref()
        .ok_or("no signing secret configured")?;
    let t = now_ms() / 1000;
    let sig = crate::stripe::sign_header(&[secret], t, d.body.as_bytes());
    let req = hyper::Request::post(&d.endpoint)
        .header("content-type", "application/json")
        .header("cardgate-signature", sig)
        .header("cardgate-event-id", &d.event_id)
        .header(
            "user-agent",
            concat!("cardgate/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(d.body.clone())))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    // Drain the body so the connection can be reused; its content is ignored.
    let _ = tokio::time::timeout(ATTEMPT_TIMEOUT, resp.into_body().collect()).await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("receiver answered {status}"))
    }
}

impl Approvals {
    fn due(&self, now_ms: i64) -> Result<Vec<Due>, rusqlite::Error> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT o.id, o.endpoint, o.attempts, e.body, e.id FROM outbox o JOIN events e ON e.id = o.event_id
             WHERE o.delivered_ms IS NULL AND o.failed = 0 AND o.next_attempt_ms <= ?1
             ORDER BY o.id LIMIT ?2",
        )?;
        st.query_map(params![now_ms, BATCH], |r| {
            Ok(Due {
                id: r.get(0)?,
                endpoint: r.get(1)?,
                attempts: r.get(2)?,
                body: r.get(3)?,
                event_id: r.get(4)?,
            })
        })?
        .collect()
    }

    fn next_due(&self) -> Option<i64> {
        self.conn()
            .query_row(
                "SELECT MIN(next_attempt_ms) FROM outbox WHERE delivered_ms IS NULL AND failed = 0",
                [],
                |r| r.get::<_, Option<i64>>(0),
            )
            .ok()
            .flatten()
    }

    fn record(&self, id: i64, attempts: u32, outcome: Result<(), Failure>) {
        let now = now_ms();
        let res = match outcome {
            Ok(()) => self.conn().execute(
                "UPDATE outbox SET attempts = ?2, delivered_ms = ?3, last_error = NULL WHERE id = ?1",
                params![id, attempts, now],
            ),
            Err(f) => {
                let (e, last) = match f {
                    Failure::Retry(e) => (e, false),
                    Failure::Final(e) => (e, true),
                };
                let give_up = last || attempts >= self.settings.max_attempts;
                let next = now + self.settings.backoff(attempts).as_millis() as i64;
                tracing::warn!(outbox = id, attempts, give_up, error = %e, "event delivery failed");
                self.conn().execute(
                    "UPDATE outbox SET attempts = ?2, next_attempt_ms = ?3, failed = ?4, last_error = ?5 WHERE id = ?1",
                    params![id, attempts, next, give_up, e],
                )
            }
        };
        if let Err(e) = res {
            tracing::warn!(outbox = id, error = %e, "recording an event delivery failed");
        }
    }
}

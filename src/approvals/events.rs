//! Outgoing events: how one is rendered, and the delivery loop over the outbox.
//!
//! Every state change stores its event and one outbox entry per configured
//! endpoint in the same transaction as the change (see [`super::store::Change`]),
//! so a crash can lose neither; [`run`] POSTs due entries through a [`Deliver`]
//! (the HTTP client lives in `src/http/outbox.rs`), signed with cardgate's own secret in
//! Stripe's `t=…,v1=…` scheme (header `Cardgate-Signature`), and reschedules
//! failures with exponential backoff until `max_attempts`. Delivery is at least
//! once: a receiver dedupes on the event `id` (also sent as `Cardgate-Event-Id`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::Value;

use super::model::{ApiObject, Attempt, Delivery, Event, tagged};
use super::{ActionKind, ApprovalRequest, ApprovalRule, Approvals, Change, Status};

/// Most deliveries taken per pass.
const BATCH: usize = 32;
/// Longest sleep between passes when nothing is due (expiry also runs then).
const IDLE: Duration = Duration::from_secs(1);
/// Events stay small (a request can carry a multi-megabyte rule set): past this
/// size the receiver gets the short form and reads the rest by URL.
const MAX_OBJECT: usize = 64 * 1024;

/// What an event is about.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// An approval request, as it is after the change.
    Request(&'a ApprovalRequest),
    /// An approval rule, as it is after the change (or as it was, when deleted).
    Rule(&'a ApprovalRule),
}

impl Subject<'_> {
    fn id(&self) -> &str {
        match self {
            Subject::Request(r) => &r.id,
            Subject::Rule(r) => &r.id,
        }
    }

    fn object(&self) -> &'static str {
        match self {
            Subject::Request(_) => ApprovalRequest::OBJECT,
            Subject::Rule(_) => ApprovalRule::OBJECT,
        }
    }

    /// Where the API serves it.
    fn url(&self) -> String {
        match self {
            Subject::Request(r) => format!("/v1/approval_requests/{}", r.id),
            Subject::Rule(r) => format!("/v1/approval_rules/{}", r.id),
        }
    }

    /// Its API form.
    fn shown(&self) -> Value {
        match self {
            Subject::Request(r) => serde_json::to_value(tagged(*r)),
            Subject::Rule(r) => serde_json::to_value(tagged(*r)),
        }
        .unwrap_or_default()
    }

    /// The form sent when the whole is too large: enough to route and dedupe.
    fn short(&self) -> Value {
        #[derive(Serialize)]
        struct Short<'a> {
            id: &'a str,
            object: &'static str,
            status: Option<Status>,
            action: ActionKind,
            truncated: bool,
        }
        let (status, action) = match self {
            Subject::Request(r) => (Some(r.status), r.action.kind()),
            Subject::Rule(r) => (None, r.action),
        };
        serde_json::to_value(Short {
            id: self.id(),
            object: self.object(),
            status,
            action,
            truncated: true,
        })
        .unwrap_or_default()
    }
}

/// Renders event `id` of type `kind` about `subject`.
pub(super) fn render(id: String, kind: &str, subject: Subject<'_>, now: i64) -> Event {
    #[derive(Serialize)]
    struct Related<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'static str,
        url: String,
    }
    #[derive(Serialize)]
    struct Data {
        object: Value,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        id: &'a str,
        object: &'static str,
        #[serde(rename = "type")]
        kind: &'a str,
        created: i64,
        livemode: bool,
        related_object: Related<'a>,
        data: Data,
    }
    let mut object = subject.shown();
    if object.to_string().len() > MAX_OBJECT {
        object = subject.short();
    }
    let body = Body {
        id: &id,
        object: "v2.core.event",
        kind,
        created: now,
        livemode: false,
        related_object: Related {
            id: subject.id(),
            kind: subject.object(),
            url: subject.url(),
        },
        data: Data { object },
    };
    // Through a `Value`, so keys come out in the same (sorted) order as ever.
    let body = serde_json::to_value(&body)
        .map(|v| v.to_string())
        .unwrap_or_default();
    Event {
        id,
        kind: kind.to_string(),
        created: now,
        related_id: subject.id().to_string(),
        body,
    }
}

/// One signed POST of an event.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The endpoint.
    pub url: &'a str,
    /// `evt_…`, sent as `Cardgate-Event-Id`.
    pub event_id: &'a str,
    /// The JSON body.
    pub body: &'a str,
    /// The `Cardgate-Signature` header value.
    pub signature: &'a str,
}

/// Sends events; implemented by the HTTP client in `src/http/outbox.rs` (this module
/// knows no HTTP), and by tests.
#[async_trait]
pub trait Deliver: Send + Sync + 'static {
    /// POSTs one event and answers the receiver's status code, or why there was
    /// no answer (connection refused, timeout…).
    async fn post(&self, out: Outgoing<'_>) -> Result<u16, String>;
}

/// Why an attempt failed.
enum Failure {
    /// Worth retrying.
    Retry(String),
    /// Never worth retrying.
    Final(String),
}

/// Delivers the outbox and expires due requests until the runtime stops.
pub async fn run(approvals: Arc<Approvals>, deliver: impl Deliver) {
    let a = &approvals;
    loop {
        if let Err(e) = a.expire_due().await {
            tracing::warn!(error = ?e, "expiring approval requests failed");
        }
        let due = match a
            .store
            .due_deliveries(a.outbox_clock.now_millis(), BATCH)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "reading the event outbox failed");
                Vec::new()
            }
        };
        for d in &due {
            // Only endpoints configured now are contacted: an entry queued for one
            // removed from the config since is given up, not sent.
            let outcome = if a.settings.endpoints.contains(&d.endpoint) {
                attempt(a, &deliver, d).await.map_err(Failure::Retry)
            } else {
                Err(Failure::Final("endpoint no longer configured".into()))
            };
            a.record(d, outcome).await;
        }
        if due.len() == BATCH {
            continue;
        }
        let next = a.store.next_delivery_ms().await.ok().flatten();
        let wait = next
            .map(|ms| {
                let ms = ms.saturating_sub(a.outbox_clock.now_millis()).max(0);
                Duration::from_millis(u64::try_from(ms).unwrap_or(0))
            })
            .unwrap_or(IDLE)
            .min(IDLE);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = a.wake.notified() => {}
        }
    }
}

async fn attempt(a: &Approvals, deliver: &impl Deliver, d: &Delivery) -> Result<(), String> {
    let secret = a
        .settings
        .signing_secret
        .as_deref()
        .ok_or("no signing secret configured")?;
    let t = a.outbox_clock.now();
    let signature = crate::stripe::sign_header(&[secret], t, d.body.as_bytes());
    let status = deliver
        .post(Outgoing {
            url: &d.endpoint,
            event_id: &d.event_id,
            body: &d.body,
            signature: &signature,
        })
        .await?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("receiver answered {status}"))
    }
}

impl Approvals {
    /// Records how an attempt went: delivered, rescheduled with backoff, or given up.
    async fn record(&self, d: &Delivery, outcome: Result<(), Failure>) {
        let attempts = d.attempts + 1;
        let now = self.outbox_clock.now_millis();
        let result = match outcome {
            Ok(()) => Attempt::Delivered { at_ms: now },
            Err(f) => {
                let (error, last) = match f {
                    Failure::Retry(e) => (e, false),
                    Failure::Final(e) => (e, true),
                };
                let give_up = last || attempts >= self.settings.max_attempts;
                let backoff =
                    i64::try_from(self.settings.backoff(attempts).as_millis()).unwrap_or(i64::MAX);
                tracing::warn!(outbox = d.id, attempts, give_up, error = %error, "event delivery failed");
                Attempt::Failed {
                    error,
                    next_attempt_ms: now.saturating_add(backoff),
                    give_up,
                }
            }
        };
        let change = Change::Attempted {
            id: d.id,
            attempts,
            result,
        };
        if let Err(e) = self.store.apply(vec![change]).await {
            tracing::warn!(outbox = d.id, error = %e, "recording an event delivery failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::approvals::policy::{Combinator, Control, Reviewers};

    fn rule(name: Option<String>) -> ApprovalRule {
        ApprovalRule {
            id: "aprule_1".into(),
            action: ActionKind::PublishRuleset,
            name,
            conditions: vec![],
            combinator: Combinator::And,
            control: Control::RequireApproval,
            reviewers: Reviewers::default_set(),
            active: true,
            created: 1,
            updated: 1,
        }
    }

    #[test]
    fn an_event_wraps_its_object_with_where_to_read_it() {
        let r = rule(None);
        let e = render(
            "evt_1".into(),
            "v2.core.approval_rule.created",
            Subject::Rule(&r),
            9,
        );
        assert_eq!(
            (e.id.as_str(), e.related_id.as_str(), e.created),
            ("evt_1", "aprule_1", 9)
        );
        let body: Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(
            body,
            json!({
                "id": "evt_1",
                "object": "v2.core.event",
                "type": "v2.core.approval_rule.created",
                "created": 9,
                "livemode": false,
                "related_object": {"id": "aprule_1", "type": "approval_rule",
                                   "url": "/v1/approval_rules/aprule_1"},
                "data": {"object": serde_json::to_value(tagged(&r)).unwrap()},
            })
        );
        // Keys in sorted order, as the body has always been written.
        assert!(e.body.starts_with("{\"created\":9,\"data\":"), "{}", e.body);
    }

    #[test]
    fn a_large_object_is_sent_in_short_form() {
        let r = rule(Some("x".repeat(MAX_OBJECT + 1)));
        let e = render(
            "evt_1".into(),
            "v2.core.approval_rule.updated",
            Subject::Rule(&r),
            9,
        );
        let body: Value = serde_json::from_str(&e.body).unwrap();
        assert_eq!(
            body["data"]["object"],
            json!({"id": "aprule_1", "object": "approval_rule", "status": null,
                   "action": "publish_ruleset", "truncated": true})
        );
    }
}

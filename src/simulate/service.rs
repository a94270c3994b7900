//! The running emulator: the model behind a lock, the real-time request driven
//! through a [`WebhookSender`], and a wake-up per outstanding request so an
//! approve/decline call can land while the request waits.
//!
//! One real-time request: build the `issuing_authorization.request` event (model),
//! sign it, send it, wait at most the window (2 s by default), read the reply as
//! Stripe does ([`interpret`]), apply it (model), then deliver
//! `issuing_authorization.created` / `.updated` / `issuing_transaction.created` in
//! order, each awaited, so a caller that gets the answer knows cardgate has seen
//! every event. The model's lock is never held across an `.await`: the network
//! wait happens between two short critical sections, which is what lets an
//! approve/decline call land mid-request.
//!
//! No HTTP here: the sender is a trait the network side implements, and
//! signatures are stamped with the [`Clock`] this service is given. The window
//! itself is measured on tokio's monotonic timer, not on the clock: it is a
//! duration, and tests that move the clock must not close it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::model::{
    ApiDecision, Begun, Emulator, NewAuthorization, NewCard, NewCardholder, SimError, WebhookAnswer,
};
use super::scenario::{Authorized, Driver};
use crate::clock::Clock;

/// The endpoint's reply to one signed event, as the network side read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Whether a `Stripe-Version` header came back.
    pub has_version: bool,
    /// The response body (capped by the sender).
    pub body: Vec<u8>,
}

/// Delivers signed events to cardgate. `http::emulator` implements it with a
/// hyper client; tests can implement it in memory.
pub trait WebhookSender: Send + Sync + 'static {
    /// Whether an endpoint is configured: without one, no request is started.
    fn has_endpoint(&self) -> bool;

    /// POSTs `body` with `signature` as its `Stripe-Signature`; `Err` is a
    /// transport failure (or no endpoint), in words. The caller bounds the wait.
    fn send(
        &self,
        body: Vec<u8>,
        signature: String,
    ) -> impl Future<Output = Result<Reply, String>> + Send;
}

/// How the emulator signs and how long it waits.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// The `whsec_…` secret events are signed with.
    pub secret: String,
    /// The real-time window: how long a request waits for its answer (Stripe: 2 s).
    pub window: Duration,
    /// How long one lifecycle event delivery may take.
    pub event_timeout: Duration,
}

/// Why a [`SimulatorConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimulatorConfigError {
    /// The secret does not look like a webhook secret.
    #[error("webhook secret must start with whsec_")]
    Secret,
}

impl SimulatorConfig {
    /// Validates the secret; lifecycle events get 10 s each.
    pub fn new(secret: &str, window: Duration) -> Result<Self, SimulatorConfigError> {
        if !secret.starts_with("whsec_") {
            return Err(SimulatorConfigError::Secret);
        }
        Ok(SimulatorConfig {
            secret: secret.to_string(),
            window,
            event_timeout: Duration::from_secs(10),
        })
    }
}

/// What one real-time request came to.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The authorization after the decision.
    pub authorization: Value,
    /// Round trip of the request webhook (`None` when Stripe declined first).
    pub latency: Option<Duration>,
    /// `metadata` of the endpoint's direct answer, if it gave one.
    pub response_metadata: Option<Value>,
    /// Lifecycle events that could not be delivered.
    pub undelivered: usize,
}

/// The running emulator: the model behind a lock, the sender, the clock that
/// stamps signatures, and a wake-up per outstanding request.
pub struct Simulator<S> {
    model: Mutex<Emulator>,
    config: SimulatorConfig,
    sender: S,
    clock: Clock,
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
}

impl<S: WebhookSender> Simulator<S> {
    /// Wraps a model.
    pub fn new(model: Emulator, config: SimulatorConfig, sender: S, clock: Clock) -> Self {
        Simulator {
            model: Mutex::new(model),
            config,
            sender,
            clock,
            waiters: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `f` on the model. A poisoned lock (a panic elsewhere) is taken over:
    /// the model's operations leave it consistent between calls.
    pub fn with_model<T>(&self, f: impl FnOnce(&mut Emulator) -> T) -> T {
        let mut guard = self
            .model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// The sender (the network side reaches its own settings through it).
    pub fn sender(&self) -> &S {
        &self.sender
    }

    /// Unix seconds on this emulator's clock: the `now` of API calls.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    fn require_endpoint(&self) -> Result<(), SimError> {
        if self.sender.has_endpoint() {
            Ok(())
        } else {
            Err(SimError::state(
                "no_webhook_endpoint",
                "no webhook endpoint: start with --webhook-url or POST /v1/webhook_endpoints url=…",
            ))
        }
    }

    // === operations (shared by the HTTP API and the scenario runner) ===

    /// Creates an authorization and runs its real-time request.
    pub async fn authorize(&self, new: NewAuthorization, now: i64) -> Result<Outcome, SimError> {
        self.require_endpoint()?;
        match self.with_model(|m| m.begin_authorization(new, now))? {
            Begun::Declined { id, events } => {
                let undelivered = self.deliver(events).await;
                Ok(Outcome {
                    authorization: self.with_model(|m| m.authorization(&id))?,
                    latency: None,
                    response_metadata: None,
                    undelivered,
                })
            }
            Begun::Request { id, event } => self.request(&id, event, now).await,
        }
    }

    /// Increments an authorization through a new real-time request.
    pub async fn increment(
        &self,
        id: &str,
        amount: i64,
        controllable: bool,
        now: i64,
    ) -> Result<Outcome, SimError> {
        self.require_endpoint()?;
        let event = self.with_model(|m| m.begin_increment(id, amount, controllable, now))?;
        self.request(id, event, now).await
    }

    /// Captures; returns the authorization and how many events were not delivered.
    pub async fn capture(
        &self,
        id: &str,
        amount: Option<i64>,
        close: bool,
        now: i64,
    ) -> Result<(Value, usize), SimError> {
        let events = self.with_model(|m| m.capture(id, amount, close, now))?;
        self.after(id, events).await
    }

    /// Expires.
    pub async fn expire(&self, id: &str, now: i64) -> Result<(Value, usize), SimError> {
        let events = self.with_model(|m| m.expire(id, now))?;
        self.after(id, events).await
    }

    /// Reverses all or part.
    pub async fn reverse(
        &self,
        id: &str,
        amount: Option<i64>,
        now: i64,
    ) -> Result<(Value, usize), SimError> {
        let events = self.with_model(|m| m.reverse(id, amount, now))?;
        self.after(id, events).await
    }

    /// The deprecated approve/decline call: recorded if the request is still in
    /// its window, refused otherwise.
    pub fn api_decision(&self, id: &str, d: ApiDecision) -> Result<Value, SimError> {
        let waiter = self
            .waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned();
        let Some(waiter) = waiter else {
            // No request in flight: either unknown or past its window.
            self.with_model(|m| m.authorization(id))?;
            return Err(SimError::state(
                "authorization_not_pending",
                format!(
                    "authorization {id} has no pending request: approve and decline must be \
                     called within the real-time window"
                ),
            ));
        };
        let auth = self.with_model(|m| m.record_api_decision(id, d))?;
        waiter.notify_one();
        Ok(auth)
    }

    async fn after(&self, id: &str, events: Vec<Value>) -> Result<(Value, usize), SimError> {
        let undelivered = self.deliver(events).await;
        Ok((self.with_model(|m| m.authorization(id))?, undelivered))
    }

    async fn request(&self, id: &str, event: Value, now: i64) -> Result<Outcome, SimError> {
        let waiter = Arc::new(Notify::new());
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id.to_string(), waiter.clone());
        let body = serde_json::to_vec(&event).unwrap_or_default();
        // The window runs from the send, as the latency does: a deadline taken
        // before the body was serialized timed out a window's worth after an
        // earlier instant, and the latency came out under the window.
        let sent = Instant::now();
        let deadline = sent + self.config.window;
        let reply = tokio::time::timeout_at(deadline, self.post(body)).await;
        let latency = sent.elapsed();
        let (mut answer, response_metadata) = match reply {
            Err(_) => (WebhookAnswer::Timeout, None),
            Ok(Err(e)) => (
                WebhookAnswer::Error(format!("the endpoint could not be reached: {e}")),
                None,
            ),
            Ok(Ok(reply)) => interpret(&reply),
        };
        if answer == WebhookAnswer::NoDecision {
            // Legacy flow: the decision comes as an approve/decline call, until the
            // window closes. `notify_one` stores a permit, so a call that landed
            // before this wait still wakes it.
            if !self.with_model(|m| m.has_api_decision(id)) {
                let _ = tokio::time::timeout_at(deadline, waiter.notified()).await;
            }
        }
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(id);
        if answer == WebhookAnswer::Timeout && self.with_model(|m| m.has_api_decision(id)) {
            answer = WebhookAnswer::NoDecision;
        }
        let events = self.with_model(|m| m.finish_request(id, answer, now))?;
        let undelivered = self.deliver(events).await;
        Ok(Outcome {
            authorization: self.with_model(|m| m.authorization(id))?,
            latency: Some(latency),
            response_metadata,
            undelivered,
        })
    }

    /// Signs one event on the clock and sends it; `Err` is a transport failure.
    async fn post(&self, body: Vec<u8>) -> Result<Reply, String> {
        let signature = crate::stripe::sign_header(&[&self.config.secret], self.clock.now(), &body);
        self.sender.send(body, signature).await
    }

    /// Delivers lifecycle events in order, each awaited; returns how many failed.
    async fn deliver(&self, events: Vec<Value>) -> usize {
        let mut failed = 0;
        for e in events {
            let body = serde_json::to_vec(&e).unwrap_or_default();
            let outcome = tokio::time::timeout(self.config.event_timeout, self.post(body)).await;
            let problem = match outcome {
                Ok(Ok(r)) if r.status == 200 => None,
                Ok(Ok(r)) => Some(format!("HTTP {}", r.status)),
                Ok(Err(e)) => Some(e),
                Err(_) => Some("timed out".to_string()),
            };
            if let Some(p) = problem {
                failed += 1;
                tracing::warn!(event = %e["id"], r#type = %e["type"], "event not delivered: {p}");
            }
        }
        failed
    }
}

/// The `webhook_endpoint` object answered to `POST /v1/webhook_endpoints`.
pub fn webhook_endpoint(url: &str) -> Value {
    json!({
        "id": "we_simulator",
        "object": "webhook_endpoint",
        "enabled_events": ["*"],
        "livemode": false,
        "status": "enabled",
        "url": url,
    })
}

/// Reads the endpoint's reply as Stripe would (`realtime-authorizations.md` §2).
pub fn interpret(reply: &Reply) -> (WebhookAnswer, Option<Value>) {
    if reply.status != 200 {
        return (
            WebhookAnswer::Error(format!("the endpoint answered HTTP {}", reply.status)),
            None,
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&reply.body) else {
        return (
            WebhookAnswer::Error("the response body is not JSON".into()),
            None,
        );
    };
    let Some(obj) = body.as_object() else {
        return (
            WebhookAnswer::Error("the response body is not a JSON object".into()),
            None,
        );
    };
    let metadata = obj.get("metadata").cloned();
    let Some(approved) = obj.get("approved") else {
        return (WebhookAnswer::NoDecision, None);
    };
    let Some(approved) = approved.as_bool() else {
        return (
            WebhookAnswer::Error("`approved` must be a boolean".into()),
            metadata,
        );
    };
    if !reply.has_version {
        return (
            WebhookAnswer::Error("the response has no Stripe-Version header".into()),
            metadata,
        );
    }
    let amount = match obj.get("amount") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64() {
            Some(a) if a > 0 => Some(a),
            _ => {
                return (
                    WebhookAnswer::Error("`amount` must be a positive integer".into()),
                    metadata,
                );
            }
        },
    };
    if let Some(md) = &metadata
        && !md.is_object()
        && !md.is_null()
    {
        return (
            WebhookAnswer::Error("`metadata` must be an object".into()),
            metadata,
        );
    }
    match obj.get("send_fraud_challenges") {
        None | Some(Value::Null) => {}
        Some(Value::Array(c)) if !approved && c.iter().all(|x| x == "sms") && !c.is_empty() => {
            return (WebhookAnswer::Challenge, metadata);
        }
        Some(_) => {
            return (
                WebhookAnswer::Error(
                    "`send_fraud_challenges` must be [\"sms\"] with `approved: false`".into(),
                ),
                metadata,
            );
        }
    }
    (WebhookAnswer::Decision { approved, amount }, metadata)
}

// === the scenario runner's view ===

impl Outcome {
    fn authorized(self) -> Authorized {
        let a = &self.authorization;
        let last = a["request_history"]
            .as_array()
            .and_then(|h| h.last())
            .cloned()
            .unwrap_or(Value::Null);
        let approved = last["approved"].as_bool().unwrap_or(false);
        Authorized {
            id: a["id"].as_str().unwrap_or_default().to_string(),
            approved,
            granted: if approved {
                last["amount"].as_i64().unwrap_or(0)
            } else {
                0
            },
            reason: last["reason"].as_str().unwrap_or("none").to_string(),
            cardgate_reason: self
                .response_metadata
                .as_ref()
                .and_then(|m| m["reason"].as_str())
                .map(str::to_string),
            latency: self.latency,
            undelivered: self.undelivered,
        }
    }
}

impl<S: WebhookSender> Driver for Simulator<S> {
    fn create_cardholder(&self, new: NewCardholder, now: i64) -> Result<String, SimError> {
        let v = self.with_model(|m| m.create_cardholder(new, now))?;
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }

    fn create_card(&self, new: NewCard, now: i64) -> Result<String, SimError> {
        let v = self.with_model(|m| m.create_card(new, now))?;
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }

    async fn authorize(&self, new: NewAuthorization, now: i64) -> Result<Authorized, SimError> {
        Ok(Simulator::authorize(self, new, now).await?.authorized())
    }

    async fn increment(
        &self,
        id: &str,
        amount: i64,
        controllable: bool,
        now: i64,
    ) -> Result<Authorized, SimError> {
        Ok(Simulator::increment(self, id, amount, controllable, now)
            .await?
            .authorized())
    }

    async fn capture(
        &self,
        id: &str,
        amount: Option<i64>,
        close: bool,
        now: i64,
    ) -> Result<usize, SimError> {
        Ok(Simulator::capture(self, id, amount, close, now).await?.1)
    }

    async fn reverse(&self, id: &str, amount: Option<i64>, now: i64) -> Result<usize, SimError> {
        Ok(Simulator::reverse(self, id, amount, now).await?.1)
    }

    async fn expire(&self, id: &str, now: i64) -> Result<usize, SimError> {
        Ok(Simulator::expire(self, id, now).await?.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, version: bool, body: &str) -> Reply {
        Reply {
            status,
            has_version: version,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn replies_are_read_as_stripe_reads_them() {
        let d = |a, amt| WebhookAnswer::Decision {
            approved: a,
            amount: amt,
        };
        assert_eq!(
            interpret(&reply(200, true, r#"{"approved":true}"#)).0,
            d(true, None)
        );
        assert_eq!(
            interpret(&reply(200, true, r#"{"approved":true,"amount":5}"#)).0,
            d(true, Some(5))
        );
        assert_eq!(
            interpret(&reply(200, true, r#"{"received":true}"#)).0,
            WebhookAnswer::NoDecision
        );
        assert_eq!(
            interpret(&reply(
                200,
                true,
                r#"{"approved":false,"send_fraud_challenges":["sms"]}"#
            ))
            .0,
            WebhookAnswer::Challenge
        );
        for (status, version, body) in [
            (
                200,
                true,
                r#"{"approved":true,"send_fraud_challenges":["sms"]}"#,
            ),
            (
                200,
                true,
                r#"{"approved":false,"send_fraud_challenges":["email"]}"#,
            ),
            (
                200,
                true,
                r#"{"approved":false,"send_fraud_challenges":[]}"#,
            ),
            (500, true, r#"{"approved":true}"#),
            (200, true, "not json"),
            (200, true, r#"{"approved":"yes"}"#),
            (200, true, r#"{"approved":true,"amount":0}"#),
            (200, false, r#"{"approved":true}"#),
            (200, true, "[1]"),
        ] {
            assert!(
                matches!(
                    interpret(&reply(status, version, body)).0,
                    WebhookAnswer::Error(_)
                ),
                "{status} {body}"
            );
        }
    }

    /// An in-memory cardgate: answers request events with `answer` (or never,
    /// when `None`), accepts every other event, and keeps what it was sent.
    struct Fake {
        answer: Option<Reply>,
        sent: Mutex<Vec<(Value, String)>>,
    }

    impl WebhookSender for Fake {
        fn has_endpoint(&self) -> bool {
            true
        }

        async fn send(&self, body: Vec<u8>, signature: String) -> Result<Reply, String> {
            let event: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
            let is_request = event["type"] == crate::stripe::AUTHORIZATION_REQUEST;
            self.sent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((event, signature));
            match (is_request, &self.answer) {
                (false, _) => Ok(reply(200, true, "{}")),
                (true, Some(r)) => Ok(r.clone()),
                (true, None) => std::future::pending().await,
            }
        }
    }

    const NOW: i64 = 1_767_484_800;

    /// A simulator over `answer` with a `window_ms` window, and a fresh card.
    fn simulator(answer: Option<Reply>, window_ms: u64) -> (Arc<Simulator<Fake>>, String) {
        let config = SimulatorConfig::new("whsec_test", Duration::from_millis(window_ms)).unwrap();
        let fake = Fake {
            answer,
            sent: Mutex::new(Vec::new()),
        };
        let model = Emulator::new(
            "t",
            super::super::TimeoutFallback::Decline,
            "2026-10-28.endive",
        );
        let sim = Arc::new(Simulator::new(model, config, fake, Clock::fixed(NOW)));
        let holder = sim
            .with_model(|m| m.create_cardholder(NewCardholder::default(), NOW))
            .unwrap();
        let card = sim
            .with_model(|m| {
                m.create_card(
                    NewCard {
                        cardholder: holder["id"].as_str().unwrap_or_default().to_string(),
                        ..NewCard::default()
                    },
                    NOW,
                )
            })
            .unwrap();
        (sim, card["id"].as_str().unwrap_or_default().to_string())
    }

    fn purchase(card: &str) -> NewAuthorization {
        NewAuthorization {
            card: card.to_string(),
            amount: 4250,
            merchant_currency: None,
            merchant_amount: None,
            merchant: super::super::Merchant::default(),
            authorization_method: "online".into(),
            is_amount_controllable: false,
            wallet: None,
            network_risk_score: None,
        }
    }

    fn reasons(auth: &Value) -> Vec<String> {
        auth["request_history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn a_direct_answer_decides_and_every_event_is_signed_on_the_clock() {
        let approve = reply(200, true, r#"{"approved":true,"metadata":{"reason":"ok"}}"#);
        let (sim, card) = simulator(Some(approve), 2000);
        let out = sim.authorize(purchase(&card), NOW).await.unwrap();
        assert_eq!(reasons(&out.authorization), ["webhook_approved"]);
        assert_eq!(out.response_metadata, Some(json!({"reason": "ok"})));
        assert_eq!(out.undelivered, 0);
        let sent = sim.sender().sent.lock().unwrap().clone();
        let kinds: Vec<_> = sent.iter().map(|(e, _)| e["type"].clone()).collect();
        assert_eq!(
            kinds,
            [
                crate::stripe::AUTHORIZATION_REQUEST,
                crate::stripe::AUTHORIZATION_CREATED
            ]
        );
        for (_, signature) in &sent {
            assert!(
                signature.starts_with(&format!("t={NOW},v1=")),
                "{signature}"
            );
        }
    }

    #[tokio::test]
    async fn no_answer_within_the_window_is_the_timeout_fallback() {
        let (sim, card) = simulator(None, 50);
        let out = sim.authorize(purchase(&card), NOW).await.unwrap();
        assert_eq!(reasons(&out.authorization), ["webhook_timeout"]);
        assert_eq!(out.authorization["approved"], false);
        assert!(out.latency.is_some_and(|l| l >= Duration::from_millis(50)));
        // The created event still went out, after the window.
        assert_eq!(out.undelivered, 0);
    }

    #[tokio::test]
    async fn an_api_decision_lands_while_the_request_waits_and_not_after() {
        let received = reply(200, true, r#"{"received":true}"#);
        let (sim, card) = simulator(Some(received), 5000);
        let waiting = tokio::spawn({
            let sim = sim.clone();
            async move { sim.authorize(purchase(&card), NOW).await }
        });
        let approve = ApiDecision {
            approved: true,
            amount: None,
            metadata: std::collections::BTreeMap::default(),
        };
        // The request is in flight once the model shows its pending request; the
        // call then lands inside the window and wakes the wait.
        let id = loop {
            let pending = sim.with_model(|m| {
                m.authorization_ids(None).into_iter().find(|id| {
                    m.authorization(id)
                        .is_ok_and(|a| !a["pending_request"].is_null())
                })
            });
            if let Some(id) = pending
                && sim.api_decision(&id, approve.clone()).is_ok()
            {
                break id;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let out = waiting.await.unwrap().unwrap();
        assert_eq!(reasons(&out.authorization), ["webhook_approved"]);
        assert!(out.latency.is_some_and(|l| l < Duration::from_secs(5)));
        let late = sim.api_decision(&id, approve).unwrap_err();
        assert_eq!(late.code, "authorization_not_pending");
    }
}

//! The Issuing emulator's network side: its Stripe-shaped API (test helpers, the
//! deprecated approve/decline calls, cards, cardholders) and the signed webhooks it
//! sends to a cardgate URL, exactly as Stripe would.
//!
//! One real-time request: build the `issuing_authorization.request` event (model),
//! POST it signed, wait at most the window (2 s by default), turn the reply into a
//! [`WebhookAnswer`], apply it (model), then deliver `issuing_authorization.created`
//! / `.updated` / `issuing_transaction.created` in order, each awaited, so a caller
//! that gets the API answer knows cardgate has seen every event. The model's lock
//! is never held across an `.await`: the network wait happens between two short
//! critical sections, which is what lets an approve/decline call land mid-request.
//!
//! Bodies are accepted form-encoded (Stripe's v1 style, `merchant_data[category]=…`)
//! or as JSON; every `/v1` call needs the configured secret key (Bearer or Basic).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use super::Body;
use crate::simulate::scenario::{Authorized, Driver};
use crate::simulate::{
    ApiDecision, Begun, Emulator, Merchant, NewAuthorization, NewCard, NewCardholder, SimError,
    SpendingControls, SpendingLimit, WebhookAnswer,
};

/// Largest request body the emulator reads.
const BODY_LIMIT: usize = 256 * 1024;

/// How the emulator reaches cardgate and guards its own API.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Where request and lifecycle events are POSTed (cardgate's `/webhooks/stripe`);
    /// `None` until set with `POST /v1/webhook_endpoints`.
    pub webhook_url: Option<Uri>,
    /// The `whsec_…` secret events are signed with.
    pub secret: String,
    /// The real-time window: how long a request waits for its answer (Stripe: 2 s).
    pub window: Duration,
    /// How long one lifecycle event delivery may take.
    pub event_timeout: Duration,
    /// The secret key (`sk_test_…`) every `/v1` call must present.
    pub api_key: String,
}

/// Why an [`EmulatorConfig`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorConfigError {
    /// The webhook URL is not an `http://host:port/path` URL.
    #[error("webhook URL {0:?} must be an http:// URL with a host (TLS is not supported here)")]
    WebhookUrl(String),
    /// The secret does not look like a webhook secret.
    #[error("webhook secret must start with whsec_")]
    Secret,
}

impl EmulatorConfig {
    /// Validates the parts.
    pub fn new(
        webhook_url: Option<&str>,
        secret: &str,
        window: Duration,
        api_key: &str,
    ) -> Result<Self, EmulatorConfigError> {
        let uri = webhook_url.map(webhook_uri).transpose()?;
        if !secret.starts_with("whsec_") {
            return Err(EmulatorConfigError::Secret);
        }
        Ok(EmulatorConfig {
            webhook_url: uri,
            secret: secret.to_string(),
            window,
            event_timeout: Duration::from_secs(10),
            api_key: api_key.to_string(),
        })
    }
}

/// An `http://host[:port]/path` URL for events.
fn webhook_uri(url: &str) -> Result<Uri, EmulatorConfigError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| EmulatorConfigError::WebhookUrl(url.to_string()))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(EmulatorConfigError::WebhookUrl(url.to_string()));
    }
    Ok(uri)
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

/// The running emulator: the model behind a lock, the webhook client, and a wake-up
/// per outstanding request for approve/decline calls.
pub struct Simulator {
    model: Mutex<Emulator>,
    config: EmulatorConfig,
    endpoint: Mutex<Option<Uri>>,
    basic_auth: String,
    client: Client<HttpConnector, Full<Bytes>>,
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
}

fn wall_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Simulator {
    /// Wraps a model.
    pub fn new(model: Emulator, config: EmulatorConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:", config.api_key).as_bytes());
        Simulator {
            endpoint: Mutex::new(config.webhook_url.clone()),
            model: Mutex::new(model),
            basic_auth: format!("Basic {basic}"),
            config,
            client: Client::builder(TokioExecutor::new()).build(connector),
            waiters: Mutex::new(HashMap::new()),
        }
    }

    /// Runs `f` on the model. A poisoned lock (a panic elsewhere) is taken over:
    /// the model's operations leave it consistent between calls.
    pub fn with_model<T>(&self, f: impl FnOnce(&mut Emulator) -> T) -> T {
        let mut guard = self.model.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    fn endpoint(&self) -> Option<Uri> {
        self.endpoint
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn require_endpoint(&self) -> Result<(), SimError> {
        match self.endpoint() {
            Some(_) => Ok(()),
            None => Err(SimError::state(
                "no_webhook_endpoint",
                "no webhook endpoint: start with --webhook-url or POST /v1/webhook_endpoints url=…",
            )),
        }
    }

    /// Points events at `url` (`POST /v1/webhook_endpoints`).
    pub fn set_endpoint(&self, url: &str) -> Result<Value, SimError> {
        let uri =
            webhook_uri(url).map_err(|e| SimError::param("url_invalid", "url", e.to_string()))?;
        *self.endpoint.lock().unwrap_or_else(|p| p.into_inner()) = Some(uri);
        Ok(json!({
            "id": "we_simulator",
            "object": "webhook_endpoint",
            "enabled_events": ["*"],
            "livemode": false,
            "status": "enabled",
            "url": url,
        }))
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
            .unwrap_or_else(|p| p.into_inner())
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
        let deadline = Instant::now() + self.config.window;
        let waiter = Arc::new(Notify::new());
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), waiter.clone());
        let body = serde_json::to_vec(&event).unwrap_or_default();
        let sent = Instant::now();
        let reply = tokio::time::timeout_at(deadline.into(), self.post(body)).await;
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
                let _ = tokio::time::timeout_at(deadline.into(), waiter.notified()).await;
            }
        }
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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

    /// POSTs one signed event; `Err` is a transport failure.
    async fn post(&self, body: Vec<u8>) -> Result<Reply, String> {
        let endpoint = self
            .endpoint()
            .ok_or_else(|| "no webhook endpoint configured".to_string())?;
        let signature = crate::stripe::sign_header(&[&self.config.secret], wall_now(), &body);
        let req = Request::builder()
            .method(Method::POST)
            .uri(endpoint)
            .header("content-type", "application/json; charset=utf-8")
            .header("accept", "application/json")
            .header(
                "user-agent",
                "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            )
            .header("stripe-signature", signature)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let has_version = resp.headers().contains_key("stripe-version");
        let body = Limited::new(resp.into_body(), BODY_LIMIT)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status,
            has_version,
            body,
        })
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

struct Reply {
    status: u16,
    has_version: bool,
    body: Bytes,
}

/// Reads the endpoint's reply as Stripe would (`realtime-authorizations.md` §2).
fn interpret(reply: &Reply) -> (WebhookAnswer, Option<Value>) {
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

impl Driver for Simulator {
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

// === the emulator's HTTP API ===

/// Serves the emulator API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    sim: Arc<Simulator>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let builder = http1::Builder::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let sim = sim.clone();
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| {
                let sim = sim.clone();
                async move { Ok::<_, Infallible>(route(&sim, req).await) }
            }),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "emulator connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

fn respond(status: u16, body: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(body).unwrap_or_default(),
    )));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// Stripe's error envelope.
fn error(e: &SimError) -> Response<Body> {
    respond(
        e.status,
        &json!({"error": {
            "type": "invalid_request_error",
            "code": e.code,
            "message": e.message,
            "param": e.param,
        }}),
    )
}

fn bad(code: &'static str, param: &str, message: impl Into<String>) -> SimError {
    SimError::param(code, param, message)
}

async fn route(sim: &Simulator, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if method == Method::GET && path == "/healthz" {
        return respond(200, &json!({"status": "ok"}));
    }
    if !path.starts_with("/v1/") {
        return error(&SimError {
            code: "resource_missing",
            param: None,
            message: format!("Unrecognized request URL ({method}: {path})"),
            status: 404,
        });
    }
    let authorized = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.strip_prefix("Bearer ")
                .is_some_and(|k| k == sim.config.api_key)
                || v == sim.basic_auth
        });
    if !authorized {
        return respond(
            401,
            &json!({"error": {
                "type": "invalid_request_error",
                "code": "api_key_invalid",
                "message": "Invalid API Key provided (use Authorization: Bearer sk_test_…)",
            }}),
        );
    }
    let is_json = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = match Limited::new(req.into_body(), BODY_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return error(&SimError::state(
                "body_unreadable",
                "request body unreadable or over 256 KiB",
            ));
        }
    };
    let params = match parse_params(&body, is_json) {
        Ok(p) => p,
        Err(e) => return error(&e),
    };
    let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    let now = wall_now();
    let result = match (&method, segments.as_slice()) {
        (&Method::POST, ["webhook_endpoints"]) => match str_param(&params, "url") {
            Some(url) => sim.set_endpoint(&url),
            None => Err(bad(
                "parameter_missing",
                "url",
                "Missing required param: url.",
            )),
        },
        (&Method::POST, ["issuing", "cardholders"]) => {
            new_cardholder(&params).and_then(|n| sim.with_model(|m| m.create_cardholder(n, now)))
        }
        (&Method::POST, ["issuing", "cards"]) => {
            new_card(&params).and_then(|n| sim.with_model(|m| m.create_card(n, now)))
        }
        (&Method::GET, ["issuing", "cards", id]) => sim.with_model(|m| m.card(id)),
        (&Method::POST, ["issuing", "cards", id]) => match str_param(&params, "status") {
            Some(s) => sim.with_model(|m| m.set_card_status(id, &s)),
            None => sim.with_model(|m| m.card(id)),
        },
        (&Method::GET, ["issuing", "cards"]) => {
            let cards = sim.with_model(|m| {
                m.card_ids()
                    .iter()
                    .filter_map(|id| m.card(id).ok())
                    .collect::<Vec<_>>()
            });
            Ok(list("/v1/issuing/cards", cards))
        }
        (&Method::GET, ["issuing", "authorizations"]) => {
            let card = form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == "card")
                .map(|(_, v)| v.into_owned());
            let auths = sim.with_model(|m| {
                m.authorization_ids(card.as_deref())
                    .iter()
                    .filter_map(|id| m.authorization(id).ok())
                    .collect::<Vec<_>>()
            });
            Ok(list("/v1/issuing/authorizations", auths))
        }
        (&Method::GET, ["issuing", "authorizations", id]) => {
            sim.with_model(|m| m.authorization(id))
        }
        (
            &Method::POST,
            [
                "issuing",
                "authorizations",
                id,
                verb @ ("approve" | "decline"),
            ],
        ) => api_decision(&params, *verb == "approve").and_then(|d| sim.api_decision(id, d)),
        (&Method::POST, ["test_helpers", "issuing", "authorizations"]) => {
            match new_authorization(&params) {
                Ok(n) => sim.authorize(n, now).await.map(|o| o.authorization),
                Err(e) => Err(e),
            }
        }
        (&Method::POST, ["test_helpers", "issuing", "authorizations", id, verb]) => {
            helper(sim, id, verb, &params, now).await
        }
        _ => Err(SimError {
            code: "resource_missing",
            param: None,
            message: format!("Unrecognized request URL ({method}: {path})"),
            status: 404,
        }),
    };
    match result {
        Ok(v) => respond(200, &v),
        Err(e) => error(&e),
    }
}

async fn helper(
    sim: &Simulator,
    id: &str,
    verb: &str,
    p: &Value,
    now: i64,
) -> Result<Value, SimError> {
    match verb {
        "capture" => {
            let amount = int_param(p, "capture_amount")?;
            let close = bool_param(p, "close_authorization")?.unwrap_or(true);
            Ok(sim.capture(id, amount, close, now).await?.0)
        }
        "expire" => Ok(sim.expire(id, now).await?.0),
        "reverse" => {
            let amount = int_param(p, "reverse_amount")?;
            Ok(sim.reverse(id, amount, now).await?.0)
        }
        "increment" => {
            let amount = int_param(p, "increment_amount")?.ok_or_else(|| {
                bad(
                    "parameter_missing",
                    "increment_amount",
                    "Missing required param: increment_amount.",
                )
            })?;
            let controllable = bool_param(p, "is_amount_controllable")?.unwrap_or(false);
            Ok(sim
                .increment(id, amount, controllable, now)
                .await?
                .authorization)
        }
        other => Err(SimError {
            code: "resource_missing",
            param: None,
            message: format!("Unrecognized test helper {other:?}"),
            status: 404,
        }),
    }
}

fn list(url: &str, data: Vec<Value>) -> Value {
    json!({"object": "list", "data": data, "has_more": false, "url": url})
}

// === parameters ===

/// Form (`a[b][0]=v`) or JSON body → one JSON object. Form values stay strings;
/// the typed readers below accept both.
fn parse_params(body: &[u8], is_json: bool) -> Result<Value, SimError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(json!({}));
    }
    if is_json {
        return match serde_json::from_slice::<Value>(body) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(SimError::state(
                "parameter_invalid",
                "the JSON body must be an object",
            )),
        };
    }
    let mut root = Value::Object(serde_json::Map::new());
    for (key, value) in form_urlencoded::parse(body) {
        let mut parts = Vec::new();
        let (head, mut rest) = match key.find('[') {
            Some(i) => (&key[..i], &key[i..]),
            None => (&key[..], ""),
        };
        parts.push(head.to_string());
        while let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return Err(bad("parameter_invalid", &key, "unbalanced [ in key"));
            };
            parts.push(r[..end].to_string());
            rest = &r[end + 1..];
        }
        if !rest.is_empty() || parts.len() > 6 {
            return Err(bad("parameter_invalid", &key, "malformed key"));
        }
        let mut cur = &mut root;
        for (i, part) in parts.iter().enumerate() {
            let Some(obj) = cur.as_object_mut() else {
                return Err(bad("parameter_invalid", &key, "conflicting keys"));
            };
            // `a[]=x` appends: give it the next index.
            let part = if part.is_empty() {
                obj.len().to_string()
            } else {
                part.clone()
            };
            if i + 1 == parts.len() {
                obj.insert(part, Value::String(value.to_string()));
                break;
            }
            cur = obj
                .entry(part)
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
        }
    }
    Ok(arrays(root))
}

/// Objects whose keys are exactly 0..n become arrays (Stripe's `a[0][b]` form).
fn arrays(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let n = map.len();
            let indexed = n > 0 && (0..n).all(|i| map.contains_key(&i.to_string()));
            if indexed {
                let mut map = map;
                Value::Array(
                    (0..n)
                        .map(|i| arrays(map.remove(&i.to_string()).unwrap_or(Value::Null)))
                        .collect(),
                )
            } else {
                Value::Object(map.into_iter().map(|(k, v)| (k, arrays(v))).collect())
            }
        }
        other => other,
    }
}

fn field<'a>(p: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(p, |v, k| match (v, k.parse::<usize>()) {
            (Value::Array(a), Ok(i)) => a.get(i),
            _ => v.get(k),
        })
        .filter(|v| !v.is_null())
}

fn param_name(path: &str) -> String {
    let mut parts = path.split('.');
    let mut out = parts.next().unwrap_or_default().to_string();
    for p in parts {
        out.push_str(&format!("[{p}]"));
    }
    out
}

fn int_param(p: &Value, path: &str) -> Result<Option<i64>, SimError> {
    match field(p, path) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| {
            bad(
                "parameter_invalid_integer",
                &param_name(path),
                "not an integer",
            )
        }),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| {
            bad(
                "parameter_invalid_integer",
                &param_name(path),
                format!("Invalid integer: {s}"),
            )
        }),
        Some(_) => Err(bad(
            "parameter_invalid_integer",
            &param_name(path),
            "not an integer",
        )),
    }
}

fn bool_param(p: &Value, path: &str) -> Result<Option<bool>, SimError> {
    match field(p, path) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(_) => Err(bad(
            "parameter_invalid_boolean",
            &param_name(path),
            "Invalid boolean: use true or false",
        )),
    }
}

fn str_param(p: &Value, path: &str) -> Option<String> {
    match field(p, path)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings(p: &Value, path: &str) -> Result<Option<Vec<String>>, SimError> {
    match field(p, path) {
        None => Ok(None),
        // Stripe's form encoding unsets a list with an empty value.
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(bad("parameter_invalid", &param_name(path), "not a string")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(bad(
            "parameter_invalid",
            &param_name(path),
            "expected a list",
        )),
    }
}

fn metadata(p: &Value, path: &str) -> Result<BTreeMap<String, String>, SimError> {
    match field(p, path) {
        None => Ok(BTreeMap::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => {
            if m.len() > 50 {
                return Err(bad(
                    "parameter_invalid",
                    path,
                    "metadata has more than 50 keys",
                ));
            }
            let mut out = BTreeMap::new();
            for (k, v) in m {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => String::new(),
                    _ => {
                        return Err(bad(
                            "parameter_invalid",
                            &format!("{path}[{k}]"),
                            "metadata values are strings",
                        ));
                    }
                };
                if k.chars().count() > 40 || v.chars().count() > 500 {
                    return Err(bad(
                        "parameter_invalid",
                        &format!("{path}[{k}]"),
                        "metadata keys are at most 40 characters, values 500",
                    ));
                }
                out.insert(k.clone(), v);
            }
            Ok(out)
        }
        Some(_) => Err(bad("parameter_invalid", path, "metadata must be an object")),
    }
}

fn controls(p: &Value, path: &str) -> Result<SpendingControls, SimError> {
    let at = |k: &str| format!("{path}.{k}");
    let mut limits = Vec::new();
    if let Some(list) = field(p, &at("spending_limits")) {
        let Some(list) = list.as_array() else {
            return Err(bad(
                "parameter_invalid",
                &param_name(&at("spending_limits")),
                "expected a list",
            ));
        };
        for (i, l) in list.iter().enumerate() {
            let base = format!("{path}.spending_limits.{i}");
            let amount = int_param(p, &format!("{base}.amount"))?.ok_or_else(|| {
                bad(
                    "parameter_missing",
                    &param_name(&format!("{base}.amount")),
                    "missing amount",
                )
            })?;
            let interval = l
                .get("interval")
                .and_then(|v| v.as_str())
                .ok_or_else(|| {
                    bad(
                        "parameter_missing",
                        &param_name(&format!("{base}.interval")),
                        "missing interval",
                    )
                })?
                .to_string();
            limits.push(SpendingLimit {
                amount,
                interval,
                categories: strings(p, &format!("{base}.categories"))?,
            });
        }
    }
    Ok(SpendingControls {
        allowed_categories: strings(p, &at("allowed_categories"))?,
        blocked_categories: strings(p, &at("blocked_categories"))?,
        allowed_merchant_countries: strings(p, &at("allowed_merchant_countries"))?,
        blocked_merchant_countries: strings(p, &at("blocked_merchant_countries"))?,
        spending_limits: limits,
        spending_limits_currency: str_param(p, &at("spending_limits_currency")),
    })
}

fn new_cardholder(p: &Value) -> Result<NewCardholder, SimError> {
    Ok(NewCardholder {
        name: str_param(p, "name"),
        email: str_param(p, "email"),
        status: str_param(p, "status"),
        spending_controls: controls(p, "spending_controls")?,
        metadata: metadata(p, "metadata")?,
    })
}

fn new_card(p: &Value) -> Result<NewCard, SimError> {
    Ok(NewCard {
        cardholder: str_param(p, "cardholder").ok_or_else(|| {
            bad(
                "parameter_missing",
                "cardholder",
                "Missing required param: cardholder.",
            )
        })?,
        currency: str_param(p, "currency"),
        status: str_param(p, "status"),
        card_type: str_param(p, "type"),
        spending_controls: controls(p, "spending_controls")?,
        metadata: metadata(p, "metadata")?,
    })
}

fn new_authorization(p: &Value) -> Result<NewAuthorization, SimError> {
    let card = str_param(p, "card")
        .ok_or_else(|| bad("parameter_missing", "card", "Missing required param: card."))?;
    let amount = int_param(p, "amount")?
        .or(int_param(p, "merchant_amount")?)
        .ok_or_else(|| {
            bad(
                "parameter_missing",
                "amount",
                "Missing required param: amount (or merchant_amount).",
            )
        })?;
    let d = Merchant::default();
    let m = |k: &str| str_param(p, &format!("merchant_data.{k}"));
    let category_code = match (m("category_code"), m("category")) {
        (Some(code), _) => code,
        (None, Some(name)) => crate::decision::category_by_name(&name)
            .map(|c| crate::decision::categories::CATEGORIES[usize::from(c)].mcc)
            .filter(|mcc| !mcc.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                bad(
                    "parameter_invalid",
                    "merchant_data[category]",
                    format!("unknown merchant category {name:?}"),
                )
            })?,
        (None, None) => d.category_code.clone(),
    };
    let category = match m("category") {
        Some(c) => c,
        None => crate::decision::category_by_mcc(&category_code)
            .map(|c| {
                crate::decision::categories::CATEGORIES[usize::from(c)]
                    .name
                    .to_string()
            })
            .unwrap_or_else(|| d.category.clone()),
    };
    Ok(NewAuthorization {
        card,
        amount,
        merchant_currency: str_param(p, "merchant_currency"),
        merchant_amount: int_param(p, "merchant_amount")?,
        merchant: Merchant {
            category,
            category_code,
            name: m("name").unwrap_or(d.name),
            city: m("city").unwrap_or(d.city),
            country: m("country").unwrap_or(d.country),
            postal_code: m("postal_code").or(d.postal_code),
            state: m("state").or(d.state),
            network_id: m("network_id").unwrap_or(d.network_id),
        },
        authorization_method: str_param(p, "authorization_method").unwrap_or("online".into()),
        is_amount_controllable: bool_param(p, "is_amount_controllable")?.unwrap_or(false),
        wallet: str_param(p, "wallet"),
        network_risk_score: None,
    })
}

fn api_decision(p: &Value, approved: bool) -> Result<ApiDecision, SimError> {
    let amount = if approved {
        int_param(p, "amount")?
    } else {
        None
    };
    if let Some(a) = amount
        && a <= 0
    {
        return Err(bad(
            "parameter_invalid_integer",
            "amount",
            "amount must be positive (use decline to decline)",
        ));
    }
    Ok(ApiDecision {
        approved,
        amount,
        metadata: metadata(p, "metadata")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_become_nested_json() {
        let v = parse_params(
            b"card=ic_1&amount=500&merchant_data[category]=bakeries&\
              spending_controls[spending_limits][0][amount]=100&\
              spending_controls[spending_limits][0][interval]=daily&\
              spending_controls[blocked_categories][]=bakeries&metadata[k]=v%20w",
            false,
        )
        .unwrap();
        assert_eq!(v["merchant_data"]["category"], "bakeries");
        assert_eq!(
            v["spending_controls"]["spending_limits"][0]["amount"],
            "100"
        );
        assert_eq!(v["spending_controls"]["blocked_categories"][0], "bakeries");
        assert_eq!(v["metadata"]["k"], "v w");
        let c = controls(&v, "spending_controls").unwrap();
        assert_eq!(c.spending_limits[0].amount, 100);
        assert!(parse_params(b"a[b=1", false).is_err());
        assert!(parse_params(b"a=1&a[b]=2", false).is_err());
        assert!(int_param(&json!({"amount": "12x"}), "amount").is_err());
    }

    fn reply(status: u16, version: bool, body: &str) -> Reply {
        Reply {
            status,
            has_version: version,
            body: Bytes::from(body.to_string()),
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
        for (status, version, body) in [
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
}

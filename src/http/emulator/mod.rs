//! The Issuing emulator's network side: its Stripe-shaped API (test helpers, the
//! deprecated approve/decline calls, cards, cardholders) served through the one
//! accept loop (`http::serve_with`), and [`HttpSender`], the hyper client that
//! POSTs the emulator's signed events to a cardgate URL, exactly as Stripe would.
//!
//! Only HTTP lives here: routing, authentication, bodies read into the typed
//! inputs of the operations (`params.rs`), answers encoded as Stripe's JSON.
//! The operations, the window and the webhook-driving logic are
//! [`crate::simulate::Simulator`]'s.
//!
//! Bodies are accepted form-encoded (Stripe's v1 style, `merchant_data[category]=…`)
//! or as JSON; every `/v1` call needs the configured secret key (Bearer or Basic).

mod params;

#[doc(hidden)]
pub use params::fuzz_decode as fuzz_params;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::{Body, ServeLimits};
use crate::clock::Clock;
use crate::config::Env;
use crate::simulate::cli::{self, EmulatorOptions, RunReport, SetupError};
use crate::simulate::scenario::Scenario;
use crate::simulate::service::webhook_endpoint;
use crate::simulate::{Reply, SimError, Simulator, WebhookSender};
use params::{
    api_decision, bad, bool_param, int_param, new_authorization, new_card, new_cardholder,
    parse_params, str_param,
};

/// Largest request or reply body the emulator reads.
const BODY_LIMIT: usize = 256 * 1024;

/// The emulator as served here: the operations over the hyper client.
pub type Sim = Simulator<HttpSender>;

/// A webhook URL the sender cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook URL {0:?} must be an http:// URL with a host (TLS is not supported here)")]
pub struct WebhookUrlError(pub String);

/// An `http://host[:port]/path` URL for events.
fn webhook_uri(url: &str) -> Result<Uri, WebhookUrlError> {
    let uri: Uri = url.parse().map_err(|_| WebhookUrlError(url.to_string()))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(WebhookUrlError(url.to_string()));
    }
    Ok(uri)
}

// === the sender ===

/// POSTs signed events to cardgate's `/webhooks/stripe` with a kept-alive hyper
/// client. The endpoint can be set later (`POST /v1/webhook_endpoints`), which is
/// how cardgate in legacy mode and the emulator find each other.
pub struct HttpSender {
    endpoint: Mutex<Option<Uri>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpSender {
    /// A sender for `url` (none yet when `None`).
    pub fn new(url: Option<&str>) -> Result<Self, WebhookUrlError> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Ok(HttpSender {
            endpoint: Mutex::new(url.map(webhook_uri).transpose()?),
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Points events at `url`.
    pub fn set_endpoint(&self, url: &str) -> Result<(), WebhookUrlError> {
        let uri = webhook_uri(url)?;
        *self
            .endpoint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(uri);
        Ok(())
    }

    /// Where events go, if anywhere yet.
    pub fn endpoint(&self) -> Option<Uri> {
        self.endpoint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl WebhookSender for HttpSender {
    fn has_endpoint(&self) -> bool {
        self.endpoint().is_some()
    }

    async fn send(&self, body: Vec<u8>, signature: String) -> Result<Reply, String> {
        let endpoint = self
            .endpoint()
            .ok_or_else(|| "no webhook endpoint configured".to_string())?;
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
            body: body.to_vec(),
        })
    }
}

// === the entry points of `cardgate simulate` ===

/// Why `cardgate simulate serve|run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// An option was refused.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// `--webhook-url` is not usable.
    #[error(transparent)]
    WebhookUrl(#[from] WebhookUrlError),
    /// `--listen` is not an address.
    #[error("--listen {listen:?} is not IP:PORT")]
    Listen {
        /// What was given.
        listen: String,
        /// The parser's complaint.
        #[source]
        source: std::net::AddrParseError,
    },
    /// The address could not be bound.
    #[error("binding {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The listener failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Connection slots of the emulator's listener: as many as cardgate's default, so
/// a load test is never throttled by its own Stripe.
const MAX_CONNECTIONS: usize = 4096;

/// How long open connections may finish after shutdown is asked.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// `cardgate simulate serve`, bound and ready to serve.
pub struct EmulatorServer {
    listener: TcpListener,
    addr: SocketAddr,
    api: Arc<EmulatorApi>,
}

impl EmulatorServer {
    /// Validates `options`, builds the emulator and binds `listen`; every `/v1`
    /// call must then present `api_key`. `env` supplies the secret when
    /// `options` do not; `clock` stamps API calls and signatures.
    pub async fn bind(
        options: &EmulatorOptions,
        listen: &str,
        api_key: &str,
        env: &(dyn Env + Sync),
        clock: Clock,
    ) -> Result<Self, EmulatorError> {
        let setup = options.setup(env, &clock)?;
        let sender = HttpSender::new(options.webhook_url.as_deref())?;
        let addr: SocketAddr = listen.parse().map_err(|source| EmulatorError::Listen {
            listen: listen.to_string(),
            source,
        })?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EmulatorError::Bind { addr, source })?;
        let addr = listener.local_addr()?;
        let webhook = sender
            .endpoint()
            .map_or_else(|| "none yet".into(), |u| u.to_string());
        let sim = Simulator::new(setup.emulator(), setup.config, sender, clock);
        tracing::info!(%addr, %webhook, "simulator serving");
        Ok(EmulatorServer {
            listener,
            addr,
            api: Arc::new(EmulatorApi::new(sim, api_key)),
        })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the emulator API until `shutdown` completes, then drains.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let api = self.api;
        super::serve_with(
            self.listener,
            ServeLimits {
                max_connections: MAX_CONNECTIONS,
                shutdown_grace: SHUTDOWN_GRACE,
                max_buf_size: None,
                timeouts: super::Timeouts::default(),
            },
            |_| {},
            shutdown,
            move |_peer, req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(route(&api, req).await) }
            },
        )
        .await
    }
}

/// `cardgate simulate run`: loads the scenario at `path`, validates `options`
/// (a webhook URL is required), and runs it against cardgate with `seed` (default:
/// the scenario's), drawing progress on stderr unless `quiet`.
pub async fn run_scenario(
    path: &Path,
    options: &EmulatorOptions,
    seed: Option<u64>,
    quiet: bool,
    env: &(dyn Env + Sync),
    clock: Clock,
) -> Result<RunReport, EmulatorError> {
    if options.webhook_url.is_none() {
        return Err(SetupError::WebhookUrlRequired.into());
    }
    let scenario = Arc::new(Scenario::load(path).map_err(SetupError::from)?);
    let seed = seed.unwrap_or(scenario.seed);
    let setup = options.setup(env, &clock)?;
    let sender = HttpSender::new(options.webhook_url.as_deref())?;
    let sim = Arc::new(Simulator::new(
        setup.emulator(),
        setup.config,
        sender,
        clock,
    ));
    Ok(cli::run_scenario(scenario, seed, sim, quiet).await)
}

// === the emulator's HTTP API ===

/// What the API's routes share: the emulator and the key callers must present.
struct EmulatorApi {
    sim: Sim,
    api_key: String,
    /// `Authorization: Basic` for `api_key:` (curl's `-u KEY:`), encoded once.
    basic_auth: String,
}

impl EmulatorApi {
    fn new(sim: Sim, api_key: &str) -> Self {
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{api_key}:").as_bytes());
        EmulatorApi {
            sim,
            api_key: api_key.to_string(),
            basic_auth: format!("Basic {basic}"),
        }
    }
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

#[expect(
    clippy::too_many_lines,
    reason = "the emulator's route table: one arm per Stripe endpoint it mimics"
)]
async fn route(api: &EmulatorApi, req: Request<Incoming>) -> Response<Body> {
    let sim = &api.sim;
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
            v.strip_prefix("Bearer ").is_some_and(|k| k == api.api_key) || v == api.basic_auth
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
    let now = sim.now();
    let result = match (&method, segments.as_slice()) {
        (&Method::POST, ["webhook_endpoints"]) => match str_param(&params, "url") {
            Some(url) => sim
                .sender()
                .set_endpoint(&url)
                .map(|()| webhook_endpoint(&url))
                .map_err(|e| SimError::param("url_invalid", "url", e.to_string())),
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
            Ok(list("/v1/issuing/cards", &cards))
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
            Ok(list("/v1/issuing/authorizations", &auths))
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
        (
            &Method::POST,
            [
                "test_helpers",
                "issuing",
                "authorizations",
                id,
                "fraud_challenges",
                "respond",
            ],
        ) => match bool_param(&params, "confirmed") {
            Ok(Some(confirmed)) => {
                sim.with_model(|m| m.respond_fraud_challenge(id, confirmed, now))
            }
            Ok(None) => Err(bad(
                "parameter_missing",
                "confirmed",
                "Missing required param: confirmed.",
            )),
            Err(e) => Err(e),
        },
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

async fn helper(sim: &Sim, id: &str, verb: &str, p: &Value, now: i64) -> Result<Value, SimError> {
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

fn list(url: &str, data: &[Value]) -> Value {
    json!({"object": "list", "data": data, "has_more": false, "url": url})
}

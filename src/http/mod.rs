//! The HTTP edge: a hyper 1.x HTTP/1.1 server with keep-alive, routing on
//! `(method, path)`, JSON error mapping, and graceful shutdown. The only module that
//! names hyper types.
//!
//! One accept loop (`serve_with`) serves both cardgate ([`serve`]) and the Stripe
//! emulator (`emulator`). Backpressure: a connection slot (semaphore permit) is
//! taken *before* accepting and moves into the connection task, so at most
//! `max_connections` are served and a slot frees itself when its task ends. A
//! connection waiting for its client is bounded in time and, when a new client
//! needs its slot, evicted (`conn`): only requests in flight hold a slot for sure.
//! Shutdown: stop accepting, then let every open connection finish its in-flight
//! request (bounded by the grace period).
//!
//! With an admin listener ([`serve`]'s `admin`), each listener serves one
//! [`Surface`] with its own slots: the webhook's port answers only what Stripe
//! needs, and nothing reachable from there can reach the admin API.

mod api;
mod conn;
pub mod emulator;
pub mod legacy;
pub mod outbox;
pub mod payments;
mod respond;
mod state;
mod ui;
pub mod webhook;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

#[doc(hidden)]
pub use api::{FUZZ_BODIES as FUZZ_API_BODIES, fuzz_decode as fuzz_api_body};
pub use api::{ROUTES as API_ROUTES, Route as ApiRoute};
pub(crate) use conn::Timeouts;
use conn::{Registry, Watched};
pub use state::AppState;

use respond::{json_error, json_ok};

/// Response body type used everywhere.
pub type Body = Full<Bytes>;

/// Which routes a listener answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// Everything, on one port (no admin listener configured).
    All,
    /// Only what Stripe must reach: `POST /webhooks/stripe`, `/healthz`, `/readyz`.
    Webhook,
    /// The admin surface: `/v1/…`, `/ui/`, `/metrics`, and `/healthz`, `/readyz`.
    Admin,
}

impl Surface {
    /// Whether this listener answers `path` at all (others get 404, as if absent).
    fn serves(self, path: &str) -> bool {
        let health = matches!(path, "/healthz" | "/readyz");
        match self {
            Surface::All => true,
            Surface::Webhook => health || path == "/webhooks/stripe",
            Surface::Admin => {
                health
                    || path == "/metrics"
                    || path.starts_with("/v1/")
                    || path == "/ui"
                    || path.starts_with("/ui/")
            }
        }
    }
}

/// Serves `listener` (and `admin`, when given, as the only home of the admin
/// surface) until `shutdown` completes, then drains open connections for at most
/// the configured grace period. Each listener has its own connection slots, so the
/// admin surface's clients cannot take the webhook's.
pub async fn serve(
    listener: TcpListener,
    admin: Option<TcpListener>,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let Some(admin) = admin else {
        return serve_surface(listener, Surface::All, state, shutdown).await;
    };
    // One shutdown signal, two accept loops: fan it out.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let signal = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        // An error means the sender is gone, which only happens once we stop anyway.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let both = async {
        tokio::try_join!(
            serve_surface(
                listener,
                Surface::Webhook,
                state.clone(),
                signal(stopped.clone())
            ),
            serve_surface(admin, Surface::Admin, state.clone(), signal(stopped)),
        )
        .map(|_| ())
    };
    tokio::pin!(both);
    tokio::select! {
        served = &mut both => served,
        () = shutdown => {
            let _ = stop.send(true);
            both.await
        }
    }
}

async fn serve_surface(
    listener: TcpListener,
    surface: Surface,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = ServeLimits {
        max_connections: state.config.max_connections,
        shutdown_grace: state.config.shutdown_grace,
        max_buf_size: Some(webhook::BODY_LIMIT + 64 * 1024),
        timeouts: state.config.http.into(),
    };
    let ready = state.clone();
    serve_with(
        listener,
        limits,
        move |r| ready.set_ready(r),
        shutdown,
        move |peer, req| route(state.clone(), surface, peer, req),
    )
    .await
}

/// The bounds of one listener served by [`serve_with`].
pub(crate) struct ServeLimits {
    /// Connection slots: at most this many connections are served at once.
    pub max_connections: usize,
    /// How long open connections may finish their in-flight request after
    /// shutdown is asked, before they are closed.
    pub shutdown_grace: Duration,
    /// hyper's read buffer cap (`None`: hyper's default).
    pub max_buf_size: Option<usize>,
    /// How long a connection may wait for its client (`[http]`).
    pub timeouts: Timeouts,
}

/// How long the accept loop waits for an evicted connection's slot before it
/// evicts again: an eviction can lose to a request that arrived at that instant.
const EVICTION_RETRY: Duration = Duration::from_millis(100);

/// The one accept loop, shared by cardgate and the emulator: failed accepts back
/// off, `ready(true)` once accepting and `ready(false)` when draining, and every
/// connection gets `handler` for each of its requests (HTTP/1.1, keep-alive, no
/// Nagle).
///
/// What a connection may cost: one of `max_connections` slots, taken before its
/// first request is read. A connection that is waiting for its client — for a
/// request head (`header_read` timeout) or, kept alive, for its next request
/// (`idle` timeout) — is closed when its timeout passes, and is evicted (oldest
/// first) when a new client knocks while every slot is taken. Only connections
/// with a request in flight are never taken away, so idle or slow clients cannot
/// starve a client that sends its request whole.
pub(crate) async fn serve_with<H, F>(
    listener: TcpListener,
    limits: ServeLimits,
    ready: impl Fn(bool),
    shutdown: impl Future<Output = ()>,
    handler: H,
) -> std::io::Result<()>
where
    H: Fn(SocketAddr, Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let registry = Registry::new();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.keep_alive(true);
    // hyper's own header timer counts a kept-alive connection's idle wait as well
    // (see `conn`), so it cannot be the header timeout; it is the backstop should a
    // watcher ever miss: no wait for a client lasts longer than both together.
    builder.timer(TokioTimer::new());
    builder.header_read_timeout(limits.timeouts.header_read + limits.timeouts.idle);
    if let Some(max) = limits.max_buf_size {
        builder.max_buf_size(max);
    }
    let timeouts = limits.timeouts;
    tokio::pin!(shutdown);
    ready(true);
    loop {
        // A free slot is taken before accepting, so the common case never evicts
        // and, when every slot serves a request, new clients wait in the backlog.
        let free = match slots.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(TryAcquireError::NoPermits) => None,
            Err(TryAcquireError::Closed) => break,
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = if let Some(p) = free {
            p
        } else {
            tokio::select! {
                () = &mut shutdown => break,
                p = make_room(&slots, &registry) => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            }
        };
        // Decisions are tiny responses on kept-alive connections: Nagle would add
        // delay for nothing.
        let _ = stream.set_nodelay(true);
        let registration = registry.register();
        let conn_state = registration.conn.clone();
        let handler = handler.clone();
        let conn = builder.serve_connection(
            TokioIo::new(Watched::new(stream, registration.conn.clone())),
            service_fn(move |req| {
                conn_state.start_request();
                let answered = handler(peer, req);
                let conn_state = conn_state.clone();
                async move {
                    let resp = answered.await;
                    conn_state.finish_request();
                    resp
                }
            }),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                closed = registration.conn.expired(timeouts) => {
                    tracing::debug!(%peer, reason = closed.as_str(), "connection closed");
                }
            }
            drop(registration);
            drop(permit);
        });
    }
    ready(false);
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
    Ok(())
}

/// A slot for a client accepted while every slot was taken: evict the connection
/// that has waited longest for its client, and take its slot once its task ends.
/// When every connection is serving a request nothing is evicted; the client waits
/// for the first slot to free, as it would have in the backlog.
async fn make_room(
    slots: &Arc<Semaphore>,
    registry: &Registry,
) -> Result<OwnedSemaphorePermit, tokio::sync::AcquireError> {
    loop {
        if let Ok(p) = slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        if registry.evict_oldest_waiting() {
            tracing::debug!("every connection slot taken: evicted the longest-waiting connection");
        }
        if let Ok(p) = tokio::time::timeout(EVICTION_RETRY, slots.clone().acquire_owned()).await {
            return p;
        }
    }
}

async fn route(
    state: Arc<AppState>,
    surface: Surface,
    _peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (route, resp) = match (req.method(), req.uri().path()) {
        (_, path) if !surface.serves(path) => ("not_found", not_found(path)),
        (&Method::POST, "/webhooks/stripe") if state.legacy.is_some() => {
            ("webhook", legacy::handle_detached(state.clone(), req).await)
        }
        (&Method::POST, "/webhooks/stripe") => ("webhook", webhook::handle(&state, req).await),
        (&Method::GET, "/metrics") => ("metrics", metrics(&state)),
        (&Method::GET, "/healthz") => ("healthz", json_ok(StatusCode::OK, br#"{"status":"ok"}"#)),
        (&Method::GET, "/readyz") => ("readyz", ready(&state)),
        (&Method::POST, "/v1/payment_approvals") => {
            ("payment_approvals", payments::handle(&state, req).await)
        }
        (_, "/webhooks/stripe" | "/metrics" | "/healthz" | "/readyz" | "/v1/payment_approvals") => {
            (
                "method_not_allowed",
                json_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    &format!("{} is not allowed on {}", req.method(), req.uri().path()),
                ),
            )
        }
        // Every other /v1/ path is the authenticated admin API.
        (_, p) if p.starts_with("/v1/") => ("api", api::handle(&state, req).await),
        (_, p) if p == "/ui" || p.starts_with("/ui/") => ("ui", ui::handle(&req)),
        (_, path) => ("not_found", not_found(path)),
    };
    crate::metrics::count_http_response(route, status_label(resp.status()));
    Ok(resp)
}

fn not_found(path: &str) -> Response<Body> {
    json_error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no route for {path}"),
    )
}

/// Static status labels so the metric never allocates a label string.
fn status_label(s: StatusCode) -> &'static str {
    match s.as_u16() {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        405 => "405",
        409 => "409",
        408 => "408",
        413 => "413",
        422 => "422",
        503 => "503",
        _ => "other",
    }
}

fn metrics(state: &AppState) -> Response<Body> {
    let text = crate::metrics::render(&state.metrics);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(Full::new(Bytes::from(text)))
        .unwrap_or_else(|_| respond::internal())
}

fn ready(state: &AppState) -> Response<Body> {
    if state.is_ready() {
        json_ok(StatusCode::OK, br#"{"status":"ready"}"#)
    } else {
        json_error(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "not ready")
    }
}

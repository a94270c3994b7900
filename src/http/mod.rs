//! The HTTP edge: a hyper 1.x HTTP/1.1 server with keep-alive, routing on
//! `(method, path)`, JSON error mapping, and graceful shutdown. The only module that
//! names hyper types.
//!
//! One accept loop (`serve_with`) serves both cardgate ([`serve`]) and the Stripe
//! emulator (`emulator`). Backpressure: a connection slot (semaphore permit) is
//! taken *before* accepting and moves into the connection task, so at most
//! `max_connections` are served and a slot frees itself when its task ends.
//! Shutdown: stop accepting, then let every open connection finish its in-flight
//! request (bounded by the grace period).

mod api;
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
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use api::{ROUTES as API_ROUTES, Route as ApiRoute};
pub use state::AppState;

use respond::{json_error, json_ok};

/// Response body type used everywhere.
pub type Body = Full<Bytes>;

/// Serves `listener` until `shutdown` completes, then drains open connections for at
/// most the configured grace period.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let limits = ServeLimits {
        max_connections: state.config.max_connections,
        shutdown_grace: state.config.shutdown_grace,
        max_buf_size: Some(webhook::BODY_LIMIT + 64 * 1024),
    };
    let ready = state.clone();
    serve_with(
        listener,
        limits,
        move |r| ready.set_ready(r),
        shutdown,
        move |peer, req| route(state.clone(), peer, req),
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
}

/// The one accept loop, shared by cardgate and the emulator: a connection slot
/// is taken before accepting, failed accepts back off, `ready(true)` once
/// accepting and `ready(false)` when draining, and every connection gets
/// `handler` for each of its requests (HTTP/1.1, keep-alive, no Nagle).
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
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder.keep_alive(true);
    if let Some(max) = limits.max_buf_size {
        builder.max_buf_size(max);
    }
    tokio::pin!(shutdown);
    ready(true);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
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
        // Decisions are tiny responses on kept-alive connections: Nagle would add
        // delay for nothing.
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| handler(peer, req)),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
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

async fn route(
    state: Arc<AppState>,
    _peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (route, resp) = match (req.method(), req.uri().path()) {
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
        _ => (
            "not_found",
            json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no route for {}", req.uri().path()),
            ),
        ),
    };
    metrics::counter!(
        crate::metrics::HTTP_RESPONSES,
        "route" => route,
        "status" => status_label(resp.status()),
    )
    .increment(1);
    Ok(resp)
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
    let text = state.metrics.render();
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

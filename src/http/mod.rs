//! The HTTP edge: a hyper 1.x HTTP/1.1 server with keep-alive, routing on
//! `(method, path)`, JSON error mapping, and graceful shutdown. The only module that
//! names hyper types.
//!
//! Backpressure: a connection slot (semaphore permit) is taken *before* accepting and
//! moves into the connection task, so at most `max_connections` are served and a
//! slot frees itself when its task ends. Shutdown: stop accepting, then let every
//! open connection finish its in-flight request (bounded by the grace period).

mod api;
mod approvals_hook;
pub mod emulator;
mod ledger;
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
    let slots = Arc::new(Semaphore::new(state.config.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .keep_alive(true)
        .max_buf_size(webhook::BODY_LIMIT + 64 * 1024);
    tokio::pin!(shutdown);
    state.set_ready(true);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
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
        let st = state.clone();
        let conn = builder.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| route(st.clone(), peer, req)),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    state.set_ready(false);
    drop(listener);
    tracing::info!("shutting down: waiting for in-flight requests");
    if tokio::time::timeout(state.config.shutdown_grace, graceful.shutdown())
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

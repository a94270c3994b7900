//! The baseline every load figure is compared against: a bare hyper 1.x server that
//! answers `POST /webhooks/stripe` with a fixed approval and does nothing else (no
//! verification, no parsing, no metrics). It is set up like cardgate's server —
//! multi-thread tokio runtime, HTTP/1.1 keep-alive, TCP_NODELAY, the body read in
//! full — so the difference between the two is the cost of cardgate's own work.
//!
//! Run: `cargo run --release --example baseline -- --listen 127.0.0.1:0`; prints
//! `baseline listening on http://ADDR` once bound. Stops on SIGTERM/SIGINT.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const APPROVAL: &[u8] =
    br#"{"approved":true,"metadata":{"reason":"approved","ruleset":"baseline"}}"#;

fn main() -> anyhow::Result<()> {
    let listen = parse_listen()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        println!("baseline listening on http://{}", listener.local_addr()?);
        std::io::stdout().flush()?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut builder = http1::Builder::new();
        builder.keep_alive(true);
        loop {
            let (stream, _) = tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                accepted = listener.accept() => match accepted {
                    Ok(s) => s,
                    Err(_) => continue,
                },
            };
            let _ = stream.set_nodelay(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service_fn(answer));
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
        Ok(())
    })
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::POST, "/webhooks/stripe") => {
            // Read the body as cardgate does (same 256 KiB cap), then ignore it.
            let _ = Limited::new(req.into_body(), 256 * 1024).collect().await;
            (StatusCode::OK, APPROVAL)
        }
        (&Method::GET, "/readyz" | "/healthz") => (StatusCode::OK, &br#"{"status":"ready"}"#[..]),
        _ => (
            StatusCode::NOT_FOUND,
            &br#"{"error":{"code":"not_found"}}"#[..],
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

fn parse_listen() -> anyhow::Result<SocketAddr> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:8081".to_string();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--listen needs IP:PORT"))?;
            }
            other => {
                anyhow::bail!("unknown argument {other:?}; usage: baseline [--listen IP:PORT]")
            }
        }
    }
    Ok(listen.parse()?)
}

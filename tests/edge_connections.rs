//! Issue 15 #1: idle and slow connections could hold every connection slot
//! forever, and then a correctly signed webhook from Stripe got no answer. Raw
//! sockets against the real binary, with short configured timeouts and a small
//! `max_connections` (no test waits for a default timeout).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

mod common;

use std::time::{Duration, Instant};

use common::{SECRET, Server, base_config, fixture_path, now};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SLOTS: usize = 4;

fn config(header_read_timeout: f64, idle_timeout: f64) -> String {
    format!(
        "{}[server]\nmax_connections = {SLOTS}\n[http]\nheader_read_timeout = {header_read_timeout}\nidle_timeout = {idle_timeout}\n",
        base_config()
    )
}

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(&server.addr).await.unwrap()
}

/// Reads one HTTP/1.1 response (head and a `content-length` body) off `s`.
async fn read_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed mid-response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

/// A complete, correctly signed authorization request on a fresh connection;
/// returns its response, or panics if none came within `within`.
async fn signed_webhook(server: &Server, within: Duration) -> String {
    let body = std::fs::read(fixture_path("issuing_authorization.request.json")).unwrap();
    let sig = cardgate::stripe::sign_header(&[SECRET], now(), &body);
    let head = format!(
        "POST /webhooks/stripe HTTP/1.1\r\nHost: cardgate\r\nContent-Type: application/json\r\nStripe-Signature: {sig}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let exchange = async {
        let mut s = connect(server).await;
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body).await.unwrap();
        read_response(&mut s).await
    };
    tokio::time::timeout(within, exchange)
        .await
        .expect("the signed webhook got no answer: every slot is held by idle clients")
}

/// Waits until the peer closes `s` (EOF or reset) and says when, or `None` if it
/// stayed open for `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Instant> {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(Instant::now()),
            Ok(Ok(_)) => {}
        }
    }
}

fn assert_approved(response: &str) {
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""approved":true"#), "{response}");
}

#[tokio::test]
async fn idle_connections_cannot_starve_a_signed_webhook() {
    // Long timeouts: what frees the slots here must be eviction, not a timer.
    let server = Server::start(&config(60.0, 60.0), &[]);
    server.ready().await;

    // Every slot held: half are kept-alive connections that were answered and now
    // sit idle, half sent half a request line and stopped (slowloris).
    let mut held = Vec::new();
    for i in 0..SLOTS {
        let mut s = connect(&server).await;
        if i % 2 == 0 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
        } else {
            s.write_all(b"POST /webhooks/stripe HT").await.unwrap();
        }
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    let response = signed_webhook(&server, Duration::from_secs(5)).await;
    assert_approved(&response);
    // The slot came from the connection that had waited longest.
    let oldest = closed_within(&mut held[0], Duration::from_secs(2)).await;
    assert!(
        oldest.is_some(),
        "the oldest idle connection was not evicted: {:?} {}",
        held.iter()
            .map(|h| h.local_addr().unwrap())
            .collect::<Vec<_>>(),
        server.stderr.lock().unwrap()
    );

    // A flood: three times as many silent sockets as there are slots, then Stripe.
    let mut flood = Vec::new();
    for _ in 0..3 * SLOTS {
        flood.push(connect(&server).await);
    }
    for _ in 0..3 {
        assert_approved(&signed_webhook(&server, Duration::from_secs(5)).await);
    }
}

#[tokio::test]
async fn a_half_sent_request_line_is_closed_after_the_header_timeout() {
    let server = Server::start(&config(1.0, 30.0), &[]);
    server.ready().await;

    let opened = Instant::now();
    let mut half = connect(&server).await;
    half.write_all(b"POST /webhooks/stripe HT").await.unwrap();
    let mut silent = connect(&server).await;
    // Slowloris: a byte every 200 ms never completes the head in time either.
    let mut trickle = connect(&server).await;
    let trickling = tokio::spawn(async move {
        let head =
            b"GET /healthz HTTP/1.1\r\nHost: cardgate\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        for b in head {
            if trickle.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        closed_within(&mut trickle, Duration::from_secs(5)).await
    });

    for (name, s) in [("half request line", &mut half), ("silent", &mut silent)] {
        let closed = closed_within(s, Duration::from_secs(5)).await;
        let closed = closed.unwrap_or_else(|| panic!("{name}: still open after 5 s"));
        let took = closed.duration_since(opened);
        assert!(
            took >= Duration::from_millis(800),
            "{name}: closed after {took:?}, before the 1 s header timeout"
        );
    }
    let took = trickling.await.unwrap();
    assert!(took.is_some(), "a trickled request head was never closed");

    // The limit is on the head only: a prompt request is answered as ever.
    let mut prompt = connect(&server).await;
    prompt
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut prompt).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = Server::start(&config(30.0, 1.0), &[]);
    server.ready().await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

    // A connection in use stays open past the idle timeout: the wait restarts
    // after every answer.
    let mut busy = connect(&server).await;
    let mut last_answer = Instant::now();
    for _ in 0..4 {
        busy.write_all(request).await.unwrap();
        assert!(read_response(&mut busy).await.starts_with("HTTP/1.1 200"));
        last_answer = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Once it stops, it is closed after about the idle timeout, not the (long)
    // header timeout.
    let closed = closed_within(&mut busy, Duration::from_secs(5)).await;
    let closed = closed.expect("an idle kept-alive connection stayed open");
    let took = closed.duration_since(last_answer);
    assert!(
        took >= Duration::from_millis(800),
        "closed {took:?} after its last answer, before the 1 s idle timeout"
    );
}

//! `/metrics` of the real binary, parsed with a Prometheus text-format parser: the
//! names cardgate promises exist with the right types, follow the naming
//! conventions (prefix, base units, `_total`), and the per-stage webhook latency
//! histogram carries every stage the path went through.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]
#![allow(
    clippy::float_cmp,
    reason = "metric samples compared here are whole counts, exact in f64"
)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};

const SECRET: &str = "whsec_metrics_format_test";

/// The real `cardgate serve` on 127.0.0.1:0; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start() -> Server {
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/cardgate.toml");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cardgate"))
            .args(["serve", "--config", config, "--listen", "127.0.0.1:0"])
            .env("CARDGATE_WEBHOOK_SECRET", SECRET)
            .env("CARDGATE_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start cardgate");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("cardgate listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("an IP:PORT");
        let server = Server { child, addr };
        server.wait_ready();
        server
    }

    /// Polls /readyz (bounded) instead of guessing a start-up time.
    fn wait_ready(&self) {
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = self.request("GET", "/readyz", &[], b"") {
                return;
            }
            assert!(Instant::now() < give_up, "cardgate never became ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// One HTTP/1.1 request on its own connection; returns status and body.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut s = TcpStream::connect(self.addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            write!(head, "{k}: {v}\r\n").unwrap();
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        s.write_all(body)?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no header end"))?;
        let status = std::str::from_utf8(&raw[..split])
            .ok()
            .and_then(|h| h.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status"))?;
        Ok((status, raw[split + 4..].to_vec()))
    }

    fn webhook(&self, body: &[u8], secret: &str) -> (u16, Vec<u8>) {
        let now = cardgate::clock::Clock::system().now();
        let header = cardgate::stripe::sign_header(&[secret], now, body);
        self.request(
            "POST",
            "/webhooks/stripe",
            &[
                ("Content-Type", "application/json"),
                ("Stripe-Signature", &header),
            ],
            body,
        )
        .expect("webhook request")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/events/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Scrapes and parses `/metrics`; also returns the raw `# TYPE` lines.
fn scrape(server: &Server) -> (Scrape, HashMap<String, String>) {
    let (status, body) = server
        .request("GET", "/metrics", &[], b"")
        .expect("GET /metrics");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("metrics are UTF-8");
    let types = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, t)| (name.to_string(), t.to_string()))
        .collect();
    let scrape =
        Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format");
    (scrape, types)
}

#[test]
fn metrics_parse_and_follow_conventions() {
    let server = Server::start();
    for name in [
        "issuing_authorization.request",
        "issuing_authorization.request.partial",
        "issuing_authorization.request.spending_controls",
        "issuing_authorization.created",
    ] {
        let (status, body) = server.webhook(&fixture(name), SECRET);
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&body));
    }
    let (status, _) = server.webhook(&fixture("issuing_authorization.request"), "whsec_wrong");
    assert_eq!(status, 400);

    let (scrape, types) = scrape(&server);

    let expected = [
        ("cardgate_webhook_duration_seconds", "histogram"),
        ("cardgate_webhook_stage_duration_seconds", "histogram"),
        ("cardgate_authorizations_total", "counter"),
        ("cardgate_signature_failures_total", "counter"),
        ("cardgate_events_total", "counter"),
        ("cardgate_http_responses_total", "counter"),
        ("cardgate_build_info", "gauge"),
    ];
    for (name, kind) in expected {
        assert_eq!(
            types.get(name).map(String::as_str),
            Some(kind),
            "# TYPE of {name}; all types: {types:?}"
        );
        assert!(
            scrape.docs.contains_key(name),
            "{name} has no # HELP line; docs: {:?}",
            scrape.docs.keys()
        );
    }

    // Conventions, for every metric exported (including ones added later).
    for (name, kind) in &types {
        assert!(
            name.starts_with("cardgate_"),
            "{name}: missing cardgate_ prefix"
        );
        match kind.as_str() {
            "counter" => assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            ),
            "histogram" | "summary" => assert!(
                name.ends_with("_seconds") || name.ends_with("_size") || name.ends_with("_bytes"),
                "{kind} {name} must carry a base unit"
            ),
            _ => assert!(
                !name.ends_with("_total"),
                "{kind} {name} must not end in _total"
            ),
        }
    }
    for sample in &scrape.samples {
        for (label, value) in sample.labels.iter() {
            assert!(
                !value.starts_with("ic_")
                    && !value.starts_with("ich_")
                    && !value.starts_with("iauth_"),
                "{}: label {label}={value} is an unbounded id",
                sample.metric
            );
        }
    }

    // Every stage the path went through was timed, as a histogram with observations.
    let stages: HashMap<&str, f64> = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric
                .starts_with("cardgate_webhook_stage_duration_seconds")
        })
        .filter_map(|s| match &s.value {
            Value::Histogram(buckets) => Some((
                s.labels.get("stage")?,
                buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            )),
            _ => None,
        })
        .collect();
    for stage in ["verify", "parse", "decide", "respond"] {
        let count = stages.get(stage).copied().unwrap_or(0.0);
        assert!(
            count >= 3.0,
            "stage {stage}: {count} observations; {stages:?}"
        );
    }

    let decisions: f64 = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "cardgate_authorizations_total")
        .map(|s| match s.value {
            Value::Counter(v) | Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(decisions, 3.0, "three request events were decided");
}

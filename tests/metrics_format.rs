//! `/metrics` of the real binary, parsed with a Prometheus text-format parser: the
//! names cardgate promises exist with the right types, follow the naming
//! conventions (prefix, base units, `_total`), and the per-stage webhook latency
//! histogram carries every stage the path went through. A fresh server lists every
//! bounded counter and histogram at 0, and emits no label value outside
//! `cardgate::metrics::FAMILIES` (the table the dashboard and alerts are checked
//! against). The server runs in a temporary directory: tests never write into the
//! repository's `./data`.
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

use cardgate::metrics::{FAMILIES, Kind};
use prometheus_parse::{Scrape, Value};

const SECRET: &str = "whsec_metrics_format_test";

/// The real `cardgate serve` on 127.0.0.1:0 with the bundled config, its data and
/// rules file in a temporary directory; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// Holds `data/` (the bundled config's `./data` would be the repository's) and
    /// `rules.toml`, a copy of the bundled rules a test may break.
    dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/cardgate.toml");
        let dir = tempfile::tempdir().expect("temp dir");
        let rules = dir.path().join("rules.toml");
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules.toml"),
            &rules,
        )
        .expect("copy the bundled rules");
        let mut child = Command::new(env!("CARGO_BIN_EXE_cardgate"))
            .args(["serve", "--config", config, "--listen", "127.0.0.1:0"])
            .env("CARDGATE_WEBHOOK_SECRET", SECRET)
            .env("CARDGATE_DATA_DIR", dir.path().join("data"))
            .env("CARDGATE_RULES", &rules)
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
        let server = Server { child, addr, dir };
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

impl Server {
    fn rules_path(&self) -> std::path::PathBuf {
        self.dir.path().join("rules.toml")
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success(), "kill -{sig} failed");
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
        // `promtool check metrics` flags a family without one.
        assert!(scrape.docs.contains_key(name), "{name} has no # HELP line");
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

/// The samples of a scrape as `(name, sorted labels) -> value`, read from the text
/// itself so histogram series (`_bucket`, `_count`) keep their own names.
fn samples(text: &str) -> HashMap<(String, Vec<(String, String)>), f64> {
    let line =
        regex::Regex::new(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$").expect("valid regex");
    let pair =
        regex::Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)""#).expect("valid regex");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let c = line
                .captures(l)
                .unwrap_or_else(|| panic!("unreadable sample line {l:?}"));
            let mut labels: Vec<(String, String)> = c
                .get(2)
                .map(|m| {
                    pair.captures_iter(m.as_str())
                        .map(|p| (p[1].to_string(), p[2].to_string()))
                        .collect()
                })
                .unwrap_or_default();
            labels.sort();
            let value = c[3].parse().unwrap_or_else(|_| panic!("value in {l:?}"));
            ((c[1].to_string(), labels), value)
        })
        .collect()
}

fn metrics_text(server: &Server) -> String {
    let (status, body) = server
        .request("GET", "/metrics", &[], b"")
        .expect("GET /metrics");
    assert_eq!(status, 200);
    String::from_utf8(body).expect("metrics are UTF-8")
}

/// Every label combination of a family's bounded values.
fn combinations(labels: &[cardgate::metrics::Label]) -> Vec<Vec<(String, String)>> {
    let mut out = vec![Vec::new()];
    for l in labels {
        let values = l
            .values
            .expect("zero-registered families have bounded labels");
        out = out
            .iter()
            .flat_map(|prefix: &Vec<(String, String)>| {
                values.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push((l.name.to_string(), (*v).to_string()));
                    next
                })
            })
            .collect();
    }
    for c in &mut out {
        c.sort();
    }
    out
}

/// `cardgate_fallbacks_total`, `cardgate_signature_failures_total`,
/// `cardgate_parse_failures_total`, `cardgate_store_errors_total` and the rest did
/// not exist until their first event: panels showed "No data" and `increase()`
/// missed the first fallback or store error. A fresh server lists each bounded
/// series at 0.
#[test]
fn counters_and_histograms_exist_at_zero_before_their_first_event() {
    let server = Server::start();
    let samples = samples(&metrics_text(&server));
    for must in [
        "cardgate_fallbacks_total",
        "cardgate_signature_failures_total",
        "cardgate_parse_failures_total",
        "cardgate_store_errors_total",
    ] {
        assert!(
            FAMILIES.iter().any(|f| f.name == must && f.zero),
            "{must} is not zero-registered"
        );
    }
    let mut missing = Vec::new();
    let mut checked = 0;
    // Families labelled by rule name or version are registered as rules load.
    let bounded = |f: &&cardgate::metrics::Family| f.labels.iter().all(|l| l.values.is_some());
    for f in FAMILIES.iter().filter(|f| f.zero).filter(bounded) {
        for labels in combinations(f.labels) {
            let series = match f.kind {
                Kind::Histogram => format!("{}_count", f.name),
                Kind::Counter | Kind::Gauge => f.name.to_string(),
            };
            checked += 1;
            match samples.get(&(series.clone(), labels.clone())) {
                Some(v) => assert_eq!(*v, 0.0, "{series}{labels:?} on a fresh server"),
                None => missing.push(format!("{series}{labels:?}")),
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {checked} series missing on a fresh server: {missing:#?}",
        missing.len()
    );
}

/// The table the dashboard and alerts are checked against is what the code emits:
/// driven through decisions, a bad signature, an unreadable body, a lifecycle
/// event and a rejected rule reload (the alert once selected `result="failed"`,
/// which reload never emits), every bounded label value on `/metrics` is in
/// `FAMILIES`, and the rejected reload shows as `result="rejected"`.
#[test]
fn emitted_label_values_are_the_ones_dashboards_are_checked_against() {
    let server = Server::start();
    for name in [
        "issuing_authorization.request",
        "issuing_authorization.created",
    ] {
        let (status, body) = server.webhook(&fixture(name), SECRET);
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&body));
    }
    let (status, _) = server.webhook(&fixture("issuing_authorization.request"), "whsec_wrong");
    assert_eq!(status, 400);
    let (status, _) = server.webhook(b"{\"not\": \"an event\"}", SECRET);
    assert_eq!(status, 400);

    std::fs::write(
        server.rules_path(),
        "[[rule]]\nname = \"broken\"\nwhen = '(('\n",
    )
    .expect("write the broken rules file");
    server.signal("HUP");
    let rejected = (
        "cardgate_rule_reloads_total".to_string(),
        vec![("result".to_string(), "rejected".to_string())],
    );
    let give_up = Instant::now() + Duration::from_secs(20);
    let samples = loop {
        let samples = samples(&metrics_text(&server));
        if samples.get(&rejected).copied().unwrap_or(0.0) >= 1.0 {
            break samples;
        }
        assert!(
            Instant::now() < give_up,
            "the broken reload never counted as rejected"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    let parse = ("cardgate_parse_failures_total".to_string(), Vec::new());
    assert_eq!(samples.get(&parse).copied(), Some(1.0));
    for (name, labels) in samples.keys() {
        let family = FAMILIES.iter().find(|f| f.name == name).or_else(|| {
            ["_bucket", "_sum", "_count"].iter().find_map(|s| {
                let base = name.strip_suffix(s)?;
                FAMILIES
                    .iter()
                    .find(|f| f.name == base && f.kind == Kind::Histogram)
            })
        });
        let family = family.unwrap_or_else(|| panic!("{name} is not in metrics::FAMILIES"));
        for (label, value) in labels {
            if label == "le" || label == "quantile" {
                continue;
            }
            let l = family
                .labels
                .iter()
                .find(|l| l.name == label)
                .unwrap_or_else(|| panic!("{name}: label {label} is not in metrics::FAMILIES"));
            if let Some(values) = l.values {
                assert!(
                    values.contains(&value.as_str()),
                    "{name}: {label}=\"{value}\" is emitted but not in metrics::FAMILIES {values:?}"
                );
            }
        }
    }
}

/// A card's first request parses its object, the second parses and remembers it,
/// later ones take it as known; `cardgate_request_card_objects_total` says which.
#[test]
fn a_request_card_object_is_parsed_then_learnt_then_known() {
    let server = Server::start();
    let count = |result: &str| {
        let key = (
            "cardgate_request_card_objects_total".to_string(),
            vec![("result".to_string(), result.to_string())],
        );
        samples(&metrics_text(&server)).get(&key).copied()
    };
    assert_eq!(
        ["parsed", "learnt", "known"].map(count),
        [Some(0.0), Some(0.0), Some(0.0)]
    );
    let mut event: serde_json::Value =
        serde_json::from_slice(&fixture("issuing_authorization.request")).unwrap();
    for i in 0..4 {
        event["id"] = format!("evt_card_objects_{i}").into();
        event["data"]["object"]["id"] = format!("iauth_card_objects_{i}").into();
        let (status, body) = server.webhook(&serde_json::to_vec(&event).unwrap(), SECRET);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    assert_eq!(
        ["parsed", "learnt", "known"].map(count),
        [Some(1.0), Some(1.0), Some(2.0)]
    );
}

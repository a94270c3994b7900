//! Reload under load (issue 5 acceptance): the real binary serves signed
//! authorization requests from several tasks at a steady rate while 1000 rule
//! set reloads go through `POST /v1/rulesets` (with an admin key, no approval rule), alternating two valid sets with
//! some invalid ones. No request may fail or fall back, and every decision must
//! name one of the two valid versions.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]
#![allow(
    clippy::too_many_lines,
    reason = "a scenario test is one story against one running server; split, its steps lose their order"
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const SECRET: &str = "whsec_rules_reload_test";

const SET_A: &str = r#"
[lists]
risky = ["KP", "IR"]

[[rule]]
name = "big-risky"
when = 'amount > 100000 && merchant.country in lists.risky'
action = "decline"
"#;

const SET_B: &str = r#"
[[rule]]
name = "us-shadow"
when = 'merchant.country == "US"'
action = "review"
mode = "shadow"

[[rule]]
name = "software-cap"
when = 'merchant.category_code == "5734" && is_amount_controllable'
action = "cap"
amount = 100000
"#;

const INVALID: [&str; 3] = [
    "[[rule]]\nname = \"x\"\nwhen = 'amount >'\naction = \"decline\"\n",
    "[[rule]]\nname = \"x\"\nwhen = 'merchant.colour == \"red\"'\naction = \"decline\"\n",
    "[[rule]]\nname = \"x\"\nwhen = 'true'\naction = \"explode\"\n",
];

/// The server process; killed when the test ends, whatever happens.
struct Server {
    child: Child,
    base: String,
    /// An admin API key, bootstrapped with `cardgate keys create`.
    key: String,
    /// The server's stderr (its warnings and errors), for a failure's message.
    log: std::path::PathBuf,
}

impl Server {
    /// The server's log without the 100 expected rejections, for a failure's message.
    fn errors(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("rule set rejected"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path) -> Server {
    let config = dir.join("cardgate.toml");
    std::fs::write(&config, "[webhook]\nsecrets = [\"whsec_unused\"]\n").unwrap();
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, SET_A).unwrap();
    let data = dir.join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_cardgate"))
        .args(["keys", "create", "--role", "admin", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let log = dir.join("server.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cardgate"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--rules")
        .arg(&rules)
        .args(["--listen", "127.0.0.1:0"])
        .env("CARDGATE_WEBHOOK_SECRET", SECRET)
        .env("CARDGATE_DATA_DIR", &data)
        .env("CARDGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut server = Server {
        child,
        base: String::new(),
        key,
        log,
    };
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(addr) = line.strip_prefix("cardgate listening on ") {
            server.base = addr.trim().to_string();
            break;
        }
    }
    assert!(!server.base.is_empty(), "server never printed its address");
    server
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

async fn send(
    client: &HttpClient,
    method: &str,
    uri: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let mut req = hyper::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn version(src: &str) -> String {
    cardgate::rules::RuleSet::from_toml_unmetered(src)
        .unwrap()
        .version()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_reloads_under_load_drop_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path());
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    // Ready when /readyz answers 200; poll with a short back-off.
    let mut ready = false;
    for _ in 0..500 {
        let r = client
            .get(format!("{}/readyz", server.base).parse().unwrap())
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ready, "server never became ready");

    let (va, vb) = (version(SET_A), version(SET_B));
    assert_ne!(va, vb);
    let event = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/events/issuing_authorization.request.json"
    ))
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let decisions = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..4 {
        let (client, stop, decisions, event) = (
            client.clone(),
            stop.clone(),
            decisions.clone(),
            event.clone(),
        );
        let uri = format!("{}/webhooks/stripe", server.base);
        let versions = [va.clone(), vb.clone()];
        senders.push(tokio::spawn(async move {
            // Steady rate per task; missed ticks are skipped, not bunched up.
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut problems = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let t = cardgate::clock::Clock::system().now();
                let sig = cardgate::stripe::sign_header(&[SECRET], t, &event);
                let (status, body) = send(
                    &client,
                    "POST",
                    &uri,
                    &[("stripe-signature", sig)],
                    event.clone(),
                )
                .await;
                decisions.fetch_add(1, Ordering::Relaxed);
                let reason = body["metadata"]["reason"].as_str().unwrap_or("");
                let ruleset = body["metadata"]["ruleset"].as_str().unwrap_or("");
                if status != 200
                    || reason.starts_with("fallback:")
                    || !versions.iter().any(|v| v == ruleset)
                {
                    problems.push(format!("{status} {body}"));
                }
            }
            problems
        }));
    }

    let uri = format!("{}/v1/rulesets", server.base);
    let mut rejected = 0;
    let mut live = va.clone();
    for i in 0..1000 {
        let (src, expect_ok) = if i % 10 == 9 {
            (INVALID[(i / 10) % INVALID.len()], false)
        } else if i % 2 == 0 {
            (SET_B, true)
        } else {
            (SET_A, true)
        };
        let auth = [("authorization", format!("Bearer {}", server.key))];
        let (status, body) = send(&client, "POST", &uri, &auth, src.as_bytes().to_vec()).await;
        if expect_ok {
            assert_eq!(status, 200, "reload {i}: {body}\n{}", server.errors());
            assert_eq!(body["previous"].as_str(), Some(live.as_str()), "reload {i}");
            live = body["version"].as_str().unwrap().to_string();
        } else {
            assert_eq!(status, 422, "reload {i}: {body}");
            assert_eq!(body["error"]["code"], "invalid_rules");
            assert!(body["error"]["errors"][0]["line"].as_u64().is_some());
            rejected += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut problems = Vec::new();
    for s in senders {
        problems.extend(s.await.unwrap());
    }
    assert_eq!(rejected, 100);
    assert!(
        decisions.load(Ordering::Relaxed) >= 100,
        "too few decisions to mean anything: {}",
        decisions.load(Ordering::Relaxed)
    );
    assert!(
        problems.is_empty(),
        "{} bad answers, first: {:?}\n{}",
        problems.len(),
        problems.first(),
        server.errors()
    );

    // The reload counters and the live-version gauge are exported.
    let metrics = client
        .get(format!("{}/metrics", server.base).parse().unwrap())
        .await
        .unwrap();
    let text = metrics.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("cardgate_rule_reloads_total{result=\"rejected\"} 100"),
        "{text}"
    );
    assert!(
        text.contains(&format!("cardgate_ruleset_info{{version=\"{live}\"}} 1")),
        "{text}"
    );
    assert!(
        text.contains("cardgate_rule_matches_total{rule=\"us-shadow\",mode=\"shadow\"}"),
        "{text}"
    );
    drop(server);
}

//! Issue 8, `cardgate simulate`: the emulator binary drives the real cardgate
//! binary (both on 127.0.0.1:0) through every authorization lifecycle path, and
//! the results are read back from the emulator (`request_history` reasons) and from
//! cardgate's ledger (`cardgate ledger show`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]
#![allow(
    clippy::too_many_lines,
    reason = "a scenario test is one story against one running server; split, its steps lose their order"
)]
#![allow(
    clippy::float_cmp,
    reason = "metric samples compared here are whole counts, exact in f64"
)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{SECRET, Server};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_cardgate");
const KEY: &str = "sk_test_integration";

/// A running `cardgate simulate serve`; killed on drop.
struct Sim {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sim {
    fn start(webhook_url: &str, extra: &[&str]) -> Sim {
        let mut args = vec!["--webhook-url", webhook_url];
        args.extend_from_slice(extra);
        Sim::start_with(&args)
    }

    fn start_with(extra: &[&str]) -> Sim {
        let mut cmd = Command::new(BIN);
        cmd.args(["simulate", "serve", "--listen", "127.0.0.1:0"])
            .args(["--secret", SECRET, "--api-key", KEY, "--namespace", "it"])
            .args(extra)
            .env("CARDGATE_LOG", "info");
        let (child, addr, stderr) =
            common::spawn_listening(&mut cmd, "cardgate simulator listening on http://");
        Sim {
            child,
            addr,
            stderr,
        }
    }

    /// POSTs a form body with the API key; returns (status, JSON).
    async fn post(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let body = form
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let r = common::send(
            "POST",
            &format!("http://{}{path}", self.addr),
            &[
                ("authorization", format!("Bearer {KEY}")),
                (
                    "content-type",
                    "application/x-www-form-urlencoded".to_string(),
                ),
            ],
            body.into_bytes(),
        )
        .await
        .unwrap();
        (r.status, r.json())
    }

    async fn get(&self, path: &str) -> Value {
        let r = common::send(
            "GET",
            &format!("http://{}{path}", self.addr),
            &[("authorization", format!("Bearer {KEY}"))],
            Vec::new(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()
    }

    /// A cardholder and card; the card has `limits` (form pairs under
    /// `spending_controls`) and returns its id.
    async fn card(&self, controls: &[(&str, &str)]) -> String {
        let (s, holder) = self
            .post("/v1/issuing/cardholders", &[("name", "Dana Reyes")])
            .await;
        assert_eq!(s, 200, "{holder}");
        let mut form = vec![("cardholder", holder["id"].as_str().unwrap())];
        form.extend_from_slice(controls);
        let (s, card) = self.post("/v1/issuing/cards", &form).await;
        assert_eq!(s, 200, "{card}");
        card["id"].as_str().unwrap().to_string()
    }

    async fn authorize(&self, card: &str, amount: i64, extra: &[(&str, &str)]) -> Value {
        let amount = amount.to_string();
        let mut form = vec![("card", card), ("amount", amount.as_str())];
        form.extend_from_slice(extra);
        let (s, a) = self
            .post("/v1/test_helpers/issuing/authorizations", &form)
            .await;
        assert_eq!(s, 200, "{a}");
        a
    }

    async fn helper(&self, id: &str, verb: &str, form: &[(&str, &str)]) -> (u16, Value) {
        self.post(
            &format!("/v1/test_helpers/issuing/authorizations/{id}/{verb}"),
            form,
        )
        .await
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn reasons(auth: &Value) -> Vec<String> {
    auth["request_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["reason"].as_str().unwrap().to_string())
        .collect()
}

/// cardgate with a data dir the test can read with `ledger show`.
fn cardgate(dir: &Path, extra_config: &str) -> Server {
    let config = format!("{}{extra_config}", common::base_config());
    Server::start(&config, &[("CARDGATE_DATA_DIR", dir.to_str().unwrap())])
}

/// The ledger line of `auth` in `cardgate ledger show`: (status, held, spend).
fn ledger(dir: &Path, card: &str, auth: &str) -> (String, i64, i64) {
    let out = Command::new(BIN)
        .args(["ledger", "show", "--card", card, "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let line = text
        .lines()
        .find(|l| l.contains(auth))
        .unwrap_or_else(|| panic!("{auth} not in ledger:\n{text}"));
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} not in {line}"))
            .to_string()
    };
    (
        field("status="),
        field("held=").parse().unwrap(),
        field("spend=").parse().unwrap(),
    )
}

fn data_dir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("data");
    (t, p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lifecycle_path_through_cardgate() {
    let (_t, dir) = data_dir();
    let server = cardgate(&dir, "");
    server.ready().await;
    // A window no loaded machine can miss: this test is about outcomes, not time.
    let sim = Sim::start(&server.url("/webhooks/stripe"), &["--window-ms", "30000"]);
    let card = sim
        .card(&[
            ("spending_controls[spending_limits][0][amount]", "20000"),
            ("spending_controls[spending_limits][0][interval]", "daily"),
            (
                "spending_controls[blocked_categories][0]",
                "betting_casino_gambling",
            ),
        ])
        .await;

    // Approve, then capture in full.
    let a = sim.authorize(&card, 4250, &[]).await;
    let id = a["id"].as_str().unwrap();
    assert_eq!(
        (a["approved"].clone(), a["status"].clone()),
        (json!(true), json!("pending"))
    );
    assert_eq!(reasons(&a), ["webhook_approved"]);
    assert_eq!(ledger(&dir, &card, id), ("pending".into(), 4250, 4250));
    let (s, a) = sim.helper(id, "capture", &[]).await;
    assert_eq!(s, 200, "{a}");
    assert_eq!(a["status"], "closed");
    assert_eq!(a["transactions"][0]["amount"], -4250);
    assert_eq!(ledger(&dir, &card, id), ("closed".into(), 0, 4250));

    // Declined by a blocked category.
    let d = sim
        .authorize(
            &card,
            1000,
            &[("merchant_data[category]", "betting_casino_gambling")],
        )
        .await;
    assert_eq!(
        (d["approved"].clone(), d["status"].clone()),
        (json!(false), json!("closed"))
    );
    assert_eq!(reasons(&d), ["webhook_declined"]);
    let (s, err) = sim.helper(d["id"].as_str().unwrap(), "capture", &[]).await;
    assert_eq!(
        (s, err["error"]["type"].clone()),
        (400, json!("invalid_request_error"))
    );

    // Partial approval: 20 000 daily, 4 250 spent, 20 000 asked, controllable.
    let p = sim
        .authorize(&card, 20000, &[("is_amount_controllable", "true")])
        .await;
    let pid = p["id"].as_str().unwrap().to_string();
    assert_eq!(
        (p["approved"].clone(), p["amount"].clone()),
        (json!(true), json!(15750))
    );
    assert_eq!(reasons(&p), ["webhook_approved"]);
    // The limit is now full: a non-controllable request declines.
    let full = sim.authorize(&card, 100, &[]).await;
    assert_eq!(reasons(&full), ["webhook_declined"]);
    // Partial capture closes with less than held: the rest is released.
    let (_, p) = sim
        .helper(&pid, "capture", &[("capture_amount", "10000")])
        .await;
    assert_eq!(p["status"], "closed");
    assert_eq!(ledger(&dir, &card, &pid), ("closed".into(), 0, 10000));

    // Reversal: part, then the rest.
    let r = sim.authorize(&card, 3000, &[]).await;
    let rid = r["id"].as_str().unwrap().to_string();
    let (_, r) = sim
        .helper(&rid, "reverse", &[("reverse_amount", "1000")])
        .await;
    assert_eq!(
        (r["status"].clone(), r["amount"].clone()),
        (json!("pending"), json!(2000))
    );
    assert_eq!(ledger(&dir, &card, &rid), ("pending".into(), 2000, 2000));
    let (_, r) = sim.helper(&rid, "reverse", &[]).await;
    assert_eq!(
        (r["status"].clone(), r["amount"].clone()),
        (json!("reversed"), json!(0))
    );
    assert_eq!(ledger(&dir, &card, &rid), ("reversed".into(), 0, 0));
    let (s, _) = sim.helper(&rid, "reverse", &[]).await;
    assert_eq!(s, 400);

    // Expiry releases the hold.
    let e = sim.authorize(&card, 1500, &[]).await;
    let eid = e["id"].as_str().unwrap().to_string();
    let (_, e) = sim.helper(&eid, "expire", &[]).await;
    assert_eq!(e["status"], "expired");
    assert_eq!(ledger(&dir, &card, &eid), ("expired".into(), 0, 0));

    // Increment: approved while it fits, declined once it does not.
    let i = sim.authorize(&card, 2000, &[]).await;
    let iid = i["id"].as_str().unwrap().to_string();
    let (s, i) = sim
        .helper(&iid, "increment", &[("increment_amount", "1000")])
        .await;
    assert_eq!(s, 200, "{i}");
    assert_eq!(i["amount"], 3000);
    assert_eq!(reasons(&i), ["webhook_approved", "webhook_approved"]);
    assert_eq!(ledger(&dir, &card, &iid), ("pending".into(), 3000, 3000));
    // 4250 + 10000 + 3000 = 17250 spent of 20000: 5000 more does not fit.
    let (_, i) = sim
        .helper(&iid, "increment", &[("increment_amount", "5000")])
        .await;
    assert_eq!(i["amount"], 3000);
    assert_eq!(
        reasons(&i),
        ["webhook_approved", "webhook_approved", "webhook_declined"]
    );
    assert_eq!(ledger(&dir, &card, &iid), ("pending".into(), 3000, 3000));
    // Over-capture (a tip) counts in full.
    let (_, i) = sim
        .helper(&iid, "capture", &[("capture_amount", "3500")])
        .await;
    assert_eq!(i["status"], "closed");
    assert_eq!(ledger(&dir, &card, &iid), ("closed".into(), 0, 3500));

    // The emulator's view agrees: list by card.
    let list = sim
        .get(&format!("/v1/issuing/authorizations?card={card}"))
        .await;
    assert_eq!(list["data"].as_array().unwrap().len(), 7);
    // cardgate saw every lifecycle event and applied them.
    let metrics = common::get(&server.url("/metrics")).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        common::metric(
            &text,
            "cardgate_lifecycle_events_total{type=\"issuing_transaction.created\",result=\"applied\"}"
        ) >= 3.0,
        "{text}"
    );
    assert!(!sim.stderr.lock().unwrap().contains("not delivered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_cardgate_gets_the_timeout_fallback() {
    let (_t, dir) = data_dir();
    // cardgate sleeps 1 s before deciding; the emulator's window is 200 ms, so
    // the answer cannot arrive in time however fast the machine is.
    let server = cardgate(&dir, "[fault_injection]\ndecision_delay_ms = 1000\n");
    server.ready().await;
    let url = server.url("/webhooks/stripe");
    let sim = Sim::start(&url, &["--window-ms", "200"]);
    let card = sim.card(&[]).await;
    let a = sim.authorize(&card, 4250, &[]).await;
    assert_eq!(reasons(&a), ["webhook_timeout"]);
    assert_eq!(
        (a["approved"].clone(), a["status"].clone()),
        (json!(false), json!("closed"))
    );
    // Whatever cardgate decided late, the created event tells its ledger the truth.
    let id = a["id"].as_str().unwrap();
    let t = std::time::Instant::now();
    loop {
        let (status, held, _) = ledger(&dir, &card, id);
        if status == "closed" {
            assert_eq!(held, 0);
            break;
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    drop(sim);
    let approving = Sim::start(
        &url,
        &["--window-ms", "200", "--timeout-fallback", "approve"],
    );
    let card = approving.card(&[]).await;
    let a = approving.authorize(&card, 700, &[]).await;
    assert_eq!(reasons(&a), ["webhook_timeout"]);
    assert_eq!(a["approved"], true);
}

/// A one-route HTTP server that answers every request with `response`.
fn garbage_server(response: &'static str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            std::thread::spawn(move || {
                use std::io::Write;
                let mut buf = vec![0u8; 65536];
                let mut seen = Vec::new();
                // Read the head and the declared body, then answer.
                loop {
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    seen.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&seen).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            break;
                        }
                    }
                }
                let _ = s.write_all(response.as_bytes());
            });
        }
    });
    format!("http://{addr}/webhooks/stripe")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_answers_and_bad_signatures_are_webhook_errors() {
    let url = garbage_server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n\
         connection: close\r\n\r\nhello",
    );
    let sim = Sim::start(&url, &[]);
    let card = sim.card(&[]).await;
    let a = sim.authorize(&card, 4250, &[]).await;
    assert_eq!(reasons(&a), ["webhook_error"]);
    assert_eq!(
        a["request_history"][0]["reason_message"],
        "the response body is not JSON"
    );
    assert_eq!(a["approved"], false);
    drop(sim);

    // A real cardgate with another secret refuses the signature (400).
    let (_t, dir) = data_dir();
    let server = cardgate(&dir, "");
    server.ready().await;
    let mut child = Command::new(BIN)
        .args([
            "simulate",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--webhook-url",
        ])
        .arg(server.url("/webhooks/stripe"))
        .args(["--secret", "whsec_not_the_right_one", "--api-key", KEY])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let wrong = Sim {
        addr: line
            .trim()
            .trim_start_matches("cardgate simulator listening on http://")
            .to_string(),
        child,
        stderr: Arc::new(Mutex::new(String::new())),
    };
    let card = wrong.card(&[]).await;
    let a = wrong.authorize(&card, 4250, &[]).await;
    assert_eq!(reasons(&a), ["webhook_error"]);
    assert_eq!(
        a["request_history"][0]["reason_message"],
        "the endpoint answered HTTP 400"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_api_refuses_bad_calls_stripe_style() {
    use base64::Engine as _;
    let url = garbage_server("HTTP/1.1 500 Oops\r\ncontent-length: 0\r\n\r\n");
    let sim = Sim::start(&url, &[]);
    // No key.
    let r = common::send(
        "POST",
        &format!("http://{}/v1/issuing/cardholders", sim.addr),
        &[],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "api_key_invalid");
    // Basic auth like `curl -u KEY:` works.
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"));
    let r = common::send(
        "POST",
        &format!("http://{}/v1/issuing/cardholders", sim.addr),
        &[("authorization", format!("Basic {basic}"))],
        b"name=Jo".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    for (path, form, status, param) in [
        (
            "/v1/test_helpers/issuing/authorizations",
            vec![("amount", "5")],
            400,
            "card",
        ),
        (
            "/v1/test_helpers/issuing/authorizations",
            vec![("card", "ic_missing"), ("amount", "5")],
            404,
            "card",
        ),
        (
            "/v1/issuing/cards",
            vec![("cardholder", "ich_x")],
            404,
            "cardholder",
        ),
        (
            "/v1/test_helpers/issuing/authorizations/iauth_x/increment",
            vec![],
            400,
            "increment_amount",
        ),
        (
            "/v1/test_helpers/issuing/authorizations/iauth_x/capture",
            vec![("capture_amount", "ten")],
            400,
            "capture_amount",
        ),
    ] {
        let (s, body) = sim.post(path, &form).await;
        assert_eq!(
            (s, body["error"]["param"].clone()),
            (status, json!(param)),
            "{path} {body}"
        );
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    let (s, _) = sim.post("/v1/nothing/here", &[]).await;
    assert_eq!(s, 404);
    // A 500 from the endpoint is a webhook_error, and the account fallback applies.
    let card = sim.card(&[]).await;
    let a = sim.authorize(&card, 10, &[]).await;
    assert_eq!(reasons(&a), ["webhook_error"]);
    // Approve after the window: refused like Stripe.
    let id = a["id"].as_str().unwrap();
    let (s, body) = sim
        .post(&format!("/v1/issuing/authorizations/{id}/approve"), &[])
        .await;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (400, json!("authorization_not_pending"))
    );
}

const SCENARIO: &str = r#"
days = 4
cardholders = 3
cards_per_cardholder = 2
concurrency = 3
purchases_per_card_per_day = [0, 4]
[card_controls]
blocked_categories = ["betting_casino_gambling"]
spending_limits = [{ amount = 8000, interval = "per_authorization" }, { amount = 15000, interval = "daily" }]
[cardholder_controls]
spending_limits = [{ amount = 40000, interval = "weekly" }]
[fates]
capture = 0.4
partial_capture = 0.1
over_capture = 0.1
reverse = 0.1
partial_reverse = 0.1
expire = 0.1
increment = 0.1
[[merchant]]
name = "GREEN LEAF MARKET"
category = "grocery_stores_supermarkets"
amount = [300, 12000]
weight = 3
controllable = 0.5
[[merchant]]
name = "LUCKYSTAR CASINO"
category = "betting_casino_gambling"
amount = [100, 900]
[[merchant]]
name = "HOTEL ROYAL"
category = "hotels_motels_and_resorts"
amount = [4000, 9000]
"#;

/// Runs the scenario against a fresh cardgate; returns (exit code, stdout).
fn run_scenario(seed: &str, rules: Option<&str>) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, SCENARIO).unwrap();
    let rules_path = dir.path().join("rules.toml");
    std::fs::write(&rules_path, rules.unwrap_or("")).unwrap();
    let server = Server::start(
        &common::base_config(),
        &[
            (
                "CARDGATE_DATA_DIR",
                dir.path().join("data").to_str().unwrap(),
            ),
            ("CARDGATE_RULES", rules_path.to_str().unwrap()),
        ],
    );
    let out = Command::new(BIN)
        .args(["simulate", "run"])
        .arg(&scenario)
        .args(["--webhook-url", &server.url("/webhooks/stripe")])
        .args(["--secret", SECRET, "--seed", seed])
        // No request may time out however loaded the machine: same seed, same summary.
        .args(["--window-ms", "60000"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("purchases"),
        "no progress on stderr: {stderr}"
    );
    (out.status.code().unwrap_or(-1), stdout)
}

/// The summary without the timing lines, which are the only ones allowed to vary.
fn outcomes(stdout: &str) -> String {
    stdout
        .lines()
        .filter(|l| !l.starts_with("latency") && !l.starts_with("throughput"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn scenario_runs_are_deterministic_and_agree_with_the_oracle() {
    let (code, first) = run_scenario("7", None);
    assert_eq!(code, 0, "{first}");
    assert!(first.contains("oracle: 0 disagreements"), "{first}");
    assert!(first.contains("delivery: 0 lifecycle events not accepted, 0 emulator errors"));
    // Every path was exercised: limits, blocked category, and each lifecycle step.
    for needle in [
        "spending_limit",
        "category_blocked",
        "webhook_declined",
        "partial ",
        "expiries",
        "reversals",
        "latency (request webhook round trip): p50",
    ] {
        assert!(first.contains(needle), "{needle} not in\n{first}");
    }
    let (_, second) = run_scenario("7", None);
    assert_eq!(outcomes(&first), outcomes(&second));
    let (_, other) = run_scenario("8", None);
    assert_ne!(outcomes(&first), outcomes(&other));
}

#[test]
fn the_oracle_reports_answers_the_limits_do_not_explain() {
    // A rule the oracle knows nothing of: every hotel declines.
    let rules = r#"
[[rule]]
name = "no-hotels"
when = 'merchant.category == "hotels_motels_and_resorts"'
action = "decline"
"#;
    let (code, out) = run_scenario("7", Some(rules));
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("oracle: 0 disagreements"), "{out}");
    assert!(out.contains("expected Approve"), "{out}");
    assert!(out.contains("cardgate rule:no-hotels"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_mode_decides_through_approve_and_decline_calls() {
    // The emulator starts first (cardgate needs its address as the API base), and
    // learns cardgate's webhook URL through POST /v1/webhook_endpoints.
    let sim = Sim::start_with(&["--window-ms", "30000"]);
    let card_before = sim.post("/v1/issuing/cardholders", &[]).await;
    assert_eq!(card_before.0, 200);
    let (_t, dir) = data_dir();
    let legacy = format!(
        "mode = \"legacy\"\n[legacy]\napi_base = \"http://{}\"\n",
        sim.addr
    );
    let config = format!("{}{legacy}", common::base_config());
    let server = Server::start(
        &config,
        &[
            ("CARDGATE_DATA_DIR", dir.to_str().unwrap()),
            ("CARDGATE_STRIPE_API_KEY", KEY),
        ],
    );
    server.ready().await;
    let (s, _) = sim
        .post(
            "/v1/webhook_endpoints",
            &[("url", &server.url("/webhooks/stripe"))],
        )
        .await;
    assert_eq!(s, 200);
    let card = sim
        .card(&[
            ("spending_controls[spending_limits][0][amount]", "10000"),
            ("spending_controls[spending_limits][0][interval]", "daily"),
            (
                "spending_controls[blocked_categories][0]",
                "betting_casino_gambling",
            ),
        ])
        .await;

    let a = sim.authorize(&card, 4250, &[]).await;
    assert_eq!(reasons(&a), ["webhook_approved"]);
    assert_eq!(
        (a["approved"].clone(), a["amount"].clone()),
        (json!(true), json!(4250))
    );
    // The API call's metadata lands on the authorization.
    assert_eq!(a["metadata"]["reason"], "approved");
    assert_eq!(ledger(&dir, &card, a["id"].as_str().unwrap()).1, 4250);

    let p = sim
        .authorize(&card, 9000, &[("is_amount_controllable", "true")])
        .await;
    assert_eq!(reasons(&p), ["webhook_approved"]);
    assert_eq!(p["amount"], 5750);
    assert_eq!(p["metadata"]["reason"], "spending_limit");
    assert_eq!(p["metadata"]["rule"], "card.daily");

    let d = sim
        .authorize(
            &card,
            100,
            &[("merchant_data[category]", "betting_casino_gambling")],
        )
        .await;
    assert_eq!(reasons(&d), ["webhook_declined"]);
    assert_eq!(d["metadata"]["reason"], "category_blocked");

    let metrics = common::get(&server.url("/metrics")).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert_eq!(
        common::metric(&text, "cardgate_legacy_calls_total{result=\"ok\"}"),
        3.0,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_calls_after_the_window_are_rejected() {
    let sim = Sim::start_with(&["--window-ms", "200"]);
    let (_t, dir) = data_dir();
    // cardgate decides after 1 s: its call arrives after the 200 ms window.
    let config = format!(
        "{}mode = \"legacy\"\n[legacy]\napi_base = \"http://{}\"\n[fault_injection]\ndecision_delay_ms = 1000\n",
        common::base_config(),
        sim.addr
    );
    let server = Server::start(
        &config,
        &[
            ("CARDGATE_DATA_DIR", dir.to_str().unwrap()),
            ("CARDGATE_STRIPE_API_KEY", KEY),
        ],
    );
    server.ready().await;
    sim.post(
        "/v1/webhook_endpoints",
        &[("url", &server.url("/webhooks/stripe"))],
    )
    .await;
    let card = sim.card(&[]).await;
    let a = sim.authorize(&card, 4250, &[]).await;
    assert_eq!(reasons(&a), ["webhook_timeout"]);
    assert_eq!(a["approved"], false);
    let t = std::time::Instant::now();
    loop {
        let metrics = common::get(&server.url("/metrics")).await.unwrap();
        let text = String::from_utf8_lossy(&metrics.body).to_string();
        if common::metric(&text, "cardgate_legacy_calls_total{result=\"rejected\"}") == 1.0 {
            break;
        }
        assert!(t.elapsed() < std::time::Duration::from_secs(30), "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The authorization stayed as the window left it.
    let after = sim
        .get(&format!(
            "/v1/issuing/authorizations/{}",
            a["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(after["approved"], false);
    assert!(
        server
            .stderr
            .lock()
            .unwrap()
            .contains("authorization_not_pending")
    );
}

/// Issue 17: the fraud-challenge flow end to end. cardgate's `challenge` rule
/// declines with `send_fraud_challenges`; the emulator records the SMS challenge;
/// the cardholder says YES through the test helper; the retry at the same
/// merchant arrives `verified_by_fraud_challenge: true` and is approved.
#[tokio::test]
async fn a_challenged_purchase_is_approved_after_the_cardholder_verifies() {
    let (t, dir) = data_dir();
    let rules = t.path().join("challenge-rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"sms-over-100\"\nwhen = 'amount > 10000'\naction = \"challenge\"\n",
    )
    .unwrap();
    let server = Server::start(
        &common::base_config(),
        &[
            ("CARDGATE_DATA_DIR", dir.to_str().unwrap()),
            ("CARDGATE_RULES", rules.to_str().unwrap()),
        ],
    );
    server.ready().await;
    let sim = Sim::start(
        &server.url("/webhooks/stripe"),
        &["--window-ms", "30000", "--api-version", "2025-11-17.clover"],
    );
    let card = sim.card(&[]).await;

    let first = sim.authorize(&card, 15_000, &[]).await;
    assert_eq!(first["approved"], false, "{first}");
    assert_eq!(reasons(&first), ["webhook_declined"]);
    assert_eq!(first["fraud_challenges"][0]["status"], "pending");
    assert_eq!(first["metadata"], json!({}), "a challenge sets no metadata");
    let id = first["id"].as_str().unwrap();

    // Unverified, a second try is challenged again.
    let again = sim.authorize(&card, 15_000, &[]).await;
    assert_eq!(again["approved"], false);
    assert_eq!(again["verified_by_fraud_challenge"], Value::Null);

    let (s, answered) = sim
        .post(
            &format!("/v1/test_helpers/issuing/authorizations/{id}/fraud_challenges/respond"),
            &[("confirmed", "true")],
        )
        .await;
    assert_eq!(s, 200, "{answered}");
    assert_eq!(answered["fraud_challenges"][0]["status"], "verified");
    let (s, err) = sim
        .post(
            &format!("/v1/test_helpers/issuing/authorizations/{id}/fraud_challenges/respond"),
            &[("confirmed", "true")],
        )
        .await;
    assert_eq!(s, 400, "{err}");

    let retry = sim.authorize(&card, 15_000, &[]).await;
    assert_eq!(retry["verified_by_fraud_challenge"], true, "{retry}");
    assert_eq!(
        (retry["approved"].clone(), retry["status"].clone()),
        (json!(true), json!("pending"))
    );
    assert_eq!(reasons(&retry), ["webhook_approved"]);
    assert_eq!(
        ledger(&dir, &card, retry["id"].as_str().unwrap()),
        ("pending".into(), 15_000, 15_000)
    );
    // The challenged ones held nothing.
    assert_eq!(ledger(&dir, &card, id).1, 0);
}

//! Issue 14: three `cardgate serve` processes on one PostgreSQL database are
//! replicas of one service. Each test starts the real binary with
//! `CARDGATE_DATABASE_URL` (a fresh database owned by an ordinary role on the
//! throwaway server of `tests/common/postgres.rs`) and signed webhooks over
//! HTTP/1.1 on 127.0.0.1: no overspend under a burst spread over replicas, a
//! duplicate delivery held once and answered alike, lifecycle events on one
//! replica releasing a hold another made, `kill -9` of a replica mid-burst
//! losing no answered approval, the database going down and coming back, and a
//! replica started while the database is down.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

mod common;

use common::raw::{self, CARD, approved_amount, auth_request, card_daily_total, fixture, get, now};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SECRET: &str = "whsec_replica_test_secret";
const BIN: &str = env!("CARGO_BIN_EXE_cardgate");

// === replicas ===

struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts one replica on `url`; `webhook` adds lines to its `[webhook]` section.
/// The data directory it is given must stay untouched.
fn start(dir: &Path, url: &str, webhook: &str) -> Replica {
    listening(spawn(dir, url, webhook, Stdio::inherit()))
}

/// Spawns `cardgate serve` on `url` (see [`start`]) without waiting for it.
fn spawn(dir: &Path, url: &str, webhook: &str, stderr: Stdio) -> Child {
    let config = dir.join("cardgate.toml");
    std::fs::write(
        &config,
        format!("[webhook]\nsecrets = [\"{SECRET}\"]\n{webhook}\n[store]\ndurability = \"sync\"\n"),
    )
    .unwrap();
    let rules = dir.join("rules.toml");
    std::fs::write(&rules, "").unwrap();
    let payment_rules = dir.join("payment_rules.toml");
    std::fs::write(&payment_rules, "").unwrap();
    Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("CARDGATE_DATABASE_URL", url)
        .env("CARDGATE_DATA_DIR", dir.join("data"))
        .env("CARDGATE_RULES", &rules)
        .env("CARDGATE_PAYMENT_RULES", &payment_rules)
        .env("CARDGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// Reads a spawned replica's banner (blocking until it has bound its port) and
/// waits until it is ready.
fn listening(mut child: Child) -> Replica {
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("cardgate listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    let replica = Replica { child, addr };
    wait_for(Duration::from_secs(30), "ready", || {
        get(replica.addr, "/readyz").0 == 200
    });
    replica
}

/// Three replicas of one service on `url`, each in its own directory.
fn three(dir: &Path, url: &str) -> Vec<Replica> {
    (0..3)
        .map(|i| {
            let d = dir.join(format!("replica{i}"));
            std::fs::create_dir_all(&d).unwrap();
            start(&d, url, "")
        })
        .collect()
}

/// Polls `cond` until it holds; fails after `limit`.
fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "not {what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// === HTTP ===

/// Sends an event signed with this file's secret; `None` when the connection
/// failed (replica killed).
fn post(addr: SocketAddr, event: &Value) -> Option<(u16, Value)> {
    raw::post(addr, SECRET, event)
}

// === payloads ===

/// `issuing_authorization.updated`: authorization `id` (one approved request of
/// `held`) now `status` with `amount` left.
fn auth_updated(evt: &str, id: &str, created: i64, status: &str, amount: i64, held: i64) -> Value {
    let mut e = fixture("issuing_authorization.updated.closed.json");
    e["id"] = json!(evt);
    e["created"] = json!(now());
    let o = &mut e["data"]["object"];
    o["id"] = json!(id);
    o["created"] = json!(created);
    o["status"] = json!(status);
    o["amount"] = json!(amount);
    o["request_history"][0]["amount"] = json!(held);
    o["request_history"][0]["merchant_amount"] = json!(held);
    e
}

/// `cardgate ledger show` on the database at `url` (a CLI beside the replicas).
fn show(url: &str, at: i64) -> String {
    let out = Command::new(BIN)
        .args(["ledger", "show", "--card", CARD, "--at", &at.to_string()])
        .args(["--config", "/nonexistent/cardgate.toml"])
        .env("CARDGATE_DATABASE_URL", url)
        .env_remove("CARDGATE_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One test of this file at a time: each runs three replicas and a burst, and on
/// a small machine two bursts at once starve each other past the deadline.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn database() -> Option<(Arc<cardgate::store::postgres::testing::TestServer>, String)> {
    common::postgres::database()
}

// === tests ===

#[test]
fn no_overspend_under_a_concurrent_burst_spread_over_three_replicas() {
    const LIMIT: i64 = 10_000;
    let _serial = serial();
    let Some((_server, url)) = database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let replicas = three(dir.path(), &url);
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let handles: Vec<_> = (0..9usize)
        .map(|t| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                let mut sum = 0;
                for i in 0..8usize {
                    let amount = 700 + 13 * i64::try_from(i).unwrap();
                    let e = auth_request(&format!("iauth_c{t}_{i}"), amount, LIMIT, i % 2 == 0);
                    let (status, body) = post(addrs[(t + i) % 3], &e).unwrap();
                    assert_eq!(status, 200, "{body}");
                    sum += approved_amount(&body, amount);
                }
                sum
            })
        })
        .collect();
    let approved: i64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(approved <= LIMIT, "approved {approved} over {LIMIT}");
    // 72 requests of ≥700 against 10 000: the limit must actually fill.
    assert!(approved > LIMIT - 700, "approved only {approved}");
    assert_eq!(card_daily_total(&show(&url, now())), approved);
    // With a URL nothing is written to the data directory.
    for i in 0..3 {
        assert!(!dir.path().join(format!("replica{i}/data")).exists());
    }
}

#[test]
fn a_duplicate_delivery_to_two_replicas_holds_once_and_both_answer_the_same() {
    let _serial = serial();
    let Some((_server, url)) = database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let replicas = three(dir.path(), &url);
    let event = auth_request("iauth_dup", 7000, 10_000, true);
    // The same delivery to two replicas at once, then late to the third (whose
    // own snapshot already shows the hold and would decline it).
    let answers: Vec<(u16, Value)> = [replicas[0].addr, replicas[1].addr]
        .map(|addr| {
            let e = event.clone();
            std::thread::spawn(move || post(addr, &e).unwrap())
        })
        .into_iter()
        .map(|h| h.join().unwrap())
        .chain(std::iter::once(post(replicas[2].addr, &event).unwrap()))
        .collect();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(body["approved"], json!(true), "{answers:?}");
        assert_eq!(
            body.get("amount"),
            answers[0].1.get("amount"),
            "{answers:?}"
        );
    }
    assert_eq!(card_daily_total(&show(&url, now())), 7000);
    // Held once: exactly 3000 of room is left.
    let (_, rest) = post(
        replicas[1].addr,
        &auth_request("iauth_rest", 5000, 10_000, true),
    )
    .unwrap();
    assert_eq!(
        (rest["approved"].clone(), rest["amount"].clone()),
        (json!(true), json!(3000)),
        "{rest}"
    );
}

#[test]
fn lifecycle_events_on_one_replica_adjust_the_hold_every_replica_sees() {
    let _serial = serial();
    let Some((_server, url)) = database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let replicas = three(dir.path(), &url);
    let first = auth_request("iauth_lc1", 6000, 10_000, false);
    let created = first["data"]["object"]["created"].as_i64().unwrap();
    let (_, a) = post(replicas[0].addr, &first).unwrap();
    assert_eq!(a["approved"], json!(true), "{a}");
    // The hold made on replica 0 declines on replica 1…
    let (_, b) = post(
        replicas[1].addr,
        &auth_request("iauth_lc2", 6000, 10_000, false),
    )
    .unwrap();
    assert_eq!(b["approved"], json!(false), "{b}");
    // …until the merchant voids it, reported to replica 2 (twice: idempotent)…
    let reversed = auth_updated("evt_lc_rev", "iauth_lc1", created, "reversed", 0, 6000);
    for _ in 0..2 {
        let (status, body) = post(replicas[2].addr, &reversed).unwrap();
        assert_eq!((status, body), (200, json!({"received": true})));
    }
    assert_eq!(card_daily_total(&show(&url, now())), 0);
    // …after which replica 1 approves what it declined.
    let (_, c) = post(
        replicas[1].addr,
        &auth_request("iauth_lc3", 6000, 10_000, false),
    )
    .unwrap();
    assert_eq!(c["approved"], json!(true), "{c}");
    assert_eq!(card_daily_total(&show(&url, now())), 6000);
    // The three decisions, logged by three replicas (in the background: the
    // holds were committed before the answers), replay from the database.
    let backtest = || {
        let out = Command::new(BIN)
            .args(["backtest", "--rules"])
            .arg(dir.path().join("replica0/rules.toml"))
            .arg("--config")
            .arg(dir.path().join("replica0/cardgate.toml"))
            .env("CARDGATE_DATABASE_URL", &url)
            .env_remove("CARDGATE_DATA_DIR")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    wait_for(Duration::from_secs(10), "3 decisions replayed", || {
        backtest().contains("replayed 3 decisions")
    });
}

#[test]
fn kill_9_of_one_replica_mid_burst_loses_no_answered_approval() {
    let _serial = serial();
    let Some((_server, url)) = database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut replicas = three(dir.path(), &url);
    let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..6)
        .map(|t| {
            let (stop, answered, addrs) = (stop.clone(), answered.clone(), addrs.clone());
            std::thread::spawn(move || {
                let mut approved = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("iauth_k{t}_{i}");
                    i += 1;
                    // Threads 0 and 1 talk to the replica that is killed.
                    let addr = addrs[t % 3];
                    match post(addr, &auth_request(&id, 100, 100_000_000, false)) {
                        Some((200, body)) if body["approved"] == json!(true) => {
                            approved.push(id);
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(_) => {}
                        None if t % 3 == 0 => break,
                        None => panic!("surviving replica failed"),
                    }
                }
                approved
            })
        })
        .collect();
    wait_for(Duration::from_mins(1), "40 approvals", || {
        answered.load(Ordering::Relaxed) >= 40
    });
    replicas[0].child.kill().unwrap(); // SIGKILL
    replicas[0].child.wait().unwrap();
    // The others keep answering after the kill.
    let after = answered.load(Ordering::Relaxed);
    wait_for(Duration::from_secs(30), "approvals after the kill", || {
        answered.load(Ordering::Relaxed) >= after + 20
    });
    stop.store(true, Ordering::Relaxed);
    let approved: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let report = show(&url, now());
    for id in &approved {
        assert!(
            report.contains(id.as_str()),
            "approved {id} lost after kill -9"
        );
    }
    assert!(card_daily_total(&report) >= 100 * i64::try_from(approved.len()).unwrap());
    drop(replicas);
}

#[test]
fn database_down_and_back_fallback_answers_readyz_503_and_recovery_without_restart() {
    let _serial = serial();
    let Some(server) = cardgate::store::postgres::testing::private().unwrap() else {
        return;
    };
    let url = server.database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path(), &url, "");
    let addr = replica.addr;
    let (_, ok) = post(addr, &auth_request("iauth_up1", 500, 100_000, false)).unwrap();
    assert_eq!(ok["approved"], json!(true), "{ok}");

    server.stop().unwrap();
    // Every signed request is still answered inside the deadline, with the
    // configured fallback (decline), never a 5xx.
    for i in 0..3 {
        let t = Instant::now();
        let (status, body) = post(
            addr,
            &auth_request(&format!("iauth_down{i}"), 500, 100_000, false),
        )
        .unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["approved"], json!(false), "{body}");
        assert!(
            body["metadata"]["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("fallback")),
            "{body}"
        );
        assert!(
            t.elapsed() < Duration::from_millis(1900),
            "{:?}",
            t.elapsed()
        );
    }
    // A lifecycle event that cannot be recorded asks Stripe to deliver it again.
    let created = now();
    let (status, body) = post(
        addr,
        &auth_updated("evt_down_rev", "iauth_up1", created, "reversed", 0, 500),
    )
    .unwrap();
    assert_eq!(status, 503, "{body}");
    wait_for(Duration::from_secs(5), "503 from /readyz", || {
        get(addr, "/readyz").0 == 503
    });

    server.restart().unwrap();
    wait_for(Duration::from_secs(10), "ready again", || {
        get(addr, "/readyz").0 == 200
    });
    let (_, back) = post(addr, &auth_request("iauth_back", 500, 100_000, false)).unwrap();
    assert_eq!(back["approved"], json!(true), "{back}");
    // The redelivered lifecycle event is recorded now.
    let (status, _) = post(
        addr,
        &auth_updated("evt_down_rev", "iauth_up1", created, "reversed", 0, 500),
    )
    .unwrap();
    assert_eq!(status, 200);
    drop(replica);
}

#[test]
fn a_replica_started_while_the_database_is_down_waits_and_serves_once_it_is_back() {
    let _serial = serial();
    let Some(server) = cardgate::store::postgres::testing::private().unwrap() else {
        return;
    };
    let url = server.database().unwrap();
    server.stop().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn(dir.path(), &url, "", Stdio::piped());
    // Its log, line by line, on a thread: the test waits on what the replica
    // says, never on the clock.
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let waiting = |n: usize| {
        let mut seen = 0;
        while seen < n {
            let line = lines.recv_timeout(Duration::from_secs(30)).unwrap();
            if line.contains("shared store unreachable at start") {
                seen += 1;
            }
        }
    };
    // Two attempts logged (and retried): it is waiting, not exiting, and has
    // printed no banner, so nothing is bound.
    waiting(2);
    assert!(
        child.try_wait().unwrap().is_none(),
        "serve exited while waiting"
    );
    server.restart().unwrap();
    let replica = listening(child);
    let (_, ok) = post(
        replica.addr,
        &auth_request("iauth_late", 500, 100_000, false),
    )
    .unwrap();
    assert_eq!(ok["approved"], json!(true), "{ok}");
    drop(replica);
}

#[test]
fn a_bounded_wait_for_the_database_ends_in_a_clear_error() {
    let _serial = serial();
    let Some(server) = cardgate::store::postgres::testing::private().unwrap() else {
        return;
    };
    let url = server.database().unwrap();
    server.stop().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.toml"), "").unwrap();
    std::fs::write(dir.path().join("payment_rules.toml"), "").unwrap();
    std::fs::write(
        dir.path().join("cardgate.toml"),
        format!("[webhook]\nsecrets = [\"{SECRET}\"]\n"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--wait-for-database",
            "1s",
            "--config",
        ])
        .arg(dir.path().join("cardgate.toml"))
        .env("CARDGATE_DATABASE_URL", &url)
        .env("CARDGATE_RULES", dir.path().join("rules.toml"))
        .env(
            "CARDGATE_PAYMENT_RULES",
            dir.path().join("payment_rules.toml"),
        )
        .env("CARDGATE_LOG", "error")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "bound while the database was down");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the shared store did not answer within")
            && err.contains("--wait-for-database"),
        "{err}"
    );
}

#[test]
fn a_database_that_stops_answering_costs_a_fallback_inside_the_deadline_not_a_hang() {
    let _serial = serial();
    let Some(server) = cardgate::store::postgres::testing::private().unwrap() else {
        return;
    };
    let url = server.database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let replica = start(dir.path(), &url, "deadline_ms = 600");
    let addr = replica.addr;
    let (_, ok) = post(addr, &auth_request("iauth_f1", 500, 100_000, false)).unwrap();
    assert_eq!(ok["approved"], json!(true), "{ok}");

    // Connections stay open; nothing answers on them.
    server.signal_all("STOP").unwrap();
    let thaw = scopeguard(&server);
    for i in 0..3 {
        let t = Instant::now();
        let (status, body) = post(
            addr,
            &auth_request(&format!("iauth_f{}", i + 2), 500, 100_000, false),
        )
        .unwrap();
        let took = t.elapsed();
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["metadata"]["reason"],
            json!("fallback:ledger"),
            "{body}"
        );
        assert!(took < Duration::from_millis(900), "answered after {took:?}");
    }
    wait_for(Duration::from_secs(5), "503 from /readyz", || {
        get(addr, "/readyz").0 == 503
    });
    drop(thaw);
    wait_for(Duration::from_secs(10), "ready again", || {
        get(addr, "/readyz").0 == 200
    });
    let (_, back) = post(addr, &auth_request("iauth_f9", 500, 100_000, false)).unwrap();
    assert_eq!(back["approved"], json!(true), "{back}");
}

/// Resumes a `STOP`ped server when dropped, so a failing assertion does not
/// leave it frozen for the harness's own shutdown.
fn scopeguard(server: &cardgate::store::postgres::testing::TestServer) -> impl Drop + '_ {
    struct Thaw<'a>(&'a cardgate::store::postgres::testing::TestServer);
    impl Drop for Thaw<'_> {
        fn drop(&mut self) {
            let _ = self.0.signal_all("CONT");
        }
    }
    Thaw(server)
}

#[test]
fn cli_keys_may_migrate_an_empty_database_and_a_data_dir_with_a_url_is_refused() {
    let _serial = serial();
    let Some((_server, url)) = database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .args(["--config", "/nonexistent/cardgate.toml"])
            .env("CARDGATE_DATABASE_URL", &url)
            .env_remove("CARDGATE_DATA_DIR")
            .env("CARDGATE_LOG", "warn")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    // `keys create` is the first to touch the database: it migrates it.
    let created = cli(&["keys", "create", "--role", "admin", "--name", "first"]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let listed = cli(&["keys", "list"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("admin") && text.contains("first"), "{text}");
    // A replica started afterwards finds the schema current (and writes no data dir).
    let replica = start(dir.path(), &url, "");
    drop(replica);
    assert!(!dir.path().join("data").exists());
    // `--data-dir` with a URL names both, for the CLI and for `serve`.
    let refused = cli(&["keys", "list", "--data-dir", "/tmp/cg-elsewhere"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains("--data-dir /tmp/cg-elsewhere") && err.contains("CARDGATE_DATABASE_URL"),
        "{err}"
    );
    let serve = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/tmp/cg-elsewhere",
        ])
        .arg("--config")
        .arg(dir.path().join("cardgate.toml"))
        .env("CARDGATE_DATABASE_URL", &url)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&serve.stderr);
    assert_eq!(serve.status.code(), Some(78), "{err}");
    assert!(
        err.contains("--data-dir /tmp/cg-elsewhere") && err.contains("CARDGATE_DATABASE_URL"),
        "{err}"
    );
    assert!(!Path::new("/tmp/cg-elsewhere").exists());
}

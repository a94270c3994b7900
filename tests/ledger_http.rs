//! Issue 4 (spend ledger) against the real binary: a real SQLite file in a temp
//! dir, signed webhooks over HTTP/1.1 on 127.0.0.1, restarts and `kill -9`. The
//! tests that exercise storage run one body on both backends: SQLite, and
//! PostgreSQL (issue 14, a fresh database on the throwaway server of
//! `tests/common/postgres.rs`; skipped without one unless required).
//!
//! The raw-HTTP client and payloads are `tests/common/raw.rs`, shared with
//! `postgres_replicas.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::raw::{self, CARD, approved_amount, auth_request, card_daily_total, fixture, get, now};

const SECRET: &str = "whsec_ledger_test_secret";
const BIN: &str = env!("CARGO_BIN_EXE_cardgate");

// === backends ===

/// Where the ledger lives: the data directory's SQLite file, or a PostgreSQL URL.
#[derive(Clone)]
enum Backend {
    Sqlite,
    Postgres(String),
}

/// Both backends (PostgreSQL only when a server is available), each with the
/// server handle that must outlive the test body.
fn backends() -> Vec<(
    Backend,
    Option<Arc<cardgate::store::postgres::testing::TestServer>>,
)> {
    let mut out = vec![(Backend::Sqlite, None)];
    if let Some((server, url)) = common::postgres::database() {
        out.push((Backend::Postgres(url), Some(server)));
    }
    out
}

// === server ===

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, durability: &str) -> PathBuf {
    let path = dir.join("cardgate.toml");
    std::fs::write(
        &path,
        format!(
            "[webhook]\nsecrets = [\"{SECRET}\"]\n[store]\ndurability = \"{durability}\"\n\
             data_dir = \"{}\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

fn start(dir: &Path, durability: &str) -> Server {
    start_on(dir, durability, &Backend::Sqlite)
}

fn start_on(dir: &Path, durability: &str, backend: &Backend) -> Server {
    let config = write_config(dir, durability);
    let mut cmd = Command::new(BIN);
    cmd.env_remove("CARDGATE_DATABASE_URL");
    if let Backend::Postgres(url) = backend {
        cmd.env("CARDGATE_DATABASE_URL", url);
    }
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("CARDGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("cardgate listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    let server = Server { child, addr };
    let t = Instant::now();
    while get(server.addr, "/readyz").0 != 200 {
        assert!(t.elapsed() < Duration::from_secs(30), "never ready");
        std::thread::yield_now();
    }
    server
}

/// Asks the server to stop (SIGTERM) and waits: the graceful path.
fn stop(mut s: Server) {
    let pid = s.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(s.child.wait().unwrap().success());
}

// === HTTP ===

/// Sends an event signed with this file's secret; `None` when the connection
/// failed (server killed).
fn post(addr: SocketAddr, event: &Value) -> Option<(u16, Value)> {
    raw::post(addr, SECRET, event)
}

// === payloads ===

/// `cardgate ledger show` output.
fn show(dir: &Path, at: i64) -> String {
    show_on(dir, at, &Backend::Sqlite)
}

fn show_on(dir: &Path, at: i64, backend: &Backend) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(["ledger", "show", "--card", CARD])
        .args(["--at", &at.to_string()])
        .env_remove("CARDGATE_DATABASE_URL");
    match backend {
        Backend::Sqlite => cmd.arg("--data-dir").arg(dir.join("data")),
        Backend::Postgres(url) => cmd
            .args(["--config", "/nonexistent/cardgate.toml"])
            .env("CARDGATE_DATABASE_URL", url),
    };
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

// === tests ===

#[test]
fn concurrent_http_approvals_never_exceed_the_daily_limit() {
    for (backend, _pg) in backends() {
        concurrent_approvals_on(&backend);
    }
}

fn concurrent_approvals_on(backend: &Backend) {
    const LIMIT: i64 = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let server = start_on(dir.path(), "sync", backend);
    let addr = server.addr;
    let handles: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                let mut sum = 0;
                for i in 0..8 {
                    let amount = 700 + 13 * i;
                    let e = auth_request(&format!("iauth_c{t}_{i}"), amount, LIMIT, i % 2 == 0);
                    let (status, body) = post(addr, &e).unwrap();
                    assert_eq!(status, 200, "{body}");
                    sum += approved_amount(&body, amount);
                }
                sum
            })
        })
        .collect();
    let approved: i64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(approved <= LIMIT, "approved {approved} over {LIMIT}");
    // 64 requests of ≥700 against 10 000: the limit must actually fill.
    assert!(approved > LIMIT - 700, "approved only {approved}");
    assert_eq!(
        card_daily_total(&show_on(dir.path(), now(), backend)),
        approved
    );
}

#[test]
fn restart_preserves_totals() {
    for (backend, _pg) in backends() {
        restart_preserves_totals_on(&backend);
    }
}

fn restart_preserves_totals_on(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = start_on(dir.path(), "sync", backend);
    let (_, first) = post(server.addr, &auth_request("iauth_r1", 6000, 10_000, false)).unwrap();
    assert_eq!(first["approved"], json!(true), "{first}");
    stop(server);

    let server = start_on(dir.path(), "async", backend);
    // 6000 + 6000 > 10 000: only the restored hold can make this decline.
    let (_, second) = post(server.addr, &auth_request("iauth_r2", 6000, 10_000, false)).unwrap();
    assert_eq!(second["approved"], json!(false), "{second}");
    assert_eq!(second["metadata"]["reason"], json!("spending_limit"));
    let (_, third) = post(server.addr, &auth_request("iauth_r3", 6000, 10_000, true)).unwrap();
    assert_eq!(third["amount"], json!(4000), "{third}");
    stop(server);
    assert_eq!(
        card_daily_total(&show_on(dir.path(), now(), backend)),
        10_000
    );
}

#[test]
fn kill_9_during_a_sync_burst_loses_no_approved_hold() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), "sync");
    let addr = server.addr;
    let stop_flag = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..6)
        .map(|t| {
            let stop_flag = stop_flag.clone();
            std::thread::spawn(move || {
                let mut approved = Vec::new();
                let mut i = 0;
                while !stop_flag.load(Ordering::Relaxed) {
                    let id = format!("iauth_k{t}_{i}");
                    i += 1;
                    match post(addr, &auth_request(&id, 100, 100_000_000, false)) {
                        Some((200, body)) if body["approved"] == json!(true) => approved.push(id),
                        Some(_) => {}
                        None => break,
                    }
                }
                approved
            })
        })
        .collect();
    // Kill once the burst is well under way.
    let t = Instant::now();
    loop {
        let text = {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(
                s,
                "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let approvals = text
            .lines()
            .filter(|l| l.starts_with("cardgate_authorizations_total") && l.contains("approve"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        if approvals >= 40.0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_mins(1), "burst too slow");
        std::thread::yield_now();
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    stop_flag.store(true, Ordering::Relaxed);
    let approved: Vec<String> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert!(approved.len() >= 40);

    let report = show(dir.path(), now());
    for id in &approved {
        assert!(
            report.contains(id.as_str()),
            "approved {id} lost after kill -9"
        );
    }
    assert!(card_daily_total(&report) >= 100 * i64::try_from(approved.len()).unwrap());
    // And the restarted server starts from the same ledger.
    let server = start(dir.path(), "sync");
    drop(server);
}

#[test]
fn lifecycle_events_are_idempotent_and_order_independent_over_http() {
    for (backend, _pg) in backends() {
        lifecycle_on(&backend);
    }
}

fn lifecycle_on(backend: &Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = start_on(dir.path(), "sync", backend);
    let created = fixture("issuing_authorization.created.json");
    let closed = fixture("issuing_authorization.updated.closed.json");
    let txn = fixture("issuing_transaction.created.json");
    let mut bad = fixture("issuing_transaction.created.json");
    bad["id"] = json!("evt_bad_amount");
    bad["data"]["object"]["id"] = json!("ipi_bad");
    bad["data"]["object"]["amount"] = json!(-2_000_000_000_000i64);
    let mut bad_currency = fixture("issuing_authorization.updated.closed.json");
    bad_currency["id"] = json!("evt_bad_currency");
    bad_currency["data"]["object"]["currency"] = json!("dollars");
    // Reordered (capture and close before the creation), duplicated, and bad input.
    for e in [
        &txn,
        &closed,
        &bad,
        &created,
        &closed,
        &bad_currency,
        &txn,
        &created,
    ] {
        let (status, body) = post(server.addr, e).unwrap();
        assert_eq!((status, body), (200, json!({"received": true})));
    }
    let at = 1_795_003_020;
    let report = show_on(dir.path(), at, backend);
    assert!(
        report.contains("iauth_1SfbND25Lk8vT3cGdL09jQ7n  created=1795003020  usd  status=closed  held=0  spend=4250"),
        "{report}"
    );
    assert_eq!(card_daily_total(&report), 4250);
    // Replaying everything after a restart changes nothing.
    stop(server);
    let server = start_on(dir.path(), "sync", backend);
    for e in [&created, &closed, &txn] {
        post(server.addr, e).unwrap();
    }
    stop(server);
    assert_eq!(show_on(dir.path(), at, backend), report);
}

#[test]
fn corrupt_database_refuses_to_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "sync");
    let db = dir.path().join("data").join("cardgate.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    std::fs::write(&db, vec![0x42; 4096]).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    assert_eq!(std::fs::read(&db).unwrap(), vec![0x42; 4096]);
}

#[test]
fn unwritable_database_refuses_to_start_naming_the_file() {
    // Root ignores file modes, so "unwritable" is made with something that holds
    // for every user: the database path is a directory, so SQLite can neither open
    // nor create a file there.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "sync");
    let db = dir.path().join("data").join("cardgate.db");
    std::fs::create_dir_all(&db).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
    assert!(db.is_dir(), "the directory was not replaced");
}

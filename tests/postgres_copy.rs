//! Issue 14: `cardgate store copy --from <data dir> --to <url>` moves a SQLite
//! installation that really served traffic (holds, a reversal, captures, a
//! decline) into PostgreSQL: the ledger's facts, the decision log and the
//! approvals tables, verified by row counts and by ledger totals each side
//! computes on its own. A replica started on the copy then sees the copied
//! spend (`ledger show` prints what it printed on SQLite; a request against the
//! card's limit is cut by it), serves the copied decisions under their ids, and
//! answers a request Stripe delivers again after the move with the hold it
//! already has.
//!
//! Also here, on the same helpers: `cardgate_ledger_holds` with a shared store
//! counts the open holds of all replicas (it read 0 there before: no replica
//! keeps the ledger in memory).
#![allow(
    clippy::unwrap_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{SECRET, Server, base_config, create_key, fixture, now, post_signed, send, set};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_cardgate");
const CARD: &str = "ic_1SbsKNr3Lk8vT3cGAOiDXANR";
/// The card's all-time limit: no window boundary can fall inside the test.
const LIMIT: i64 = 20_000;

/// An authorization request on the fixture card, under [`LIMIT`] all time.
fn request(n: &str, amount: i64, controllable: bool) -> Value {
    let mut e = common::request();
    set(&mut e, "id", json!(format!("evt_cp_{n}")));
    set(&mut e, "data/object/id", json!(format!("iauth_cp_{n}")));
    set(&mut e, "data/object/created", json!(now()));
    set(&mut e, "data/object/pending_request/amount", json!(amount));
    set(
        &mut e,
        "data/object/pending_request/merchant_amount",
        json!(amount),
    );
    set(
        &mut e,
        "data/object/pending_request/is_amount_controllable",
        json!(controllable),
    );
    set(
        &mut e,
        "data/object/card/spending_controls/spending_limits",
        json!([{"amount": LIMIT, "interval": "all_time", "categories": null}]),
    );
    set(
        &mut e,
        "data/object/card/spending_controls/spending_limits_currency",
        json!("usd"),
    );
    e
}

/// Stripe's update of `iauth_cp_{n}` to `status` (the hold released).
fn updated(n: &str, status: &str) -> Value {
    let mut e = fixture("issuing_authorization.updated.closed.json");
    set(&mut e, "id", json!(format!("evt_cp_{n}_{status}")));
    set(&mut e, "data/object/id", json!(format!("iauth_cp_{n}")));
    set(&mut e, "data/object/status", json!(status));
    set(&mut e, "data/object/created", json!(now()));
    e
}

/// A capture of `amount` on `iauth_cp_{n}`.
fn capture(n: &str, amount: i64) -> Value {
    let mut e = fixture("issuing_transaction.created.json");
    set(&mut e, "id", json!(format!("evt_cp_{n}_capture")));
    set(&mut e, "data/object/id", json!(format!("ipi_cp_{n}")));
    set(
        &mut e,
        "data/object/authorization",
        json!(format!("iauth_cp_{n}")),
    );
    set(&mut e, "data/object/amount", json!(-amount));
    set(&mut e, "data/object/merchant_amount", json!(-amount));
    set(&mut e, "data/object/created", json!(now()));
    e
}

async fn post(server: &Server, event: &Value) -> Value {
    let r = post_signed(server, &serde_json::to_vec(event).unwrap(), &[SECRET]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

async fn decisions(server: &Server, key: &str) -> Value {
    let r = send(
        "GET",
        &server.url("/v1/decisions?limit=100"),
        &[("authorization", format!("Bearer {key}"))],
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// `cardgate ledger show` for the card at a fixed time, from the data dir or
/// from the database.
fn ledger_show(data_dir: Option<&Path>, url: Option<&str>) -> String {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["ledger", "show", "--card", CARD, "--at", "1800000000"])
        .env_remove("CARDGATE_DATABASE_URL")
        .env("CARDGATE_LOG", "warn");
    if let Some(dir) = data_dir {
        cmd.arg("--data-dir").arg(dir);
    }
    if let Some(url) = url {
        cmd.args(["--config", "/nonexistent/cardgate.toml"])
            .env("CARDGATE_DATABASE_URL", url);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `cardgate store copy`: success, stdout, stderr.
fn store_copy(from: &Path, url: &str) -> (bool, String, String) {
    let out = std::process::Command::new(BIN)
        .args(["store", "copy", "--from"])
        .arg(from)
        .args(["--to", url])
        .env("CARDGATE_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The words of the first stdout line starting with `prefix`.
fn line<'a>(stdout: &'a str, prefix: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in {stdout}"))
        .split_whitespace()
        .collect()
}

#[tokio::test]
async fn store_copy_moves_ledger_and_decision_log_verified_and_a_replica_sees_the_copied_spend() {
    let Some((_pg, url)) = common::postgres::database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, admin) = create_key(dir.path(), "admin");
    let sqlite = Server::start_in(dir, &base_config(), &[]);
    sqlite.ready().await;
    // Held and still open; held, then reversed; held, then captured; declined.
    assert_eq!(
        post(&sqlite, &request("1", 3000, false)).await["approved"],
        true
    );
    assert_eq!(
        post(&sqlite, &request("2", 5000, false)).await["approved"],
        true
    );
    post(&sqlite, &updated("2", "reversed")).await;
    assert_eq!(
        post(&sqlite, &request("3", 4000, false)).await["approved"],
        true
    );
    post(&sqlite, &capture("3", 4000)).await;
    let declined = post(&sqlite, &request("4", 50_000, false)).await;
    assert_eq!(
        declined["metadata"]["reason"], "spending_limit",
        "{declined}"
    );
    // An older authorization, closed and captured (the fixtures' own).
    for name in [
        "issuing_authorization.created.json",
        "issuing_authorization.updated.closed.json",
        "issuing_transaction.created.json",
    ] {
        post(&sqlite, &fixture(name)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let logged = loop {
        let d = decisions(&sqlite, &admin).await;
        if d["data"].as_array().unwrap().len() == 4 {
            break d;
        }
        assert!(Instant::now() < deadline, "{d}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let dir = sqlite.stop();
    let data = common::data_dir(dir.path());
    let before = ledger_show(Some(&data), None);
    // 3000 open + 4000 captured + the fixtures' 4250; the reversal holds nothing.
    assert!(before.contains("all_time usd"), "{before}");
    assert!(before.contains("card=11250"), "{before}");

    let (copied, stdout, stderr) = store_copy(&data, &url);
    assert!(copied, "{stdout}{stderr}");
    assert!(stdout.contains("verified"), "{stdout}");
    assert!(!stdout.contains("MISMATCH"), "{stdout}");
    // Three requests held and the reversal, two captures, the fixtures'
    // creation and close: 8 facts.
    assert_eq!(line(&stdout, "ledger_facts"), ["ledger_facts", "8", "8"]);
    assert_eq!(line(&stdout, "decisions"), ["decisions", "4", "4"]);
    assert_eq!(line(&stdout, "api_keys"), ["api_keys", "1", "1"]);
    // Each side's totals for usd: 4 authorizations, 1 open hold of 3000, spend
    // 11250, 8250 captured.
    let expected = ["usd", "4", "1", "3000", "11250", "8250"];
    assert_eq!(line(&stdout, "sqlite   usd")[1..], expected, "{stdout}");
    assert_eq!(line(&stdout, "postgres usd")[1..], expected, "{stdout}");
    assert!(stderr.contains("copying decisions: 4 / 4"), "{stderr}");

    // What the database derived is what the SQLite ledger rebuilt to.
    assert_eq!(ledger_show(None, Some(&url)), before);

    let replica = Server::start(&base_config(), &[("CARDGATE_DATABASE_URL", &url)]);
    replica.ready().await;
    // The copied decisions, under their ids.
    assert_eq!(decisions(&replica, &admin).await, logged);
    // 11250 spent of 20000: 9000 more does not fit, 8750 does.
    let over = post(&replica, &request("5", 9000, false)).await;
    assert_eq!(over["approved"], false, "{over}");
    assert_eq!(over["metadata"]["reason"], "spending_limit", "{over}");
    let cut = post(&replica, &request("6", 9000, true)).await;
    assert_eq!(
        (&cut["approved"], &cut["amount"]),
        (&json!(true), &json!(8750)),
        "{cut}"
    );
    // The first request delivered again after the move: the same answer, one hold.
    let again = post(&replica, &request("1", 3000, false)).await;
    assert_eq!(again["approved"], true, "{again}");
    assert!(
        ledger_show(None, Some(&url)).contains("card=20000"),
        "{}",
        ledger_show(None, Some(&url))
    );
    drop(replica);

    // A second copy would merge into the copied ledger: refused.
    let (copied, stdout, stderr) = store_copy(&data, &url);
    assert!(!copied, "{stdout}");
    assert!(stderr.contains("already holds"), "{stderr}");
}

/// `cardgate_ledger_holds` on `server`'s /metrics.
async fn holds_gauge(server: &Server) -> f64 {
    let r = common::get(&server.url("/metrics")).await.unwrap();
    common::metric(&String::from_utf8_lossy(&r.body), "cardgate_ledger_holds")
}

#[tokio::test]
async fn ledger_holds_gauge_counts_every_replicas_open_holds_with_a_shared_store() {
    let Some((_pg, url)) = common::postgres::database() else {
        return;
    };
    let env = [("CARDGATE_DATABASE_URL", url.as_str())];
    let (a, b) = (
        Server::start(&base_config(), &env),
        Server::start(&base_config(), &env),
    );
    a.ready().await;
    b.ready().await;
    // Two holds through one replica, one of them then released.
    assert_eq!(
        post(&a, &request("g1", 1000, false)).await["approved"],
        true
    );
    assert_eq!(
        post(&a, &request("g2", 2000, false)).await["approved"],
        true
    );
    post(&a, &updated("g2", "reversed")).await;
    // The other replica, which decided nothing, reports the one still open, as
    // does the first (each reads it every few seconds in its store probe).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = (holds_gauge(&a).await, holds_gauge(&b).await);
        if seen == (1.0, 1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cardgate_ledger_holds on the two replicas: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

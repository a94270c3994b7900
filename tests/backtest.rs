//! Backtest on a recorded log with a known expected diff (issue 5): the records in
//! tests/fixtures/backtest/decisions.jsonl were decided by config/rules.toml; the
//! candidate drops the gambling rule, halves the fuel cap and declines large
//! software purchases.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

use std::process::Command;

use cardgate::decision::ProgramControls;
use cardgate::rules::RuleSet;
use cardgate::rules::backtest::{Change, RecordedDecision, backtest};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/backtest");

fn records() -> Vec<RecordedDecision> {
    std::fs::read_to_string(format!("{DIR}/decisions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn candidate() -> RuleSet {
    let src = std::fs::read_to_string(format!("{DIR}/candidate.toml")).unwrap();
    RuleSet::from_toml_unmetered(&src).unwrap()
}

#[test]
fn backtest_reports_the_known_diff_of_the_candidate() {
    let report = backtest(&candidate(), &ProgramControls::default(), &records());
    assert_eq!(report.replayed, 5);
    assert_eq!(report.skipped, 1, "the transaction event is skipped");
    assert_eq!(report.skipped_examples[0].0, 4);
    assert_eq!(
        report.approximate, 5,
        "JSONL records carry no replay record"
    );
    assert_eq!(
        report.unchanged, 2,
        "small software buy and the spend-limited one"
    );
    assert_eq!(report.changes.approve_to_decline, 1);
    assert_eq!(report.changes.decline_to_approve, 1);
    assert_eq!(report.changes.amount, 1);
    assert_eq!(report.changes.reason, 0);
    let by_rule: Vec<(&str, usize)> = report
        .rules
        .iter()
        .map(|(k, v)| (k.as_str(), v.counts.total()))
        .collect();
    assert_eq!(
        by_rule,
        [("cap-fuel", 1), ("no-big-software", 1), ("no-gambling", 1)]
    );
    let ex: Vec<(usize, Change, String, String)> = report
        .changed
        .iter()
        .map(|e| (e.index, e.change, e.before.to_string(), e.after.to_string()))
        .collect();
    assert_eq!(
        ex,
        [
            (
                1,
                Change::ApproveToDecline,
                "approve (approved)".into(),
                "decline (rule:no-big-software)".into()
            ),
            (
                2,
                Change::DeclineToApprove,
                "decline (rule:no-gambling)".into(),
                "approve (approved)".into()
            ),
            (
                3,
                Change::Amount,
                "approve 10000 (rule:cap-fuel)".into(),
                "approve 5000 (rule:cap-fuel)".into()
            ),
        ]
    );
}

#[test]
fn replaying_with_the_recording_rules_changes_nothing() {
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules.toml")).unwrap();
    let live = RuleSet::from_toml_unmetered(&src).unwrap();
    let recs = records();
    assert!(recs.iter().all(|r| r.ruleset == live.version()));
    let report = backtest(&live, &ProgramControls::default(), &recs);
    assert_eq!((report.replayed, report.unchanged), (5, 5), "{report}");
}

#[test]
fn backtest_cli_prints_the_same_report_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    // Program controls off, so the replay matches the library test above.
    let config = dir.path().join("cardgate.toml");
    std::fs::write(&config, "[webhook]\nsecrets = [\"whsec_test\"]\n").unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_cardgate"))
            .args(["backtest", "--rules"])
            .arg(format!("{DIR}/candidate.toml"))
            .arg("--log")
            .arg(format!("{DIR}/decisions.jsonl"))
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let (a, b) = (run(), run());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert_eq!(a.stdout, b.stdout);
    let out = String::from_utf8(a.stdout).unwrap();
    assert!(out.contains("approve→decline: 1"), "{out}");
    assert!(out.contains("decline→approve: 1"), "{out}");
    assert!(out.contains("amount changed:  1"), "{out}");
    assert!(out.contains("#1 iauth_backtest_1 approve→decline"), "{out}");
}

mod common;

const LIVE: &str = r#"
[[rule]]
name = "no-gambling"
when = 'merchant.category_code == "7995"'
action = "decline"

[[rule]]
name = "cap-fuel"
when = 'merchant.category_code == "5542" && is_amount_controllable'
action = "cap"
amount = 10000

[[rule]]
name = "watch-big"
when = 'amount > 50000'
action = "decline"
mode = "shadow"
"#;

const CANDIDATE: &str = r#"
[[rule]]
name = "no-big-software"
when = 'merchant.category == "computer_software_stores" && amount > 50000'
action = "decline"

[[rule]]
name = "cap-fuel"
when = 'merchant.category_code == "5542" && is_amount_controllable'
action = "cap"
amount = 5000
"#;

/// One authorization request: `n` makes the event and authorization ids unique.
fn event(n: u32, category: &str, mcc: &str, amount: i64, controllable: bool) -> Vec<u8> {
    use serde_json::json;
    let mut e = common::request();
    e["id"] = json!(format!("evt_bt_{n}"));
    let o = &mut e["data"]["object"];
    o["id"] = json!(format!("iauth_bt_{n}"));
    o["merchant_data"]["category"] = json!(category);
    o["merchant_data"]["category_code"] = json!(mcc);
    o["pending_request"]["amount"] = json!(amount);
    o["pending_request"]["merchant_amount"] = json!(amount);
    o["pending_request"]["is_amount_controllable"] = json!(controllable);
    serde_json::to_vec(&e).unwrap()
}

#[tokio::test]
async fn backtest_replays_the_decision_log_of_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rules = dir.path().join("live.toml");
    std::fs::write(&rules, LIVE).unwrap();
    let candidate = dir.path().join("candidate.toml");
    std::fs::write(&candidate, CANDIDATE).unwrap();
    let config = dir.path().join("cardgate.toml");
    std::fs::write(&config, common::base_config()).unwrap();
    let live_version = RuleSet::from_toml_unmetered(LIVE)
        .unwrap()
        .version()
        .to_string();

    // Record: four real webhooks through the real binary, then stop it.
    let mut server = common::Server::start(
        &common::base_config(),
        &[
            ("CARDGATE_RULES", rules.to_str().unwrap()),
            ("CARDGATE_DATA_DIR", data.to_str().unwrap()),
        ],
    );
    server.ready().await;
    let software = ("computer_software_stores", "5734");
    let sent = [
        event(1, software.0, software.1, 4250, false),
        event(2, software.0, software.1, 60000, false),
        event(3, "betting_casino_gambling", "7995", 1000, false),
        event(4, "service_stations", "5542", 20000, true),
    ];
    let mut answers = Vec::new();
    for body in &sent {
        let r = common::post_signed(&server, body, &[common::SECRET]).await;
        assert_eq!(r.status, 200);
        let j = r.json();
        answers.push((
            j["approved"].as_bool().unwrap(),
            j["amount"].as_i64(),
            j["metadata"]["reason"].as_str().unwrap().to_string(),
        ));
    }
    assert_eq!(
        answers,
        [
            (true, None, "approved".to_string()),
            (true, None, "approved".to_string()),
            (false, None, "rule:no-gambling".to_string()),
            (true, Some(10000), "rule:cap-fuel".to_string()),
        ]
    );
    assert!(server.terminate().success());

    // Every row carries the deciding rule set; shadow matches are logged.
    let log =
        cardgate::store::read_decision_log(&data.join(cardgate::store::FILE_NAME), None).unwrap();
    assert_eq!(log.len(), 4);
    assert!(log.iter().all(|r| r.ruleset == live_version), "{log:#?}");
    let shadow: Vec<Option<&str>> = log.iter().map(|r| r.shadow_rules.as_deref()).collect();
    assert_eq!(shadow, [None, Some(r#"["watch-big"]"#), None, None]);

    let run = |since: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_cardgate"))
            .args(["backtest", "--rules"])
            .arg(&candidate)
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .args(["--since", since])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let out = run("1970-01-01T00:00:00Z");
    let body: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(
        body,
        [
            "replayed 4 decisions (0 skipped, 0 approximate): 1 unchanged, 3 changed (3 direct, 0 knock-on)",
            "  approve→decline: 1 (0 knock-on)",
            "  decline→approve: 1 (0 knock-on)",
            "  amount changed:  1 (0 knock-on)",
            "  reason only:     0 (0 knock-on)",
            "rule             matches  approve→decline  decline→approve  amount  amount affected  examples",
            "cap-fuel               1                0                0       1             5000  iauth_bt_4",
            "no-big-software        1                1                0       0            60000  iauth_bt_2",
            "no-gambling            0                0                1       0             1000  iauth_bt_3",
            "changes:",
            "  #1 iauth_bt_2 approve→decline: approve (approved) → decline (rule:no-big-software)",
            "  #2 iauth_bt_3 decline→approve: decline (rule:no-gambling) → approve (approved)",
            "  #3 iauth_bt_4 amount: approve 10000 (rule:cap-fuel) → approve 5000 (rule:cap-fuel)",
        ],
        "{out}"
    );
    assert_eq!(run("0"), out, "deterministic; Unix seconds work too");
    let later = run(&(common::now() + 3600).to_string());
    assert!(
        later.contains("replayed 0 decisions (0 skipped, 0 approximate)"),
        "{later}"
    );
}

/// A store written by a build before exact replay (schema version 3: no `format`
/// or `seen` column): its rows are replayed from their window totals and reported
/// as approximate, never as exact.
#[test]
fn rows_recorded_before_exact_replay_are_reported_as_approximate() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let conn = rusqlite::Connection::open(data.join(cardgate::store::FILE_NAME)).unwrap();
    for sql in &cardgate::store::MIGRATIONS[..3] {
        conn.execute_batch(sql).unwrap();
    }
    conn.execute_batch("PRAGMA user_version = 3").unwrap();
    let body = event(1, "computer_software_stores", "5734", 60000, false);
    conn.execute(
        "INSERT INTO decisions (event_id, authorization_id, card, cardholder, amount, currency,
             merchant_category, merchant_mcc, merchant_country, merchant_name, approved,
             approved_amount, reason, rule, ruleset, latency_us, decided_at, event_json,
             spend_json)
         VALUES ('evt_bt_1', 'iauth_bt_1', 'ic_1', 'ich_1', 60000, 'usd', 'computer_software_stores',
             '5734', 'US', 'PIXELFORGE', 1, 60000, 'approved', NULL, 'v0', 10, 1795003020, ?1,
             '{\"card\":{\"daily\":100}}')",
        rusqlite::params![body],
    )
    .unwrap();
    drop(conn);
    let config = dir.path().join("cardgate.toml");
    std::fs::write(&config, common::base_config()).unwrap();
    let candidate = dir.path().join("candidate.toml");
    std::fs::write(&candidate, CANDIDATE).unwrap();
    let run = |format: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_cardgate"))
            .args(["backtest", "--rules"])
            .arg(&candidate)
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .args(["--format", format])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains("1 of 1 decisions replayed approximately"),
            "{err}"
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let j: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(
        (&j["replayed"], &j["approximate"]),
        (&1.into(), &1.into()),
        "{j}"
    );
    assert_eq!(j["changes"][0]["approximate"], true, "{j}");
    let text = run("text");
    assert!(text.contains("(0 skipped, 1 approximate)"), "{text}");
    assert!(
        text.contains("#0 iauth_bt_1 approve→decline: approve (approved) → decline (rule:no-big-software) [approximate]"),
        "{text}"
    );
}

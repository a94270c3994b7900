//! Backtest on a recorded log with a known expected diff (issue 5): the records in
//! tests/fixtures/backtest/decisions.jsonl were decided by config/rules.toml; the
//! candidate drops the gambling rule, halves the fuel cap and declines large
//! software purchases.

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
    assert_eq!(report.skipped.len(), 1, "the transaction event is skipped");
    assert_eq!(report.skipped[0].0, 4);
    assert_eq!(
        report.unchanged, 2,
        "small software buy and the spend-limited one"
    );
    assert_eq!(report.changes.approve_to_decline, 1);
    assert_eq!(report.changes.decline_to_approve, 1);
    assert_eq!(report.changes.amount, 1);
    assert_eq!(report.changes.reason, 0);
    let by_rule: Vec<(&str, usize)> = report
        .by_rule
        .iter()
        .map(|(k, v)| (k.as_str(), v.total()))
        .collect();
    assert_eq!(
        by_rule,
        [("cap-fuel", 1), ("no-big-software", 1), ("no-gambling", 1)]
    );
    let ex: Vec<(usize, Change, String, String)> = report
        .examples
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

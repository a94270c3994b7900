//! `scripts/ab`, the alternating A/B comparison of two builds (BENCHMARKS.md's way
//! to tell a change's effect on a noisy box), runs end to end: two real cardgate
//! servers in turn under the real loadgen, a row per run and the summary. Small
//! and slow on purpose (a low fixed rate, one round): it proves the tool works,
//! it measures nothing. No figure is checked, only that every answer was good,
//! with the SQLite store and with a throwaway PostgreSQL (`--store pg-sync`).
//! With `CARDGATE_REQUIRE_LOADGEN=1` (set by `scripts/test`) a missing loadgen,
//! second core or taskset fails instead of skipping.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

use std::path::PathBuf;
use std::process::Command;

/// `examples/loadgen` beside this test's binary: `cargo build --example loadgen`
/// (`scripts/test` runs it first; `cargo test` alone builds examples only as test
/// harnesses).
fn loadgen() -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent()?.parent()?;
    let path = profile_dir.join("examples").join("loadgen");
    path.is_file().then_some(path)
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/ab")
}

/// loadgen, when this machine can run `scripts/ab` (two cores, taskset);
/// `None` after saying why not (a failure under `scripts/test`, which sets
/// `CARDGATE_REQUIRE_LOADGEN`).
fn can_run() -> Option<PathBuf> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let has_taskset = Command::new("taskset").arg("--version").output().is_ok();
    let required = std::env::var_os("CARDGATE_REQUIRE_LOADGEN").is_some();
    let skip = |why: &str| {
        assert!(!required, "CARDGATE_REQUIRE_LOADGEN is set, but {why}");
        eprintln!("skipped: {why}");
    };
    let Some(loadgen) = loadgen() else {
        skip("examples/loadgen is not built beside the tests (cargo build --example loadgen)");
        return None;
    };
    if cores < 2 || !has_taskset {
        skip("scripts/ab needs two cores and taskset");
        return None;
    }
    Some(loadgen)
}

/// One round of `scripts/ab --store STORE` with this build as A and B, at a low
/// rate; every row's answers good, the summary printed. Returns the rows.
fn one_round(store: &str, loadgen: &std::path::Path) -> Vec<String> {
    one_round_with(store, &[], loadgen)
}

fn one_round_with(store: &str, extra: &[&str], loadgen: &std::path::Path) -> Vec<String> {
    let cardgate = env!("CARGO_BIN_EXE_cardgate");
    let out = Command::new(script())
        .args(["--store", store, "--rounds", "1", "--events", "400"])
        .args(extra)
        .args(["--rate", "100", "--duration", "2s", "--loadgen"])
        .arg(loadgen)
        .args([cardgate, cardgate])
        .output()
        .expect("scripts/ab runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/ab failed:\n{stdout}\n{stderr}"
    );
    let rows: Vec<String> = ["A round 1", "B round 1"]
        .iter()
        .map(|run| {
            let row = stderr
                .lines()
                .find(|l| l.starts_with(run))
                .unwrap_or_else(|| panic!("no row for {run}:\n{stderr}"));
            assert!(row.contains(" bad 0"), "{row}");
            row.to_string()
        })
        .collect();
    assert!(stdout.contains("B / A: req/s"), "{stdout}");
    assert!(stdout.contains("B ahead in"), "{stdout}");
    rows
}

#[test]
fn ab_compares_two_builds_in_alternating_rounds() {
    let Some(loadgen) = can_run() else {
        return;
    };
    for row in one_round("sync", &loadgen) {
        assert!(row.ends_with("bad 0"), "{row}");
    }
}

/// `--mix`: approvals with their `created` and capture events; a lifecycle event
/// the ledger refused as invalid would count as a bad answer.
#[test]
fn ab_compares_two_builds_on_a_programs_traffic() {
    let Some(loadgen) = can_run() else {
        return;
    };
    for row in one_round_with("sync", &["--mix"], &loadgen) {
        assert!(row.ends_with("bad 0"), "{row}");
    }
}

/// `--store pg-sync`: a throwaway PostgreSQL for the comparison, a database per
/// run, and PostgreSQL's CPU per request on every row.
#[test]
fn ab_compares_two_builds_on_a_throwaway_postgresql() {
    let Some(loadgen) = can_run() else {
        return;
    };
    let has_server = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file());
    if !has_server {
        assert!(
            std::env::var_os("CARDGATE_REQUIRE_POSTGRES").is_none(),
            "CARDGATE_REQUIRE_POSTGRES is set, but pg_config --bindir names no server"
        );
        eprintln!("skipped: no PostgreSQL server binaries (pg_config --bindir)");
        return;
    }
    for row in one_round("pg-sync", &loadgen) {
        assert!(row.contains(" bad 0  PG "), "{row}");
    }
}

#[test]
fn ab_refuses_what_it_cannot_compare() {
    let run = |args: &[&str]| {
        let out = Command::new(script()).args(args).output().expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cardgate = env!("CARGO_BIN_EXE_cardgate");
    let (code, err) = run(&[cardgate]);
    assert_eq!(code, Some(2));
    assert!(err.contains("give two cardgate binaries"), "{err}");
    let (code, err) = run(&["--store", "fast", cardgate, cardgate]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--store must be sync, async, off, pg-sync or pg-async"),
        "{err}"
    );
    let (code, err) = run(&["/nonexistent/cardgate", cardgate]);
    assert_eq!(code, Some(2));
    assert!(err.contains("is not an executable file"), "{err}");
    let (code, err) = run(&["--rounds", "0", cardgate, cardgate]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--rounds must be a positive whole number"),
        "{err}"
    );
}

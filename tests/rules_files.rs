//! Rule set reloads from disk against the real binary (issue 5): a changed file is
//! picked up by the watcher, SIGHUP reloads, an invalid file keeps the old set and
//! counts a rejection, and a rule failing at run time counts an error and does not
//! match. Every wait polls `/metrics` with a deadline; nothing sleeps to decide.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]
#![allow(
    clippy::float_cmp,
    reason = "metric samples compared here are whole counts, exact in f64"
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Server, base_config, get, metric, post_signed, request};

const SET_A: &str = r#"
[[rule]]
name = "big"
when = 'amount > 1000000'
action = "decline"
"#;

const SET_B: &str = r#"
[[rule]]
name = "no-software"
when = 'merchant.category == "computer_software_stores"'
action = "decline"
"#;

fn version(src: &str) -> String {
    cardgate::rules::RuleSet::from_toml_unmetered(src)
        .unwrap()
        .version()
        .to_string()
}

async fn metrics(server: &Server) -> String {
    let r = get(&server.url("/metrics")).await.unwrap();
    String::from_utf8_lossy(&r.body).into_owned()
}

/// Polls `/metrics` until `series` has `value`, or fails after 20 s with the text.
async fn wait_for(server: &Server, series: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics(server).await;
        if metric(&text, series) == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never became {value}; /metrics:\n{text}\nstderr:\n{}",
            server.stderr.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn info(version: &str) -> String {
    format!("cardgate_ruleset_info{{version=\"{version}\"}}")
}

/// Replaces `path` the way deploy tools do: write a sibling, rename it over.
fn replace(path: &Path, src: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, src).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn decide_ruleset(server: &Server) -> (String, String) {
    let body = serde_json::to_vec(&request()).unwrap();
    let r = post_signed(server, &body, &[common::SECRET]).await;
    assert_eq!(r.status, 200);
    let j = r.json();
    (
        j["metadata"]["ruleset"].as_str().unwrap().to_string(),
        j["metadata"]["reason"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn a_changed_file_is_reloaded_and_decides_the_next_request() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, SET_A).unwrap();
    let server = Server::start(
        &base_config(),
        &[("CARDGATE_RULES", rules.to_str().unwrap())],
    );
    server.ready().await;
    let (va, vb) = (version(SET_A), version(SET_B));
    wait_for(&server, &info(&va), 1.0).await;
    assert_eq!(
        decide_ruleset(&server).await,
        (va.clone(), "approved".into())
    );

    // Rename over the file (deploy tools), then an in-place write (editors).
    replace(&rules, SET_B);
    wait_for(&server, &info(&vb), 1.0).await;
    assert_eq!(
        decide_ruleset(&server).await,
        (vb.clone(), "rule:no-software".into())
    );
    assert_eq!(metric(&metrics(&server).await, &info(&va)), 0.0);

    std::fs::write(&rules, SET_A).unwrap();
    wait_for(&server, &info(&va), 1.0).await;
    assert_eq!(decide_ruleset(&server).await, (va, "approved".into()));
    let text = metrics(&server).await;
    assert!(metric(&text, "cardgate_rule_reloads_total{result=\"ok\"}") >= 2.0);
}

#[tokio::test]
async fn sighup_reloads_a_file_the_watcher_cannot_see() {
    // The served path is a symlink into a directory nobody watches: changing the
    // target fires no event in the watched directory, so only SIGHUP can reload.
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("live.toml");
    std::fs::write(&target, SET_A).unwrap();
    let rules = dir.path().join("rules.toml");
    std::os::unix::fs::symlink(&target, &rules).unwrap();
    let server = Server::start(
        &base_config(),
        &[("CARDGATE_RULES", rules.to_str().unwrap())],
    );
    server.ready().await;
    let (va, vb) = (version(SET_A), version(SET_B));
    wait_for(&server, &info(&va), 1.0).await;

    std::fs::write(&target, SET_B).unwrap();
    server.signal("HUP");
    wait_for(&server, &info(&vb), 1.0).await;
    assert_eq!(
        decide_ruleset(&server).await,
        (vb, "rule:no-software".into())
    );
    let log = server.stderr.lock().unwrap().clone();
    let installed = log
        .lines()
        // SIGHUP reloads the payment rules too; look at the authorization set.
        .filter(|l| l.contains("rule set installed") && l.contains("\"rule set\""))
        .collect::<Vec<_>>();
    assert!(
        installed.len() == 1 && installed[0].contains("sighup"),
        "{installed:?}"
    );
}

#[tokio::test]
async fn an_invalid_file_on_disk_keeps_the_old_set_and_counts_a_rejection() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, SET_A).unwrap();
    let server = Server::start(
        &base_config(),
        &[("CARDGATE_RULES", rules.to_str().unwrap())],
    );
    server.ready().await;
    let va = version(SET_A);
    wait_for(&server, &info(&va), 1.0).await;

    replace(
        &rules,
        "[[rule]]\nname = \"bad\"\nwhen = 'merchant.colour == \"red\"'\naction = \"decline\"\n",
    );
    wait_for(
        &server,
        "cardgate_rule_reloads_total{result=\"rejected\"}",
        1.0,
    )
    .await;
    assert_eq!(metric(&metrics(&server).await, &info(&va)), 1.0);
    assert_eq!(
        decide_ruleset(&server).await,
        (va.clone(), "approved".into())
    );
    let log = server.stderr.lock().unwrap().clone();
    assert!(log.contains("unknown field `merchant.colour`"), "{log}");

    // A file over the size limit is refused the same way, without being compiled.
    replace(&rules, &"#".repeat(10 * 1024 * 1024));
    wait_for(
        &server,
        "cardgate_rule_reloads_total{result=\"rejected\"}",
        2.0,
    )
    .await;
    assert_eq!(decide_ruleset(&server).await, (va, "approved".into()));
}

#[tokio::test]
async fn a_rule_failing_at_run_time_does_not_match_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        r#"
[[rule]]
name = "div"
when = 'amount / (amount - amount) == 1'
action = "decline"

[[rule]]
name = "overflow"
when = '9223372036854775807 + amount > 0'
action = "decline"
"#,
    )
    .unwrap();
    let server = Server::start(
        &base_config(),
        &[("CARDGATE_RULES", rules.to_str().unwrap())],
    );
    server.ready().await;
    let (_, reason) = decide_ruleset(&server).await;
    assert_eq!(reason, "approved");
    let text = metrics(&server).await;
    assert_eq!(
        metric(
            &text,
            "cardgate_rule_errors_total{rule=\"div\",error=\"division_by_zero\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "cardgate_rule_errors_total{rule=\"overflow\",error=\"overflow\"}"
        ),
        1.0,
        "{text}"
    );
}

//! The reviewer page in a real browser (issue 6, issue 18 #5): an agent's
//! rule-set publish waits for approval; headless Chromium (playwright-core driving
//! the system `/usr/bin/chromium`) logs in to `/ui/` as a reviewer, sees the line
//! diff against the live rules and the backtest of the proposed set on the
//! recorded decisions beside the Approve button, approves, and sees the outcome
//! instead of the buttons; then an analyst searches the decisions explorer and
//! opens one decision's explanation. The API then shows the new rule set live.
//!
//! Screenshots go to `$CARDGATE_ARTIFACTS` if set, else
//! `$CARGO_TARGET_TMPDIR/ui-screenshots/` (outside the source tree):
//! `review.png`, `approved.png`, `explorer.png`.
//!
//! Needs node, `tests/browser/node_modules` and chromium, which `scripts/test`
//! installs. Without them this test says so and passes, unless
//! `CARDGATE_REQUIRE_BROWSER=1` (set by `scripts/test`) makes that a failure.
#![allow(
    clippy::unwrap_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{SECRET, Server, base_config, create_key, post_signed, request, send, set};
use serde_json::json;

fn missing() -> Option<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        return Some(format!("{chromium} not found"));
    }
    if !root
        .join("tests/browser/node_modules/playwright-core")
        .exists()
    {
        return Some("tests/browser/node_modules/playwright-core not installed".into());
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("node not found".into());
    }
    None
}

fn artifacts() -> PathBuf {
    std::env::var_os("CARDGATE_ARTIFACTS").map_or_else(
        || PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots"),
        PathBuf::from,
    )
}

fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(path).unwrap()
}

/// Records three decisions under the bundled rules: a fuel pre-authorization
/// capped at 100.00 (the candidate caps it at 50.00), a 150.00 software purchase
/// (the candidate declines it) and a 42.50 one (unchanged).
async fn record_traffic(server: &Server) {
    let fuel = example("config/examples/fuel-authorization.json");
    let r = post_signed(server, fuel.as_bytes(), &[SECRET]).await;
    assert_eq!(r.json()["amount"], 10000, "{:?}", r.body);
    for (n, amount) in [(1, 15000), (2, 4250)] {
        let mut e = request();
        set(&mut e, "id", json!(format!("evt_ui_{n}")));
        set(&mut e, "data/object/id", json!(format!("iauth_ui_{n}")));
        set(&mut e, "data/object/pending_request/amount", json!(amount));
        set(
            &mut e,
            "data/object/pending_request/merchant_amount",
            json!(amount),
        );
        let r = post_signed(server, &serde_json::to_vec(&e).unwrap(), &[SECRET]).await;
        assert_eq!(r.json()["approved"], true, "{:?}", r.body);
    }
}

#[tokio::test]
#[expect(
    clippy::too_many_lines,
    reason = "one story told in order: set up, browse, check what the API says after"
)]
async fn reviewer_sees_diff_and_backtest_then_approves_and_an_analyst_explores_decisions() {
    if let Some(why) = missing() {
        assert!(
            std::env::var("CARDGATE_REQUIRE_BROWSER").is_err(),
            "browser test required but {why}"
        );
        eprintln!("SKIPPED browser test: {why} (scripts/test installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, admin) = create_key(dir.path(), "admin");
    let (_, agent) = create_key(dir.path(), "agent");
    let (_, reviewer) = create_key(dir.path(), "reviewer");
    let (_, analyst) = create_key(dir.path(), "analyst");
    let profile = dir.path().join("chromium-profile");
    let server = Server::start_in(dir, &base_config(), &[]);
    server.ready().await;
    let auth = |k: &str| vec![("authorization", format!("Bearer {k}"))];
    let current = || async {
        let r = send(
            "GET",
            &server.url("/v1/rulesets/current"),
            &auth(&agent),
            vec![],
        )
        .await
        .unwrap();
        r.json()["version"].as_str().unwrap().to_string()
    };

    // The bundled rules go live (no approval rule yet), then traffic is recorded.
    let live = example("config/rules.toml");
    let r = send(
        "POST",
        &server.url("/v1/rulesets"),
        &auth(&admin),
        live.into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    record_traffic(&server).await;

    let rule = json!({"action": "publish_ruleset", "control": "require_approval",
        "name": "rule sets need a second pair of eyes", "active": true});
    let r = send(
        "POST",
        &server.url("/v1/approval_rules"),
        &auth(&admin),
        serde_json::to_vec(&rule).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let before = current().await;
    let candidate = example("config/examples/candidate-rules.toml");
    let r = send(
        "POST",
        &server.url("/v1/rulesets"),
        &auth(&agent),
        candidate.clone().into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403);
    let id = r.json()["error"]["approval_request"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = send(
        "POST",
        &server.url(&format!("/v1/approval_requests/{id}/submit")),
        &auth(&agent),
        br#"{"reason":"<b>fuel</b> caps at 50.00"}"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);

    let shots = artifacts();
    std::fs::create_dir_all(&shots).unwrap();
    for name in ["review.png", "approved.png", "explorer.png"] {
        let _ = std::fs::remove_file(shots.join(name));
    }
    let base = format!("http://{}", server.addr);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/ui-approve.mjs");
    let out_dir = shots.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .env("CARDGATE_URL", base)
            .env("REVIEWER_KEY", reviewer)
            .env("ANALYST_KEY", analyst)
            .env("REQUEST_ID", &id)
            .env("SCREENSHOTS", &out_dir)
            .env("USER_DATA_DIR", profile)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser script failed (screenshots in {}):\n{stdout}\n{}",
        shots.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // The reason was shown as text, markup and all.
    assert!(
        stdout.contains("reason: <b>fuel</b> caps at 50.00"),
        "{stdout}"
    );
    // The diff shows the changed cap and the added rule.
    assert!(stdout.contains("diff - amount = 10000"), "{stdout}");
    assert!(stdout.contains("diff + amount = 5000"), "{stdout}");
    assert!(
        stdout.contains(r#"diff + name   = "no-big-software""#),
        "{stdout}"
    );
    assert!(stdout.contains("backtest beside approve: true"), "{stdout}");
    // The backtest beside Approve: 2 of the 3 recorded decisions change (the fuel
    // cap and the large software purchase), by the rules responsible.
    assert!(stdout.contains("backtest: 2 of 3"), "{stdout}");
    assert!(
        stdout.contains("by rule: cap-fuel, no-big-software"),
        "{stdout}"
    );
    // After approval the outcome replaces the buttons.
    assert!(stdout.contains("buttons hidden: true"), "{stdout}");
    // The explorer found the fuel decision by its rule and explained it.
    assert!(stdout.contains("explorer rows: 1"), "{stdout}");
    assert!(stdout.contains("decided by rule: cap-fuel\n"), "{stdout}");
    // The decisions were made under the bundled rules, replaced since.
    assert!(
        stdout.contains(&format!("rule set: {before} (no longer live)")),
        "{stdout}"
    );

    let after = current().await;
    assert_ne!(after, before, "the approved rule set is live");
    assert_eq!(
        after,
        cardgate::rules::content_version(candidate.as_bytes())
    );
    for name in ["review.png", "approved.png", "explorer.png"] {
        let png = std::fs::read(shots.join(name)).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{name} saved");
    }
}

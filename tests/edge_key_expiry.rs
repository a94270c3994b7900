//! Issue 15 #6: API keys never expired. Through the real binary: a key created
//! with `keys create --expires-in` or `expires_in`/`expires_at` over the API
//! works until the approvals clock passes its expiry (moved here with
//! `CARDGATE_APPROVALS_CLOCK_OFFSET_SECONDS` on a restart, no sleeping), then
//! gets 401 `api_key_expired`; `keys list` and `GET /v1/api_keys` show the
//! expiry; `[approvals] max_key_lifetime` bounds new keys.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

mod common;

use std::process::Command;

use common::{Server, base_config, create_key, data_dir, send};

/// Runs `cardgate keys …` on `dir`'s data directory; `(success, stdout, stderr)`.
fn keys(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardgate"));
    cmd.arg("keys")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir(dir))
        .env("CARDGATE_LOG", "warn")
        .env_remove("CARDGATE_APPROVALS_CLOCK_OFFSET_SECONDS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn bearer(secret: &str) -> Vec<(&'static str, String)> {
    vec![("authorization", format!("Bearer {secret}"))]
}

/// Over the API: a key with `expires_in` answers its expiry when created; both
/// fields at once, an expiry already past or a zero lifetime are a 400 naming
/// the field. Returns the created key's secret.
async fn create_over_the_api(server: &Server, admin: &str) -> String {
    // Over the API: a key with `expires_in` answers its expiry when created.
    let r = send(
        "POST",
        &server.url("/v1/api_keys"),
        &bearer(admin),
        br#"{"role":"reviewer","expires_in":7200}"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.json());
    let made = r.json();
    assert_eq!(
        made["expires_at"].as_i64().unwrap(),
        made["created"].as_i64().unwrap() + 7200
    );
    let api_secret = made["secret"].as_str().unwrap().to_string();
    // Both fields at once, or an expiry already past: 400 naming the problem.
    for body in [
        r#"{"role":"agent","expires_in":60,"expires_at":4000000000}"#.to_string(),
        r#"{"role":"agent","expires_at":1}"#.to_string(),
        r#"{"role":"agent","expires_in":0}"#.to_string(),
    ] {
        let r = send(
            "POST",
            &server.url("/v1/api_keys"),
            &bearer(admin),
            body.clone().into_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 400, "{body}: {}", r.json());
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("expires"),
            "{body}: {}",
            r.json()
        );
    }
    api_secret
}

#[tokio::test]
async fn api_keys_never_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (_, admin) = create_key(dir.path(), "admin");
    let (ok, secret, stderr) = keys(
        dir.path(),
        &["create", "--role", "analyst", "--expires-in", "1h"],
        &[],
    );
    assert!(ok, "{stderr}");
    let secret = secret.trim().to_string();
    let id = stderr
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .unwrap()
        .to_string();
    assert!(stderr.contains("expires "), "{stderr}");

    // Now: the key works, and the list shows when it stops working.
    let server = Server::start_in(dir, &base_config(), &[]);
    let r = send(
        "GET",
        &server.url("/v1/approval_rules"),
        &bearer(&secret),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.json());
    let r = send("GET", &server.url("/v1/api_keys"), &bearer(&admin), vec![])
        .await
        .unwrap();
    let listed = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .cloned()
        .unwrap();
    let expires_at = listed["expires_at"].as_i64().unwrap();
    assert_eq!(expires_at, listed["created"].as_i64().unwrap() + 3600);
    let api_secret = create_over_the_api(&server, &admin).await;
    let dir = server.stop();

    // An hour and a second later by the approvals clock: the CLI key is refused
    // as expired (not as unknown), the API key still works, the admin key too.
    let later = [("CARDGATE_APPROVALS_CLOCK_OFFSET_SECONDS", "3601")];
    let server = Server::start_in(dir, &base_config(), &later);
    let r = send(
        "GET",
        &server.url("/v1/approval_rules"),
        &bearer(&secret),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 401, "{}", r.json());
    assert_eq!(r.json()["error"]["code"], "api_key_expired");
    for live in [&api_secret, &admin] {
        let r = send(
            "GET",
            &server.url("/v1/approval_rules"),
            &bearer(live),
            vec![],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.json());
    }
    let dir = server.stop();

    // `keys list` judges by the same clock.
    let (ok, list, stderr) = keys(dir.path(), &["list"], &[]);
    assert!(ok, "{stderr}");
    let line = list.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(
        line.contains("active") && line.contains(&expires_at.to_string()),
        "{line}"
    );
    assert!(list.contains("expires never"), "{list}");
    let (ok, list, stderr) = keys(dir.path(), &["list"], &later);
    assert!(ok, "{stderr}");
    let line = list.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(line.contains("expired"), "{line}");
}

#[tokio::test]
async fn max_key_lifetime_bounds_keys_from_the_cli_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{}[approvals]\nmax_key_lifetime = \"1d\"\n", base_config());
    let config_path = dir.path().join("bounded.toml");
    std::fs::write(&config_path, &config).unwrap();
    let path = config_path.to_str().unwrap();

    let (ok, _, stderr) = keys(
        dir.path(),
        &["create", "--role", "admin", "--config", path],
        &[],
    );
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("expires never"), "{stderr}");
    let (ok, _, stderr) = keys(
        dir.path(),
        &[
            "create",
            "--role",
            "admin",
            "--expires-in",
            "2d",
            "--config",
            path,
        ],
        &[],
    );
    assert!(!ok, "a 2-day key under a 1-day limit was created");
    assert!(stderr.contains("max_key_lifetime"), "{stderr}");

    let (_, admin) = create_key(dir.path(), "admin");
    let server = Server::start_in(dir, &config, &[]);
    let r = send(
        "POST",
        &server.url("/v1/api_keys"),
        &bearer(&admin),
        br#"{"role":"agent"}"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.json());
    let made = r.json();
    assert_eq!(
        made["expires_at"].as_i64().unwrap(),
        made["created"].as_i64().unwrap() + 86_400
    );
    let r = send(
        "POST",
        &server.url("/v1/api_keys"),
        &bearer(&admin),
        br#"{"role":"agent","expires_in":172800}"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 400, "{}", r.json());
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("max_key_lifetime"), "{message}");
}

//! `POST /v1/payment_approvals` against the real binary: approve, decline by a
//! rule with its reason, bad bodies answered 400 naming the field, oversized 413,
//! a payment rules file reloaded on change, and (issue 15 #5) no answer without a
//! `payments` or `admin` key.
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

use std::time::{Duration, Instant};

use common::{Reply, Server, base_config, create_key, get, metric, send};

const RULES: &str = r#"
[lists]
out_of_stock = ["sku_mug"]

[[rule]]
name = "out-of-stock"
when = 'line_items.exists(i, i.sku in lists.out_of_stock)'
action = "decline"
description = "An item in the cart is out of stock."
"#;

const RULES_B: &str = r#"
[[rule]]
name = "no-foreign-cards"
when = 'card.country != customer.country'
action = "decline"
"#;

async fn approve(server: &Server, key: &str, body: &str) -> Reply {
    let mut headers = vec![("content-type", "application/json".to_string())];
    if !key.is_empty() {
        headers.push(("authorization", format!("Bearer {key}")));
    }
    send(
        "POST",
        &server.url("/v1/payment_approvals"),
        &headers,
        body.as_bytes().to_vec(),
    )
    .await
    .unwrap()
}

/// A server whose data directory holds one key per role in `roles`; returns the
/// secrets in the same order.
fn start_with_keys(env: &[(&str, &str)], roles: &[&str]) -> (Server, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let keys = roles
        .iter()
        .map(|role| create_key(dir.path(), role).1)
        .collect();
    (Server::start_in(dir, &base_config(), env), keys)
}

fn version(src: &str) -> String {
    cardgate::payments::PaymentRuleSet::from_toml_unmetered(src)
        .unwrap()
        .version()
        .to_string()
}

const CART: &str = r#"{"id":"cs_test_1","amount":9000,"currency":"usd",
  "customer":{"id":"cus_1","country":"US"},"card":{"country":"FR","brand":"visa"},
  "line_items":[{"sku":"sku_tee","quantity":1,"amount":3000},{"sku":"SKU","quantity":1,"amount":6000}]}"#;

fn cart(sku: &str) -> String {
    CART.replace("\"SKU\"", &format!("\"{sku}\""))
}

#[tokio::test]
async fn payment_approvals_decide_refuse_bad_input_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("payment_rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let (server, keys) = start_with_keys(
        &[("CARDGATE_PAYMENT_RULES", rules.to_str().unwrap())],
        &["payments"],
    );
    let key = keys[0].as_str();
    server.ready().await;
    let va = version(RULES);

    let r = approve(&server, key, &cart("sku_cap")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        serde_json::json!({"id": "cs_test_1", "approved": true, "reason": "approved", "ruleset": va})
    );

    let r = approve(&server, key, &cart("sku_mug")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        serde_json::json!({
            "id": "cs_test_1", "approved": false, "reason": "rule:out-of-stock",
            "rule": "out-of-stock", "message": "An item in the cart is out of stock.",
            "ruleset": va,
        })
    );

    for (body, field) in [
        (r#"{"amount":1,"currency":"usd","colour":"red"}"#, "colour"),
        (
            r#"{"amount":1,"currency":"usd","line_items":[{"sku":"a","quantity":"2"}]}"#,
            "line_items[0].quantity",
        ),
        (r#"{"amount":1,"currency":"usd""#, "."),
        ("", "."),
    ] {
        let r = approve(&server, key, body).await;
        assert_eq!(r.status, 400, "{body}");
        let j = r.json();
        assert_eq!(j["error"]["code"], "invalid_request", "{j}");
        assert_eq!(j["error"]["field"], field, "{j}");
    }

    let huge = format!(
        r#"{{"amount":1,"currency":"usd","metadata":{{"k":"{}"}}}}"#,
        "x".repeat(300 * 1024)
    );
    let r = approve(&server, key, &huge).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "body_too_large");

    let r = send("GET", &server.url("/v1/payment_approvals"), &[], vec![])
        .await
        .unwrap();
    assert_eq!(r.status, 405);

    // Reload on change: the next request is decided by the new set.
    std::fs::write(&rules, RULES_B).unwrap();
    let vb = version(RULES_B);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text =
            String::from_utf8_lossy(&get(&server.url("/metrics")).await.unwrap().body).into_owned();
        let series = format!("cardgate_payment_ruleset_info{{version=\"{vb}\"}}");
        if metric(&text, &series) == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "never reloaded:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let j = approve(&server, key, &cart("sku_mug")).await.json();
    assert_eq!(j["reason"], "rule:no-foreign-cards");
    assert_eq!(j["ruleset"], vb);

    let text =
        String::from_utf8_lossy(&get(&server.url("/metrics")).await.unwrap().body).into_owned();
    assert_eq!(
        metric(
            &text,
            "cardgate_payment_approvals_total{outcome=\"approve\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "cardgate_payment_approvals_total{outcome=\"decline\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "cardgate_payment_rule_matches_total{rule=\"out-of-stock\",mode=\"decisive\"}"
        ),
        1.0
    );
}

#[test]
fn an_invalid_payment_rules_file_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("payment_rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"x\"\nwhen = 'true'\naction = \"cap\"\namount = 5\n",
    )
    .unwrap();
    let config = dir.path().join("cardgate.toml");
    std::fs::write(&config, base_config()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cardgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--payment-rules")
        .arg(&rules)
        .env("CARDGATE_RULES", dir.path().join("none.toml"))
        .env("CARDGATE_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    // The authorization rules file is missing too: either refusal is exit 78.
    assert_eq!(out.status.code(), Some(78));
    let empty = dir.path().join("rules.toml");
    std::fs::write(&empty, "").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cardgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--payment-rules")
        .arg(&rules)
        .env("CARDGATE_RULES", &empty)
        .env("CARDGATE_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("action `cap` is not available"), "{err}");
}

/// Issue 15 #5: anyone could probe the payment rules. Now a key with the
/// `payments` (or `admin`) role is needed, and a `payments` key can do nothing
/// else on `/v1/`.
#[tokio::test]
async fn payment_approvals_without_a_payments_key_get_401() {
    let (server, keys) =
        start_with_keys(&[], &["payments", "admin", "analyst", "agent", "reviewer"]);
    server.ready().await;
    let [payments, admin, analyst, agent, reviewer] = keys.as_slice() else {
        unreachable!()
    };
    let body = cart("sku_cap");

    let r = approve(&server, "", &body).await;
    assert_eq!(r.status, 401);
    let j = r.json();
    assert_eq!(j["error"]["code"], "missing_api_key", "{j}");
    assert_eq!(j["error"]["type"], "authentication_error", "{j}");
    let unknown = format!("cgk_{}", "0".repeat(64));
    for key in ["not-a-key", unknown.as_str()] {
        let r = approve(&server, key, &body).await;
        assert_eq!(r.status, 401, "{key}");
        assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    }
    for key in [analyst, agent, reviewer] {
        let r = approve(&server, key, &body).await;
        assert_eq!(r.status, 403);
        assert_eq!(r.json()["error"]["code"], "permission_denied");
    }
    for key in [payments, admin] {
        let r = approve(&server, key, &body).await;
        assert_eq!(r.status, 200, "{:?}", r.json());
        assert_eq!(r.json()["approved"], true);
    }
    // A bad body is judged only after the key: anonymous callers learn nothing.
    assert_eq!(approve(&server, "", "{").await.status, 401);
    assert_eq!(approve(&server, payments, "{").await.status, 400);

    // The payments role reads nothing and changes nothing else.
    let bearer = vec![("authorization", format!("Bearer {payments}"))];
    for (method, path) in [
        ("GET", "/v1/security_history"),
        ("GET", "/v1/approval_rules"),
        ("GET", "/v1/api_keys"),
        ("POST", "/v1/rulesets"),
    ] {
        let r = send(method, &server.url(path), &bearer, vec![])
            .await
            .unwrap();
        assert_eq!(r.status, 403, "{method} {path}");
        assert_eq!(r.json()["error"]["code"], "permission_denied");
    }
    // And an admin can mint one over the API, like any other role.
    let r = send(
        "POST",
        &server.url("/v1/api_keys"),
        &[("authorization", format!("Bearer {admin}"))],
        br#"{"role":"payments","name":"checkout"}"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{:?}", r.json());
}

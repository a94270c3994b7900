//! `POST /v1/payment_approvals` against the real binary: approve, decline by a
//! rule with its reason, bad bodies answered 400 naming the field, oversized 413,
//! and a payment rules file reloaded on change.
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

use common::{Reply, Server, base_config, get, metric, send};

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

async fn approve(server: &Server, body: &str) -> Reply {
    send(
        "POST",
        &server.url("/v1/payment_approvals"),
        &[("content-type", "application/json".to_string())],
        body.as_bytes().to_vec(),
    )
    .await
    .unwrap()
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
    let server = Server::start(
        &base_config(),
        &[("CARDGATE_PAYMENT_RULES", rules.to_str().unwrap())],
    );
    server.ready().await;
    let va = version(RULES);

    let r = approve(&server, &cart("sku_cap")).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        serde_json::json!({"id": "cs_test_1", "approved": true, "reason": "approved", "ruleset": va})
    );

    let r = approve(&server, &cart("sku_mug")).await;
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
        let r = approve(&server, body).await;
        assert_eq!(r.status, 400, "{body}");
        let j = r.json();
        assert_eq!(j["error"]["code"], "invalid_request", "{j}");
        assert_eq!(j["error"]["field"], field, "{j}");
    }

    let huge = format!(
        r#"{{"amount":1,"currency":"usd","metadata":{{"k":"{}"}}}}"#,
        "x".repeat(300 * 1024)
    );
    let r = approve(&server, &huge).await;
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
    let j = approve(&server, &cart("sku_mug")).await.json();
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

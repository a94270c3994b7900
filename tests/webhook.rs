//! Issue 3: the webhook decision path, end to end against the real binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]
#![allow(
    clippy::too_many_lines,
    reason = "a scenario test is one story against one running server; split, its steps lose their order"
)]
#![allow(
    clippy::float_cmp,
    reason = "metric samples compared here are whole counts, exact in f64"
)]

mod common;

use common::*;
use serde_json::json;

const SC: &str = "data/object/card/spending_controls";
const CHSC: &str = "data/object/card/cardholder/spending_controls";

async fn decide(server: &Server, event: &serde_json::Value) -> serde_json::Value {
    let body = serde_json::to_vec(event).unwrap();
    let r = post_signed(server, &body, &[SECRET]).await;
    assert_eq!(r.status, 200, "body {:?}", String::from_utf8_lossy(&r.body));
    r.json()
}

#[tokio::test]
async fn approves_the_reference_request_with_stripe_headers() {
    let server = Server::start(&base_config(), &[]);
    server.ready().await;
    let body = std::fs::read(fixture_path("issuing_authorization.request.json")).unwrap();
    let r = post_signed(&server, &body, &[SECRET]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["stripe-version"], "2026-10-28.endive");
    assert_eq!(
        r.json(),
        json!({"approved": true, "metadata": {"reason": "approved", "ruleset": common::empty_ruleset()}})
    );
}

#[tokio::test]
async fn every_decline_reason() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let config = format!(
        "{}\n[program]\nblocked_mccs = [\"5999\"]\nblocked_categories = [\"dating_escort_services\"]\n",
        base_config()
    );
    let server = Server::start(&config, &[]);
    server.ready().await;

    let cases: Vec<(&str, Edit, &str, &str)> = vec![
        (
            "card inactive",
            Box::new(|e| set(e, "data/object/card/status", json!("inactive"))),
            "card_inactive",
            "card.status",
        ),
        (
            "card canceled",
            Box::new(|e| set(e, "data/object/card/status", json!("canceled"))),
            "card_canceled",
            "card.status",
        ),
        (
            "cardholder inactive",
            Box::new(|e| set(e, "data/object/card/cardholder/status", json!("inactive"))),
            "cardholder_inactive",
            "cardholder.status",
        ),
        (
            "cardholder blocked",
            Box::new(|e| set(e, "data/object/card/cardholder/status", json!("blocked"))),
            "cardholder_blocked",
            "cardholder.status",
        ),
        (
            "card blocks the category",
            Box::new(|e| {
                set(
                    e,
                    &format!("{SC}/blocked_categories"),
                    json!(["computer_software_stores"]),
                );
            }),
            "category_blocked",
            "card.blocked_categories",
        ),
        (
            "cardholder allows other categories",
            Box::new(|e| {
                set(
                    e,
                    &format!("{CHSC}/allowed_categories"),
                    json!(["bakeries"]),
                );
            }),
            "category_not_allowed",
            "cardholder.allowed_categories",
        ),
        (
            "card blocks the country",
            Box::new(|e| {
                set(
                    e,
                    &format!("{SC}/blocked_merchant_countries"),
                    json!(["US"]),
                );
            }),
            "country_blocked",
            "card.blocked_merchant_countries",
        ),
        (
            "card allows other countries",
            Box::new(|e| {
                set(
                    e,
                    &format!("{SC}/allowed_merchant_countries"),
                    json!(["GB"]),
                );
            }),
            "country_not_allowed",
            "card.allowed_merchant_countries",
        ),
        (
            "card blocks online",
            Box::new(|e| {
                set(
                    e,
                    &format!("{SC}/blocked_card_presences"),
                    json!(["not_present"]),
                );
            }),
            "card_presence_blocked",
            "card.blocked_card_presences",
        ),
        (
            "card allows present only",
            Box::new(|e| {
                set(
                    e,
                    &format!("{SC}/allowed_card_presences"),
                    json!(["present"]),
                );
            }),
            "card_presence_not_allowed",
            "card.allowed_card_presences",
        ),
        (
            "per-authorization limit, not controllable",
            Box::new(|e| {
                set(
                    e,
                    &format!("{SC}/spending_limits"),
                    json!([{"amount": 1000, "interval": "per_authorization", "categories": null}]),
                );
                set(e, &format!("{SC}/spending_limits_currency"), json!("usd"));
            }),
            "spending_limit",
            "card.per_authorization",
        ),
        (
            "cardholder limit in another currency",
            Box::new(|e| set(e, &format!("{CHSC}/spending_limits_currency"), json!("eur"))),
            "currency_mismatch",
            "cardholder.monthly",
        ),
        (
            "program blocks the MCC",
            Box::new(|e| {
                set(
                    e,
                    "data/object/merchant_data/category",
                    json!("miscellaneous_general_merchandise"),
                );
                set(e, "data/object/merchant_data/category_code", json!("5999"));
            }),
            "mcc_blocked",
            "program.blocked_mccs",
        ),
        (
            "program blocks the category (matched by MCC)",
            Box::new(|e| {
                set(
                    e,
                    "data/object/merchant_data/category",
                    json!("miscellaneous"),
                );
                set(e, "data/object/merchant_data/category_code", json!("7273"));
            }),
            "category_blocked",
            "program.blocked_categories",
        ),
    ];
    for (name, edit, reason, rule) in cases {
        let mut e = request();
        edit(&mut e);
        let d = decide(&server, &e).await;
        assert_eq!(
            d,
            json!({"approved": false, "metadata": {"reason": reason, "rule": rule, "ruleset": common::empty_ruleset()}}),
            "case {name}"
        );
    }
}

#[tokio::test]
async fn partial_approval_when_amount_is_controllable() {
    let server = Server::start(&base_config(), &[]);
    server.ready().await;
    let mut e = fixture("issuing_authorization.request.partial.json");
    set(
        &mut e,
        &format!("{SC}/spending_limits"),
        json!([{"amount": 6000, "interval": "per_authorization", "categories": null}]),
    );
    let d = decide(&server, &e).await;
    assert_eq!(
        d,
        json!({"approved": true, "amount": 6000, "metadata":
            {"reason": "spending_limit", "rule": "card.per_authorization", "ruleset": common::empty_ruleset()}})
    );
    // The same request without controllable amount declines.
    set(
        &mut e,
        "data/object/pending_request/is_amount_controllable",
        json!(false),
    );
    assert_eq!(decide(&server, &e).await["approved"], json!(false));
}

#[tokio::test]
async fn fallback_on_deadline_and_on_internal_failure() {
    let slow = format!(
        "[webhook]\nsecrets = [\"{SECRET}\"]\ndeadline_ms = 50\nfallback = \"approve\"\n\
         [fault_injection]\ndecision_delay_ms = 400\n"
    );
    let server = Server::start(&slow, &[]);
    server.ready().await;
    let d = decide(&server, &request()).await;
    assert_eq!(
        d,
        json!({"approved": true, "metadata": {"reason": "fallback:deadline", "ruleset": common::empty_ruleset()}})
    );
    let metrics = get(&server.url("/metrics")).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert_eq!(
        metric(&text, "cardgate_fallbacks_total{cause=\"deadline\"}"),
        1.0
    );

    let failing = format!(
        "[webhook]\nsecrets = [\"{SECRET}\"]\nfallback = \"decline\"\n\
         [fault_injection]\ndecision_panic = true\n"
    );
    let server = Server::start(&failing, &[]);
    server.ready().await;
    let d = decide(&server, &request()).await;
    assert_eq!(
        d,
        json!({"approved": false, "metadata": {"reason": "fallback:internal", "ruleset": common::empty_ruleset()}})
    );
    // The server survived the panic and still decides.
    let d = decide(&server, &request()).await;
    assert_eq!(d["metadata"]["reason"], json!("fallback:internal"));
}

#[tokio::test]
async fn secret_rotation_accepts_any_configured_secret() {
    let server = Server::start(
        &base_config(),
        &[("CARDGATE_WEBHOOK_SECRET", "whsec_old_one, whsec_new_one")],
    );
    server.ready().await;
    let body = serde_json::to_vec(&request()).unwrap();
    for secrets in [
        &["whsec_old_one"][..],
        &["whsec_new_one"][..],
        &["whsec_unknown", "whsec_new_one"][..],
    ] {
        let r = post_signed(&server, &body, secrets).await;
        assert_eq!(r.status, 200, "signed with {secrets:?}");
    }
    // The file's secret was replaced by the environment's.
    let r = post_signed(&server, &body, &[SECRET]).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], json!("signature_mismatch"));
}

#[tokio::test]
async fn other_event_types_are_received() {
    let server = Server::start(&base_config(), &[]);
    server.ready().await;
    for name in [
        "issuing_authorization.created.json",
        "issuing_authorization.updated.closed.json",
        "issuing_transaction.created.json",
    ] {
        let body = std::fs::read(fixture_path(name)).unwrap();
        let r = post_signed(&server, &body, &[SECRET]).await;
        assert_eq!(
            (r.status, r.json()),
            (200, json!({"received": true})),
            "{name}"
        );
    }
}

#[tokio::test]
async fn bad_signatures_are_refused_before_parsing() {
    let server = Server::start(&base_config(), &[]);
    server.ready().await;
    // Not JSON: if the body were parsed first, the error would be a parse error.
    let body = b"this is not json".to_vec();
    let t = now();
    let sig = |secret: &str, t: i64| cardgate::stripe::sign_header(&[secret], t, &body);
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "signature_missing"),
        ("garbled", Some("%%%".into()), "signature_malformed"),
        (
            "no timestamp",
            Some("v1=abc".into()),
            "signature_timestamp_invalid",
        ),
        (
            "v0 only",
            Some(sig(SECRET, t).replace("v1=", "v0=")),
            "signature_missing_v1",
        ),
        (
            "forged",
            Some(sig("whsec_attacker", t)),
            "signature_mismatch",
        ),
        // Well past the 300 s tolerance on either side: at exactly 301 a second
        // ticking over between this `now()` and the server's made "future" valid.
        ("expired", Some(sig(SECRET, t - 400)), "signature_expired"),
        ("future", Some(sig(SECRET, t + 400)), "signature_expired"),
    ];
    for (name, header, code) in cases {
        let r = post_with_signature(&server, &body, header).await;
        assert_eq!(r.status, 400, "{name}");
        assert_eq!(r.headers["content-type"], "application/json", "{name}");
        assert_eq!(r.json()["error"]["code"], json!(code), "{name}");
    }
    let metrics =
        String::from_utf8_lossy(&get(&server.url("/metrics")).await.unwrap().body).to_string();
    assert_eq!(metric(&metrics, "cardgate_parse_failures_total"), 0.0);
    // Nothing was decided: every authorizations series is still at its zero.
    assert_eq!(metric_sum(&metrics, "cardgate_authorizations_total"), 0.0);
    assert_eq!(
        metric(
            &metrics,
            "cardgate_signature_failures_total{code=\"signature_mismatch\"}"
        ),
        1.0
    );
    // The secret never reaches the logs.
    assert!(!server.stderr.lock().unwrap().contains(SECRET));
}

#[tokio::test]
async fn bodies_over_256_kib_are_refused() {
    let server = Server::start(&base_config(), &[]);
    server.ready().await;
    let mut e = request();
    set(
        &mut e,
        "data/object/metadata",
        json!({"pad": "x".repeat(300 * 1024)}),
    );
    let r = post_signed(&server, &serde_json::to_vec(&e).unwrap(), &[SECRET]).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], json!("body_too_large"));
    // Just under the limit is accepted.
    set(
        &mut e,
        "data/object/metadata",
        json!({"pad": "x".repeat(200 * 1024)}),
    );
    let r = post_signed(&server, &serde_json::to_vec(&e).unwrap(), &[SECRET]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn malformed_events_name_the_field_path() {
    let server = Server::start(&base_config(), &[]);
    server.ready().await;
    let full = serde_json::to_vec(&request()).unwrap();
    let mut wrong_type = request();
    set(
        &mut wrong_type,
        "data/object/pending_request/amount",
        json!("4250"),
    );
    let mut no_object = request();
    no_object["data"].as_object_mut().unwrap().remove("object");
    let mut bad_status = request();
    set(&mut bad_status, "data/object/card/status", json!(7));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("non-JSON", b"hello".to_vec(), "$"),
        ("truncated", full[..full.len() / 2].to_vec(), "$"),
        (
            "wrong type",
            serde_json::to_vec(&wrong_type).unwrap(),
            "data.object.pending_request.amount",
        ),
        (
            "missing data.object",
            serde_json::to_vec(&no_object).unwrap(),
            "data.object",
        ),
        (
            "wrong status type",
            serde_json::to_vec(&bad_status).unwrap(),
            "data.object.card.status",
        ),
    ];
    for (name, body, path) in cases {
        let r = post_signed(&server, &body, &[SECRET]).await;
        assert_eq!(r.status, 400, "{name}");
        let j = r.json();
        assert_eq!(j["error"]["code"], json!("invalid_event"), "{name}");
        assert_eq!(j["error"]["path"], json!(path), "{name}: {j}");
        assert!(
            j["error"]["message"].as_str().unwrap().starts_with(path),
            "{name}"
        );
    }
    let metrics =
        String::from_utf8_lossy(&get(&server.url("/metrics")).await.unwrap().body).to_string();
    assert_eq!(metric(&metrics, "cardgate_parse_failures_total"), 5.0);
    // Nothing was decided: every authorizations series is still at its zero.
    assert_eq!(metric_sum(&metrics, "cardgate_authorizations_total"), 0.0);
}

#[tokio::test]
async fn wrong_method_and_path_answer_json() {
    let server = Server::start(&base_config(), &[]);
    server.ready().await;
    let r = get(&server.url("/webhooks/stripe")).await.unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (405, json!("method_not_allowed"))
    );
    let r = send("DELETE", &server.url("/metrics"), &[], vec![])
        .await
        .unwrap();
    assert_eq!(r.status, 405);
    let r = get(&server.url("/nope")).await.unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (404, json!("not_found"))
    );
    let r = get(&server.url("/healthz")).await.unwrap();
    assert_eq!((r.status, r.json()), (200, json!({"status": "ok"})));
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests() {
    let config = format!(
        "[webhook]\nsecrets = [\"{SECRET}\"]\ndeadline_ms = 1500\n\
         [fault_injection]\ndecision_delay_ms = 300\n"
    );
    let mut server = Server::start(&config, &[]);
    server.ready().await;
    let body = serde_json::to_vec(&request()).unwrap();
    let header = cardgate::stripe::sign_header(&[SECRET], now(), &body);
    let url = server.url("/webhooks/stripe");
    let in_flight =
        tokio::spawn(
            async move { send("POST", &url, &[("stripe-signature", header)], body).await },
        );
    // Wait until the request is inside the server (it logs its arrival at debug).
    for _ in 0..500 {
        if server
            .stderr
            .lock()
            .unwrap()
            .contains("webhook request received")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    let reply = in_flight.await.unwrap().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["approved"], json!(true));
    assert!(status.success(), "exit status {status:?}");
}

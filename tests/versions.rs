//! Issue 17: every Stripe API version from 2024-06-20 to 2026-10-28.endive,
//! against the real binary. Each example event of `tests/fixtures/versions/`
//! (copied from Stripe's shapes in `shared/reference/events/versions/`) is
//! signed and decided, decided by a rule on a field its version added, and
//! answered in its own `Stripe-Version`; card-presence controls at program
//! level; the `challenge` action's answer and its verified retry.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::float_cmp,
    reason = "a panic is the test failure, with its line; metric values are small exact counts"
)]

mod common;

use common::{SECRET, Server, base_config, post_signed};
use serde_json::{Value, json};

const VERSIONS: [&str; 5] = [
    "2024-06-20",
    "2025-03-31.basil",
    "2025-11-17.clover",
    "2026-04-22.dahlia",
    "2026-10-28.endive",
];

fn example(version: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/versions/{version}.issuing_authorization.request.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// Starts the binary with `rules` as its rules file and `config` as its config.
fn start(config: &str, rules: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test-rules.toml");
    std::fs::write(&path, rules).unwrap();
    let path = path.to_str().unwrap().to_string();
    Server::start_in(dir, config, &[("CARDGATE_RULES", &path)])
}

async fn decide(server: &Server, event: &Value) -> common::Reply {
    let reply = post_signed(server, &serde_json::to_vec(event).unwrap(), &[SECRET]).await;
    assert_eq!(
        reply.status,
        200,
        "{:?}",
        String::from_utf8_lossy(&reply.body)
    );
    reply
}

#[tokio::test]
async fn each_version_is_signed_decided_and_answered_in_its_own_version() {
    let server = start(&base_config(), "");
    server.ready().await;
    for v in VERSIONS {
        let event = example(v);
        assert_eq!(event["api_version"], v);
        let reply = decide(&server, &event).await;
        let body = reply.json();
        assert_eq!(body["approved"], true, "{v}: {body}");
        assert_eq!(body["metadata"]["reason"], "approved", "{v}");
        assert!(body.get("send_fraud_challenges").is_none(), "{v}");
        assert_eq!(
            reply
                .headers
                .get("stripe-version")
                .unwrap()
                .to_str()
                .unwrap(),
            v,
            "the answer is in the event's version"
        );
    }
    // Without a usable api_version the configured one answers.
    for version in [Value::Null, json!("2026-10-28.endive; x"), json!("")] {
        let mut event = example("2024-06-20");
        event["api_version"] = version.clone();
        let reply = decide(&server, &event).await;
        assert_eq!(
            reply.headers.get("stripe-version").unwrap(),
            "2026-10-28.endive",
            "{version}"
        );
    }
}

/// One rule per field a version added, each matching only that version's
/// example: the decision names the rule, so the field was read from the wire.
const PER_FIELD_RULES: &str = r#"
[[rule]]
name = "fleet-fuel"
when = 'fleet.purchase_type == "fuel_purchase" && fleet.cardholder_prompt_data.odometer > 88000'
action = "decline"

[[rule]]
name = "network-token"
when = 'token.startsWith("intok_") && network_data.acquiring_institution_id == "445566"'
action = "decline"

[[rule]]
name = "fraud-elevated"
when = 'risk_assessment.fraud_risk.level == "elevated" && risk_assessment.card_testing_risk.level == "low"'
action = "decline"

[[rule]]
name = "chip-present"
when = 'card_presence == "present" && risk_assessment.merchant_dispute_risk.level == "low"'
action = "decline"

[[rule]]
name = "score"
when = 'risk_assessment.fraud_risk.score == 12.5 && card_presence == "not_present"'
action = "decline"
"#;

#[tokio::test]
async fn each_version_is_decided_by_a_rule_on_a_field_it_added() {
    let server = start(&base_config(), PER_FIELD_RULES);
    server.ready().await;
    for (v, rule) in VERSIONS.iter().zip([
        "fleet-fuel",
        "network-token",
        "fraud-elevated",
        "chip-present",
        "score",
    ]) {
        let body = decide(&server, &example(v)).await.json();
        assert_eq!(body["approved"], false, "{v}: {body}");
        assert_eq!(body["metadata"]["reason"], format!("rule:{rule}"), "{v}");
    }
}

#[tokio::test]
async fn program_card_presence_controls_decline_with_their_own_reasons() {
    let config = format!(
        "{}[program]\nblocked_card_presences = [\"not_present\"]\n",
        base_config()
    );
    let server = start(&config, "");
    server.ready().await;
    let body = decide(&server, &example("2026-10-28.endive")).await.json();
    assert_eq!(
        (&body["metadata"]["reason"], &body["metadata"]["rule"]),
        (
            &json!("card_presence_blocked"),
            &json!("program.blocked_card_presences")
        )
    );
    let body = decide(&server, &example("2026-04-22.dahlia")).await.json();
    assert_eq!(body["approved"], true, "{body}");
    // Before dahlia there is no card_presence: in no list, so an allow-list
    // declines it and a block list does not.
    let body = decide(&server, &example("2025-11-17.clover")).await.json();
    assert_eq!(body["approved"], true, "{body}");
    drop(server);

    let config = format!(
        "{}[program]\nallowed_card_presences = [\"present\"]\n",
        base_config()
    );
    let server = start(&config, "");
    server.ready().await;
    for (v, approved) in [
        ("2026-04-22.dahlia", true),
        ("2026-10-28.endive", false),
        ("2024-06-20", false),
    ] {
        let body = decide(&server, &example(v)).await.json();
        assert_eq!(body["approved"], approved, "{v}: {body}");
        if !approved {
            assert_eq!(
                body["metadata"]["reason"], "card_presence_not_allowed",
                "{v}"
            );
            assert_eq!(body["metadata"]["rule"], "program.allowed_card_presences");
        }
    }
}

#[tokio::test]
async fn a_challenge_rule_asks_for_an_sms_and_approves_the_verified_retry() {
    let rules = r#"
[[rule]]
name = "challenge-elevated"
when = 'risk_assessment.fraud_risk.level in ["elevated", "highest"]'
action = "challenge"
"#;
    let server = start(&base_config(), rules);
    server.ready().await;
    let mut first = example("2025-11-17.clover");
    first["data"]["object"]["verified_by_fraud_challenge"] = Value::Null;
    let body = decide(&server, &first).await.json();
    assert_eq!(
        body,
        json!({"approved": false, "send_fraud_challenges": ["sms"], "metadata": {
            "reason": "challenge", "rule": "challenge-elevated",
            "ruleset": body["metadata"]["ruleset"].clone()}})
    );
    // The example is the retry after the SMS: verified, so not challenged again.
    let mut retry = example("2025-11-17.clover");
    retry["id"] = json!("evt_retry");
    retry["data"]["object"]["id"] = json!("iauth_retry");
    let body = decide(&server, &retry).await.json();
    assert_eq!(body["approved"], true, "{body}");
    assert!(body.get("send_fraud_challenges").is_none());
}

#[tokio::test]
async fn unknown_enum_values_are_decided_and_counted() {
    let server = start(&base_config(), "");
    server.ready().await;
    let mut event = example("2026-10-28.endive");
    let o = &mut event["data"]["object"];
    o["card_presence"] = json!("holographic");
    o["card"]["spending_controls"]["allowed_card_presences"] =
        json!(["not_present", "holographic"]);
    o["card"]["spending_controls"]["spending_limits"] =
        json!([{"amount": 100, "interval": "fortnightly", "categories": null}]);
    let body = decide(&server, &event).await.json();
    // The unknown interval counts as all_time: the limit still guards.
    assert_eq!(body["metadata"]["reason"], "spending_limit", "{body}");
    let metrics = common::get(&server.url("/metrics")).await.unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    for field in [
        "card_presence",
        "allowed_card_presences",
        "spending_limits.interval",
    ] {
        assert_eq!(
            common::metric(
                &text,
                &format!("cardgate_unknown_enum_values_total{{field=\"{field}\"}}")
            ),
            1.0,
            "{field}"
        );
    }
}

/// Issue 17 acceptance: a stand-in authorization the network approved while
/// cardgate was not asked (`network_fallback`) is in the ledger after a restart
/// and counts against the card's limit.
#[tokio::test]
async fn a_stand_in_approval_counts_against_the_limit_after_restart() {
    let now = common::now();
    let mut created = common::fixture("issuing_authorization.created.json");
    created["id"] = json!("evt_stand_in");
    let o = &mut created["data"]["object"];
    o["id"] = json!("iauth_stand_in");
    o["created"] = json!(now);
    o["amount"] = json!(20_000);
    o["merchant_amount"] = json!(20_000);
    o["request_history"][0]["reason"] = json!("network_fallback");
    o["request_history"][0]["amount"] = json!(20_000);

    let server = Server::start(&base_config(), &[]);
    server.ready().await;
    let reply = post_signed(&server, &serde_json::to_vec(&created).unwrap(), &[SECRET]).await;
    assert_eq!(reply.status, 200);
    let metrics = common::get(&server.url("/metrics")).await.unwrap();
    assert_eq!(
        common::metric(
            &String::from_utf8_lossy(&metrics.body),
            "cardgate_stand_in_authorizations_total{reason=\"network_fallback\",outcome=\"approved\",ours=\"none\"}"
        ),
        1.0
    );
    let dir = server.stop();

    let server = Server::start_in(dir, &base_config(), &[]);
    server.ready().await;
    let mut request = common::request();
    let o = &mut request["data"]["object"];
    o["created"] = json!(now);
    o["pending_request"]["amount"] = json!(10_000);
    o["pending_request"]["merchant_amount"] = json!(10_000);
    o["card"]["spending_controls"]["spending_limits"] =
        json!([{"amount": 25_000, "interval": "daily", "categories": null}]);
    let body = decide(&server, &request).await.json();
    assert_eq!(
        (&body["approved"], &body["metadata"]["reason"]),
        (&json!(false), &json!("spending_limit")),
        "20 000 held by the stand-in + 10 000 > 25 000: {body}"
    );
    // Without the stand-in the same request fits.
    the_remaining_room_still_fits(&server, now).await;
}

async fn the_remaining_room_still_fits(server: &Server, now: i64) {
    let mut request = common::request();
    request["id"] = json!("evt_fits");
    let o = &mut request["data"]["object"];
    o["id"] = json!("iauth_fits");
    o["created"] = json!(now);
    o["pending_request"]["amount"] = json!(5_000);
    o["pending_request"]["merchant_amount"] = json!(5_000);
    o["card"]["spending_controls"]["spending_limits"] =
        json!([{"amount": 25_000, "interval": "daily", "categories": null}]);
    let body = decide(server, &request).await.json();
    assert_eq!(body["approved"], true, "20 000 + 5 000 fits 25 000: {body}");
}

//! The rule fields of Stripe's signals (issue 17): each reads the payload of the
//! version that carries it, absent reads as `""` / `0` / `false`, `has()` tells
//! presence of a nested field (CEL's `has()` needs a selection, so a top-level
//! field such as `card_presence` is tested by value), scores are doubles and
//! decimal strings compare exactly.

use super::*;
use crate::decision::{SignalInt, SignalStr};
use crate::stripe::{Event, parse_document};

fn version(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/versions/{name}.issuing_authorization.request.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

const VERSIONS: [&str; 5] = [
    "2024-06-20",
    "2025-03-31.basil",
    "2025-11-17.clover",
    "2026-04-22.dahlia",
    "2026-10-28.endive",
];

/// Whether `when` matches the example event of `v`.
fn matches_version(v: &str, when: &str) -> bool {
    let mut body = version(v);
    let doc = parse_document(&mut body).unwrap();
    let ev = Event::read(&doc).unwrap();
    let a = ev.authorization_request().unwrap();
    let rules = format!("[[rule]]\nname = \"r\"\nwhen = '{when}'\naction = \"decline\"\n");
    verdict(&rules, &a).decisive.is_some()
}

/// Each version's example against rules on its new fields: `(when, the versions
/// it matches)`. A rule written for endive loads and runs on a 2024 payload.
#[test]
fn each_signal_reads_the_version_that_carries_it() {
    let cases: &[(&str, &[&str])] = &[
        ("card_presence == \"present\"", &["2026-04-22.dahlia"]),
        ("card_presence == \"not_present\"", &["2026-10-28.endive"]),
        (
            "card_presence != \"\"",
            &["2026-04-22.dahlia", "2026-10-28.endive"],
        ),
        (
            "card_presence == \"\"",
            &["2024-06-20", "2025-03-31.basil", "2025-11-17.clover"],
        ),
        (
            "risk_assessment.fraud_risk.level == \"elevated\"",
            &["2025-11-17.clover"],
        ),
        (
            "risk_assessment.fraud_risk.score > 30.0",
            &["2025-11-17.clover"],
        ),
        (
            "risk_assessment.fraud_risk.score > 12",
            &["2025-11-17.clover", "2026-10-28.endive"],
        ),
        (
            "risk_assessment.fraud_risk.score == 12.5",
            &["2026-10-28.endive"],
        ),
        (
            "has(risk_assessment.fraud_risk.score)",
            &[
                "2025-11-17.clover",
                "2026-04-22.dahlia",
                "2026-10-28.endive",
            ],
        ),
        // clover's `risk_level` and dahlia's `level` read as one field.
        (
            "risk_assessment.card_testing_risk.level == \"low\"",
            &["2025-11-17.clover"],
        ),
        (
            "risk_assessment.card_testing_risk.risk_level == \"normal\"",
            &["2026-04-22.dahlia", "2026-10-28.endive"],
        ),
        (
            "risk_assessment.card_testing_risk.invalid_account_number_decline_rate_past_hour == 2 && risk_assessment.card_testing_risk.invalid_credentials_decline_rate_past_hour == 1",
            &["2026-10-28.endive"],
        ),
        (
            "risk_assessment.merchant_dispute_risk.level == \"normal\"",
            &["2025-11-17.clover"],
        ),
        (
            "risk_assessment.merchant_dispute_risk.dispute_rate == 2",
            &["2025-11-17.clover"],
        ),
        (
            "fraud_disputability_likelihood == \"very_likely\"",
            &["2025-11-17.clover", "2026-10-28.endive"],
        ),
        ("verified_by_fraud_challenge", &["2025-11-17.clover"]),
        ("fleet.purchase_type == \"fuel_purchase\"", &["2024-06-20"]),
        ("fleet.service_type == \"self_service\"", &["2024-06-20"]),
        (
            "fleet.cardholder_prompt_data.driver_id == \"4417\" && fleet.cardholder_prompt_data.vehicle_number == \"TRK-0193\"",
            &["2024-06-20"],
        ),
        (
            "fleet.cardholder_prompt_data.odometer > 88000",
            &["2024-06-20"],
        ),
        ("has(fleet.cardholder_prompt_data.user_id)", &[]),
        ("fuel.type == \"\" && !has(fuel.type)", &VERSIONS),
        ("fuel.quantity_decimal == 0", &VERSIONS),
        ("token.startsWith(\"intok_\")", &["2025-03-31.basil"]),
        ("wallet == \"apple_pay\"", &["2025-03-31.basil"]),
        (
            "network_data.acquiring_institution_id == \"445566\"",
            &["2025-03-31.basil", "2026-04-22.dahlia", "2026-10-28.endive"],
        ),
        (
            "network_data.system_trace_audit_number == \"030915\"",
            &["2025-11-17.clover"],
        ),
        (
            "network_data.transaction_id.startsWith(\"3024\")",
            &["2024-06-20"],
        ),
    ];
    for (when, want) in cases {
        for v in VERSIONS {
            assert_eq!(
                matches_version(v, when),
                want.contains(&v),
                "`{when}` on {v}"
            );
        }
    }
}

#[test]
fn decimal_strings_compare_exactly() {
    let mut a = auth();
    a.signals
        .set_str(SignalStr::FuelQuantityDecimal, Some("40.125"));
    a.signals
        .set_str(SignalStr::FuelUnitCostDecimal, Some("0.1"));
    let run = |a: &AuthRequest<'_>, when: &str| {
        verdict(
            &format!("[[rule]]\nname = \"r\"\nwhen = '{when}'\naction = \"decline\"\n"),
            a,
        )
        .decisive
        .is_some()
    };
    for (when, want) in [
        ("fuel.quantity_decimal > 40", true),
        ("fuel.quantity_decimal > 40.125", false),
        ("fuel.quantity_decimal >= 40.125", true),
        ("fuel.quantity_decimal == \"40.1250\"", true),
        ("40.12 < fuel.quantity_decimal", true),
        // 0.1 as a double is 0.1000000000000000055…; as written it is 0.1.
        ("fuel.unit_cost_decimal == 0.1", true),
        ("fuel.unit_cost_decimal < fuel.quantity_decimal", true),
        ("string(fuel.quantity_decimal).startsWith(\"40.\")", true),
        ("fuel.quantity_decimal > -1", true),
    ] {
        assert_eq!(run(&a, when), want, "{when}");
    }
    // A malformed decimal is a run-time error: the rule does not match.
    a.signals
        .set_str(SignalStr::FuelQuantityDecimal, Some("forty"));
    assert!(!run(
        &a,
        "fuel.quantity_decimal > 0 || fuel.quantity_decimal <= 0"
    ));
    a.signals.set_int(SignalInt::FleetOdometer, Some(7));
    assert!(run(&a, "fleet.cardholder_prompt_data.odometer == 7"));
}

#[test]
fn decimal_comparisons_are_type_checked() {
    for (when, msg) in [
        ("fuel.quantity_decimal > amount", "a decimal compares with"),
        ("fuel.quantity_decimal == \"1e3\"", "not an exact decimal"),
        ("fuel.quantity_decimal == 1e300", "not an exact decimal"),
        ("fuel.quantity_decimal + 1 > 2", "no arithmetic operator"),
        ("risk_assessment.fraud_risk", "is an object"),
    ] {
        let err = RuleSet::from_toml_unmetered(&format!(
            "[[rule]]\nname = \"r\"\nwhen = '{when}'\naction = \"decline\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains(msg), "`{when}`: {err}");
    }
}

/// A `challenge` rule declines asking for an SMS challenge; the retry the
/// cardholder verified is approved by it (`on_verified = "approve"`, the
/// default) or passed over to the later rules (`"skip"`).
#[test]
fn challenge_rules_never_challenge_a_verified_retry() {
    use crate::decision::{OnVerified, decide};
    let rules = |on_verified: &str| {
        format!(
            "[[rule]]\nname = \"sms\"\nwhen = 'amount > 1000'\naction = \"challenge\"\n{on_verified}\
             [[rule]]\nname = \"later\"\nwhen = 'merchant.country == \"US\"'\naction = \"decline\"\n"
        )
    };
    let run = |src: &str, verified: Option<bool>| {
        let set = RuleSet::from_toml_unmetered(src).unwrap();
        let mut a = auth();
        a.signals.verified_by_fraud_challenge = verified;
        let program = ProgramControls::default();
        let ctx = Context::new(&a, &program, &set, &crate::decision::NoSpend, NOW);
        let d = decide(&ctx);
        (
            d.approved,
            d.reason.as_str(),
            set.evaluate(&ctx).decisive.map(|m| m.action),
        )
    };
    let approve = rules("");
    let challenge = Some(crate::decision::Action::Challenge(OnVerified::Approve));
    assert_eq!(run(&approve, None), (false, "challenge", challenge));
    assert_eq!(run(&approve, Some(false)), (false, "challenge", challenge));
    assert_eq!(run(&approve, Some(true)), (true, "approved", challenge));
    let skip = rules("on_verified = \"skip\"\n");
    let skipping = Some(crate::decision::Action::Challenge(OnVerified::Skip));
    assert_eq!(run(&skip, None), (false, "challenge", skipping));
    assert_eq!(
        run(&skip, Some(true)),
        (false, "rule", Some(crate::decision::Action::Decline))
    );
    let err = RuleSet::from_toml_unmetered(&rules("on_verified = \"maybe\"\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("on_verified `maybe`"), "{err}");
    let err = RuleSet::from_toml_unmetered(
        "[[rule]]\nname = \"d\"\nwhen = 'true'\naction = \"decline\"\non_verified = \"skip\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("only valid with action = \"challenge\""),
        "{err}"
    );
}

/// The bundled config/rules.toml challenges the clover example (fraud level
/// `elevated`) and nothing older; its verified retry is approved.
#[test]
fn bundled_rules_challenge_on_fraud_risk_level() {
    use crate::decision::decide;
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules.toml")).unwrap();
    let set = RuleSet::from_toml_unmetered(&src).unwrap();
    let program = ProgramControls::default();
    for v in VERSIONS {
        let mut body = version(v);
        let doc = parse_document(&mut body).unwrap();
        let ev = Event::read(&doc).unwrap();
        let mut a = ev.authorization_request().unwrap();
        let verified = a.signals.verified_by_fraud_challenge;
        a.signals.verified_by_fraud_challenge = None;
        let ctx = Context::new(&a, &program, &set, &crate::decision::NoSpend, NOW);
        let d = decide(&ctx);
        let challenged = v == "2025-11-17.clover";
        assert_eq!(d.reason.as_str() == "challenge", challenged, "{v}: {d:?}");
        a.signals.verified_by_fraud_challenge = verified;
        let ctx = Context::new(&a, &program, &set, &crate::decision::NoSpend, NOW);
        assert!(decide(&ctx).approved, "{v}");
    }
}

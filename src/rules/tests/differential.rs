//! The compiled evaluator against the `cel` interpreter, on generated
//! expressions over every supported construct and generated contexts.

use std::fmt::Write as _;

use proptest::prelude::*;

use super::*;
use crate::decision::{SignalInt, SignalStr};
use crate::rules::reference::Interpreter;

const LISTS: &str = "[lists]\ncountries = [\"US\", \"FR\", \"KP\"]\ncodes = [5734, 5542, 7995]\nmany = [\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\",\"US\"]\n";

fn leaf_int() -> BoxedStrategy<String> {
    prop_oneof![
        Just("amount".to_string()),
        Just("merchant_amount".to_string()),
        Just("network_risk_score".to_string()),
        Just("spend.card.daily".to_string()),
        Just("spend.cardholder.all_time".to_string()),
        Just("velocity.card.count_1h".to_string()),
        Just("velocity.card.count_24h".to_string()),
        Just("now.hour".to_string()),
        Just("now.weekday".to_string()),
        Just("risk_assessment.merchant_dispute_risk.dispute_rate".to_string()),
        Just("fleet.cardholder_prompt_data.odometer".to_string()),
        (-3i64..5).prop_map(|i| i.to_string()),
        Just("9223372036854775807".to_string()),
        Just("(-9223372036854775807 - 1)".to_string()),
        Just("4250".to_string()),
    ]
    .boxed()
}

fn leaf_str() -> BoxedStrategy<String> {
    prop_oneof![
        Just("merchant.category".to_string()),
        Just("merchant.category_code".to_string()),
        Just("merchant.country".to_string()),
        Just("merchant.city".to_string()),
        Just("merchant.name".to_string()),
        Just("currency".to_string()),
        Just("card.type".to_string()),
        Just("card.status".to_string()),
        Just("cardholder.type".to_string()),
        Just("authorization_method".to_string()),
        Just("wallet".to_string()),
        Just("verification.cvc_check".to_string()),
        Just("card.metadata.tier".to_string()),
        Just("card.metadata[\"region\"]".to_string()),
        Just("card_presence".to_string()),
        Just("risk_assessment.fraud_risk.level".to_string()),
        Just("risk_assessment.card_testing_risk.risk_level".to_string()),
        Just("fuel.type".to_string()),
        Just("token".to_string()),
        Just("network_data.transaction_id".to_string()),
        prop::sample::select(vec![
            "\"US\"",
            "\"\"",
            "\"5734\"",
            "\"Sa\"",
            "\"é\"",
            "\"gold\"",
            "\"online\""
        ])
        .prop_map(str::to_string),
    ]
    .boxed()
}

fn leaf_uint() -> BoxedStrategy<String> {
    prop_oneof![
        (0u64..5).prop_map(|u| format!("{u}u")),
        Just("18446744073709551615u".to_string()),
    ]
    .boxed()
}

fn leaf_double() -> BoxedStrategy<String> {
    prop::sample::select(vec![
        "0.0",
        "1.5",
        "-2.25",
        "1e300",
        "42.5",
        "3.0",
        "risk_assessment.fraud_risk.score",
        "75.5",
    ])
    .prop_map(str::to_string)
    .boxed()
}

/// Decimal-string fields against literals a double holds exactly (the
/// interpreter reads the field as a double, the compiled rule as a decimal).
fn decimal_cmp() -> BoxedStrategy<String> {
    (
        prop::sample::select(vec!["fuel.quantity_decimal", "fuel.unit_cost_decimal"]),
        prop::sample::select(CMP.to_vec()),
        prop::sample::select(vec!["12.5", "0.25", "100.0", "-3.75", "0.0", "3.5"]),
    )
        .prop_map(|(f, op, lit)| format!("({f} {op} {lit})"))
        .boxed()
}

fn leaf_bool() -> BoxedStrategy<String> {
    prop::sample::select(vec![
        "true",
        "false",
        "is_amount_controllable",
        "verified_by_fraud_challenge",
    ])
    .prop_map(str::to_string)
    .boxed()
}

const ARITH: [&str; 5] = ["+", "-", "*", "/", "%"];
const CMP: [&str; 6] = ["==", "!=", "<", "<=", ">", ">="];

fn int(d: u32) -> BoxedStrategy<String> {
    if d == 0 {
        return leaf_int();
    }
    prop_oneof![
        3 => leaf_int(),
        1 => (int(d - 1), prop::sample::select(ARITH.to_vec()), int(d - 1))
            .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
        1 => int(d - 1).prop_map(|a| format!("(-{a})")),
        1 => (boolean(d - 1), int(d - 1), int(d - 1))
            .prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
        1 => string(d - 1).prop_map(|s| format!("size({s})")),
        1 => uint(d - 1).prop_map(|u| format!("int({u})")),
        1 => double(d - 1).prop_map(|x| format!("int({x})")),
    ]
    .boxed()
}

fn uint(d: u32) -> BoxedStrategy<String> {
    if d == 0 {
        return leaf_uint();
    }
    prop_oneof![
        2 => leaf_uint(),
        1 => (uint(d - 1), prop::sample::select(ARITH.to_vec()), uint(d - 1))
            .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
        1 => int(d - 1).prop_map(|i| format!("uint({i})")),
        1 => double(d - 1).prop_map(|x| format!("uint({x})")),
    ]
    .boxed()
}

fn double(d: u32) -> BoxedStrategy<String> {
    if d == 0 {
        return leaf_double();
    }
    prop_oneof![
        2 => leaf_double(),
        1 => (double(d - 1), prop::sample::select(vec!["+", "-", "*", "/"]), double(d - 1))
            .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
        1 => int(d - 1).prop_map(|i| format!("double({i})")),
        1 => uint(d - 1).prop_map(|u| format!("double({u})")),
        1 => double(d - 1).prop_map(|x| format!("(-{x})")),
    ]
    .boxed()
}

fn string(d: u32) -> BoxedStrategy<String> {
    if d == 0 {
        return leaf_str();
    }
    prop_oneof![
        4 => leaf_str(),
        1 => (boolean(d - 1), string(d - 1), string(d - 1))
            .prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
        1 => string(d - 1).prop_map(|s| format!("string({s})")),
    ]
    .boxed()
}

fn boolean(d: u32) -> BoxedStrategy<String> {
    if d == 0 {
        return leaf_bool();
    }
    let cmp = || prop::sample::select(CMP.to_vec());
    prop_oneof![
        1 => leaf_bool(),
        2 => (boolean(d - 1), boolean(d - 1)).prop_map(|(a, b)| format!("({a} && {b})")),
        2 => (boolean(d - 1), boolean(d - 1)).prop_map(|(a, b)| format!("({a} || {b})")),
        1 => boolean(d - 1).prop_map(|a| format!("!{a}")),
        1 => (boolean(d - 1), boolean(d - 1), boolean(d - 1))
            .prop_map(|(c, a, b)| format!("({c} ? {a} : {b})")),
        1 => (boolean(d - 1), prop::sample::select(vec!["==", "!="]), boolean(d - 1))
            .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
        2 => (int(d - 1), cmp(), int(d - 1)).prop_map(|(a, op, b)| format!("({a} {op} {b})")),
        1 => (uint(d - 1), cmp(), uint(d - 1)).prop_map(|(a, op, b)| format!("({a} {op} {b})")),
        1 => (double(d - 1), cmp(), double(d - 1)).prop_map(|(a, op, b)| format!("({a} {op} {b})")),
        1 => (double(d - 1), cmp(), int(d - 1)).prop_map(|(a, op, b)| format!("({a} {op} {b})")),
        1 => decimal_cmp(),
        2 => (string(d - 1), cmp(), string(d - 1)).prop_map(|(a, op, b)| format!("({a} {op} {b})")),
        1 => string(d - 1).prop_map(|s| format!("({s} in lists.countries)")),
        1 => string(d - 1).prop_map(|s| format!("({s} in lists.many)")),
        1 => string(d - 1).prop_map(|s| format!("({s} in [\"US\", \"DE\"])")),
        1 => int(d - 1).prop_map(|i| format!("({i} in lists.codes)")),
        1 => int(d - 1).prop_map(|i| format!("({i} in [1, 4250])")),
        1 => (string(d - 1), prop::sample::select(vec!["startsWith", "endsWith", "contains"]), string(d - 1))
            .prop_map(|(a, m, b)| format!("{a}.{m}({b})")),
        1 => (string(d - 1), prop::sample::select(vec!["^[A-Z]+$", "a", "^$", "[0-9]{4}", "é"]))
            .prop_map(|(s, re)| format!("{s}.matches(\"{re}\")")),
        1 => string(d - 1).prop_map(|s| format!("({s} in card.metadata)")),
        1 => Just("has(card.metadata.region)".to_string()),
        1 => Just("(size(lists.countries) == 3)".to_string()),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
struct Gen {
    amount: i64,
    merchant_amount: i64,
    risk: Option<i64>,
    controllable: bool,
    category: &'static str,
    mcc: &'static str,
    country: &'static str,
    city: String,
    name: &'static str,
    method: &'static str,
    wallet: &'static str,
    cvc: &'static str,
    card_type: &'static str,
    metadata: Vec<(&'static str, String)>,
    now: i64,
    spend: i64,
    velocity: (i64, i64),
    presence: &'static str,
    fraud_level: Option<&'static str>,
    score: Option<f64>,
    verified: Option<bool>,
    quantity: Option<&'static str>,
    dispute_rate: Option<i64>,
}

fn gen_ctx() -> impl Strategy<Value = Gen> {
    let amount = prop_oneof![
        -10i64..10_000,
        Just(i64::MAX),
        Just(i64::MIN),
        Just(0),
        Just(4250)
    ];
    (
        (
            amount.clone(),
            amount,
            prop::option::of(1i64..99),
            any::<bool>(),
        ),
        (
            prop::sample::select(vec![
                "computer_software_stores",
                "betting_casino_gambling",
                "",
            ]),
            prop::sample::select(vec!["5734", "5542", "7995", ""]),
            prop::sample::select(vec!["US", "FR", "KP", "DE", ""]),
            "[a-zA-Zé ]{0,6}",
            prop::sample::select(vec!["PIXELFORGE", "gold", "Sa Shop", "é"]),
        ),
        (
            prop::sample::select(vec!["online", "chip", "swipe"]),
            prop::sample::select(vec!["", "apple_pay"]),
            prop::sample::select(vec!["", "match", "mismatch"]),
            prop::sample::select(vec!["virtual", "physical"]),
            prop::collection::vec(
                (
                    prop::sample::select(vec!["tier", "region", "US"]),
                    "[a-z]{0,4}",
                ),
                0..3,
            ),
        ),
        (0i64..4_000_000_000, -5i64..100_000, (0i64..50, 0i64..500)),
        (
            prop::sample::select(vec!["", "present", "not_present", "hologram"]),
            prop::option::of(prop::sample::select(vec!["low", "elevated", "highest", ""])),
            prop::option::of(prop::sample::select(vec![0.0, 31.42, 75.5, 75.0, 99.9])),
            prop::option::of(any::<bool>()),
            prop::option::of(prop::sample::select(vec![
                "12.5", "0.25", "100", "-3.75", "3.5",
            ])),
            prop::option::of(0i64..100),
        ),
    )
        .prop_map(
            |(
                (amount, merchant_amount, risk, controllable),
                (category, mcc, country, city, name),
                (method, wallet, cvc, card_type, mut metadata),
                (now, spend, velocity),
                (presence, fraud_level, score, verified, quantity, dispute_rate),
            )| {
                // Stripe metadata keys are unique.
                metadata.sort_by_key(|(k, _)| *k);
                metadata.dedup_by_key(|(k, _)| *k);
                Gen {
                    amount,
                    merchant_amount,
                    risk,
                    controllable,
                    category,
                    mcc,
                    country,
                    city,
                    name,
                    method,
                    wallet,
                    cvc,
                    card_type,
                    metadata,
                    now,
                    spend,
                    velocity,
                    presence,
                    fraud_level,
                    score,
                    verified,
                    quantity,
                    dispute_rate,
                }
            },
        )
}

fn auth_of(g: &Gen) -> AuthRequest<'_> {
    let mut a = auth();
    a.amount = g.amount;
    a.merchant_amount = g.merchant_amount;
    a.network_risk_score = g.risk;
    a.is_amount_controllable = g.controllable;
    a.merchant.category = g.category;
    a.merchant.category_code = g.mcc;
    a.merchant.country = g.country;
    a.merchant.city = &g.city;
    a.merchant.name = g.name;
    a.authorization_method = g.method;
    a.wallet = g.wallet;
    a.verification.cvc_check = g.cvc;
    a.card.card_type = g.card_type;
    a.card.metadata = g.metadata.iter().map(|(k, v)| (*k, v.as_str())).collect();
    a.card_presence = g.presence;
    a.signals.set_str(SignalStr::FraudRiskLevel, g.fraud_level);
    a.signals
        .set_str(SignalStr::CardTestingRiskLevel, g.fraud_level);
    a.signals
        .set_str(SignalStr::FuelType, g.fraud_level.map(|_| "diesel"));
    a.signals
        .set_str(SignalStr::FuelQuantityDecimal, g.quantity);
    a.signals
        .set_str(SignalStr::FuelUnitCostDecimal, g.quantity.map(|_| "3.5"));
    a.signals
        .set_str(SignalStr::Token, g.verified.map(|_| "intok_1"));
    a.signals.fraud_risk_score = g.score;
    a.signals.verified_by_fraud_challenge = g.verified;
    a.signals.set_int(SignalInt::DisputeRate, g.dispute_rate);
    a.signals
        .set_int(SignalInt::FleetOdometer, g.dispute_rate.map(|d| d * 1000));
    a
}

/// Both engines on one expression: `Ok(bool)` or an error (of any kind).
fn both(when: &str, g: &Gen) -> (Result<bool, ()>, Result<bool, ()>) {
    let rules = format!("{LISTS}[[rule]]\nname = \"r\"\nwhen = '{when}'\naction = \"decline\"\n");
    let lines = file::LineIndex::new(&rules);
    let raw = file::parse(&rules, &lines).unwrap();
    let mut errs = Vec::new();
    let lists = build_lists(&raw.lists, &lines, &mut errs);
    let env = cel::Env::stdlib();
    let cond = compile_expr::<crate::rules::schema::Auth>(&env, when, &lists)
        .unwrap_or_else(|(_, k)| panic!("`{when}` should compile: {k}"));
    let interp = Interpreter::from_toml(&rules).unwrap();
    let a = auth_of(g);
    let program = ProgramControls::default();
    let set = RuleSet::empty();
    let spend = Spend {
        base: g.spend,
        velocity: g.velocity,
    };
    let ctx = Context::new(&a, &program, &set, &spend, g.now);
    let compiled = cond.eval(&ctx).map_err(|_| ());
    let act = interp.activation(&ctx);
    let reference = match env.compile(when).unwrap().execute(&act) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => panic!("`{when}` gave a non-bool {other:?}"),
        Err(_) => Err(()),
    };
    (compiled, reference)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn compiled_agrees_with_the_cel_interpreter(when in boolean(3), g in gen_ctx()) {
        let (compiled, reference) = both(&when, &g);
        prop_assert_eq!(compiled, reference, "when = {}", when);
    }
}

/// A guard the index can use: equality or `in` on a string field.
fn guard() -> BoxedStrategy<String> {
    let field = prop::sample::select(vec![
        "merchant.category",
        "merchant.category_code",
        "merchant.country",
        "merchant.name",
    ]);
    let value = prop::sample::select(vec![
        "\"US\"",
        "\"FR\"",
        "\"5734\"",
        "\"7995\"",
        "\"computer_software_stores\"",
        "\"PIXELFORGE\"",
        "\"\"",
    ]);
    prop_oneof![
        3 => (field.clone(), value.clone()).prop_map(|(f, v)| format!("{f} == {v}")),
        1 => (value, field.clone()).prop_map(|(v, f)| format!("{v} == {f}")),
        1 => field.clone().prop_map(|f| format!("{f} in lists.countries")),
        1 => field.prop_map(|f| format!("{f} in [\"5542\", \"DE\", \"gold\"]")),
    ]
    .boxed()
}

/// One rule: guards and arbitrary conditions in an `&&` chain (guard anywhere
/// in it, or none), decisive or shadow.
fn gen_rule() -> impl Strategy<Value = (String, bool, &'static str)> {
    (
        prop::collection::vec(prop_oneof![2 => guard(), 1 => boolean(2)], 1..4),
        prop::bool::weighted(0.2),
        prop::sample::select(vec![
            "action = \"decline\"\n",
            "action = \"decline\"\n",
            "action = \"challenge\"\n",
            "action = \"challenge\"\non_verified = \"skip\"\n",
        ]),
    )
        .prop_map(|(parts, shadow, action)| (parts.join(" && "), shadow, action))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The index never changes a verdict: indexed, linear and the `cel`
    /// interpreter agree on generated rule sets, shadow rules included.
    #[test]
    fn indexed_evaluation_agrees_with_linear_and_the_interpreter(
        rules in prop::collection::vec(gen_rule(), 8..40),
        ctxs in prop::collection::vec(gen_ctx(), 1..6),
    ) {
        let mut src = LISTS.to_string();
        for (i, (when, shadow, action)) in rules.iter().enumerate() {
            write!(src,
                "[[rule]]\nname = \"r{i}\"\nwhen = '{when}'\n{action}{}",
                if *shadow { "mode = \"shadow\"\n" } else { "" }
            ).unwrap();
        }
        let set = RuleSet::from_toml_unmetered(&src).unwrap();
        let interp = Interpreter::from_toml(&src).unwrap();
        let program = ProgramControls::default();
        for g in &ctxs {
            let a = auth_of(g);
            let spend = Spend { base: g.spend, velocity: g.velocity };
            let ctx = Context::new(&a, &program, &set, &spend, g.now);
            let indexed = set.evaluate(&ctx);
            prop_assert_eq!(&indexed, &set.evaluate_linear(&ctx));
            prop_assert_eq!(&indexed, &interp.evaluate(&ctx));
        }
    }
}

#[test]
fn guarded_rule_sets_are_indexed() {
    let mut src = LISTS.to_string();
    for i in 0..20 {
        write!(src,
            "[[rule]]\nname = \"r{i}\"\nwhen = 'merchant.category_code == \"{}\" && amount > {i}'\naction = \"decline\"\n",
            1000 + i
        )
        .unwrap();
    }
    src.push_str("[[rule]]\nname = \"last\"\nwhen = 'amount > 0'\naction = \"review\"\n");
    let set = RuleSet::from_toml_unmetered(&src).unwrap();
    assert_eq!(set.indexed_fields(), 1);
    let mut a = auth();
    let program = ProgramControls::default();
    for (mcc, want) in [("1007", "r7"), ("5734", "last")] {
        a.merchant.category_code = mcc;
        let ctx = Context::new(&a, &program, &set, &crate::decision::NoSpend, NOW);
        assert_eq!(&*set.evaluate(&ctx).decisive.unwrap().name, want);
    }
    // Too few rules to be worth a lookup: scanned.
    assert_eq!(
        RuleSet::from_toml_unmetered(&format!(
            "{LISTS}[[rule]]\nname=\"x\"\nwhen='merchant.country == \"US\"'\naction=\"decline\"\n"
        ))
        .unwrap()
        .indexed_fields(),
        0
    );
}

#[test]
fn rule_sets_agree_with_the_interpreter_on_the_bundled_rules() {
    let src =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules.toml")).unwrap();
    let set = RuleSet::from_toml_unmetered(&src).unwrap();
    let interp = Interpreter::from_toml(&src).unwrap();
    let program = ProgramControls::default();
    let spend = Spend {
        base: 10,
        velocity: (1, 2),
    };
    for amount in [100, 10_000, 600_000] {
        for country in ["US", "KP"] {
            for mcc in ["5542", "7995", "5734"] {
                let mut a = auth();
                a.amount = amount;
                a.merchant.country = country;
                a.merchant.category_code = mcc;
                a.is_amount_controllable = true;
                let ctx = Context::new(&a, &program, &set, &spend, NOW);
                assert_eq!(
                    set.evaluate(&ctx),
                    interp.evaluate(&ctx),
                    "{amount} {country} {mcc}"
                );
            }
        }
    }
}

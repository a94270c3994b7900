use proptest::prelude::*;

use super::*;
use crate::rules::reference::Interpreter;

fn req(json: &str) -> Result<PaymentRequest, RequestError> {
    PaymentRequest::parse(json.as_bytes())
}

fn sample() -> PaymentRequest {
    req(r#"{"id":"cs_1","amount":12000,"currency":"USD",
        "customer":{"id":"cus_1","country":"US","email":"a@example.com"},
        "card":{"country":"FR","brand":"visa","funding":"credit"},
        "line_items":[{"sku":"sku_tee","name":"Tee","quantity":2,"amount":3000},
                      {"sku":"sku_mug","quantity":1,"amount":6000}],
        "metadata":{"channel":"web"}}"#)
    .unwrap()
}

#[test]
fn bad_requests_name_the_field() {
    for (body, field) in [
        (r#"{"amount":1,"currency":"usd","colour":"red"}"#, "colour"),
        (
            r#"{"amount":1,"currency":"usd","line_items":[{"sku":"a","quantity":1,"colour":1}]}"#,
            "line_items[0].colour",
        ),
        (r#"{"amount":"12","currency":"usd"}"#, "amount"),
        (r#"{"amount":1}"#, "currency"),
        (
            r#"{"amount":1,"currency":"usd","customer":{"country":7}}"#,
            "customer.country",
        ),
        (
            r#"{"amount":1,"currency":"usd","line_items":[{"sku":"a","quantity":1},{"sku":"b","quantity":0}]}"#,
            "line_items[1].quantity",
        ),
        (
            r#"{"amount":1,"currency":"usd","line_items":[{"sku":"","quantity":1}]}"#,
            "line_items[0].sku",
        ),
        (r#"{"amount":-1,"currency":"usd"}"#, "amount"),
        (r#"{"amount":1,"currency":"dollars"}"#, "currency"),
        (
            r#"{"amount":1,"currency":"usd","metadata":{"k":1}}"#,
            "metadata.k",
        ),
        (r#"{"amount":1,"#, "."),
        ("[]", "."),
    ] {
        let e = req(body).unwrap_err();
        assert_eq!(e.field, field, "{body}: {e}");
    }
}

const RULES: &str = r#"
[lists]
out_of_stock = ["sku_mug", "sku_hat"]

[[rule]]
name = "vip"
when = 'metadata.channel == "vip"'
action = "approve"

[[rule]]
name = "out-of-stock"
when = 'line_items.exists(i, i.sku in lists.out_of_stock)'
action = "decline"
description = "An item is out of stock."

[[rule]]
name = "big-cart"
when = 'size(line_items) > 5 || quantity > 20'
action = "decline"

[[rule]]
name = "foreign-card"
when = 'card.country != customer.country'
action = "decline"
mode = "shadow"
"#;

#[test]
fn decides_by_the_first_matching_rule_with_reason_and_message() {
    let set = PaymentRuleSet::from_toml_unmetered(RULES).unwrap();
    let mut r = sample();
    let d = decide(&set, &r);
    assert!(!d.approved);
    assert_eq!(d.reason, "rule:out-of-stock");
    assert_eq!(d.message.as_deref(), Some("An item is out of stock."));
    assert_eq!(d.shadow, ["foreign-card"]);
    assert_eq!(d.id.as_deref(), Some("cs_1"));
    r.metadata.insert("channel".into(), "vip".into());
    let d = decide(&set, &r);
    assert!(d.approved);
    assert_eq!(d.rule.as_deref(), Some("vip"));
    r.metadata.clear();
    r.line_items.retain(|i| i.sku != "sku_mug");
    let d = decide(&set, &r);
    assert_eq!((d.approved, d.reason.as_str()), (true, "approved"));
    r.line_items[0].quantity = 21;
    assert_eq!(decide(&set, &r).reason, "rule:big-cart");
}

#[test]
fn payment_rules_are_checked_against_the_payment_context() {
    let err = |when: &str, action: &str| {
        let src = format!(
            "[lists]\nl = [\"a\"]\n[[rule]]\nname = \"r\"\nwhen = '{when}'\naction = \"{action}\"\n"
        );
        match PaymentRuleSet::from_toml_unmetered(&src) {
            Ok(_) => String::new(),
            Err(e) => e.errors[0].kind.to_string(),
        }
    };
    assert_eq!(err("line_items.all(i, i.quantity < 10)", "decline"), "");
    assert_eq!(
        err("line_items.exists_one(i, i.amount == 0)", "approve"),
        ""
    );
    assert!(err("true", "cap").contains("not available"));
    assert!(err("true", "review").contains("not available"));
    assert!(
        err("merchant.country == \"US\"", "decline").contains("unknown field `merchant.country`")
    );
    assert!(
        err("line_items.exists(i, i.colour == \"red\")", "decline")
            .contains("unknown field `i.colour`")
    );
    assert!(
        err(
            "line_items.exists(i, line_items.all(j, j.sku == i.sku))",
            "decline"
        )
        .contains("nested macros")
    );
    assert!(err("lists.l.exists(x, x == \"a\")", "decline").contains("only line_items"));
    assert!(err("line_items.map(i, i.amount).size() > 0", "decline").contains("unsupported"));
    assert!(err("line_items.exists(i, i)", "decline").contains("an item"));
    assert!(err("line_items.exists(i, i.quantity)", "decline").contains("needs a bool"));
    // The authorization context has no item list.
    let auth = crate::rules::RuleSet::from_toml_unmetered(
        "[[rule]]\nname=\"r\"\nwhen='line_items.exists(i, true)'\naction=\"decline\"\n",
    )
    .unwrap_err();
    assert!(auth.errors[0].kind.to_string().contains("unsupported"));
}

// === differential: compiled vs the `cel` interpreter on the payment context ===

const LISTS: &str =
    "[lists]\nout_of_stock = [\"sku_mug\", \"sku_hat\"]\ncountries = [\"US\", \"FR\"]\n";

fn item_int() -> BoxedStrategy<String> {
    prop_oneof![
        Just("i.quantity".to_string()),
        Just("i.amount".to_string()),
        (-2i64..4).prop_map(|n| n.to_string()),
        Just("amount".to_string()),
    ]
    .boxed()
}

fn item_str() -> BoxedStrategy<String> {
    prop_oneof![
        Just("i.sku".to_string()),
        Just("i.name".to_string()),
        Just("customer.country".to_string()),
        prop::sample::select(vec!["\"sku_mug\"", "\"\"", "\"Tee\""]).prop_map(str::to_string),
    ]
    .boxed()
}

/// A macro body: comparisons and list tests over the item, with arithmetic that
/// can fail (division by zero, overflow) so error handling is compared too.
fn body(d: u32) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        (
            item_int(),
            prop::sample::select(vec!["==", "<", ">=", "!="]),
            item_int()
        )
            .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
        (
            item_int(),
            prop::sample::select(vec!["/", "%", "*", "+"]),
            item_int()
        )
            .prop_map(|(a, op, b)| format!("({a} {op} {b} > 1)")),
        item_str().prop_map(|s| format!("({s} in lists.out_of_stock)")),
        (item_str(), item_str()).prop_map(|(a, b)| format!("({a} == {b})")),
        (item_str(), item_str()).prop_map(|(a, b)| format!("{a}.startsWith({b})")),
        Just("true".to_string()),
    ];
    if d == 0 {
        return leaf.boxed();
    }
    prop_oneof![
        2 => leaf,
        1 => (body(d - 1), body(d - 1)).prop_map(|(a, b)| format!("({a} && {b})")),
        1 => (body(d - 1), body(d - 1)).prop_map(|(a, b)| format!("({a} || {b})")),
        1 => body(d - 1).prop_map(|a| format!("!{a}")),
    ]
    .boxed()
}

fn expr() -> BoxedStrategy<String> {
    let top = prop_oneof![
        (
            prop::sample::select(vec!["exists", "all", "exists_one"]),
            body(2)
        )
            .prop_map(|(m, b)| format!("line_items.{m}(i, {b})")),
        prop::sample::select(vec![
            "size(line_items) > 1",
            "quantity >= 3",
            "metadata.channel == \"web\"",
            "has(metadata.channel)",
            "\"channel\" in metadata",
            "size(metadata) == 1",
            "card.country in lists.countries",
            "currency == \"usd\"",
            "card.brand.matches(\"^v\")",
            "customer.email.endsWith(\"example.com\")",
            "amount / (quantity - 3) > 0",
        ])
        .prop_map(str::to_string),
    ];
    (top.clone(), prop::sample::select(vec!["&&", "||"]), top)
        .prop_map(|(a, op, b)| format!("({a}) {op} ({b})"))
        .boxed()
}

fn gen_request() -> impl Strategy<Value = PaymentRequest> {
    let item = (
        prop::sample::select(vec!["sku_tee", "sku_mug", "sku_hat", "sku_x"]),
        prop::sample::select(vec!["", "Tee", "Mug"]),
        prop_oneof![1i64..5, Just(i64::MAX)],
        prop_oneof![0i64..5000, Just(i64::MAX)],
    )
        .prop_map(|(sku, name, quantity, amount)| LineItem {
            sku: sku.into(),
            name: name.into(),
            quantity,
            amount,
        });
    (
        prop::collection::vec(item, 0..4),
        0i64..20_000,
        prop::sample::select(vec!["US", "FR", "DE", ""]),
        prop::sample::select(vec!["US", "FR", ""]),
        prop::sample::select(vec!["visa", "mastercard", ""]),
        prop::option::of(prop::sample::select(vec!["web", "vip"])),
    )
        .prop_map(|(line_items, amount, cust, card, brand, channel)| {
            let mut r = sample();
            r.line_items = line_items;
            r.amount = amount;
            r.customer.country = cust.into();
            r.card.country = card.into();
            r.card.brand = brand.into();
            r.metadata.clear();
            if let Some(c) = channel {
                r.metadata.insert("channel".into(), c.into());
            }
            r
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn compiled_payment_rules_agree_with_the_cel_interpreter(
        when in expr(),
        r in gen_request(),
    ) {
        let src = format!("{LISTS}[[rule]]\nname = \"r\"\nwhen = '{when}'\naction = \"decline\"\n");
        let set = PaymentRuleSet::from_toml_unmetered(&src)
            .unwrap_or_else(|e| panic!("`{when}` should compile: {e}"));
        let interp = Interpreter::from_toml(&src).unwrap();
        let ctx = PaymentContext::new(&r);
        let compiled = set.0.evaluate_condition(&ctx);
        let act = interp.payment_activation(&ctx);
        let reference = match cel::Env::stdlib().compile(&when).unwrap().execute(&act) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => panic!("`{when}` gave {other:?}"),
            Err(_) => Err(()),
        };
        prop_assert_eq!(compiled, reference, "when = {}", when);
        // Whole-set evaluation agrees too (errors do not match).
        prop_assert_eq!(set.evaluate(&ctx), interp.evaluate_payment(&ctx));
    }
}

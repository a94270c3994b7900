//! Rules tests: compile errors with positions, evaluation order, shadow, runtime
//! errors, and the differential test against the `cel` interpreter.

use super::*;
use crate::decision::{
    AuthRequest, CategorySet, Currency, Interval, ProgramControls, Scope, SpendView,
};

/// 42.50 USD online at a software store, active card and cardholder.
/// The shared fixture with card metadata, which several rules read.
fn auth() -> AuthRequest<'static> {
    let mut a = crate::testing::auth("iauth_1", 4250);
    a.card.metadata = vec![("tier", "gold")];
    a
}

/// Past spend: `base * (interval index)` for the card, twice that for the
/// cardholder, so every field reads a different number.
struct Spend {
    base: i64,
    velocity: (i64, i64),
}

impl SpendView for Spend {
    fn spent(&self, scope: Scope, interval: Interval, _: Option<&CategorySet>, _: Currency) -> i64 {
        let i = Interval::ALL
            .iter()
            .zip(0_i64..)
            .find(|(x, _)| **x == interval)
            .map_or(0, |(_, i)| i);
        let k = if scope == Scope::Card { 1 } else { 2 };
        self.base * i * k
    }
    fn card_velocity(&self) -> (i64, i64) {
        self.velocity
    }
}

const NOW: i64 = 1_795_003_020; // 2026-11-18 (Wednesday) 11:57:00 UTC

fn verdict(rules: &str, auth: &AuthRequest<'_>) -> Verdict {
    let set = RuleSet::from_toml_unmetered(rules).unwrap_or_else(|e| panic!("{e}"));
    let program = ProgramControls::default();
    let spend = Spend {
        base: 1000,
        velocity: (3, 9),
    };
    let ctx = Context::new(auth, &program, &set, &spend, NOW);
    set.evaluate(&ctx)
}

/// Data-driven: `when` against the sample authorization → matched?
fn check(when: &str, expected: bool) {
    let rules = format!(
        "[lists]\ncountries = [\"US\", \"FR\"]\ncodes = [5734, 5542]\n[[rule]]\nname = \"r\"\nwhen = '{when}'\naction = \"decline\"\n"
    );
    let got = verdict(&rules, &auth()).decisive.is_some();
    assert_eq!(got, expected, "when = {when}");
}

#[test]
fn every_context_field_reads_the_authorization() {
    for (when, expected) in [
        ("amount == 4250", true),
        ("merchant_amount == 4250", true),
        ("currency == \"usd\" && merchant_currency == \"usd\"", true),
        ("merchant.category == \"computer_software_stores\"", true),
        ("merchant.category_code == \"5734\"", true),
        ("merchant.country in lists.countries", true),
        ("merchant.city.startsWith(\"San\")", true),
        ("merchant.name.contains(\"FORGE\")", true),
        ("merchant.network_id.endsWith(\"276\")", true),
        ("merchant.postal_code == \"94107\"", true),
        (
            "card.id == \"ic_1\" && card.type == \"virtual\" && card.status == \"active\"",
            true,
        ),
        (
            "card.metadata.tier == \"gold\" && card.metadata[\"tier\"] == \"gold\"",
            true,
        ),
        ("\"tier\" in card.metadata && !has(card.metadata.vip)", true),
        (
            "cardholder.id == \"ich_1\" && cardholder.type == \"individual\"",
            true,
        ),
        ("cardholder.status == \"active\"", true),
        ("authorization_method == \"online\" && wallet == \"\"", true),
        ("is_amount_controllable", false),
        ("network_risk_score == 12", true),
        (
            "verification.cvc_check == \"\" && verification.three_d_secure == \"\"",
            true,
        ),
        (
            "verification.expiry_check == \"\" && verification.address_postal_code_check == \"\"",
            true,
        ),
        (
            "spend.card.daily == 1000 && spend.card.all_time == 5000",
            true,
        ),
        (
            "spend.cardholder.weekly == 4000 && spend.cardholder.yearly == 8000",
            true,
        ),
        ("spend.card.monthly == 3000", true),
        (
            "velocity.card.count_1h == 3 && velocity.card.count_24h == 9",
            true,
        ),
        ("now.hour == 11 && now.weekday == 3", true),
        (
            "size(lists.countries) == 2 && size(card.metadata) == 1",
            true,
        ),
        ("int(merchant.category_code.size()) == 4", true),
        ("5734 in lists.codes && !(1 in lists.codes)", true),
        ("merchant.country in [\"DE\", \"FR\"]", false),
        ("merchant.name.matches(\"^PIXEL\")", true),
        ("amount > 1000 ? merchant.country == \"US\" : false", true),
        ("double(amount) / 100.0 > 42.4", true),
        ("uint(amount) > 4000u", true),
    ] {
        check(when, expected);
    }
}

#[test]
fn first_matching_decisive_rule_wins_and_shadow_never_decides() {
    let rules = r#"
[[rule]]
name = "shadow-big"
when = 'amount > 100'
action = "decline"
mode = "shadow"

[[rule]]
name = "no-match"
when = 'amount > 1000000'
action = "decline"

[[rule]]
name = "cap-it"
when = 'amount > 1000'
action = "cap"
amount = 1000

[[rule]]
name = "later"
when = 'true'
action = "decline"

[[rule]]
name = "shadow-us"
when = 'merchant.country == "US"'
action = "review"
mode = "shadow"
"#;
    let v = verdict(rules, &auth());
    let d = v.decisive.unwrap();
    assert_eq!(&*d.name, "cap-it");
    assert_eq!(d.action, Action::Cap(1000));
    let shadow: Vec<&str> = v.shadow.iter().map(|m| &*m.name).collect();
    assert_eq!(shadow, ["shadow-big", "shadow-us"]);
}

#[test]
fn shadow_rules_do_not_change_the_decision() {
    let shadow = r#"
[[rule]]
name = "would-decline"
when = 'true'
action = "decline"
mode = "shadow"
"#;
    let set = RuleSet::from_toml_unmetered(shadow).unwrap();
    let a = auth();
    let program = ProgramControls::default();
    let ctx = Context::new(&a, &program, &set, &crate::decision::NoSpend, NOW);
    let (d, v) = crate::decision::decide_traced(&ctx);
    assert!(d.approved);
    assert_eq!(v.shadow.len(), 1);
    assert!(v.decisive.is_none());
}

#[test]
fn runtime_errors_do_not_match_and_do_not_panic() {
    for when in [
        "amount / 0 == 1",
        "amount % (amount - 4250) == 0",
        "9223372036854775807 + amount > 0",
        "-(-9223372036854775807 - 1) > 0",
        "uint(-amount) > 0u",
        "card.metadata.missing == \"x\"",
        "int(1e300) > 0",
        "0u - 1u > 0u",
    ] {
        check(when, false);
    }
    // An error on one side of && / || is absorbed when the other side decides.
    check("amount / 0 == 1 || true", true);
    check("false && amount / 0 == 1", false);
    check("amount / 0 == 1 && false", false);
}

#[test]
fn version_is_a_content_hash() {
    let a = RuleSet::from_toml_unmetered("").unwrap();
    let b = RuleSet::from_toml_unmetered("# comment\n").unwrap();
    assert_eq!(a.version().len(), 12);
    assert_ne!(a.version(), b.version());
    assert_eq!(
        a.version(),
        RuleSet::from_toml_unmetered("").unwrap().version()
    );
}

/// Compiles `src` and returns its errors as "rule line:col kind-debug".
fn errors(src: &str) -> Vec<String> {
    match RuleSet::from_toml_unmetered(src) {
        Ok(_) => vec![],
        Err(e) => e
            .errors
            .iter()
            .map(|e| format!("{} {}:{} {}", e.rule, e.line, e.col, e.kind))
            .collect(),
    }
}

#[test]
fn errors_name_the_rule_line_and_column() {
    let src = r#"[lists]
hr = ["KP"]

[[rule]]
name = "a"
when = 'merchant.colour == "red"'
action = "decline"

[[rule]]
name = "b"
when = 'amount > "5"'
action = "decline"

[[rule]]
name = "c"
when = 'merchant.country in lists.nope'
action = "decline"

[[rule]]
name = "d"
when = 'amount >'
action = "decline"

[[rule]]
name = "e"
when = 'true'
action = "block"

[[rule]]
name = "a"
when = 'true'
action = "approve"

[[rule]]
name = "f"
when = 'merchant.name.matches("(")'
action = "decline"

[[rule]]
name = "g"
when = '[1,2].exists(x, x > amount)'
action = "decline"

[[rule]]
name = "h"
when = 'merchant.name + "x" == "y"'
action = "decline"

[[rule]]
name = "i"
when = 'amount'
action = "cap"
"#;
    let got = errors(src);
    // Columns count from the first character of the line; a `when` value starts
    // at column 9 (`when = '`).
    let want = [
        "a 6:9 unknown field `merchant.colour`",
        "b 11:16 type error: cannot compare int with string using >",
        "c 16:29 unknown list `nope`",
        "d 21:17 syntax error",
        "e 27:10 unknown action `block` (approve, decline, cap, review or challenge)",
        "a 30:8 duplicate rule name (first defined on line 5)",
        "f 36:31 invalid regex",
        "g 41:21 unsupported: macros",
        "h 46:23 unsupported: string concatenation",
        "i 51:9 type error: `when` must be a bool expression, this one is int",
        "i 52:10 action `cap` needs `amount`",
    ];
    for w in want {
        assert!(
            got.iter().any(|g| g.starts_with(w)),
            "missing {w:?} in {got:#?}"
        );
    }
    assert_eq!(got.len(), 11, "{got:#?}");
}

#[test]
#[expect(
    clippy::format_collect,
    reason = "builds a fixture once; a `write!` loop would not read better"
)]
fn bad_files_are_refused_whole() {
    let huge = format!("# {}\n", "x".repeat(10 * 1024 * 1024));
    assert!(errors(&huge)[0].contains("over the"), "10 MB file");
    let many: String = (0..=MAX_RULES)
        .map(|i| format!("[[rule]]\nname=\"r{i}\"\nwhen='true'\naction=\"approve\"\n"))
        .collect();
    assert!(errors(&many)[0].contains("rules, over the limit"));
    assert!(errors("[[rule]]\nname = \"x\"\n")[0].starts_with("- "));
    assert!(errors("[other]\n")[0].contains("invalid rules file"));
    assert!(errors("[lists]\nm = [\"a\", 1]\n")[0].contains("mixes"));
    // Lists hold only literals, never other lists or references to them, so a
    // cycle between lists cannot be written: nesting is refused, and a list name
    // used as an entry is just a string.
    assert!(errors("[lists]\na = [[\"b\"]]\nb = [\"x\"]\n")[0].contains("strings or integers"));
    assert!(
        errors("[lists]\na = [\"lists.a\"]\n[[rule]]\nname=\"x\"\nwhen='merchant.country in lists.a'\naction=\"decline\"\n")
            .is_empty()
    );
    assert!(
        errors("[[rule]]\nname=\"x y\"\nwhen='true'\naction=\"approve\"\n")[0]
            .contains("may only contain")
    );
    assert!(
        errors("[[rule]]\nname=\"x\"\nwhen='true'\naction=\"approve\"\nmode=\"dry\"\n")[0]
            .contains("unknown mode")
    );
    assert!(
        errors("[[rule]]\nname=\"x\"\nwhen='amount'\naction=\"approve\"\n")[0]
            .contains("must be a bool")
    );
}

#[test]
fn loading_a_10_mb_file_from_disk_is_refused_without_reading_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, vec![b'#'; 10 * 1024 * 1024]).unwrap();
    let err = RuleSet::load(&path).unwrap_err().to_string();
    assert!(err.contains("10485760 bytes"), "{err}");
}

/// Issue 15 (found writing `fuzz/fuzz_targets/rules_cel.rs`): `1+1+…+1` within the
/// 8 KiB `when` limit is 4 096 levels deep, and the compiler recursed once per
/// level: compiling it overflowed the stack and aborted the process (a rule set
/// published over the admin API took the server down). Compiled here on a thread
/// with the 2 MiB stack tokio gives the blocking threads publishes compile on.
#[test]
fn a_deeply_nested_when_overflowed_the_stack() {
    let compile = |when: String| {
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let src =
                    format!("[[rule]]\nname = \"deep\"\nwhen = '{when}'\naction = \"decline\"\n");
                RuleSet::from_toml_unmetered(&src)
                    .map(|s| s.len())
                    .map_err(|e| e.to_string())
            })
            .unwrap()
            .join()
            .unwrap()
    };
    let chain = |n: usize, term: &str, op: &str| vec![term; n].join(op);
    for when in [
        format!("{} > 0", chain(MAX_EXPR_BYTES / 2 - 4, "1", "+")),
        format!("{} > 0", chain(MAX_EXPR_BYTES / 7 - 1, "amount", "+")),
        format!("{} == 0", chain(MAX_EXPR_BYTES / 2 - 5, "1", "*")),
    ] {
        let err = compile(when).unwrap_err();
        assert!(err.contains("nested deeper than 100 levels"), "{err}");
    }
    // The parser folds unary chains (one byte a level) and caps parentheses at
    // 96: whatever it answers, compiling them returns.
    for when in [
        format!("{}true", "!".repeat(MAX_EXPR_BYTES - 4)),
        format!("{}1 > 0", "-".repeat(MAX_EXPR_BYTES - 5)),
        format!("{}true{}", "(".repeat(95), ")".repeat(95)),
    ] {
        let _ = compile(when);
    }
    // Shallow enough, or balanced by the parser (`&&` chains), still compiles.
    assert_eq!(compile(format!("{} > 0", chain(90, "amount", "+"))), Ok(1));
    assert_eq!(
        compile(chain(MAX_EXPR_BYTES / 15, "amount > 1", " && ")),
        Ok(1)
    );
}

mod differential;
mod signals;

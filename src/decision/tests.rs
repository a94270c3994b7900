use super::*;
use crate::rules::RuleSet;
use crate::testing::limit;

/// An active card and cardholder, no controls, 42.50 USD online at a software store.
fn auth() -> AuthRequest<'static> {
    crate::testing::auth("iauth_1", 4250)
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "fills an `Option` field of `Controls`; `None` is written where meant"
)]
fn cats(names: &[&str]) -> Option<CategorySet> {
    let mut s = CategorySet::default();
    for n in names {
        s.insert_name(n);
    }
    Some(s)
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "fills an `Option` field of `Controls`; `None` is written where meant"
)]
fn countries(codes: &[&str]) -> Option<CountrySet> {
    let mut s = CountrySet::default();
    for c in codes {
        s.insert(c);
    }
    Some(s)
}

/// A spend view with the same past spend for every window.
struct Spent(i64);
impl SpendView for Spent {
    fn spent(&self, _: Scope, _: Interval, _: Option<&CategorySet>, _: Currency) -> i64 {
        self.0
    }
}

/// Runs `decide` on `auth` with program controls `program` and compares
/// `(approved, amount, reason, rule)` with `expected`.
fn check_with(
    auth: &AuthRequest<'_>,
    program: &ProgramControls,
    spend: &dyn SpendView,
    expected: (bool, Option<i64>, &str, Option<&str>),
) {
    let rules = RuleSet::empty();
    let ctx = Context::new(auth, program, &rules, spend, 1_795_003_020);
    let d = decide(&ctx);
    let source = d.source.as_ref().map(|s| match s {
        Source::Control(level, c) => format!("{}.{}", level.as_str(), c),
        Source::Status(s) => (*s).to_string(),
        Source::Rule(r) => r.to_string(),
    });
    assert_eq!(
        (d.approved, d.amount, d.reason.as_str(), source.as_deref()),
        expected,
        "decision {d:?}"
    );
}

fn check(auth: &AuthRequest<'_>, expected: (bool, Option<i64>, &str, Option<&str>)) {
    check_with(auth, &ProgramControls::default(), &NoSpend, expected);
}

#[test]
fn approves_by_default() {
    check(&auth(), (true, None, "approved", None));
}

#[test]
fn statuses_decline_first() {
    let mut a = auth();
    a.card.status = CardStatus::Inactive;
    a.card.controls.blocked_categories = cats(&["computer_software_stores"]);
    check(&a, (false, None, "card_inactive", Some("card.status")));
    a.card.status = CardStatus::Canceled;
    check(&a, (false, None, "card_canceled", Some("card.status")));
    a.card.status = CardStatus::Other;
    check(&a, (false, None, "card_inactive", Some("card.status")));

    let mut a = auth();
    a.cardholder.status = CardholderStatus::Inactive;
    check(
        &a,
        (
            false,
            None,
            "cardholder_inactive",
            Some("cardholder.status"),
        ),
    );
    a.cardholder.status = CardholderStatus::Blocked;
    check(
        &a,
        (false, None, "cardholder_blocked", Some("cardholder.status")),
    );
}

#[test]
fn categories_by_name_and_mcc() {
    let mut a = auth();
    a.card.controls.blocked_categories = cats(&["computer_software_stores"]);
    check(
        &a,
        (
            false,
            None,
            "category_blocked",
            Some("card.blocked_categories"),
        ),
    );

    // The category name is unknown to the control, but the MCC points at a blocked one.
    let mut a = auth();
    a.merchant.category = "miscellaneous";
    a.merchant.category_code = "7995";
    a.cardholder.controls.blocked_categories = cats(&["betting_casino_gambling"]);
    check(
        &a,
        (
            false,
            None,
            "category_blocked",
            Some("cardholder.blocked_categories"),
        ),
    );

    let mut a = auth();
    a.card.controls.allowed_categories = cats(&["bakeries"]);
    check(
        &a,
        (
            false,
            None,
            "category_not_allowed",
            Some("card.allowed_categories"),
        ),
    );
    a.card.controls.allowed_categories = cats(&["bakeries", "computer_software_stores"]);
    check(&a, (true, None, "approved", None));
}

#[test]
fn empty_lists_mean_unset() {
    // Stripe's cardholder objects carry `allowed_categories: []`: no restriction.
    let mut a = auth();
    a.card.controls.allowed_categories = Some(CategorySet::default());
    a.card.controls.allowed_merchant_countries = Some(CountrySet::default());
    a.card.controls.allowed_card_presences = Some(PresenceSet::default());
    check(&a, (true, None, "approved", None));
}

#[test]
fn countries_and_presence() {
    let mut a = auth();
    a.card.controls.blocked_merchant_countries = countries(&["US"]);
    check(
        &a,
        (
            false,
            None,
            "country_blocked",
            Some("card.blocked_merchant_countries"),
        ),
    );

    let mut a = auth();
    a.cardholder.controls.allowed_merchant_countries = countries(&["GB", "FR"]);
    check(
        &a,
        (
            false,
            None,
            "country_not_allowed",
            Some("cardholder.allowed_merchant_countries"),
        ),
    );

    let mut a = auth();
    let mut p = PresenceSet::default();
    p.insert(Presence::NotPresent);
    a.card.controls.blocked_card_presences = Some(p);
    check(
        &a,
        (
            false,
            None,
            "card_presence_blocked",
            Some("card.blocked_card_presences"),
        ),
    );

    let mut a = auth();
    let mut p = PresenceSet::default();
    p.insert(Presence::Present);
    a.card.controls.allowed_card_presences = Some(p);
    check(
        &a,
        (
            false,
            None,
            "card_presence_not_allowed",
            Some("card.allowed_card_presences"),
        ),
    );
}

/// Stripe's presence enum is open: a value added after this code is kept, so an
/// allow-list of only new values still restricts (it is not "unset"), a block
/// list naming the new value declines it, and an unknown presence on the
/// authorization is in no list of known values.
#[test]
fn unknown_card_presences_are_kept_not_dropped() {
    let mut a = auth();
    let mut p = PresenceSet::default();
    assert!(!p.insert_str("hologram"));
    a.card.controls.allowed_card_presences = Some(p.clone());
    check(
        &a,
        (
            false,
            None,
            "card_presence_not_allowed",
            Some("card.allowed_card_presences"),
        ),
    );
    a.card_presence = "hologram";
    check(&a, (true, None, "approved", None));

    let mut a = auth();
    a.card_presence = "hologram";
    a.cardholder.controls.blocked_card_presences = Some(p);
    check(
        &a,
        (
            false,
            None,
            "card_presence_blocked",
            Some("cardholder.blocked_card_presences"),
        ),
    );

    let mut a = auth();
    a.card_presence = "hologram";
    let mut known = PresenceSet::default();
    known.insert(Presence::NotPresent);
    a.card.controls.blocked_card_presences = Some(known.clone());
    check(&a, (true, None, "approved", None));
    a.card.controls.blocked_card_presences = None;
    a.card.controls.allowed_card_presences = Some(known);
    check(
        &a,
        (
            false,
            None,
            "card_presence_not_allowed",
            Some("card.allowed_card_presences"),
        ),
    );
}

#[test]
fn per_authorization_limit_declines_or_partially_approves() {
    let mut a = auth();
    a.card.controls.spending_limits = vec![limit(4000, Interval::PerAuthorization)];
    check(
        &a,
        (
            false,
            None,
            "spending_limit",
            Some("card.per_authorization"),
        ),
    );

    a.is_amount_controllable = true;
    check(
        &a,
        (
            true,
            Some(4000),
            "spending_limit",
            Some("card.per_authorization"),
        ),
    );

    // The most restrictive limit across levels wins.
    a.cardholder.controls.spending_limits = vec![limit(3000, Interval::PerAuthorization)];
    check(
        &a,
        (
            true,
            Some(3000),
            "spending_limit",
            Some("cardholder.per_authorization"),
        ),
    );

    // Exactly at the limit is fine.
    let mut a = auth();
    a.card.controls.spending_limits = vec![limit(4250, Interval::PerAuthorization)];
    check(&a, (true, None, "approved", None));
}

#[test]
fn partial_must_cover_cashback_and_be_positive() {
    let mut a = auth();
    a.is_amount_controllable = true;
    a.cashback_amount = 2000;
    a.card.controls.spending_limits = vec![limit(1500, Interval::PerAuthorization)];
    check(
        &a,
        (
            false,
            None,
            "spending_limit",
            Some("card.per_authorization"),
        ),
    );

    let mut a = auth();
    a.is_amount_controllable = true;
    a.card.controls.spending_limits = vec![limit(0, Interval::PerAuthorization)];
    check(
        &a,
        (
            false,
            None,
            "spending_limit",
            Some("card.per_authorization"),
        ),
    );
}

#[test]
fn limit_category_filter() {
    let mut a = auth();
    a.card.controls.spending_limits = vec![SpendingLimit {
        amount: 100,
        interval: Interval::PerAuthorization,
        categories: cats(&["taxicabs_limousines"]),
    }];
    check(&a, (true, None, "approved", None));
    a.merchant.category = "taxicabs_limousines";
    a.merchant.category_code = "4121";
    check(
        &a,
        (
            false,
            None,
            "spending_limit",
            Some("card.per_authorization"),
        ),
    );
}

#[test]
fn interval_limits_use_past_spend() {
    let mut a = auth();
    a.card.controls.spending_limits = vec![limit(10_000, Interval::Daily)];
    check_with(
        &a,
        &ProgramControls::default(),
        &Spent(5000),
        (true, None, "approved", None),
    );
    check_with(
        &a,
        &ProgramControls::default(),
        &Spent(6000),
        (false, None, "spending_limit", Some("card.daily")),
    );
    a.is_amount_controllable = true;
    check_with(
        &a,
        &ProgramControls::default(),
        &Spent(6000),
        (true, Some(4000), "spending_limit", Some("card.daily")),
    );
}

#[test]
fn currency_mismatch_policy() {
    let mut a = auth();
    a.cardholder.controls.spending_limits = vec![limit(1_000_000, Interval::Monthly)];
    a.cardholder.controls.spending_limits_currency = Currency::parse("eur");
    check(
        &a,
        (false, None, "currency_mismatch", Some("cardholder.monthly")),
    );
    let program = ProgramControls {
        currency_mismatch: CurrencyMismatch::Ignore,
        ..Default::default()
    };
    check_with(&a, &program, &NoSpend, (true, None, "approved", None));
}

#[test]
fn program_controls_tighten_stripe() {
    let a = auth();
    let mut program = ProgramControls::default();
    program.controls.blocked_merchant_countries = countries(&["US"]);
    check_with(
        &a,
        &program,
        &NoSpend,
        (
            false,
            None,
            "country_blocked",
            Some("program.blocked_merchant_countries"),
        ),
    );

    let program = ProgramControls {
        blocked_mccs: vec![MccRange::parse("5700-5799").unwrap()],
        ..Default::default()
    };
    check_with(
        &a,
        &program,
        &NoSpend,
        (false, None, "mcc_blocked", Some("program.blocked_mccs")),
    );
}

#[test]
fn card_controls_come_before_cardholder_and_program() {
    let mut a = auth();
    a.card.controls.blocked_merchant_countries = countries(&["US"]);
    a.cardholder.controls.blocked_categories = cats(&["computer_software_stores"]);
    let program = ProgramControls {
        blocked_mccs: vec![MccRange::parse("5734").unwrap()],
        ..Default::default()
    };
    check_with(
        &a,
        &program,
        &NoSpend,
        (
            false,
            None,
            "country_blocked",
            Some("card.blocked_merchant_countries"),
        ),
    );
}

#[test]
fn approval_overrides_are_one_more_controls_layer() {
    let a = auth();
    let program = ProgramControls::default();
    let rules = RuleSet::empty();
    let card = Controls {
        spending_limits: vec![limit(4000, Interval::PerAuthorization)],
        ..Controls::default()
    };
    let holder = Controls {
        blocked_merchant_countries: countries(&["US"]),
        ..Controls::default()
    };
    let d = decide(
        &Context::new(&a, &program, &rules, &NoSpend, 0).with_approvals(Some(&card), None, false),
    );
    assert_eq!((d.approved, d.reason), (false, Reason::SpendingLimit));
    assert_eq!(
        d.source,
        Some(Source::Control(Level::CardOverride, "per_authorization"))
    );
    let d = decide(
        &Context::new(&a, &program, &rules, &NoSpend, 0).with_approvals(None, Some(&holder), false),
    );
    assert_eq!(
        d.source,
        Some(Source::Control(
            Level::CardholderOverride,
            "blocked_merchant_countries"
        ))
    );
    // No override: approved as before.
    assert!(decide(&Context::new(&a, &program, &rules, &NoSpend, 0)).approved);
}

#[test]
fn an_allowance_lets_a_review_rule_pass_and_nothing_else() {
    let a = auth();
    let program = ProgramControls::default();
    let rules = RuleSet::from_toml_unmetered(
        "[[rule]]\nname = \"big\"\nwhen = 'amount > 1000'\naction = \"review\"\n",
    )
    .unwrap();
    let plain = decide(&Context::new(&a, &program, &rules, &NoSpend, 0));
    assert_eq!((plain.approved, plain.reason), (false, Reason::Review));
    let allowed =
        decide(&Context::new(&a, &program, &rules, &NoSpend, 0).with_approvals(None, None, true));
    assert!(allowed.approved);
    let decline = RuleSet::from_toml_unmetered(
        "[[rule]]\nname = \"big\"\nwhen = 'amount > 1000'\naction = \"decline\"\n",
    )
    .unwrap();
    let d =
        decide(&Context::new(&a, &program, &decline, &NoSpend, 0).with_approvals(None, None, true));
    assert!(!d.approved, "an allowance only passes review rules");
}

#[test]
fn every_category_is_found_by_its_name_and_its_mcc_and_nothing_else_is() {
    use super::categories::CATEGORIES;
    for (i, row) in CATEGORIES.iter().enumerate() {
        let id = CategoryId::try_from(i).unwrap();
        assert_eq!(category_by_name(row.name), Some(id), "{}", row.name);
        if !row.mcc.is_empty() {
            assert_eq!(category_by_mcc(row.mcc), Some(id), "{}", row.mcc);
        }
        // A name one byte off (shorter, longer, last byte changed) is not a category
        // unless the table has it.
        let near = [
            row.name[..row.name.len() - 1].to_string(),
            format!("{}s", row.name),
            format!("{}_", &row.name[..row.name.len() - 1]),
        ];
        for n in &near {
            let expected = CATEGORIES.iter().position(|r| r.name == n.as_str());
            assert_eq!(
                category_by_name(n).map(usize::from),
                expected,
                "{n:?} (near {})",
                row.name
            );
        }
    }
    for bad in ["", "a", "bakeries ", "BAKERIES", "bakeries\0"] {
        assert_eq!(category_by_name(bad), None, "{bad:?}");
    }
    let with_mcc: std::collections::HashSet<&str> = CATEGORIES.iter().map(|r| r.mcc).collect();
    for n in 0..10_000 {
        let mcc = format!("{n:04}");
        assert_eq!(
            category_by_mcc(&mcc).is_some(),
            with_mcc.contains(mcc.as_str()),
            "{mcc}"
        );
    }
    for bad in ["", "541", "54111", "54a1", "+541", "-541", "５４１１"] {
        assert_eq!(category_by_mcc(bad), None, "{bad:?}");
    }
}

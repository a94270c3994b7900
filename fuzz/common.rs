//! What several targets share: a spend history, the sample authorization's
//! variants and the evaluation property (the indexed rule evaluation answers as
//! the plain scan does, which `rules::index` promises).

#![allow(dead_code, reason = "each target uses a different part")]

use cardgate::decision::{
    AuthRequest, CategorySet, Context, Currency, Interval, ProgramControls, Scope, SpendView,
};
use cardgate::rules::RuleSet;

/// 2026-11-18 11:57:00 UTC, the fixtures' time.
pub const NOW: i64 = 1_795_003_020;

/// Past spend that differs per scope and interval, so every spend field reads a
/// different number.
pub struct Spend;

impl SpendView for Spend {
    fn spent(&self, scope: Scope, interval: Interval, _: Option<&CategorySet>, _: Currency) -> i64 {
        let i = Interval::ALL
            .iter()
            .position(|x| *x == interval)
            .unwrap_or(0);
        let k = if scope == Scope::Card { 1 } else { 2 };
        i64::try_from(i).unwrap_or(0) * 1000 * k
    }
    fn card_velocity(&self) -> (i64, i64) {
        (3, 9)
    }
}

/// The sample authorization and a few variants that flip the string fields the
/// rule index keys on, so both the indexed and the skipped paths are taken.
pub fn authorizations() -> Vec<AuthRequest<'static>> {
    let base = cardgate::testing::auth("iauth_fuzz", 4250);
    let mut gold = base.clone();
    gold.card.metadata = vec![("tier", "gold")];
    let mut fuel = base.clone();
    fuel.merchant.category = "service_stations";
    fuel.merchant.category_code = "5542";
    fuel.merchant.country = "KP";
    fuel.is_amount_controllable = true;
    let mut big = base.clone();
    big.amount = i64::MAX;
    big.merchant_amount = i64::MIN;
    big.network_risk_score = None;
    big.merchant.country = "";
    vec![base, gold, fuel, big]
}

/// Evaluates `set` on every sample, indexed and linear, and panics if the two
/// disagree (the index is an optimization only).
pub fn check_index_agrees(set: &RuleSet) {
    let program = ProgramControls::default();
    for auth in authorizations() {
        let ctx = Context::new(&auth, &program, set, &Spend, NOW);
        let indexed = set.evaluate(&ctx);
        let linear = set.evaluate_linear(&ctx);
        assert_eq!(
            indexed,
            linear,
            "indexed and linear evaluation disagree\n{}",
            set.source()
        );
    }
}

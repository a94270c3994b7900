//! The record step: the decision-log row of one decided request, built from the
//! parsed request and the answer, for the journal and the backtest.

use super::spend::Decided;
use crate::decision::{Decision, Matched, Source};
use crate::journal::LoggedDecision;

/// The decision-log row for `d`, answered with `decision` at `now`.
pub(super) fn row(d: &Decided<'_>, decision: &Decision, now: i64) -> LoggedDecision {
    let auth = d.auth;
    let rule = decision.source.as_ref().map(|s| match s {
        Source::Control(level, control) => format!("{}.{control}", level.as_str()),
        Source::Status(s) => (*s).to_string(),
        Source::Rule(name) => name.to_string(),
    });
    LoggedDecision {
        id: 0,
        event_id: d.event_id.to_string(),
        authorization_id: auth.id.to_string(),
        card: auth.card.id.to_string(),
        cardholder: auth.cardholder.id.to_string(),
        amount: auth.amount,
        currency: auth.currency.as_str().to_string(),
        merchant_category: auth.merchant.category.to_string(),
        merchant_mcc: auth.merchant.category_code.to_string(),
        merchant_country: auth.merchant.country.to_string(),
        merchant_name: auth.merchant.name.to_string(),
        approved: decision.approved,
        approved_amount: match (decision.approved, decision.amount) {
            (false, _) => 0,
            (true, a) => a.unwrap_or(auth.amount),
        },
        reason: decision.reason.as_str().to_string(),
        rule,
        ruleset: d.ruleset.to_string(),
        latency_us: i64::try_from(d.start.elapsed().as_micros()).unwrap_or(i64::MAX),
        decided_at: now,
        event_json: d.raw.as_ref().map(|b| b.to_vec()).unwrap_or_default(),
        spend_json: d
            .snapshot
            .map(|s| s.to_json(auth.currency).to_string())
            .unwrap_or_else(|| "{}".into()),
        shadow_rules: shadow_names(d.shadow),
    }
}

/// The names of matched shadow rules as a JSON array, `None` when there are none
/// (so the common case allocates nothing).
pub fn shadow_names(shadow: &[Matched]) -> Option<String> {
    if shadow.is_empty() {
        return None;
    }
    let names: Vec<&str> = shadow.iter().map(|m| &*m.name).collect();
    serde_json::to_string(&names).ok()
}

//! The record step: the decision-log row of one decided request, built from the
//! parsed request and the answer, for the journal and the backtest — with the
//! compact replay record (`journal::seen`) of everything the decision saw beyond
//! its event body, so the backtest can rebuild its context exactly.

use std::sync::Arc;

use super::Authorizer;
use super::spend::Decided;
use crate::decision::{AuthRequest, Controls, Decision, Matched, Scope, Source, SpendView};
use crate::journal::seen::{self, SEEN_FORMAT, Seen};
use crate::journal::{DecisionRow, PackedText, RowText};

/// The decision-log row for `d`, answered with `decision`; `cut` when the
/// reserve's re-check changed what `decide()` answered.
pub(super) fn row(a: &Authorizer, d: &Decided<'_>, decision: &Decision, cut: bool) -> DecisionRow {
    let auth = d.auth;
    let rule = decision.source.as_ref().map(|s| match s {
        Source::Control(level, control) => format!("{}.{control}", level.as_str()),
        Source::Status(s) => (*s).to_string(),
        Source::Rule(name) => name.to_string(),
    });
    let mut blobs = Vec::with_capacity(1);
    blobs.push((a.program_blob.0, Arc::clone(&a.program_blob.1)));
    let seen = seen_of(a, d, cut, &mut blobs);
    let shadow_rules = shadow_names(d.shadow);
    DecisionRow {
        // One buffer for the fourteen text columns, copied from the parsed
        // request (which borrows the request buffer the writer never sees).
        text: PackedText::new(&RowText {
            event_id: d.event_id,
            authorization_id: auth.id,
            card: auth.card.id,
            cardholder: auth.cardholder.id,
            currency: auth.currency.as_str(),
            merchant_category: auth.merchant.category,
            merchant_mcc: auth.merchant.category_code,
            merchant_country: auth.merchant.country,
            merchant_name: auth.merchant.name,
            reason: decision.reason.as_str(),
            rule: rule.as_deref(),
            ruleset: d.ruleset,
            // The window totals live in `seen` now; the JSON column is kept for
            // rows written before it (see `rules::backtest`).
            spend_json: "{}",
            shadow_rules: shadow_rules.as_deref(),
        }),
        amount: auth.amount,
        approved: decision.approved,
        approved_amount: match (decision.approved, decision.amount) {
            (false, _) => 0,
            (true, a) => a.unwrap_or(auth.amount),
        },
        latency_us: i64::try_from(d.start.elapsed().as_micros()).unwrap_or(i64::MAX),
        decided_at: a.now(),
        event_json: d.raw.clone().unwrap_or_default(),
        format: SEEN_FORMAT,
        seen: seen.encode(),
        blobs,
    }
}

/// Everything the decision read that the event body does not carry.
fn seen_of(a: &Authorizer, d: &Decided<'_>, cut: bool, blobs: &mut Vec<(i64, Arc<[u8]>)>) -> Seen {
    let auth: &AuthRequest<'_> = d.auth;
    let past = d.past;
    let mut s = Seen {
        now: d.now,
        at: d.at,
        velocity: past.card_velocity(),
        review_allowed: d.review_allowed,
        recheck_cut: cut,
        program: a.program_blob.0,
        card_override: d.card_override.map(|c| blob(c, blobs)),
        cardholder_override: d.cardholder_override.map(|c| blob(c, blobs)),
        signals: *past.signals(),
        merchant: crate::signals::merchant_key(crate::signals::merchant_id(auth)),
        ..Seen::default()
    };
    for (i, interval) in seen::WINDOWS.into_iter().enumerate() {
        s.card[i] = past.spent(Scope::Card, interval, None, auth.currency);
        s.cardholder[i] = past.spent(Scope::Cardholder, interval, None, auth.currency);
    }
    seen::for_each_filtered_limit(
        auth,
        &a.program,
        d.card_override,
        d.cardholder_override,
        |scope, interval, cats| {
            s.filtered
                .push(past.spent(scope, interval, Some(cats), auth.currency));
        },
    );
    s
}

/// An override's body, added to the row's blobs; its hash.
fn blob(c: &Controls, blobs: &mut Vec<(i64, Arc<[u8]>)>) -> i64 {
    let body = seen::encode_controls(c);
    let hash = seen::blob_hash(&body);
    blobs.push((hash, Arc::from(body)));
    hash
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

//! The ledger's steps on the webhook path, kept out of `webhook.rs` so the decision
//! path there stays a short list of stages:
//!
//! - [`snapshot`] before `decide()`: a lock-free copy of the card's and
//!   cardholder's window totals;
//! - [`settle`] after it: atomic re-check and reserve, the commit (awaited in `sync`
//!   durability), and the decision-log row;
//! - [`lifecycle`] for `issuing_authorization.*` / `issuing_transaction.created`.
//!
//! A ledger or store failure answers the configured fallback with cause `ledger`
//! (never a 5xx); a lifecycle event is always acknowledged with 200, failures are a
//! log line and a metric.

use std::time::Instant;

use bytes::Bytes;

use super::AppState;
use super::webhook::fallback;
use crate::decision::{AuthRequest, Decision, FallbackCause, Reason, Source};
use crate::ledger::{Applied, Fact, SpendSnapshot};
use crate::metrics as m;
use crate::rules::Matched;
use crate::store::{Durability, LoggedDecision, Write};
use crate::stripe::{self, Event};

/// Window time of an authorization: its `created`, or now when Stripe sent none.
fn at(state: &AppState, auth: &AuthRequest<'_>) -> i64 {
    if auth.created > 0 {
        auth.created
    } else {
        state.now()
    }
}

/// The spend `decide()` sees; `None` without a ledger.
pub(super) fn snapshot(state: &AppState, auth: &AuthRequest<'_>) -> Option<SpendSnapshot> {
    let ledger = state.ledger.as_ref()?;
    Some(ledger.snapshot(auth, at(state, auth)))
}

/// Everything [`settle`] needs about one decided request.
pub(super) struct Decided<'a> {
    pub event_id: &'a str,
    pub auth: &'a AuthRequest<'a>,
    pub decision: Decision,
    pub raw: Option<Bytes>,
    pub snapshot: Option<&'a SpendSnapshot>,
    pub ruleset: &'a str,
    /// Shadow rules that matched (never applied).
    pub shadow: &'a [Matched],
    pub start: Instant,
    pub deadline: Instant,
}

/// Reserves an approval, makes it durable as configured, logs the decision, and
/// returns what to answer.
pub(super) async fn settle(state: &AppState, d: Decided<'_>) -> Decision {
    let Some(ledger) = &state.ledger else {
        return d.decision;
    };
    // A fallback is not a decision of ours: Stripe's `created` event will tell the
    // ledger what was held.
    let reservation = if matches!(d.decision.reason, Reason::Fallback(_)) {
        crate::ledger::Reservation {
            decision: d.decision.clone(),
            fact: None,
        }
    } else {
        ledger.reserve(
            d.event_id,
            d.auth,
            &state.config.program,
            at(state, d.auth),
            d.decision.clone(),
        )
    };
    let Some(store) = &state.store else {
        return reservation.decision;
    };
    let decision = reservation.decision;
    let row = log_row(state, &d, &decision);
    let mut writes = Vec::with_capacity(2);
    if let Some(f) = &reservation.fact {
        writes.push(Write::Fact(f.clone()));
    }
    writes.push(Write::Decision(Box::new(row)));

    match (&reservation.fact, store.durability()) {
        (Some(fact), Durability::Sync) => {
            match tokio::time::timeout_at(d.deadline.into(), store.commit(writes)).await {
                Ok(Ok(())) => decision,
                outcome => {
                    let why = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "deadline passed before the commit".to_string(),
                    };
                    // The answer will not be this approval, so it must hold nothing.
                    // (A commit that lands after the deadline leaves a stored hold the
                    // in-memory ledger lacks until restart: the conservative side.)
                    ledger.cancel(fact);
                    tracing::error!(
                        authorization = d.auth.id,
                        "hold not committed, answering the fallback: {why}"
                    );
                    fallback(state, FallbackCause::Ledger)
                }
            }
        }
        _ => {
            if let Err(e) = store.enqueue(writes) {
                tracing::error!(authorization = d.auth.id, "decision not stored: {e}");
                if let Some(fact) = &reservation.fact {
                    ledger.cancel(fact);
                    return fallback(state, FallbackCause::Ledger);
                }
            }
            decision
        }
    }
}

fn log_row(state: &AppState, d: &Decided<'_>, decision: &Decision) -> LoggedDecision {
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
        latency_us: d.start.elapsed().as_micros() as i64,
        decided_at: state.now(),
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
pub(super) fn shadow_names(shadow: &[Matched]) -> Option<String> {
    if shadow.is_empty() {
        return None;
    }
    let names: Vec<&str> = shadow.iter().map(|m| &*m.name).collect();
    serde_json::to_string(&names).ok()
}

fn type_label(t: &str) -> &'static str {
    match t {
        stripe::AUTHORIZATION_CREATED => stripe::AUTHORIZATION_CREATED,
        stripe::AUTHORIZATION_UPDATED => stripe::AUTHORIZATION_UPDATED,
        stripe::TRANSACTION_CREATED => stripe::TRANSACTION_CREATED,
        _ => "other",
    }
}

/// Applies a lifecycle event to the ledger and stores it. Never fails the request.
pub(super) async fn lifecycle(state: &AppState, event: &Event<'_>) {
    let Some(ledger) = &state.ledger else {
        return;
    };
    let label = type_label(event.event_type);
    let count = |result: &'static str| {
        metrics::counter!(m::LIFECYCLE_EVENTS, "type" => label, "result" => result).increment(1);
    };
    let fact = match stripe::lifecycle_fact(event) {
        Ok(Some(f)) => f,
        Ok(None) => return count("ignored"),
        Err(e) => {
            tracing::warn!(event = event.id, r#type = label, path = %e.path,
                "lifecycle event not applied: {e}");
            return count("invalid");
        }
    };
    let applied = match ledger.apply(&fact) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(
                event = event.id,
                r#type = label,
                "lifecycle event not applied: {e}"
            );
            return count("invalid");
        }
    };
    match applied {
        Applied::Duplicate => {
            tracing::info!(
                event = event.id,
                r#type = label,
                "duplicate lifecycle event ignored"
            );
            return count(applied.as_str());
        }
        Applied::UnknownAuthorization => {
            tracing::warn!(
                event = event.id,
                authorization = record_of(&fact),
                "transaction for an authorization the ledger has not seen; kept until it arrives"
            );
        }
        Applied::Applied => {}
    }
    if let Some(store) = &state.store {
        let writes = vec![Write::Fact(fact)];
        let stored = match store.durability() {
            Durability::Sync => store.commit(writes).await,
            Durability::Async => store.enqueue(writes),
        };
        if let Err(e) = stored {
            tracing::error!(
                event = event.id,
                "lifecycle event applied but not stored: {e}"
            );
            return count("store_error");
        }
    }
    count(applied.as_str());
}

fn record_of(f: &Fact) -> String {
    f.record_id()
}

//! The ledger's steps around `decide()`:
//!
//! - [`snapshot`] before it: a lock-free copy of the card's and cardholder's
//!   window totals;
//! - [`settle`] after it: atomic re-check and reserve, the commit (awaited in `sync`
//!   durability), and the decision-log row (built by `record`).
//!
//! A ledger or journal failure answers the configured fallback with cause `ledger`
//! (never an error).

use std::time::Instant;

use bytes::Bytes;

use super::Authorizer;
use crate::decision::{AuthRequest, Decision, FallbackCause, Matched, Reason};
use crate::journal::{Durability, Write};
use crate::ledger::{HoldsError, SpendSnapshot};

/// Window time of an authorization: its `created`, or now when Stripe sent none.
fn at(a: &Authorizer, auth: &AuthRequest<'_>) -> i64 {
    if auth.created > 0 {
        auth.created
    } else {
        a.now()
    }
}

/// The spend `decide()` sees; `Ok(None)` without a ledger. A shared store that
/// does not answer before `deadline` is an error: the caller answers the fallback.
pub(super) async fn snapshot<'a>(
    a: &'a Authorizer,
    auth: &'a AuthRequest<'a>,
    deadline: Instant,
) -> Result<Option<SpendSnapshot>, HoldsError> {
    let Some(holds) = a.holds.as_ref() else {
        return Ok(None);
    };
    match tokio::time::timeout_at(deadline.into(), holds.snapshot(auth, at(a, auth))).await {
        Ok(Ok(s)) => Ok(Some(s)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HoldsError::Unavailable(
            "no spend snapshot before the deadline".into(),
        )),
    }
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
pub(super) async fn settle(a: &Authorizer, d: Decided<'_>) -> Decision {
    let Some(ledger) = &a.holds else {
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
        let reserve = ledger.reserve(
            d.event_id,
            d.auth,
            &a.program,
            at(a, d.auth),
            d.decision.clone(),
        );
        // A shared store's reserve is one round trip; what it cannot answer in
        // time is the fallback. (A reserve that commits after the deadline holds
        // funds for an answer not given: the conservative side, released by
        // Stripe's `created` event.)
        match tokio::time::timeout_at(d.deadline.into(), reserve).await {
            Ok(Ok(r)) => r,
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no reserve before the deadline".to_string(),
                };
                tracing::error!(authorization = d.auth.id, "reserve failed: {why}");
                crate::ledger::Reservation {
                    decision: a.fallback(FallbackCause::Ledger),
                    fact: None,
                }
            }
        }
    };
    let Some(store) = &a.journal else {
        return reservation.decision;
    };
    let decision = reservation.decision;
    let row = super::record::row(&d, &decision, a.now());
    // A durable backend committed the hold inside `reserve`; only the log row is left.
    let durable = ledger.durable();
    let mut writes = Vec::with_capacity(2);
    if let (Some(f), false) = (&reservation.fact, durable) {
        writes.push(Write::Fact(f.clone()));
    }
    writes.push(Write::Decision(Box::new(row)));

    if let (Some(fact), Durability::Sync, false) = (&reservation.fact, store.durability(), durable)
    {
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
                a.fallback(FallbackCause::Ledger)
            }
        }
    } else {
        if let Err(e) = store.enqueue(writes) {
            tracing::error!(authorization = d.auth.id, "decision not stored: {e}");
            if let (Some(fact), false) = (&reservation.fact, durable) {
                ledger.cancel(fact);
                return a.fallback(FallbackCause::Ledger);
            }
        }
        decision
    }
}

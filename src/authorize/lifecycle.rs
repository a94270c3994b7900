//! The lifecycle step: `issuing_authorization.created`/`.updated` and
//! `issuing_transaction.created` become ledger facts, applied and journaled.
//! An invalid event is a log line and a metric (redelivery cannot fix it); a
//! shared store that cannot record the fact fails the request, so Stripe delivers
//! the event again.
//!
//! Stand-ins: an `issuing_authorization.created` is the truth about an
//! authorization, also one the network or Stripe decided without cardgate's
//! answer (network stand-in, `network_fallback`, webhook timeout or error). The
//! ledger takes its state from the event whatever cardgate answered: a stand-in
//! approval holds and counts against later limits, a stand-in decline holds
//! nothing (and releases cardgate's own hold if it had approved), `expired`
//! releases the hold and a later capture still counts. Such events are counted
//! in `cardgate_stand_in_authorizations_total` and logged.

use super::Authorizer;
use crate::journal::{Durability, Write};
use crate::ledger::{Applied, Fact, HoldsError};
use crate::metrics as m;
use crate::stripe::{self, Event};

fn type_label(t: &str) -> &'static str {
    match t {
        stripe::AUTHORIZATION_CREATED => stripe::AUTHORIZATION_CREATED,
        stripe::AUTHORIZATION_UPDATED => stripe::AUTHORIZATION_UPDATED,
        stripe::TRANSACTION_CREATED => stripe::TRANSACTION_CREATED,
        _ => "other",
    }
}

/// Applies a lifecycle event to the ledger and stores it.
///
/// # Errors
/// A durable holds backend (PostgreSQL) could not record the fact: the message
/// says why, and the caller answers 503.
pub(super) async fn apply(a: &Authorizer, event: &Event<'_>) -> Result<(), String> {
    let Some(ledger) = &a.holds else {
        return Ok(());
    };
    let label = type_label(event.event_type);
    let count = |result: &'static str| m::count_lifecycle(label, result);
    let fact = match stripe::lifecycle_fact(event) {
        Ok(Some(f)) => f,
        Ok(None) => {
            count("ignored");
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(event = event.id, r#type = label, path = %e.path,
                "lifecycle event not applied: {e}");
            count("invalid");
            return Ok(());
        }
    };
    if let Some(s) = stripe::stand_in(event) {
        // Only a backend that can tell without a round trip says (the in-memory
        // ledger); a shared store counts "unknown".
        let ours = ledger.reserved(&fact);
        let outcome = if s.approved { "approved" } else { "declined" };
        metrics::counter!(
            m::STAND_IN_AUTHORIZATIONS,
            "reason" => s.reason,
            "outcome" => outcome,
            "ours" => match ours { Some(true) => "approved", Some(false) => "none", None => "unknown" },
        )
        .increment(1);
        tracing::warn!(
            event = event.id,
            authorization = record_of(&fact),
            reason = s.reason,
            outcome,
            cardgate_approved = ?ours,
            "stand-in authorization: the ledger follows the network's outcome"
        );
    }
    let applied = match ledger.apply(&fact).await {
        Ok(a) => a,
        Err(HoldsError::Invalid(e)) => {
            tracing::warn!(
                event = event.id,
                r#type = label,
                "lifecycle event not applied: {e}"
            );
            count("invalid");
            return Ok(());
        }
        Err(e @ HoldsError::Unavailable(_)) => {
            tracing::error!(
                event = event.id,
                r#type = label,
                "lifecycle event not recorded, asking for redelivery: {e}"
            );
            count("store_error");
            return Err(e.to_string());
        }
    };
    match applied {
        Applied::Duplicate => {
            tracing::info!(
                event = event.id,
                r#type = label,
                "duplicate lifecycle event ignored"
            );
            count(applied.as_str());
            return Ok(());
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
    // A durable backend stored the fact while applying it.
    if let (Some(store), false) = (&a.journal, ledger.durable()) {
        let writes = vec![Write::Fact(fact)];
        let stored = match store.durability() {
            Durability::Sync => store.commit_patient(writes).await,
            Durability::Async => store.enqueue(writes),
        };
        if let Err(e) = stored {
            tracing::error!(
                event = event.id,
                "lifecycle event applied but not stored: {e}"
            );
            count("store_error");
            return Ok(());
        }
    }
    count(applied.as_str());
    Ok(())
}

fn record_of(f: &Fact) -> String {
    f.record_id()
}

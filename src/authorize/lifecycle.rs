//! The lifecycle step: `issuing_authorization.created`/`.updated` and
//! `issuing_transaction.created` become ledger facts, applied and journaled.
//! Never fails the request: failures are a log line and a metric.
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
use crate::ledger::{Applied, Fact};
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

/// Applies a lifecycle event to the ledger and stores it. Never fails the request.
pub(super) async fn apply(a: &Authorizer, event: &Event<'_>) {
    let Some(ledger) = &a.ledger else {
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
    if let Some(s) = stripe::stand_in(event) {
        let ours = ledger.reserved(&fact);
        let outcome = if s.approved { "approved" } else { "declined" };
        metrics::counter!(
            m::STAND_IN_AUTHORIZATIONS,
            "reason" => s.reason,
            "outcome" => outcome,
            "ours" => if ours { "approved" } else { "none" },
        )
        .increment(1);
        tracing::warn!(
            event = event.id,
            authorization = record_of(&fact),
            reason = s.reason,
            outcome,
            cardgate_approved = ours,
            "stand-in authorization: the ledger follows the network's outcome"
        );
    }
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
    if let Some(store) = &a.journal {
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

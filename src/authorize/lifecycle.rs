//! The lifecycle step: `issuing_authorization.created`/`.updated` and
//! `issuing_transaction.created` become ledger facts, applied and journaled.
//! An invalid event is a log line and a metric (redelivery cannot fix it); a
//! shared store that cannot record the fact fails the request, so Stripe delivers
//! the event again.

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
    let count = |result: &'static str| {
        metrics::counter!(m::LIFECYCLE_EVENTS, "type" => label, "result" => result).increment(1);
    };
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
            Durability::Sync => store.commit(writes).await,
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

//! The lifecycle step: `issuing_authorization.created`/`.updated` and
//! `issuing_transaction.created` become ledger facts, applied and journaled.
//! Never fails the request: failures are a log line and a metric.

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

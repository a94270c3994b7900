//! The ledger's steps around `decide()`:
//!
//! - [`snapshot`] before it: a lock-free copy of the card's and cardholder's
//!   window totals, with the behavioural signals beside it ([`Past`]);
//! - [`settle`] after it: atomic re-check and reserve, the commit (awaited in `sync`
//!   durability), and the decision-log row (built by `record`).
//!
//! A ledger or journal failure answers the configured fallback with cause `ledger`
//! (never an error).

use std::time::Instant;

use bytes::Bytes;

use super::Authorizer;
use crate::decision::{
    AuthRequest, CategorySet, Controls, Currency, Decision, FallbackCause, Interval, Matched,
    Reason, Scope, Signals, SpendView,
};
use crate::journal::{Durability, Held, Write};
use crate::ledger::{Fact, HoldsError, SpendSnapshot};
use crate::signals;

/// Window time of an authorization: its `created`, or now when Stripe sent none.
pub(super) fn at(a: &Authorizer, auth: &AuthRequest<'_>) -> i64 {
    if auth.created > 0 {
        auth.created
    } else {
        a.now()
    }
}

/// What `decide()` reads about the past: the ledger's snapshot (`None` without a
/// ledger: nothing spent) and the behavioural signals.
#[derive(Debug, Default)]
pub(super) struct Past {
    pub snapshot: Option<SpendSnapshot>,
    pub signals: Signals,
}

impl SpendView for Past {
    fn spent(
        &self,
        scope: Scope,
        interval: Interval,
        categories: Option<&CategorySet>,
        currency: Currency,
    ) -> i64 {
        self.snapshot
            .as_ref()
            .map_or(0, |s| s.spent(scope, interval, categories, currency))
    }

    fn card_velocity(&self) -> (i64, i64) {
        self.snapshot
            .as_ref()
            .map_or((0, 0), SpendView::card_velocity)
    }

    fn signals(&self) -> &Signals {
        &self.signals
    }
}

/// The spend and signals `decide()` sees; no snapshot without a ledger. A shared
/// store that does not answer before `deadline` is an error: the caller answers the
/// fallback (deciding without the spend would let interval limits pass unchecked).
pub(super) async fn snapshot(
    a: &Authorizer,
    auth: &AuthRequest<'_>,
    deadline: Instant,
) -> Result<Past, HoldsError> {
    let snapshot = match a.holds.as_ref() {
        None => None,
        Some(holds) => {
            match tokio::time::timeout_at(deadline.into(), holds.snapshot(auth, at(a, auth))).await
            {
                Ok(Ok(s)) => Some(s),
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(HoldsError::Unavailable(
                        "no spend snapshot before the deadline".into(),
                    ));
                }
            }
        }
    };
    Ok(Past {
        snapshot,
        signals: a.signals.as_ref().map_or(Signals::NONE, |s| {
            s.read(&signals::Key::of(auth), at(a, auth))
        }),
    })
}

/// Hands the settled answer to the signals, so the next request sees it.
fn observe(a: &Authorizer, d: &Decided<'_>, decision: &Decision) {
    let Some(s) = &a.signals else { return };
    let auth = d.auth;
    s.note(&signals::Observation {
        key: signals::Key::of(auth),
        country: signals::country(auth.merchant.country),
        amount: auth.amount,
        approved_amount: if decision.approved {
            decision.amount.unwrap_or(auth.amount)
        } else {
            0
        },
        declined: !decision.approved,
        now: d.at,
    });
}

/// Everything [`settle`] needs about one decided request.
pub(super) struct Decided<'a> {
    pub event_id: &'a str,
    pub auth: &'a AuthRequest<'a>,
    pub decision: Decision,
    pub raw: Option<Bytes>,
    pub past: &'a Past,
    /// The clock `decide()` read.
    pub now: i64,
    /// The window time the snapshot and the signals went by.
    pub at: i64,
    pub card_override: Option<&'a Controls>,
    pub cardholder_override: Option<&'a Controls>,
    /// An allowance covered this retry.
    pub review_allowed: bool,
    pub ruleset: &'a str,
    /// Shadow rules that matched (never applied).
    pub shadow: &'a [Matched],
    pub start: Instant,
    pub deadline: Instant,
}

/// Reserves an approval, makes it durable as configured, logs the decision, and
/// returns what to answer.
pub(super) async fn settle(a: &Authorizer, d: Decided<'_>) -> Decision {
    let decision = settle_inner(a, &d).await;
    observe(a, &d, &decision);
    decision
}

async fn settle_inner(a: &Authorizer, d: &Decided<'_>) -> Decision {
    let Some(ledger) = &a.holds else {
        return d.decision.clone();
    };
    // Read once: without Stripe's `created` it is the clock, and a rebuilt reserve
    // (below) must name the same window as the one held.
    let when = at(a, d.auth);
    // A fallback is not a decision of ours: Stripe's `created` event will tell the
    // ledger what was held.
    let reservation = if matches!(d.decision.reason, Reason::Fallback(_)) {
        crate::ledger::Reservation {
            decision: d.decision.clone(),
            fact: None,
        }
    } else {
        let reserve = ledger.reserve(d.event_id, d.auth, &a.program, when, d.decision.clone());
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
    let cut = reservation.decision != d.decision;
    let decision = reservation.decision;
    let row = super::record::row(a, d, &decision, cut);
    // A durable backend committed the hold inside `reserve`; only the log row is left.
    let durable = ledger.durable();
    // The reserve travels as two integers beside its row (the row already names
    // the authorization, card, cardholder, currency and merchant the fact repeats):
    // one write, which SQLite keeps as one decision row plus a narrow reserve row.
    // The rare failure below takes the hold back by the amount held: the reserve
    // is a pure function of the request, its window time and that amount.
    let kept = match (&reservation.fact, durable) {
        (Some(Fact::Reserve { amount, auth, .. }), false) => Some(Held {
            amount: *amount,
            at: auth.created,
        }),
        _ => None,
    };
    let held = kept.map(|h| h.amount);
    let row = Box::new(row);
    let writes = vec![match kept {
        Some(h) => {
            debug_assert_eq!(
                reservation.fact,
                Some(h.fact(&row.text.get())),
                "the row rebuilds its reserve"
            );
            Write::Held(row, h)
        }
        None => Write::Decision(row),
    }];
    let cancel = |amount| ledger.cancel(&Fact::reserve(d.event_id, d.auth, when, amount));

    if let (Some(amount), Durability::Sync) = (held, store.durability()) {
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
                cancel(amount);
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
            if let Some(amount) = held {
                cancel(amount);
                return a.fallback(FallbackCause::Ledger);
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::clock::Clock;
    use crate::config::{Config, Overrides};
    use crate::journal::{Committed, Journal, JournalError};
    use crate::ledger::Ledger;
    use crate::rules::RuleSet;
    use crate::testing;

    /// A journal whose every write fails, as a full disk or a dead writer would.
    struct Broken(Durability);

    impl Journal for Broken {
        fn durability(&self) -> Durability {
            self.0
        }

        fn enqueue(&self, _writes: Vec<Write>) -> Result<(), JournalError> {
            Err(JournalError::WriterGone)
        }

        fn commit(&self, _writes: Vec<Write>) -> Committed<'_> {
            Box::pin(std::future::ready(Err(JournalError::Commit(
                "disk full".into(),
            ))))
        }
    }

    fn authorizer(ledger: &Arc<Ledger>, durability: Durability) -> Authorizer {
        let env = HashMap::from([(
            "CARDGATE_WEBHOOK_SECRET".to_string(),
            "whsec_test".to_string(),
        )]);
        let config = Config::from_toml(
            include_str!("../../config/cardgate.toml"),
            Path::new("cardgate.toml"),
            &env,
            &Overrides::default(),
        )
        .unwrap();
        Authorizer::new(&config, RuleSet::empty(), Clock::system())
            .with_ledger(Arc::clone(ledger), Some(Arc::new(Broken(durability))))
    }

    /// The reserve is handed to the journal uncopied and rebuilt to be taken back:
    /// a failed write must still leave the ledger holding nothing, in either
    /// durability, and a later request must find the room again.
    #[tokio::test]
    async fn a_reserve_whose_write_fails_holds_nothing() {
        for durability in [Durability::Sync, Durability::Async] {
            let ledger = Arc::new(Ledger::new());
            let a = authorizer(&ledger, durability);
            let auth = testing::auth("iauth_1", 5000);
            let past = Past::default();
            let start = Instant::now();
            let d = Decided {
                event_id: "evt_1",
                auth: &auth,
                decision: Decision::approve(),
                raw: None,
                past: &past,
                now: auth.created,
                at: auth.created,
                card_override: None,
                cardholder_override: None,
                review_allowed: false,
                ruleset: "test",
                shadow: &[],
                start,
                deadline: start + Duration::from_mins(1),
            };
            let answer = settle(&a, d).await;
            assert_eq!(
                answer.reason,
                Reason::Fallback(FallbackCause::Ledger),
                "{durability:?}"
            );
            assert_eq!(ledger.holds(), 0, "{durability:?}");
            for interval in crate::ledger::WINDOWS {
                assert_eq!(
                    ledger.total("ich_1", None, interval, auth.created, auth.currency),
                    0,
                    "{durability:?} {interval:?}"
                );
            }
            let again = Fact::reserve("evt_1", &auth, auth.created, 5000);
            assert!(
                !ledger.reserved(&again),
                "{durability:?}: the request's reserve is gone"
            );
        }
    }
}

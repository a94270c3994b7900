//! The copy of a card's and cardholder's window totals that `decide()` reads
//! without any lock. (What the decision read of it is recorded by
//! `authorize/record.rs` into the decision log's replay record, `journal::seen`.)

use super::entry::CatKey;
use crate::decision::{CategorySet, Currency, Interval, Scope, SpendView};

#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) interval: Interval,
    pub(super) own_card: bool,
    pub(super) currency: Currency,
    pub(super) cat: CatKey,
    pub(super) amount: i64,
}

/// A copy of a card's and cardholder's current window totals, taken before
/// `decide()` so the decision runs without any lock.
///
/// Velocity counts the card's authorizations the ledger knows of (approved here,
/// or reported by an authorization event, declines included) whose `created` lies
/// in the last hour / day before the request's time. Requests this instance
/// declined are not counted until Stripe's `created` event reports them.
#[derive(Debug, Clone, Default)]
pub struct SpendSnapshot {
    pub(super) rows: Vec<Row>,
    pub(super) velocity: (i64, i64),
}

/// One window total as a shared store reports it, for [`SpendSnapshot::from_totals`].
#[derive(Debug, Clone, Copy)]
pub struct SnapshotTotal<'a> {
    /// The window's interval (the window is the one holding the request's time).
    pub interval: Interval,
    /// Spent on the request's own card (else on another card of its cardholder).
    pub own_card: bool,
    /// Currency of the spend.
    pub currency: Currency,
    /// Merchant category name of the spend's authorization.
    pub category: &'a str,
    /// Its merchant category code.
    pub mcc: &'a str,
    /// Minor units.
    pub amount: i64,
}

impl SpendSnapshot {
    /// A snapshot from totals computed elsewhere (a shared store), read exactly as
    /// the in-memory ledger's own: categories are resolved the same way.
    pub fn from_totals<'a>(
        totals: impl IntoIterator<Item = SnapshotTotal<'a>>,
        velocity: (i64, i64),
    ) -> Self {
        SpendSnapshot {
            rows: totals
                .into_iter()
                .map(|t| Row {
                    interval: t.interval,
                    own_card: t.own_card,
                    currency: t.currency,
                    cat: CatKey::new(t.category, t.mcc),
                    amount: t.amount,
                })
                .collect(),
            velocity,
        }
    }
}

impl SpendView for SpendSnapshot {
    fn spent(
        &self,
        scope: Scope,
        interval: Interval,
        categories: Option<&CategorySet>,
        currency: Currency,
    ) -> i64 {
        self.rows
            .iter()
            .filter(|r| {
                r.interval == interval
                    && r.currency == currency
                    && (scope == Scope::Cardholder || r.own_card)
                    && r.cat.matches(categories)
            })
            .fold(0i64, |s, r| s.saturating_add(r.amount))
    }

    fn card_velocity(&self) -> (i64, i64) {
        self.velocity
    }
}

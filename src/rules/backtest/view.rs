//! What a replayed decision sees: the spend, velocity and signals its live
//! decision recorded, plus the knock-on of the candidate's earlier changes to the
//! same card and cardholder.

use std::cell::Cell;

use crate::decision::{
    CategorySet, Currency, Interval, MerchantCategory, Scope, Signals, SpendView,
};
use crate::journal::seen::WINDOWS;
use crate::ledger::window_start;

/// How much an earlier change of the candidate moved the spend of its card and
/// cardholder: the hold the candidate would have made minus the recorded one,
/// counted in the windows of that authorization's time, under the limits its
/// category falls in.
#[derive(Debug, Clone)]
pub(super) struct Delta {
    pub card: Box<str>,
    /// Window time of the changed authorization (its `created`): the spend
    /// windows and the 1 h / 24 h signals it counts in.
    pub at: i64,
    pub currency: Currency,
    pub category: Box<str>,
    pub mcc: Box<str>,
    /// Held with the candidate minus held as recorded.
    pub amount: i64,
    /// +1 when the candidate declines what was approved, -1 for the reverse.
    pub declines: i64,
}

/// The recorded view of one decision's past.
#[derive(Debug, Clone, Default)]
pub(super) struct Base<'c> {
    /// Unfiltered totals per window, in `journal::seen::WINDOWS` order.
    pub card: [i64; 5],
    pub cardholder: [i64; 5],
    pub velocity: (i64, i64),
    /// Spend under each category-filtered limit, identified by its category set.
    pub filtered: Vec<(Scope, Interval, &'c CategorySet, i64)>,
    pub signals: Signals,
}

/// A [`SpendView`] over a [`Base`] and the deltas of earlier changes.
pub(super) struct View<'c, 'd> {
    pub base: Base<'c>,
    pub deltas: &'d [Delta],
    pub card: &'d str,
    /// Window time of the replayed authorization.
    pub at: i64,
    /// Set when a filtered query found no recorded value (the replay then used
    /// the unfiltered total: approximate).
    pub missed: Cell<bool>,
}

impl<'c, 'd> View<'c, 'd> {
    pub fn new(base: Base<'c>, deltas: &'d [Delta], card: &'d str, at: i64) -> Self {
        let mut v = View {
            base,
            deltas,
            card,
            at,
            missed: Cell::new(false),
        };
        // The signals that depend on answers follow the candidate's earlier changes.
        for d in deltas.iter().filter(|d| &*d.card == card) {
            let age = at - d.at;
            if age < 86_400 {
                v.base.signals.card_amount_24h += d.amount;
                v.base.signals.card_declines_24h += d.declines;
                if age < 3_600 {
                    v.base.signals.card_declines_1h += d.declines;
                }
            }
        }
        v
    }

    fn recorded(&self, scope: Scope, interval: Interval, cats: Option<&CategorySet>) -> i64 {
        let unfiltered = || {
            let i = WINDOWS.iter().position(|w| *w == interval).unwrap_or(0);
            match scope {
                Scope::Card => self.base.card[i],
                Scope::Cardholder => self.base.cardholder[i],
            }
        };
        let Some(cats) = cats else {
            return unfiltered();
        };
        let found = self.base.filtered.iter().find(|(s, i, c, _)| {
            *s == scope && *i == interval && (std::ptr::eq(*c, cats) || *c == cats)
        });
        if let Some((.., v)) = found {
            *v
        } else {
            self.missed.set(true);
            unfiltered()
        }
    }
}

impl SpendView for View<'_, '_> {
    fn spent(
        &self,
        scope: Scope,
        interval: Interval,
        categories: Option<&CategorySet>,
        currency: Currency,
    ) -> i64 {
        let mut total = self.recorded(scope, interval, categories);
        let start = window_start(interval, self.at);
        for d in self.deltas {
            if (scope == Scope::Cardholder || *d.card == *self.card)
                && d.currency == currency
                && window_start(interval, d.at) == start
                && categories.is_none_or(|c| c.matches(&MerchantCategory::new(&d.category, &d.mcc)))
            {
                total = total.saturating_add(d.amount);
            }
        }
        total
    }

    fn card_velocity(&self) -> (i64, i64) {
        // Counts of requests, whatever their answers: no change moves them.
        self.base.velocity
    }

    fn signals(&self) -> &Signals {
        &self.base.signals
    }
}

//! Per-authorization records and the per-cardholder entry that groups them: the
//! inputs each record has seen and the spend derived from them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use super::{AuthMeta, AuthStatus, HashMap, WINDOWS, window_start};
use crate::decision::{
    CategoryId, CategorySet, Currency, Interval, MerchantCategory, category_by_mcc,
    category_by_name,
};

/// How a merchant is categorized, as a hashable key (see `MerchantCategory`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct CatKey {
    pub(super) by_name: Option<CategoryId>,
    pub(super) by_mcc: Option<CategoryId>,
    /// The raw name when Stripe's table does not know it (matched by name).
    pub(super) unknown: Option<Arc<str>>,
}

impl CatKey {
    pub(super) fn new(name: &str, mcc: &str) -> Self {
        let by_name = category_by_name(name);
        CatKey {
            by_name,
            by_mcc: category_by_mcc(mcc),
            unknown: (by_name.is_none() && !name.is_empty()).then(|| Arc::from(name)),
        }
    }

    pub(super) fn matches(&self, set: Option<&CategorySet>) -> bool {
        set.is_none_or(|s| {
            s.matches(&MerchantCategory {
                name: self.unknown.as_deref().unwrap_or(""),
                mcc: "",
                by_name: self.by_name,
                by_mcc: self.by_mcc,
            })
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Meta {
    pub(super) card: Arc<str>,
    pub(super) created: i64,
    pub(super) currency: Currency,
    pub(super) cat: CatKey,
}

impl Meta {
    /// `card` is `auth.card`, shared (`Ledger::intern`).
    pub(super) fn of(auth: &AuthMeta, card: Arc<str>) -> Option<Self> {
        Some(Meta {
            card,
            created: auth.created,
            currency: Currency::parse(&auth.currency)?,
            cat: CatKey::new(&auth.category, &auth.mcc),
        })
    }
}

/// Where a record's metadata came from: an authorization beats a transaction, and
/// among transactions the earliest `(created, id)` wins, so the choice does not
/// depend on arrival order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum MetaSource {
    Authorization,
    Transaction(i64, Box<str>),
}

#[derive(Debug, Clone)]
pub(super) struct Latest {
    pub(super) order: (i64, Box<str>),
    pub(super) status: AuthStatus,
    pub(super) amount: i64,
    pub(super) approved_requests: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Contribution {
    pub(super) meta: Meta,
    pub(super) spend: i64,
    pub(super) held: i64,
}

#[derive(Debug, Default)]
pub(super) struct Record {
    pub(super) meta: Option<(MetaSource, Meta)>,
    pub(super) cardholder: Arc<str>,
    /// Our approvals, in order: (request event id, amount).
    pub(super) reserves: Vec<(Arc<str>, i64)>,
    pub(super) latest: Option<Latest>,
    /// Transaction id → Stripe-signed amount. A `Vec`, not a map: an authorization
    /// has one capture, rarely a few more or a refund, and a `BTreeMap`'s first
    /// entry allocates a whole node (~280 bytes, against 24), kept for every
    /// captured authorization the ledger holds.
    pub(super) txns: Vec<(Box<str>, i64)>,
    /// What is in the window totals now.
    pub(super) applied: Option<Contribution>,
}

impl Record {
    /// Sets transaction `id`'s amount (a redelivered or updated transaction
    /// replaces its amount, as a map would).
    pub(super) fn set_txn(&mut self, id: &str, amount: i64) {
        if let Some(t) = self.txns.iter_mut().find(|t| *t.0 == *id) {
            t.1 = amount;
            return;
        }
        if self.txns.is_empty() {
            self.txns.reserve_exact(1);
        }
        self.txns.push((id.into(), amount));
    }

    pub(super) fn set_meta(&mut self, source: MetaSource, meta: Meta) {
        match &self.meta {
            Some((s, _)) if *s <= source => {}
            _ => self.meta = Some((source, meta)),
        }
    }

    /// Authorized amount, held amount and total spend, derived from the inputs.
    pub(super) fn value(&self) -> Option<Contribution> {
        let meta = self.meta.as_ref()?.1.clone();
        let (authorized, status) = match &self.latest {
            None => (
                self.reserves
                    .iter()
                    .fold(0i64, |a, r| a.saturating_add(r.1)),
                AuthStatus::Pending,
            ),
            // Reserves beyond the approved requests the event knew of are increments
            // it has not caught up with yet.
            Some(l) => (
                self.reserves
                    .iter()
                    .skip(l.approved_requests as usize)
                    .fold(l.amount, |a, r| a.saturating_add(r.1)),
                l.status,
            ),
        };
        let captured = self
            .txns
            .iter()
            .map(|t| t.1)
            .filter(|a| *a < 0)
            .fold(0i64, i64::saturating_sub);
        let net = self.txns.iter().fold(0i64, |s, t| s.saturating_sub(t.1));
        let held = match status {
            AuthStatus::Pending => authorized.saturating_sub(captured).max(0),
            _ => 0,
        };
        // A refund can cancel a capture's spend but never make spend negative.
        let spend = held.saturating_add(net).max(0);
        Some(Contribution { meta, spend, held })
    }
}

// === per-cardholder entry ===

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct SpendKey {
    pub(super) card: Arc<str>,
    pub(super) currency: Currency,
    pub(super) cat: CatKey,
}

#[derive(Debug, Default)]
pub(super) struct Holder {
    /// Boxed: a `Record` is 256 bytes, and the table holds a third of its slots
    /// empty and moves every slot when it doubles. Behind a pointer the ledger
    /// keeps ~660 bytes per authorization instead of ~890, and `async` answered
    /// 6 % more (BENCHMARKS.md, "What the request thread adds").
    pub(super) records: HashMap<Box<str>, Box<Record>>,
    /// (interval, window start) → spend per card, currency and category.
    pub(super) windows: HashMap<(Interval, i64), HashMap<SpendKey, i64>>,
    /// Card → authorization `created` times → count, for velocity.
    pub(super) velocity: HashMap<Arc<str>, BTreeMap<i64, u32>>,
}

impl Holder {
    pub(super) fn spent(
        &self,
        card: Option<&str>,
        interval: Interval,
        at: i64,
        categories: Option<&CategorySet>,
        currency: Currency,
    ) -> i64 {
        let Some(window) = self.windows.get(&(interval, window_start(interval, at))) else {
            return 0;
        };
        window
            .iter()
            .filter(|(k, _)| {
                k.currency == currency
                    && card.is_none_or(|c| &*k.card == c)
                    && k.cat.matches(categories)
            })
            .fold(0i64, |s, (_, v)| s.saturating_add(*v))
    }

    pub(super) fn add(&mut self, c: &Contribution, sign: i64) {
        if c.spend == 0 {
            return;
        }
        let key = SpendKey {
            card: c.meta.card.clone(),
            currency: c.meta.currency,
            cat: c.meta.cat.clone(),
        };
        for interval in WINDOWS {
            let w = (interval, window_start(interval, c.meta.created));
            let window = self.windows.entry(w).or_default();
            let v = window.entry(key.clone()).or_insert(0);
            *v = v.saturating_add(sign * c.spend);
            if *v == 0 {
                window.remove(&key);
                if window.is_empty() {
                    self.windows.remove(&w);
                }
            }
        }
    }

    /// Brings the window totals in line with record `id`'s inputs.
    pub(super) fn settle(&mut self, id: &str, holds: &AtomicI64) {
        let Some(rec) = self.records.get_mut(id) else {
            return;
        };
        let new = rec.value();
        let old = std::mem::replace(&mut rec.applied, new.clone());
        if old == new {
            return;
        }
        let was_held = old.as_ref().is_some_and(|c| c.held > 0);
        let is_held = new.as_ref().is_some_and(|c| c.held > 0);
        holds.fetch_add(i64::from(is_held) - i64::from(was_held), Ordering::Relaxed);
        if let Some(o) = &old {
            self.add(o, -1);
        }
        if let Some(n) = &new {
            self.add(n, 1);
        }
    }

    pub(super) fn note_velocity(&mut self, card: &Arc<str>, created: i64) {
        *self
            .velocity
            .entry(card.clone())
            .or_default()
            .entry(created)
            .or_insert(0) += 1;
    }

    pub(super) fn velocity(&self, card: &str, at: i64) -> (i64, i64) {
        let Some(times) = self.velocity.get(card) else {
            return (0, 0);
        };
        let count =
            |from: i64| -> i64 { times.range(from + 1..=at).map(|(_, n)| i64::from(*n)).sum() };
        (count(at - 3600), count(at - 86_400))
    }
}

//! The spend ledger: what each card and cardholder has held and spent, per UTC
//! interval window, and the atomic check-and-reserve that keeps two concurrent
//! authorizations from both fitting under one remaining limit.
//!
//! **What it owns.** One record per authorization (by `iauth_…` id), grouped under
//! its cardholder in a [`DashMap`]. A record keeps the *inputs* it has seen — our own
//! reserves (one per approved request, increments add), the latest known state of
//! the authorization from lifecycle events, and the set of its transactions — and
//! the spend is *derived* from them. Because every input is either a set member (by
//! id) or a "latest wins" value ordered by `(event created, event id)`, applying the
//! same facts in any order, any number of times, gives the same totals. Totals are
//! kept per window (`daily`, `weekly` from Sunday, `monthly`, `yearly`, `all_time`,
//! all UTC, assigned by the authorization's `created` time), per card, currency and
//! merchant category, so limits with a `categories` filter are answered exactly.
//!
//! **Currency.** Amounts are never converted. Totals are kept per currency and a
//! limit only counts spend in its own currency; a limit whose currency differs
//! from the authorization's is `decide()`'s business (`currency_mismatch` policy in
//! `ProgramControls`: decline by default) and is not re-checked here.
//!
//! **Locking.** The cardholder's map entry is the only lock that guards spend: it
//! covers all its cards, so a reserve re-checks card *and* cardholder limits under
//! one lock. While it is held the code may touch the `seen` and `cards` maps, never
//! the other way round, and never another cardholder's entry: no lock cycle exists.
//! No guard lives across an `.await` (nothing here is async).
//!
//! Durability is not here: the ledger hands each accepted [`Fact`] back to the
//! caller, which writes it to `store/`; on start, the facts read back from the
//! store are applied again ([`Ledger::apply`]), which rebuilds the same totals.

mod entry;
mod facts;
mod holds;
mod report;
mod snapshot;
mod window;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;

/// The hasher of every ledger map. The keys are Stripe ids (`ich_…`, `iauth_…`,
/// `evt_…`) taken from events whose signature was verified, so no outsider can
/// choose them to flood one bucket; SipHash's flooding resistance buys nothing
/// here and cost about 8k instructions per decision. foldhash still seeds itself
/// per process.
type Hasher = foldhash::fast::RandomState;
/// A `HashMap` with the ledger's [`Hasher`].
type HashMap<K, V> = std::collections::HashMap<K, V, Hasher>;

pub use facts::{Applied, AuthMeta, AuthStatus, Fact, LedgerError};
pub use holds::{Holds, HoldsError, HoldsFuture};
pub use report::{AuthView, CardReport, WindowTotal};
pub use snapshot::{SnapshotTotal, SpendSnapshot};
pub use window::window_start;

use entry::{CatKey, Holder, Latest, Meta, MetaSource};
use snapshot::Row;

use crate::decision::{
    self, AuthRequest, Currency, Decision, Interval, MerchantCategory, ProgramControls, Reason,
    Scope, Source,
};
use crate::metrics as m;

/// Largest absolute amount accepted in a fact (10¹² minor units, ten billion
/// dollars). Anything larger is a broken or hostile payload, and the bound keeps
/// every sum of accepted amounts far from `i64` overflow.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

/// The intervals that accumulate (everything but `per_authorization`).
pub const WINDOWS: [Interval; 5] = [
    Interval::Daily,
    Interval::Weekly,
    Interval::Monthly,
    Interval::Yearly,
    Interval::AllTime,
];

// === the ledger ===

/// The in-memory spend ledger. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Cardholder id → its authorizations and window totals. The entry lock is the
    /// reserve lock (see the module doc).
    holders: DashMap<Box<str>, Holder, Hasher>,
    /// Event ids already applied (the dedupe table; the store's unique index is its
    /// durable twin). A reserve's record keeps the same id (`Record::reserves`).
    seen: DashMap<Arc<str>, (), Hasher>,
    /// Card id → cardholder id, for lookups by card. Also the one copy of both ids
    /// that every record of the card shares (`intern`).
    cards: DashMap<Arc<str>, Arc<str>, Hasher>,
    /// Authorizations with a non-zero hold, for the gauge.
    holds: AtomicI64,
}

/// The outcome of [`Ledger::reserve`].
#[derive(Debug, Clone)]
pub struct Reservation {
    /// The decision to answer: the input, or a partial approval / decline when the
    /// atomic re-check found less room than the snapshot did.
    pub decision: Decision,
    /// The reserve to persist; `None` when nothing was held.
    pub fact: Option<Fact>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Ledger::default()
    }

    /// Applies a fact (a lifecycle event, or a stored fact during rebuild).
    /// Idempotent by event id; order-independent per authorization.
    pub fn apply(&self, fact: &Fact) -> Result<Applied, LedgerError> {
        fact.validate()?;
        let mut holder = self.holders.entry(fact.cardholder().into()).or_default();
        let applied = self.apply_in(&mut holder, fact);
        drop(holder);
        self.publish();
        Ok(applied)
    }

    /// The body of [`Ledger::apply`], with the cardholder's entry already locked by
    /// the caller (so `reserve` can check and hold under one lock).
    fn apply_in(&self, holder: &mut Holder, fact: &Fact) -> Applied {
        let record_id = fact.record_key();
        let event: Arc<str> = Arc::from(fact.event_id());
        if self.seen.insert(Arc::clone(&event), ()).is_some() {
            return Applied::Duplicate;
        }
        let (card_id, cardholder) = self.intern(fact.card(), fact.cardholder());
        let rec = holder.records.entry(record_id.as_ref().into()).or_default();
        rec.cardholder = cardholder;
        let mut new_auth_meta = None;
        let mut result = Applied::Applied;
        match fact {
            Fact::Reserve {
                event_id,
                auth,
                amount,
            } => {
                if !rec.reserves.iter().any(|(e, _)| **e == **event_id) {
                    // Most authorizations are never incremented: room for one,
                    // not the four a first push would make (later pushes grow
                    // as usual).
                    if rec.reserves.is_empty() {
                        rec.reserves.reserve_exact(1);
                    }
                    rec.reserves.push((Arc::clone(&event), *amount));
                }
                new_auth_meta = Meta::of(auth, Arc::clone(&card_id));
            }
            Fact::Authorization {
                event_id,
                event_created,
                auth,
                approved,
                status,
                amount,
                approved_requests,
            } => {
                let order = (*event_created, Box::<str>::from(event_id.as_str()));
                if rec.latest.as_ref().is_none_or(|l| l.order < order) {
                    rec.latest = Some(Latest {
                        order,
                        status: if *approved {
                            *status
                        } else {
                            AuthStatus::Closed
                        },
                        amount: *amount,
                        approved_requests: *approved_requests,
                    });
                }
                new_auth_meta = Meta::of(auth, Arc::clone(&card_id));
            }
            Fact::Transaction {
                txn_id,
                authorization,
                created,
                currency,
                category,
                mcc,
                amount,
                ..
            } => {
                rec.set_txn(txn_id, *amount);
                if let Some(currency) = Currency::parse(currency) {
                    rec.set_meta(
                        MetaSource::Transaction(*created, txn_id.as_str().into()),
                        Meta {
                            card: Arc::clone(&card_id),
                            created: *created,
                            currency,
                            cat: CatKey::new(category, mcc),
                        },
                    );
                }
                if authorization.is_some()
                    && !matches!(rec.meta, Some((MetaSource::Authorization, _)))
                {
                    result = Applied::UnknownAuthorization;
                }
            }
        }
        if let Some(meta) = new_auth_meta {
            let first = !matches!(rec.meta, Some((MetaSource::Authorization, _)));
            let (card, created) = (meta.card.clone(), meta.created);
            rec.set_meta(MetaSource::Authorization, meta);
            if first {
                holder.note_velocity(&card, created);
            }
        }
        holder.settle(&record_id, &self.holds);
        result
    }

    /// The shared copies of a card id and its cardholder id, recorded in `cards`
    /// on first sight (or when the card moved to another cardholder). Every record
    /// of a card points at them: two allocations fewer for each authorization
    /// the ledger keeps.
    fn intern(&self, card: &str, cardholder: &str) -> (Arc<str>, Arc<str>) {
        // The common case under a shard's read lock; the write lock only for a
        // card seen first or moved.
        if let Some(c) = self.cards.get(card)
            && **c.value() == *cardholder
        {
            return (Arc::clone(c.key()), Arc::clone(c.value()));
        }
        let holder: Arc<str> = Arc::from(cardholder);
        // A moved card keeps the key already stored, which its records share.
        let entry = self
            .cards
            .entry(Arc::from(card))
            .insert(Arc::clone(&holder));
        (Arc::clone(entry.key()), holder)
    }

    /// Whether this instance approved (reserved for) the authorization `fact`
    /// is about: for telling a stand-in that overrides cardgate's answer from
    /// one that replaces a missing answer.
    pub fn reserved(&self, fact: &Fact) -> bool {
        self.holders.get(fact.cardholder()).is_some_and(|h| {
            h.records
                .get(fact.record_key().as_ref())
                .is_some_and(|r| !r.reserves.is_empty())
        })
    }

    /// Spend the card and cardholder of `auth` had at `at` (Unix seconds; the
    /// authorization's `created`), for `decide()`. A copy: no lock is kept.
    pub fn snapshot(&self, auth: &AuthRequest<'_>, at: i64) -> SpendSnapshot {
        let mut snap = SpendSnapshot {
            rows: Vec::new(),
            velocity: (0, 0),
        };
        let Some(holder) = self.holders.get(auth.cardholder.id) else {
            return snap;
        };
        let windows = WINDOWS.map(|i| (i, holder.windows.get(&(i, window_start(i, at)))));
        // Sized once: grown row by row it was several allocations per request.
        snap.rows = Vec::with_capacity(windows.iter().flat_map(|(_, w)| w).map(|w| w.len()).sum());
        for (interval, w) in windows {
            if let Some(w) = w {
                for (k, v) in w {
                    snap.rows.push(Row {
                        interval,
                        own_card: &*k.card == auth.card.id,
                        currency: k.currency,
                        cat: k.cat.clone(),
                        amount: *v,
                    });
                }
            }
        }
        snap.velocity = holder.velocity(auth.card.id, at);
        snap
    }

    /// Atomically re-checks every interval limit guarding `auth` and holds the
    /// approved amount for card and cardholder together.
    ///
    /// `decision` comes from `decide()` over a snapshot; another request of the same
    /// cardholder may have reserved since. Under the cardholder's lock the room of
    /// every limit is recomputed; if the approved amount no longer fits, it shrinks
    /// to the room when `is_amount_controllable` (a partial approval, reason
    /// `spending_limit`) or turns into a `spending_limit` decline. A second request
    /// with the same authorization id (an increment) adds to the existing hold; a
    /// request event seen before reserves nothing again.
    pub fn reserve(
        &self,
        event_id: &str,
        auth: &AuthRequest<'_>,
        program: &ProgramControls,
        at: i64,
        decision: Decision,
    ) -> Reservation {
        let wanted = decision.amount.unwrap_or(auth.amount);
        if !decision.approved || wanted <= 0 {
            return Reservation {
                decision,
                fact: None,
            };
        }
        let category = MerchantCategory::new(auth.merchant.category, auth.merchant.category_code);
        let limits = decision::interval_limits(auth, program, &category);
        // The cardholder's entry usually exists: look it up before allocating a key.
        let mut holder = match self.holders.get_mut(auth.cardholder.id) {
            Some(h) => h,
            None => self.holders.entry(auth.cardholder.id.into()).or_default(),
        };
        if self.seen.contains_key(event_id) {
            return Reservation {
                decision,
                fact: None,
            };
        }
        let mut grant = wanted;
        let mut cut = None;
        for l in &limits {
            let card = matches!(l.scope, Scope::Card).then_some(auth.card.id);
            let spent = holder.spent(
                card,
                l.limit.interval,
                at,
                l.limit.categories.as_ref(),
                auth.currency,
            );
            let room = l.limit.amount.saturating_sub(spent);
            if grant > room {
                if auth.is_amount_controllable && room > 0 && room >= auth.cashback_amount {
                    grant = room;
                    cut = Some(Source::Control(l.level, l.limit.interval.as_str()));
                } else {
                    metrics::counter!(m::LEDGER_RESERVE_REFUSED).increment(1);
                    return Reservation {
                        decision: Decision::decline(
                            Reason::SpendingLimit,
                            Source::Control(l.level, l.limit.interval.as_str()),
                        ),
                        fact: None,
                    };
                }
            }
        }
        let decision = match cut {
            Some(source) => {
                metrics::counter!(m::LEDGER_RESERVE_REFUSED).increment(1);
                Decision {
                    approved: true,
                    amount: Some(grant),
                    reason: Reason::SpendingLimit,
                    source: Some(source),
                }
            }
            None => decision,
        };
        let fact = Fact::reserve(event_id, auth, at, grant);
        if fact.validate().is_err() {
            // Amounts past MAX_AMOUNT cannot be accounted; holding nothing for them
            // would let them through every limit, so decline instead.
            return Reservation {
                decision: Decision::decline(
                    Reason::SpendingLimit,
                    Source::Control(decision::Level::Program, "ledger"),
                ),
                fact: None,
            };
        }
        // Still under the lock taken for the check: nothing can reserve in between.
        self.apply_in(&mut holder, &fact);
        drop(holder);
        self.publish();
        Reservation {
            decision,
            fact: Some(fact),
        }
    }

    /// Takes back a reserve whose commit failed, so an answer that was not given
    /// holds nothing.
    pub fn cancel(&self, fact: &Fact) {
        let Fact::Reserve { event_id, auth, .. } = fact else {
            return;
        };
        if let Some(mut holder) = self.holders.get_mut(auth.cardholder.as_str()) {
            if let Some(rec) = holder.records.get_mut(auth.id.as_str()) {
                rec.reserves.retain(|(e, _)| **e != **event_id);
            }
            holder.settle(&auth.id, &self.holds);
            self.seen.remove(event_id.as_str());
        }
        self.publish();
    }

    fn publish(&self) {
        m::set_ledger_holds(self.holds.load(Ordering::Relaxed));
    }

    /// A card's holds and window totals at `at`, for `cardgate ledger show`.
    pub fn card_report(&self, card: &str, at: i64) -> Option<CardReport> {
        let cardholder = self.cards.get(card)?.value().to_string();
        let holder = self.holders.get(cardholder.as_str())?;
        let mut report = CardReport {
            card: card.to_string(),
            cardholder,
            authorizations: Vec::new(),
            totals: Vec::new(),
        };
        for (id, rec) in &holder.records {
            let Some(c) = &rec.applied else { continue };
            if &*c.meta.card != card {
                continue;
            }
            report.authorizations.push(AuthView {
                id: id.to_string(),
                created: c.meta.created,
                currency: c.meta.currency,
                status: rec
                    .latest
                    .as_ref()
                    .map_or("reserved", |l| l.status.as_str()),
                held: c.held,
                spend: c.spend,
            });
        }
        report
            .authorizations
            .sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        for interval in WINDOWS {
            let start = window_start(interval, at);
            let mut per_currency: BTreeMap<String, (i64, i64)> = BTreeMap::new();
            if let Some(w) = holder.windows.get(&(interval, start)) {
                for (k, v) in w {
                    let e = per_currency.entry(k.currency.to_string()).or_default();
                    e.1 = e.1.saturating_add(*v);
                    if &*k.card == card {
                        e.0 = e.0.saturating_add(*v);
                    }
                }
            }
            for (currency, (card_total, holder_total)) in per_currency {
                report.totals.push(WindowTotal {
                    interval,
                    start,
                    currency,
                    card: card_total,
                    cardholder: holder_total,
                });
            }
        }
        Some(report)
    }

    /// Total spend of `card` (or of `cardholder` when `card` is `None`) in the
    /// `interval` window at `at`, in `currency`, all categories. For tests, the CLI
    /// and the differential check against a rebuilt ledger.
    pub fn total(
        &self,
        cardholder: &str,
        card: Option<&str>,
        interval: Interval,
        at: i64,
        currency: Currency,
    ) -> i64 {
        self.holders
            .get(cardholder)
            .map_or(0, |h| h.spent(card, interval, at, None, currency))
    }

    /// Every (cardholder, window, card, currency, amount) total, sorted: two ledgers
    /// with the same totals give equal vectors.
    pub fn all_totals(&self) -> Vec<(String, Interval, i64, String, String, i64)> {
        let mut out = Vec::new();
        for h in &self.holders {
            for ((interval, start), w) in &h.windows {
                for (k, v) in w {
                    out.push((
                        h.key().to_string(),
                        *interval,
                        *start,
                        k.card.to_string(),
                        format!("{}:{:?}", k.currency, k.cat),
                        *v,
                    ));
                }
            }
        }
        out.sort();
        out
    }

    /// Authorizations currently holding funds.
    pub fn holds(&self) -> i64 {
        self.holds.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests;

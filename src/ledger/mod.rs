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

mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

pub use window::window_start;

use crate::decision::{
    self, AuthRequest, CategoryId, CategorySet, Currency, Decision, Interval, MerchantCategory,
    ProgramControls, Reason, Scope, Source, SpendView, category_by_mcc, category_by_name,
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

// === facts: the ledger's inputs, as stored ===

/// What the ledger knows of an authorization itself, from a request or an
/// authorization event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthMeta {
    /// `iauth_…`
    pub id: String,
    /// `ic_…`
    pub card: String,
    /// `ich_…`
    pub cardholder: String,
    /// Unix seconds; decides the windows the authorization's spend falls in.
    pub created: i64,
    /// Currency of the amounts (the card's).
    pub currency: String,
    /// Merchant category name.
    pub category: String,
    /// Merchant category code.
    pub mcc: String,
}

/// An authorization's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthStatus {
    /// Approved and awaiting capture: funds held.
    Pending,
    /// Declined, or captured.
    Closed,
    /// Voided by the merchant.
    Reversed,
    /// Expired by Stripe without capture.
    Expired,
}

impl AuthStatus {
    /// Stripe's value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthStatus::Pending => "pending",
            AuthStatus::Closed => "closed",
            AuthStatus::Reversed => "reversed",
            AuthStatus::Expired => "expired",
        }
    }
}

/// One input to the ledger. Facts are what the store keeps: the ledger is a pure
/// function of the set of facts it was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fact {
    /// This instance approved a request (or an increment) and held `amount`.
    Reserve {
        /// The request event's id.
        event_id: String,
        /// The authorization.
        auth: AuthMeta,
        /// Approved amount.
        amount: i64,
    },
    /// An `issuing_authorization.created`/`.updated` event: the authorization's state.
    Authorization {
        /// `evt_…`
        event_id: String,
        /// The event's `created`: orders states of one authorization.
        event_created: i64,
        /// The authorization.
        auth: AuthMeta,
        /// `approved`.
        approved: bool,
        /// `status`.
        status: AuthStatus,
        /// `amount`: what is (or was) authorized.
        amount: i64,
        /// Approved entries in `request_history`: how many of our reserves this
        /// state already includes.
        approved_requests: u32,
    },
    /// An `issuing_transaction.created` event: a capture (negative amount) or a
    /// refund (positive).
    Transaction {
        /// `evt_…`
        event_id: String,
        /// `ipi_…`
        txn_id: String,
        /// `iauth_…`, or `None` for force captures and unlinked refunds.
        authorization: Option<String>,
        /// `ic_…`
        card: String,
        /// `ich_…`
        cardholder: String,
        /// Unix seconds.
        created: i64,
        /// Currency of `amount`.
        currency: String,
        /// Merchant category name.
        category: String,
        /// Merchant category code.
        mcc: String,
        /// Stripe's sign: negative debits the balance (capture).
        amount: i64,
    },
}

impl Fact {
    /// The event id (dedupe key).
    pub fn event_id(&self) -> &str {
        match self {
            Fact::Reserve { event_id, .. }
            | Fact::Authorization { event_id, .. }
            | Fact::Transaction { event_id, .. } => event_id,
        }
    }

    /// The card.
    pub fn card(&self) -> &str {
        match self {
            Fact::Reserve { auth, .. } | Fact::Authorization { auth, .. } => &auth.card,
            Fact::Transaction { card, .. } => card,
        }
    }

    /// The cardholder: whose ledger entry the fact changes.
    pub fn cardholder(&self) -> &str {
        match self {
            Fact::Reserve { auth, .. } | Fact::Authorization { auth, .. } => &auth.cardholder,
            Fact::Transaction { cardholder, .. } => cardholder,
        }
    }

    /// The record the fact belongs to: the authorization id, or for a transaction
    /// without one, the transaction itself.
    pub fn record_id(&self) -> String {
        match self {
            Fact::Reserve { auth, .. } | Fact::Authorization { auth, .. } => auth.id.clone(),
            Fact::Transaction {
                authorization: Some(a),
                ..
            } => a.clone(),
            Fact::Transaction { txn_id, .. } => format!("txn:{txn_id}"),
        }
    }

    /// Checks a fact before it touches any total.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let bad = |problem| {
            Err(LedgerError::Invalid {
                event_id: self.event_id().to_string(),
                problem,
            })
        };
        if self.event_id().is_empty() {
            return bad("empty event id");
        }
        if self.card().is_empty() || self.cardholder().is_empty() {
            return bad("missing card or cardholder id");
        }
        let (amount, currency) = match self {
            Fact::Reserve { auth, amount, .. } | Fact::Authorization { auth, amount, .. } => {
                if auth.id.is_empty() {
                    return bad("missing authorization id");
                }
                if *amount < 0 {
                    return bad("negative authorization amount");
                }
                (*amount, auth.currency.as_str())
            }
            Fact::Transaction {
                amount,
                currency,
                txn_id,
                ..
            } => {
                if txn_id.is_empty() {
                    return bad("missing transaction id");
                }
                (*amount, currency.as_str())
            }
        };
        if amount.checked_abs().is_none_or(|a| a > MAX_AMOUNT) {
            return bad("amount out of range");
        }
        if Currency::parse(currency).is_none() {
            return bad("unknown currency");
        }
        Ok(())
    }
}

/// Why a fact was refused; the ledger is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The fact's values cannot be accounted (negative or huge amount, bad currency…).
    #[error("event {event_id}: {problem}")]
    Invalid {
        /// The event.
        event_id: String,
        /// What is wrong.
        problem: &'static str,
    },
}

/// What applying a fact did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The totals now include it.
    Applied,
    /// Its event id was seen before: nothing changed.
    Duplicate,
    /// A transaction for an authorization the ledger has not seen yet: kept, and
    /// counted in the transaction's own window until the authorization arrives.
    UnknownAuthorization,
}

impl Applied {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Applied::Applied => "applied",
            Applied::Duplicate => "duplicate",
            Applied::UnknownAuthorization => "unknown_authorization",
        }
    }
}

// === per-authorization record ===

/// How a merchant is categorized, as a hashable key (see `MerchantCategory`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CatKey {
    by_name: Option<CategoryId>,
    by_mcc: Option<CategoryId>,
    /// The raw name when Stripe's table does not know it (matched by name).
    unknown: Option<Arc<str>>,
}

impl CatKey {
    fn new(name: &str, mcc: &str) -> Self {
        let by_name = category_by_name(name);
        CatKey {
            by_name,
            by_mcc: category_by_mcc(mcc),
            unknown: (by_name.is_none() && !name.is_empty()).then(|| Arc::from(name)),
        }
    }

    fn matches(&self, set: Option<&CategorySet>) -> bool {
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
struct Meta {
    card: Arc<str>,
    created: i64,
    currency: Currency,
    cat: CatKey,
}

impl Meta {
    fn of(auth: &AuthMeta) -> Option<Self> {
        Some(Meta {
            card: Arc::from(auth.card.as_str()),
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
enum MetaSource {
    Authorization,
    Transaction(i64, Box<str>),
}

#[derive(Debug, Clone)]
struct Latest {
    order: (i64, Box<str>),
    status: AuthStatus,
    amount: i64,
    approved_requests: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Contribution {
    meta: Meta,
    spend: i64,
    held: i64,
}

#[derive(Debug, Default)]
struct Record {
    meta: Option<(MetaSource, Meta)>,
    cardholder: Arc<str>,
    /// Our approvals, in order: (request event id, amount).
    reserves: Vec<(Box<str>, i64)>,
    latest: Option<Latest>,
    /// Transaction id → Stripe-signed amount.
    txns: BTreeMap<Box<str>, i64>,
    /// What is in the window totals now.
    applied: Option<Contribution>,
}

impl Record {
    fn set_meta(&mut self, source: MetaSource, meta: Meta) {
        match &self.meta {
            Some((s, _)) if *s <= source => {}
            _ => self.meta = Some((source, meta)),
        }
    }

    /// Authorized amount, held amount and total spend, derived from the inputs.
    fn value(&self) -> Option<Contribution> {
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
            .values()
            .filter(|a| **a < 0)
            .fold(0i64, |s, a| s.saturating_sub(*a));
        let net = self.txns.values().fold(0i64, |s, a| s.saturating_sub(*a));
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
struct SpendKey {
    card: Arc<str>,
    currency: Currency,
    cat: CatKey,
}

#[derive(Debug, Default)]
struct Holder {
    records: HashMap<Box<str>, Record>,
    /// (interval, window start) → spend per card, currency and category.
    windows: HashMap<(Interval, i64), HashMap<SpendKey, i64>>,
    /// Card → authorization `created` times → count, for velocity.
    velocity: HashMap<Arc<str>, BTreeMap<i64, u32>>,
}

impl Holder {
    fn spent(
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

    fn add(&mut self, c: &Contribution, sign: i64) {
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
    fn settle(&mut self, id: &str, holds: &AtomicI64) {
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

    fn note_velocity(&mut self, card: &Arc<str>, created: i64) {
        *self
            .velocity
            .entry(card.clone())
            .or_default()
            .entry(created)
            .or_insert(0) += 1;
    }

    fn velocity(&self, card: &str, at: i64) -> (i64, i64) {
        let Some(times) = self.velocity.get(card) else {
            return (0, 0);
        };
        let count =
            |from: i64| -> i64 { times.range(from + 1..=at).map(|(_, n)| i64::from(*n)).sum() };
        (count(at - 3600), count(at - 86_400))
    }
}

// === the ledger ===

/// The in-memory spend ledger. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Cardholder id → its authorizations and window totals. The entry lock is the
    /// reserve lock (see the module doc).
    holders: DashMap<Box<str>, Holder>,
    /// Event ids already applied (the dedupe table; the store's unique index is its
    /// durable twin).
    seen: DashMap<Box<str>, ()>,
    /// Card id → cardholder id, for lookups by card.
    cards: DashMap<Box<str>, Box<str>>,
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
        let record_id = fact.record_id();
        if self.seen.insert(fact.event_id().into(), ()).is_some() {
            return Applied::Duplicate;
        }
        self.cards
            .insert(fact.card().into(), fact.cardholder().into());
        let rec = holder.records.entry(record_id.as_str().into()).or_default();
        rec.cardholder = Arc::from(fact.cardholder());
        let mut new_auth_meta = None;
        let mut result = Applied::Applied;
        match fact {
            Fact::Reserve {
                event_id,
                auth,
                amount,
            } => {
                if !rec.reserves.iter().any(|(e, _)| **e == **event_id) {
                    rec.reserves.push((event_id.as_str().into(), *amount));
                }
                new_auth_meta = Meta::of(auth);
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
                new_auth_meta = Meta::of(auth);
            }
            Fact::Transaction {
                txn_id,
                authorization,
                card,
                created,
                currency,
                category,
                mcc,
                amount,
                ..
            } => {
                rec.txns.insert(txn_id.as_str().into(), *amount);
                if let Some(currency) = Currency::parse(currency) {
                    rec.set_meta(
                        MetaSource::Transaction(*created, txn_id.as_str().into()),
                        Meta {
                            card: Arc::from(card.as_str()),
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
        for interval in WINDOWS {
            if let Some(w) = holder.windows.get(&(interval, window_start(interval, at))) {
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
        let mut holder = self.holders.entry(auth.cardholder.id.into()).or_default();
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
        let meta = AuthMeta {
            id: auth.id.to_string(),
            card: auth.card.id.to_string(),
            cardholder: auth.cardholder.id.to_string(),
            created: at,
            currency: auth.currency.as_str().to_string(),
            category: auth.merchant.category.to_string(),
            mcc: auth.merchant.category_code.to_string(),
        };
        let fact = Fact::Reserve {
            event_id: event_id.to_string(),
            auth: meta,
            amount: grant,
        };
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
        metrics::gauge!(m::LEDGER_HOLDS).set(self.holds.load(Ordering::Relaxed) as f64);
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

/// One authorization of a card in a [`CardReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthView {
    /// `iauth_…` (or `txn:ipi_…` for a transaction without authorization).
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    /// Currency.
    pub currency: Currency,
    /// Latest known status, or `reserved` when only our approval is known.
    pub status: &'static str,
    /// Amount still held.
    pub held: i64,
    /// Spend counted against limits (held + captured − refunded).
    pub spend: i64,
}

/// One window's totals in a [`CardReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowTotal {
    /// The interval.
    pub interval: Interval,
    /// First second of the window.
    pub start: i64,
    /// Currency.
    pub currency: String,
    /// The card's spend.
    pub card: i64,
    /// The cardholder's spend (all cards).
    pub cardholder: i64,
}

/// What `cardgate ledger show --card` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardReport {
    /// `ic_…`
    pub card: String,
    /// `ich_…`
    pub cardholder: String,
    /// The card's authorizations that count spend.
    pub authorizations: Vec<AuthView>,
    /// Current window totals.
    pub totals: Vec<WindowTotal>,
}

// === snapshot ===

#[derive(Debug, Clone)]
struct Row {
    interval: Interval,
    own_card: bool,
    currency: Currency,
    cat: CatKey,
    amount: i64,
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
    rows: Vec<Row>,
    velocity: (i64, i64),
}

impl SpendSnapshot {
    /// Unfiltered totals per interval in `currency`, for the decision log:
    /// `{"card":{"daily":…},"cardholder":{…},"velocity":{"1h":…,"24h":…}}`.
    pub fn to_json(&self, currency: Currency) -> serde_json::Value {
        let mut card = serde_json::Map::new();
        let mut holder = serde_json::Map::new();
        for interval in WINDOWS {
            card.insert(
                interval.as_str().into(),
                self.spent(Scope::Card, interval, None, currency).into(),
            );
            holder.insert(
                interval.as_str().into(),
                self.spent(Scope::Cardholder, interval, None, currency)
                    .into(),
            );
        }
        serde_json::json!({
            "currency": currency.as_str(),
            "card": card,
            "cardholder": holder,
            "velocity": {"1h": self.velocity.0, "24h": self.velocity.1},
        })
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

#[cfg(test)]
mod tests;

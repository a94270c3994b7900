//! The emulator's Issuing account: cardholders, cards, authorizations and
//! transactions, and the authorization state machine Stripe runs in test mode.
//!
//! Nothing here does I/O or reads a clock: every operation takes `now` (Unix
//! seconds), so the emulator's API passes its clock's time and the scenario runner a
//! virtual one. A real-time request is split in two — [`Emulator::begin_authorization`]
//! (or [`Emulator::begin_increment`]) builds the `issuing_authorization.request` event,
//! the caller delivers it and turns the reply into a [`WebhookAnswer`], and
//! [`Emulator::finish_request`] applies it — so the network wait happens outside
//! any lock on this state.
//!
//! State machine (`authorization-lifecycle.md`):
//! ```text
//! request ─declined─► closed            request ─approved─► pending
//! pending ─capture(close)─► closed      pending ─capture(close=false)─► pending
//! pending ─reverse(all)─► reversed      pending ─reverse(part)─► pending (amount ↓)
//! pending ─expire─► expired             pending ─increment approved─► pending (amount ↑)
//! expired ─late capture─► closed
//! ```
//!
//! Files: [`inputs`] (what operations take and return), `cards.rs` (cardholders and
//! cards), `authorizations.rs` (the real-time request: begin, API decision, finish),
//! `lifecycle.rs` (capture, expire, reverse), `objects.rs` (the Stripe objects as
//! JSON). Every file adds to the one `impl Emulator`; the account's records live here.

mod authorizations;
mod cards;
pub mod inputs;
mod lifecycle;
mod objects;

use std::collections::BTreeMap;

use serde_json::Value;

use super::events;

pub use inputs::{
    ApiDecision, Begun, MAX_AUTHORIZATION_AMOUNT, Merchant, NewAuthorization, NewCard,
    NewCardholder, SimError, SpendingControls, SpendingLimit, TimeoutFallback, WebhookAnswer,
};

#[derive(Debug, Clone)]
struct Cardholder {
    id: String,
    name: String,
    email: Option<String>,
    status: String,
    controls: SpendingControls,
    metadata: BTreeMap<String, String>,
    created: i64,
}

#[derive(Debug, Clone)]
#[expect(
    clippy::struct_field_names,
    reason = "fields mirror the Stripe object's (`card_type` is its `type`)"
)]
struct Card {
    id: String,
    cardholder: String,
    currency: String,
    status: String,
    card_type: String,
    controls: SpendingControls,
    metadata: BTreeMap<String, String>,
    last4: String,
    created: i64,
}

#[derive(Debug, Clone)]
struct Pending {
    amount: i64,
    merchant_amount: i64,
    is_amount_controllable: bool,
    network_risk_score: Option<i64>,
    requested_at: i64,
    api: Option<ApiDecision>,
}

#[derive(Debug, Clone)]
struct HistoryEntry {
    amount: i64,
    merchant_amount: i64,
    approved: bool,
    authorization_code: Option<String>,
    created: i64,
    reason: &'static str,
    reason_message: Option<String>,
    requested_at: i64,
    network_risk_score: Option<i64>,
}

#[derive(Debug, Clone)]
struct BalanceTxn {
    id: String,
    amount: i64,
    created: i64,
    kind: &'static str,
}

#[derive(Debug, Clone)]
struct Authorization {
    id: String,
    card: String,
    created: i64,
    currency: String,
    merchant_currency: String,
    merchant: Merchant,
    method: String,
    wallet: Option<String>,
    /// Total approved (or, when declined, what was asked).
    amount: i64,
    merchant_amount: i64,
    approved: bool,
    status: &'static str,
    pending: Option<Pending>,
    history: Vec<HistoryEntry>,
    transactions: Vec<String>,
    balance: Vec<BalanceTxn>,
    metadata: BTreeMap<String, String>,
    network_transaction_id: String,
    stan: String,
    /// Sum of captured amounts (positive).
    captured: i64,
    /// The SMS fraud challenge cardgate asked for: its status (`pending`,
    /// `verified`, `rejected`) and when the cardholder answered.
    fraud_challenge: Option<(&'static str, Option<i64>)>,
    /// This is the retry after a verified challenge at the same merchant.
    verified_by_fraud_challenge: Option<bool>,
}

#[derive(Debug, Clone)]
#[expect(
    clippy::struct_field_names,
    reason = "fields mirror the Stripe object's (`network_transaction_id`)"
)]
struct Transaction {
    id: String,
    authorization: String,
    card: String,
    cardholder: String,
    /// Stripe's sign: negative for a capture.
    amount: i64,
    merchant_amount: i64,
    created: i64,
    currency: String,
    merchant_currency: String,
    merchant: Merchant,
    balance_transaction: String,
    authorization_code: Option<String>,
    network_transaction_id: String,
}

/// Deterministic id source: the same namespace and sequence of calls gives the
/// same ids, so a seeded scenario produces identical events run after run.
#[derive(Debug, Clone)]
struct Ids {
    namespace: String,
    next: u64,
}

impl Ids {
    fn next(&mut self, prefix: &str) -> String {
        self.next += 1;
        // Stripe ids are a prefix and 24 base62 characters; ours keep the prefix
        // and a readable namespace + counter, which no real id can collide with.
        format!("{prefix}_{}{:0>10}", self.namespace, self.next)
    }

    fn digits(&mut self, len: usize) -> String {
        self.next += 1;
        // A multiplicative hash of the counter: looks random, stays deterministic.
        let v = self.next.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 8;
        let s = v.to_string();
        s[s.len().saturating_sub(len)..].to_string()
    }
}

/// The emulated Issuing account.
#[derive(Debug)]
pub struct Emulator {
    ids: Ids,
    fallback: TimeoutFallback,
    api_version: String,
    cardholders: BTreeMap<String, Cardholder>,
    cards: BTreeMap<String, Card>,
    authorizations: BTreeMap<String, Authorization>,
    transactions: BTreeMap<String, Transaction>,
}

fn status_in(value: &str, allowed: &[&str], param: &str) -> Result<String, SimError> {
    if allowed.contains(&value) {
        Ok(value.to_string())
    } else {
        Err(SimError::param(
            "parameter_invalid",
            param,
            format!("invalid {param} {value:?}: one of {}", allowed.join(", ")),
        ))
    }
}

fn currency(value: Option<&str>, param: &str, default: &str) -> Result<String, SimError> {
    let c = value.unwrap_or(default).to_ascii_lowercase();
    if c.len() == 3 && c.bytes().all(|b| b.is_ascii_lowercase()) {
        Ok(c)
    } else {
        Err(SimError::param(
            "parameter_invalid",
            param,
            format!("invalid currency {c:?}"),
        ))
    }
}

fn positive(amount: i64, param: &str) -> Result<i64, SimError> {
    if amount <= 0 || amount > MAX_AUTHORIZATION_AMOUNT {
        Err(SimError::param(
            "parameter_invalid_integer",
            param,
            format!("{param} must be between 1 and {MAX_AUTHORIZATION_AMOUNT}, got {amount}"),
        ))
    } else {
        Ok(amount)
    }
}

impl Emulator {
    /// A new, empty account. `namespace` goes into every id (`ic_<namespace>…`), so
    /// two runs against one cardgate do not share ids unless asked to.
    pub fn new(namespace: &str, fallback: TimeoutFallback, api_version: &str) -> Self {
        Emulator {
            ids: Ids {
                namespace: namespace.to_string(),
                next: 0,
            },
            fallback,
            api_version: api_version.to_string(),
            cardholders: BTreeMap::new(),
            cards: BTreeMap::new(),
            authorizations: BTreeMap::new(),
            transactions: BTreeMap::new(),
        }
    }

    /// What the account does on timeout or error.
    pub fn fallback(&self) -> TimeoutFallback {
        self.fallback
    }

    fn event(&mut self, kind: &str, object: Value, previous: Option<Value>, now: i64) -> Value {
        let id = self.ids.next("evt");
        let mut event = events::event(&id, kind, object, previous, now, &self.api_version);
        crate::simulate::versions::shape(&self.api_version, &mut event);
        event
    }

    /// The authorization `id`, for a change.
    fn open_authorization(&mut self, id: &str) -> Result<&mut Authorization, SimError> {
        self.authorizations
            .get_mut(id)
            .ok_or_else(|| SimError::missing("authorization", id))
    }
}

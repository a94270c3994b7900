//! What `cardgate ledger show` prints: a card's authorizations and window totals.

use crate::decision::{Currency, Interval};

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

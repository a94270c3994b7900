//! The ledger's inputs, as stored: our reserves and what lifecycle events report.
//! Each is idempotent by its event id, so replaying them rebuilds the same totals.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::MAX_AMOUNT;
use crate::decision::{AuthRequest, Currency};

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
    /// The reserve [`Ledger::reserve`](super::Ledger::reserve) holds for request
    /// `event_id` of `auth`, windowed at `at`: a pure function of its arguments, so a
    /// caller that handed the fact on can build the same one again to cancel it.
    pub fn reserve(event_id: &str, auth: &AuthRequest<'_>, at: i64, amount: i64) -> Fact {
        Fact::Reserve {
            event_id: event_id.to_string(),
            auth: AuthMeta {
                id: auth.id.to_string(),
                card: auth.card.id.to_string(),
                cardholder: auth.cardholder.id.to_string(),
                created: at,
                currency: auth.currency.as_str().to_string(),
                category: auth.merchant.category.to_string(),
                mcc: auth.merchant.category_code.to_string(),
            },
            amount,
        }
    }

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
        self.record_key().into_owned()
    }

    /// [`Fact::record_id`], borrowed when the fact holds it as is.
    pub(super) fn record_key(&self) -> Cow<'_, str> {
        match self {
            Fact::Reserve { auth, .. } | Fact::Authorization { auth, .. } => {
                Cow::Borrowed(&auth.id)
            }
            Fact::Transaction {
                authorization: Some(a),
                ..
            } => Cow::Borrowed(a),
            Fact::Transaction { txn_id, .. } => Cow::Owned(format!("txn:{txn_id}")),
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

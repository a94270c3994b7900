//! What `decide()` answers: approve (maybe a smaller amount) or decline, with a stable
//! machine reason and the control or rule that caused it. Declines are values, not
//! errors.

use std::sync::Arc;

/// Why the answer is what it is. The strings are part of cardgate's contract: they
/// appear in the webhook response metadata, the decision log and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Nothing declined it.
    Approved,
    /// Card status `inactive` (or a status we do not know).
    CardInactive,
    /// Card status `canceled`.
    CardCanceled,
    /// Cardholder status `inactive` (or unknown).
    CardholderInactive,
    /// Cardholder status `blocked`.
    CardholderBlocked,
    /// Category in a `blocked_categories` list.
    CategoryBlocked,
    /// Category missing from a non-empty `allowed_categories` list.
    CategoryNotAllowed,
    /// Merchant country in `blocked_merchant_countries`.
    CountryBlocked,
    /// Merchant country missing from `allowed_merchant_countries`.
    CountryNotAllowed,
    /// Card presence in `blocked_card_presences`.
    CardPresenceBlocked,
    /// Card presence missing from `allowed_card_presences`.
    CardPresenceNotAllowed,
    /// MCC in the program's `blocked_mccs`.
    MccBlocked,
    /// A spending limit leaves no room (decline) or less room than asked (partial).
    SpendingLimit,
    /// A limit is in another currency than the authorization and policy says decline.
    CurrencyMismatch,
    /// A rule declined or capped it; the rule's name is in the decision's source.
    Rule,
    /// A `review` rule declined it pending a human review.
    Review,
    /// A `challenge` rule declined it and asked Stripe for an SMS fraud
    /// challenge; the only answer that carries `send_fraud_challenges`.
    Challenge,
    /// The fallback answer: the decision could not be made in time or failed.
    Fallback(FallbackCause),
}

/// Why the configured fallback answered instead of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FallbackCause {
    /// The deadline budget ran out.
    Deadline,
    /// The decision code failed (a panic was caught).
    Internal,
    /// The ledger or store could not reserve or commit the hold.
    Ledger,
}

impl FallbackCause {
    /// The cause string, as in `fallback:<cause>`.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackCause::Deadline => "deadline",
            FallbackCause::Internal => "internal",
            FallbackCause::Ledger => "ledger",
        }
    }
}

impl Reason {
    /// Stable machine string. `Rule` is `rule` here; the response spells it
    /// `rule:<name>` (see `stripe::response`).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Approved => "approved",
            Reason::CardInactive => "card_inactive",
            Reason::CardCanceled => "card_canceled",
            Reason::CardholderInactive => "cardholder_inactive",
            Reason::CardholderBlocked => "cardholder_blocked",
            Reason::CategoryBlocked => "category_blocked",
            Reason::CategoryNotAllowed => "category_not_allowed",
            Reason::CountryBlocked => "country_blocked",
            Reason::CountryNotAllowed => "country_not_allowed",
            Reason::CardPresenceBlocked => "card_presence_blocked",
            Reason::CardPresenceNotAllowed => "card_presence_not_allowed",
            Reason::MccBlocked => "mcc_blocked",
            Reason::SpendingLimit => "spending_limit",
            Reason::CurrencyMismatch => "currency_mismatch",
            Reason::Rule => "rule",
            Reason::Review => "review",
            Reason::Challenge => "challenge",
            Reason::Fallback(FallbackCause::Deadline) => "fallback:deadline",
            Reason::Fallback(FallbackCause::Internal) => "fallback:internal",
            Reason::Fallback(FallbackCause::Ledger) => "fallback:ledger",
        }
    }
}

/// Which level of spending controls a control belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// `card.spending_controls` from the payload.
    Card,
    /// `card.cardholder.spending_controls` from the payload.
    Cardholder,
    /// cardgate's `[program]` config.
    Program,
    /// A card override set through the admin API (after approval).
    CardOverride,
    /// A cardholder override set through the admin API.
    CardholderOverride,
}

impl Level {
    /// Prefix used in the decision's `rule` metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Card => "card",
            Level::Cardholder => "cardholder",
            Level::Program => "program",
            Level::CardOverride => "card_override",
            Level::CardholderOverride => "cardholder_override",
        }
    }
}

/// What produced a decline or a reduced amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A spending control, e.g. `(Card, "blocked_categories")` or `(Program, "daily")`
    /// for a limit; rendered `card.blocked_categories`.
    Control(Level, &'static str),
    /// A status check, e.g. `card.status`.
    Status(&'static str),
    /// A rule, by name.
    Rule(Arc<str>),
}

/// The answer to one authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Approve or decline.
    pub approved: bool,
    /// The smaller amount for a partial approval; `None` approves the full request.
    pub amount: Option<i64>,
    /// Why.
    pub reason: Reason,
    /// The control or rule behind `reason`, if any.
    pub source: Option<Source>,
}

impl Decision {
    /// Full approval.
    pub fn approve() -> Self {
        Decision {
            approved: true,
            amount: None,
            reason: Reason::Approved,
            source: None,
        }
    }

    /// A decline.
    pub fn decline(reason: Reason, source: Source) -> Self {
        Decision {
            approved: false,
            amount: None,
            reason,
            source: Some(source),
        }
    }

    /// The configured fallback answer for `cause`.
    pub fn fallback(approve: bool, cause: FallbackCause) -> Self {
        Decision {
            approved: approve,
            amount: None,
            reason: Reason::Fallback(cause),
            source: None,
        }
    }

    /// `"approve"`, `"partial"` or `"decline"`, for metric labels and logs.
    pub fn outcome(&self) -> &'static str {
        match (self.approved, self.amount) {
            (false, _) => "decline",
            (true, None) => "approve",
            (true, Some(_)) => "partial",
        }
    }
}

//! What a decision sees: the authorization request (a borrowed, typed view filled by
//! `stripe::parse`), cardgate's program controls, the live rule set, what the card
//! and cardholder already spent, and the time. Everything a rule may read is here, so
//! `decide()` needs nothing else and does no I/O.

use super::controls::{Controls, Currency, Interval, MerchantCategory, ProgramControls};
use super::signals::RiskSignals;
use super::verdict::Rules;

/// Card status (`issuing.card.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardStatus {
    /// Can approve.
    Active,
    /// Declines (`card_inactive`).
    Inactive,
    /// Declines permanently (`card_canceled`).
    Canceled,
    /// A value Stripe added after this code was written: treated as not active.
    Other,
}

impl CardStatus {
    /// Parses Stripe's value; unknown values become `Other`.
    pub fn parse(s: &str) -> Self {
        match s {
            "active" => CardStatus::Active,
            "inactive" => CardStatus::Inactive,
            "canceled" => CardStatus::Canceled,
            _ => CardStatus::Other,
        }
    }

    /// Stripe's string (`other` for unknown values).
    pub fn as_str(self) -> &'static str {
        match self {
            CardStatus::Active => "active",
            CardStatus::Inactive => "inactive",
            CardStatus::Canceled => "canceled",
            CardStatus::Other => "other",
        }
    }
}

/// Cardholder status (`issuing.cardholder.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardholderStatus {
    /// Cards can approve.
    Active,
    /// All cards decline (`cardholder_inactive`).
    Inactive,
    /// All cards decline, set by Stripe (`cardholder_blocked`).
    Blocked,
    /// Unknown value: treated as not active.
    Other,
}

impl CardholderStatus {
    /// Parses Stripe's value; unknown values become `Other`.
    pub fn parse(s: &str) -> Self {
        match s {
            "active" => CardholderStatus::Active,
            "inactive" => CardholderStatus::Inactive,
            "blocked" => CardholderStatus::Blocked,
            _ => CardholderStatus::Other,
        }
    }

    /// Stripe's string (`other` for unknown values).
    pub fn as_str(self) -> &'static str {
        match self {
            CardholderStatus::Active => "active",
            CardholderStatus::Inactive => "inactive",
            CardholderStatus::Blocked => "blocked",
            CardholderStatus::Other => "other",
        }
    }
}

/// Merchant fields (`merchant_data`). Absent or null strings are `""`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merchant<'a> {
    /// Stripe category name.
    pub category: &'a str,
    /// MCC, four digits.
    pub category_code: &'a str,
    /// ISO alpha-2 country.
    pub country: &'a str,
    /// City.
    pub city: &'a str,
    /// Merchant name as the network reports it.
    pub name: &'a str,
    /// Network merchant id.
    pub network_id: &'a str,
    /// Postal code.
    pub postal_code: &'a str,
    /// State or region.
    pub state: &'a str,
}

/// The card (`card`, always embedded whole in the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card<'a> {
    /// `ic_…`
    pub id: &'a str,
    /// `physical` or `virtual`.
    pub card_type: &'a str,
    /// Status.
    pub status: CardStatus,
    /// The card's currency.
    pub currency: Option<Currency>,
    /// String metadata set by the program.
    pub metadata: Vec<(&'a str, &'a str)>,
    /// The card's own spending controls.
    pub controls: Controls,
}

/// The cardholder (`card.cardholder`, embedded whole in the request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cardholder<'a> {
    /// `ich_…`
    pub id: &'a str,
    /// `individual` or `company`.
    pub kind: &'a str,
    /// Status.
    pub status: CardholderStatus,
    /// The cardholder's spending controls, covering all its cards.
    pub controls: Controls,
}

/// `verification_data` checks; absent values are `""`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification<'a> {
    /// `match` | `mismatch` | `not_provided`
    pub cvc_check: &'a str,
    /// `match` | `mismatch` | `not_provided`
    pub expiry_check: &'a str,
    /// `match` | `mismatch` | `not_provided`
    pub address_postal_code_check: &'a str,
    /// `three_d_secure.result`, or `""` when there was none.
    pub three_d_secure: &'a str,
}

/// One `issuing_authorization.request`: the pending request and everything around it
/// that decisions use. Amounts are in the smallest unit of `currency` (the card's).
#[derive(Debug, Clone, PartialEq)]
pub struct AuthRequest<'a> {
    /// `iauth_…`
    pub id: &'a str,
    /// Unix seconds the authorization was created.
    pub created: i64,
    /// `pending_request.amount`: what Stripe will hold if approved.
    pub amount: i64,
    /// `pending_request.currency`.
    pub currency: Currency,
    /// `pending_request.merchant_amount`.
    pub merchant_amount: i64,
    /// `pending_request.merchant_currency`.
    pub merchant_currency: Currency,
    /// `pending_request.is_amount_controllable`: a smaller `amount` may be approved.
    pub is_amount_controllable: bool,
    /// `pending_request.network_risk_score` (1–99).
    pub network_risk_score: Option<i64>,
    /// `pending_request.amount_details.cashback_amount`; a partial approval must cover it.
    pub cashback_amount: i64,
    /// `chip` | `contactless` | `keyed_in` | `online` | `swipe`.
    pub authorization_method: &'a str,
    /// `card_presence` as sent: `present`, `not_present`, a value Stripe added
    /// later (kept, never refused), or `""` when absent or null (before
    /// 2026-04-22.dahlia).
    pub card_presence: &'a str,
    /// `apple_pay` | `google_pay` | `samsung_pay`, or `""`.
    pub wallet: &'a str,
    /// Merchant fields.
    pub merchant: Merchant<'a>,
    /// The card.
    pub card: Card<'a>,
    /// The card's cardholder.
    pub cardholder: Cardholder<'a>,
    /// Verification checks.
    pub verification: Verification<'a>,
    /// Risk assessments, fraud-challenge flag, fuel, fleet, network data, token.
    pub signals: RiskSignals<'a>,
}

/// Which spend a limit counts: the card's or its cardholder's (all cards).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// This card (and the cards it replaced).
    Card,
    /// Every card of the cardholder.
    Cardholder,
}

/// What a card or cardholder already spent (holds + captures) in the current
/// interval windows. The ledger implements it with a snapshot taken before
/// `decide()`; the atomic re-check happens when the approved amount is reserved.
pub trait SpendView {
    /// Spend of `scope` in the window of `interval` containing `now`, counting only
    /// `categories` (or everything when `None`), in `currency`.
    fn spent(
        &self,
        scope: Scope,
        interval: Interval,
        categories: Option<&super::controls::CategorySet>,
        currency: Currency,
    ) -> i64;

    /// Authorizations of the card in the last hour and day (for `velocity.*`).
    fn card_velocity(&self) -> (i64, i64) {
        (0, 0)
    }

    /// The behavioural signals of the card and cardholder (`crate::signals`).
    fn signals(&self) -> &Signals {
        &Signals::NONE
    }
}

/// Behavioural signals (`velocity.cardholder.*`, `velocity.card.amount_24h`, …,
/// `history.card.*`): values computed before `decide()` by `crate::signals` from the
/// card's recent decisions, read by rules like any other field. Plain values, so
/// the decision stays pure and the backtest can hand back the recorded ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signals {
    /// The cardholder's authorization requests (all its cards) in the last hour.
    pub cardholder_count_1h: i64,
    /// … in the last 24 hours.
    pub cardholder_count_24h: i64,
    /// Sum of the card's approved amounts in the last 24 hours.
    pub card_amount_24h: i64,
    /// The card's declined requests in the last hour.
    pub card_declines_1h: i64,
    /// … in the last 24 hours.
    pub card_declines_24h: i64,
    /// Distinct merchants the card saw requests from in the last hour.
    pub card_distinct_merchants_1h: i64,
    /// Seconds since the card's first authorization request (0 for the first).
    pub first_seen: i64,
    /// The card never had a request from this merchant before.
    pub new_merchant: bool,
    /// Average requested amount of the card over the last 30 days (0 when none).
    pub amount_avg_30d: i64,
    /// Largest requested amount of the card over the last 30 days (0 when none).
    pub amount_max_30d: i64,
    /// Merchant country of the card's previous request (`[0, 0]` when none).
    pub last_country: [u8; 2],
    /// Seconds since the card's previous request (-1 when none).
    pub seconds_since_last: i64,
}

impl Default for Signals {
    fn default() -> Self {
        Signals::NONE
    }
}

impl Signals {
    /// A card never seen: no history.
    pub const NONE: Signals = Signals {
        cardholder_count_1h: 0,
        cardholder_count_24h: 0,
        card_amount_24h: 0,
        card_declines_1h: 0,
        card_declines_24h: 0,
        card_distinct_merchants_1h: 0,
        first_seen: 0,
        new_merchant: true,
        amount_avg_30d: 0,
        amount_max_30d: 0,
        last_country: [0, 0],
        seconds_since_last: -1,
    };

    /// `last_country` as text (`""` when none).
    pub fn last_country(&self) -> &str {
        match &self.last_country {
            [0, 0] => "",
            c => std::str::from_utf8(c).unwrap_or(""),
        }
    }
}

/// A [`SpendView`] that knows no past spend: used where no ledger runs (tests,
/// `rules test`). Interval limits then guard each authorization alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSpend;

impl SpendView for NoSpend {
    fn spent(
        &self,
        _: Scope,
        _: Interval,
        _: Option<&super::controls::CategorySet>,
        _: Currency,
    ) -> i64 {
        0
    }
}

/// Everything `decide()` reads.
pub struct Context<'a> {
    /// The request.
    pub auth: &'a AuthRequest<'a>,
    /// The merchant's category, resolved by name and by MCC once.
    pub category: MerchantCategory<'a>,
    /// cardgate's program controls.
    pub program: &'a ProgramControls,
    /// The live rule set.
    pub rules: &'a dyn Rules,
    /// Past spend.
    pub spend: &'a dyn SpendView,
    /// Unix seconds, UTC: injected so decisions are reproducible (backtest, tests).
    pub now: i64,
    /// The card's control override set through the admin API, if any.
    pub card_override: Option<&'a Controls>,
    /// The cardholder's control override, if any.
    pub cardholder_override: Option<&'a Controls>,
    /// An approved one-time allowance covers this retry: a matching `review` rule
    /// lets it through instead of declining.
    pub review_allowed: bool,
}

impl<'a> Context<'a> {
    /// Builds a context, resolving the merchant category.
    pub fn new(
        auth: &'a AuthRequest<'a>,
        program: &'a ProgramControls,
        rules: &'a dyn Rules,
        spend: &'a dyn SpendView,
        now: i64,
    ) -> Self {
        Context {
            auth,
            category: MerchantCategory::new(auth.merchant.category, auth.merchant.category_code),
            program,
            rules,
            spend,
            now,
            card_override: None,
            cardholder_override: None,
            review_allowed: false,
        }
    }

    /// Adds what approvals decided for this card: control overrides (an extra
    /// controls layer after the program's) and whether an allowance covers a review.
    #[must_use]
    pub fn with_approvals(
        mut self,
        card_override: Option<&'a Controls>,
        cardholder_override: Option<&'a Controls>,
        review_allowed: bool,
    ) -> Self {
        self.card_override = card_override;
        self.cardholder_override = cardholder_override;
        self.review_allowed = review_allowed;
        self
    }
}

//! The emulator's Issuing account: cardholders, cards, authorizations and
//! transactions, and the authorization state machine Stripe runs in test mode.
//!
//! Nothing here does I/O or reads a clock: every operation takes `now` (Unix
//! seconds), so the HTTP emulator passes the wall clock and the scenario runner a
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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::events;

/// Stripe's default per-authorization cap that no control can lift (10,000 USD).
/// Kept so a scenario cannot ask for amounts no card could ever be authorized for.
pub const MAX_AUTHORIZATION_AMOUNT: i64 = 1_000_000;

/// Why an emulator call was refused. Each maps to a Stripe-shaped
/// `invalid_request_error`; `code` is the machine-readable part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SimError {
    /// Stripe-style error code (`resource_missing`, `parameter_invalid_integer`, …).
    pub code: &'static str,
    /// The parameter at fault, when there is one.
    pub param: Option<String>,
    /// Human-readable explanation.
    pub message: String,
    /// HTTP status the API answers with (400 or 404).
    pub status: u16,
}

impl SimError {
    /// A bad parameter (400).
    pub fn param(code: &'static str, param: &str, message: impl Into<String>) -> Self {
        SimError {
            code,
            param: Some(param.to_string()),
            message: message.into(),
            status: 400,
        }
    }

    /// No such object (404, `resource_missing`).
    pub fn missing(param: &str, id: &str) -> Self {
        SimError {
            code: "resource_missing",
            param: Some(param.to_string()),
            message: format!("No such {param}: '{id}'"),
            status: 404,
        }
    }

    /// The object is not in a state that allows the call (400).
    pub fn state(code: &'static str, message: impl Into<String>) -> Self {
        SimError {
            code,
            param: None,
            message: message.into(),
            status: 400,
        }
    }
}

/// What the account does when the real-time endpoint does not answer in time or
/// answers something Stripe cannot use (the Dashboard's timeout setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TimeoutFallback {
    /// Approve the requested amount.
    Approve,
    /// Decline.
    #[default]
    Decline,
}

/// Stripe `spending_controls`, as set on a card or cardholder. The emulator puts
/// them into every request payload; deciding on them is the webhook's job (see
/// the module docs of [`super`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendingControls {
    /// Only these merchant categories are allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_categories: Option<Vec<String>>,
    /// These merchant categories decline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_categories: Option<Vec<String>>,
    /// Only these merchant countries are allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_merchant_countries: Option<Vec<String>>,
    /// These merchant countries decline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_merchant_countries: Option<Vec<String>>,
    /// Amount limits.
    #[serde(default)]
    pub spending_limits: Vec<SpendingLimit>,
    /// Currency of every limit (the card's currency when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spending_limits_currency: Option<String>,
}

/// One entry of `spending_limits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendingLimit {
    /// Maximum per interval, minor units.
    pub amount: i64,
    /// `per_authorization`, `daily`, `weekly`, `monthly`, `yearly` or `all_time`.
    pub interval: String,
    /// Categories the limit counts (all when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
}

impl SpendingControls {
    fn validate(&self, param: &str) -> Result<(), SimError> {
        if self.allowed_categories.is_some() && self.blocked_categories.is_some() {
            return Err(SimError::param(
                "parameter_invalid",
                &format!("{param}[allowed_categories]"),
                "allowed_categories cannot be set with blocked_categories",
            ));
        }
        if self.allowed_merchant_countries.is_some() && self.blocked_merchant_countries.is_some() {
            return Err(SimError::param(
                "parameter_invalid",
                &format!("{param}[allowed_merchant_countries]"),
                "allowed_merchant_countries cannot be set with blocked_merchant_countries",
            ));
        }
        for (i, l) in self.spending_limits.iter().enumerate() {
            if crate::decision::Interval::parse(&l.interval).is_none() {
                return Err(SimError::param(
                    "parameter_invalid",
                    &format!("{param}[spending_limits][{i}][interval]"),
                    format!("invalid interval {:?}", l.interval),
                ));
            }
            if l.amount < 0 {
                return Err(SimError::param(
                    "parameter_invalid_integer",
                    &format!("{param}[spending_limits][{i}][amount]"),
                    "amount must not be negative",
                ));
            }
        }
        Ok(())
    }
}

/// A cardholder to create.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCardholder {
    /// Display name.
    pub name: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// `active` (default) or `inactive`; `blocked` is Stripe's to set, but the
    /// emulator allows it so tests can exercise it.
    pub status: Option<String>,
    /// Controls over all the cardholder's cards.
    #[serde(default)]
    pub spending_controls: SpendingControls,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// A card to create.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCard {
    /// `ich_…` (required).
    pub cardholder: String,
    /// Card currency, default `usd`.
    pub currency: Option<String>,
    /// `active` or `inactive` (Stripe's default; the emulator defaults to
    /// `active` so a fresh card can be used at once) or `canceled`.
    pub status: Option<String>,
    /// `virtual` (default) or `physical`.
    #[serde(rename = "type")]
    pub card_type: Option<String>,
    /// Controls on this card.
    #[serde(default)]
    pub spending_controls: SpendingControls,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// `merchant_data` of a purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merchant {
    /// Stripe category name.
    pub category: String,
    /// MCC, four digits.
    pub category_code: String,
    /// Merchant name.
    pub name: String,
    /// City.
    pub city: String,
    /// ISO alpha-2 country.
    pub country: String,
    /// Postal code.
    pub postal_code: Option<String>,
    /// State or region.
    pub state: Option<String>,
    /// Network merchant id.
    pub network_id: String,
}

impl Default for Merchant {
    /// Stripe's test-helper examples use Rocket Rides, a San Francisco taxi firm.
    fn default() -> Self {
        Merchant {
            category: "taxicabs_limousines".into(),
            category_code: "4121".into(),
            name: "Rocket Rides".into(),
            city: "San Francisco".into(),
            country: "US".into(),
            postal_code: Some("94107".into()),
            state: Some("CA".into()),
            network_id: "1234567890".into(),
        }
    }
}

/// Parameters of `POST /v1/test_helpers/issuing/authorizations`.
#[derive(Debug, Clone)]
pub struct NewAuthorization {
    /// `ic_…`
    pub card: String,
    /// Amount in the card currency.
    pub amount: i64,
    /// Merchant's currency (card currency when unset).
    pub merchant_currency: Option<String>,
    /// Merchant's amount (same as `amount` when unset).
    pub merchant_amount: Option<i64>,
    /// The merchant.
    pub merchant: Merchant,
    /// `chip`, `contactless`, `keyed_in`, `online` (default) or `swipe`.
    pub authorization_method: String,
    /// Whether a partial approval is allowed.
    pub is_amount_controllable: bool,
    /// `apple_pay`, `google_pay`, `samsung_pay` or none.
    pub wallet: Option<String>,
    /// Card network's risk score, 1–99.
    pub network_risk_score: Option<i64>,
}

/// What came back from the real-time endpoint, as the HTTP layer saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookAnswer {
    /// A valid direct decision.
    Decision {
        /// `approved`.
        approved: bool,
        /// `amount` (only honoured when the request was amount-controllable).
        amount: Option<i64>,
    },
    /// 200 without a decision in the body: the endpoint means to call the
    /// deprecated approve/decline API, and no call arrived within the window.
    NoDecision,
    /// No answer within the timeout.
    Timeout,
    /// Non-200, unreadable body, or invalid fields; the text is `reason_message`.
    Error(String),
}

/// A decision made through the deprecated `approve`/`decline` API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiDecision {
    /// Approve or decline.
    pub approved: bool,
    /// `amount` (approve only).
    pub amount: Option<i64>,
    /// `metadata` to set on the authorization.
    pub metadata: BTreeMap<String, String>,
}

/// Result of asking for an authorization.
#[derive(Debug)]
pub enum Begun {
    /// Stripe's own checks declined it; the events to deliver (`created`).
    Declined {
        /// `iauth_…`
        id: String,
        /// Events to deliver.
        events: Vec<Value>,
    },
    /// A real-time request must be delivered, then [`Emulator::finish_request`] called.
    Request {
        /// `iauth_…`
        id: String,
        /// The `issuing_authorization.request` event.
        event: Value,
    },
}

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
}

#[derive(Debug, Clone)]
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
        events::event(&id, kind, object, previous, now, &self.api_version)
    }

    // === cardholders and cards ===

    /// Creates a cardholder; returns the `issuing.cardholder` object.
    pub fn create_cardholder(&mut self, new: NewCardholder, now: i64) -> Result<Value, SimError> {
        new.spending_controls.validate("spending_controls")?;
        let status = status_in(
            new.status.as_deref().unwrap_or("active"),
            &["active", "inactive", "blocked"],
            "status",
        )?;
        let id = self.ids.next("ich");
        let ch = Cardholder {
            name: new.name.unwrap_or_else(|| "Test Cardholder".into()),
            email: new.email,
            status,
            controls: new.spending_controls,
            metadata: new.metadata,
            created: now,
            id: id.clone(),
        };
        let out = self.cardholder_json(&ch);
        self.cardholders.insert(id, ch);
        Ok(out)
    }

    /// Creates a card for an existing cardholder; returns the `issuing.card` object.
    pub fn create_card(&mut self, new: NewCard, now: i64) -> Result<Value, SimError> {
        if !self.cardholders.contains_key(&new.cardholder) {
            return Err(SimError::missing("cardholder", &new.cardholder));
        }
        new.spending_controls.validate("spending_controls")?;
        let status = status_in(
            new.status.as_deref().unwrap_or("active"),
            &["active", "inactive", "canceled"],
            "status",
        )?;
        let card_type = status_in(
            new.card_type.as_deref().unwrap_or("virtual"),
            &["virtual", "physical"],
            "type",
        )?;
        let id = self.ids.next("ic");
        let last4 = self.ids.digits(4);
        let card = Card {
            cardholder: new.cardholder,
            currency: currency(new.currency.as_deref(), "currency", "usd")?,
            status,
            card_type,
            controls: new.spending_controls,
            metadata: new.metadata,
            last4: format!("{last4:0>4}"),
            created: now,
            id: id.clone(),
        };
        self.cards.insert(id.clone(), card);
        self.card(&id)
    }

    /// Changes a card's status (`active`, `inactive`, `canceled`; canceled is final).
    pub fn set_card_status(&mut self, id: &str, status: &str) -> Result<Value, SimError> {
        let status = status_in(status, &["active", "inactive", "canceled"], "status")?;
        let card = self
            .cards
            .get_mut(id)
            .ok_or_else(|| SimError::missing("card", id))?;
        if card.status == "canceled" && status != "canceled" {
            return Err(SimError::state(
                "card_canceled",
                "a canceled card cannot be reactivated",
            ));
        }
        card.status = status;
        self.card(id)
    }

    /// The `issuing.card` object (with its cardholder embedded).
    pub fn card(&self, id: &str) -> Result<Value, SimError> {
        let card = self
            .cards
            .get(id)
            .ok_or_else(|| SimError::missing("card", id))?;
        let holder = self
            .cardholders
            .get(&card.cardholder)
            .ok_or_else(|| SimError::missing("cardholder", &card.cardholder))?;
        Ok(events::card(
            &events::CardView {
                id: &card.id,
                currency: &card.currency,
                status: &card.status,
                card_type: &card.card_type,
                last4: &card.last4,
                created: card.created,
                metadata: &card.metadata,
                controls: &card.controls,
            },
            self.cardholder_json(holder),
        ))
    }

    fn cardholder_json(&self, ch: &Cardholder) -> Value {
        events::cardholder(&events::CardholderView {
            id: &ch.id,
            name: &ch.name,
            email: ch.email.as_deref(),
            status: &ch.status,
            created: ch.created,
            metadata: &ch.metadata,
            controls: &ch.controls,
        })
    }

    /// Ids of every card, in creation order of their ids.
    pub fn card_ids(&self) -> Vec<String> {
        self.cards.keys().cloned().collect()
    }

    // === authorizations ===

    /// Starts an authorization: Stripe's own checks (card and cardholder status),
    /// then either an immediate decline or a real-time request to deliver.
    pub fn begin_authorization(
        &mut self,
        new: NewAuthorization,
        now: i64,
    ) -> Result<Begun, SimError> {
        let card = self
            .cards
            .get(&new.card)
            .ok_or_else(|| SimError::missing("card", &new.card))?
            .clone();
        let amount = positive(new.amount, "amount")?;
        let merchant_amount = positive(new.merchant_amount.unwrap_or(amount), "merchant_amount")?;
        status_in(
            &new.authorization_method,
            &["chip", "contactless", "keyed_in", "online", "swipe"],
            "authorization_method",
        )?;
        if let Some(w) = &new.wallet {
            status_in(w, &["apple_pay", "google_pay", "samsung_pay"], "wallet")?;
        }
        if !(new.merchant.category_code.len() == 4
            && new
                .merchant
                .category_code
                .bytes()
                .all(|b| b.is_ascii_digit()))
        {
            return Err(SimError::param(
                "parameter_invalid",
                "merchant_data[category_code]",
                "category_code must be four digits",
            ));
        }
        let merchant_currency = currency(
            new.merchant_currency.as_deref(),
            "merchant_currency",
            &card.currency,
        )?;
        let holder_status = self
            .cardholders
            .get(&card.cardholder)
            .map(|h| h.status.clone())
            .unwrap_or_default();
        let id = self.ids.next("iauth");
        let network_transaction_id = self.ids.digits(15);
        let stan = self.ids.digits(6);
        let mut auth = Authorization {
            id: id.clone(),
            card: card.id.clone(),
            created: now,
            currency: card.currency.clone(),
            merchant_currency,
            merchant: new.merchant,
            method: new.authorization_method,
            wallet: new.wallet,
            amount: 0,
            merchant_amount: 0,
            approved: false,
            status: "pending",
            pending: Some(Pending {
                amount,
                merchant_amount,
                is_amount_controllable: new.is_amount_controllable,
                network_risk_score: new.network_risk_score,
                requested_at: now,
                api: None,
            }),
            history: Vec::new(),
            transactions: Vec::new(),
            balance: Vec::new(),
            metadata: BTreeMap::new(),
            network_transaction_id,
            stan,
            captured: 0,
        };
        // Stripe declines these itself, before any real-time request
        // (`spending-controls.md`, status table).
        let stripe_decline = match (card.status.as_str(), holder_status.as_str()) {
            ("canceled", _) => Some("card_canceled"),
            ("inactive", _) => Some("card_inactive"),
            (_, "blocked") => Some("cardholder_blocked"),
            (_, "inactive") => Some("cardholder_inactive"),
            _ => None,
        };
        if let Some(reason) = stripe_decline {
            self.authorizations.insert(id.clone(), auth);
            let events = self.decide(&id, false, None, reason, None, now)?;
            return Ok(Begun::Declined { id, events });
        }
        auth.status = "pending";
        self.authorizations.insert(id.clone(), auth);
        let object = self.authorization(&id)?;
        let event = self.event(crate::stripe::AUTHORIZATION_REQUEST, object, None, now);
        Ok(Begun::Request { id, event })
    }

    /// Starts an increment on an approved, pending authorization; returns the
    /// `issuing_authorization.request` event for the additional amount.
    pub fn begin_increment(
        &mut self,
        id: &str,
        increment_amount: i64,
        is_amount_controllable: bool,
        now: i64,
    ) -> Result<Value, SimError> {
        let increment_amount = positive(increment_amount, "increment_amount")?;
        let auth = self.open_authorization(id)?;
        if auth.pending.is_some() {
            return Err(SimError::state(
                "authorization_request_pending",
                format!("authorization {id} already has a request waiting for a decision"),
            ));
        }
        if !auth.approved || auth.status != "pending" {
            return Err(SimError::state(
                "authorization_not_pending",
                format!(
                    "only an approved, pending authorization can be incremented; {id} is {}",
                    auth.status
                ),
            ));
        }
        auth.pending = Some(Pending {
            amount: increment_amount,
            merchant_amount: increment_amount,
            is_amount_controllable,
            network_risk_score: None,
            requested_at: now,
            api: None,
        });
        let object = self.authorization(id)?;
        Ok(self.event(crate::stripe::AUTHORIZATION_REQUEST, object, None, now))
    }

    /// Records an `approve`/`decline` API call while a request is outstanding
    /// (it wins over the direct answer, as at Stripe). Returns the authorization.
    pub fn record_api_decision(&mut self, id: &str, d: ApiDecision) -> Result<Value, SimError> {
        let auth = self.open_authorization(id)?;
        let Some(pending) = auth.pending.as_mut() else {
            return Err(SimError::state(
                "authorization_not_pending",
                format!(
                    "authorization {id} has no pending request: approve and decline must be \
                     called within the real-time window"
                ),
            ));
        };
        if pending.api.is_some() {
            return Err(SimError::state(
                "authorization_already_decided",
                format!("authorization {id} was already approved or declined"),
            ));
        }
        if let Some(a) = d.amount {
            positive(a, "amount")?;
        }
        pending.api = Some(d);
        self.authorization(id)
    }

    /// Whether the outstanding request on `id` already has an API decision.
    pub fn has_api_decision(&self, id: &str) -> bool {
        self.authorizations
            .get(id)
            .and_then(|a| a.pending.as_ref())
            .is_some_and(|p| p.api.is_some())
    }

    /// Applies the endpoint's answer to the outstanding request on `id`; returns the
    /// events to deliver (`created` for a first request, `updated` for an increment).
    pub fn finish_request(
        &mut self,
        id: &str,
        answer: WebhookAnswer,
        now: i64,
    ) -> Result<Vec<Value>, SimError> {
        let auth = self
            .authorizations
            .get(id)
            .ok_or_else(|| SimError::missing("authorization", id))?;
        let Some(pending) = &auth.pending else {
            return Err(SimError::state(
                "authorization_not_pending",
                format!("authorization {id} has no outstanding request"),
            ));
        };
        let fallback = self.fallback == TimeoutFallback::Approve;
        // The API call wins over a direct answer (realtime-authorizations.md §7).
        let (approved, amount, reason, message, metadata) = match (&pending.api, answer) {
            (Some(api), _) => {
                let reason = if api.approved {
                    "webhook_approved"
                } else {
                    "webhook_declined"
                };
                (
                    api.approved,
                    api.amount,
                    reason,
                    None,
                    Some(api.metadata.clone()),
                )
            }
            (None, WebhookAnswer::Decision { approved, amount }) => {
                let reason = if approved {
                    "webhook_approved"
                } else {
                    "webhook_declined"
                };
                (approved, amount, reason, None, None)
            }
            (None, WebhookAnswer::Timeout) => (fallback, None, "webhook_timeout", None, None),
            (None, WebhookAnswer::NoDecision) => (
                fallback,
                None,
                "webhook_timeout",
                Some(
                    "the endpoint answered without a decision and no approve or decline call \
                     arrived within the window"
                        .to_string(),
                ),
                None,
            ),
            (None, WebhookAnswer::Error(m)) => (fallback, None, "webhook_error", Some(m), None),
        };
        // `amount` only counts when the request was amount-controllable; Stripe
        // ignores it otherwise (realtime-authorizations.md §5).
        let amount = if pending.is_amount_controllable {
            amount.map(|a| a.min(pending.amount))
        } else {
            None
        };
        if let Some(md) = metadata
            && let Some(a) = self.authorizations.get_mut(id)
        {
            apply_metadata(&mut a.metadata, md);
        }
        self.decide(id, approved, amount, reason, message, now)
    }

    /// Records the decision on the outstanding request and builds its event.
    fn decide(
        &mut self,
        id: &str,
        approved: bool,
        partial: Option<i64>,
        reason: &'static str,
        reason_message: Option<String>,
        now: i64,
    ) -> Result<Vec<Value>, SimError> {
        let code = self.ids.digits(6);
        let hold_id = self.ids.next("txn");
        let before = self.authorization(id)?;
        let auth = self
            .authorizations
            .get_mut(id)
            .ok_or_else(|| SimError::missing("authorization", id))?;
        let Some(p) = auth.pending.take() else {
            return Err(SimError::state(
                "authorization_not_pending",
                format!("authorization {id} has no outstanding request"),
            ));
        };
        let increment = !auth.history.is_empty();
        let granted = if approved {
            partial.unwrap_or(p.amount)
        } else {
            0
        };
        let merchant_granted = if approved && granted < p.amount {
            // Scale the merchant's amount like the card amount, rounding up so a
            // partial approval never shows a smaller merchant amount than it covers.
            (p.merchant_amount * granted + p.amount - 1) / p.amount
        } else if approved {
            p.merchant_amount
        } else {
            0
        };
        auth.history.push(HistoryEntry {
            amount: if approved { granted } else { p.amount },
            merchant_amount: if approved {
                merchant_granted
            } else {
                p.merchant_amount
            },
            approved,
            authorization_code: approved.then(|| format!("S{code:0>6}")),
            created: now,
            reason,
            reason_message,
            requested_at: p.requested_at,
            network_risk_score: p.network_risk_score,
        });
        if increment {
            auth.amount += granted;
            auth.merchant_amount += merchant_granted;
        } else {
            auth.approved = approved;
            auth.amount = if approved { granted } else { p.amount };
            auth.merchant_amount = if approved {
                merchant_granted
            } else {
                p.merchant_amount
            };
            auth.status = if approved { "pending" } else { "closed" };
        }
        if granted > 0 {
            auth.balance.push(BalanceTxn {
                id: hold_id,
                amount: -granted,
                created: now,
                kind: "issuing_authorization_hold",
            });
        }
        let object = self.authorization(id)?;
        let (kind, previous) = if increment {
            (
                crate::stripe::AUTHORIZATION_UPDATED,
                Some(events::previous_attributes(&before, &object)),
            )
        } else {
            (crate::stripe::AUTHORIZATION_CREATED, None)
        };
        Ok(vec![self.event(kind, object, previous, now)])
    }

    fn open_authorization(&mut self, id: &str) -> Result<&mut Authorization, SimError> {
        self.authorizations
            .get_mut(id)
            .ok_or_else(|| SimError::missing("authorization", id))
    }

    /// Captures `capture_amount` (default: what is still held); `close` closes the
    /// authorization. Returns `issuing_transaction.created` and
    /// `issuing_authorization.updated`.
    pub fn capture(
        &mut self,
        id: &str,
        capture_amount: Option<i64>,
        close: bool,
        now: i64,
    ) -> Result<Vec<Value>, SimError> {
        let txn_id = self.ids.next("ipi");
        let capture_bt = self.ids.next("txn");
        let release_bt = self.ids.next("txn");
        let before = self.authorization(id)?;
        let auth = self
            .authorizations
            .get_mut(id)
            .ok_or_else(|| SimError::missing("authorization", id))?;
        if auth.pending.is_some() {
            return Err(SimError::state(
                "authorization_request_pending",
                format!("authorization {id} is waiting for a decision"),
            ));
        }
        if !auth.approved || !matches!(auth.status, "pending" | "expired") {
            return Err(SimError::state(
                "authorization_not_capturable",
                format!(
                    "authorization {id} is {} and cannot be captured",
                    if auth.approved {
                        auth.status
                    } else {
                        "declined"
                    }
                ),
            ));
        }
        let held = if auth.status == "pending" {
            (auth.amount - auth.captured).max(0)
        } else {
            0
        };
        let default = if auth.status == "expired" {
            auth.amount
        } else {
            held
        };
        let amount = positive(capture_amount.unwrap_or(default), "capture_amount")?;
        auth.captured += amount;
        if held > 0 {
            // Capturing releases the hold (or the part this capture covers when
            // more captures may follow) and debits the balance for the capture.
            let release = if close { held } else { amount.min(held) };
            auth.balance.push(BalanceTxn {
                id: release_bt,
                amount: release,
                created: now,
                kind: "issuing_authorization_release",
            });
        }
        if close {
            auth.status = "closed";
        }
        auth.transactions.push(txn_id.clone());
        let card = self
            .cards
            .get(&auth.card)
            .map(|c| c.cardholder.clone())
            .unwrap_or_default();
        let code = auth
            .history
            .iter()
            .rev()
            .find_map(|h| h.authorization_code.clone());
        // Scale to the merchant's currency at the authorization's own rate.
        let merchant_amount = if auth.amount > 0 {
            auth.merchant_amount.saturating_mul(amount) / auth.amount
        } else {
            amount
        };
        let txn = Transaction {
            id: txn_id.clone(),
            authorization: id.to_string(),
            card: auth.card.clone(),
            cardholder: card,
            amount: -amount,
            merchant_amount: -merchant_amount,
            created: now,
            currency: auth.currency.clone(),
            merchant_currency: auth.merchant_currency.clone(),
            merchant: auth.merchant.clone(),
            balance_transaction: capture_bt,
            authorization_code: code,
            network_transaction_id: auth.network_transaction_id.clone(),
        };
        self.transactions.insert(txn_id.clone(), txn);
        let txn_json = self.transaction(&txn_id)?;
        let object = self.authorization(id)?;
        let previous = events::previous_attributes(&before, &object);
        Ok(vec![
            self.event(crate::stripe::TRANSACTION_CREATED, txn_json, None, now),
            self.event(
                crate::stripe::AUTHORIZATION_UPDATED,
                object,
                Some(previous),
                now,
            ),
        ])
    }

    /// Expires an approved, pending authorization (`status: expired`, hold released).
    pub fn expire(&mut self, id: &str, now: i64) -> Result<Vec<Value>, SimError> {
        let bt = self.ids.next("txn");
        let before = self.authorization(id)?;
        let auth = self.pending_approved(id, "expired")?;
        let held = (auth.amount - auth.captured).max(0);
        if held > 0 {
            auth.balance.push(BalanceTxn {
                id: bt,
                amount: held,
                created: now,
                kind: "issuing_authorization_release",
            });
        }
        auth.status = "expired";
        let object = self.authorization(id)?;
        let previous = events::previous_attributes(&before, &object);
        Ok(vec![self.event(
            crate::stripe::AUTHORIZATION_UPDATED,
            object,
            Some(previous),
            now,
        )])
    }

    /// Reverses `reverse_amount` (default: everything still held). Reversing it all
    /// sets `status: reversed` and `amount: 0`.
    pub fn reverse(
        &mut self,
        id: &str,
        reverse_amount: Option<i64>,
        now: i64,
    ) -> Result<Vec<Value>, SimError> {
        let bt = self.ids.next("txn");
        let before = self.authorization(id)?;
        let auth = self.pending_approved(id, "reversed")?;
        let held = (auth.amount - auth.captured).max(0);
        let amount = match reverse_amount {
            None => held,
            Some(a) => positive(a, "reverse_amount")?,
        };
        if amount > held {
            return Err(SimError::param(
                "parameter_invalid_integer",
                "reverse_amount",
                format!("reverse_amount {amount} is more than the {held} still authorized"),
            ));
        }
        if amount > 0 {
            auth.balance.push(BalanceTxn {
                id: bt,
                amount,
                created: now,
                kind: "issuing_authorization_release",
            });
        }
        let old = auth.amount;
        auth.amount -= amount;
        // `merchant_amount` shrinks in proportion ("can be reduced by reversals").
        auth.merchant_amount = if old > 0 {
            auth.merchant_amount.saturating_mul(auth.amount) / old
        } else {
            0
        };
        if auth.amount == 0 {
            auth.status = "reversed";
        } else if auth.captured > 0 && auth.amount <= auth.captured {
            // Only captured money is left: nothing to hold any more.
            auth.status = "closed";
        }
        let object = self.authorization(id)?;
        let previous = events::previous_attributes(&before, &object);
        Ok(vec![self.event(
            crate::stripe::AUTHORIZATION_UPDATED,
            object,
            Some(previous),
            now,
        )])
    }

    fn pending_approved(&mut self, id: &str, verb: &str) -> Result<&mut Authorization, SimError> {
        let auth = self.open_authorization(id)?;
        if auth.pending.is_some() {
            return Err(SimError::state(
                "authorization_request_pending",
                format!("authorization {id} is waiting for a decision"),
            ));
        }
        if !auth.approved || auth.status != "pending" {
            return Err(SimError::state(
                "authorization_not_pending",
                format!(
                    "authorization {id} is {} and cannot be {verb}",
                    if auth.approved {
                        auth.status
                    } else {
                        "declined"
                    }
                ),
            ));
        }
        Ok(auth)
    }

    /// The `issuing.authorization` object as Stripe would show it now.
    pub fn authorization(&self, id: &str) -> Result<Value, SimError> {
        let a = self
            .authorizations
            .get(id)
            .ok_or_else(|| SimError::missing("authorization", id))?;
        let card = self.card(&a.card)?;
        let cardholder = card["cardholder"]["id"].clone();
        let transactions: Vec<Value> = a
            .transactions
            .iter()
            .filter_map(|t| self.transaction(t).ok())
            .collect();
        let history: Vec<Value> = a
            .history
            .iter()
            .map(|h| {
                json!({
                    "amount": h.amount,
                    "amount_details": {"atm_fee": null, "cashback_amount": null},
                    "approved": h.approved,
                    "authorization_code": h.authorization_code,
                    "created": h.created,
                    "currency": a.currency,
                    "merchant_amount": h.merchant_amount,
                    "merchant_currency": a.merchant_currency,
                    "network_risk_score": h.network_risk_score,
                    "reason": h.reason,
                    "reason_message": h.reason_message,
                    "requested_at": h.requested_at,
                })
            })
            .collect();
        let balance: Vec<Value> = a
            .balance
            .iter()
            .map(|b| {
                events::balance_transaction(&b.id, b.amount, b.created, &a.currency, b.kind, &a.id)
            })
            .collect();
        let pending = a.pending.as_ref().map(|p| {
            json!({
                "amount": p.amount,
                "amount_details": {"atm_fee": null, "cashback_amount": null},
                "currency": a.currency,
                "is_amount_controllable": p.is_amount_controllable,
                "merchant_amount": p.merchant_amount,
                "merchant_currency": a.merchant_currency,
                "network_risk_score": p.network_risk_score,
            })
        });
        Ok(json!({
            "id": a.id,
            "object": "issuing.authorization",
            "amount": a.amount,
            "amount_details": {"atm_fee": null, "cashback_amount": null},
            "approved": a.approved,
            "authorization_method": a.method,
            "balance_transactions": balance,
            "card": card,
            "card_presence": if a.method == "online" || a.method == "keyed_in" { "not_present" } else { "present" },
            "cardholder": cardholder,
            "created": a.created,
            "currency": a.currency,
            "fleet": null,
            "fuel": null,
            "livemode": false,
            "merchant_amount": a.merchant_amount,
            "merchant_currency": a.merchant_currency,
            "merchant_data": events::merchant(&a.merchant),
            "metadata": a.metadata,
            "network_data": {
                "acquiring_institution_id": "445566",
                "system_trace_audit_number": a.stan,
                "transaction_id": a.network_transaction_id,
            },
            "pending_request": pending,
            "request_history": history,
            "status": a.status,
            "token": null,
            "transactions": transactions,
            "verification_data": {
                "address_line1_check": "not_provided",
                "address_postal_code_check": "match",
                "authentication_exemption": null,
                "cvc_check": "match",
                "expiry_check": "match",
                "postal_code": null,
                "three_d_secure": null,
            },
            "verified_by_fraud_challenge": null,
            "wallet": a.wallet,
        }))
    }

    /// Authorizations, newest id last, optionally only those of one card.
    pub fn authorization_ids(&self, card: Option<&str>) -> Vec<String> {
        self.authorizations
            .values()
            .filter(|a| card.is_none_or(|c| a.card == c))
            .map(|a| a.id.clone())
            .collect()
    }

    /// The `issuing.transaction` object.
    pub fn transaction(&self, id: &str) -> Result<Value, SimError> {
        let t = self
            .transactions
            .get(id)
            .ok_or_else(|| SimError::missing("transaction", id))?;
        Ok(json!({
            "id": t.id,
            "object": "issuing.transaction",
            "amount": t.amount,
            "amount_details": {"atm_fee": null, "cashback_amount": null},
            "authorization": t.authorization,
            "balance_transaction": t.balance_transaction,
            "card": t.card,
            "cardholder": t.cardholder,
            "created": t.created,
            "currency": t.currency,
            "dispute": null,
            "livemode": false,
            "merchant_amount": t.merchant_amount,
            "merchant_currency": t.merchant_currency,
            "merchant_data": events::merchant(&t.merchant),
            "metadata": {},
            "network_data": {
                "authorization_code": t.authorization_code,
                "processing_date": events::date(t.created),
                "transaction_id": t.network_transaction_id,
            },
            "token": null,
            "type": "capture",
            "wallet": null,
        }))
    }
}

/// Stripe metadata update semantics: an empty value unsets the key.
fn apply_metadata(into: &mut BTreeMap<String, String>, update: BTreeMap<String, String>) {
    for (k, v) in update {
        if v.is_empty() {
            into.remove(&k);
        } else {
            into.insert(k, v);
        }
    }
}

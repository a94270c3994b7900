//! What the emulator's operations take and give back: the typed inputs (cards,
//! cardholders, purchases, spending controls), the answers a real-time request can
//! come to, and the Stripe-shaped refusal every operation may return.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    pub(super) fn validate(&self, param: &str) -> Result<(), SimError> {
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
    /// `approved: false` with `send_fraud_challenges: ["sms"]`: a decline, and
    /// the cardholder is texted (the authorization's `fraud_challenges`).
    Challenge,
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
    /// A real-time request must be delivered, then
    /// [`Emulator::finish_request`](super::Emulator::finish_request) called.
    Request {
        /// `iauth_…`
        id: String,
        /// The `issuing_authorization.request` event.
        event: Value,
    },
}

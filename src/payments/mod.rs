//! Payment approvals: the pure core of `POST /v1/payment_approvals`.
//!
//! Owns the request a server sends before it finalizes a Checkout payment
//! (Stripe Checkout's "manually approve payments on your server" flow: run fraud
//! and inventory checks, then confirm or refuse), its validation, the rule
//! context it becomes, the payment rule set (CEL, compiled by `crate::rules` over
//! [`PaymentSchema`]) and the decision. No I/O, no clock: the HTTP shell is
//! `crate::http::payments`.
//!
//! # Request
//!
//! ```json
//! {
//!   "id": "cs_test_a1",                      // optional, echoed back
//!   "amount": 12000,                         // smallest currency unit, ≥ 0
//!   "currency": "usd",
//!   "customer": {"id": "cus_1", "country": "US", "email": "a@example.com"},
//!   "card": {"country": "FR", "brand": "visa", "funding": "credit"},
//!   "line_items": [{"sku": "sku_tee", "name": "Tee", "quantity": 2, "amount": 6000}],
//!   "metadata": {"channel": "web"}
//! }
//! ```
//!
//! Unknown fields are refused (a typo must not silently skip a check); every
//! object but `amount`/`currency` is optional, absent strings read as `""`.
//! `line_items[].amount` is the unit amount.
//!
//! # Response
//!
//! `{"id":…,"approved":true|false,"reason":"approved"|"rule:<name>","rule":…,
//! "message":…,"ruleset":"<version>"}` — `rule` and `message` (the rule's
//! `description`) only when a rule decided.
//!
//! # Rules
//!
//! The rules file has the format of the authorization rules (`[lists]`,
//! `[[rule]]`, first decisive match wins, shadow rules) with actions `approve`
//! and `decline` only. Context: `amount`, `currency`, `customer.id`,
//! `customer.country`, `customer.email`, `card.country`, `card.brand`,
//! `card.funding`, `metadata.<key>` (a `map(string, string)`), `line_items`
//! (`size(line_items)`, and `line_items.exists(i, …)`, `.all(i, …)`,
//! `.exists_one(i, …)` over `i.sku`, `i.name`, `i.quantity`, `i.amount`),
//! `quantity` (all items' quantities summed) and `lists.<name>` (inventory lists
//! such as `lists.out_of_stock`).

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::rules::schema::{Field, Schema};
use crate::rules::{Compiled, LoadError, RuleSetError, Verdict};

#[cfg(test)]
mod tests;

/// Most line items in one request.
pub const MAX_LINE_ITEMS: usize = 1000;
/// Most metadata keys (Stripe's own limit).
pub const MAX_METADATA_KEYS: usize = 50;
/// Longest string accepted in any field, in bytes.
pub const MAX_STRING: usize = 500;

/// The customer paying.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Customer {
    /// `cus_…`
    pub id: String,
    /// ISO 3166-1 alpha-2 country of the customer's address.
    pub country: String,
    /// Email.
    pub email: String,
}

/// The payment card, as Checkout reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentCard {
    /// Issuing country (ISO 3166-1 alpha-2).
    pub country: String,
    /// `visa`, `mastercard`, …
    pub brand: String,
    /// `credit`, `debit`, `prepaid`, `unknown`.
    pub funding: String,
}

/// One line item.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LineItem {
    /// Stock keeping unit; what inventory lists hold.
    pub sku: String,
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Units, ≥ 1.
    pub quantity: i64,
    /// Unit amount in the smallest currency unit, ≥ 0.
    #[serde(default)]
    pub amount: i64,
}

/// A payment attempt awaiting approval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentRequest {
    /// The caller's reference (a Checkout Session id), echoed in the answer.
    #[serde(default)]
    pub id: Option<String>,
    /// Total in the smallest currency unit.
    pub amount: i64,
    /// Three-letter ISO currency code, lowercase in the context.
    pub currency: String,
    /// The customer.
    #[serde(default)]
    pub customer: Customer,
    /// The card.
    #[serde(default)]
    pub card: PaymentCard,
    /// What is bought.
    #[serde(default)]
    pub line_items: Vec<LineItem>,
    /// Free-form string pairs.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// Why a request body was refused: the JSON path of the offending field and what
/// is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RequestError {
    /// `line_items[2].quantity`, `amount`, or `.` for the body as a whole.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl PaymentRequest {
    /// Parses and validates a JSON body.
    pub fn parse(body: &[u8]) -> Result<Self, RequestError> {
        let de = &mut serde_json::Deserializer::from_slice(body);
        let req: PaymentRequest = serde_path_to_error::deserialize(de).map_err(|e| {
            // `?` is where the JSON itself broke: report the body as a whole.
            let path = match e.path().to_string() {
                p if p == "?" => ".".to_string(),
                p => p,
            };
            let inner = e.into_inner();
            let message = inner.to_string();
            // A missing field is named in the message; its path is the parent.
            let field = match unknown_field(&message) {
                Some(name) if path == "." => name.to_string(),
                Some(name) if !path.ends_with(name) => format!("{path}.{name}"),
                _ => path,
            };
            RequestError { field, message }
        })?;
        req.validate()?;
        Ok(req)
    }

    fn validate(&self) -> Result<(), RequestError> {
        let bad = |field: String, message: &str| {
            Err(RequestError {
                field,
                message: message.to_string(),
            })
        };
        if self.amount < 0 {
            return bad("amount".into(), "must not be negative");
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_alphabetic()) {
            return bad(
                "currency".into(),
                "must be a three-letter ISO currency code",
            );
        }
        if self.line_items.len() > MAX_LINE_ITEMS {
            return bad(
                "line_items".into(),
                &format!("at most {MAX_LINE_ITEMS} line items"),
            );
        }
        if self.metadata.len() > MAX_METADATA_KEYS {
            return bad(
                "metadata".into(),
                &format!("at most {MAX_METADATA_KEYS} keys"),
            );
        }
        let strings = [
            ("id", self.id.as_deref().unwrap_or("")),
            ("customer.id", &self.customer.id),
            ("customer.country", &self.customer.country),
            ("customer.email", &self.customer.email),
            ("card.country", &self.card.country),
            ("card.brand", &self.card.brand),
            ("card.funding", &self.card.funding),
        ];
        for (field, v) in strings {
            if v.len() > MAX_STRING {
                return bad(field.into(), &format!("longer than {MAX_STRING} bytes"));
            }
        }
        for (i, item) in self.line_items.iter().enumerate() {
            let at = |f: &str| format!("line_items[{i}].{f}");
            if item.sku.is_empty() || item.sku.len() > MAX_STRING {
                return bad(at("sku"), &format!("must be 1 to {MAX_STRING} bytes"));
            }
            if item.name.len() > MAX_STRING {
                return bad(at("name"), &format!("longer than {MAX_STRING} bytes"));
            }
            if item.quantity < 1 {
                return bad(at("quantity"), "must be at least 1");
            }
            if item.amount < 0 {
                return bad(at("amount"), "must not be negative");
            }
        }
        for (k, v) in &self.metadata {
            if k.is_empty() || k.len() > 40 {
                return bad(format!("metadata.{k}"), "keys must be 1 to 40 bytes");
            }
            if v.len() > MAX_STRING {
                return bad(
                    format!("metadata.{k}"),
                    &format!("longer than {MAX_STRING} bytes"),
                );
            }
        }
        Ok(())
    }
}

/// The field name quoted in serde's "unknown field" or "missing field" message.
fn unknown_field(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))?;
    rest.split('`').next()
}

/// What payment rules read: the request plus derived values, built once per
/// request.
#[derive(Debug)]
pub struct PaymentContext<'a> {
    req: &'a PaymentRequest,
    currency: String,
    metadata: Vec<(&'a str, &'a str)>,
    quantity: i64,
    /// The item macros are looking at.
    item: Cell<usize>,
}

impl<'a> PaymentContext<'a> {
    /// The context of `req`.
    pub fn new(req: &'a PaymentRequest) -> Self {
        PaymentContext {
            req,
            currency: req.currency.to_ascii_lowercase(),
            metadata: req
                .metadata
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
            quantity: req
                .line_items
                .iter()
                .fold(0i64, |s, i| s.saturating_add(i.quantity)),
            item: Cell::new(0),
        }
    }

    /// The request.
    pub fn request(&self) -> &PaymentRequest {
        self.req
    }

    fn current(&self) -> &LineItem {
        // Item fields are only compiled inside a macro body, which sets the cursor
        // to a valid index before evaluating it.
        &self.req.line_items[self.item.get()]
    }
}

/// The payment approval context schema.
#[derive(Debug, Clone, Copy)]
pub struct PaymentSchema;

/// String fields of the payment context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PaymentStr {
    /// `currency`
    Currency,
    /// `customer.id`
    CustomerId,
    /// `customer.country`
    CustomerCountry,
    /// `customer.email`
    CustomerEmail,
    /// `card.country`
    CardCountry,
    /// `card.brand`
    CardBrand,
    /// `card.funding`
    CardFunding,
    /// `i.sku` of the current item
    ItemSku,
    /// `i.name`
    ItemName,
}

/// Int fields of the payment context.
#[derive(Debug, Clone, Copy)]
pub enum PaymentInt {
    /// `amount`
    Amount,
    /// `quantity`: all items summed.
    Quantity,
    /// `i.quantity`
    ItemQuantity,
    /// `i.amount`
    ItemAmount,
}

/// The payment context has no bool fields.
#[derive(Debug, Clone, Copy)]
pub enum PaymentBool {}

impl Schema for PaymentSchema {
    type Ctx<'a> = PaymentContext<'a>;
    type StrField = PaymentStr;
    type IntField = PaymentInt;
    type BoolField = PaymentBool;
    type DoubleField = crate::rules::schema::NoField;
    const ACTIONS: &'static [&'static str] = &["approve", "decline"];
    const MATCHES_METRIC: &'static str = crate::metrics::PAYMENT_RULE_MATCHES;
    const ERRORS_METRIC: &'static str = crate::metrics::PAYMENT_RULE_ERRORS;
    const META: Option<&'static str> = Some("metadata");
    const ITEMS: Option<&'static str> = Some("line_items");

    fn resolve(path: &str) -> Option<Field<Self>> {
        use Field::{Int, Str};
        Some(match path {
            "amount" => Int(PaymentInt::Amount),
            "quantity" => Int(PaymentInt::Quantity),
            "currency" => Str(PaymentStr::Currency),
            "customer.id" => Str(PaymentStr::CustomerId),
            "customer.country" => Str(PaymentStr::CustomerCountry),
            "customer.email" => Str(PaymentStr::CustomerEmail),
            "card.country" => Str(PaymentStr::CardCountry),
            "card.brand" => Str(PaymentStr::CardBrand),
            "card.funding" => Str(PaymentStr::CardFunding),
            _ => return None,
        })
    }

    fn resolve_item(field: &str) -> Option<Field<Self>> {
        use Field::{Int, Str};
        Some(match field {
            "sku" => Str(PaymentStr::ItemSku),
            "name" => Str(PaymentStr::ItemName),
            "quantity" => Int(PaymentInt::ItemQuantity),
            "amount" => Int(PaymentInt::ItemAmount),
            _ => return None,
        })
    }

    fn is_object(path: &str) -> bool {
        matches!(path, "customer" | "card")
    }

    #[inline]
    fn str<'c>(ctx: &'c PaymentContext<'_>, f: PaymentStr) -> &'c str {
        let r = ctx.req;
        match f {
            PaymentStr::Currency => &ctx.currency,
            PaymentStr::CustomerId => &r.customer.id,
            PaymentStr::CustomerCountry => &r.customer.country,
            PaymentStr::CustomerEmail => &r.customer.email,
            PaymentStr::CardCountry => &r.card.country,
            PaymentStr::CardBrand => &r.card.brand,
            PaymentStr::CardFunding => &r.card.funding,
            PaymentStr::ItemSku => &ctx.current().sku,
            PaymentStr::ItemName => &ctx.current().name,
        }
    }

    #[inline]
    fn int(ctx: &PaymentContext<'_>, f: PaymentInt) -> i64 {
        match f {
            PaymentInt::Amount => ctx.req.amount,
            PaymentInt::Quantity => ctx.quantity,
            PaymentInt::ItemQuantity => ctx.current().quantity,
            PaymentInt::ItemAmount => ctx.current().amount,
        }
    }

    fn bool(_: &PaymentContext<'_>, f: PaymentBool) -> bool {
        match f {}
    }

    #[inline]
    fn meta<'c>(ctx: &'c PaymentContext<'_>) -> &'c [(&'c str, &'c str)] {
        &ctx.metadata
    }

    fn items(ctx: &PaymentContext<'_>) -> usize {
        ctx.req.line_items.len()
    }

    fn set_item(ctx: &PaymentContext<'_>, i: usize) {
        ctx.item.set(i);
    }
}

/// An immutable, versioned payment rule set.
#[derive(Debug, Clone)]
pub struct PaymentRuleSet(Compiled<PaymentSchema>);

impl PaymentRuleSet {
    /// No rules: every valid payment is approved.
    pub fn empty() -> Self {
        PaymentRuleSet(Compiled::empty())
    }

    /// Compiles a payment rules file, counting matches in the process metrics.
    pub fn from_toml(src: &str) -> Result<Self, RuleSetError> {
        Compiled::build(src, true).map(PaymentRuleSet)
    }

    /// Compiles without counting (tests, tools).
    pub fn from_toml_unmetered(src: &str) -> Result<Self, RuleSetError> {
        Compiled::build(src, false).map(PaymentRuleSet)
    }

    /// Reads and compiles `path` (metered).
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        Compiled::load(path).map(PaymentRuleSet)
    }

    /// Content-hash version.
    pub fn version(&self) -> &str {
        self.0.version()
    }

    /// Rules in the set, shadow included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True without rules.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// First decisive match and every shadow match.
    pub fn evaluate(&self, ctx: &PaymentContext<'_>) -> Verdict {
        self.0.evaluate(ctx)
    }

    /// The description of rule `name`, if it has one.
    pub fn description(&self, name: &str) -> Option<Arc<str>> {
        self.0
            .rules()
            .find(|r| &*r.name == name)
            .and_then(|r| r.description)
    }
}

impl crate::rules::reload::Live for PaymentRuleSet {
    const KIND: &'static str = "payment rule set";
    const INFO_METRIC: &'static str = crate::metrics::PAYMENT_RULESET_INFO;
    const RELOADS_METRIC: &'static str = crate::metrics::PAYMENT_RULE_RELOADS;
    fn compile(src: &str) -> Result<Self, RuleSetError> {
        PaymentRuleSet::from_toml(src)
    }
    fn version(&self) -> &str {
        PaymentRuleSet::version(self)
    }
    fn rule_count(&self) -> usize {
        PaymentRuleSet::len(self)
    }
}

/// The answer to a payment approval request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentDecision {
    /// The request's `id`, echoed.
    pub id: Option<String>,
    /// Whether to finalize the payment.
    pub approved: bool,
    /// `approved`, or `rule:<name>` for the rule that decided.
    pub reason: String,
    /// The deciding rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The deciding rule's description, for the customer-facing message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Version of the payment rule set that decided.
    pub ruleset: String,
    /// Shadow rules that matched (never applied); omitted when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<String>,
}

/// Decides `req` with `rules`: the first matching decisive rule's action, else
/// approve. Pure.
pub fn decide(rules: &PaymentRuleSet, req: &PaymentRequest) -> PaymentDecision {
    let ctx = PaymentContext::new(req);
    let verdict = rules.evaluate(&ctx);
    let shadow = verdict.shadow.iter().map(|m| m.name.to_string()).collect();
    match verdict.decisive {
        Some(m) => {
            let approved = matches!(m.action, crate::rules::Action::Approve);
            PaymentDecision {
                id: req.id.clone(),
                approved,
                reason: if approved {
                    "approved".into()
                } else {
                    format!("rule:{}", m.name)
                },
                rule: Some(m.name.to_string()),
                message: rules.description(&m.name).map(|d| d.to_string()),
                ruleset: rules.version().to_string(),
                shadow,
            }
        }
        None => PaymentDecision {
            id: req.id.clone(),
            approved: true,
            reason: "approved".into(),
            rule: None,
            message: None,
            ruleset: rules.version().to_string(),
            shadow,
        },
    }
}

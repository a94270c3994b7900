//! Stripe-shaped JSON for the emulator: events, cards, cardholders, merchants and
//! balance transactions, with exactly the keys of the reference events in
//! `tests/fixtures/events/` (copied from Stripe's own shapes). A unit test holds the
//! emulator's objects to those key sets, so a shape drift fails the build's tests.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::model::{Merchant, SpendingControls};

/// Wraps `object` in a Stripe event envelope. `previous` becomes
/// `data.previous_attributes` (only on `*.updated`).
pub fn event(
    id: &str,
    kind: &str,
    object: Value,
    previous: Option<Value>,
    created: i64,
    api_version: &str,
) -> Value {
    let mut data = json!({});
    data["object"] = object;
    if let Some(p) = previous {
        data["previous_attributes"] = p;
    }
    json!({
        "id": id,
        "object": "event",
        "api_version": api_version,
        "created": created,
        "data": data,
        "livemode": false,
        "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null},
        "type": kind,
    })
}

/// Fields of a card the JSON needs.
pub struct CardView<'a> {
    /// `ic_…`
    pub id: &'a str,
    /// Card currency.
    pub currency: &'a str,
    /// `active`, `inactive`, `canceled`.
    pub status: &'a str,
    /// `virtual` or `physical`.
    pub card_type: &'a str,
    /// Last four digits.
    pub last4: &'a str,
    /// Unix seconds.
    pub created: i64,
    /// Metadata.
    pub metadata: &'a BTreeMap<String, String>,
    /// The card's controls.
    pub controls: &'a SpendingControls,
}

/// Fields of a cardholder the JSON needs.
pub struct CardholderView<'a> {
    /// `ich_…`
    pub id: &'a str,
    /// Name.
    pub name: &'a str,
    /// Email.
    pub email: Option<&'a str>,
    /// `active`, `inactive`, `blocked`.
    pub status: &'a str,
    /// Unix seconds.
    pub created: i64,
    /// Metadata.
    pub metadata: &'a BTreeMap<String, String>,
    /// The cardholder's controls.
    pub controls: &'a SpendingControls,
}

/// `spending_controls` with every key Stripe sends (unset ones as `null`).
pub fn spending_controls(c: &SpendingControls, default_currency: Option<&str>) -> Value {
    let limits: Vec<Value> = c
        .spending_limits
        .iter()
        .map(|l| json!({"amount": l.amount, "categories": l.categories, "interval": l.interval}))
        .collect();
    // A card's limits are always in its own currency (read-only at Stripe).
    let currency = c
        .spending_limits_currency
        .as_deref()
        .or(if limits.is_empty() {
            None
        } else {
            default_currency
        });
    json!({
        "allowed_card_presences": null,
        "allowed_categories": c.allowed_categories,
        "allowed_merchant_countries": c.allowed_merchant_countries,
        "blocked_card_presences": null,
        "blocked_categories": c.blocked_categories,
        "blocked_merchant_countries": c.blocked_merchant_countries,
        "spending_limits": limits,
        "spending_limits_currency": currency,
    })
}

/// The `issuing.cardholder` object.
pub fn cardholder(h: &CardholderView<'_>) -> Value {
    let (first, last) = h.name.split_once(' ').unwrap_or((h.name, ""));
    json!({
        "id": h.id,
        "object": "issuing.cardholder",
        "billing": {"address": {
            "city": "San Francisco", "country": "US", "line1": "510 Townsend St",
            "line2": null, "postal_code": "94103", "state": "CA",
        }},
        "company": null,
        "created": h.created,
        "email": h.email,
        "individual": {
            "dob": null,
            "first_name": first,
            "last_name": last,
            "verification": {"document": {"back": null, "front": null}},
        },
        "livemode": false,
        "metadata": h.metadata,
        "name": h.name,
        "phone_number": null,
        "preferred_locales": ["en"],
        "requirements": {"disabled_reason": null, "past_due": []},
        "spending_controls": spending_controls(h.controls, Some("usd")),
        "status": h.status,
        "type": "individual",
    })
}

/// The `issuing.card` object with `cardholder` embedded, as in authorizations.
pub fn card(c: &CardView<'_>, cardholder: &Value) -> Value {
    json!({
        "id": c.id,
        "object": "issuing.card",
        "brand": "Visa",
        "cancellation_reason": null,
        "cardholder": cardholder,
        "created": c.created,
        "currency": c.currency,
        "exp_month": 12,
        "exp_year": 2030,
        "last4": c.last4,
        "latest_fraud_warning": null,
        "lifecycle_controls": null,
        "livemode": false,
        "metadata": c.metadata,
        "personalization_design": null,
        "replaced_by": null,
        "replacement_for": null,
        "replacement_reason": null,
        "second_line": null,
        "shipping": null,
        "spending_controls": spending_controls(c.controls, Some(c.currency)),
        "status": c.status,
        "type": c.card_type,
        "wallets": {
            "apple_pay": {"eligible": true, "ineligible_reason": null},
            "google_pay": {"eligible": true, "ineligible_reason": null},
            "primary_account_identifier": null,
        },
    })
}

/// `merchant_data`.
pub fn merchant(m: &Merchant) -> Value {
    json!({
        "category": m.category,
        "category_code": m.category_code,
        "city": m.city,
        "country": m.country,
        "name": m.name,
        "network_id": m.network_id,
        "postal_code": m.postal_code,
        "state": m.state,
        "tax_id": null,
        "terminal_id": null,
        "url": null,
    })
}

/// One entry of an authorization's `balance_transactions`.
pub fn balance_transaction(
    id: &str,
    amount: i64,
    created: i64,
    currency: &str,
    kind: &str,
    source: &str,
) -> Value {
    json!({
        "id": id,
        "object": "balance_transaction",
        "amount": amount,
        "available_on": created,
        "balance_type": "issuing",
        "created": created,
        "currency": currency,
        "description": null,
        "exchange_rate": null,
        "fee": 0,
        "fee_details": [],
        "net": amount,
        "reporting_category": kind,
        "source": source,
        "status": "available",
        "type": kind,
    })
}

/// `data.previous_attributes` of an `*.updated` event: the old value of every
/// top-level field that changed (arrays whole, as Stripe sends them).
pub fn previous_attributes(before: &Value, after: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let (Some(b), Some(a)) = (before.as_object(), after.as_object()) {
        for (k, v) in b {
            if a.get(k) != Some(v) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// `YYYY-MM-DD` (UTC) of a Unix time, for `network_data.processing_date`.
pub fn date(t: i64) -> String {
    // Civil-from-days (Howard Hinnant's algorithm): no date crate for one field.
    let z = t.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

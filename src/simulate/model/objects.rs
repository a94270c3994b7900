//! The account's records as Stripe shows them: `issuing.authorization` (with its
//! card, request history and balance transactions) and `issuing.transaction`.

use serde_json::{Value, json};

use super::{Emulator, SimError, events};

impl Emulator {
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
        let risk = a
            .pending
            .as_ref()
            .and_then(|p| p.network_risk_score)
            .or_else(|| a.history.first().and_then(|h| h.network_risk_score));
        let mut object = json!({
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
            "fraud_disputability_likelihood": "neutral",
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
            "risk_assessment": risk_assessment(risk),
            "status": a.status,
            "token": null,
            "transactions": transactions,
            "verification_data": verification_data(),
            "verified_by_fraud_challenge": a.verified_by_fraud_challenge,
            "wallet": a.wallet,
        });
        // Only an authorization cardgate challenged has the list (the example
        // events, never challenged, do not).
        if let Some((status, _)) = a.fraud_challenge {
            object["fraud_challenges"] =
                json!([{"channel": "sms", "status": status, "undeliverable_reason": null}]);
        }
        Ok(object)
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

/// The emulated account has Advanced Fraud Tools: a risk assessment from the
/// network's score (1–99), so rules on it meet realistic values; the level
/// bands follow Stripe's guide (a score above 25 is high risk).
fn risk_assessment(network_risk_score: Option<i64>) -> Value {
    let score = network_risk_score.unwrap_or(0).clamp(0, 100);
    let level = match score {
        0 => "not_assessed",
        1..=25 => "low",
        26..=50 => "normal",
        51..=75 => "elevated",
        _ => "highest",
    };
    json!({
        "card_testing_risk": {
            "invalid_account_number_decline_rate_past_hour": 0,
            "invalid_credentials_decline_rate_past_hour": 0,
            "level": "normal",
        },
        "fraud_risk": {"level": level, "score": f64::from(i32::try_from(score).unwrap_or(0))},
        "merchant_dispute_risk": {"dispute_rate": 0, "level": "low"},
    })
}

/// The emulated checks: CVC and expiry match, postal code matches, no 3DS.
fn verification_data() -> Value {
    json!({
        "address_line1_check": "not_provided",
        "address_postal_code_check": "match",
        "authentication_exemption": null,
        "cvc_check": "match",
        "expiry_check": "match",
        "postal_code": null,
        "three_d_secure": null,
    })
}

//! The real-time request: Stripe's own checks, the `issuing_authorization.request`
//! event, an approve/decline API call landing inside the window, and the answer
//! applied to the authorization (`request_history`, hold, `created`/`updated`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::{
    ApiDecision, Authorization, BalanceTxn, Begun, Emulator, HistoryEntry, NewAuthorization,
    Pending, SimError, TimeoutFallback, WebhookAnswer, currency, events, positive, status_in,
};

impl Emulator {
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
            fraud_challenge: None,
            verified_by_fraud_challenge: None,
        };
        // The retry after a verified SMS challenge: same card, same merchant,
        // within the hour Stripe allows (stripe-api-versions.md §4).
        if self.authorizations.values().any(|a| {
            a.card == auth.card
                && a.merchant.name == auth.merchant.name
                && a.merchant.network_id == auth.merchant.network_id
                && matches!(a.fraud_challenge, Some(("verified", Some(at))) if now - at <= 3_600)
        }) {
            auth.verified_by_fraud_challenge = Some(true);
        }
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
        let challenged = pending.api.is_none() && matches!(answer, WebhookAnswer::Challenge);
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
            (None, WebhookAnswer::Challenge) => (false, None, "webhook_declined", None, None),
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
        if challenged && let Some(a) = self.authorizations.get_mut(id) {
            a.fraud_challenge = Some(("pending", None));
        }
        self.decide(id, approved, amount, reason, message, now)
    }

    /// The test helper `…/fraud_challenges/respond`: the cardholder answered the
    /// SMS (`confirmed`: YES, it was them). A verified challenge lets the retry
    /// at the same merchant within the hour arrive `verified_by_fraud_challenge`.
    pub fn respond_fraud_challenge(
        &mut self,
        id: &str,
        confirmed: bool,
        now: i64,
    ) -> Result<Value, SimError> {
        let a = self
            .authorizations
            .get_mut(id)
            .ok_or_else(|| SimError::missing("authorization", id))?;
        if !matches!(a.fraud_challenge, Some(("pending", _))) {
            return Err(SimError::state(
                "fraud_challenge_not_pending",
                format!("authorization {id} has no pending fraud challenge"),
            ));
        }
        a.fraud_challenge = Some((if confirmed { "verified" } else { "rejected" }, Some(now)));
        self.authorization(id)
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

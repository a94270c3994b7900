//! After the decision: capture (full, partial, over, late after expiry), expiry and
//! reversal, each a balance movement plus the events Stripe sends for it.

use serde_json::Value;

use super::{Authorization, BalanceTxn, Emulator, SimError, Transaction, events, positive};

impl Emulator {
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
}

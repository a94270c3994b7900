//! The look-up and hand-back steps: what the decision path takes from approvals,
//! without blocking I/O — control overrides (one atomic load of an immutable table)
//! and one-time allowances (an in-memory map) — and what it hands back: allowance
//! use and new review requests, both queued to background work so the answer never
//! waits on the approvals store.

use std::sync::Arc;

use crate::approvals::{AllowanceKey, AllowanceSpec, Approvals, OverrideTable, Scope};
use crate::decision::{AuthRequest, Controls, Decision, Reason, Source};

/// Overrides and the allowance that apply to one authorization.
pub struct Approved<'a> {
    /// `None` when no override exists at all (the common case).
    table: Option<Arc<OverrideTable>>,
    card: &'a str,
    cardholder: &'a str,
    /// The allowance key, when an unexpired allowance covers this retry.
    pub allowance: Option<AllowanceKey>,
}

impl Approved<'_> {
    /// The card's override.
    pub fn card_override(&self) -> Option<&Controls> {
        self.table.as_ref()?.get(Scope::Card, self.card)
    }

    /// The cardholder's override.
    pub fn cardholder_override(&self) -> Option<&Controls> {
        self.table.as_ref()?.get(Scope::Cardholder, self.cardholder)
    }
}

/// The merchant as allowances identify it: network id, else name.
pub fn merchant_id<'a>(auth: &AuthRequest<'a>) -> &'a str {
    if auth.merchant.network_id.is_empty() {
        auth.merchant.name
    } else {
        auth.merchant.network_id
    }
}

fn key(auth: &AuthRequest<'_>) -> AllowanceKey {
    AllowanceKey {
        card: auth.card.id.to_string(),
        merchant: merchant_id(auth).to_string(),
        amount: auth.amount,
        currency: auth.currency.as_str().to_string(),
    }
}

/// Reads overrides and allowances for `auth`.
pub(super) fn lookup<'a>(
    approvals: Option<&Arc<Approvals>>,
    auth: &AuthRequest<'a>,
) -> Approved<'a> {
    let mut approved = Approved {
        table: None,
        card: auth.card.id,
        cardholder: auth.cardholder.id,
        allowance: None,
    };
    let Some(a) = approvals else {
        return approved;
    };
    let table = a.overrides();
    approved.table = (!table.is_empty()).then(|| Arc::clone(&table));
    approved.allowance = a
        .has_allowances()
        .then(|| key(auth))
        .filter(|k| a.allowance(k).is_some());
    approved
}

/// After the decision: spend the allowance if it let the retry through, and open
/// a review request if a `review` rule declined.
pub(super) fn after(
    approvals: Option<&Arc<Approvals>>,
    auth: &AuthRequest<'_>,
    decision: &Decision,
    approved: Approved<'_>,
) {
    let Some(a) = approvals else { return };
    if decision.approved
        && let Some(k) = approved.allowance
        && let Some(id) = a.take_allowance(&k)
    {
        let (a, auth_id) = (a.clone(), auth.id.to_string());
        tokio::spawn(async move {
            if let Err(e) = a.consume_allowance(&id, &auth_id).await {
                tracing::error!(error = ?e, allowance = id, "recording allowance use failed");
            }
        });
        return;
    }
    if decision.reason == Reason::Review && !decision.approved {
        let rule = match &decision.source {
            Some(Source::Rule(name)) => Some(name.to_string()),
            _ => None,
        };
        let spec = AllowanceSpec {
            card: auth.card.id.to_string(),
            merchant: merchant_id(auth).to_string(),
            amount: auth.amount,
            currency: auth.currency.as_str().to_string(),
            authorization: Some(auth.id.to_string()),
            rule,
            details: Some(serde_json::json!({
                "merchant_name": auth.merchant.name,
                "merchant_country": auth.merchant.country,
                "merchant_category": auth.merchant.category,
                "merchant_category_code": auth.merchant.category_code,
                "cardholder": auth.cardholder.id,
            })),
        };
        if !a.queue_review(spec) {
            tracing::warn!(
                authorization = auth.id,
                "review queue full; no approval request opened"
            );
        }
    }
}

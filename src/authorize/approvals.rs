//! The look-up and hand-back steps: what the decision path takes from approvals,
//! without blocking I/O — control overrides (one atomic load of an immutable table)
//! and one-time allowances (an in-memory map) — and what it hands back: allowance
//! use and new review requests, both queued to background work so the answer never
//! waits on the approvals store.
//!
//! A matching allowance is claimed at look-up, before the decision, so concurrent
//! retries cannot all pass on it; it is kept only by a request that ends approved
//! by its own decision, and goes back otherwise (see [`AllowanceClaim`]). When
//! replicas share the store the claim is also leased in the store (one round trip,
//! only when this replica's map holds a matching allowance), so retries spread
//! over replicas still pass once.

use std::sync::Arc;

use crate::approvals::{
    AllowanceClaim, AllowanceKey, AllowanceSpec, Approvals, OverrideTable, Scope,
};
use crate::decision::{AuthRequest, Controls, Decision, Reason, Source};

/// Overrides and the allowance that apply to one authorization.
pub struct Approved<'a> {
    /// `None` when no override exists at all (the common case).
    table: Option<Arc<OverrideTable>>,
    card: &'a str,
    cardholder: &'a str,
    /// The unexpired allowance that covers this retry, claimed for this request
    /// alone; dropped without being kept, it goes back.
    pub allowance: Option<AllowanceClaim>,
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

/// Reads overrides for `auth` and claims the allowance that covers it, if any;
/// a claim that needs the shared store's lease waits for it until `deadline`.
pub(super) async fn lookup<'a>(
    approvals: Option<&Arc<Approvals>>,
    auth: &AuthRequest<'a>,
    deadline: std::time::Instant,
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
    let claim = a
        .has_allowances()
        .then(|| key(auth))
        .and_then(|k| a.claim_allowance(&k));
    if let Some(claim) = claim {
        let deadline = tokio::time::Instant::from_std(deadline);
        approved.allowance = claim.lease(auth.id, a.now(), deadline).await;
    }
    approved
}

/// After settling: spend the claimed allowance if the retry ends approved by its
/// decision (a fallback approval is not the allowance's doing), else give it back;
/// open a review request if a `review` rule declined.
pub(super) fn after(
    approvals: Option<&Arc<Approvals>>,
    auth: &AuthRequest<'_>,
    decision: &Decision,
    approved: Approved<'_>,
) {
    let Some(a) = approvals else { return };
    let spent = decision.approved && !matches!(decision.reason, Reason::Fallback(_));
    if let Some(claim) = approved.allowance {
        if spent {
            let id = claim.keep();
            let (a, auth_id) = (a.clone(), auth.id.to_string());
            tokio::spawn(async move {
                if let Err(e) = a.consume_allowance(&id, &auth_id).await {
                    tracing::error!(error = ?e, allowance = id, "recording allowance use failed");
                }
            });
            return;
        }
        // Not approved with it: back for the next retry, before any review opens.
        drop(claim);
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use arc_swap::ArcSwap;

    use super::*;
    use crate::approvals::{Action, Actor, ApprovalsConfig, Clock, LiveRules};
    use crate::decision::{FallbackCause, Level};
    use crate::rules::RuleSet;
    use crate::testing;

    fn far() -> Instant {
        Instant::now() + Duration::from_mins(1)
    }

    /// Approvals on a fresh store, holding one allowance for `testing::auth`'s
    /// retry of 50.00 USD.
    async fn granted(dir: &std::path::Path) -> Arc<Approvals> {
        let a = crate::store::approvals::open_with_clock(
            dir,
            ApprovalsConfig::default(),
            Clock::with_offset(0),
        )
        .await
        .unwrap();
        let auth = testing::auth("iauth_0", 5000);
        let k = key(&auth);
        let spec = AllowanceSpec {
            card: k.card,
            merchant: k.merchant,
            amount: k.amount,
            currency: k.currency,
            authorization: None,
            rule: None,
            details: None,
        };
        let rules: Arc<dyn LiveRules> = Arc::new(ArcSwap::from_pointee(RuleSet::empty()));
        a.perform(&Actor::cli(), Action::AuthorizationAllowance(spec), &rules)
            .await
            .unwrap();
        Arc::new(a)
    }

    #[tokio::test]
    async fn a_claimed_allowance_goes_back_on_decline_or_fallback_and_is_spent_on_approval() {
        let dir = tempfile::tempdir().unwrap();
        let a = granted(dir.path()).await;
        let auth = testing::auth("iauth_1", 5000);
        let held = |a: &Arc<Approvals>| a.allowance(&key(&auth)).is_some();

        let first = lookup(Some(&a), &auth, far()).await;
        assert!(first.allowance.is_some());
        assert!(!held(&a), "claimed at look-up, before the decision");
        assert!(
            lookup(Some(&a), &auth, far()).await.allowance.is_none(),
            "a concurrent retry finds it taken"
        );
        let declined = Decision::decline(
            Reason::SpendingLimit,
            Source::Control(Level::Card, "spending_limits"),
        );
        after(Some(&a), &auth, &declined, first);
        assert!(held(&a), "given back on decline");

        let second = lookup(Some(&a), &auth, far()).await;
        after(
            Some(&a),
            &auth,
            &Decision::fallback(true, FallbackCause::Ledger),
            second,
        );
        assert!(held(&a), "a fallback approval does not spend it");

        let abandoned = lookup(Some(&a), &auth, far()).await;
        assert!(abandoned.allowance.is_some());
        drop(abandoned);
        assert!(held(&a), "a request dropped mid-flight gives it back");

        let third = lookup(Some(&a), &auth, far()).await;
        after(Some(&a), &auth, &Decision::approve(), third);
        assert!(!held(&a), "spent by the approval");
        assert!(lookup(Some(&a), &auth, far()).await.allowance.is_none());
        // The use is recorded in the background.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listed = a.list_allowances().await.unwrap();
            if listed[0].used_by.as_deref() == Some("iauth_1") {
                break;
            }
            assert!(Instant::now() < deadline, "use never recorded: {listed:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

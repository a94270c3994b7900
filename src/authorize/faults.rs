//! The decide step, bounded: `decide()` under the deadline budget, a panic caught
//! and turned into the fallback, and the configured fault injection wrapped around
//! it (a delay before, a panic inside) so operators can rehearse both paths.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use super::Authorizer;
use super::approvals::Approved;
use super::spend::Past;
use crate::config::FaultInjection;
use crate::decision::{self, AuthRequest, Context, Decision, FallbackCause, Matched};
use crate::rules::RuleSet;

/// Decides `auth`, or answers the fallback when the deadline passes first or the
/// decision panics. Returns the decision, the shadow rules that matched, and the
/// clock the decision read (for the decision log's replay record).
pub(super) async fn decide(
    a: &Authorizer,
    auth: &AuthRequest<'_>,
    rules: &RuleSet,
    spend: &Past,
    approved: &Approved<'_>,
    deadline: Instant,
) -> (Decision, Vec<Matched>, i64) {
    let faults = &a.faults;
    let mut now = a.now();
    let run = async {
        delay(faults).await;
        now = a.now();
        let ctx = Context::new(auth, &a.program, rules, spend, now).with_approvals(
            approved.card_override(),
            approved.cardholder_override(),
            approved.allowance.is_some(),
        );
        // A bug in the decision (or a rule) must cost one fallback answer, not the
        // connection: catch it here, where the answer is still ours to give.
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            panic_if_configured(faults);
            decision::decide_traced(&ctx)
        }))
        .map_err(|_| FallbackCause::Internal)
    };
    // Shadow matches go to the decision log; they never change the answer.
    let outcome = tokio::time::timeout_at(deadline.into(), run).await;
    match outcome {
        Ok(Ok((d, verdict))) => (d, verdict.shadow, now),
        Ok(Err(cause)) => (a.fallback(cause), Vec::new(), now),
        Err(_) => (a.fallback(FallbackCause::Deadline), Vec::new(), now),
    }
}

/// `[fault_injection] decision_delay_ms`: a slow decision, to rehearse the deadline.
async fn delay(faults: &FaultInjection) {
    if faults.decision_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.decision_delay_ms)).await;
    }
}

/// `[fault_injection] decision_panic`: a crashing decision, to rehearse the catch.
fn panic_if_configured(faults: &FaultInjection) {
    assert!(!faults.decision_panic, "fault injection: decision_panic");
}

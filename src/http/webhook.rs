//! `POST /webhooks/stripe`: the decision path of one authorization.
//!
//! read body (≤ 256 KiB) → verify signature → parse → `decide()` → encode → 200.
//! Bad input is refused before anything is parsed or recorded (400/413). Once a
//! request event is verified and parsed it always gets a decision body: the
//! deadline budget bounds the decision, and on timeout or a caught panic the
//! configured fallback answers with reason `fallback:<cause>`. Never a 5xx.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::respond::{json_bytes, read_body};
use super::{AppState, Body};
use crate::config::Fallback;
use crate::decision::{self, Context, Decision, FallbackCause, NoSpend, SpendView};
use crate::metrics as m;
use crate::stripe::{self, Event};

/// Largest accepted body; Stripe's events are a few KiB.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Handles one webhook delivery.
pub async fn handle(state: &AppState, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let deadline = start + state.config.deadline;
    tracing::debug!("webhook request received");
    let (parts, body) = req.into_parts();
    let body = match read_body(&parts.headers, body, BODY_LIMIT, deadline.into()).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };

    let header = parts.headers.get("stripe-signature").map(|v| v.as_bytes());
    let answer = process(state, header, body, start, deadline).await;
    let mut resp = json_bytes(answer.status, answer.body);
    if answer.decision
        && let Some(v) = &state.stripe_version
    {
        resp.headers_mut().insert("stripe-version", v.clone());
    }
    resp
}

/// What [`process`] answers: a status and a JSON body.
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body.
    pub body: Bytes,
    /// True when the body is a decision (it then carries `Stripe-Version`).
    pub decision: bool,
}

impl Answer {
    fn error(status: StatusCode, code: &str, message: &str) -> Self {
        Answer {
            status,
            body: super::respond::error_body(code, message),
            decision: false,
        }
    }
}

/// The decision path without the network: verify, parse, decide, encode. Callable
/// from benches and tests; `start` and `deadline` bound the decision.
pub async fn process(
    state: &AppState,
    signature: Option<&[u8]>,
    body: Bytes,
    start: Instant,
    deadline: Instant,
) -> Answer {
    let mut clock = m::StageClock::start();
    // simd-json parses in place; the decision log keeps the bytes as received.
    let raw = state.store.as_ref().map(|_| body.clone());
    let verified = match stripe::verify(
        signature,
        Vec::from(body),
        &state.secrets,
        state.now(),
        state.config.tolerance_seconds,
    ) {
        Ok(v) => v,
        Err(e) => {
            metrics::counter!(m::SIGNATURE_FAILURES, "code" => e.code()).increment(1);
            tracing::warn!(code = e.code(), "webhook signature rejected: {e}");
            return Answer::error(StatusCode::BAD_REQUEST, e.code(), &e.to_string());
        }
    };
    clock.lap(m::Stage::Verify);

    let mut buf = verified.into_body();
    let doc = match stripe::parse_document(&mut buf) {
        Ok(d) => d,
        Err(e) => return parse_failed(&e),
    };
    let event = match Event::read(&doc) {
        Ok(e) => e,
        Err(e) => return parse_failed(&e),
    };
    if event.event_type != stripe::AUTHORIZATION_REQUEST {
        metrics::counter!(m::EVENTS, "type" => event_label(event.event_type)).increment(1);
        super::ledger::lifecycle(state, &event).await;
        return Answer {
            status: StatusCode::OK,
            body: Bytes::from_static(br#"{"received":true}"#),
            decision: false,
        };
    }
    let auth = match event.authorization_request() {
        Ok(a) => a,
        Err(e) => return parse_failed(&e),
    };
    clock.lap(m::Stage::Parse);

    let rules = state.rules.load();
    let approved = super::approvals_hook::lookup(state, &auth);
    let snapshot = super::ledger::snapshot(state, &auth);
    let spend: &(dyn SpendView + Sync) = match &snapshot {
        Some(s) => s,
        None => &NoSpend,
    };
    let decide = async {
        let fault = &state.config.fault_injection;
        if fault.decision_delay_ms > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(fault.decision_delay_ms)).await;
        }
        let ctx = Context::new(&auth, &state.config.program, &**rules, spend, state.now())
            .with_approvals(
                approved.card_override(),
                approved.cardholder_override(),
                approved.allowance.is_some(),
            );
        // A bug in the decision (or a rule) must cost one fallback answer, not the
        // connection: catch it here, where the answer is still ours to give.
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            if fault.decision_panic {
                panic!("fault injection: decision_panic");
            }
            decision::decide_traced(&ctx)
        }))
        .map_err(|_| FallbackCause::Internal)
    };
    // Shadow matches go to the decision log; they never change the answer.
    let (decision, shadow) = match tokio::time::timeout_at(deadline.into(), decide).await {
        Ok(Ok((d, verdict))) => (d, verdict.shadow),
        Ok(Err(cause)) => (fallback(state, cause), Vec::new()),
        Err(_) => (fallback(state, FallbackCause::Deadline), Vec::new()),
    };
    clock.lap(m::Stage::Decide);
    let decision = super::ledger::settle(
        state,
        super::ledger::Decided {
            event_id: event.id,
            auth: &auth,
            decision,
            raw,
            snapshot: snapshot.as_ref(),
            ruleset: rules.version(),
            shadow: &shadow,
            start,
            deadline,
        },
    )
    .await;
    clock.lap(m::Stage::Reserve);
    super::approvals_hook::after(state, &auth, &decision, approved);

    let body = stripe::encode_decision(&decision, rules.version());
    metrics::counter!(
        m::AUTHORIZATIONS,
        "outcome" => decision.outcome(),
        "reason" => decision.reason.as_str(),
    )
    .increment(1);
    clock.lap(m::Stage::Respond);
    let elapsed = start.elapsed();
    metrics::histogram!(m::WEBHOOK_DURATION).record(elapsed.as_secs_f64());
    tracing::debug!(
        authorization = auth.id,
        card = auth.card.id,
        amount = auth.amount,
        outcome = decision.outcome(),
        approved_amount = decision.amount,
        reason = decision.reason.as_str(),
        ruleset = rules.version(),
        shadow = super::ledger::shadow_names(&shadow).as_deref(),
        micros = elapsed.as_micros() as u64,
        "decision"
    );
    if let Some(legacy) = &state.legacy {
        // Legacy mode: the decision travels as an API call; the webhook only
        // acknowledges. Realtime mode never reaches this branch.
        let call = stripe::legacy_call(
            auth.id,
            &decision,
            rules.version(),
            auth.is_amount_controllable,
        );
        legacy.spawn(call, event.id.to_string(), start);
        return Answer {
            status: StatusCode::OK,
            body: Bytes::from_static(br#"{"received":true}"#),
            decision: false,
        };
    }
    Answer {
        status: StatusCode::OK,
        body: Bytes::from(body),
        decision: true,
    }
}

pub(super) fn fallback(state: &AppState, cause: FallbackCause) -> Decision {
    metrics::counter!(m::FALLBACKS, "cause" => cause.as_str()).increment(1);
    tracing::warn!(cause = cause.as_str(), "answering the fallback decision");
    Decision::fallback(state.config.fallback == Fallback::Approve, cause)
}

fn parse_failed(e: &stripe::ParseError) -> Answer {
    metrics::counter!(m::PARSE_FAILURES).increment(1);
    tracing::warn!(path = %e.path, "webhook body rejected: {e}");
    let body = serde_json::json!({"error": {
        "code": "invalid_event",
        "message": e.to_string(),
        "path": e.path,
    }});
    Answer {
        status: StatusCode::BAD_REQUEST,
        body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        decision: false,
    }
}

/// Bounded label values for event types.
fn event_label(t: &str) -> &'static str {
    match t {
        "issuing_authorization.created" => "issuing_authorization.created",
        "issuing_authorization.updated" => "issuing_authorization.updated",
        "issuing_transaction.created" => "issuing_transaction.created",
        "issuing_transaction.updated" => "issuing_transaction.updated",
        _ => "other",
    }
}

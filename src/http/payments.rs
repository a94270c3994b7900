//! `POST /v1/payment_approvals`: the HTTP shell of [`crate::payments`].
//!
//! For servers that must check fraud or inventory before finalizing a Checkout
//! payment (Stripe's manual approval flow): the body is a payment attempt, the
//! answer approve or decline with the reason, decided by the live payment rule
//! set (hot-reloaded like the authorization rules).
//!
//! Request (JSON, ≤ 256 KiB, unknown fields refused):
//!
//! ```json
//! {"id": "cs_test_a1", "amount": 12000, "currency": "usd",
//!  "customer": {"id": "cus_1", "country": "US", "email": "a@example.com"},
//!  "card": {"country": "FR", "brand": "visa", "funding": "credit"},
//!  "line_items": [{"sku": "sku_tee", "name": "Tee", "quantity": 2, "amount": 6000}],
//!  "metadata": {"channel": "web"}}
//! ```
//!
//! Needs an API key with the `payments` (or `admin`) role, sent as
//! `Authorization: Bearer <key>`: the endpoint changes nothing, but without a
//! credential anyone could probe the payment rules. Checkout servers get a
//! `payments` key, which can call nothing else.
//!
//! Answers:
//! - 200 `{"id":"cs_test_a1","approved":false,"reason":"rule:out-of-stock",
//!   "rule":"out-of-stock","message":"…","ruleset":"<version>"}` (`rule` and
//!   `message` only when a rule decided; `shadow` lists matching shadow rules);
//! - 400 `{"error":{"code":"invalid_request","message":…,"field":"line_items[0].quantity"}}`
//!   for bad JSON, an unknown field, a wrong type or an out-of-range value;
//! - 401/403 `{"error":{"code":"missing_api_key"|"invalid_api_key"|"api_key_revoked"|
//!   "permission_denied","type":…,"message":…}}` as on the rest of `/v1/`;
//! - 413 `{"error":{"code":"body_too_large",…}}` over 256 KiB.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::respond::{json_bytes, read_body};
use super::{AppState, Body};
use crate::approvals::Role;
use crate::metrics as m;
use crate::payments::{self, PaymentRequest};

/// Largest accepted body: a thousand line items fit with room to spare.
pub const BODY_LIMIT: usize = 256 * 1024;

/// Handles one payment approval request.
pub async fn handle(state: &AppState, req: Request<Incoming>) -> Response<Body> {
    let deadline = tokio::time::Instant::now() + state.config.deadline;
    // Before the body is read: an anonymous caller costs no more than its headers.
    if let Err(refused) =
        super::api::authorize(state, req.headers(), &[Role::Payments, Role::Admin]).await
    {
        return refused;
    }
    let (parts, body) = req.into_parts();
    let body = match read_body(&parts.headers, body, BODY_LIMIT, deadline).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let (status, body) = answer(state, &body);
    json_bytes(status, body)
}

/// The endpoint without the network: parse, decide, encode.
pub fn answer(state: &AppState, body: &[u8]) -> (StatusCode, Bytes) {
    let req = match PaymentRequest::parse(body) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(field = %e.field, "payment approval request rejected: {}", e.message);
            let body = serde_json::json!({"error": {
                "code": "invalid_request",
                "message": e.to_string(),
                "field": e.field,
            }});
            return (
                StatusCode::BAD_REQUEST,
                Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
            );
        }
    };
    let rules = state.payment_rules.load();
    let decision = payments::decide(&rules, &req);
    let outcome = if decision.approved {
        "approve"
    } else {
        "decline"
    };
    metrics::counter!(m::PAYMENT_APPROVALS, "outcome" => outcome).increment(1);
    tracing::info!(
        id = decision.id.as_deref(),
        amount = req.amount,
        outcome,
        reason = %decision.reason,
        ruleset = %decision.ruleset,
        shadow = ?decision.shadow,
        "payment approval"
    );
    (
        StatusCode::OK,
        Bytes::from(serde_json::to_vec(&decision).unwrap_or_default()),
    )
}

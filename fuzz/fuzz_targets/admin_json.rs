//! The admin API's JSON body decoders on arbitrary bytes: the first byte picks
//! the route (`http::FUZZ_API_BODIES` of them: keys, reasons, list updates,
//! allowances, approval rules, rule updates, overrides), the rest is the body;
//! every input is also tried as `POST /v1/payment_approvals`, evaluated against
//! the shipped payment rules.
//!
//! Properties: no panic; bad input is refused with a 4xx, never a 5xx.

#![no_main]

use std::sync::LazyLock;

use cardgate::http::fuzz_api_body;
use cardgate::payments::{PaymentContext, PaymentRequest, PaymentRuleSet};
use libfuzzer_sys::fuzz_target;

static PAYMENT_RULES: LazyLock<PaymentRuleSet> = LazyLock::new(|| {
    PaymentRuleSet::from_toml_unmetered(include_str!("../../config/payment_rules.toml"))
        .unwrap_or_else(|e| panic!("config/payment_rules.toml: {e}"))
});

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    if let Err((status, message)) = fuzz_api_body(kind, body) {
        assert!(
            (400..500).contains(&status),
            "{status} for route {kind}: {message}"
        );
    }
    if let Ok(req) = PaymentRequest::parse(body) {
        let _ = PAYMENT_RULES.evaluate(&PaymentContext::new(&req));
    }
});

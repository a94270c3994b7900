//! The event parser on arbitrary bytes, as if the signature had verified: the
//! envelope, the authorization request, the lifecycle facts, then `decide()` on
//! whatever parsed, against the shipped rules.
//!
//! Properties: no panic anywhere on the path; a partial approval is an approval
//! of a positive amount below the request, only when the amount is controllable,
//! and it covers the cash-back.

#![no_main]

#[path = "../common.rs"]
mod common;

use std::sync::LazyLock;

use cardgate::decision::{Context, ProgramControls, decide};
use cardgate::rules::RuleSet;
use cardgate::stripe::{Event, lifecycle_fact, parse_document};
use libfuzzer_sys::fuzz_target;

static RULES: LazyLock<RuleSet> = LazyLock::new(|| {
    RuleSet::from_toml_unmetered(include_str!("../../config/rules.toml"))
        .unwrap_or_else(|e| panic!("config/rules.toml: {e}"))
});

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    let Ok(doc) = parse_document(&mut buf) else {
        return;
    };
    let Ok(event) = Event::read(&doc) else {
        return;
    };
    let _ = lifecycle_fact(&event);
    let Ok(auth) = event.authorization_request() else {
        return;
    };
    let program = ProgramControls::default();
    let ctx = Context::new(&auth, &program, &*RULES, &common::Spend, common::NOW);
    let d = decide(&ctx);
    if let Some(partial) = d.amount {
        assert!(d.approved, "partial amount on a decline: {d:?}");
        assert!(
            auth.is_amount_controllable,
            "partial of a fixed amount: {d:?}"
        );
        assert!(
            partial > 0 && partial < auth.amount && partial >= auth.cashback_amount,
            "partial {partial} of {} (cash-back {})",
            auth.amount,
            auth.cashback_amount
        );
    }
});

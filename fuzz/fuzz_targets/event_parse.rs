//! The event parser on arbitrary bytes, as if the signature had verified: the
//! envelope, the authorization request, the lifecycle facts, then `decide()` on
//! whatever parsed, against the shipped rules.
//!
//! Properties: no panic anywhere on the path; a partial approval is an approval
//! of a positive amount below the request, only when the amount is controllable,
//! and it covers the cash-back; and the webhook's reading, which skips a card
//! object read before (`stripe::known`), gives what the whole body gives: the
//! same request, the same lifecycle fact, or the same error, whether the card
//! is new, being learnt or known.

#![no_main]

#[path = "../common.rs"]
mod common;

use std::sync::LazyLock;

use cardgate::decision::{Context, ProgramControls, decide};
use cardgate::rules::RuleSet;
use cardgate::stripe::{Event, KnownCards, PADDING, known, lifecycle_fact, parse_document};
use libfuzzer_sys::fuzz_target;

static RULES: LazyLock<RuleSet> = LazyLock::new(|| {
    RuleSet::from_toml_unmetered(include_str!("../../config/rules.toml"))
        .unwrap_or_else(|e| panic!("config/rules.toml: {e}"))
});

static CARDS: LazyLock<KnownCards> = LazyLock::new(KnownCards::default);

/// The request (or lifecycle fact) as text, or the error's, read the way `read`
/// gives the event.
fn reading(event: Result<Event<'_>, cardgate::stripe::ParseError>) -> String {
    match event {
        Err(e) => format!("event: {e}"),
        Ok(ev) => format!(
            "{:?} / {:?}",
            lifecycle_fact(&ev),
            ev.authorization_request().map(|a| format!("{a:?}"))
        ),
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = {
        let mut buf = data.to_vec();
        match parse_document(&mut buf) {
            Err(e) => format!("parse: {e}"),
            Ok(doc) => reading(Event::read(&doc)),
        }
    };
    // Three times: the card seen once, then learnt, then known.
    for _ in 0..3 {
        let mut buf = Vec::with_capacity(data.len() + PADDING);
        buf.extend_from_slice(data);
        let cut = known::cut(&mut buf, &CARDS);
        let got = match known::parse(&mut buf, &cut, data) {
            Err(e) => format!("parse: {e}"),
            Ok(doc) => {
                let event = Event::read_with(&doc, cut.known());
                if let Ok(ev) = &event
                    && let Ok(a) = ev.authorization_request()
                {
                    cut.learn(&a, &CARDS);
                }
                reading(event)
            }
        };
        assert_eq!(got, whole, "with the card {:?}", cut.known().is_some());
    }
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

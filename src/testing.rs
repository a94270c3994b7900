//! Fixture builders shared by unit tests, integration tests and benches: one
//! realistic [`AuthRequest`] that each caller adjusts, instead of a struct literal
//! per test module. Public (benches link the library as an outside crate and cannot
//! see `#[cfg(test)]` items) but hidden from the docs: not part of the API.

use crate::decision::{
    AuthRequest, Card, CardStatus, Cardholder, CardholderStatus, Controls, Currency, Interval,
    Merchant, RiskSignals, SpendingLimit, Verification,
};

/// `usd`.
pub fn usd() -> Currency {
    // "usd" is three ASCII letters, which `Currency::parse` always accepts.
    Currency::parse("usd").unwrap_or_default()
}

/// Authorization `id` for `amount` USD cents, online, card not present, at a
/// software store in San Francisco; card `ic_1` of cardholder `ich_1`, both active,
/// no spending controls, network risk score 12, created 2026-11-18T11:57:00Z.
pub fn auth(id: &str, amount: i64) -> AuthRequest<'_> {
    AuthRequest {
        id,
        created: 1_795_003_020,
        amount,
        currency: usd(),
        merchant_amount: amount,
        merchant_currency: usd(),
        is_amount_controllable: false,
        network_risk_score: Some(12),
        cashback_amount: 0,
        authorization_method: "online",
        card_presence: "not_present",
        wallet: "",
        merchant: Merchant {
            category: "computer_software_stores",
            category_code: "5734",
            country: "US",
            city: "San Francisco",
            name: "PIXELFORGE SOFTWARE",
            network_id: "1000384276",
            postal_code: "94107",
            state: "CA",
        },
        card: Card {
            id: "ic_1",
            card_type: "virtual",
            status: CardStatus::Active,
            currency: Some(usd()),
            metadata: vec![],
            controls: Controls::default(),
        },
        cardholder: Cardholder {
            id: "ich_1",
            kind: "individual",
            status: CardholderStatus::Active,
            controls: Controls::default(),
        },
        verification: Verification::default(),
        signals: RiskSignals::default(),
    }
}

/// [`auth`] with `limits` as the card's spending limits.
pub fn auth_with_card_limits(id: &str, amount: i64, limits: Vec<SpendingLimit>) -> AuthRequest<'_> {
    let mut a = auth(id, amount);
    a.card.controls.spending_limits = limits;
    a
}

/// A spending limit of `amount` per `interval` on every category.
pub fn limit(amount: i64, interval: Interval) -> SpendingLimit {
    SpendingLimit {
        amount,
        interval,
        categories: None,
    }
}

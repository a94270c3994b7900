//! cardgate: a real-time card authorization decision service for Stripe Issuing.
//!
//! Map of the crate, in the order a request flows through it:
//!
//! - [`config`]: typed TOML config + environment overrides, validated before anything binds.
//! - [`http`]: the hyper server: routing, body cap, deadline budget, fallback answer,
//!   `/metrics`, health, graceful shutdown. The only module that knows HTTP.
//! - [`stripe`]: the wire protocol: signature check, event parsing, response encoding.
//! - [`decision`]: the pure decision core, `decide(&Context) -> Decision`.
//! - [`rules`]: the rule set evaluated after spending controls.
//! - [`ledger`]: in-memory spend per card and cardholder; atomic check-and-reserve.
//! - [`store`]: SQLite (the only SQL): ledger facts and the decision log, one writer.
//! - [`metrics`]: every metric name, in one place.
//!
//! `main.rs` is the CLI; this crate root only wires the parts together.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod decision;
pub mod http;
pub mod ledger;
pub mod metrics;
pub mod rules;

pub mod store;
pub mod stripe;
#[doc(hidden)]
pub mod testing;

//! cardgate: a real-time card authorization decision service for Stripe Issuing.
//!
//! Map of the crate, in the order a request flows through it:
//!
//! - [`clock`]: the one clock every module reads time through (tests move it).
//! - [`authorize`]: the authorization pipeline as named steps (verify, parse,
//!   snapshot, decide, settle, record, respond), callable without HTTP.
//! - [`config`]: typed TOML config + environment overrides, validated before anything binds.
//! - [`http`]: the hyper server: routing, body cap, deadline budget, fallback answer,
//!   `/metrics`, health, graceful shutdown. The only module that knows HTTP.
//! - [`stripe`]: the wire protocol: signature check, event parsing, response encoding.
//! - [`decision`]: the pure decision core, `decide(&Context) -> Decision`.
//! - [`rules`]: the rule set evaluated after spending controls.
//! - [`payments`]: payment approvals (`POST /v1/payment_approvals`), decided by CEL
//!   rules over the payment context.
//! - [`journal`]: the decision-log row and ledger facts the pipeline records, and
//!   the `Journal` trait `store` implements.
//! - [`ledger`]: in-memory spend per card and cardholder; atomic check-and-reserve.
//! - [`signals`]: behavioural signals (recent velocity, declines, merchants,
//!   amounts) per card and cardholder, bounded, read by rules.
//! - [`store`]: SQLite: ledger facts and the decision log, one writer; schema migrations.
//! - [`approvals`]: two-party approvals for admin actions: keys, approval rules and
//!   requests, security history, signed outgoing events; its own SQLite tables.
//! - [`metrics`]: every metric name, in one place.
//! - [`simulate`]: the local Issuing emulator and the seeded scenario runner
//!   (`cardgate simulate`); its network side is `http::emulator`.
//!
//! [`app`] wires the parts into a running service; [`cli`] is the command line
//! (`main.rs` only calls [`cli::main`]).

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod approvals;
pub mod authorize;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decision;
pub mod http;
pub mod journal;
pub mod ledger;
pub mod metrics;
pub mod payments;
pub mod rules;
pub mod signals;
pub mod simulate;

pub mod store;
pub mod stripe;
#[doc(hidden)]
pub mod testing;

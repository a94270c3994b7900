//! `cardgate simulate`: a local stand-in for Stripe Issuing in test mode, and a
//! seeded scenario generator that uses it as a load generator with an oracle.
//!
//! - [`model`]: the account (cardholders, cards, authorizations, transactions) and
//!   the authorization state machine; pure, takes `now` as an argument.
//! - [`events`]: Stripe-shaped JSON (events and objects), held to the reference
//!   events' key sets by tests.
//! - [`scenario`]: the scenario file, the seeded plan of purchases and their fates,
//!   the oracle that knows the limits, and the run summary.
//!
//! The network lives in `http::emulator` (the emulator's API and the outgoing
//! signed webhooks): this module knows no HTTP.
//!
//! **What the emulator does not do.** Stripe runs its own spending-controls check
//! before the real-time request; the emulator leaves the controls to the
//! webhook (they are in every request payload, and cardgate enforces them), so
//! that the decisions under test are cardgate's. Card and cardholder status
//! checks are Stripe's and are emulated (`card_inactive`, `cardholder_blocked`…).

pub mod events;
pub mod model;
pub mod scenario;

pub use model::{
    ApiDecision, Begun, Emulator, Merchant, NewAuthorization, NewCard, NewCardholder, SimError,
    SpendingControls, SpendingLimit, TimeoutFallback, WebhookAnswer,
};

#[cfg(test)]
mod tests;

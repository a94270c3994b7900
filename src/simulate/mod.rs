//! `cardgate simulate`: a local stand-in for Stripe Issuing in test mode, and a
//! seeded scenario generator that uses it as a load generator with an oracle.
//!
//! - [`model`]: the account (cardholders, cards, authorizations, transactions) and
//!   the authorization state machine; pure, takes `now` as an argument.
//! - [`events`]: Stripe-shaped JSON (events and objects), held to the reference
//!   events' key sets by tests.
//! - [`service`]: the running emulator ([`Simulator`]): the model behind a lock,
//!   real-time requests with the 2 s window, approve/decline inside it, lifecycle
//!   events delivered in order, all through a [`WebhookSender`].
//! - [`scenario`]: the scenario file, the seeded plan of purchases and their fates,
//!   the oracle that knows the limits, the runner and the run summary.
//! - [`cli`]: the command line's options validated into a [`Setup`], and the
//!   scenario run with its progress display and report.
//!
//! **Architecture invariant:** this module knows no HTTP and reads no clock of its
//! own. The network (the emulator's API, the hyper client behind
//! [`WebhookSender`], the accept loop) lives in `http::emulator`; wall time comes
//! from the [`crate::clock::Clock`] a [`Simulator`] is given. *Why:* the model and
//! the scenario are replayable from their inputs, and the emulator is served by
//! the same accept loop as cardgate.
//!
//! **What the emulator does not do.** Stripe runs its own spending-controls check
//! before the real-time request; the emulator leaves the controls to the
//! webhook (they are in every request payload, and cardgate enforces them), so
//! that the decisions under test are cardgate's. Card and cardholder status
//! checks are Stripe's and are emulated (`card_inactive`, `cardholder_blocked`…).

pub mod cli;
pub mod events;
pub mod model;
pub mod scenario;
pub mod service;
pub mod versions;

pub use cli::{EmulatorOptions, RunReport, Setup, SetupError};
pub use model::{
    ApiDecision, Begun, Emulator, Merchant, NewAuthorization, NewCard, NewCardholder, SimError,
    SpendingControls, SpendingLimit, TimeoutFallback, WebhookAnswer,
};
pub use service::{
    Outcome, Reply, Simulator, SimulatorConfig, SimulatorConfigError, WebhookSender,
};

#[cfg(test)]
mod tests;

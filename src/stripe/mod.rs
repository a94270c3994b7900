//! The Stripe wire protocol, and only that: `Stripe-Signature` verification and
//! signing, simd-json parsing of events into typed borrowed views, and encoding of
//! the decision response. Nothing outside this module knows a Stripe field name or
//! the signature scheme.

mod legacy;
mod lifecycle;
mod parse;
mod response;
mod scan;
mod signature;

pub use legacy::{LegacyCall, legacy_call};
pub use lifecycle::{
    AUTHORIZATION_CREATED, AUTHORIZATION_UPDATED, STAND_IN_REASONS, StandIn, TRANSACTION_CREATED,
    lifecycle_fact, stand_in,
};
pub use parse::known::{self, Cut, KnownCard, KnownCards};
pub use parse::{Document, Event, PADDING, ParseError, Problem, parse_document, parse_padded};
pub use response::encode_decision;
pub(crate) use scan::{object_end, skip_space};
pub use signature::{Secrets, Verified, VerifyError, sign_header, signature, verify};

/// Event type of a real-time authorization request.
pub const AUTHORIZATION_REQUEST: &str = "issuing_authorization.request";

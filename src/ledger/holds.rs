//! The seam between the authorization pipeline and whoever decides holds: the
//! [`Holds`] trait. The in-memory [`Ledger`] implements it for one process (its
//! facts made durable afterwards by the journal); `store/postgres/` implements it
//! for replicas, where the database itself re-checks the limits and records the
//! hold, so every replica sees every other's holds.
//!
//! *Why async, boxed futures:* a shared backend answers over the network; the
//! in-memory ledger answers at once, and pays one small allocation per call for
//! sharing the seam.

use std::future::Future;
use std::pin::Pin;

use super::{Applied, Fact, Ledger, LedgerError, Reservation, SpendSnapshot};
use crate::decision::{AuthRequest, Decision, ProgramControls};

/// A future answered by a [`Holds`] backend.
pub type HoldsFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, HoldsError>> + Send + 'a>>;

/// Why a backend could not answer; the pipeline answers the configured fallback
/// (requests) or asks Stripe to deliver again (lifecycle events).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoldsError {
    /// The fact's values cannot be accounted; retrying will not help.
    #[error(transparent)]
    Invalid(#[from] LedgerError),
    /// The backend is unreachable or failed; retrying later may help.
    #[error("ledger store unavailable: {0}")]
    Unavailable(String),
}

/// Spend snapshots, atomic check-and-reserve, and lifecycle facts, as one backend
/// decides them. Semantics are [`Ledger`]'s (its docs are the contract): every
/// backend gives the same decision and the same totals for the same facts.
pub trait Holds: Send + Sync {
    /// The spend `decide()` sees for `auth` at `at` (see [`Ledger::snapshot`]).
    fn snapshot<'a>(&'a self, auth: &'a AuthRequest<'a>, at: i64)
    -> HoldsFuture<'a, SpendSnapshot>;

    /// Re-checks every interval limit atomically and holds the approved amount
    /// (see [`Ledger::reserve`]).
    fn reserve<'a>(
        &'a self,
        event_id: &'a str,
        auth: &'a AuthRequest<'a>,
        program: &'a ProgramControls,
        at: i64,
        decision: Decision,
    ) -> HoldsFuture<'a, Reservation>;

    /// Applies a lifecycle fact, idempotent by event id (see [`Ledger::apply`]).
    fn apply<'a>(&'a self, fact: &'a Fact) -> HoldsFuture<'a, Applied>;

    /// Takes back a reserve whose answer was not given (see [`Ledger::cancel`]).
    /// Only called on backends that are not [`durable`](Holds::durable).
    fn cancel(&self, fact: &Fact);

    /// True when the backend's facts are durable once `reserve`/`apply` answered,
    /// so the journal need not make them durable again.
    fn durable(&self) -> bool;

    /// Whether this backend's own reserve approved the authorization `fact` is
    /// about, when it can tell without a round trip (for counting stand-ins that
    /// override cardgate's answer); `None` when it cannot.
    fn reserved(&self, fact: &Fact) -> Option<bool> {
        let _ = fact;
        None
    }
}

impl Holds for Ledger {
    fn snapshot<'a>(
        &'a self,
        auth: &'a AuthRequest<'a>,
        at: i64,
    ) -> HoldsFuture<'a, SpendSnapshot> {
        Box::pin(std::future::ready(Ok(Ledger::snapshot(self, auth, at))))
    }

    fn reserve<'a>(
        &'a self,
        event_id: &'a str,
        auth: &'a AuthRequest<'a>,
        program: &'a ProgramControls,
        at: i64,
        decision: Decision,
    ) -> HoldsFuture<'a, Reservation> {
        Box::pin(std::future::ready(Ok(Ledger::reserve(
            self, event_id, auth, program, at, decision,
        ))))
    }

    fn apply<'a>(&'a self, fact: &'a Fact) -> HoldsFuture<'a, Applied> {
        Box::pin(std::future::ready(
            Ledger::apply(self, fact).map_err(HoldsError::from),
        ))
    }

    fn cancel(&self, fact: &Fact) {
        Ledger::cancel(self, fact);
    }

    fn durable(&self) -> bool {
        false
    }

    fn reserved(&self, fact: &Fact) -> Option<bool> {
        Some(Ledger::reserved(self, fact))
    }
}

//! The decision journal: what one authorization asked, what cardgate answered and
//! what the decision saw, plus the ledger facts that go with it — the records the
//! authorization pipeline hands to durable storage, and the seam it hands them
//! through.
//!
//! Owns the record types ([`LoggedDecision`] as read back, [`DecisionRow`] as
//! written, [`Write`]) and the [`Journal`] trait.
//! `authorize/` writes through the trait; `store/` implements it (SQLite today,
//! one writer with group commit); the backtest reads the rows back. Nothing here
//! knows SQL. *Why a trait:* a second backend (`PostgreSQL` for replicas) is an added
//! module, and the pipeline can be driven in tests and benches without a database.

mod row;
mod search;
pub mod seen;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;

pub use crate::config::Durability;
use crate::ledger::Fact;
pub use row::{DecisionRow, PackedText, RowText};
pub use search::{DecisionLog, DecisionQuery, LogReadError, MAX_SEARCH};

/// One row of the decision log: what was asked, what was answered, and what the
/// decision saw, so the backtest can replay it against another rule set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedDecision {
    /// Row id (ignored when writing).
    pub id: i64,
    /// The request event's id.
    pub event_id: String,
    /// `iauth_…`
    pub authorization_id: String,
    /// `ic_…`
    pub card: String,
    /// `ich_…`
    pub cardholder: String,
    /// Requested amount.
    pub amount: i64,
    /// Its currency.
    pub currency: String,
    /// Merchant category name.
    pub merchant_category: String,
    /// MCC.
    pub merchant_mcc: String,
    /// Merchant country.
    pub merchant_country: String,
    /// Merchant name.
    pub merchant_name: String,
    /// Approved?
    pub approved: bool,
    /// Amount approved (0 when declined).
    pub approved_amount: i64,
    /// Machine reason.
    pub reason: String,
    /// Control or rule behind the reason.
    pub rule: Option<String>,
    /// Rule set version.
    pub ruleset: String,
    /// Decision latency in microseconds.
    pub latency_us: i64,
    /// Unix seconds.
    pub decided_at: i64,
    /// The verified event body, byte for byte: the request's own buffer, shared
    /// (not copied) until the row is written.
    pub event_json: Bytes,
    /// Spend the decision saw as JSON window totals — rows written before exact
    /// replay; `{}` since (the totals are in `seen`).
    pub spend_json: String,
    /// Shadow rules that matched, as a JSON array of names; `None` when none did
    /// (or the rules were not reached).
    pub shadow_rules: Option<String>,
    /// How `seen` is encoded: [`seen::SEEN_FORMAT`] for an exact replay record,
    /// [`seen::LEGACY_FORMAT`] (0) for rows written before it existed (the backtest
    /// replays those from `spend_json` and reports them as approximate).
    pub format: i64,
    /// What the decision saw beyond its event body ([`seen::Seen::encode`]); empty
    /// for a fallback answer or a legacy row.
    pub seen: Vec<u8>,
    /// Bodies `seen` names by hash — program controls, overrides — as
    /// `(seen::blob_hash(body), body)`. Stored once per hash (not per row) in the
    /// store's blob table; the backtest reads them back by hash.
    pub blobs: Vec<(i64, Arc<[u8]>)>,
}

/// One queued write.
#[derive(Debug, Clone)]
pub enum Write {
    /// A ledger fact; a fact whose event id is stored already is skipped.
    Fact(Fact),
    /// A decision log row.
    Decision(Box<DecisionRow>),
    /// A decision log row whose approval held funds: the row and its reserve fact
    /// in one write. The fact is [`Held::fact`] of the row, so a store can keep the
    /// hold as two integers beside the row instead of a second copy of its fields.
    Held(Box<DecisionRow>, Held),
}

impl Write {
    /// `row` as a decision-log write (a read row written again: tests, benches).
    pub fn decision(row: impl Into<DecisionRow>) -> Write {
        Write::Decision(Box::new(row.into()))
    }

    /// `row` with the hold its approval made.
    pub fn held(row: impl Into<DecisionRow>, held: Held) -> Write {
        Write::Held(Box::new(row.into()), held)
    }
}

/// What an approval held, beside its decision-log row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The amount reserved.
    pub amount: i64,
    /// The window time it was held at (the authorization's `created`, or the clock).
    pub at: i64,
}

impl Held {
    /// The ledger's reserve fact for the row of text `t`: the same fact
    /// `Ledger::reserve` made, rebuilt from the row's columns.
    pub fn fact(self, t: &RowText<'_>) -> Fact {
        Fact::Reserve {
            event_id: t.event_id.to_string(),
            auth: crate::ledger::AuthMeta {
                id: t.authorization_id.to_string(),
                card: t.card.to_string(),
                cardholder: t.cardholder.to_string(),
                created: self.at,
                currency: t.currency.to_string(),
                category: t.merchant_category.to_string(),
                mcc: t.merchant_mcc.to_string(),
            },
            amount: self.amount,
        }
    }
}

/// Why a journal write failed; the caller answers the fallback for an approval
/// whose hold could not be made durable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JournalError {
    /// The batch could not be committed; nothing of it was written.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The writer is gone (shutting down or crashed).
    #[error("the store writer has stopped")]
    WriterGone,
}

/// A future the journal resolves once a batch committed.
pub type Committed<'a> = Pin<Box<dyn Future<Output = Result<(), JournalError>> + Send + 'a>>;

/// Where the pipeline sends facts and decision-log rows.
pub trait Journal: Send + Sync {
    /// When an approval may be answered relative to the commit of its hold.
    fn durability(&self) -> Durability;

    /// Queues writes without waiting (async durability, decision-log rows).
    ///
    /// # Errors
    /// [`JournalError::WriterGone`] when nothing can be written any more.
    fn enqueue(&self, writes: Vec<Write>) -> Result<(), JournalError>;

    /// Queues writes; the future resolves once the batch holding them committed.
    fn commit(&self, writes: Vec<Write>) -> Committed<'_>;

    /// [`Journal::commit`] for writes whose waiter is in no hurry (a lifecycle
    /// event's fact: Stripe waits for its answer outside the authorization's
    /// window): the store may hold the batch open briefly for more writes, so
    /// they share a commit (and its fsync) with others instead of causing one of
    /// their own. Durable when it resolves, as `commit`.
    fn commit_patient(&self, writes: Vec<Write>) -> Committed<'_> {
        self.commit(writes)
    }
}

//! Two-party approvals for sensitive admin actions (DESIGN.md "Two-party
//! approvals"): API keys and roles, approval rules, the approval-request
//! lifecycle, the append-only security history, outgoing events (outbox), and the
//! two things approvals hand to the decision path: card/cardholder control
//! overrides and one-time authorization allowances.
//!
//! Knows neither SQL nor HTTP: it declares the storage it needs
//! ([`store::ApprovalStore`], implemented on SQLite in `src/store/approvals/`) and the
//! delivery it needs ([`events::Deliver`], implemented in `src/http/outbox.rs`). Every
//! state change is one store transaction whose guards re-check what the change was
//! computed from, together with its security-history row and its event.
//!
//! Lifecycle (every arrow is one transition, `requests.rs`):
//! ```text
//! gated call ─► pending ─submit─► requires_review ─approve─► requires_execution ─► succeeded | failed
//!                  │                     ├─deny──► rejected
//!                  ├─cancel──────────────┴─cancel─► canceled
//!                  └─ past expires_at (either state) ─► expired
//! ```
//! A request found in `requires_execution` at start-up (the process stopped while
//! running it) is marked `failed`, never re-run: running an action twice is worse
//! than asking again. With replicas on one database, "found at start-up" is not
//! "stopped": the approving process holds the request's execution in the store
//! ([`ApprovalStore::hold_execution`]) from before its approval commits until its
//! result does, and recovery fails only the requests nobody holds.

pub mod action;
pub mod events;
mod history;
pub mod keys;
pub mod model;
mod overrides;
mod perform;
pub mod policy;
mod requests;
mod rules;
pub mod store;

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::rules::RuleSetError;
pub use action::{Action, ActionKind, AllowanceSpec, OverrideSpec, RuleInput, RuleUpdate, Scope};
pub use keys::{KeyExpiry, Role};
pub use model::{
    Actor, Allowance, ApiKey, ApiObject, ApprovalRequest, ControlOverride, EventRecord, Executed,
    HistoryEntry, HistoryFilter, Page, RequestFilter, Status, tagged,
};
pub use overrides::{AllowanceClaim, AllowanceKey, CLAIM_LEASE_SECS, ClaimGuard, OverrideTable};
pub use perform::LiveRules;
pub use policy::{ApprovalRule, Control, Reviewers};
pub use store::{ApprovalStore, ApprovalStoreError, Change, ExecutionHold, HeldExecution};

pub use crate::clock::Clock;
pub use crate::config::ApprovalsConfig;

/// Why a bearer key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Not a cardgate key, or no key with that hash.
    Unknown,
    /// The key was revoked.
    Revoked,
    /// The key's `expires_at` has passed (by the approvals clock).
    Expired,
    /// The database could not be read.
    Storage,
}

/// A key generated for a gated key creation: the secret is shown to the requester
/// once, now; only the hash waits in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingKey {
    /// `key_…`, usable once the request succeeds.
    pub id: String,
    /// The plaintext.
    pub secret: String,
}

/// Why an approvals operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The action needs approval; the (pending) request is attached.
    #[error("approval required: request {} opened", request.id)]
    ApprovalRequired {
        /// The request just opened.
        request: Box<ApprovalRequest>,
        /// The key a gated key creation will activate.
        pending_key: Option<PendingKey>,
    },
    /// A `block` rule refused the action.
    #[error("{} is blocked by approval rule {rule}", action.as_str())]
    Blocked {
        /// The action.
        action: ActionKind,
        /// The rule's id.
        rule: String,
    },
    /// No such object.
    #[error("no {what} with id {id:?}")]
    NotFound {
        /// Its kind.
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The state forbids it (transition, uniqueness).
    #[error("{code}: {message}")]
    Conflict {
        /// Machine code.
        code: &'static str,
        /// What and why.
        message: String,
    },
    /// The caller may not do this.
    #[error("{code}: {message}")]
    Forbidden {
        /// Machine code.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// Bad parameters.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// A rule set that does not compile.
    #[error("{0}")]
    InvalidRules(RuleSetError),
    /// The database failed.
    #[error("storage: {0}")]
    Storage(String),
}

impl From<ApprovalStoreError> for Error {
    fn from(e: ApprovalStoreError) -> Self {
        match e {
            // Callers retry stale changes; one that escapes kept losing the race.
            ApprovalStoreError::Stale => contended(),
            ApprovalStoreError::UnknownCursor(_) => invalid(e.to_string()),
            ApprovalStoreError::Backend(m) => Error::Storage(m),
        }
    }
}

impl Error {
    /// Short machine code and message, as an executed request keeps them.
    fn failure(&self) -> model::Failure {
        let (code, message) = match self {
            Error::InvalidRules(r) => ("invalid_rules", r.to_string()),
            Error::NotFound { what, id } => ("resource_missing", format!("no {what} {id}")),
            Error::Conflict { code, message } | Error::Forbidden { code, message } => {
                (*code, message.clone())
            }
            Error::Invalid { message } => ("invalid_request", message.clone()),
            Error::Storage(m) => ("storage", m.clone()),
            Error::ApprovalRequired { .. } => ("approval_required", "approval required".into()),
            Error::Blocked { rule, .. } => ("action_blocked", format!("blocked by {rule}")),
        };
        model::Failure {
            error_code: code.into(),
            error_message: message,
        }
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::Invalid {
        message: message.into(),
    }
}

fn conflict(code: &'static str, message: impl Into<String>) -> Error {
    Error::Conflict {
        code,
        message: message.into(),
    }
}

fn not_found(what: &'static str, id: &str) -> Error {
    Error::NotFound {
        what,
        id: id.into(),
    }
}

/// Rounds of read, decide, commit before a change gives up because what it reads
/// keeps changing under it (each lost round means another change committed).
const ROUNDS: usize = 16;

fn contended() -> Error {
    conflict(
        "concurrent_change",
        "the object kept changing while this change was made; try again",
    )
}

/// How the service starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `serve`: requests found mid-execution are marked failed first.
    Serve,
    /// A command-line tool beside a possibly running server: no recovery (a
    /// request the server is executing right now must not be marked interrupted).
    Tool,
}

/// The approvals service.
pub struct Approvals {
    store: Arc<dyn ApprovalStore>,
    /// Validated settings.
    pub settings: ApprovalsConfig,
    /// Expiry, allowances, history and event times (follows the test offset).
    clock: Clock,
    /// Outbox schedules and event signatures: the wall clock, never the test
    /// offset, because receivers check the signature's time against theirs.
    outbox_clock: Clock,
    overrides: ArcSwap<OverrideTable>,
    allowances: overrides::Allowances,
    /// Woken when an event is queued, so delivery does not wait for its next poll.
    wake: tokio::sync::Notify,
    /// Reviews handed over by the decision path (which must not wait on the store).
    reviews_tx: tokio::sync::mpsc::Sender<AllowanceSpec>,
    reviews_rx: Mutex<Option<tokio::sync::mpsc::Receiver<AllowanceSpec>>>,
}

/// Review requests waiting to be opened, at most; past this the decision path
/// drops them (logged and counted): the authorization is declined either way.
pub const REVIEW_QUEUE: usize = 1024;

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

fn rand_id(prefix: &str) -> Result<String, Error> {
    keys::random_hex(12)
        .map(|h| format!("{prefix}{h}"))
        .map_err(|e| Error::Storage(format!("no randomness: {e}")))
}

/// A security-history row for a change.
fn history(kind: impl Into<String>, actor: &str, object: &str, now: i64, details: Value) -> Change {
    Change::History(HistoryEntry {
        id: 0,
        kind: kind.into(),
        actor: actor.into(),
        object_id: object.into(),
        created: now,
        details,
    })
}

/// The JSON of an API object, for history details.
fn shown<T: ApiObject>(value: &T) -> Value {
    serde_json::to_value(tagged(value)).unwrap_or_default()
}

impl Approvals {
    /// Starts the service on `store`: in [`Mode::Serve`] marks interrupted
    /// executions failed, then loads overrides and allowances for the decision path.
    pub async fn open(
        store: Arc<dyn ApprovalStore>,
        settings: ApprovalsConfig,
        clock: Clock,
        mode: Mode,
    ) -> Result<Approvals, Error> {
        let (reviews_tx, reviews_rx) = tokio::sync::mpsc::channel(REVIEW_QUEUE);
        let a = Approvals {
            store,
            settings,
            clock,
            outbox_clock: Clock::system(),
            overrides: ArcSwap::from_pointee(OverrideTable::default()),
            allowances: overrides::Allowances::default(),
            wake: tokio::sync::Notify::new(),
            reviews_tx,
            reviews_rx: Mutex::new(Some(reviews_rx)),
        };
        if mode == Mode::Serve {
            a.recover().await?;
        }
        a.reload_overrides().await?;
        a.reload_allowances().await?;
        Ok(a)
    }

    /// The approvals clock, Unix seconds.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Applies `changes` in one transaction and wakes event delivery. `Ok(false)`
    /// when a guard found what they were computed from stale: read again, retry.
    async fn commit(&self, changes: Vec<Change>) -> Result<bool, Error> {
        match self.store.apply(changes).await {
            Ok(()) => {
                self.wake.notify_one();
                Ok(true)
            }
            Err(ApprovalStoreError::Stale) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// [`commit`](Self::commit) for changes without guards, which cannot be stale.
    async fn commit_unguarded(&self, changes: Vec<Change>) -> Result<(), Error> {
        if self.commit(changes).await? {
            Ok(())
        } else {
            Err(contended())
        }
    }

    /// An event about a request or rule, queued for every configured endpoint.
    fn emit(&self, kind: &str, subject: events::Subject<'_>, now: i64) -> Result<Change, Error> {
        Ok(Change::Event {
            event: events::render(rand_id("evt_")?, kind, subject, now),
            endpoints: self.settings.endpoints.clone(),
            first_attempt_ms: self.outbox_clock.now_millis(),
        })
    }
}

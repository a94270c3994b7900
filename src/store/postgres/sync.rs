//! Keeps one replica's caches in step with the shared database: on every batch of
//! changes from the [`Listener`] (and everything after each reconnect) it
//! re-reads what the decision path holds in memory:
//!
//! - **rule sets** — the newest published version is swapped in
//!   ([`Rulesets::refresh`]), so `metadata.ruleset` is the same on every replica;
//! - **overrides and allowances** — [`Approvals::refresh`] rebuilds the override
//!   table and the allowance map (the allowance's single use is guarded in the
//!   store itself, see `rulesets.rs`);
//! - **API keys and approval rules** are read from the database on every use
//!   (a revoked key is refused by the next request on any replica), so their
//!   notifications need nothing here.
//!
//! A refresh that fails (the database is briefly gone) is retried every
//! [`RETRY`] until it succeeds, so a change is never dropped on the floor.
//!
//! [`Rulesets::refresh`]: crate::rules::published::Rulesets::refresh

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::notify::{Changed, Listener};
use super::rulesets::{PgClaimGuard, PgRulesetStore};
use super::{Database, PostgresError};
use crate::approvals::{Approvals, ApprovalsConfig, Clock, LiveRules, Mode};
use crate::rules::published::{OpenError, RulesetStore};

/// What `serve` opens on a shared database: approvals (their allowance claims
/// guarded in the database) and the published rule sets.
pub struct Opened {
    /// The approvals service, in [`Mode::Serve`].
    pub approvals: Approvals,
    /// Published rule sets.
    pub rulesets: Arc<dyn RulesetStore>,
    /// The database, as `postgres://user@host:port/name` (no password).
    pub name: String,
}

/// Opens approvals for `serve` on the replica's one pool `db` (the pool holds
/// and the decision log use, opened by `app::open_shared_store`), with their
/// allowance claims guarded in the database, and the rule-set store.
///
/// One pool, not one per use: the pool's sessions carry the decision path's
/// `statement_timeout` and, in `async` durability, `synchronous_commit = off`.
/// Approval statements are small indexed reads and writes that fit the same
/// timeout; their transactions turn `synchronous_commit` back on for themselves
/// (`approvals/write.rs`), and because WAL is flushed in order, that commit also
/// makes durable a rule set published just before it on the same path (every
/// publish is followed by its security-history row). The execution lock waits
/// under a longer timeout of its own (`approvals/execution.rs`).
///
/// # Errors
/// The database cannot be read.
pub async fn open(db: &Database, settings: ApprovalsConfig) -> Result<Opened, PostgresError> {
    let clock = Clock::with_offset(settings.clock_offset);
    let approvals = super::approvals_on(db, settings, clock, Mode::Serve).await?;
    approvals.guard_allowances(Arc::new(PgClaimGuard::new(db.clone())));
    Ok(Opened {
        approvals,
        name: db.name().to_string(),
        rulesets: Arc::new(PgRulesetStore::new(db.clone())),
    })
}

/// How soon a refresh that failed is tried again.
pub const RETRY: Duration = Duration::from_millis(500);

/// What one replica keeps in memory and the listener refreshes.
pub struct Targets {
    /// The live rule set and its store (see [`LiveRules::published`]).
    pub rules: Arc<dyn LiveRules>,
    /// Overrides and allowances; `None` without approvals.
    pub approvals: Option<Arc<Approvals>>,
}

/// Starts keeping `targets` in step with the database at `url`, on a task of its
/// own that runs until aborted.
///
/// # Errors
/// The URL does not parse.
pub fn start(url: &str, targets: Targets) -> Result<tokio::task::JoinHandle<()>, PostgresError> {
    Ok(tokio::spawn(task(url, targets)?))
}

/// [`start`] as a future, for a caller that owns its tasks (a `JoinSet`).
///
/// # Errors
/// The URL does not parse.
pub fn task(
    url: &str,
    targets: Targets,
) -> Result<impl Future<Output = ()> + Send + use<>, PostgresError> {
    let listener = Listener::new(url)?;
    Ok(run(listener, targets))
}

async fn run(mut listener: Listener, targets: Targets) {
    let mut pending = Changed::default();
    loop {
        let changed = if pending.any() {
            tokio::time::timeout(RETRY, listener.next())
                .await
                .unwrap_or_default()
        } else {
            listener.next().await
        };
        pending = refresh(&targets, pending.union(changed)).await;
    }
}

/// Re-reads what `changed` names; answers what could not be read.
async fn refresh(targets: &Targets, changed: Changed) -> Changed {
    let mut failed = Changed::default();
    // Approvals first: a replica seen deciding with a newly published set has
    // also applied every override and allowance committed before that publish.
    if (changed.overrides || changed.allowances)
        && let Some(a) = &targets.approvals
        && let Err(e) = a.refresh(changed.overrides, changed.allowances).await
    {
        tracing::warn!(error = %e, "cannot refresh overrides and allowances from the store; retrying");
        failed.overrides = changed.overrides;
        failed.allowances = changed.allowances;
    }
    if changed.rulesets
        && let Some(published) = targets.rules.published()
    {
        match published.refresh(targets.rules.live(), "sync").await {
            Ok(swapped) => {
                if swapped {
                    tracing::debug!("rule set refreshed from the store");
                }
            }
            // A set this build cannot compile will not compile on a retry either;
            // the next publish brings a new one.
            Err(e @ OpenError::Invalid { .. }) => {
                tracing::error!(error = %e, "the published rule set stays off; the live set stays");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh the rule set from the store; retrying");
                failed.rulesets = true;
            }
        }
    }
    failed
}

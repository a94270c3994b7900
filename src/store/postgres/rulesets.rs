//! Published rule sets ([`RulesetStore`]) and allowance claims
//! ([`ClaimGuard`]) on PostgreSQL, for replicas sharing one database.
//!
//! A publish is one `INSERT`; the table's trigger (schema step "pgsync") sends
//! `NOTIFY cardgate_changes, 'rulesets'` at commit, which every replica's
//! listener turns into a refresh (`notify.rs`, `sync.rs`). A seed locks the table
//! for its transaction, so of replicas starting together on an empty database one
//! seeds and the others find its set.
//!
//! An allowance claim is one conditional `UPDATE … RETURNING`: it takes a lease
//! on the row only while the allowance is unused, unexpired and not leased to
//! another authorization, so of retries spread over replicas exactly one holds it
//! at a time; the use (`UseAllowance`) ends it for good, a release gives it back.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{Database, error_text};
use crate::approvals::{ApprovalStoreError, ClaimGuard};
use crate::rules::published::{NewRuleset, Published, RulesetStore, RulesetStoreError};

/// The `rulesets` table of one database.
#[derive(Clone, Debug)]
pub struct PgRulesetStore {
    db: Database,
}

impl PgRulesetStore {
    /// The store on an opened (migrated) database.
    pub fn new(db: Database) -> Self {
        PgRulesetStore { db }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, RulesetStoreError> {
        self.db.client().await.map_err(RulesetStoreError)
    }
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "an adapter for `map_err`, which hands the error over by value"
)]
fn pg(e: tokio_postgres::Error) -> RulesetStoreError {
    RulesetStoreError(error_text(&e))
}

const COLUMNS: &str = "seq, version, source, published_at, actor";

fn published(r: &Row) -> Result<Published, RulesetStoreError> {
    Ok(Published {
        seq: r.try_get(0).map_err(pg)?,
        version: r.try_get(1).map_err(pg)?,
        source: r.try_get(2).map_err(pg)?,
        published_at: r.try_get(3).map_err(pg)?,
        actor: r.try_get(4).map_err(pg)?,
    })
}

async fn latest(
    c: &(impl tokio_postgres::GenericClient + Sync),
) -> Result<Option<Published>, RulesetStoreError> {
    c.query_opt(
        &format!("SELECT {COLUMNS} FROM rulesets ORDER BY seq DESC LIMIT 1"),
        &[],
    )
    .await
    .map_err(pg)?
    .as_ref()
    .map(published)
    .transpose()
}

const INSERT: &str = "INSERT INTO rulesets (version, source, published_at, actor) VALUES ($1, $2, $3, $4) RETURNING seq";

#[async_trait]
impl RulesetStore for PgRulesetStore {
    async fn latest(&self) -> Result<Option<Published>, RulesetStoreError> {
        latest(&**self.client().await?).await
    }

    async fn publish(&self, n: NewRuleset<'_>) -> Result<i64, RulesetStoreError> {
        let c = self.client().await?;
        let row = c
            .query_one(INSERT, &[&n.version, &n.source, &n.published_at, &n.actor])
            .await
            .map_err(pg)?;
        row.try_get(0).map_err(pg)
    }

    async fn seed(&self, n: NewRuleset<'_>) -> Result<(Published, bool), RulesetStoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pg)?;
        // Readers are not blocked (EXCLUSIVE admits ACCESS SHARE); a second seed
        // waits here, then finds the first one's row.
        tx.batch_execute("LOCK TABLE rulesets IN EXCLUSIVE MODE")
            .await
            .map_err(pg)?;
        let stored = if latest(&*tx).await?.is_none() {
            tx.query_one(INSERT, &[&n.version, &n.source, &n.published_at, &n.actor])
                .await
                .map_err(pg)?;
            true
        } else {
            false
        };
        let newest = latest(&*tx)
            .await?
            .ok_or_else(|| RulesetStoreError("rulesets is empty after a seed".into()))?;
        tx.commit().await.map_err(pg)?;
        Ok((newest, stored))
    }

    async fn all(&self) -> Result<Vec<Published>, RulesetStoreError> {
        let c = self.client().await?;
        c.query(&format!("SELECT {COLUMNS} FROM rulesets ORDER BY seq"), &[])
            .await
            .map_err(pg)?
            .iter()
            .map(published)
            .collect()
    }
}

/// Allowance claims on the `allowances` table of one database.
#[derive(Clone, Debug)]
pub struct PgClaimGuard {
    db: Database,
}

impl PgClaimGuard {
    /// The guard on an opened (migrated) database.
    pub fn new(db: Database) -> Self {
        PgClaimGuard { db }
    }
}

fn backend(e: &tokio_postgres::Error) -> ApprovalStoreError {
    ApprovalStoreError::Backend(error_text(e))
}

#[async_trait]
impl ClaimGuard for PgClaimGuard {
    async fn claim(
        &self,
        id: &str,
        by: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, ApprovalStoreError> {
        let c = self
            .db
            .client()
            .await
            .map_err(ApprovalStoreError::Backend)?;
        // The row lock the UPDATE takes makes the check and the lease one step:
        // a second claimer waits for it, then re-checks and finds it leased.
        let row = c
            .query_opt(
                "UPDATE allowances SET claimed_by = $2, claimed_until = $4
                 WHERE id = $1 AND used_at IS NULL AND expires_at > $3
                   AND (claimed_until IS NULL OR claimed_until <= $3 OR claimed_by = $2)
                 RETURNING id",
                &[&id, &by, &now, &until],
            )
            .await
            .map_err(|e| backend(&e))?;
        Ok(row.is_some())
    }

    async fn release(&self, id: &str, by: &str) -> Result<(), ApprovalStoreError> {
        let c = self
            .db
            .client()
            .await
            .map_err(ApprovalStoreError::Backend)?;
        c.execute(
            "UPDATE allowances SET claimed_by = NULL, claimed_until = NULL
             WHERE id = $1 AND claimed_by = $2 AND used_at IS NULL",
            &[&id, &by],
        )
        .await
        .map_err(|e| backend(&e))?;
        Ok(())
    }
}

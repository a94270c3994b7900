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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::approvals::model::Allowance;
    use crate::approvals::{AllowanceSpec, ApprovalStore, Change};
    use crate::store::postgres::notify::{Changed, Listener};
    use crate::store::postgres::{PgApprovalStore, testing};

    fn database() -> Option<(Arc<testing::TestServer>, String)> {
        let server = testing::shared().unwrap()?;
        let url = server.database().unwrap();
        Some((server, url))
    }

    #[tokio::test]
    async fn published_rule_sets_keep_the_contract_on_postgres() {
        let Some((_server, url)) = database() else {
            return;
        };
        let store = PgRulesetStore::new(Database::connect(&url).await.unwrap());
        let dir = tempfile::tempdir().unwrap();
        crate::store::rulesets::contract(Arc::new(store), dir.path()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn of_replicas_seeding_an_empty_database_at_once_one_stores_its_set() {
        let Some((_server, url)) = database() else {
            return;
        };
        let db = Database::connect(&url).await.unwrap();
        let seeds: Vec<_> = (0..4)
            .map(|i| {
                let store = PgRulesetStore::new(db.clone());
                tokio::spawn(async move {
                    let v = format!("v{i}");
                    let new = NewRuleset {
                        version: &v,
                        source: &v,
                        published_at: 1,
                        actor: "file",
                    };
                    store.seed(new).await.unwrap()
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for s in seeds {
            outcomes.push(s.await.unwrap());
        }
        assert_eq!(outcomes.iter().filter(|(_, stored)| *stored).count(), 1);
        assert!(outcomes.iter().all(|(p, _)| *p == outcomes[0].0));
        assert_eq!(PgRulesetStore::new(db).all().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_allowance_lease_is_exclusive_until_released_or_lapsed_and_ends_with_its_use() {
        let Some((_server, url)) = database() else {
            return;
        };
        let db = Database::connect(&url).await.unwrap();
        let approvals = PgApprovalStore::new(db.clone());
        let spec = AllowanceSpec {
            card: "ic_1".into(),
            merchant: "m".into(),
            amount: 500,
            currency: "usd".into(),
            authorization: None,
            rule: None,
            details: None,
        };
        approvals
            .apply(vec![Change::InsertAllowance(Allowance {
                id: "allow_1".into(),
                spec,
                created: 0,
                expires_at: 1000,
                used_at: None,
                used_by: None,
            })])
            .await
            .unwrap();
        let guard = PgClaimGuard::new(db);
        assert!(guard.claim("allow_1", "iauth_a", 10, 40).await.unwrap());
        assert!(
            !guard.claim("allow_1", "iauth_b", 11, 41).await.unwrap(),
            "leased to a"
        );
        guard.release("allow_1", "iauth_b").await.unwrap();
        assert!(
            !guard.claim("allow_1", "iauth_b", 12, 42).await.unwrap(),
            "b held nothing to release"
        );
        guard.release("allow_1", "iauth_a").await.unwrap();
        assert!(
            guard.claim("allow_1", "iauth_b", 13, 43).await.unwrap(),
            "given back"
        );
        assert!(
            guard.claim("allow_1", "iauth_c", 43, 73).await.unwrap(),
            "b's lease lapsed"
        );
        approvals
            .apply(vec![Change::UseAllowance {
                id: "allow_1".into(),
                at: 50,
                by: "iauth_c".into(),
            }])
            .await
            .unwrap();
        guard.release("allow_1", "iauth_c").await.unwrap();
        assert!(
            !guard.claim("allow_1", "iauth_d", 200, 230).await.unwrap(),
            "used"
        );
        assert!(
            !guard.claim("allow_2", "iauth_d", 10, 40).await.unwrap(),
            "no such allowance"
        );
    }

    #[tokio::test]
    async fn a_publish_is_notified_and_a_lost_listener_reconnects_and_rereads_everything() {
        let Some((_server, url)) = database() else {
            return;
        };
        let db = Database::connect(&url).await.unwrap();
        let mut listener = Listener::new(&url).unwrap();
        assert_eq!(
            listener.next().await,
            Changed::everything(),
            "first connect"
        );
        let store = PgRulesetStore::new(db.clone());
        let new = NewRuleset {
            version: "v1",
            source: "",
            published_at: 1,
            actor: "key_1",
        };
        store.publish(new).await.unwrap();
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), listener.next())
            .await
            .unwrap();
        assert_eq!(
            got,
            Changed {
                rulesets: true,
                ..Changed::default()
            }
        );
        // The server drops the listening session (a restart, a failover): the
        // listener reconnects and asks for everything to be re-read, since what
        // was notified meanwhile is lost.
        let c = db.client().await.unwrap();
        let killed = c
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = 'cardgate-listen' AND datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        assert_eq!(killed, 1);
        let got = tokio::time::timeout(std::time::Duration::from_secs(10), listener.next())
            .await
            .unwrap();
        assert_eq!(got, Changed::everything());
        assert!(listener.is_connected());
    }
}

//! Published rule sets ([`RulesetStore`]) on SQLite: the `rulesets` table in
//! `cardgate.db`, through its own connection (publishes are rare; they must not
//! queue behind the ledger's group-commit writer), used on blocking threads.
//!
//! One process owns the file, so nothing needs telling: the publishing call swaps
//! its own set. A seed is one `INSERT … WHERE NOT EXISTS`, atomic in SQLite.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::gate::SideWrites;
use crate::rules::published::{NewRuleset, Published, RulesetStore, RulesetStoreError};

/// The `rulesets` table in `<data dir>/cardgate.db`.
#[derive(Clone)]
pub struct SqliteRulesetStore {
    db: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// Turns shared with the ledger's writer (see `store::gate`).
    writes: Arc<SideWrites>,
}

impl std::fmt::Debug for SqliteRulesetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteRulesetStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

const COLUMNS: &str = "seq, version, source, published_at, actor";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Published> {
    Ok(Published {
        seq: r.get(0)?,
        version: r.get(1)?,
        source: r.get(2)?,
        published_at: r.get(3)?,
        actor: r.get(4)?,
    })
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "used as `map_err(backend)`, which hands the error over by value"
)]
fn backend(e: rusqlite::Error) -> RulesetStoreError {
    RulesetStoreError(e.to_string())
}

fn latest(c: &Connection) -> Result<Option<Published>, RulesetStoreError> {
    c.query_row(
        &format!("SELECT {COLUMNS} FROM rulesets ORDER BY seq DESC LIMIT 1"),
        [],
        row,
    )
    .optional()
    .map_err(backend)
}

impl SqliteRulesetStore {
    /// Opens `<dir>/cardgate.db` (created, checked and migrated like the store's).
    ///
    /// # Errors
    /// The file cannot be opened, checked or migrated.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let (mut conn, path) = super::open_for_approvals(dir)?;
        let writes = SideWrites::install(&mut conn, &path).map_err(super::sqlite(&path))?;
        Ok(SqliteRulesetStore {
            db: Arc::new(Mutex::new(conn)),
            writes: Arc::new(writes),
            path,
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, RulesetStoreError> + Send + 'static,
    ) -> Result<T, RulesetStoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            // Poisoned only by a panic mid-statement, which SQLite rolled back.
            let mut conn = db.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|e| RulesetStoreError(format!("rule set store task failed: {e}")))?
    }
}

/// An owned [`NewRuleset`], to cross onto a blocking thread.
struct Owned {
    version: String,
    source: String,
    published_at: i64,
    actor: String,
}

impl From<NewRuleset<'_>> for Owned {
    fn from(n: NewRuleset<'_>) -> Self {
        Owned {
            version: n.version.into(),
            source: n.source.into(),
            published_at: n.published_at,
            actor: n.actor.into(),
        }
    }
}

#[async_trait]
impl RulesetStore for SqliteRulesetStore {
    async fn latest(&self) -> Result<Option<Published>, RulesetStoreError> {
        self.run(|c| latest(c)).await
    }

    async fn publish(&self, new: NewRuleset<'_>) -> Result<i64, RulesetStoreError> {
        let (n, writes) = (Owned::from(new), self.writes.clone());
        self.run(move |c| {
            writes.write(c, |c| {
                c.execute(
                    "INSERT INTO rulesets (version, source, published_at, actor) VALUES (?1, ?2, ?3, ?4)",
                    params![n.version, n.source, n.published_at, n.actor],
                )
                .map_err(backend)?;
                Ok(c.last_insert_rowid())
            })
        })
        .await
    }

    async fn seed(&self, new: NewRuleset<'_>) -> Result<(Published, bool), RulesetStoreError> {
        let (n, writes) = (Owned::from(new), self.writes.clone());
        self.run(move |c| {
            writes.write(c, |c| {
                let tx = c.transaction().map_err(backend)?;
                let stored = tx
                    .execute(
                        "INSERT INTO rulesets (version, source, published_at, actor)
                         SELECT ?1, ?2, ?3, ?4 WHERE NOT EXISTS (SELECT 1 FROM rulesets)",
                        params![n.version, n.source, n.published_at, n.actor],
                    )
                    .map_err(backend)?
                    == 1;
                let newest = latest(&tx)?
                    .ok_or_else(|| RulesetStoreError("rulesets is empty after a seed".into()))?;
                tx.commit().map_err(backend)?;
                Ok((newest, stored))
            })
        })
        .await
    }

    async fn all(&self) -> Result<Vec<Published>, RulesetStoreError> {
        self.run(|c| {
            let mut st = c
                .prepare(&format!("SELECT {COLUMNS} FROM rulesets ORDER BY seq"))
                .map_err(backend)?;
            st.query_map([], row)
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)
        })
        .await
    }
}

/// The contract every [`RulesetStore`] keeps, with [`Rulesets`] on top of it as
/// two replicas would use it; run on SQLite here and on PostgreSQL in
/// `store/postgres/rulesets.rs`.
///
/// [`Rulesets`]: crate::rules::published::Rulesets
#[cfg(test)]
pub(crate) async fn contract(store: Arc<dyn RulesetStore>, dir: &Path) {
    use arc_swap::ArcSwap;

    use crate::rules::RuleSet;
    use crate::rules::published::Rulesets;

    const A: &str = "[[rule]]\nname = \"a\"\nwhen = 'amount > 1'\naction = \"decline\"\n";
    const B: &str = "[[rule]]\nname = \"b\"\nwhen = 'amount > 2'\naction = \"decline\"\n";
    const C: &str = "[[rule]]\nname = \"c\"\nwhen = 'amount > 3'\naction = \"decline\"\n";
    let compiled = |src: &str| RuleSet::from_toml_unmetered(src).unwrap();
    assert_eq!(store.latest().await.unwrap(), None);

    // Replica one seeds the empty store with its file; replica two's file is
    // different and seeds nothing: both run replica one's set.
    let (file1, file2) = (dir.join("one.toml"), dir.join("two.toml"));
    std::fs::write(&file2, B).unwrap();
    let one = Rulesets::open(
        store.clone(),
        Some(file1.clone()),
        compiled(A),
        10,
        "file:one",
    )
    .await
    .unwrap();
    let seeded = one.seeded.clone().unwrap();
    assert_eq!(
        (seeded.actor.as_str(), seeded.published_at),
        ("file:one", 10)
    );
    let two = Rulesets::open(
        store.clone(),
        Some(file2.clone()),
        compiled(B),
        11,
        "file:two",
    )
    .await
    .unwrap();
    assert!(two.seeded.is_none(), "the store was not empty");
    assert_eq!(two.live.version(), one.live.version());
    assert_eq!(
        std::fs::read_to_string(&file2).unwrap(),
        A,
        "the file mirrors the store"
    );
    let (live1, live2) = (
        ArcSwap::from_pointee(one.live),
        ArcSwap::from_pointee(two.live),
    );
    let (one, two) = (one.rulesets, two.rulesets);
    assert_eq!(
        one.file_to_publish(&live1).unwrap(),
        None,
        "the mirror is not an edit"
    );

    // A publish on one reaches two on refresh, once.
    one.publish(&live1, B.into(), 20, "key_1", "api")
        .await
        .unwrap();
    assert_eq!(live1.load().source(), B);
    assert!(two.refresh(&live2, "sync").await.unwrap());
    assert!(!two.refresh(&live2, "sync").await.unwrap(), "nothing newer");
    assert_eq!(live2.load().source(), B);
    let newest = store.latest().await.unwrap().unwrap();
    assert_eq!((newest.actor.as_str(), newest.published_at), ("key_1", 20));

    // Two publishes racing: whichever lands last in the store is live on both
    // after their refreshes, and a refresh never goes back.
    two.publish(&live2, C.into(), 30, "key_2", "api")
        .await
        .unwrap();
    assert!(one.refresh(&live1, "sync").await.unwrap());
    assert_eq!(live1.load().source(), C);
    assert_eq!(std::fs::read_to_string(&file1).unwrap(), C);

    // An edited file is something to publish; an invalid publish stores nothing.
    std::fs::write(&file1, A).unwrap();
    assert_eq!(one.file_to_publish(&live1).unwrap().as_deref(), Some(A));
    let before = store.all().await.unwrap().len();
    assert!(
        one.publish(&live1, "[[rule]]\nname = 1\n".into(), 40, "x", "api")
            .await
            .is_err()
    );
    assert_eq!(store.all().await.unwrap().len(), before);
    assert_eq!(live1.load().source(), C);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new<'a>(version: &'a str, source: &'a str, actor: &'a str) -> NewRuleset<'a> {
        NewRuleset {
            version,
            source,
            published_at: 100,
            actor,
        }
    }

    #[tokio::test]
    async fn a_seed_fills_only_an_empty_table_and_the_newest_publish_is_latest() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteRulesetStore::open(dir.path()).unwrap();
        assert_eq!(store.latest().await.unwrap(), None);
        let (first, stored) = store.seed(new("v1", "a", "file:x")).await.unwrap();
        assert!(stored);
        assert_eq!(
            (first.version.as_str(), first.actor.as_str()),
            ("v1", "file:x")
        );
        let (again, stored) = store.seed(new("v9", "z", "file:y")).await.unwrap();
        assert!(!stored, "a second seed stores nothing");
        assert_eq!(again, first);
        let seq = store.publish(new("v2", "b", "key_1")).await.unwrap();
        assert!(seq > first.seq);
        let latest = store.latest().await.unwrap().unwrap();
        assert_eq!((latest.seq, latest.source.as_str()), (seq, "b"));
        // Reopened (a restart), the published set is still the newest.
        drop(store);
        let store = SqliteRulesetStore::open(dir.path()).unwrap();
        assert_eq!(store.latest().await.unwrap().unwrap().version, "v2");
        let all: Vec<_> = store
            .all()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.version)
            .collect();
        assert_eq!(all, ["v1", "v2"]);
    }

    #[tokio::test]
    async fn published_rule_sets_keep_the_contract_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteRulesetStore::open(&dir.path().join("data")).unwrap();
        contract(Arc::new(store), dir.path()).await;
    }
}

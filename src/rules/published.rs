//! Published rule sets: with a store, the live authorization rule set is the
//! newest version published in it, not the `--rules` file.
//!
//! Owns the port ([`RulesetStore`], implemented on SQLite in
//! `src/store/rulesets.rs` and on PostgreSQL in `src/store/postgres/rulesets.rs`)
//! and [`Rulesets`], which keeps one process's live set in step with it:
//!
//! - **Start.** The file only seeds an *empty* store ([`RulesetStore::seed`] is
//!   atomic, so of replicas starting together one seeds and the others read its
//!   set). A store that already holds a set keeps it: after a restart of every
//!   replica the published set is live, whatever their files say.
//! - **Publish** (the admin API, and the file watcher or SIGHUP, which publish
//!   the file through the same path with the file as actor): compile, append to
//!   the store, swap.
//! - **Refresh** (a change notification from another replica, a reconnect): read
//!   the newest version and swap it in if it is newer than the live one.
//!
//! Every version carries the store's sequence number; a swap only moves forward,
//! so a slow publish on this replica cannot put back an older set over a newer
//! one that a notification already installed.
//!
//! **The file is a mirror.** After every swap the set's source is written over the
//! rules file (temp + rename + fsync) when it differs, so the file shows what is
//! live and a later SIGHUP or editor save that leaves it unchanged publishes
//! nothing (a file whose version is the live one is skipped). A file that cannot be
//! written (a read-only mount) is logged and left: the store is the truth.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arc_swap::ArcSwap;
use async_trait::async_trait;

use super::reload::{self, Live, PersistError};
use super::{RuleSet, content_version};

/// One published version as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The store's order of publication (larger is newer).
    pub seq: i64,
    /// Content-hash version ([`RuleSet::version`]).
    pub version: String,
    /// The rules file text.
    pub source: String,
    /// Unix seconds.
    pub published_at: i64,
    /// Who published it: an API key id, `cli`, or `file:<path>`.
    pub actor: String,
}

/// A version to append.
#[derive(Debug, Clone, Copy)]
pub struct NewRuleset<'a> {
    /// Content-hash version.
    pub version: &'a str,
    /// The rules file text.
    pub source: &'a str,
    /// Unix seconds.
    pub published_at: i64,
    /// Who publishes it.
    pub actor: &'a str,
}

/// The store failed or holds something unreadable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule set store: {0}")]
pub struct RulesetStoreError(pub String);

/// Where published rule sets are kept.
#[async_trait]
pub trait RulesetStore: Send + Sync + std::fmt::Debug + 'static {
    /// The newest published version, if any.
    async fn latest(&self) -> Result<Option<Published>, RulesetStoreError>;
    /// Appends a version and returns its sequence number. On a shared store the
    /// other replicas are told (`src/store/postgres/notify.rs`).
    async fn publish(&self, new: NewRuleset<'_>) -> Result<i64, RulesetStoreError>;
    /// Appends `new` only when nothing was ever published, atomically against
    /// concurrent seeds; returns the newest version after it (the seed, or what
    /// was already there) and whether the seed was stored.
    async fn seed(&self, new: NewRuleset<'_>) -> Result<(Published, bool), RulesetStoreError>;
    /// Every published version, oldest first (for `store copy`).
    async fn all(&self) -> Result<Vec<Published>, RulesetStoreError>;
}

/// One process's view of the published rule sets: the store, the sequence number
/// of the live set, and the rules file it mirrors to.
#[derive(Debug)]
pub struct Rulesets {
    store: Arc<dyn RulesetStore>,
    /// Sequence number of the live set; only grows. Written under the reload lock.
    installed: AtomicI64,
    mirror: Option<PathBuf>,
    /// Sequence number of the set last written to the mirror file, so two
    /// mirrors racing cannot leave the older one on disk. Under the reload lock.
    mirrored: Arc<AtomicI64>,
}

/// What [`Rulesets::open`] found.
#[derive(Debug)]
pub struct Opened {
    /// The handle.
    pub rulesets: Rulesets,
    /// The set to make live: the store's newest.
    pub live: RuleSet,
    /// The seed was stored (the store was empty).
    pub seeded: Option<Published>,
}

/// Why a stored set could not be made live.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The store failed.
    #[error("{0}")]
    Store(#[from] RulesetStoreError),
    /// The stored newest version does not compile with this build.
    #[error("the published rule set {version} does not compile: {message}")]
    Invalid {
        /// Its version.
        version: String,
        /// The compiler's errors.
        message: String,
    },
}

impl OpenError {
    fn invalid(p: &Published, e: CompileFailed) -> Self {
        let message = match e {
            CompileFailed::Invalid(errors) => errors.to_string(),
            CompileFailed::Task(m) => m,
        };
        OpenError::Invalid {
            version: p.version.clone(),
            message,
        }
    }
}

impl Rulesets {
    /// Seeds an empty store with `seed` (the `--rules` file, already compiled)
    /// and returns the store's newest set, compiled, with the handle that keeps it
    /// live. `mirror` is the rules file to keep in step, if any.
    ///
    /// # Errors
    /// The store fails, or its newest set does not compile.
    pub async fn open(
        store: Arc<dyn RulesetStore>,
        mirror: Option<PathBuf>,
        seed: RuleSet,
        now: i64,
        actor: &str,
    ) -> Result<Opened, OpenError> {
        let new = NewRuleset {
            version: seed.version(),
            source: seed.source(),
            published_at: now,
            actor,
        };
        let (newest, stored) = store.seed(new).await?;
        let live = if newest.source == seed.source() {
            seed
        } else {
            // The file was edited while the process was down (or belongs to
            // another replica's past): the store wins, and the mirror below
            // rewrites the file. Say so, since the edit is not applied.
            tracing::warn!(
                file = mirror.as_ref().map(|p| p.display().to_string()),
                file_version = seed.version(),
                live = newest.version,
                "the rules file differs from the newest published rule set, which stays live; \
                 the file is rewritten to mirror it (publish an edit with SIGHUP or the API)"
            );
            compile(newest.source.clone())
                .await
                .map_err(|e| OpenError::invalid(&newest, e))?
        };
        let rulesets = Rulesets {
            store,
            installed: AtomicI64::new(newest.seq),
            mirror,
            mirrored: Arc::new(AtomicI64::new(i64::MIN)),
        };
        rulesets.mirror_now(newest.seq, live.source()).await;
        Ok(Opened {
            rulesets,
            live,
            seeded: stored.then_some(newest),
        })
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn RulesetStore> {
        &self.store
    }

    /// The rules file this process mirrors the live set to.
    pub fn mirror(&self) -> Option<&Path> {
        self.mirror.as_deref()
    }

    /// Compiles `src`, appends it to the store and makes it live (unless a newer
    /// version already is). Returns the set, live or superseded.
    ///
    /// # Errors
    /// It does not compile (nothing stored) or the store fails (nothing swapped).
    pub async fn publish(
        &self,
        live: &ArcSwap<RuleSet>,
        src: String,
        now: i64,
        actor: &str,
        origin: &'static str,
    ) -> Result<Arc<RuleSet>, PersistError> {
        let set = match compile(src).await {
            Ok(set) => set,
            Err(CompileFailed::Invalid(e)) => {
                reload::rejected::<RuleSet>(origin, &e.to_string());
                return Err(PersistError::Invalid(e));
            }
            Err(CompileFailed::Task(message)) => {
                reload::rejected::<RuleSet>(origin, &message);
                return Err(PersistError::Io(message));
            }
        };
        let seq = self
            .store
            .publish(NewRuleset {
                version: set.version(),
                source: set.source(),
                published_at: now,
                actor,
            })
            .await
            .map_err(|e| {
                metrics::counter!(RuleSet::RELOADS_METRIC, "result" => "rejected").increment(1);
                tracing::error!(origin, "{e}; the previous set stays live");
                PersistError::Io(e.to_string())
            })?;
        Ok(self.install(live, set, seq, origin).await)
    }

    /// Reads the store's newest version and makes it live when it is newer than
    /// the live one. Returns whether it swapped.
    ///
    /// # Errors
    /// The store fails, or the newest set does not compile (the live set stays).
    pub async fn refresh(
        &self,
        live: &ArcSwap<RuleSet>,
        origin: &'static str,
    ) -> Result<bool, OpenError> {
        let Some(newest) = self.store.latest().await? else {
            return Ok(false);
        };
        if newest.seq <= self.installed.load(Ordering::Acquire) {
            return Ok(false);
        }
        if newest.version == live.load().version() {
            // Same content under a newer number (republished): no compile needed,
            // but the number still moves so older versions stay refused.
            // The file already mirrors this content.
            let _guard = reload::lock();
            self.installed.fetch_max(newest.seq, Ordering::AcqRel);
            self.mirrored.fetch_max(newest.seq, Ordering::AcqRel);
            return Ok(false);
        }
        let set = compile(newest.source.clone()).await.map_err(|e| {
            let e = OpenError::invalid(&newest, e);
            reload::rejected::<RuleSet>(origin, &e.to_string());
            e
        })?;
        let before = live.load().version().to_string();
        let now = self.install(live, set, newest.seq, origin).await;
        Ok(now.version() != before)
    }

    /// Makes the file at the mirror path live through the store when its content
    /// is not the live set's; `None` when it is (nothing to publish).
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn file_to_publish(
        &self,
        live: &ArcSwap<RuleSet>,
    ) -> Result<Option<String>, super::LoadError> {
        let Some(path) = &self.mirror else {
            return Ok(None);
        };
        // Under the lock, and only when the mirror has caught up with the live
        // set: between a swap and its mirror write the file still holds the
        // previous set, which is not an edit and must not be published back.
        let _guard = reload::lock();
        if self.mirrored.load(Ordering::Acquire) < self.installed.load(Ordering::Acquire) {
            return Ok(None);
        }
        let src = super::read_rules_file(path)?;
        Ok((content_version(src.as_bytes()) != live.load().version()).then_some(src))
    }

    /// Swaps `set` in when `seq` is newer than the live set's, then mirrors the
    /// live set to the file; both under the reload lock, on a blocking thread.
    async fn install(
        &self,
        live: &ArcSwap<RuleSet>,
        set: RuleSet,
        seq: i64,
        origin: &'static str,
    ) -> Arc<RuleSet> {
        let (set, live_seq, live_src) = {
            let _guard = reload::lock();
            let set = if seq > self.installed.load(Ordering::Acquire) {
                self.installed.store(seq, Ordering::Release);
                reload::swap_in(live, set, origin)
            } else {
                tracing::info!(
                    origin,
                    version = set.version(),
                    "a newer rule set is already live; this one is stored but superseded"
                );
                Arc::new(set)
            };
            let installed = self.installed.load(Ordering::Acquire);
            (set, installed, live.load().source().to_string())
        };
        self.mirror_now(live_seq, &live_src).await;
        set
    }

    /// Writes `src` (the set numbered `seq`) over the mirror file when it differs
    /// and no newer set was mirrored meanwhile (best effort).
    async fn mirror_now(&self, seq: i64, src: &str) {
        let Some(path) = self.mirror.clone() else {
            return;
        };
        let (src, mirrored) = (src.to_string(), self.mirrored.clone());
        let written = tokio::task::spawn_blocking(move || {
            let _guard = reload::lock();
            if mirrored.fetch_max(seq, Ordering::AcqRel) > seq
                || std::fs::read(&path).is_ok_and(|b| b == src.as_bytes())
            {
                return Ok(());
            }
            reload::write_atomically(&path, src.as_bytes())
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                "cannot mirror the live rule set to the rules file ({e}); the store stays the truth"
            ),
            Err(e) => tracing::warn!("mirroring the rules file failed: {e}"),
        }
    }
}

/// Why a compile on a blocking thread gave no set.
enum CompileFailed {
    Invalid(super::RuleSetError),
    /// The compiler panicked (a bug): the live set stays.
    Task(String),
}

/// Compiles on a blocking thread (metered: the set may go live).
async fn compile(src: String) -> Result<RuleSet, CompileFailed> {
    match tokio::task::spawn_blocking(move || RuleSet::from_toml(&src)).await {
        Ok(r) => r.map_err(CompileFailed::Invalid),
        Err(e) => Err(CompileFailed::Task(format!(
            "compiling the rule set failed: {e}"
        ))),
    }
}

//! Hot swap of the live rule set: from a file change (notify), SIGHUP, or a rules
//! body handed over by the admin endpoint.
//!
//! Every path goes through [`install`]: compile and validate the new set on the
//! caller's thread (never a request's), then store it with one pointer swap. Requests
//! in flight keep the set they loaded; the next one sees the new set. A bad file is
//! rejected with its errors logged and counted, and the old set stays live.
//!
//! With a store, the authorization rule set is not the file's but the store's
//! newest published version ([`super::published`]); the file watcher then hands
//! changes to a callback ([`watch_with`]) that publishes them, and the swap and the
//! file's mirror copy happen under the same lock as here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::{LoadError, RuleSet, RuleSetError, read_rules_file};
use crate::metrics as m;

/// Serializes reloads (not evaluations): two concurrent reloads would otherwise
/// race on which set is live and leave the version gauge pointing at the loser.
/// Held only while compiling and swapping, never by the decision path.
static RELOAD: Mutex<()> = Mutex::new(());

/// A rule set that can be hot-swapped: the authorization [`RuleSet`] and the
/// payment approval rules (`crate::payments::PaymentRuleSet`).
pub trait Live: Send + Sync + Sized + 'static {
    /// What the log lines call it.
    const KIND: &'static str;
    /// Gauge set to 1 for the live version (label `version`).
    const INFO_METRIC: &'static str;
    /// Counter of reloads (label `result`).
    const RELOADS_METRIC: &'static str;
    /// Compiles a rules file (metered).
    fn compile(src: &str) -> Result<Self, RuleSetError>;
    /// Content-hash version.
    fn version(&self) -> &str;
    /// Rules in the set.
    fn rule_count(&self) -> usize;
}

impl Live for RuleSet {
    const KIND: &'static str = "rule set";
    const INFO_METRIC: &'static str = m::RULESET_INFO;
    const RELOADS_METRIC: &'static str = m::RULE_RELOADS;
    fn compile(src: &str) -> Result<Self, RuleSetError> {
        RuleSet::from_toml(src)
    }
    fn version(&self) -> &str {
        RuleSet::version(self)
    }
    fn rule_count(&self) -> usize {
        RuleSet::len(self)
    }
}

/// Compiles `src` and, when valid, makes it the live set. `origin` (`file`,
/// `sighup`, `api`, `start`) goes into the log line. Returns the new set.
pub fn install<T: Live>(
    live: &ArcSwap<T>,
    src: &str,
    origin: &'static str,
) -> Result<Arc<T>, RuleSetError> {
    let _guard = lock();
    install_locked(live, src, origin)
}

/// A poisoned lock only means another reload panicked; the guard protects no data.
pub(super) fn lock() -> std::sync::MutexGuard<'static, ()> {
    RELOAD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn install_locked<T: Live>(
    live: &ArcSwap<T>,
    src: &str,
    origin: &'static str,
) -> Result<Arc<T>, RuleSetError> {
    match T::compile(src) {
        Ok(set) => Ok(swap_in(live, set, origin)),
        Err(e) => {
            rejected::<T>(origin, &e.to_string());
            Err(e)
        }
    }
}

pub(super) fn swap_in<T: Live>(live: &ArcSwap<T>, set: T, origin: &'static str) -> Arc<T> {
    let set = Arc::new(set);
    let old = live.swap(set.clone());
    publish(&*old, &*set);
    metrics::counter!(T::RELOADS_METRIC, "result" => "ok").increment(1);
    tracing::info!(
        origin,
        kind = T::KIND,
        version = set.version(),
        previous = old.version(),
        rules = set.rule_count(),
        "rule set installed"
    );
    set
}

/// Why [`persist_and_install`] refused a set.
#[derive(Debug)]
pub enum PersistError {
    /// The set does not compile; nothing was written or swapped.
    Invalid(RuleSetError),
    /// The file could not be replaced, or the store could not record the set;
    /// nothing was swapped.
    Io(String),
}

/// Compiles `src`, writes it over the rules file at `path` (a temporary file
/// renamed over it, fsynced, so a crash leaves the old or the new file, never half
/// of one), then makes it live. Under the reload lock, so the file on disk and the
/// live set agree after every reload: what the admin API published survives a
/// restart, a SIGHUP and the file watcher (which re-reads the same content).
pub fn persist_and_install<T: Live>(
    live: &ArcSwap<T>,
    src: &str,
    origin: &'static str,
    path: &Path,
) -> Result<Arc<T>, PersistError> {
    let _guard = lock();
    let set = T::compile(src).map_err(|e| {
        rejected::<T>(origin, &e.to_string());
        PersistError::Invalid(e)
    })?;
    write_atomically(path, src.as_bytes()).map_err(|e| {
        let message = format!("cannot write the rules file {}: {e}", path.display());
        metrics::counter!(T::RELOADS_METRIC, "result" => "rejected").increment(1);
        tracing::error!(
            origin,
            kind = T::KIND,
            "{message}; the previous set stays live"
        );
        PersistError::Io(message)
    })?;
    Ok(swap_in(live, set, origin))
}

pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "rules.toml".into());
    let tmp = path.with_file_name(format!(".{name}.cardgate-tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename is durable only once the directory entry is.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Reads `path` and [`install`]s it.
pub fn install_file<T: Live>(
    live: &ArcSwap<T>,
    path: &Path,
    origin: &'static str,
) -> Result<Arc<T>, LoadError> {
    // Read under the lock too: a publish through the API writes the file and swaps
    // in one critical section, and a read outside it could install stale content.
    let _guard = lock();
    let src = read_rules_file(path).inspect_err(|e| rejected::<T>(origin, &e.to_string()))?;
    install_locked(live, &src, origin).map_err(|errors| LoadError::Invalid {
        path: path.display().to_string(),
        errors,
    })
}

/// Marks `set` as the live version in its info gauge (`cardgate_ruleset_info`
/// for the authorization rules).
pub fn publish<T: Live>(old: &T, set: &T) {
    if old.version() != set.version() {
        metrics::gauge!(T::INFO_METRIC, "version" => old.version().to_string()).set(0.0);
    }
    metrics::gauge!(T::INFO_METRIC, "version" => set.version().to_string()).set(1.0);
}

/// Counts and logs a rejected rule set; also used by the admin API, which
/// validates a set before it opens an approval request for it.
pub fn rejected<T: Live>(origin: &'static str, error: &str) {
    metrics::counter!(T::RELOADS_METRIC, "result" => "rejected").increment(1);
    tracing::error!(
        origin,
        kind = T::KIND,
        "rule set rejected, the previous one stays live: {error}"
    );
}

/// Reloads `path` into the set `get(&state)` whenever the file changes or the
/// process receives SIGHUP, until the runtime stops. Watches the parent directory,
/// because editors and deploy tools replace files by renaming a new one over them.
pub async fn watch<T: Send + Sync + 'static, L: Live>(
    path: PathBuf,
    state: Arc<T>,
    get: fn(&T) -> &ArcSwap<L>,
) {
    let file = path.clone();
    watch_with(path, move |origin| {
        let (path, state) = (file.clone(), state.clone());
        async move {
            // Compiling is CPU work: keep it off the runtime's request threads.
            let _ =
                tokio::task::spawn_blocking(move || install_file(get(&state), &path, origin)).await;
        }
    })
    .await;
}

/// Calls `reload(origin)` (`file` or `sighup`) whenever `path` changes or the
/// process receives SIGHUP, until the runtime stops; bursts coalesce into one
/// call. [`watch`] installs the file; with a store, the caller publishes it.
pub async fn watch_with<F, Fut>(path: PathBuf, reload: F)
where
    F: Fn(&'static str) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    use notify::Watcher;
    use tokio::signal::unix::{SignalKind, signal};

    let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(1);
    let name = path.file_name().map(std::ffi::OsStr::to_os_string);
    let file_tx = tx.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && ev.kind.is_modify() | ev.kind.is_create()
            && ev.paths.iter().any(|p| p.file_name() == name.as_deref())
        {
            // A full channel already holds a pending reload: coalesce.
            let _ = file_tx.try_send("file");
        }
    });
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let _watcher = match watcher {
        Ok(mut w) => match w.watch(&dir, notify::RecursiveMode::NonRecursive) {
            Ok(()) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the rules file; SIGHUP and the API still reload");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "no file watcher; SIGHUP and the API still reload");
            None
        }
    };
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            let tx = tx.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let _ = tx.send("sighup").await;
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP"),
    }
    drop(tx);
    while let Some(origin) = rx.recv().await {
        // Let a burst of write events (truncate, write, close) settle into one reload.
        tokio::time::sleep(Duration::from_millis(50)).await;
        while rx.try_recv().is_ok() {}
        reload(origin).await;
    }
}

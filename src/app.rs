//! Wiring: builds a running cardgate from a validated config — the store opened and
//! the ledger rebuilt from it before anything binds, approvals opened, the
//! authorization pipeline and the HTTP state assembled, the background tasks
//! started — and stops it all on one shutdown signal.
//!
//! Owns start-up order and what runs in the background; no logic of its own. `main`
//! parses arguments and calls [`serve`]; tests and benches can call [`build`] to get
//! the same state without a process. *Why here:* the order matters (metrics before
//! rule sets, ledger rebuilt before the port is bound) and must not be repeated per
//! caller.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::authorize::Authorizer;
use crate::clock::Clock;
use crate::config::Config;
use crate::http::{self, AppState};
use crate::journal::Journal;
use crate::ledger::Ledger;
use crate::payments::PaymentRuleSet;
use crate::rules::{LoadError, RuleSet};
use crate::store::{Store, StoreError};

/// Why cardgate did not start. Each names what it could not use.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A rules file could not be loaded (the exit code says: fix the config).
    #[error("{0}")]
    Rules(#[from] LoadError),
    /// The store could not be opened or read.
    #[error("refusing to start: the ledger store is unusable: {0}")]
    Store(#[source] StoreError),
    /// The approvals tables could not be opened.
    #[error("refusing to start: the approvals tables are unusable: {0}")]
    Approvals(String),
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("serving: {0}")]
    Serve(#[from] std::io::Error),
}

impl StartError {
    /// True when the error is in the configuration (exit code 78, `EX_CONFIG`, so
    /// supervisors do not restart in a loop).
    pub fn is_config(&self) -> bool {
        matches!(self, StartError::Rules(_))
    }
}

/// Where `serve` reads its rule sets.
#[derive(Debug, Clone)]
pub struct RulePaths {
    /// The authorization rule set (`--rules`).
    pub rules: PathBuf,
    /// The payment approval rule set (`--payment-rules`).
    pub payment_rules: PathBuf,
}

/// Opens the store and rebuilds the ledger from it, before anything binds: a
/// database that cannot be read stops the start (its error names the file), so the
/// service never decides against an empty ledger while a full one sits on disk.
///
/// # Errors
/// The store cannot be opened or its facts cannot be read.
pub fn open_ledger(config: &Config) -> Result<(Arc<Ledger>, Arc<Store>), StartError> {
    let started = std::time::Instant::now();
    let store =
        Store::open(&config.store.data_dir, config.store.durability).map_err(StartError::Store)?;
    let facts = store.facts().map_err(StartError::Store)?;
    let ledger = Ledger::new();
    for fact in &facts {
        // Facts were validated before they were stored; one failing now means the
        // row was edited by hand. Say so and go on: the others are still right.
        if let Err(e) = ledger.apply(fact) {
            tracing::error!(path = %store.path().display(), "stored fact skipped: {e}");
        }
    }
    tracing::info!(
        path = %store.path().display(),
        facts = facts.len(),
        holds = ledger.holds(),
        millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "ledger rebuilt from the store"
    );
    Ok((Arc::new(ledger), Arc::new(store)))
}

/// Everything `serve` runs: the shared HTTP state and the approvals service whose
/// background tasks must be started.
pub struct Built {
    /// The state every handler shares.
    pub state: Arc<AppState>,
    paths: RulePaths,
}

/// Builds the running state from a validated config. The metrics recorder is
/// installed first: per-rule counters are bound when a rule set is built.
///
/// # Errors
/// A rules file, the store or the approvals tables cannot be used.
pub async fn build(config: Config, paths: RulePaths, clock: Clock) -> Result<Built, StartError> {
    crate::metrics::install();
    let rules = RuleSet::load(&paths.rules)?;
    crate::rules::reload::publish(&RuleSet::empty(), &rules);
    let payment_rules = PaymentRuleSet::load(&paths.payment_rules)?;
    crate::rules::reload::publish(&PaymentRuleSet::empty(), &payment_rules);

    let mut authorizer = Authorizer::new(&config, rules, clock);
    if config.store.enabled {
        let (ledger, store) = open_ledger(&config)?;
        let journal: Arc<dyn Journal> = store;
        authorizer = authorizer.with_ledger(ledger, Some(journal));
        let approvals = crate::store::approvals::open(
            &config.store.data_dir,
            crate::config::ApprovalsConfig {
                rules_file: Some(paths.rules.clone()),
                ..config.approvals.clone()
            },
        )
        .await
        .map_err(|e| StartError::Approvals(e.to_string()))?;
        authorizer = authorizer.with_approvals(Arc::new(approvals));
    } else {
        tracing::warn!("[store] enabled = false: no ledger, interval limits see no past spend");
        tracing::warn!("[store] enabled = false: no admin API (it keeps its state in the store)");
    }
    let decisions = config.store.enabled.then(|| {
        Arc::new(crate::store::decisions::SqliteDecisionLog::new(
            &config.store.data_dir,
        )) as Arc<dyn crate::journal::DecisionLog>
    });
    let state = AppState::new(config, authorizer)
        .with_payment_rules(payment_rules)
        .with_decision_log(decisions);
    Ok(Built {
        state: Arc::new(state),
        paths,
    })
}

/// Binds the configured address (and the admin address, when set), starts the
/// background tasks, prints the banner tests and users wait for, and serves until
/// `shutdown` completes; then stops the background tasks and drains open
/// connections.
///
/// The banner's first line is always `cardgate listening on http://ADDR` (the
/// webhook's port); with an admin listener a second line follows,
/// `cardgate admin listening on http://ADDR`.
///
/// # Errors
/// An address cannot be bound or the server fails.
pub async fn serve(built: Built, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let Built { state, paths } = built;
    let listener = bind(state.config.listen).await?;
    let addr = listener.local_addr()?;
    let admin = match state.config.admin_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
    let mut tasks = background(&state, &paths);
    tracing::info!(
        %addr,
        admin = admin_addr.map(|a| a.to_string()),
        secrets = state.authorizer.secret_count(),
        ruleset = state.rules().load().version(),
        "serving"
    );
    print_banner(&match admin_addr {
        None => format!("cardgate listening on http://{addr}\n"),
        Some(admin) => format!(
            "cardgate listening on http://{addr}\ncardgate admin listening on http://{admin}\n"
        ),
    });
    let served = http::serve(listener, admin, state, shutdown).await;
    // Every background task stops at its next await point; none holds state that
    // a restart cannot rebuild (outbox rows stay queued, reviews are re-read).
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    tracing::info!("stopped");
    served.map_err(StartError::from)
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// The tasks that run beside the server: outbox delivery and review requests (with
/// approvals), and one rules-file watcher per rule set.
fn background(state: &Arc<AppState>, paths: &RulePaths) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    if let Some(a) = state.approvals() {
        tasks.spawn(crate::approvals::events::run(
            a.clone(),
            http::outbox::HttpDeliver::new(),
        ));
        tasks.spawn(a.clone().run_reviews());
    }
    tasks.spawn(crate::rules::reload::watch(
        paths.rules.clone(),
        state.clone(),
        |s: &AppState| s.rules(),
    ));
    tasks.spawn(crate::rules::reload::watch(
        paths.payment_rules.clone(),
        state.clone(),
        |s: &AppState| &s.payment_rules,
    ));
    tasks
}

/// Writes the banner in one piece: a reader that takes the first line and closes
/// the pipe must not turn a second `println!` into a panic.
fn print_banner(banner: &str) {
    use std::io::Write;
    // The banner is how scripts know the port; a closed stdout is not our failure.
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner.as_bytes());
    let _ = out.flush();
}

/// Resolves on SIGTERM or Ctrl-C: the one shutdown signal of `serve`.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// The data directory a state-reading CLI command uses: `--data-dir`, else the
/// config's, else `CARDGATE_DATA_DIR`, else `./data`.
pub fn data_dir(explicit: Option<PathBuf>, config: &Path) -> PathBuf {
    if let Some(d) = explicit {
        return d;
    }
    match Config::load(
        config,
        &crate::config::ProcessEnv,
        &crate::config::Overrides::default(),
    ) {
        Ok(c) => c.store.data_dir,
        Err(_) => std::env::var_os("CARDGATE_DATA_DIR")
            .map_or_else(|| PathBuf::from("./data"), PathBuf::from),
    }
}

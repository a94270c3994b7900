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
use crate::store::{
    Database, DatabaseOptions, PgDecisionLog, PgHolds, PgJournal, PostgresError, Store, StoreError,
};

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
    /// The PostgreSQL store could not be opened or migrated.
    #[error("refusing to start: the shared store is unusable: {0}")]
    Database(#[source] PostgresError),
    /// The PostgreSQL store did not answer within `--wait-for-database`.
    #[error(
        "refusing to start: the shared store did not answer within {:.1} s ({attempts} \
         attempts; --wait-for-database): {source}",
        waited.as_secs_f64()
    )]
    DatabaseWait {
        /// Connection attempts made.
        attempts: u32,
        /// How long `serve` waited.
        waited: std::time::Duration,
        /// The last attempt's error.
        source: PostgresError,
    },
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

/// Opens the store and rebuilds the ledger and the behavioural signals from it,
/// before anything binds: a database that cannot be read stops the start (its
/// error names the file), so the service never decides against an empty ledger
/// while a full one sits on disk. The two rebuilds read the file on two threads at
/// once: with a large log the start is the longer of them, not their sum
/// (BENCHMARKS.md, "A large log").
///
/// # Errors
/// The store cannot be opened or its facts or decisions cannot be read.
pub fn open_ledger(
    config: &Config,
    clock: &Clock,
) -> Result<(Arc<Ledger>, Arc<Store>, crate::signals::SignalState), StartError> {
    let started = std::time::Instant::now();
    let store =
        Store::open(&config.store.data_dir, config.store.durability).map_err(StartError::Store)?;
    let ledger = Ledger::new();
    let (facts, signals) = std::thread::scope(|s| {
        let signals = s.spawn(|| rebuilt_signals(&store, clock));
        let facts = store.for_each_fact(|fact| {
            // Facts were validated before they were stored; one failing now means
            // the row was edited by hand. Say so and go on: the others are still
            // right.
            if let Err(e) = ledger.apply(&fact) {
                tracing::error!(path = %store.path().display(), "stored fact skipped: {e}");
            }
        });
        let signals = signals
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (facts, signals)
    });
    let facts = facts.map_err(StartError::Store)?;
    let signals = signals?;
    tracing::info!(
        path = %store.path().display(),
        facts,
        holds = ledger.holds(),
        millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "ledger rebuilt from the store"
    );
    Ok((Arc::new(ledger), Arc::new(store), signals))
}

/// Everything `serve` runs: the shared HTTP state and the approvals service whose
/// background tasks must be started.
pub struct Built {
    /// The state every handler shares.
    pub state: Arc<AppState>,
    paths: RulePaths,
    /// The shared store whose reachability `/readyz` reports (PostgreSQL only).
    database: Option<Database>,
    /// The shared database replicas follow (`follow_replicas`).
    sync_url: Option<String>,
}

/// How often readiness asks the shared store whether it answers, and how long it
/// waits for the answer: a lost database shows in `/readyz` within about two
/// seconds (the contract says five).
const STORE_PROBE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long `serve` waits at start for a shared store that does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseWait {
    /// Until it answers (the default): a replica started during a database
    /// outage joins when the database is back, like the running ones recover.
    Forever,
    /// At most this long, then the start fails (a supervisor restarts it).
    UpTo(std::time::Duration),
}

/// The first pause between connection attempts at start; it doubles up to
/// [`CONNECT_RETRY_MAX`], so an outage costs a log line every ten seconds, not
/// a flood, and a database that is back is noticed within that.
const CONNECT_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(500);
const CONNECT_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Connects and migrates, retrying while the server cannot be reached (one
/// warning per attempt). A URL that does not parse or a schema newer than this
/// build will not improve by waiting and fail at once.
async fn connect_waiting(
    url: &str,
    options: &DatabaseOptions,
    wait: DatabaseWait,
) -> Result<Database, StartError> {
    let started = tokio::time::Instant::now();
    let mut pause = CONNECT_RETRY_FIRST;
    let mut attempts = 0_u32;
    loop {
        attempts += 1;
        let e = match Database::connect_with(url, options).await {
            Ok(db) => {
                if attempts > 1 {
                    tracing::warn!(db = %db.name(), attempts, "shared store answers; starting");
                }
                return Ok(db);
            }
            Err(e @ (PostgresError::Url(_) | PostgresError::TooNew { .. })) => {
                return Err(StartError::Database(e));
            }
            Err(e) => e,
        };
        let waited = started.elapsed();
        if let DatabaseWait::UpTo(limit) = wait
            && waited + pause > limit
        {
            return Err(StartError::DatabaseWait {
                attempts,
                waited,
                source: e,
            });
        }
        tracing::warn!(
            attempt = attempts,
            retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
            error = %e,
            "shared store unreachable at start; waiting for it before listening"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(CONNECT_RETRY_MAX);
    }
}

/// Opens the PostgreSQL store for `serve`: the replica's one pool (sized and
/// timed by `[store]`) for holds, the decision log, approvals and rule sets,
/// migrated by whichever process comes first. Waits for the server as `wait`
/// says; nothing is bound meanwhile.
///
/// # Errors
/// The database cannot be reached (within `wait`), migrated or used.
pub async fn open_shared_store(
    config: &Config,
    url: &str,
    wait: DatabaseWait,
) -> Result<(Arc<PgHolds>, Arc<PgJournal>, Database), StartError> {
    let options = DatabaseOptions {
        pool_size: config.store.pool_size,
        statement_timeout: Some(config.store.statement_timeout),
        synchronous_commit: config.store.durability == crate::config::Durability::Sync,
        ..DatabaseOptions::default()
    };
    let db = connect_waiting(url, &options, wait).await?;
    db.warm(options.pool_size).await;
    tracing::info!(db = %db.name(), pool = options.pool_size, "shared store opened");
    let holds = Arc::new(PgHolds::new(db.clone()));
    let journal = Arc::new(PgJournal::start(db.clone(), config.store.durability));
    Ok((holds, journal, db))
}

/// Builds the running state from a validated config. The metrics recorder is
/// installed first: per-rule counters are bound when a rule set is built.
///
/// # Errors
/// A rules file, the store or the approvals tables cannot be used.
pub async fn build(config: Config, paths: RulePaths, clock: Clock) -> Result<Built, StartError> {
    build_with(config, paths, clock, DatabaseWait::Forever).await
}

/// [`build`], waiting for a shared store as `wait` says (`serve
/// --wait-for-database`).
///
/// # Errors
/// A rules file, the store or the approvals tables cannot be used.
pub async fn build_with(
    config: Config,
    paths: RulePaths,
    clock: Clock,
    wait: DatabaseWait,
) -> Result<Built, StartError> {
    crate::metrics::install();
    let file_rules = RuleSet::load(&paths.rules)?;
    let payment_rules = PaymentRuleSet::load(&paths.payment_rules)?;
    crate::rules::reload::publish(&PaymentRuleSet::empty(), &payment_rules);

    let mut database = None;
    let mut backend = None;
    let mut shared = None;
    let mut signals = crate::signals::SignalState::new();
    let rules = if config.store.enabled {
        if let Some(url) = &config.store.url {
            // Replicas: every hold, fact and decision row in PostgreSQL; nothing is
            // written to the data directory. The behavioural signals are still per
            // process (issue 16's seam, `signals::SignalSource`): they start empty
            // and see this replica's decisions only.
            tracing::warn!(
                "behavioural signals (velocity.*, history.*) are per replica with a shared store"
            );
            let (holds, journal, db) = open_shared_store(&config, url, wait).await?;
            backend = Some(Backend::Shared(holds, journal));
            database = Some(db);
        } else {
            let (ledger, store, rebuilt) = open_ledger(&config, &clock)?;
            signals = rebuilt;
            backend = Some(Backend::Local(ledger, store));
        }
        let (live, opened) = open_shared(&config, &paths, file_rules, database.as_ref()).await?;
        shared = Some(opened);
        live
    } else {
        tracing::warn!("[store] enabled = false: no ledger, interval limits see no past spend");
        tracing::warn!("[store] enabled = false: no admin API (it keeps its state in the store)");
        file_rules
    };
    crate::rules::reload::publish(&RuleSet::empty(), &rules);

    let mut authorizer = Authorizer::new(&config, rules, clock).with_signals(Arc::new(signals));
    match backend {
        Some(Backend::Shared(holds, journal)) => {
            authorizer = authorizer.with_holds(holds, Some(journal));
        }
        Some(Backend::Local(ledger, store)) => {
            let journal: Arc<dyn Journal> = store;
            authorizer = authorizer.with_ledger(ledger, Some(journal));
        }
        None => {}
    }
    let mut sync_url = None;
    let mut rulesets = None;
    if let Some(s) = shared {
        authorizer = authorizer.with_approvals(s.approvals);
        rulesets = Some(s.rulesets);
        sync_url = s.sync_url;
    }
    // The explorer and the review backtest read the log where the journal writes
    // it: the shared database, or the SQLite file of the data dir.
    let decisions: Option<Arc<dyn crate::journal::DecisionLog>> = match &database {
        Some(db) => Some(Arc::new(PgDecisionLog::new(db.clone()))),
        None if config.store.enabled => Some(Arc::new(
            crate::store::decisions::SqliteDecisionLog::new(&config.store.data_dir),
        )),
        None => None,
    };
    let mut state = AppState::new(config, authorizer)
        .with_payment_rules(payment_rules)
        .with_decision_log(decisions);
    if let Some(r) = rulesets {
        state = state.with_rulesets(r);
    }
    Ok(Built {
        state: Arc::new(state),
        paths,
        database,
        sync_url,
    })
}

/// The behavioural signals rebuilt from the store's decision log.
fn rebuilt_signals(
    store: &Store,
    clock: &Clock,
) -> Result<crate::signals::SignalState, StartError> {
    let signals = crate::signals::SignalState::new();
    let rows = crate::store::rebuild_signals(store.path(), &signals, clock.now())
        .map_err(StartError::Store)?;
    tracing::info!(
        rows,
        cards = signals.cards(),
        "signals rebuilt from the decision log"
    );
    Ok(signals)
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
    let Built {
        state,
        paths,
        database,
        sync_url,
    } = built;
    let listener = bind(state.config.listen).await?;
    let addr = listener.local_addr()?;
    let admin = match state.config.admin_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let admin_addr = admin.as_ref().map(TcpListener::local_addr).transpose()?;
    let mut tasks = background(&state, &paths);
    if let Some(db) = database {
        tasks.spawn(probe_store(db, state.clone()));
    }
    follow_replicas(&mut tasks, &state, &paths, sync_url.as_deref())?;
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
    if state.rulesets.is_none() {
        // With a store the file is published instead (`follow_replicas`).
        tasks.spawn(crate::rules::reload::watch(
            paths.rules.clone(),
            state.clone(),
            |s: &AppState| s.rules(),
        ));
    }
    tasks.spawn(crate::rules::reload::watch(
        paths.payment_rules.clone(),
        state.clone(),
        |s: &AppState| &s.payment_rules,
    ));
    tasks
}

/// Keeps `/readyz` in step with the shared store: 503 while it does not answer
/// (a load balancer then stops sending traffic here; Stripe's deliveries that
/// still arrive get the fallback), 200 again as soon as it does — no restart.
/// Every [`HOLDS_EVERY`] probes it also reads the open holds of all replicas into
/// `cardgate_ledger_holds` (with a shared store no process holds the ledger in
/// memory to count them).
async fn probe_store(db: Database, state: Arc<AppState>) {
    let mut tick = tokio::time::interval(STORE_PROBE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut up = true;
    for n in 0u64.. {
        tick.tick().await;
        let answer = db.ping(STORE_PROBE).await;
        match (&answer, up) {
            (Err(e), true) => tracing::error!(db = %db.name(), "shared store lost: {e}"),
            (Ok(()), false) => tracing::info!(db = %db.name(), "shared store answers again"),
            _ => {}
        }
        up = answer.is_ok();
        state.set_store_ok(up);
        if up && n % HOLDS_EVERY == 0 {
            read_open_holds(&db).await;
        }
    }
}

/// Probes between two reads of the open holds: the count scans the per-authorization
/// records, so it runs every few seconds, not every second (the gauge may lag by that).
const HOLDS_EVERY: u64 = 5;

/// Sets `cardgate_ledger_holds` from the database; a failed or slow read leaves the
/// last value (readiness already reports a database that does not answer).
async fn read_open_holds(db: &Database) {
    match tokio::time::timeout(STORE_PROBE, crate::store::count_open_holds(db)).await {
        Ok(Ok(n)) => crate::metrics::set_ledger_holds(n),
        Ok(Err(e)) => tracing::warn!(db = %db.name(), "open holds not read: {e}"),
        Err(_) => tracing::warn!(db = %db.name(), "open holds not read in time"),
    }
}

// ==== pgsync (issue 14): rule sets in the store, replicas kept in step ====

/// Where holds and the decision log live: this process's ledger with the SQLite
/// journal, or the shared PostgreSQL store.
enum Backend {
    Local(Arc<crate::ledger::Ledger>, Arc<Store>),
    Shared(Arc<PgHolds>, Arc<PgJournal>),
}

/// Approvals and published rule sets, opened on the store, and the database to
/// follow when replicas share one.
struct Shared {
    approvals: Arc<crate::approvals::Approvals>,
    rulesets: Arc<crate::rules::published::Rulesets>,
    sync_url: Option<String>,
}

/// Opens approvals and the published rule sets (PostgreSQL, on the replica's
/// one pool `database`, when a database URL is set, else SQLite in the data
/// dir); the `--rules` file seeds an empty store. Returns the set to make live:
/// the store's newest.
async fn open_shared(
    config: &Config,
    paths: &RulePaths,
    file_rules: RuleSet,
    database: Option<&Database>,
) -> Result<(RuleSet, Shared), StartError> {
    use crate::approvals::Approvals;
    use crate::rules::published::{RulesetStore, Rulesets};
    let settings = crate::config::ApprovalsConfig {
        rules_file: Some(paths.rules.clone()),
        ..config.approvals.clone()
    };
    let approvals_error = |e: String| StartError::Approvals(e);
    let opened: (Approvals, Arc<dyn RulesetStore>, _) =
        if let (Some(url), Some(db)) = (config.store.url.clone(), database) {
            let shared = crate::store::replicas::open(db, settings)
                .await
                .map_err(|e| approvals_error(e.to_string()))?;
            tracing::info!(
                db = shared.name,
                "approvals and rule sets in PostgreSQL, shared by replicas"
            );
            (shared.approvals, shared.rulesets, Some(url))
        } else {
            let dir = &config.store.data_dir;
            let approvals = crate::store::approvals::open(dir, settings)
                .await
                .map_err(|e| approvals_error(e.to_string()))?;
            let store =
                crate::store::rulesets::SqliteRulesetStore::open(dir).map_err(StartError::Store)?;
            (approvals, Arc::new(store), None)
        };
    let (approvals, store, sync_url) = opened;
    let actor = format!("file:{}", paths.rules.display());
    let opened = Rulesets::open(
        store,
        Some(paths.rules.clone()),
        file_rules,
        approvals.now(),
        &actor,
    )
    .await
    .map_err(|e| approvals_error(format!("published rule sets: {e}")))?;
    if let Some(seeded) = &opened.seeded {
        approvals
            .record_seed(seeded, opened.live.len())
            .await
            .map_err(|e| approvals_error(e.to_string()))?;
    }
    tracing::info!(
        version = opened.live.version(),
        seeded = opened.seeded.is_some(),
        "live rule set: the store's newest published version"
    );
    let shared = Shared {
        approvals: Arc::new(approvals),
        rulesets: Arc::new(opened.rulesets),
        sync_url,
    };
    Ok((opened.live, shared))
}

/// With a store: the rules file and SIGHUP publish through the approvals path
/// (file as actor), and with a shared database one listener keeps this
/// replica's rule set, overrides and allowances in step with the others.
fn follow_replicas(
    tasks: &mut JoinSet<()>,
    state: &Arc<AppState>,
    paths: &RulePaths,
    sync_url: Option<&str>,
) -> Result<(), StartError> {
    let (Some(approvals), Some(_)) = (state.approvals().cloned(), state.rulesets.as_ref()) else {
        return Ok(());
    };
    let rules: Arc<dyn crate::approvals::LiveRules> = state.clone();
    if let Some(url) = sync_url {
        let targets = crate::store::replicas::Targets {
            rules: rules.clone(),
            approvals: Some(approvals.clone()),
        };
        let sync = crate::store::replicas::task(url, targets)
            .map_err(|e| StartError::Approvals(e.to_string()))?;
        tasks.spawn(sync);
    }
    tasks.spawn(crate::rules::reload::watch_with(
        paths.rules.clone(),
        move |origin| {
            let (approvals, rules) = (approvals.clone(), rules.clone());
            async move {
                match approvals.publish_file(&rules, origin).await {
                    Ok(Some(_) | None) => {}
                    Err(e) => tracing::error!(origin, error = %e, "rules file not published; the live set stays"),
                }
            }
        },
    ));
    Ok(())
}

// ==== end pgsync ====

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

/// Where a state-reading CLI command finds the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// SQLite in this data directory.
    Sqlite(PathBuf),
    /// The PostgreSQL database at this URL.
    Postgres(String),
}

/// The store a CLI command uses: the config's `[store] url` or
/// `CARDGATE_DATABASE_URL` when set (the env wins), else the data directory of
/// [`data_dir`].
///
/// # Errors
/// `--data-dir` was given together with a URL (the message names both).
pub fn store_location(explicit: Option<PathBuf>, config: &Path) -> Result<StoreLocation, String> {
    let url = std::env::var("CARDGATE_DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .or_else(|| {
            Config::load(
                config,
                &crate::config::ProcessEnv,
                &crate::config::Overrides::default(),
            )
            .ok()
            .and_then(|c| c.store.url)
        });
    match (url, explicit) {
        (Some(_), Some(dir)) => Err(format!(
            "--data-dir {} and a database URL (store.url / CARDGATE_DATABASE_URL) were both \
             given: with a URL all state is in PostgreSQL; drop one of them",
            dir.display()
        )),
        (Some(url), None) => Ok(StoreLocation::Postgres(url)),
        (None, explicit) => Ok(StoreLocation::Sqlite(data_dir(explicit, config))),
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

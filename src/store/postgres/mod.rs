//! Durable storage in PostgreSQL, for more than one replica on one truth (issue
//! 14). A sibling of the SQLite backend: it implements the same ports the domain
//! modules declare, and is the only other place that knows SQL.
//!
//! **Connections.** [`Database`] is a small pool of `tokio-postgres` connections
//! (plain TCP or a unix socket; no TLS yet) opened from a `postgres://` URL. The
//! role in the URL needs to own its database and nothing more: no superuser, no
//! extensions (PL/pgSQL, used by the append-only trigger, is built in).
//!
//! **Schema.** [`Database::connect`] applies the migrations in `schema.rs` under a
//! transaction-scoped advisory lock, so any replica or command-line tool may be
//! the first to touch an empty database and concurrent starts wait for each other
//! instead of racing. A database migrated by a newer build is refused.
//!
//! **Ports implemented:** [`crate::approvals::ApprovalStore`]
//! ([`PgApprovalStore`], `approvals/`), [`crate::ledger::Holds`] ([`PgHolds`],
//! `holds.rs`: the database decides every hold, see `ledger_schema.rs`) and
//! [`crate::journal::Journal`] ([`PgJournal`], `journal.rs`: the decision log with
//! group commit) and [`crate::journal::DecisionLog`] ([`PgDecisionLog`],
//! `decisions.rs`: the explorer's and the review backtest's reads).
//!
//! **Budget.** [`Options`] carries the `[store]` settings: the pool's size, and the
//! session's `statement_timeout` and `synchronous_commit` (off in `async`
//! durability: a committed hold may be lost with the server's last ~0.6 s of WAL,
//! the trade `async` makes in SQLite too).

mod approvals;
pub mod copy;
mod decisions;
mod holds;
mod journal;
mod ledger_schema;
pub mod notify;
pub mod rulesets;
mod schema;
pub mod sync;
#[doc(hidden)]
pub mod testing;

#[cfg(test)]
mod holds_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod windows_tests;

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::config::Host;

pub use approvals::PgApprovalStore;
pub use decisions::PgDecisionLog;
pub use holds::{PgHolds, cardholder_of, count_open_holds, read_facts};
pub use journal::{
    PgJournal, count_decisions, for_each_decision, read_decision_blobs, read_decisions,
};
pub use schema::MIGRATIONS;

use crate::approvals::{Approvals, ApprovalsConfig, Clock, Mode};

/// Connections the pool keeps at most. Approvals are low-volume; a replica's
/// share of the server's `max_connections` stays small.
pub const POOL_SIZE: usize = 8;

/// How long opening one connection may take before the attempt fails, so an
/// unreachable server is an error rather than a hang.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a caller waits for a free pooled connection.
pub const POOL_WAIT: Duration = Duration::from_secs(5);

/// Why the PostgreSQL store could not be opened. Messages name the database as
/// `postgres://user@host:port/name`, never with its password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostgresError {
    /// The URL does not parse.
    #[error("the database URL is not a valid PostgreSQL URL: {0}")]
    Url(String),
    /// The server refused, failed or could not be reached.
    #[error("database {db}: {message}")]
    Database {
        /// The database, without password.
        db: String,
        /// What went wrong.
        message: String,
    },
    /// The schema was migrated by a newer cardgate.
    #[error("database {db} has schema version {found}; this build knows up to {known}")]
    TooNew {
        /// The database, without password.
        db: String,
        /// Its version.
        found: i64,
        /// [`MIGRATIONS`]`.len()`.
        known: i64,
    },
}

/// A pool of connections to one migrated database.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    name: Arc<str>,
    /// Sessions set `synchronous_commit = off` (`async` durability).
    commits_async: bool,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// How a pool's sessions are set up (`[store]` in the config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Connections at most.
    pub pool_size: usize,
    /// The session's `statement_timeout`; `None` keeps the server's.
    pub statement_timeout: Option<Duration>,
    /// `false` sets `synchronous_commit = off` (async durability).
    pub synchronous_commit: bool,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pool_size: POOL_SIZE,
            statement_timeout: None,
            synchronous_commit: true,
            connect_timeout: CONNECT_TIMEOUT,
        }
    }
}

impl Database {
    /// Opens a pool on `url` (`postgres://user:password@host:port/name`, or any
    /// form `tokio-postgres` accepts), proves the server answers, and migrates
    /// the schema.
    pub async fn connect(url: &str) -> Result<Database, PostgresError> {
        Database::connect_with(url, &Options::default()).await
    }

    /// [`Database::connect`] with the pool and session settings of `options`.
    pub async fn connect_with(url: &str, options: &Options) -> Result<Database, PostgresError> {
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|e| PostgresError::Url(e.to_string()))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        let mut session = config.get_options().unwrap_or("").to_string();
        if let Some(t) = options.statement_timeout {
            let _ = write!(session, " -c statement_timeout={}", t.as_millis());
        }
        if !options.synchronous_commit {
            session.push_str(" -c synchronous_commit=off");
        }
        if !session.trim().is_empty() {
            config.options(session.trim());
        }
        if config.get_application_name().is_none() {
            config.application_name("cardgate");
        }
        let name: Arc<str> = describe(&config).into();
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                // A pooled connection the server dropped is closed (its task saw
                // the end of the socket) and replaced instead of failing a call;
                // checking each with a round trip would double the hot path's.
                // A server that hangs is bounded by the callers' deadlines.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(options.connect_timeout + Duration::from_secs(1)))
            .recycle_timeout(Some(options.connect_timeout))
            .build()
            .map_err(|e| PostgresError::Database {
                db: name.to_string(),
                message: e.to_string(),
            })?;
        let db = Database {
            pool,
            name,
            commits_async: !options.synchronous_commit,
        };
        schema::migrate(&db).await?;
        Ok(db)
    }

    /// Whether the pool's sessions commit asynchronously (`async` durability):
    /// writers that must stay durable turn it back on for their transaction.
    pub fn commits_async(&self) -> bool {
        self.commits_async
    }

    /// The database as `postgres://user@host:port/name` (no password).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Opens up to `n` pooled connections now, so the first requests after start
    /// do not pay for connecting (a TCP handshake and SCRAM authentication each)
    /// inside their deadline. Failures are left to the first real use.
    pub async fn warm(&self, n: usize) {
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..n {
            let pool = self.pool.clone();
            opening.spawn(async move { pool.get().await.ok() });
        }
        // Held until all are open, so each `get` opened its own connection.
        let opened = opening.join_all().await;
        tracing::debug!(
            db = %self.name,
            connections = opened.iter().flatten().count(),
            "pool warmed"
        );
    }

    /// Whether the server answers a trivial query within `timeout` (readiness).
    pub async fn ping(&self, timeout: Duration) -> Result<(), String> {
        let probe = async {
            let client = self.client().await?;
            client
                .simple_query("SELECT 1")
                .await
                .map(drop)
                .map_err(|e| error_text(&e))
        };
        tokio::time::timeout(timeout, probe)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} ms", timeout.as_millis())))
    }

    /// A pooled connection.
    async fn client(&self) -> Result<Object, String> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => error_text(&e),
            other => other.to_string(),
        })
    }

    fn error(&self, message: String) -> PostgresError {
        PostgresError::Database {
            db: self.name.to_string(),
            message,
        }
    }
}

/// `postgres://user@host:port/name` from a parsed URL: for messages and logs.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("");
    let db = config.get_dbname().unwrap_or(user);
    format!("postgres://{user}@{host}:{port}/{db}")
}

/// A driver error as a sentence: the server's own message and SQLSTATE when it
/// sent one (the driver's `Display` alone says only "db error").
fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} ({})", db.message(), db.code().code());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// Opens the approvals service for `serve` on the database at `url`: migrates,
/// marks executions a stop interrupted as failed, and loads overrides and
/// allowances. Its clock carries the settings' test offset. The PostgreSQL twin
/// of `crate::store::approvals::open`.
pub async fn open_approvals(
    url: &str,
    settings: ApprovalsConfig,
) -> Result<Approvals, PostgresError> {
    let clock = Clock::with_offset(settings.clock_offset);
    open_approvals_with_clock(url, settings, clock).await
}

/// [`open_approvals`] on a given clock (tests).
pub async fn open_approvals_with_clock(
    url: &str,
    settings: ApprovalsConfig,
    clock: Clock,
) -> Result<Approvals, PostgresError> {
    start(url, settings, clock, Mode::Serve).await
}

/// Opens the service for a command-line tool beside running servers: no start-up
/// recovery (see [`Mode::Tool`]).
pub async fn open_approvals_tool(
    url: &str,
    settings: ApprovalsConfig,
) -> Result<Approvals, PostgresError> {
    // The approvals clock with its test offset, so the command line judges key
    // expiry exactly as the server does.
    let clock = Clock::with_offset(settings.clock_offset);
    start(url, settings, clock, Mode::Tool).await
}

async fn start(
    url: &str,
    settings: ApprovalsConfig,
    clock: Clock,
    mode: Mode,
) -> Result<Approvals, PostgresError> {
    let db = Database::connect(url).await?;
    approvals_on(&db, settings, clock, mode).await
}

/// The approvals service on an opened database (`serve` passes its one pool,
/// see `sync.rs`; the functions above open one of their own).
pub(crate) async fn approvals_on(
    db: &Database,
    settings: ApprovalsConfig,
    clock: Clock,
    mode: Mode,
) -> Result<Approvals, PostgresError> {
    let store = PgApprovalStore::new(db.clone());
    Approvals::open(Arc::new(store), settings, clock, mode)
        .await
        .map_err(|e| db.error(e.to_string()))
}

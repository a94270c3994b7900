//! Durable storage in embedded SQLite: the ledger's facts and the decision log. The
//! only module that knows SQL.
//!
//! **One writer.** A single background thread owns the write connection. Callers
//! queue [`Write`]s; the thread takes whatever is queued (up to [`MAX_BATCH`]),
//! commits it in one transaction and then answers every waiter of the batch: under
//! load, many approvals share one fsync (group commit). `sync` durability awaits
//! that answer before the approval is sent; `async` only queues.
//!
//! **Files.** `<data dir>/cardgate.db`, WAL mode (readers — the CLI, the backtest —
//! never block the writer). `synchronous=FULL` in sync mode so a committed batch
//! survives power loss, `NORMAL` in async mode (a process crash loses nothing
//! committed either way; WAL makes that safe).
//!
//! **Schema** migrations are numbered SQL scripts in [`MIGRATIONS`], applied in one
//! transaction each, tracked with `PRAGMA user_version`. A file with a newer
//! version than this build knows, or that fails SQLite's `quick_check`, or that
//! cannot be written, is refused with an error naming it: the service must never
//! start with an empty ledger in front of a full database it could not read.

pub mod approvals;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Instant;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::oneshot;

use crate::ledger::Fact;
use crate::metrics as m;

/// File name inside the data directory.
pub const FILE_NAME: &str = "cardgate.db";

/// Most writes committed in one transaction: bounds the latency one batch adds to
/// the requests queued behind it.
pub const MAX_BATCH: usize = 1024;

/// Schema migrations; entry `i` moves the schema from version `i` to `i + 1`.
/// Append only: a released migration never changes.
pub const MIGRATIONS: &[&str] = &[
    // 1: ledger facts (dedupe by event id) and the decision log.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE ledger_facts (
         seq        INTEGER PRIMARY KEY AUTOINCREMENT,
         event_id   TEXT NOT NULL UNIQUE,
         kind       TEXT NOT NULL,
         card       TEXT NOT NULL,
         cardholder TEXT NOT NULL,
         record_id  TEXT NOT NULL,
         body       BLOB NOT NULL
     );
     CREATE INDEX ledger_facts_card ON ledger_facts (card);
     CREATE TABLE decisions (
         id                INTEGER PRIMARY KEY AUTOINCREMENT,
         event_id          TEXT NOT NULL,
         authorization_id  TEXT NOT NULL,
         card              TEXT NOT NULL,
         cardholder        TEXT NOT NULL,
         amount            INTEGER NOT NULL,
         currency          TEXT NOT NULL,
         merchant_category TEXT NOT NULL,
         merchant_mcc      TEXT NOT NULL,
         merchant_country  TEXT NOT NULL,
         merchant_name     TEXT NOT NULL,
         approved          INTEGER NOT NULL,
         approved_amount   INTEGER NOT NULL,
         reason            TEXT NOT NULL,
         rule              TEXT,
         ruleset           TEXT NOT NULL,
         latency_us        INTEGER NOT NULL,
         decided_at        INTEGER NOT NULL,
         event_json        BLOB NOT NULL,
         spend_json        TEXT NOT NULL
     );
     CREATE INDEX decisions_decided_at ON decisions (decided_at);",
    // 2: shadow rules that matched each decision (JSON array of names; NULL: none).
    "ALTER TABLE decisions ADD COLUMN shadow_rules TEXT;",
    // 3: two-party approvals (see `crate::approvals`): keys, rules, requests,
    // append-only security history, events and their outbox, overrides, allowances.
    "CREATE TABLE api_keys (
         id         TEXT PRIMARY KEY,
         name       TEXT,
         role       TEXT NOT NULL,
         hash       TEXT NOT NULL UNIQUE,
         created    INTEGER NOT NULL,
         created_by TEXT NOT NULL,
         revoked_at INTEGER
     );
     CREATE TABLE approval_rules (
         id      TEXT PRIMARY KEY,
         action  TEXT NOT NULL,
         body    TEXT NOT NULL,
         active  INTEGER NOT NULL,
         created INTEGER NOT NULL
     );
     CREATE UNIQUE INDEX approval_rules_one_active ON approval_rules (action) WHERE active = 1;
     CREATE TABLE approval_requests (
         id             TEXT PRIMARY KEY,
         action         TEXT NOT NULL,
         params         TEXT NOT NULL,
         status         TEXT NOT NULL,
         requested_by   TEXT NOT NULL,
         requester_role TEXT NOT NULL,
         requester_name TEXT,
         rule_id        TEXT,
         rule_name      TEXT,
         reviewers      TEXT NOT NULL,
         reason         TEXT,
         created        INTEGER NOT NULL,
         expires_at     INTEGER NOT NULL,
         submitted_at   INTEGER,
         review         TEXT,
         result         TEXT,
         error          TEXT,
         transitions    TEXT NOT NULL DEFAULT '{}',
         dedupe         TEXT
     );
     CREATE INDEX approval_requests_status ON approval_requests (status, expires_at);
     CREATE INDEX approval_requests_dedupe ON approval_requests (dedupe);
     CREATE TABLE security_history (
         id        INTEGER PRIMARY KEY AUTOINCREMENT,
         type      TEXT NOT NULL,
         actor     TEXT NOT NULL,
         object_id TEXT NOT NULL,
         created   INTEGER NOT NULL,
         details   TEXT NOT NULL
     );
     CREATE TRIGGER security_history_no_update BEFORE UPDATE ON security_history
     BEGIN SELECT RAISE(ABORT, 'security_history is append-only'); END;
     CREATE TRIGGER security_history_no_delete BEFORE DELETE ON security_history
     BEGIN SELECT RAISE(ABORT, 'security_history is append-only'); END;
     CREATE TABLE events (
         id         TEXT PRIMARY KEY,
         type       TEXT NOT NULL,
         created    INTEGER NOT NULL,
         related_id TEXT NOT NULL,
         body       TEXT NOT NULL
     );
     CREATE TABLE outbox (
         id              INTEGER PRIMARY KEY AUTOINCREMENT,
         event_id        TEXT NOT NULL,
         endpoint        TEXT NOT NULL,
         attempts        INTEGER NOT NULL DEFAULT 0,
         next_attempt_ms INTEGER NOT NULL,
         delivered_ms    INTEGER,
         failed          INTEGER NOT NULL DEFAULT 0,
         last_error      TEXT
     );
     CREATE INDEX outbox_due ON outbox (next_attempt_ms) WHERE delivered_ms IS NULL AND failed = 0;
     CREATE TABLE control_overrides (
         scope   TEXT NOT NULL,
         id      TEXT NOT NULL,
         body    TEXT NOT NULL,
         updated INTEGER NOT NULL,
         PRIMARY KEY (scope, id)
     );
     CREATE TABLE allowances (
         id         TEXT PRIMARY KEY,
         card       TEXT NOT NULL,
         merchant   TEXT NOT NULL,
         amount     INTEGER NOT NULL,
         currency   TEXT NOT NULL,
         body       TEXT NOT NULL,
         created    INTEGER NOT NULL,
         expires_at INTEGER NOT NULL,
         used_at    INTEGER,
         used_by    TEXT
     );",
];

/// When an approval may be answered relative to its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After the batch holding its reserve committed.
    #[default]
    Sync,
    /// At once; the writer commits within milliseconds.
    Async,
}

/// Why the store failed. Open errors name the database file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {path}: {message}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// SQLite refused an operation on the file (unwritable, locked, not a database…).
    #[error("database {path}: {message}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// SQLite's message.
        message: String,
    },
    /// The file failed the integrity check.
    #[error("database {path} is corrupt: {detail}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// First line of `quick_check`.
        detail: String,
    },
    /// The file was written by a newer cardgate.
    #[error("database {path} has schema version {found}; this build knows up to {known}")]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its `user_version`.
        found: i64,
        /// [`MIGRATIONS`]`.len()`.
        known: i64,
    },
    /// A stored fact could not be decoded.
    #[error("database {path}: ledger fact #{seq} is unreadable: {message}")]
    BadFact {
        /// The database file.
        path: PathBuf,
        /// Its row.
        seq: i64,
        /// The decoder's message.
        message: String,
    },
    /// A batch could not be committed; nothing of it was written.
    #[error("commit failed: {0}")]
    Commit(String),
    /// The writer thread is gone (shutting down or crashed).
    #[error("the store writer has stopped")]
    WriterGone,
}

/// One row of the decision log: what was asked, what was answered, and what the
/// decision saw, so the backtest can replay it against another rule set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedDecision {
    /// Row id (ignored when writing).
    pub id: i64,
    /// The request event's id.
    pub event_id: String,
    /// `iauth_…`
    pub authorization_id: String,
    /// `ic_…`
    pub card: String,
    /// `ich_…`
    pub cardholder: String,
    /// Requested amount.
    pub amount: i64,
    /// Its currency.
    pub currency: String,
    /// Merchant category name.
    pub merchant_category: String,
    /// MCC.
    pub merchant_mcc: String,
    /// Merchant country.
    pub merchant_country: String,
    /// Merchant name.
    pub merchant_name: String,
    /// Approved?
    pub approved: bool,
    /// Amount approved (0 when declined).
    pub approved_amount: i64,
    /// Machine reason.
    pub reason: String,
    /// Control or rule behind the reason.
    pub rule: Option<String>,
    /// Rule set version.
    pub ruleset: String,
    /// Decision latency in microseconds.
    pub latency_us: i64,
    /// Unix seconds.
    pub decided_at: i64,
    /// The verified event body, byte for byte.
    pub event_json: Vec<u8>,
    /// Spend the decision saw (card and cardholder totals per interval).
    pub spend_json: String,
    /// Shadow rules that matched, as a JSON array of names; `None` when none did
    /// (or the rules were not reached).
    pub shadow_rules: Option<String>,
}

/// One queued write.
#[derive(Debug, Clone)]
pub enum Write {
    /// A ledger fact; a fact whose event id is stored already is skipped.
    Fact(Fact),
    /// A decision log row.
    Decision(Box<LoggedDecision>),
}

struct Job {
    writes: Vec<Write>,
    done: Option<oneshot::Sender<Result<(), String>>>,
}

/// The open store: a queue to the writer thread plus the file's path for readers.
pub struct Store {
    path: PathBuf,
    durability: Durability,
    tx: Option<mpsc::Sender<Job>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .finish()
    }
}

fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::Sqlite {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Opens the file read-write, checks it, migrates it and proves it writable.
fn open_checked(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let err = sqlite(path);
    let conn = Connection::open(path).map_err(&err)?;
    integrity(&conn, path)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(&err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Sqlite {
            path: path.to_path_buf(),
            message: format!("cannot switch to WAL mode (journal_mode is {mode})"),
        });
    }
    let sync = match durability {
        Durability::Sync => "FULL",
        Durability::Async => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000;"
    ))
    .map_err(&err)?;
    migrate(&conn, path)?;
    // SQLite silently opens a read-only file read-only; a write now turns that
    // into a start-up error instead of a failure on the first approval.
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('opened_at', ?1)",
        params![now().to_string()],
    )
    .map_err(&err)?;
    Ok(conn)
}

fn integrity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let first: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| corrupt(e.to_string()))?;
    if first != "ok" {
        return Err(corrupt(first));
    }
    Ok(())
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let err = sqlite(path);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(&err)?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let to = i + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {to}; COMMIT;"
        ))
        .map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            StoreError::Sqlite {
                path: path.to_path_buf(),
                message: format!("migration to schema version {to} failed: {e}"),
            }
        })?;
        tracing::info!(path = %path.display(), version = to, "store schema migrated");
    }
    Ok(())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Opens `<dir>/cardgate.db` read-write for the approvals service (its own
/// connection: approvals are low-volume and must not queue behind the ledger's
/// group-commit writer), checked and migrated like the store's.
pub fn open_for_approvals(dir: &Path) -> Result<(Connection, PathBuf), StoreError> {
    std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let path = dir.join(FILE_NAME);
    let conn = open_checked(&path, Durability::Sync)?;
    Ok((conn, path))
}

impl Store {
    /// Opens (creating if needed) `<dir>/cardgate.db` and starts the writer thread.
    pub fn open(dir: &Path, durability: Durability) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let path = dir.join(FILE_NAME);
        let conn = open_checked(&path, durability)?;
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_path = path.clone();
        let writer = std::thread::Builder::new()
            .name("cardgate-store".into())
            .spawn(move || writer_loop(conn, rx, &writer_path))
            .map_err(|e| StoreError::Sqlite {
                path: path.clone(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Store {
            path,
            durability,
            tx: Some(tx),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configured durability.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    fn send(
        &self,
        writes: Vec<Write>,
        done: Option<oneshot::Sender<Result<(), String>>>,
    ) -> Result<(), StoreError> {
        let sent = self
            .tx
            .as_ref()
            .map(|tx| tx.send(Job { writes, done }).is_ok());
        if sent == Some(true) {
            Ok(())
        } else {
            metrics::counter!(m::STORE_ERRORS, "op" => "enqueue").increment(1);
            Err(StoreError::WriterGone)
        }
    }

    /// Queues writes without waiting (async durability, decision log rows).
    pub fn enqueue(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.send(writes, None)
    }

    /// Queues writes and resolves once the batch holding them committed.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(writes, Some(done))?;
        match wait.await {
            Ok(r) => r.map_err(StoreError::Commit),
            Err(_) => Err(StoreError::WriterGone),
        }
    }

    /// [`Store::commit`] for threads outside the async runtime (CLI, tests). Must
    /// not be called from inside a runtime.
    pub fn commit_blocking(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(writes, Some(done))?;
        match wait.blocking_recv() {
            Ok(r) => r.map_err(StoreError::Commit),
            Err(_) => Err(StoreError::WriterGone),
        }
    }

    /// Every stored ledger fact, in commit order (to rebuild the ledger).
    pub fn facts(&self) -> Result<Vec<Fact>, StoreError> {
        read_facts(&self.path, None)
    }

    /// Decision log rows decided at or after `since` (Unix seconds; all when
    /// `None`), oldest first. For the backtest.
    pub fn decision_log(&self, since: Option<i64>) -> Result<Vec<LoggedDecision>, StoreError> {
        read_decisions(&self.path, since)
    }

    /// Stops the writer after it committed everything queued.
    pub fn close(&mut self) {
        self.tx = None;
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle
            && h.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "store writer thread panicked");
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

fn read_only(path: &Path) -> Result<Connection, StoreError> {
    if !path.exists() {
        return Err(StoreError::Sqlite {
            path: path.to_path_buf(),
            message: "no such file".into(),
        });
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite(path))?;
    integrity(&conn, path)?;
    Ok(conn)
}

/// Reads the ledger facts of the database at `path` without the writer (for
/// `cardgate ledger show`, which may run beside a live server), optionally only
/// those of one card's cardholder.
pub fn read_facts(path: &Path, cardholder: Option<&str>) -> Result<Vec<Fact>, StoreError> {
    let conn = read_only(path)?;
    let err = sqlite(path);
    let mut stmt = conn
        .prepare(
            "SELECT seq, body FROM ledger_facts WHERE ?1 IS NULL OR cardholder = ?1 ORDER BY seq",
        )
        .map_err(&err)?;
    let rows = stmt
        .query_map(params![cardholder], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
        })
        .map_err(&err)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, body) = row.map_err(&err)?;
        let fact = serde_json::from_slice(&body).map_err(|e| StoreError::BadFact {
            path: path.to_path_buf(),
            seq,
            message: e.to_string(),
        })?;
        out.push(fact);
    }
    Ok(out)
}

/// The cardholder of `card`, from the stored facts.
pub fn cardholder_of(path: &Path, card: &str) -> Result<Option<String>, StoreError> {
    let conn = read_only(path)?;
    conn.query_row(
        "SELECT cardholder FROM ledger_facts WHERE card = ?1 LIMIT 1",
        params![card],
        |r| r.get(0),
    )
    .optional()
    .map_err(sqlite(path))
}

/// [`Store::decision_log`] of the database at `path`, read-only without the writer
/// (for `cardgate backtest`, which may run beside a live server).
pub fn read_decision_log(
    path: &Path,
    since: Option<i64>,
) -> Result<Vec<LoggedDecision>, StoreError> {
    read_decisions(path, since)
}

fn read_decisions(path: &Path, since: Option<i64>) -> Result<Vec<LoggedDecision>, StoreError> {
    let conn = read_only(path)?;
    let err = sqlite(path);
    let mut stmt = conn
        .prepare(
            "SELECT id, event_id, authorization_id, card, cardholder, amount, currency,
                    merchant_category, merchant_mcc, merchant_country, merchant_name,
                    approved, approved_amount, reason, rule, ruleset, latency_us,
                    decided_at, event_json, spend_json, shadow_rules
             FROM decisions WHERE decided_at >= ?1 ORDER BY id",
        )
        .map_err(&err)?;
    let rows = stmt
        .query_map(params![since.unwrap_or(i64::MIN)], |r| {
            Ok(LoggedDecision {
                id: r.get(0)?,
                event_id: r.get(1)?,
                authorization_id: r.get(2)?,
                card: r.get(3)?,
                cardholder: r.get(4)?,
                amount: r.get(5)?,
                currency: r.get(6)?,
                merchant_category: r.get(7)?,
                merchant_mcc: r.get(8)?,
                merchant_country: r.get(9)?,
                merchant_name: r.get(10)?,
                approved: r.get(11)?,
                approved_amount: r.get(12)?,
                reason: r.get(13)?,
                rule: r.get(14)?,
                ruleset: r.get(15)?,
                latency_us: r.get(16)?,
                decided_at: r.get(17)?,
                event_json: r.get(18)?,
                spend_json: r.get(19)?,
                shadow_rules: r.get(20)?,
            })
        })
        .map_err(&err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(&err)
}

// === the writer thread ===

fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Job>, path: &Path) {
    // Ends when every sender is gone (Store dropped) and the queue is drained.
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        let mut writes = batch[0].writes.len();
        while writes < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => {
                    writes += job.writes.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let start = Instant::now();
        let result = commit_batch(&mut conn, &batch).map_err(|e| e.to_string());
        metrics::histogram!(m::STORE_COMMIT_DURATION).record(start.elapsed().as_secs_f64());
        metrics::histogram!(m::STORE_COMMIT_BATCH).record(writes as f64);
        if let Err(e) = &result {
            metrics::counter!(m::STORE_ERRORS, "op" => "commit").increment(1);
            tracing::error!(path = %path.display(), writes, "store commit failed: {e}");
        }
        for job in batch {
            if let Some(done) = job.done {
                // The waiter may have given up (deadline): nothing to tell then.
                let _ = done.send(result.clone());
            }
        }
    }
}

fn commit_batch(conn: &mut Connection, batch: &[Job]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut fact_stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO ledger_facts (event_id, kind, card, cardholder, record_id, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut decision_stmt = tx.prepare_cached(
            "INSERT INTO decisions (event_id, authorization_id, card, cardholder, amount, currency,
                 merchant_category, merchant_mcc, merchant_country, merchant_name, approved,
                 approved_amount, reason, rule, ruleset, latency_us, decided_at, event_json,
                 spend_json, shadow_rules)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, ?20)",
        )?;
        for write in batch.iter().flat_map(|j| &j.writes) {
            match write {
                Write::Fact(f) => {
                    let body = serde_json::to_vec(f)
                        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                    let kind = match f {
                        Fact::Reserve { .. } => "reserve",
                        Fact::Authorization { .. } => "authorization",
                        Fact::Transaction { .. } => "transaction",
                    };
                    fact_stmt.execute(params![
                        f.event_id(),
                        kind,
                        f.card(),
                        f.cardholder(),
                        f.record_id(),
                        body
                    ])?;
                }
                Write::Decision(d) => {
                    decision_stmt.execute(params![
                        d.event_id,
                        d.authorization_id,
                        d.card,
                        d.cardholder,
                        d.amount,
                        d.currency,
                        d.merchant_category,
                        d.merchant_mcc,
                        d.merchant_country,
                        d.merchant_name,
                        d.approved,
                        d.approved_amount,
                        d.reason,
                        d.rule,
                        d.ruleset,
                        d.latency_us,
                        d.decided_at,
                        d.event_json,
                        d.spend_json,
                        d.shadow_rules,
                    ])?;
                }
            }
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests;

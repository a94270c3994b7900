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
mod background;
pub mod decisions;
mod gate;
mod integrity;
mod minutes;
mod parts;
pub mod postgres;
mod read;
pub mod rulesets;
mod schema;
mod writer;

use std::path::{Path, PathBuf};

pub use crate::config::Durability;
pub use crate::journal::{LoggedDecision, Write};
pub use postgres::copy::{
    CardholderTotals, Copied, CopyError, Counted, CurrencyTotals, LedgerTotals, copy,
};
pub use postgres::sync as replicas;
pub use read::{
    DecisionFilter, cardholder_of, count_decisions, for_each_decision, read_decision_blobs,
    read_decision_log, read_facts, rebuild_signals,
};
pub use schema::{MIGRATIONS, open_for_approvals};
pub use writer::Store;

// The PostgreSQL backend as `app` and `cli` use it. Named here, so that outside
// `store/` no path can be mistaken for (or turn into) a use of the driver crate.
pub use postgres::{
    Database, Options as DatabaseOptions, PgDecisionLog, PgHolds, PgJournal, PostgresError,
    cardholder_of as shared_cardholder_of, count_open_holds,
    open_approvals_tool as open_shared_approvals_tool, read_decisions as read_shared_decisions,
    read_facts as read_shared_facts,
};
pub use postgres::{
    count_decisions as count_shared_decisions, for_each_decision as for_each_shared_decision,
    read_decision_blobs as read_shared_decision_blobs,
};

/// File name inside the data directory.
pub const FILE_NAME: &str = "cardgate.db";

/// Most writes committed in one transaction: bounds the latency one batch adds to
/// the requests queued behind it.
pub const MAX_BATCH: usize = 1024;

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

fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |e| StoreError::Sqlite {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod minutes_tests;
#[cfg(test)]
mod schema_tests;
#[cfg(test)]
mod tests;

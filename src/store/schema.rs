//! The schema: numbered migrations, and opening a file read-write only after it
//! passed the integrity check, was migrated and proved writable.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use super::{Durability, FILE_NAME, StoreError, sqlite};

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
    // 4: exact replay (issue 16). `format` says how `seen` is encoded (0: a row
    // written before exact replay, replayed approximately); `seen` is what the
    // decision saw beyond its event body (`journal::seen`); the bodies it names by
    // hash (program controls, overrides) are stored once each.
    "ALTER TABLE decisions ADD COLUMN format INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE decisions ADD COLUMN seen BLOB;
     CREATE TABLE decision_blobs (hash INTEGER PRIMARY KEY, body BLOB NOT NULL);",
    // 5: published authorization rule sets (`crate::rules::published`); the
    // newest row is the live set, the `--rules` file only seeds an empty table.
    "CREATE TABLE rulesets (
         seq          INTEGER PRIMARY KEY AUTOINCREMENT,
         version      TEXT NOT NULL,
         source       TEXT NOT NULL,
         published_at INTEGER NOT NULL,
         actor        TEXT NOT NULL
     );",
    // 6: API key expiry (Unix seconds; NULL: never, which keys created before
    // this migration keep).
    "ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;",
    // 7: an approval's hold kept beside its decision-log row (issue 19): the row
    // already names everything the reserve fact repeated, so a hold costs two
    // integers in a rowid table appended in order, not a second row with a JSON
    // body and two indexes. `ledger_facts` keeps lifecycle facts and the reserves
    // written before this version.
    "CREATE TABLE ledger_reserves (
         decision_id INTEGER PRIMARY KEY,
         amount      INTEGER NOT NULL,
         window_at   INTEGER NOT NULL
     );",
    // 8: a request body's card object stored once per distinct content (issue
    // 19, `store::parts`): `event_json` holds the body without it, `card_at` where
    // it was cut and `card_part` the `decision_parts` row that holds it; both NULL
    // for a body stored whole (every row written before this version). The view
    // gives every body whole, for a person with the `sqlite3` shell.
    "ALTER TABLE decisions ADD COLUMN card_at INTEGER;
     ALTER TABLE decisions ADD COLUMN card_part INTEGER;
     CREATE TABLE decision_parts (id INTEGER PRIMARY KEY, body BLOB NOT NULL);
     CREATE VIEW decision_bodies (id, event_json) AS
         SELECT d.id, CASE WHEN d.card_part IS NULL THEN d.event_json
             ELSE CAST(substr(d.event_json, 1, d.card_at) || p.body
                 || substr(d.event_json, d.card_at + 1) AS BLOB) END
         FROM decisions d LEFT JOIN decision_parts p ON p.id = d.card_part;",
    // 9: no counter page per row (issue 19). `decisions` and `ledger_facts` were
    // AUTOINCREMENT: every insert also rewrote their `sqlite_sequence` row, one
    // more WAL frame per commit (~8k instructions per unbatched decision,
    // BENCHMARKS.md). Both are append-only (nothing deletes from them), so a new
    // id is max + 1 either way. AUTOINCREMENT changes no stored page, so the
    // declaration is edited in place, SQLite's documented procedure for such a
    // change ("Making Other Kinds Of Table Schema Changes"), instead of copying
    // every row of a large file; `migrate` moves the schema cookie on, which the
    // procedure requires and which SQLite does not do for an edit of
    // `sqlite_schema`. A file that fails `quick_check` afterwards is refused at
    // the next open like any other.
    "PRAGMA writable_schema = ON;
     UPDATE sqlite_schema
         SET sql = replace(sql, 'INTEGER PRIMARY KEY AUTOINCREMENT', 'INTEGER PRIMARY KEY')
         WHERE type = 'table' AND name IN ('decisions', 'ledger_facts');
     PRAGMA writable_schema = OFF;
     DELETE FROM sqlite_sequence WHERE name IN ('decisions', 'ledger_facts');",
    // 10: an approval's hold in its own decision row (issue 19): two columns,
    // NULL for a row that holds nothing, instead of a row in `ledger_reserves`,
    // whose b-tree was one more page through the WAL per commit (~8k
    // instructions per unbatched decision). The rebuild scans `decisions` for
    // them; it read a `decisions` row per hold through the join already.
    // `ledger_reserves` keeps the holds written before this version.
    "ALTER TABLE decisions ADD COLUMN hold_amount INTEGER;
     ALTER TABLE decisions ADD COLUMN hold_window_at INTEGER;",
    // 11: the decision log found by time through `decision_minutes`, not an
    // index on `decided_at` (issue 19). Every commit appended to that index's
    // last leaf: one more page through the WAL per commit (~7k instructions per
    // unbatched decision in `sync`, ~4k in `async`). A decision's id follows the
    // order of commits, and its time almost does, so a row per minute naming
    // the first decision of that minute bounds a search by time to a range of
    // ids, written once a minute (`writer`), not per decision. Times are Unix
    // seconds; the minute is their floor division by 60 (SQLite's `/` truncates
    // toward zero, so negative times are floored by hand). Built from the index,
    // before it is dropped.
    "CREATE TABLE decision_minutes (minute INTEGER PRIMARY KEY, first_id INTEGER NOT NULL);
     INSERT INTO decision_minutes (minute, first_id)
         SELECT (decided_at - ((decided_at % 60) + 60) % 60) / 60, MIN(id)
         FROM decisions GROUP BY 1;
     DROP INDEX decisions_decided_at;",
];

/// Whether a migration edits `sqlite_schema` itself (see migration 9): its
/// transaction must move the schema cookie on, so every connection reads the
/// schema again.
fn edits_schema_table(sql: &str) -> bool {
    sql.contains("writable_schema")
}

/// The first schema version with the exact-replay columns (`format`, `seen`) and
/// `decision_blobs`; readers of older files (opened read-only, never migrated)
/// see every row as approximate.
pub(super) const EXACT_REPLAY_VERSION: i64 = 4;

/// The first schema version with `ledger_reserves`; readers of older files find
/// every reserve in `ledger_facts`.
pub(super) const RESERVES_VERSION: i64 = 7;

/// The first schema version with `decision_parts`; readers of older files find
/// every body whole in `event_json`.
pub(super) const PARTS_VERSION: i64 = 8;

/// The first schema version whose decision rows keep their own holds
/// (`hold_amount`, `hold_window_at`); readers of older files find every hold in
/// `ledger_reserves` (or, before [`RESERVES_VERSION`], `ledger_facts`).
pub(super) const HOLD_COLUMNS_VERSION: i64 = 10;

/// The first schema version with `decision_minutes` and without the
/// `decided_at` index; readers of older files search by time through that index.
pub(super) const MINUTES_VERSION: i64 = 11;

/// The columns that give a decision row's request body back (`parts::join`): the
/// stored bytes, the cut's offset and the part cut out.
pub(super) const BODY_COLUMNS: &str =
    "event_json, card_at, (SELECT body FROM decision_parts WHERE id = card_part)";

/// `synchronous` for `durability`, and how long to wait for another connection's lock.
pub(super) fn set_durability(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    let sync = match durability {
        Durability::Sync => "FULL",
        Durability::Async => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA busy_timeout = 5000;"
    ))
}

/// Opens the file read-write, checks it, migrates it and proves it writable.
pub(super) fn open_checked(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let err = sqlite(path);
    let conn = Connection::open(path).map_err(&err)?;
    super::integrity::check(&conn, path)?;
    // A new file gets 4 KiB pages (an existing one keeps its size: SQLite applies
    // this only before the first write). WAL appends every page a commit touched
    // with two `pwrite`s each, and under load a batch's pages are mostly the event
    // bodies it appends: at 1 KiB that was ~12 `pwrite`s and ~4 `pread`s (the
    // checkpoint) per decision, 3 and 1 at 4 KiB (`strace -c` under wrk), which
    // outweighs the bigger pages an unbatched commit checksums (BENCHMARKS.md).
    conn.execute_batch("PRAGMA page_size = 4096;")
        .map_err(&err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(&err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Sqlite {
            path: path.to_path_buf(),
            message: format!("cannot switch to WAL mode (journal_mode is {mode})"),
        });
    }
    set_durability(&conn, durability).map_err(&err)?;
    migrate(&conn, path)?;
    // SQLite silently opens a read-only file read-only; a write now turns that
    // into a start-up error instead of a failure on the first approval.
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('opened_at', ?1)",
        // Diagnostic only: when this file was last opened for writing.
        params![crate::clock::Clock::system().now().to_string()],
    )
    .map_err(&err)?;
    Ok(conn)
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let err = sqlite(path);
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(&err)?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if version > known {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: version,
            known,
        });
    }
    // `user_version` is signed; only a hand edit makes it negative, and no
    // migration starts from there.
    let applied = usize::try_from(version).map_err(|_| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("negative schema version {version}"),
    })?;
    if applied > 0 && applied < MIGRATIONS.len() {
        // A migration may rebuild a table or an index of every row (11 reads the
        // whole decision log: about half a second per million rows), so a
        // large file's start is not silent while it runs.
        tracing::info!(
            path = %path.display(),
            from = applied,
            to = MIGRATIONS.len(),
            "store schema migrating; a large file may take a while"
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        let to = i + 1;
        apply(conn, sql, to).map_err(|e| {
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

/// Migration `sql` to version `to`, in one transaction.
pub(super) fn apply(conn: &Connection, sql: &str, to: usize) -> rusqlite::Result<()> {
    let edits_schema = edits_schema_table(sql);
    conn.execute_batch(&format!("BEGIN IMMEDIATE; {sql};"))?;
    if edits_schema {
        let cookie: i64 = conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
        conn.execute_batch(&format!("PRAGMA schema_version = {};", cookie + 1))?;
    }
    conn.execute_batch(&format!("PRAGMA user_version = {to}; COMMIT;"))?;
    if edits_schema {
        // This connection parsed the schema before the edit; read it again now
        // rather than on its next statement's cookie check.
        conn.execute_batch("PRAGMA writable_schema = RESET;")?;
    }
    Ok(())
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

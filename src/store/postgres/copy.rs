//! `cardgate store copy`: moves an installation's state from its SQLite data dir
//! into an empty PostgreSQL database, verified.
//!
//! Copies, in one PostgreSQL transaction, every approvals table (API keys,
//! approval rules and requests, the security history, events and their outbox,
//! control overrides, allowances) and the published rule sets, in the source's
//! row order (so "newest first" lists keep their order) and with the ids cursors
//! and references use (history, outbox and rule-set numbers kept, their sequences
//! moved past them). A target that already holds any of these rows is refused:
//! a copy never merges. After the commit every table is counted on both sides and
//! the counts are returned for the caller to print and compare.
//!
//! Not yet copied: the ledger's facts and the decision log, whose PostgreSQL
//! tables are another change's (issue 14).

use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use tokio_postgres::types::ToSql;

use super::{Database, PostgresError, error_text};

/// How a column crosses over (SQLite's INTEGER flags become BOOLEAN).
#[derive(Clone, Copy)]
enum Kind {
    Text,
    Int,
    Bool,
}

use Kind::{Bool, Int, Text};

/// A table to copy: its columns, and the identity column whose values are kept.
struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Kind)],
    identity: Option<&'static str>,
}

const TABLES: &[Table] = &[
    Table {
        name: "api_keys",
        columns: &[
            ("id", Text),
            ("name", Text),
            ("role", Text),
            ("hash", Text),
            ("created", Int),
            ("created_by", Text),
            ("revoked_at", Int),
        ],
        identity: None,
    },
    Table {
        name: "approval_rules",
        columns: &[
            ("id", Text),
            ("action", Text),
            ("body", Text),
            ("active", Bool),
            ("created", Int),
        ],
        identity: None,
    },
    Table {
        name: "approval_requests",
        columns: &[
            ("id", Text),
            ("action", Text),
            ("params", Text),
            ("status", Text),
            ("requested_by", Text),
            ("requester_role", Text),
            ("requester_name", Text),
            ("rule_id", Text),
            ("rule_name", Text),
            ("reviewers", Text),
            ("reason", Text),
            ("created", Int),
            ("expires_at", Int),
            ("submitted_at", Int),
            ("review", Text),
            ("result", Text),
            ("error", Text),
            ("transitions", Text),
            ("dedupe", Text),
        ],
        identity: None,
    },
    Table {
        name: "security_history",
        columns: &[
            ("id", Int),
            ("type", Text),
            ("actor", Text),
            ("object_id", Text),
            ("created", Int),
            ("details", Text),
        ],
        identity: Some("id"),
    },
    Table {
        name: "events",
        columns: &[
            ("id", Text),
            ("type", Text),
            ("created", Int),
            ("related_id", Text),
            ("body", Text),
        ],
        identity: None,
    },
    Table {
        name: "outbox",
        columns: &[
            ("id", Int),
            ("event_id", Text),
            ("endpoint", Text),
            ("attempts", Int),
            ("next_attempt_ms", Int),
            ("delivered_ms", Int),
            ("failed", Bool),
            ("last_error", Text),
        ],
        identity: Some("id"),
    },
    Table {
        name: "control_overrides",
        columns: &[
            ("scope", Text),
            ("id", Text),
            ("body", Text),
            ("updated", Int),
        ],
        identity: None,
    },
    Table {
        name: "allowances",
        columns: &[
            ("id", Text),
            ("card", Text),
            ("merchant", Text),
            ("amount", Int),
            ("currency", Text),
            ("body", Text),
            ("created", Int),
            ("expires_at", Int),
            ("used_at", Int),
            ("used_by", Text),
        ],
        identity: None,
    },
    Table {
        name: "rulesets",
        columns: &[
            ("seq", Int),
            ("version", Text),
            ("source", Text),
            ("published_at", Int),
            ("actor", Text),
        ],
        identity: Some("seq"),
    },
];

/// One table's rows on each side after a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// The table.
    pub table: &'static str,
    /// Rows in the SQLite source.
    pub source: i64,
    /// Rows in the PostgreSQL target after the copy.
    pub target: i64,
}

/// Why a copy did not happen (nothing was written) or did not verify.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The SQLite source cannot be read.
    #[error("source {path}: {message}")]
    Source {
        /// Its file.
        path: String,
        /// What failed.
        message: String,
    },
    /// The target cannot be used, or the copy failed (rolled back).
    #[error("{0}")]
    Target(#[from] PostgresError),
    /// The target already holds state.
    #[error("target {db} already holds {rows} row(s) in {table}; copy into an empty database")]
    NotEmpty {
        /// The database, without password.
        db: String,
        /// The first non-empty table.
        table: &'static str,
        /// Its rows.
        rows: i64,
    },
}

/// A value read from SQLite, ready to bind.
type Param = Box<dyn ToSql + Sync + Send>;

fn param(v: Value, kind: Kind) -> Result<Param, String> {
    Ok(match (kind, v) {
        (Kind::Text, Value::Null) => Box::new(None::<String>),
        (Kind::Int, Value::Null) => Box::new(None::<i64>),
        (Kind::Bool, Value::Null) => Box::new(None::<bool>),
        (Kind::Text, Value::Text(s)) => Box::new(Some(s)),
        (Kind::Text, Value::Blob(b)) => {
            Box::new(Some(String::from_utf8(b).map_err(|e| e.to_string())?))
        }
        (Kind::Int, Value::Integer(i)) => Box::new(Some(i)),
        (Kind::Bool, Value::Integer(i)) => Box::new(Some(i != 0)),
        (_, other) => return Err(format!("unexpected value {other:?}")),
    })
}

/// Reads `table` from the source: every row, in rowid order. A table the source
/// does not have (an older schema) has no rows.
fn read(conn: &Connection, t: &Table) -> Result<Vec<Vec<Param>>, String> {
    let exists: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [t.name],
            |r| r.get(0),
        )
        .map_err(|e| e.to_string())?;
    if !exists {
        return Ok(Vec::new());
    }
    let columns: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
    let sql = format!(
        "SELECT {} FROM {} ORDER BY rowid",
        columns.join(", "),
        t.name
    );
    let mut st = conn.prepare(&sql).map_err(|e| e.to_string())?;
    let mut rows = st.query([]).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(|e| e.to_string())? {
        let mut values = Vec::with_capacity(t.columns.len());
        for (i, (column, kind)) in t.columns.iter().enumerate() {
            let v: Value = row.get(i).map_err(|e| e.to_string())?;
            values.push(param(v, *kind).map_err(|e| format!("{}.{column}: {e}", t.name))?);
        }
        out.push(values);
    }
    Ok(out)
}

/// Copies the state in `<from>/cardgate.db` into the (empty) database at `url`,
/// then counts both sides.
///
/// # Errors
/// The source cannot be read, the target cannot be used or is not empty, or the
/// copy fails (then nothing of it is committed).
pub async fn copy(from: &Path, url: &str) -> Result<Vec<Counted>, CopyError> {
    let path = from.join(crate::store::FILE_NAME);
    let source_error = |message: String| CopyError::Source {
        path: path.display().to_string(),
        message,
    };
    if !path.is_file() {
        return Err(source_error("no such file".into()));
    }
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| source_error(e.to_string()))?;
    let mut source = Vec::new();
    for t in TABLES {
        source.push(read(&conn, t).map_err(&source_error)?);
    }
    drop(conn);

    let db = Database::connect(url).await?;
    let fail = |e: tokio_postgres::Error| db.error(error_text(&e));
    let mut client = db.client().await.map_err(|m| db.error(m))?;
    let tx = client.transaction().await.map_err(fail)?;
    for t in TABLES {
        // Locked before counting, so nothing starts writing between the check
        // and the copy (a replica started too early waits, then finds the rows).
        tx.batch_execute(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", t.name))
            .await
            .map_err(fail)?;
        let rows: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {}", t.name), &[])
            .await
            .map_err(fail)?
            .get(0);
        if rows > 0 {
            return Err(CopyError::NotEmpty {
                db: db.name().to_string(),
                table: t.name,
                rows,
            });
        }
    }
    for (t, rows) in TABLES.iter().zip(&source) {
        let columns: Vec<&str> = t.columns.iter().map(|(c, _)| *c).collect();
        let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
        let overriding = if t.identity.is_some() {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let sql = format!(
            "INSERT INTO {} ({}){overriding} VALUES ({})",
            t.name,
            columns.join(", "),
            placeholders.join(", ")
        );
        let statement = tx.prepare(&sql).await.map_err(fail)?;
        for row in rows {
            let params: Vec<&(dyn ToSql + Sync)> =
                row.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
            tx.execute(&statement, &params).await.map_err(fail)?;
        }
        if let Some(id) = t.identity {
            // New rows continue after the copied ones.
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{0}', '{id}'),
                                   COALESCE((SELECT max({id}) FROM {0}), 0) + 1, false)",
                    t.name
                ),
                &[],
            )
            .await
            .map_err(fail)?;
        }
    }
    tx.commit().await.map_err(fail)?;

    let mut counted = Vec::new();
    for (t, rows) in TABLES.iter().zip(&source) {
        let target: i64 = client
            .query_one(&format!("SELECT count(*) FROM {}", t.name), &[])
            .await
            .map_err(fail)?
            .get(0);
        counted.push(Counted {
            table: t.name,
            source: i64::try_from(rows.len()).unwrap_or(i64::MAX),
            target,
        });
    }
    Ok(counted)
}

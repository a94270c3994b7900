//! `cardgate store copy`: moves an installation's state from its SQLite data dir
//! into an empty PostgreSQL database, verified.
//!
//! Copies, in one PostgreSQL transaction, every approvals table (API keys,
//! approval rules and requests, the security history, events and their outbox,
//! control overrides, allowances) and the published rule sets, in the source's
//! row order (so "newest first" lists keep their order) and with the ids cursors
//! and references use (history, outbox and rule-set numbers kept, their sequences
//! moved past them); then the ledger's facts, the decision log (its ids kept, so
//! `dec_…` links still resolve) and the bodies it names by hash. A target that
//! already holds any of these rows is refused: a copy never merges.
//!
//! **Ledger.** Facts are read through the store's reader (`store::read_facts`)
//! and applied in arrival order through `cardgate_apply`, the function a
//! replica's lifecycle events go through (a thousand per statement), so the database derives its per-authorization records
//! (`ledger_records`) itself. Each approved request's answer is remembered
//! (`ledger_requests`) from its hold, so a request Stripe delivers again after the
//! move holds once. Declined answers were never stored by SQLite: a redelivered
//! decline is decided again, as it would have been there.
//!
//! **Verification.** After the commit every table is counted on both sides, and
//! the ledger totals are computed on each side independently: on the source by
//! rebuilding the in-memory ledger from its facts (what `serve` does at start),
//! on the target by SQL over the records the database derived. The caller prints
//! and compares them.
//!
//! **Progress.** Facts and decision rows report `done / total` on stderr while
//! they copy; decision rows stream from SQLite in batches (memory stays bounded
//! whatever the log's size).

use std::io::Write as _;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use tokio_postgres::types::ToSql;

use super::holds::FactColumns;
use super::{Database, PostgresError, error_text};
use crate::journal::LoggedDecision;
use crate::ledger::Fact;
use crate::store::DecisionFilter;

mod totals;
pub use totals::{CardholderTotals, CurrencyTotals, LedgerTotals};
use totals::{source_totals, target_totals};

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

/// Tables the ledger and the decision log fill on the target: a copy refuses a
/// target where any holds a row.
const LEDGER_TABLES: &[&str] = &[
    "ledger_facts",
    "ledger_records",
    "ledger_windows",
    "ledger_requests",
    "ledger_cardholders",
    "decisions",
    "decision_blobs",
];

/// Decision rows per insert (and per batch handed over from the SQLite reader).
const DECISION_BATCH: usize = 500;

/// How often progress is printed at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What a copy verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Rows per table, both sides.
    pub counted: Vec<Counted>,
    /// The SQLite ledger rebuilt in memory from its facts.
    pub source: LedgerTotals,
    /// The PostgreSQL ledger, as its records say.
    pub target: LedgerTotals,
    /// Stored facts the ledger refuses (edited by hand): not copied, not counted.
    pub skipped_facts: Vec<String>,
}

/// Progress of one table on stderr: `done / total`, at most once a second and
/// once at the end.
struct Progress {
    table: &'static str,
    total: u64,
    done: u64,
    last: Instant,
}

impl Progress {
    fn new(table: &'static str, total: u64) -> Self {
        Progress {
            table,
            total,
            done: 0,
            last: Instant::now(),
        }
    }

    fn add(&mut self, n: usize) {
        self.done += u64::try_from(n).unwrap_or(0);
        if self.last.elapsed() >= PROGRESS_EVERY {
            self.last = Instant::now();
            self.print();
        }
    }

    fn print(&self) {
        let _ = writeln!(
            std::io::stderr(),
            "copying {}: {} / {}",
            self.table,
            self.done,
            self.total
        );
    }
}

/// Copies the state in `<from>/cardgate.db` into the (empty) database at `url`,
/// then counts both sides and computes the ledger totals of each.
///
/// # Errors
/// The source cannot be read, the target cannot be used or is not empty, or the
/// copy fails (then nothing of it is committed).
pub async fn copy(from: &Path, url: &str) -> Result<Copied, CopyError> {
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
    let facts = crate::store::read_facts(&path, None).map_err(|e| source_error(e.to_string()))?;
    let (facts, skipped_facts): (Vec<Fact>, Vec<Fact>) =
        facts.into_iter().partition(|f| f.validate().is_ok());
    let skipped_facts = skipped_facts
        .iter()
        .map(|f| f.event_id().to_string())
        .collect();
    let decision_total = crate::store::count_decisions(&path, &DecisionFilter::default())
        .map_err(|e| source_error(e.to_string()))?;
    let blobs =
        crate::store::read_decision_blobs(&path).map_err(|e| source_error(e.to_string()))?;

    let db = Database::connect(url).await?;
    let fail = |e: tokio_postgres::Error| db.error(error_text(&e));
    let mut client = db.client().await.map_err(|m| db.error(m))?;
    let tx = client.transaction().await.map_err(fail)?;
    if let Some((table, rows)) = first_non_empty(&tx).await.map_err(fail)? {
        return Err(CopyError::NotEmpty {
            db: db.name().to_string(),
            table,
            rows,
        });
    }
    for (t, rows) in TABLES.iter().zip(&source) {
        copy_table(&tx, t, rows).await.map_err(fail)?;
    }
    copy_facts(&tx, &facts).await.map_err(fail)?;
    copy_decisions(&tx, &path, decision_total)
        .await
        .map_err(|e| match e {
            Streamed::Target(e) => fail(e),
            Streamed::Source(m) => db.error(format!("reading {}: {m}", path.display())),
        })?;
    let (hashes, bodies): (Vec<i64>, Vec<&[u8]>) =
        blobs.iter().map(|(h, b)| (*h, b.as_slice())).unzip();
    tx.execute(
        "INSERT INTO decision_blobs (hash, body)
         SELECT * FROM unnest($1::bigint[], $2::bytea[])",
        &[&hashes, &bodies],
    )
    .await
    .map_err(fail)?;
    tx.commit().await.map_err(fail)?;

    let mut counted = Vec::new();
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let sources = TABLES
        .iter()
        .zip(&source)
        .map(|(t, rows)| (t.name, count(rows.len())))
        .chain([
            ("ledger_facts", count(facts.len())),
            (
                "decisions",
                i64::try_from(decision_total).unwrap_or(i64::MAX),
            ),
            ("decision_blobs", count(blobs.len())),
        ]);
    for (table, source) in sources {
        let target: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .map_err(fail)?
            .get(0);
        counted.push(Counted {
            table,
            source,
            target,
        });
    }
    let target = target_totals(&client).await.map_err(fail)?;
    Ok(Copied {
        counted,
        source: source_totals(&facts),
        target,
        skipped_facts,
    })
}

/// Locks every table a copy fills and answers the first that holds rows. Locked
/// before counting, so nothing starts writing between the check and the copy (a
/// replica started too early waits, then finds the rows).
async fn first_non_empty(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<Option<(&'static str, i64)>, tokio_postgres::Error> {
    let names = TABLES
        .iter()
        .map(|t| t.name)
        .chain(LEDGER_TABLES.iter().copied());
    for name in names {
        tx.batch_execute(&format!("LOCK TABLE {name} IN EXCLUSIVE MODE"))
            .await?;
        let rows: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {name}"), &[])
            .await?
            .try_get(0)?;
        if rows > 0 {
            return Ok(Some((name, rows)));
        }
    }
    Ok(None)
}

/// Inserts one approvals or rule-set table's rows, ids kept.
async fn copy_table(
    tx: &tokio_postgres::Transaction<'_>,
    t: &Table,
    rows: &[Vec<Param>],
) -> Result<(), tokio_postgres::Error> {
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
    let statement = tx.prepare(&sql).await?;
    for row in rows {
        let params: Vec<&(dyn ToSql + Sync)> =
            row.iter().map(|p| &**p as &(dyn ToSql + Sync)).collect();
        tx.execute(&statement, &params).await?;
    }
    if let Some(id) = t.identity {
        move_sequence(tx, t.name, id).await?;
    }
    Ok(())
}

/// Moves `table`'s identity sequence past the copied ids: new rows continue after them.
async fn move_sequence(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    id: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        &format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{id}'),
                           COALESCE((SELECT max({id}) FROM {table}), 0) + 1, false)"
        ),
        &[],
    )
    .await
    .map(drop)
}

/// Facts per `cardgate_apply` batch: one round trip each.
const FACT_BATCH: usize = 1000;

/// Applies the facts in arrival order through `cardgate_apply` (the database
/// derives each authorization's record), [`FACT_BATCH`] per statement, then
/// remembers each approved request's answer from its hold.
async fn copy_facts(
    tx: &tokio_postgres::Transaction<'_>,
    facts: &[Fact],
) -> Result<(), tokio_postgres::Error> {
    // `ORDER BY n` keeps arrival order: PostgreSQL calls a volatile function of
    // the select list after sorting, row by row (facts of one record depend on
    // the order they were applied in: `seq`).
    let apply = tx
        .prepare(
            "SELECT count(*) FROM (
                 SELECT cardgate_apply(e, k, ch, rid, card, created, cur, cat, mcc, cn, cm,
                                       amt, ec, ap, st, ar, txn, au)
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                             $6::bigint[], $7::text[], $8::text[], $9::text[], $10::int[],
                             $11::int[], $12::bigint[], $13::bigint[], $14::bool[],
                             $15::text[], $16::int[], $17::text[], $18::text[])
                      WITH ORDINALITY AS f(e, k, ch, rid, card, created, cur, cat, mcc, cn,
                                           cm, amt, ec, ap, st, ar, txn, au, n)
                 ORDER BY n) applied",
        )
        .await?;
    let mut progress = Progress::new("ledger_facts", u64::try_from(facts.len()).unwrap_or(0));
    for chunk in facts.chunks(FACT_BATCH) {
        let rows: Vec<FactColumns<'_>> = chunk.iter().map(FactColumns::of).collect();
        macro_rules! column {
            ($field:ident) => {
                rows.iter().map(|r| &r.$field).collect::<Vec<_>>()
            };
        }
        tx.query_one(
            &apply,
            &[
                &column!(event_id),
                &column!(kind),
                &column!(cardholder),
                &column!(record),
                &column!(card),
                &column!(created),
                &column!(currency),
                &column!(category),
                &column!(mcc),
                &column!(cat_name),
                &column!(cat_mcc),
                &column!(amount),
                &column!(event_created),
                &column!(approved),
                &column!(status),
                &column!(approved_requests),
                &column!(txn_id),
                &column!(authorization),
            ],
        )
        .await?;
        progress.add(chunk.len());
    }
    progress.print();
    // The answer a first delivery got, as `cardgate_reserve` records it: the
    // amount held. (A partial approval's limit index is not in the SQLite store;
    // a duplicate is answered with the same amount all the same.)
    tx.execute(
        "INSERT INTO ledger_requests (event_id, approved, amount, reason)
         SELECT event_id, TRUE, amount, 'approved' FROM ledger_facts WHERE kind = 'reserve'",
        &[],
    )
    .await
    .map(drop)
}

/// Why streaming the decision log failed.
enum Streamed {
    Source(String),
    Target(tokio_postgres::Error),
}

/// Streams the decision log out of SQLite (the store's reader, on a blocking
/// thread) into PostgreSQL, [`DECISION_BATCH`] rows per insert, ids kept.
async fn copy_decisions(
    tx: &tokio_postgres::Transaction<'_>,
    path: &Path,
    total: u64,
) -> Result<(), Streamed> {
    let (send, mut batches) = tokio::sync::mpsc::channel::<Vec<LoggedDecision>>(4);
    let path = path.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(DECISION_BATCH);
        crate::store::for_each_decision(&path, &DecisionFilter::default(), |row| {
            batch.push(row);
            if batch.len() == DECISION_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(DECISION_BATCH));
                if send.blocking_send(full).is_err() {
                    // The writer stopped (its error is the one reported).
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })
        .map_err(|e| e.to_string())?;
        if !batch.is_empty() {
            let _ = send.blocking_send(batch);
        }
        Ok::<_, String>(())
    });
    let mut progress = Progress::new("decisions", total);
    while let Some(batch) = batches.recv().await {
        insert_decisions(tx, &batch)
            .await
            .map_err(Streamed::Target)?;
        progress.add(batch.len());
    }
    reader
        .await
        .map_err(|e| Streamed::Source(e.to_string()))?
        .map_err(Streamed::Source)?;
    progress.print();
    move_sequence(tx, "decisions", "id")
        .await
        .map_err(Streamed::Target)
}

async fn insert_decisions(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &[LoggedDecision],
) -> Result<u64, tokio_postgres::Error> {
    macro_rules! column {
        ($field:ident) => {
            rows.iter().map(|r| &r.$field).collect::<Vec<_>>()
        };
    }
    tx.execute(
        "INSERT INTO decisions (id, event_id, authorization_id, card, cardholder, amount,
                currency, merchant_category, merchant_mcc, merchant_country, merchant_name,
                approved, approved_amount, reason, rule, ruleset, latency_us, decided_at,
                event_json, spend_json, shadow_rules, format, seen)
         OVERRIDING SYSTEM VALUE
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                $6::bigint[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[],
                $12::bool[], $13::bigint[], $14::text[], $15::text[], $16::text[],
                $17::bigint[], $18::bigint[], $19::bytea[], $20::text[], $21::text[],
                $22::bigint[], $23::bytea[])",
        &[
            &column!(id),
            &column!(event_id),
            &column!(authorization_id),
            &column!(card),
            &column!(cardholder),
            &column!(amount),
            &column!(currency),
            &column!(merchant_category),
            &column!(merchant_mcc),
            &column!(merchant_country),
            &column!(merchant_name),
            &column!(approved),
            &column!(approved_amount),
            &column!(reason),
            &column!(rule),
            &column!(ruleset),
            &column!(latency_us),
            &column!(decided_at),
            &rows.iter().map(|r| &r.event_json[..]).collect::<Vec<_>>(),
            &column!(spend_json),
            &column!(shadow_rules),
            &column!(format),
            &rows
                .iter()
                .map(|r| (!r.seen.is_empty()).then_some(&r.seen[..]))
                .collect::<Vec<_>>(),
        ],
    )
    .await
}

//! [`crate::journal::Journal`] on PostgreSQL: the decision log (table
//! `decisions`, the columns of SQLite's) and any ledger fact handed to it, written
//! by one background task with group commit — every write queued while a batch
//! commits goes into the next batch, and a batch of decision rows is one
//! `INSERT … SELECT FROM unnest(…)`, one round trip whatever its size.
//!
//! In `sync` durability a `commit` resolves after its batch committed; with
//! PostgreSQL holds the pipeline does not wait for the log row (the hold was
//! committed by the reserve itself). A batch that fails is logged and dropped:
//! waiters get the error; decision rows are a log, not the ledger.

use std::collections::HashMap;
use std::ops::ControlFlow;

use tokio::sync::{mpsc, oneshot};

use super::{Database, error_text};
use crate::journal::{
    Committed, DecisionRow, Durability, Journal, JournalError, LoggedDecision, RowText, Write,
};
use crate::store::DecisionFilter;

/// Writes a batch may hold at most: bounds one statement's size.
const BATCH: usize = 512;

/// Queued writes before `enqueue` refuses (a database far behind must not grow
/// memory without bound).
const QUEUE: usize = 16_384;

struct Job {
    writes: Vec<Write>,
    done: Option<oneshot::Sender<Result<(), JournalError>>>,
}

/// The journal of one process on a shared database.
pub struct PgJournal {
    tx: mpsc::Sender<Job>,
    durability: Durability,
}

impl std::fmt::Debug for PgJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgJournal")
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl PgJournal {
    /// Starts the writer task on the current Tokio runtime; it stops when the
    /// journal is dropped, after writing what was queued.
    pub fn start(db: Database, durability: Durability) -> PgJournal {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(db, rx));
        PgJournal { tx, durability }
    }
}

impl Journal for PgJournal {
    fn durability(&self) -> Durability {
        self.durability
    }

    fn enqueue(&self, writes: Vec<Write>) -> Result<(), JournalError> {
        self.tx
            .try_send(Job { writes, done: None })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    JournalError::Commit("the journal queue is full".into())
                }
                mpsc::error::TrySendError::Closed(_) => JournalError::WriterGone,
            })
    }

    fn commit(&self, writes: Vec<Write>) -> Committed<'_> {
        Box::pin(async move {
            let (done, wait) = oneshot::channel();
            self.tx
                .send(Job {
                    writes,
                    done: Some(done),
                })
                .await
                .map_err(|_| JournalError::WriterGone)?;
            wait.await.map_err(|_| JournalError::WriterGone)?
        })
    }
}

async fn writer(db: Database, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut jobs, BATCH).await > 0 {
        let result = write_batch(&db, &jobs).await;
        if let Err(e) = &result {
            tracing::error!(db = %db.name(), writes = jobs.len(), "journal batch not stored: {e}");
        }
        for job in jobs.drain(..) {
            if let Some(done) = job.done {
                let _ = done.send(result.clone());
            }
        }
    }
}

async fn write_batch(db: &Database, jobs: &[Job]) -> Result<(), JournalError> {
    let fail = |e: &tokio_postgres::Error| JournalError::Commit(error_text(e));
    let mut client = db.client().await.map_err(JournalError::Commit)?;
    let tx = client.transaction().await.map_err(|e| fail(&e))?;
    let mut rows: Vec<&DecisionRow> = Vec::new();
    for write in jobs.iter().flat_map(|j| &j.writes) {
        match write {
            Write::Fact(fact) => {
                if let Err(e) = fact.validate() {
                    tracing::warn!("journal fact skipped: {e}");
                    continue;
                }
                super::holds::apply_with(&*tx, fact)
                    .await
                    .map_err(|e| fail(&e))?;
            }
            Write::Decision(row) => rows.push(row),
            // Not sent by the pipeline here (PostgreSQL holds are durable inside
            // `reserve`); written as the two writes it stands for.
            Write::Held(row, held) => {
                super::holds::apply_with(&*tx, &held.fact(&row.text.get()))
                    .await
                    .map_err(|e| fail(&e))?;
                rows.push(row);
            }
        }
    }
    if !rows.is_empty() {
        insert_blobs(&tx, &rows).await.map_err(|e| fail(&e))?;
        insert_decisions(&tx, &rows).await.map_err(|e| fail(&e))?;
    }
    tx.commit().await.map_err(|e| fail(&e))
}

/// The bodies the rows' `seen` names by hash, stored once per hash.
async fn insert_blobs(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &[&DecisionRow],
) -> Result<u64, tokio_postgres::Error> {
    let mut hashes = Vec::new();
    let mut bodies: Vec<&[u8]> = Vec::new();
    for (hash, body) in rows.iter().flat_map(|r| &r.blobs) {
        if !hashes.contains(hash) {
            hashes.push(*hash);
            bodies.push(body);
        }
    }
    if hashes.is_empty() {
        return Ok(0);
    }
    tx.execute(
        "INSERT INTO decision_blobs (hash, body)
         SELECT * FROM unnest($1::bigint[], $2::bytea[]) ON CONFLICT (hash) DO NOTHING",
        &[&hashes, &bodies],
    )
    .await
}

async fn insert_decisions(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &[&DecisionRow],
) -> Result<u64, tokio_postgres::Error> {
    let texts: Vec<RowText<'_>> = rows.iter().map(|r| r.text.get()).collect();
    macro_rules! text {
        ($field:ident) => {
            texts.iter().map(|t| t.$field).collect::<Vec<_>>()
        };
    }
    macro_rules! column {
        ($field:ident) => {
            rows.iter().map(|r| &r.$field).collect::<Vec<_>>()
        };
    }
    tx.execute(
        "INSERT INTO decisions (event_id, authorization_id, card, cardholder, amount, currency,
                merchant_category, merchant_mcc, merchant_country, merchant_name, approved,
                approved_amount, reason, rule, ruleset, latency_us, decided_at, event_json,
                spend_json, shadow_rules, format, seen)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],
                $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bool[],
                $12::bigint[], $13::text[], $14::text[], $15::text[], $16::bigint[],
                $17::bigint[], $18::bytea[], $19::text[], $20::text[], $21::bigint[],
                $22::bytea[])",
        &[
            &text!(event_id),
            &text!(authorization_id),
            &text!(card),
            &text!(cardholder),
            &column!(amount),
            &text!(currency),
            &text!(merchant_category),
            &text!(merchant_mcc),
            &text!(merchant_country),
            &text!(merchant_name),
            &column!(approved),
            &column!(approved_amount),
            &text!(reason),
            &text!(rule),
            &text!(ruleset),
            &column!(latency_us),
            &column!(decided_at),
            &rows.iter().map(|r| &r.event_json[..]).collect::<Vec<_>>(),
            &text!(spend_json),
            &text!(shadow_rules),
            &column!(format),
            &rows
                .iter()
                .map(|r| (!r.seen.is_empty()).then_some(&r.seen[..]))
                .collect::<Vec<_>>(),
        ],
    )
    .await
}

/// The columns [`decision_of`] reads, in its order.
pub(super) const DECISION_COLUMNS: &str =
    "id, event_id, authorization_id, card, cardholder, amount, currency,
    merchant_category, merchant_mcc, merchant_country, merchant_name, approved,
    approved_amount, reason, rule, ruleset, latency_us, decided_at, event_json, spend_json,
    shadow_rules, format, seen";

/// Rows a streaming read fetches per round trip: bounds memory whatever the log's size.
const PAGE: i32 = 1000;

/// The decision log, oldest first, optionally from `since` (Unix seconds) on,
/// all rows in memory (tests, small logs; the backtest streams with
/// [`for_each_decision`]).
pub async fn read_decisions(
    db: &Database,
    since: Option<i64>,
) -> Result<Vec<LoggedDecision>, String> {
    let mut out = Vec::new();
    let filter = DecisionFilter {
        since,
        ..DecisionFilter::default()
    };
    for_each_decision(db, &filter, |row| {
        out.push(row);
        ControlFlow::Continue(())
    })
    .await?;
    Ok(out)
}

/// How many rows [`for_each_decision`] would visit (progress output).
pub async fn count_decisions(db: &Database, filter: &DecisionFilter) -> Result<u64, String> {
    let client = db.client().await?;
    let row = client
        .query_one(
            "SELECT COUNT(*) FROM decisions
             WHERE decided_at >= $1 AND decided_at < $2 AND ($3::text IS NULL OR cardholder = $3)",
            &[
                &filter.since.unwrap_or(i64::MIN),
                &filter.until.unwrap_or(i64::MAX),
                &filter.cardholder,
            ],
        )
        .await
        .map_err(|e| error_text(&e))?;
    let n: i64 = row.try_get(0).map_err(|e| error_text(&e))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Streams the decision-log rows that pass `filter`, oldest first, [`PAGE`] rows
/// per round trip through a cursor (one read-only transaction, so it may run
/// beside live replicas); `f` stops it early with `Break`. The twin of SQLite's
/// `store::for_each_decision`.
pub async fn for_each_decision(
    db: &Database,
    filter: &DecisionFilter,
    mut f: impl FnMut(LoggedDecision) -> ControlFlow<()>,
) -> Result<(), String> {
    let fail = |e: tokio_postgres::Error| error_text(&e);
    let mut client = db.client().await?;
    let tx = client
        .build_transaction()
        .read_only(true)
        .start()
        .await
        .map_err(fail)?;
    let stmt = tx
        .prepare(&format!(
            "SELECT {DECISION_COLUMNS} FROM decisions
             WHERE decided_at >= $1 AND decided_at < $2 AND ($3::text IS NULL OR cardholder = $3)
             ORDER BY id"
        ))
        .await
        .map_err(fail)?;
    let since = filter.since.unwrap_or(i64::MIN);
    let until = filter.until.unwrap_or(i64::MAX);
    let portal = tx
        .bind(&stmt, &[&since, &until, &filter.cardholder])
        .await
        .map_err(fail)?;
    loop {
        let rows = tx.query_portal(&portal, PAGE).await.map_err(fail)?;
        for r in &rows {
            if f(decision_of(r).map_err(fail)?).is_break() {
                return Ok(());
            }
        }
        if rows.len() < usize::try_from(PAGE).unwrap_or(0) {
            return Ok(());
        }
    }
}

/// Every body the decision log names by hash (program controls, overrides).
pub async fn read_decision_blobs(db: &Database) -> Result<HashMap<i64, Vec<u8>>, String> {
    let client = db.client().await?;
    let rows = client
        .query("SELECT hash, body FROM decision_blobs", &[])
        .await
        .map_err(|e| error_text(&e))?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(|e| error_text(&e))
}

pub(super) fn decision_of(
    r: &tokio_postgres::Row,
) -> Result<LoggedDecision, tokio_postgres::Error> {
    Ok(LoggedDecision {
        id: r.try_get(0)?,
        event_id: r.try_get(1)?,
        authorization_id: r.try_get(2)?,
        card: r.try_get(3)?,
        cardholder: r.try_get(4)?,
        amount: r.try_get(5)?,
        currency: r.try_get(6)?,
        merchant_category: r.try_get(7)?,
        merchant_mcc: r.try_get(8)?,
        merchant_country: r.try_get(9)?,
        merchant_name: r.try_get(10)?,
        approved: r.try_get(11)?,
        approved_amount: r.try_get(12)?,
        reason: r.try_get(13)?,
        rule: r.try_get(14)?,
        ruleset: r.try_get(15)?,
        latency_us: r.try_get(16)?,
        decided_at: r.try_get(17)?,
        event_json: r.try_get::<_, Vec<u8>>(18)?.into(),
        spend_json: r.try_get(19)?,
        shadow_rules: r.try_get(20)?,
        format: r.try_get(21)?,
        seen: r.try_get::<_, Option<Vec<u8>>>(22)?.unwrap_or_default(),
        // Read by hash from `decision_blobs` when a reader needs them.
        blobs: Vec::new(),
    })
}

//! The one writer: a background thread owns the write connection, takes whatever
//! is queued (up to `MAX_BATCH`), commits it in one transaction and answers every
//! waiter of the batch (group commit). Implements the pipeline's [`Journal`].
//!
//! A second thread checkpoints the WAL into the database file on its own
//! connection, so the writer's commits never wait for one (SQLite's automatic
//! checkpoint would run inside the commit that crossed the threshold: a thousand
//! page copies and, in `sync`, two more fsyncs before that batch's approvals are
//! answered). In `async` both run as batch threads beside the request threads; in
//! `sync` the writer only while nobody waits for it (`background.rs`).

use std::borrow::Cow;
use std::collections::HashSet;
use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, Statement, params};
use tokio::sync::oneshot;

use super::background::WriterPolicy;
use super::gate::WriteGate;
use super::minutes::Marks;
use super::parts::{Cut, Parts};
use super::read::{for_each_fact, read_decision_log};
use super::schema::{open_checked, set_durability};
use super::{Durability, FILE_NAME, LoggedDecision, MAX_BATCH, StoreError, Write};
use crate::journal::{Committed, DecisionRow, Held, Journal, JournalError};
use crate::ledger::Fact;
use crate::metrics as m;

struct Job {
    writes: Vec<Write>,
    done: Option<oneshot::Sender<Result<(), String>>>,
    /// Its waiter can wait [`PATIENT_GATHER`] for company (`commit_patient`).
    patient: bool,
}

/// The open store: a queue to the writer thread plus the file's path for readers.
pub struct Store {
    path: PathBuf,
    durability: Durability,
    tx: Option<mpsc::Sender<Job>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    checkpoints: Arc<AtomicU64>,
    /// In `sync`, the writer's scheduling policy (`background.rs`), which a request
    /// about to wait for a commit may change.
    policy: Option<Arc<WriterPolicy>>,
}

/// WAL pages after which the writer asks for a checkpoint in `async` (and an
/// approvals or rule-set write checkpoints: `gate.rs`): 40 MiB at 4 KiB pages, ten
/// times SQLite's default. Each checkpoint writes and fsyncs the database file, and
/// a page changed by many commits (a table's last leaf, an index's) is written
/// once per checkpoint: under wrk, async went from 9.6–10.1k to 12.3k req/s and
/// sync from 8.3k to 9.5k (BENCHMARKS.md, 2026-12-02, rows five times today's
/// pages). A bigger WAL costs disk and a longer scan on open, not durability.
pub(super) const CHECKPOINT_PAGES: c_int = 10_000;

/// The same threshold in `sync`. SQLite's WAL index finds a page's newest frame by
/// a hash chain per 4,096-frame block, and every commit appends the same hot pages
/// (the last leaf of `decisions`, and before schema 11 that of the `decided_at`
/// index), so appending a frame walks a chain as long as the commits since the
/// block began: 13.3k instructions per unbatched decision with 10,000 pages, 2.4k
/// with 1,000 (`walIndexAppend`, callgrind). Under wrk, sync kept its throughput
/// (29.45k → 29.51k req/s, three alternating rounds) with a lower p99 (5.8–6.6 →
/// 4.7–5.0 ms); async lost 3.6 % to the extra fsyncs, so it keeps the larger WAL
/// (BENCHMARKS.md, "A shorter WAL in sync"; at 1,000 pages again on 2026-12-05,
/// `async` lost 4 %: its batches under load make the chains cheap per decision).
const SYNC_CHECKPOINT_PAGES: c_int = 1_000;

/// The WAL pages after which the writer asks for a checkpoint.
fn checkpoint_pages(durability: Durability) -> c_int {
    match durability {
        Durability::Sync => SYNC_CHECKPOINT_PAGES,
        Durability::Async => CHECKPOINT_PAGES,
    }
}

/// While the WAL stays past its threshold ([`checkpoint_pages`]; a reader still
/// needs its frames, so it cannot start over), the writer asks again only every
/// this many pages, SQLite's own default: not after every commit.
const CHECKPOINT_RETRY_PAGES: c_int = 1_000;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) `<dir>/cardgate.db` and starts the writer thread.
    pub fn open(dir: &Path, durability: Durability) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Dir {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let path = dir.join(FILE_NAME);
        let mut conn = open_checked(&path, durability)?;
        let checkpoints = Arc::new(AtomicU64::new(0));
        let gate = WriteGate::for_file(&path);
        // Each thread says when it runs with its scheduling policy, so the store is
        // not handed out before (and a test can read the policy it set).
        let (started, started_rx) = mpsc::channel::<()>();
        let (ask, checkpointer) = start_checkpointer(
            &path,
            durability,
            &checkpoints,
            Arc::clone(&gate),
            started.clone(),
        )?;
        // Replaces SQLite's automatic checkpoint (itself a WAL hook): the writer
        // only asks; a request while one is pending is the same request. `pages`
        // counts the WAL's frames from its start, so it falls when the WAL starts
        // over after a complete checkpoint.
        let threshold = checkpoint_pages(durability);
        let mut next_ask = threshold;
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: c_int| {
            if pages < threshold {
                next_ask = threshold;
            } else if pages >= next_ask {
                next_ask = pages.saturating_add(CHECKPOINT_RETRY_PAGES);
                let _ = ask.try_send(());
            }
            Ok(())
        }))
        .map_err(super::sqlite(&path))?;
        let (tx, rx) = mpsc::channel::<Job>();
        let writer_path = path.clone();
        let policy = (durability == Durability::Sync).then(|| Arc::new(WriterPolicy::default()));
        let writer_policy = policy.clone();
        let writer = std::thread::Builder::new()
            .name("cardgate-store".into())
            .spawn(move || {
                super::background::set_policy_or_warn("writer", durability);
                if let Some(p) = &writer_policy {
                    p.started();
                }
                let _ = started.send(());
                let policy = writer_policy.as_deref();
                writer_loop(&conn, &gate, &rx, &writer_path, durability, policy);
            })
            .map_err(|e| StoreError::Sqlite {
                path: path.clone(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        // A thread that ended before saying so (it cannot: nothing before the send
        // fails) would leave the channel closed; the threads are running either way.
        let _ = started_rx.recv().and_then(|()| started_rx.recv());
        Ok(Store {
            path,
            durability,
            tx: Some(tx),
            writer: Mutex::new(Some(writer)),
            checkpointer: Mutex::new(Some(checkpointer)),
            checkpoints,
            policy,
        })
    }

    /// Checkpoints completed by the background checkpointer since open.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Relaxed)
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
        patient: bool,
    ) -> Result<(), StoreError> {
        if done.is_some()
            && !patient
            && let Some(p) = &self.policy
        {
            p.before_wait();
        }
        let sent = self.tx.as_ref().map(|tx| {
            tx.send(Job {
                writes,
                done,
                patient,
            })
            .is_ok()
        });
        if sent == Some(true) {
            Ok(())
        } else {
            metrics::counter!(m::STORE_ERRORS, "op" => "enqueue").increment(1);
            Err(StoreError::WriterGone)
        }
    }

    /// Queues writes without waiting (async durability, decision log rows).
    pub fn enqueue(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.send(writes, None, false)
    }

    /// Queues writes and resolves once the batch holding them committed.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.commit_as(writes, false).await
    }

    /// [`Store::commit`] for a waiter in no hurry: in `sync` a batch of only such
    /// writes stays open up to [`PATIENT_GATHER`] for more, and closes at once when
    /// a write somebody waits for in earnest (an approval's hold) joins it.
    pub async fn commit_patient(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.commit_as(writes, true).await
    }

    async fn commit_as(&self, writes: Vec<Write>, patient: bool) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(writes, Some(done), patient)?;
        match wait.await {
            Ok(r) => r.map_err(StoreError::Commit),
            Err(_) => Err(StoreError::WriterGone),
        }
    }

    /// [`Store::commit`] for threads outside the async runtime (CLI, tests). Must
    /// not be called from inside a runtime.
    pub fn commit_blocking(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.send(writes, Some(done), false)?;
        match wait.blocking_recv() {
            Ok(r) => r.map_err(StoreError::Commit),
            Err(_) => Err(StoreError::WriterGone),
        }
    }

    /// Every stored ledger fact, in commit order (the tests' view; a start
    /// streams them with [`Store::for_each_fact`]).
    #[cfg(test)]
    pub fn facts(&self) -> Result<Vec<Fact>, StoreError> {
        super::read::read_facts(&self.path, None)
    }

    /// Hands every stored ledger fact to `f` in commit order, as it is read (to
    /// rebuild the ledger); returns how many.
    pub fn for_each_fact(&self, f: impl FnMut(Fact)) -> Result<usize, StoreError> {
        for_each_fact(&self.path, None, f)
    }

    /// Decision log rows decided at or after `since` (Unix seconds; all when
    /// `None`), oldest first. For the backtest.
    pub fn decision_log(&self, since: Option<i64>) -> Result<Vec<LoggedDecision>, StoreError> {
        read_decision_log(&self.path, since)
    }

    /// Stops the writer after it committed everything queued, then the
    /// checkpointer (the writer's connection held the only way to ask it for more).
    pub fn close(&mut self) {
        self.tx = None;
        for (thread, name) in [
            (&self.writer, "writer"),
            (&self.checkpointer, "checkpointer"),
        ] {
            let handle = thread.lock().ok().and_then(|mut w| w.take());
            if let Some(h) = handle
                && h.join().is_err()
            {
                tracing::error!(path = %self.path.display(), "store {name} thread panicked");
            }
        }
    }
}

impl Journal for Store {
    fn durability(&self) -> Durability {
        self.durability
    }

    fn enqueue(&self, writes: Vec<Write>) -> Result<(), JournalError> {
        Store::enqueue(self, writes).map_err(journal_error)
    }

    fn commit(&self, writes: Vec<Write>) -> Committed<'_> {
        Box::pin(async move { Store::commit(self, writes).await.map_err(journal_error) })
    }

    fn commit_patient(&self, writes: Vec<Write>) -> Committed<'_> {
        Box::pin(async move {
            Store::commit_patient(self, writes)
                .await
                .map_err(journal_error)
        })
    }
}

fn journal_error(e: StoreError) -> JournalError {
    match e {
        StoreError::WriterGone => JournalError::WriterGone,
        other => JournalError::Commit(other.to_string()),
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

// === the checkpointer thread ===

/// Opens the checkpointer's connection and starts its thread; returns the channel
/// the writer asks through (room for one request: asks while one is pending merge).
fn start_checkpointer(
    path: &Path,
    durability: Durability,
    done: &Arc<AtomicU64>,
    gate: Arc<WriteGate>,
    started: mpsc::Sender<()>,
) -> Result<(mpsc::SyncSender<()>, JoinHandle<()>), StoreError> {
    let err = super::sqlite(path);
    let conn = Connection::open(path).map_err(&err)?;
    // The checkpoint syncs the WAL and the database file as this says.
    set_durability(&conn, durability).map_err(&err)?;
    let (ask, asked) = mpsc::sync_channel::<()>(1);
    let done = Arc::clone(done);
    let thread_path = path.to_path_buf();
    let handle = std::thread::Builder::new()
        .name("cardgate-checkpoint".into())
        .spawn(move || {
            super::background::set_policy_or_warn("checkpoint", durability);
            let _ = started.send(());
            // Ends when the writer's connection (which holds `ask`) is closed.
            while asked.recv().is_ok() {
                match checkpoint(&conn, &gate) {
                    Ok(true) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    // An approvals or rule-set write's checkpoint was running; the
                    // WAL hook asks again if the WAL stays past its threshold.
                    Ok(false) => {}
                    Err(e) => {
                        metrics::counter!(m::STORE_ERRORS, "op" => "checkpoint").increment(1);
                        tracing::warn!(path = %thread_path.display(), "WAL checkpoint failed: {e}");
                    }
                }
            }
        })
        .map_err(|e| StoreError::Sqlite {
            path: path.to_path_buf(),
            message: format!("cannot start the checkpoint thread: {e}"),
        })?;
    Ok((ask, handle))
}

/// Frames the last pass beside the writer may leave for the pass in a turn: the
/// writer waits for that copy and its fsyncs, so it must be short (~0.5 MiB).
const CATCH_UP_FRAMES: c_int = 128;

/// Passes beside the writer before the last one in a turn, whatever is left: each
/// copies what the one before left, so they shrink fast unless the disk cannot
/// keep up with the writer.
const MAX_PASSES: usize = 8;

/// One checkpoint: PASSIVE passes (each copies what no reader still needs) beside
/// the writer's commits, then one in a turn at the gate.
///
/// A pass copies the WAL as it was when the pass began; the writer appends
/// meanwhile, so passes beside it never copy everything, and a WAL that is not
/// wholly copied never starts over: under steady load every commit asked for one
/// more checkpoint, back to back, each an fsync of the WAL beside the writer's own
/// (strace, fixed-rate sync). So passes repeat while the last one found many new
/// frames (a copy of 40 MiB takes long enough for the writer to append several),
/// and the last few frames are copied with the writer held at the gate: its next
/// transaction starts the WAL from the beginning.
///
/// `Ok(false)` when another connection's checkpoint was running (SQLite lets one
/// run at a time and answers the others "database is locked" at once): the WAL is
/// that one's to copy, which is not a failure.
pub(super) fn checkpoint(conn: &Connection, gate: &WriteGate) -> rusqlite::Result<bool> {
    let pass = || match conn.wal_checkpoint_v2(None::<&str>, CheckpointMode::PASSIVE) {
        Ok((frames, _)) => Ok(Some(frames)),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) => Ok(None),
        Err(e) => Err(e),
    };
    // The first pass counts every frame as new.
    let mut frames = 0;
    for _ in 0..MAX_PASSES {
        let Some(now) = pass()? else {
            return Ok(false);
        };
        // Fewer frames than before: the WAL started over (nothing left to copy).
        let appended = now - frames;
        frames = now;
        if appended <= CATCH_UP_FRAMES {
            break;
        }
    }
    let _turn = gate.turn();
    Ok(pass()?.is_some())
}

// === the writer thread ===

/// The writer's statements, prepared once for the connection's life: per batch
/// the thread only binds and steps (no SQL parsed, no statement-cache look-up).
/// `BEGIN`/`COMMIT` are statements too, so a batch parses nothing.
struct Statements<'c> {
    begin: Statement<'c>,
    commit: Statement<'c>,
    rollback: Statement<'c>,
    blob: Statement<'c>,
    part: Statement<'c>,
    fact: Statement<'c>,
    decision: Statement<'c>,
    minute: Statement<'c>,
}

impl<'c> Statements<'c> {
    fn prepare(conn: &'c Connection) -> rusqlite::Result<Statements<'c>> {
        Ok(Statements {
            begin: conn.prepare("BEGIN")?,
            commit: conn.prepare("COMMIT")?,
            rollback: conn.prepare("ROLLBACK")?,
            blob: conn.prepare("INSERT OR IGNORE INTO decision_blobs (hash, body) VALUES (?1, ?2)")?,
            part: conn.prepare("INSERT INTO decision_parts (body) VALUES (?1)")?,
            fact: conn.prepare(
                "INSERT OR IGNORE INTO ledger_facts (event_id, kind, card, cardholder, record_id, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?,
            decision: conn.prepare(
                "INSERT INTO decisions (event_id, authorization_id, card, cardholder, amount, currency,
                     merchant_category, merchant_mcc, merchant_country, merchant_name, approved,
                     approved_amount, reason, rule, ruleset, latency_us, decided_at, event_json,
                     spend_json, shadow_rules, format, seen, card_at, card_part, hold_amount,
                     hold_window_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                     ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26)",
            )?,
            minute: conn.prepare(
                "INSERT OR IGNORE INTO decision_minutes (minute, first_id) VALUES (?1, ?2)",
            )?,
        })
    }
}

/// What the writer keeps between batches.
struct Writer<'c> {
    conn: &'c Connection,
    stmts: Statements<'c>,
    /// Blob hashes known to be committed: each body is written once, not per row.
    stored: HashSet<i64>,
    /// Hashes inserted by the batch in progress (committed into `stored` after it).
    new_blobs: Vec<i64>,
    /// A fact's JSON body, reused so a batch does not allocate one per fact.
    body: Vec<u8>,
    /// Each card's object as stored in `decision_parts` (see `parts`).
    parts: Parts,
    /// A request body without its card object, reused across rows.
    rest: Vec<u8>,
    /// Which minute of `decision_minutes` the last row marked (see `minutes`).
    minutes: Marks,
}

/// How long, in `async` durability, the writer lets a batch gather after its
/// first write when nobody waits for it: under load one commit then carries many
/// decisions instead of a few, and the request threads stop waking the writer for
/// each (it is not waiting on the queue meanwhile). Bounded well inside the "few
/// milliseconds" `async` may lose in a crash.
const ASYNC_GATHER: std::time::Duration = std::time::Duration::from_micros(500);

/// How long, in `sync` durability, a batch of only patient writes
/// ([`Store::commit_patient`]: lifecycle events' facts) stays open for more. Stripe
/// sends two or more lifecycle events per approved authorization; committed as they
/// came, each caused a commit and its fsync of its own. Held open, they share the
/// next approval's commit (whose arrival closes the batch at once) or each other's.
/// Their answers wait this much longer; an approval never waits for it.
const PATIENT_GATHER: std::time::Duration = std::time::Duration::from_millis(1);

fn writer_loop(
    conn: &Connection,
    gate: &WriteGate,
    rx: &mpsc::Receiver<Job>,
    path: &Path,
    durability: Durability,
    policy: Option<&WriterPolicy>,
) {
    let stmts = match Statements::prepare(conn) {
        Ok(s) => s,
        Err(e) => {
            // The schema was checked at open, so this is not expected; every
            // waiter still gets an answer rather than a hang.
            tracing::error!(path = %path.display(), "store writer cannot prepare its statements: {e}");
            let e = e.to_string();
            while let Ok(job) = rx.recv() {
                metrics::counter!(m::STORE_ERRORS, "op" => "commit").increment(1);
                if let Some(done) = job.done {
                    let _ = done.send(Err(e.clone()));
                }
            }
            return;
        }
    };
    let mut w = Writer {
        conn,
        stmts,
        stored: HashSet::new(),
        new_blobs: Vec::new(),
        body: Vec::new(),
        parts: Parts::default(),
        rest: Vec::new(),
        minutes: Marks::default(),
    };
    let mut batch = Vec::new();
    // Ends when every sender is gone (Store dropped) and the queue is drained.
    while let Ok(first) = rx.recv() {
        if durability == Durability::Async && first.done.is_none() {
            std::thread::sleep(ASYNC_GATHER);
        }
        let mut writes = first.writes.len();
        batch.push(first);
        while writes < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => {
                    writes += job.writes.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        if durability == Durability::Sync && batch.iter().all(|j| j.patient) {
            writes = gather_patient(rx, &mut batch, writes);
        }
        if let Some(p) = policy {
            p.for_batch(batch.iter().any(|j| j.done.is_some()));
        }
        let start = Instant::now();
        // Taken per batch, so a waiting approval or publish goes between two batches.
        let turn = gate.turn();
        let result = w.commit_batch(&batch).map_err(|e| e.to_string());
        drop(turn);
        m::record_commit(start.elapsed(), writes);
        if let Err(e) = &result {
            metrics::counter!(m::STORE_ERRORS, "op" => "commit").increment(1);
            tracing::error!(path = %path.display(), writes, "store commit failed: {e}");
        }
        for job in batch.drain(..) {
            if let Some(done) = job.done {
                // The waiter may have given up (deadline): nothing to tell then.
                let _ = done.send(result.clone());
            }
        }
    }
}

/// Keeps a batch of patient writes open for more ([`PATIENT_GATHER`] from now, at
/// most [`MAX_BATCH`] writes) until a write that is not patient joins it; returns the
/// batch's writes.
fn gather_patient(rx: &mpsc::Receiver<Job>, batch: &mut Vec<Job>, mut writes: usize) -> usize {
    let deadline = Instant::now() + PATIENT_GATHER;
    while writes < MAX_BATCH {
        let left = deadline.saturating_duration_since(Instant::now());
        // A timeout, or every sender gone (the store closing): commit what is here.
        let Ok(job) = rx.recv_timeout(left) else {
            break;
        };
        writes += job.writes.len();
        let urgent = !job.patient;
        batch.push(job);
        if urgent {
            break;
        }
    }
    writes
}

impl Writer<'_> {
    /// One transaction for the whole batch: all of it is written or none.
    fn commit_batch(&mut self, batch: &[Job]) -> rusqlite::Result<()> {
        self.new_blobs.clear();
        self.stmts.begin.execute([])?;
        let written = batch
            .iter()
            .flat_map(|j| &j.writes)
            .try_for_each(|write| self.write(write))
            .and_then(|()| self.stmts.commit.execute([]).map(|_| ()));
        if let Err(e) = written {
            // A failed statement or COMMIT leaves the transaction open; nothing of
            // the batch may stay (and no blob hash counts as stored).
            if !self.conn.is_autocommit() {
                let _ = self.stmts.rollback.execute([]);
            }
            // Parts this batch stored are gone, and their ids will be given again.
            self.parts = Parts::default();
            self.minutes.rolled_back();
            return Err(e);
        }
        self.stored.extend(self.new_blobs.drain(..));
        self.minutes.committed();
        Ok(())
    }

    fn write(&mut self, write: &Write) -> rusqlite::Result<()> {
        match write {
            Write::Fact(f) => {
                self.body.clear();
                serde_json::to_writer(&mut self.body, f)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                let (kind, record_id) = match f {
                    Fact::Reserve { auth, .. } => ("reserve", Cow::Borrowed(auth.id.as_str())),
                    Fact::Authorization { auth, .. } => {
                        ("authorization", Cow::Borrowed(auth.id.as_str()))
                    }
                    Fact::Transaction { .. } => ("transaction", Cow::Owned(f.record_id())),
                };
                self.stmts.fact.execute(params![
                    f.event_id(),
                    kind,
                    f.card(),
                    f.cardholder(),
                    record_id,
                    self.body
                ])?;
            }
            Write::Decision(d) => self.decision(d, None)?,
            Write::Held(d, held) => self.decision(d, Some(held))?,
        }
        Ok(())
    }

    /// The row of `d`, with the approval's hold when it reserved one.
    fn decision(&mut self, d: &DecisionRow, held: Option<&Held>) -> rusqlite::Result<()> {
        let t = d.text.get();
        for (hash, body) in &d.blobs {
            if !self.stored.contains(hash) && !self.new_blobs.contains(hash) {
                self.stmts.blob.execute(params![hash, &body[..]])?;
                self.new_blobs.push(*hash);
            }
        }
        let (body, card_at, card_part) = match self.parts.split(t.card, &d.event_json) {
            None => (&d.event_json[..], None, None),
            Some(Cut { at, end, part }) => {
                let part = if let Some(part) = part {
                    part
                } else {
                    // A copy, not a slice: the cache must not keep the whole
                    // request buffer alive for the card's sake.
                    let object = Bytes::copy_from_slice(&d.event_json[at..end]);
                    self.stmts.part.execute(params![&object[..]])?;
                    let part = self.conn.last_insert_rowid();
                    // Shared with the batch's later rows at once: a failed batch
                    // forgets every part (`commit_batch`).
                    self.parts.remember(t.card, part, object);
                    part
                };
                self.rest.clear();
                self.rest.extend_from_slice(&d.event_json[..at]);
                self.rest.extend_from_slice(&d.event_json[end..]);
                let at = i64::try_from(at).unwrap_or(i64::MAX);
                (&self.rest[..], Some(at), Some(part))
            }
        };
        self.stmts.decision.execute(params![
            t.event_id,
            t.authorization_id,
            t.card,
            t.cardholder,
            d.amount,
            t.currency,
            t.merchant_category,
            t.merchant_mcc,
            t.merchant_country,
            t.merchant_name,
            d.approved,
            d.approved_amount,
            t.reason,
            t.rule,
            t.ruleset,
            d.latency_us,
            d.decided_at,
            body,
            t.spend_json,
            t.shadow_rules,
            d.format,
            (!d.seen.is_empty()).then_some(&d.seen[..]),
            card_at,
            card_part,
            held.map(|h| h.amount),
            held.map(|h| h.at),
        ])?;
        let id = self.conn.last_insert_rowid();
        self.minutes.mark(&mut self.stmts.minute, d.decided_at, id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn job(n: usize, patient: bool) -> Job {
        let fact = super::super::tests::reserve(&format!("evt_{n}"), &format!("iauth_{n}"), 1);
        Job {
            writes: vec![Write::Fact(fact)],
            done: None,
            patient,
        }
    }

    fn patience(batch: &[Job]) -> Vec<bool> {
        batch.iter().map(|j| j.patient).collect()
    }

    /// The defect: in `sync` every lifecycle event's fact was a commit (and an
    /// fsync) of its own. Patient writes now gather, and the first write somebody
    /// waits for in earnest closes the batch, taking them along.
    #[test]
    fn patient_writes_gather_until_an_urgent_write_joins() {
        let (tx, rx) = mpsc::channel();
        for (n, patient) in [(2, true), (3, false), (4, true)] {
            tx.send(job(n, patient)).unwrap();
        }
        let mut batch = vec![job(1, true)];
        assert_eq!(gather_patient(&rx, &mut batch, 1), 3);
        assert_eq!(patience(&batch), [true, true, false]);
        // What came after the urgent write is the next batch's.
        assert!(rx.try_recv().unwrap().patient);
    }

    #[test]
    fn a_patient_batch_ends_at_the_batch_bound_at_its_deadline_and_at_close() {
        let (tx, rx) = mpsc::channel();
        for n in 0..=MAX_BATCH {
            tx.send(job(n, true)).unwrap();
        }
        let mut batch = vec![job(0, true)];
        assert_eq!(gather_patient(&rx, &mut batch, 1), MAX_BATCH);
        assert_eq!(batch.len(), MAX_BATCH);
        // Nothing more arrives: the gather ends at its deadline with the batch as is.
        while rx.try_recv().is_ok() {}
        let mut alone = vec![job(0, true)];
        assert_eq!(gather_patient(&rx, &mut alone, 1), 1);
        // The store closing (every sender gone) ends it at once.
        drop(tx);
        assert_eq!(gather_patient(&rx, &mut alone, 1), 1);
        assert_eq!(alone.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_patient_and_an_urgent_commit_are_both_durable_in_sync() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path(), Durability::Sync).unwrap());
        let patient = {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let fact = super::super::tests::reserve("evt_p", "iauth_p", 5);
                store.commit_patient(vec![Write::Fact(fact)]).await
            })
        };
        let fact = super::super::tests::reserve("evt_u", "iauth_u", 7);
        store.commit(vec![Write::Fact(fact)]).await.unwrap();
        patient.await.unwrap().unwrap();
        let mut ids: Vec<String> = store.facts().unwrap().iter().map(Fact::record_id).collect();
        ids.sort();
        assert_eq!(ids, ["iauth_p", "iauth_u"]);
    }
}

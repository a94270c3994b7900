//! Turns at `cardgate.db`'s write lock, in arrival order, for this process's
//! connections: the ledger's writer thread, the approvals store and the rule-set
//! store each write through their own connection to the same file.
//!
//! SQLite has no queue for its write lock. A connection that finds it taken
//! sleeps (1, 2, 5 … 100 ms) and tries again until `busy_timeout` runs out, so
//! under load, when the ledger's writer commits back to back and each commit holds
//! the lock through its fsync, an approval or a rule-set publish can miss every
//! gap and fail with "database is locked" after five seconds (a 30 ms fsync
//! reproduced it on the second of a thousand reloads). Every writer in the process
//! first takes a turn here, then begins its transaction: the lock is free by then,
//! and a waiting publish goes next instead of gambling against the ledger's next
//! batch. Other processes (the CLI) still meet SQLite's lock and its timeout.

use std::collections::HashMap;
use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError, Weak};

use rusqlite::Connection;

/// One database file's queue of writers (a ticket lock).
#[derive(Debug, Default)]
pub(super) struct WriteGate {
    tickets: Mutex<Tickets>,
    turn: Condvar,
}

#[derive(Debug, Default)]
struct Tickets {
    /// The ticket the next arrival draws.
    next: u64,
    /// The ticket whose holder may write now.
    serving: u64,
    /// Threads asleep on `turn`: the ledger's writer, alone most of the time,
    /// then skips the wake-up (a system call) when it hands its turn on.
    waiting: usize,
}

/// The right to write to the file until dropped.
#[must_use = "the turn ends when this is dropped"]
pub(super) struct Turn<'g>(&'g WriteGate);

/// Gates by canonical file path; weak, so a closed store's gate goes away.
static GATES: LazyLock<Mutex<HashMap<PathBuf, Weak<WriteGate>>>> = LazyLock::new(Mutex::default);

impl WriteGate {
    /// The gate every connection of this process that writes `path` shares.
    /// `path` must exist (it is canonicalized, so two spellings of one file meet).
    pub(super) fn for_file(path: &Path) -> Arc<WriteGate> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut gates = GATES.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(gate) = gates.get(&key).and_then(Weak::upgrade) {
            return gate;
        }
        gates.retain(|_, g| g.strong_count() > 0);
        let gate = Arc::new(WriteGate::default());
        gates.insert(key, Arc::downgrade(&gate));
        gate
    }

    /// Waits for this thread's turn (blocking: call it on the writer thread or
    /// a blocking-pool thread, never on a runtime worker).
    pub(super) fn turn(&self) -> Turn<'_> {
        let mut t = self.tickets();
        let mine = t.next;
        t.next += 1;
        while t.serving != mine {
            t.waiting += 1;
            t = self.turn.wait(t).unwrap_or_else(PoisonError::into_inner);
            t.waiting -= 1;
        }
        Turn(self)
    }

    // A panic while the mutex is held cannot leave the counters half-changed
    // (each change is one statement), so a poisoned lock is still consistent.
    fn tickets(&self) -> MutexGuard<'_, Tickets> {
        self.tickets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Threads waiting for a turn.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.tickets().waiting
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut t = self.0.tickets();
        t.serving += 1;
        if t.waiting > 0 {
            self.0.turn.notify_all();
        }
    }
}

/// How a connection other than the ledger's writer (approvals, rule sets) writes:
/// a turn at the file's gate around each transaction, and the WAL checkpoint
/// after the turn. SQLite's automatic checkpoint runs inside the COMMIT that
/// leaves the WAL past its threshold, which would be with the turn still held:
/// the ledger's writer would wait behind a copy of up to 40 MiB into the database
/// file. Instead the connection notes the WAL's size at each commit and, once past
/// the writer's threshold, checkpoints when its turn has ended.
pub(super) struct SideWrites {
    gate: Arc<WriteGate>,
    wal_pages: Arc<AtomicI32>,
}

impl SideWrites {
    /// For `conn`, open on `path`; replaces its automatic checkpoint (itself a
    /// WAL hook).
    pub(super) fn install(conn: &mut Connection, path: &Path) -> rusqlite::Result<SideWrites> {
        let wal_pages = Arc::new(AtomicI32::new(0));
        let seen = Arc::clone(&wal_pages);
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, n: c_int| {
            seen.store(n, Ordering::Relaxed);
            Ok(())
        }))?;
        Ok(SideWrites {
            gate: WriteGate::for_file(path),
            wal_pages,
        })
    }

    /// Runs the write `f` in a turn, then checkpoints if the WAL is due, as the
    /// ledger's checkpointer does ([`super::writer::checkpoint`]: passes beside
    /// the writers, the last few frames in a turn; with another checkpoint
    /// running, or after a failure, the WAL is left for the next one).
    pub(super) fn write<T>(
        &self,
        conn: &mut Connection,
        f: impl FnOnce(&mut Connection) -> T,
    ) -> T {
        let turn = self.gate.turn();
        let written = f(conn);
        drop(turn);
        if self.wal_pages.load(Ordering::Relaxed) >= super::writer::CHECKPOINT_PAGES {
            self.wal_pages.store(0, Ordering::Relaxed);
            if let Err(e) = super::writer::checkpoint(conn, &self.gate) {
                tracing::warn!("WAL checkpoint after an approvals write failed: {e}");
            }
        }
        written
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Waits until `n` threads sleep on the gate. The deadline only turns a
    /// writer that never queues (a hang) into a failure; passing never depends on it.
    pub(in crate::store) fn until_waiting(gate: &WriteGate, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
        while gate.waiting() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} writers queued at the gate",
                gate.waiting()
            );
            std::thread::yield_now();
        }
    }

    /// The defect: a publish waiting for the write lock lost to the ledger's
    /// writer, which took it again right after each commit. With the gate, a
    /// writer that asks while another holds its turn goes before the holder's
    /// next turn.
    #[test]
    fn a_waiting_publish_writes_before_the_ledger_writers_next_batch() {
        let gate = Arc::new(WriteGate::default());
        let (order_tx, order) = mpsc::channel();
        let ledger_batch = gate.turn();
        let publish = {
            let (gate, order_tx) = (gate.clone(), order_tx.clone());
            std::thread::spawn(move || {
                let _turn = gate.turn();
                order_tx.send("publish").unwrap();
            })
        };
        until_waiting(&gate, 1);
        // The writer ends its batch and asks at once for the next one.
        drop(ledger_batch);
        let next_batch = gate.turn();
        order_tx.send("ledger").unwrap();
        drop(next_batch);
        publish.join().unwrap();
        let order: Vec<_> = order.try_iter().collect();
        assert_eq!(order, ["publish", "ledger"]);
    }

    #[test]
    fn turns_follow_arrival_order() {
        let gate = Arc::new(WriteGate::default());
        let (order_tx, order) = mpsc::channel();
        let first = gate.turn();
        let mut threads = Vec::new();
        for i in 0..4 {
            let (mine, order_tx) = (gate.clone(), order_tx.clone());
            threads.push(std::thread::spawn(move || {
                let _turn = mine.turn();
                order_tx.send(i).unwrap();
            }));
            // Each draws its ticket before the next thread starts.
            until_waiting(&gate, i + 1);
        }
        drop(first);
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(order.try_iter().collect::<Vec<_>>(), [0, 1, 2, 3]);
    }

    #[test]
    fn two_spellings_of_one_file_share_a_gate() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cardgate.db");
        std::fs::write(&file, b"").unwrap();
        let spelled = dir.path().join(".").join("cardgate.db");
        let (a, b) = (WriteGate::for_file(&file), WriteGate::for_file(&spelled));
        assert!(Arc::ptr_eq(&a, &b));
        let other = dir.path().join("other.db");
        std::fs::write(&other, b"").unwrap();
        assert!(!Arc::ptr_eq(&a, &WriteGate::for_file(&other)));
    }
}

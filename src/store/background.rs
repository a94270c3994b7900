//! How the store's background threads (the writer and the checkpointer) share a
//! core with the threads that answer requests. In `async` durability they run as
//! `SCHED_BATCH` threads, so that their waking never preempts a request in
//! progress. In `sync` the checkpointer keeps the normal policy, and the writer is
//! a batch thread only while no request waits for it ([`WriterPolicy`]).
//!
//! The writer wakes for every batch; with the normal policy the kernel switched to
//! it at once, in the middle of the request thread's work, over a thousand times a
//! second under load, and each batch carried a few decisions (36 in `async`, 10 in
//! `sync`). As batch threads they keep their share of the CPU (their nice value is
//! untouched: `SCHED_BATCH` only stops wake-up preemption) but run when the request
//! thread waits or its time slice ends, and their batches grow: under the closed
//! loop on a core of its own, `async` went from 31.6–33.6k to 36.8–37.9k approvals
//! a second and `sync` from 21.1–21.2k to 24.1–24.5k (BENCHMARKS.md, "The store's
//! threads as batch threads").
//!
//! But a batch thread preempts no one: not the request thread, and not any other
//! process busy on the same core either. An `async` answer does not wait for the
//! writer, so there the policy only delays a commit by a time slice. A `sync`
//! approval waits for its commit, and the checkpointer's last pass holds the writer
//! at the gate: beside a CPU-bound neighbour (k6 on the same two cores, 2,379
//! req/s) `sync`'s server p99 was 22.9–23.5 ms as batch threads against 4.7–6.1 ms
//! with the normal policy (BENCHMARKS.md, "A busy neighbour and the batch
//! threads"). With the normal policy throughout, though, `sync` lost a fifth of its
//! throughput where nobody waits (declines, re-sent events: wrk's load), since the
//! writer then woke for every few rows instead of hundreds. So the writer switches:
//! a batch thread for a batch nobody waits for, the normal policy for one somebody
//! does, and a request about to wait gives a batch writer the normal policy before
//! it queues, so the wake-up it causes preempts whatever runs on the writer's core.
//! The switches are system calls only when the kind of work changes; a run of
//! approvals or of declines makes none.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use super::Durability;

/// Makes the calling thread a `SCHED_BATCH` thread, keeping its nice value. Other
/// systems than Linux have no such policy: nothing to do there.
pub(super) fn run_as_batch() -> std::io::Result<()> {
    set_policy(0, true)
}

/// Sets the policy of thread `tid` (0: the calling thread) to `SCHED_BATCH` or
/// back to the normal `SCHED_OTHER`, keeping its nice value. A process may change
/// its own threads between the two without privileges.
fn set_policy(tid: i32, batch: bool) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        let policy = if batch {
            libc::SCHED_BATCH
        } else {
            libc::SCHED_OTHER
        };
        // The `libc` call that sets only the policy; the `thread-priority` crate's
        // also resets the nice value, which an operator may have set.
        #[allow(
            unsafe_code,
            reason = "one system call with no safe wrapper; measured (module docs)"
        )]
        // SAFETY: `param` is a valid `sched_param` that lives across the call, which
        // only reads it; `tid` is 0 (the calling thread) or the store writer's own
        // id, a thread of this process; no memory is shared with the kernel after.
        let rc = unsafe { libc::sched_setscheduler(tid, policy, &raw const param) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (tid, batch);
    Ok(())
}

/// The `sync` writer's policy, which follows its work: the normal policy while a
/// request waits for its commits, a batch thread while none does (decision rows of
/// declines and of re-sent events, which nobody waits for). Shared by the writer
/// and the request threads that queue a write they will wait for.
#[derive(Debug, Default)]
pub(super) struct WriterPolicy {
    /// The writer thread's id, once it runs (0 before).
    tid: AtomicI32,
    /// Whether the writer is a batch thread now.
    batch: AtomicBool,
    /// Set after a failed switch: the writer keeps the policy it has from then on
    /// (the kernel lets a process move its threads between the two policies, so
    /// only a sandbox that forbids the call gets here).
    stuck: AtomicBool,
}

impl WriterPolicy {
    /// On the writer thread, before its first batch (it starts with the normal
    /// policy).
    pub(super) fn started(&self) {
        self.tid.store(thread_id().unwrap_or(0), Ordering::Relaxed);
    }

    /// On the writer thread, with a batch taken: a batch thread for a batch nobody
    /// waits for, the normal policy for one somebody does.
    pub(super) fn for_batch(&self, waited: bool) {
        let tid_known = self.tid.load(Ordering::Relaxed) != 0;
        if !tid_known
            || self.stuck.load(Ordering::Relaxed)
            || self.batch.load(Ordering::Relaxed) != waited
        {
            return;
        }
        match set_policy(0, !waited) {
            // Set after the switch: a request that finds `batch` false is sure the
            // writer is not a batch thread from here on (module docs).
            Ok(()) => self.batch.store(!waited, Ordering::Release),
            Err(e) => self.stick(&e),
        }
    }

    /// On a request thread, before it queues a write it will wait for: a writer
    /// asleep as a batch thread would wake without preempting whatever runs on its
    /// core, so it gets the normal policy first.
    pub(super) fn before_wait(&self) {
        if !self.batch.load(Ordering::Acquire) || !self.batch.swap(false, Ordering::AcqRel) {
            return;
        }
        let tid = self.tid.load(Ordering::Relaxed);
        if tid != 0
            && let Err(e) = set_policy(tid, false)
        {
            self.stick(&e);
        }
    }

    fn stick(&self, e: &std::io::Error) {
        if !self.stuck.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "the store's writer thread stops switching its scheduling policy and keeps \
                 the one it has: {e}"
            );
        }
    }
}

/// The calling thread's kernel id, from `/proc/thread-self` (a link to
/// `<pid>/task/<tid>`); `None` where there is no such file. Without it the request
/// threads cannot give the writer the normal policy back, so it never leaves it.
fn thread_id() -> Option<i32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

/// Whether the store's background threads start as batch threads under
/// `durability` (the module docs say why `sync`'s do not).
pub(super) fn runs_as_batch(durability: Durability) -> bool {
    durability == Durability::Async
}

/// Gives the calling thread, a background thread of a store with `durability`,
/// its scheduling policy ([`runs_as_batch`]), and says so in the log if it cannot
/// (the thread then keeps the normal policy, which is correct, only slower).
pub(super) fn set_policy_or_warn(thread: &str, durability: Durability) {
    if !runs_as_batch(durability) {
        return;
    }
    if let Err(e) = run_as_batch() {
        tracing::warn!("the store's {thread} thread runs with the normal scheduling policy: {e}");
    }
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;

    /// `/proc/thread-self/stat`'s fields after the command name (field 3 first).
    fn stat_fields() -> Vec<i128> {
        stat_fields_of("/proc/thread-self/stat")
    }

    fn stat_fields_of(path: &str) -> Vec<i128> {
        let stat = std::fs::read_to_string(path).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name
            .split_whitespace()
            .skip(1) // the state letter; some fields are unsigned 64-bit
            .map(|f| f.parse().unwrap())
            .collect()
    }

    /// Policy (field 41) and nice value (field 19) of the calling thread.
    fn policy_and_nice() -> (i128, i128) {
        let f = stat_fields();
        // Field n is at index n - 4: the name (2) and state (3) are not in `f`.
        (f[41 - 4], f[19 - 4])
    }

    #[test]
    fn a_background_thread_runs_as_batch_and_keeps_its_nice_value() {
        std::thread::spawn(|| {
            let (policy, nice) = policy_and_nice();
            assert_eq!(policy, i128::from(libc::SCHED_OTHER), "a new thread");
            run_as_batch().unwrap();
            assert_eq!(policy_and_nice(), (i128::from(libc::SCHED_BATCH), nice));
        })
        .join()
        .unwrap();
    }

    /// The policy of thread `tid` of this process.
    fn policy_of(tid: i32) -> i128 {
        stat_fields_of(&format!("/proc/self/task/{tid}/stat"))[41 - 4]
    }

    /// The `sync` writer is a batch thread only while nobody waits for it, and a
    /// request about to wait gives it the normal policy back before it queues, so
    /// the writer never wakes for a waiting approval as a batch thread (which a
    /// busy neighbour process would keep waiting).
    #[test]
    fn a_writer_that_a_request_will_wait_for_is_woken_with_the_normal_policy() {
        let policy = std::sync::Arc::new(WriterPolicy::default());
        let (batched_tx, batched) = std::sync::mpsc::channel();
        let (go_on_tx, go_on) = std::sync::mpsc::channel::<()>();
        let writer = {
            let policy = std::sync::Arc::clone(&policy);
            std::thread::spawn(move || {
                policy.started();
                policy.for_batch(true);
                assert_eq!(policy_and_nice().0, i128::from(libc::SCHED_OTHER), "waited");
                policy.for_batch(false);
                batched_tx.send(thread_id().unwrap()).unwrap();
                // Asleep, as the writer between batches; another thread switches it.
                go_on.recv().unwrap();
                policy_and_nice().0
            })
        };
        let tid = batched.recv().unwrap();
        assert_eq!(
            policy_of(tid),
            i128::from(libc::SCHED_BATCH),
            "nobody waits"
        );
        policy.before_wait();
        assert_eq!(
            policy_of(tid),
            i128::from(libc::SCHED_OTHER),
            "a request will wait"
        );
        // Once given back, a second waiter makes no system call (nothing to check
        // but that the policy stays).
        policy.before_wait();
        go_on_tx.send(()).unwrap();
        assert_eq!(writer.join().unwrap(), i128::from(libc::SCHED_OTHER));
    }
}

//! How the store's background threads (the writer and the checkpointer) share a
//! core with the threads that answer requests. In `async` durability they run as
//! `SCHED_BATCH` threads, so that their waking never preempts a request in
//! progress; in `sync` they keep the normal policy, because every approval waits
//! for them.
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
//! threads"). A production host is rarely a core per process, so `sync` gives the
//! closed-loop gain back for a tail that does not depend on the neighbours.

use super::Durability;

/// Makes the calling thread a `SCHED_BATCH` thread, keeping its nice value. Other
/// systems than Linux have no such policy: nothing to do there.
pub(super) fn run_as_batch() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // The `libc` call that sets only the policy; the `thread-priority` crate's
        // also resets the nice value, which an operator may have set.
        #[allow(
            unsafe_code,
            reason = "one system call with no safe wrapper; measured (module docs)"
        )]
        // SAFETY: `param` is a valid `sched_param` that lives across the call, which
        // only reads it; pid 0 names the calling thread, so no other thread is touched.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &raw const param) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether the store's background threads run as batch threads under `durability`
/// (the module docs say why `sync` keeps the normal policy).
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
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
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
}

//! The scheduling policy of the store's background threads, read from
//! `/proc/self/task` as the kernel applies it. One test in its own binary: no other
//! store's threads run in this process meanwhile, so every thread with the store's
//! names is this store's.
#![cfg(target_os = "linux")]
#![allow(
    clippy::unwrap_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

use cardgate::store::{Durability, Store};

/// The kernel's policy (field 41 of `stat`) of every thread of this process
/// named as the store's writer or checkpointer (`comm` keeps 15 bytes).
fn store_thread_policies() -> Vec<(String, i64)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        let name = name.trim_end().to_string();
        if name != "cardgate-store" && name != "cardgate-checkp" {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue; // ended between the two reads
        };
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        // Field n is word n - 3 after the name: the name is field 2.
        let policy = after_name.split_whitespace().nth(41 - 3).unwrap();
        found.push((name, policy.parse().unwrap()));
    }
    found.sort();
    found
}

/// A `sync` approval waits for the writer (and the writer, at times, for the
/// checkpointer's last pass): as batch threads they waited behind any busy process
/// on their core, and `sync`'s p99 beside k6 grew from ~5 to ~23 ms. So in `sync`
/// the writer is a batch thread only while nobody waits for it, and the
/// checkpointer never; `async` answers without them and keeps the batch policy.
#[test]
fn a_sync_store_thread_does_not_yield_its_wakeups_to_a_busy_neighbour() {
    let other = i64::from(libc::SCHED_OTHER);
    let batch = i64::from(libc::SCHED_BATCH);
    for (durability, policy) in [(Durability::Sync, other), (Durability::Async, batch)] {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path(), durability).unwrap();
        assert_eq!(
            store_thread_policies(),
            [
                ("cardgate-checkp".to_string(), policy),
                ("cardgate-store".to_string(), policy)
            ],
            "{durability:?}"
        );
        if durability == Durability::Sync {
            // A write nobody waits for (a decline's row): the writer becomes a batch
            // thread; the checkpointer keeps the normal policy.
            store.enqueue(vec![]).unwrap();
            until(|| store_thread_policies()[1].1 == batch);
            assert_eq!(
                store_thread_policies()[0],
                ("cardgate-checkp".to_string(), other)
            );
            // A write a request waits for (an approval's hold): the normal policy.
            store.commit_blocking(vec![]).unwrap();
            assert_eq!(
                store_thread_policies(),
                [
                    ("cardgate-checkp".to_string(), other),
                    ("cardgate-store".to_string(), other)
                ]
            );
        }
        store.close();
        until(|| store_thread_policies().is_empty());
    }
}

/// Waits until `done` holds: a closed store's threads leave `/proc` a moment after
/// `join` returns (once the thread let go of its memory), and a write queued
/// without waiting is committed when the writer gets to it. The deadline only
/// turns a hang into a failure; passing never depends on it.
fn until(done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "not within a minute");
        std::thread::yield_now();
    }
}

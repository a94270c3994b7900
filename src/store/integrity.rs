//! SQLite's `quick_check` of `cardgate.db`, once per file per process.
//!
//! `quick_check` reads every page of the file: at 864,000 decisions (1.8 GB) about 1 s
//! with the file in the page cache, 38 s once (the first read after a restart) and ~55
//! s from a cold cache (BENCHMARKS.md, "A large log: the file checked once, not at
//! every read"). Every connection used to run it on open, so a start-up checked the
//! file five times (the writer, the ledger's and the signals' rebuilds, the approvals
//! and rule-set connections), and every admin read of the decision log (`GET
//! /v1/decisions`, the review page's backtest window) checked it again before reading
//! ten rows, on a core the requests share. What the check is for is the start: the
//! service must not come up with an empty ledger in front of a file it cannot read.
//! Once a file passed in this process, later opens skip it: the process's own writes go
//! through SQLite, and a page damaged after the check fails the read that meets it, as
//! it would the moment after any check.
//!
//! Before the check the file is read front to back ([`read_ahead`]): the check's
//! page-by-page walk is random reads on a cold cache, the sequential read is not.
//!
//! A file is known by its device and inode, and the check keeps the file open
//! for as long as it remembers it: an inode is not reused while a descriptor
//! holds it, so a file deleted and replaced (a restored backup, a test's next
//! temporary directory) is a different file and is checked. At most
//! [`REMEMBERED`] files are remembered; a file forgotten is checked again.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use rusqlite::Connection;

use super::StoreError;

/// How many checked files a process remembers (a server opens one; a test
/// process opens one per test).
const REMEMBERED: usize = 64;

/// Files that passed the check in this process, oldest first: device, inode,
/// and the file held open so that the inode stays its.
static PASSED: Mutex<Vec<(u64, u64, File)>> = Mutex::new(Vec::new());

/// Runs `quick_check` on `conn`, open on `path`, unless the file passed it
/// before in this process; refuses the file with its name and SQLite's first
/// complaint if it fails.
pub(super) fn check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    // One `fstat` gives the identity.
    let held = File::open(path)
        .ok()
        .and_then(|f| f.metadata().ok().map(|m| (f, (m.dev(), m.ino()))));
    let remembered =
        |known: &[(u64, u64, File)], id: (u64, u64)| known.iter().any(|k| (k.0, k.1) == id);
    if let Some((_, id)) = &held {
        let known = PASSED.lock().unwrap_or_else(PoisonError::into_inner);
        if remembered(&known, *id) {
            return Ok(());
        }
    }
    if let Some((file, _)) = &held {
        read_ahead(file);
    }
    quick_check(conn, path)?;
    if let Some((file, (dev, ino))) = held {
        let mut known = PASSED.lock().unwrap_or_else(PoisonError::into_inner);
        if !remembered(&known, (dev, ino)) {
            if known.len() == REMEMBERED {
                known.remove(0);
            }
            known.push((dev, ino, file));
        }
    }
    Ok(())
}

/// Reads `file` front to back before `quick_check` walks it, so that the check (and
/// the start's rebuilds after it) find its pages in the page cache. `quick_check`
/// reads one 4 KiB page at a time in b-tree order, which on a cold cache is a random
/// read per page: ~55 s for a 1.8 GB log on this project's virtual disk, against 2.9 s
/// to read the same file in order (BENCHMARKS.md, "A large log").
///
/// Read whatever the file's size against the memory there is. A file bigger than the
/// page cache can hold loses its first pages before the check comes to them, but the
/// rest still spares the check its random reads: a cold start of a 2.1 GB log took
/// 19–20 s with it and 48–52 s without inside a 1.5 GiB memory cgroup, 31 s and 50 s
/// inside 1 GiB (BENCHMARKS.md). The worst case is one sequential read of the file.
/// Only a hint: a failed read ends it.
fn read_ahead(mut file: &File) {
    use std::io::Read;
    let mut buf = vec![0; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn quick_check(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let first: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| corrupt(e.to_string()))?;
    if first != "ok" {
        return Err(corrupt(first));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    /// Scribbles over the table's root page: a check that runs finds it.
    fn damage(path: &Path) {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        // Page 2 of a 4 KiB-page file: the table's root, its header scribbled over.
        f.seek(SeekFrom::Start(4096)).unwrap();
        f.write_all(&[0xff; 64]).unwrap();
        f.sync_all().unwrap();
    }

    fn file_with_a_table(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA page_size = 4096; CREATE TABLE t (x); INSERT INTO t VALUES (1), (2);",
        )
        .unwrap();
        path
    }

    /// The defect: every connection on the file, every admin read of the decision
    /// log included, ran `quick_check` over the whole file first (38 s for one
    /// `GET /v1/decisions?limit=2` at 864,000 decisions). A file that passed is
    /// not checked again in the same process.
    #[test]
    fn a_file_that_passed_quick_check_is_not_checked_again_by_every_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with_a_table(dir.path());
        check(&Connection::open(&path).unwrap(), &path).unwrap();
        damage(&path);
        let again = Connection::open(&path).unwrap();
        check(&again, &path).unwrap();
        // The damage is there: a check that runs finds it.
        assert!(matches!(
            quick_check(&again, &path),
            Err(StoreError::Corrupt { .. })
        ));
    }

    /// A file that replaces a checked one is checked: the checked one is held
    /// open, so its inode cannot be the new file's.
    #[test]
    fn a_file_put_in_a_checked_file_s_place_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with_a_table(dir.path());
        check(&Connection::open(&path).unwrap(), &path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let path = file_with_a_table(dir.path());
        damage(&path);
        let err = check(&Connection::open(&path).unwrap(), &path).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
}

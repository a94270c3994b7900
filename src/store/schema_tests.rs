//! What a commit writes and how older files are migrated to it (schemas 9 and 10,
//! issue 19): the pages a decision's commit puts through the WAL, and a file from
//! before both migrations read back whole.

use rusqlite::Connection;

use super::tests::{T, reserve, row, wal_pages};
use super::*;
use crate::journal::Held;

/// The page number of `table`'s b-tree root in the file at `path` (what a WAL
/// frame names when a commit writes that table's only page).
fn root_page(path: &std::path::Path, table: &str) -> u32 {
    Connection::open(path)
        .unwrap()
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
            [table],
            |r| r.get(0),
        )
        .unwrap()
}

/// The defect: `decisions` and `ledger_facts` were AUTOINCREMENT, so every
/// commit of a decision or a fact also rewrote their `sqlite_sequence` row: one
/// more page through the WAL (its checksum, its hash entry, its write and its
/// checkpoint) per commit. Since schema 9 a commit touches the tables it writes.
#[test]
fn a_decision_commit_writes_no_counter_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Sync).unwrap();
    let path = store.path().to_path_buf();
    let counter = root_page(&path, "sqlite_sequence");
    let before = wal_pages(&path).len();
    for i in 0..3 {
        let mut held = row(&format!("iauth_{i}"), T);
        held.event_id = format!("evt_held_{i}");
        store
            .commit_blocking(vec![
                Write::decision(row(&format!("iauth_d{i}"), T)),
                Write::held(held, Held { amount: 10, at: T }),
                Write::Fact(reserve(&format!("e{i}"), &format!("iauth_f{i}"), 5)),
            ])
            .unwrap();
    }
    let pages = wal_pages(&path);
    assert!(pages.len() > before, "the commits went through the WAL");
    assert!(
        !pages[before..].contains(&counter),
        "a commit rewrote sqlite_sequence (page {counter}): {:?}",
        &pages[before..]
    );
    let ids: Vec<i64> = store
        .decision_log(None)
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(ids, (1..=6).collect::<Vec<_>>());
}

/// The defect: an approval's hold was a row of its own in `ledger_reserves`, so
/// a held decision's commit wrote that table's page too: one more page through
/// the WAL per commit. Since schema 10 the hold is two columns of its decision row.
#[test]
fn a_held_decision_commit_writes_no_reserve_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Sync).unwrap();
    let path = store.path().to_path_buf();
    let conn = Connection::open(&path).unwrap();
    let reserves = root_page(&path, "ledger_reserves");
    let before = wal_pages(&path).len();
    let mut held = Vec::new();
    for i in 0..3 {
        let mut d = row(&format!("iauth_{i}"), T);
        d.event_id = format!("evt_{i}");
        let h = Held {
            amount: 100 + i64::from(i),
            at: T - 60,
        };
        held.push(h.fact(&d.text()));
        store.commit_blocking(vec![Write::held(d, h)]).unwrap();
    }
    let pages = wal_pages(&path);
    assert!(
        !pages[before..].contains(&reserves),
        "a commit wrote ledger_reserves (page {reserves}): {:?}",
        &pages[before..]
    );
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM ledger_reserves", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
    assert_eq!(store.facts().unwrap(), held);
}

/// A schema-8 file at `path`, as a build before schemas 9 and 10 left it:
/// decisions 1 and 7 (ids 2-6 given and their rows gone, which only a hand edit
/// does: what AUTOINCREMENT kept is then not what max + 1 gives), fact seq 3, and
/// decision 7's hold in `ledger_reserves`.
fn schema_8_file(path: &std::path::Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
    for sql in &MIGRATIONS[..8] {
        conn.execute_batch(sql).unwrap();
    }
    conn.execute_batch("PRAGMA user_version = 8;").unwrap();
    for (id, auth) in [(1, "iauth_a"), (7, "iauth_b")] {
        conn.execute(
            "INSERT INTO decisions (id, event_id, authorization_id, card, cardholder,
                 amount, currency, merchant_category, merchant_mcc, merchant_country,
                 merchant_name, approved, approved_amount, reason, ruleset, latency_us,
                 decided_at, event_json, spend_json, format)
             VALUES (?1, ?2, ?3, 'ic_1', 'ich_1', 100, 'usd', 'bakeries', '5462', 'US',
                 'BAKERY', 1, 100, 'approved', 'v1', 42, ?4, CAST(?5 AS BLOB), '{}', 0)",
            rusqlite::params![id, format!("evt_{auth}"), auth, T, r#"{"id":"evt"}"#],
        )
        .unwrap();
    }
    conn.execute(
        "INSERT INTO ledger_facts (seq, event_id, kind, card, cardholder, record_id, body)
         VALUES (3, 'e_old', 'reserve', 'ic_1', 'ich_1', 'iauth_old', ?1)",
        [serde_json::to_vec(&reserve("e_old", "iauth_old", 5)).unwrap()],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO ledger_reserves (decision_id, amount, window_at) VALUES (7, 250, ?1)",
        [T - 30],
    )
    .unwrap();
    let counters: i64 = conn
        .query_row(
            "SELECT SUM(seq) FROM sqlite_sequence WHERE name IN ('decisions', 'ledger_facts')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(counters, 7 + 3, "schema 8 kept counters");
}

/// A file written before schemas 9 and 10 (AUTOINCREMENT tables, holds in
/// `ledger_reserves`) is migrated in place: its rows read back as they were, new
/// ids continue after the highest, its holds come back before the new ones, the
/// file passes SQLite's full integrity check, and a reader that had the file
/// open before the migration reads the new rows.
#[test]
fn a_schema_8_file_is_migrated_in_place_and_keeps_its_rows_and_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    schema_8_file(&path);
    let reader = Connection::open(&path).unwrap();
    let count = |c: &Connection| -> i64 {
        c.query_row("SELECT COUNT(*) FROM decisions", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(count(&reader), 2);

    let store = Store::open(dir.path(), Durability::Sync).unwrap();
    let conn = Connection::open(&path).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, i64::try_from(MIGRATIONS.len()).unwrap());
    let declared: String = conn
        .query_row(
            "SELECT group_concat(sql, ' ') FROM sqlite_schema
             WHERE name IN ('decisions', 'ledger_facts')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!declared.contains("AUTOINCREMENT"), "{declared}");
    let counters: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_sequence WHERE name IN ('decisions', 'ledger_facts')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(counters, 0);

    let mut held_row = row("iauth_held", T);
    held_row.event_id = "evt_iauth_held".into();
    let hold = Held { amount: 40, at: T };
    let new_hold = hold.fact(&held_row.text());
    store
        .commit_blocking(vec![
            Write::decision(row("iauth_new", T)),
            Write::Fact(reserve("e_new", "iauth_new", 7)),
            Write::held(held_row, hold),
        ])
        .unwrap();
    let old_hold = Held {
        amount: 250,
        at: T - 30,
    }
    .fact(
        &LoggedDecision {
            event_id: "evt_iauth_b".into(),
            ..row("iauth_b", T)
        }
        .text(),
    );
    assert_eq!(
        store.facts().unwrap(),
        vec![
            reserve("e_old", "iauth_old", 5),
            reserve("e_new", "iauth_new", 7),
            old_hold,
            new_hold
        ]
    );
    let log = store.decision_log(None).unwrap();
    let ids: Vec<(i64, &str)> = log
        .iter()
        .map(|d| (d.id, d.authorization_id.as_str()))
        .collect();
    assert_eq!(
        ids,
        vec![
            (1, "iauth_a"),
            (7, "iauth_b"),
            (8, "iauth_new"),
            (9, "iauth_held")
        ]
    );
    let seqs: Vec<i64> = conn
        .prepare("SELECT seq FROM ledger_facts ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(seqs, vec![3, 4]);
    assert_eq!(count(&reader), 4, "the reader opened before the migration");
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

/// The minute rows of the file at `path`, oldest minute first.
fn minute_marks(path: &std::path::Path) -> Vec<(i64, i64)> {
    Connection::open(path)
        .unwrap()
        .prepare("SELECT minute, first_id FROM decision_minutes ORDER BY minute")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// How many indexes `decisions` has in the file at `path`.
fn indexes_of_decisions(path: &std::path::Path) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'decisions'",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// The defect: every commit of a decision also appended to the `decided_at`
/// index's last leaf: one more page through the WAL per commit. Since schema 11
/// the log is found by time through `decision_minutes`, which a commit writes
/// only for the first decision of a minute.
#[test]
fn a_decision_commit_writes_no_time_index_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Sync).unwrap();
    let path = store.path().to_path_buf();
    assert_eq!(indexes_of_decisions(&path), 0, "decisions has an index");
    let minutes = root_page(&path, "decision_minutes");
    let commit = |id: &str, at: i64| {
        store
            .commit_blocking(vec![Write::decision(row(id, at))])
            .unwrap();
    };
    assert_eq!(T % 60, 0, "T starts a minute");
    commit("iauth_0", T);
    let before = wal_pages(&path).len();
    for i in 1..4 {
        commit(&format!("iauth_{i}"), T + 10 * i64::from(i));
    }
    let pages = wal_pages(&path);
    assert!(
        !pages[before..].contains(&minutes),
        "a commit in a marked minute wrote decision_minutes (page {minutes}): {:?}",
        &pages[before..]
    );
    let before = pages.len();
    commit("iauth_4", T + 60);
    assert!(wal_pages(&path)[before..].contains(&minutes));
    assert_eq!(minute_marks(&path), vec![(T / 60, 1), (T / 60 + 1, 5)]);
}

/// A schema-10 file, as a build before schema 11 left it: decisions with the
/// `decided_at` index, at the times given (ids 1, 2, ... in that order).
fn schema_10_file(path: &std::path::Path, times: &[i64]) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL;").unwrap();
    for (i, sql) in MIGRATIONS[..10].iter().enumerate() {
        schema::apply(&conn, sql, i + 1).unwrap();
    }
    for (i, at) in times.iter().enumerate() {
        conn.execute(
            "INSERT INTO decisions (event_id, authorization_id, card, cardholder,
                 amount, currency, merchant_category, merchant_mcc, merchant_country,
                 merchant_name, approved, approved_amount, reason, ruleset, latency_us,
                 decided_at, event_json, spend_json, format)
             VALUES (?1, ?2, 'ic_1', 'ich_1', 100, 'usd', 'bakeries', '5462', 'US',
                 'BAKERY', 1, 100, 'approved', 'v1', 42, ?3, CAST('{}' AS BLOB), '{}', 0)",
            rusqlite::params![format!("evt_{i}"), format!("iauth_{i}"), at],
        )
        .unwrap();
    }
}

/// The ids `read` finds decided at or after each of `sinces`.
fn found_since(read: impl Fn(Option<i64>) -> Vec<i64>, sinces: &[i64]) -> Vec<Vec<i64>> {
    sinces.iter().map(|s| read(Some(*s))).collect()
}

/// A file from before schema 11 is searched by time through its index while it
/// is read-only and unmigrated, and through the minute table built from its rows
/// once migrated: the same rows either way, a row decided after the clock went
/// back included.
#[test]
fn a_schema_10_file_is_found_by_time_before_and_after_its_migration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    // Minute -2 after minute 1 (the clock went back), a second row in minute 0.
    let times = [T - 1, T, T + 70, T - 100, T + 59];
    schema_10_file(&path, &times);
    let sinces = [T - 200, T - 100, T - 99, T, T + 1, T + 60, T + 71];
    let expected: Vec<Vec<i64>> = sinces
        .iter()
        .map(|s| {
            (1..)
                .zip(times)
                .filter(|(_, at)| at >= s)
                .map(|(id, _)| id)
                .collect()
        })
        .collect();
    let read = |since| {
        let ids: Vec<i64> = read_decision_log(&path, since)
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect();
        let filter = DecisionFilter {
            since,
            ..DecisionFilter::default()
        };
        assert_eq!(count_decisions(&path, &filter).unwrap(), ids.len() as u64);
        ids
    };
    assert_eq!(found_since(read, &sinces), expected, "before the migration");

    drop(Store::open(dir.path(), Durability::Sync).unwrap());
    assert_eq!(
        minute_marks(&path),
        vec![
            (T / 60 - 2, 4),
            (T / 60 - 1, 1),
            (T / 60, 2),
            (T / 60 + 1, 3)
        ]
    );
    assert_eq!(indexes_of_decisions(&path), 0);
    assert_eq!(found_since(read, &sinces), expected, "after the migration");
}

use super::*;
use rusqlite::Connection;

use crate::decision::{Currency, Interval};
use crate::journal::Held;
use crate::ledger::{AuthMeta, AuthStatus, Fact, Ledger};

pub(super) const T: i64 = 1_795_003_020;

pub(super) fn reserve(evt: &str, id: &str, amount: i64) -> Fact {
    Fact::Reserve {
        event_id: evt.into(),
        auth: AuthMeta {
            id: id.into(),
            card: "ic_1".into(),
            cardholder: "ich_1".into(),
            created: T,
            currency: "usd".into(),
            category: "bakeries".into(),
            mcc: "5462".into(),
        },
        amount,
    }
}

pub(super) fn row(id: &str, decided_at: i64) -> LoggedDecision {
    LoggedDecision {
        id: 0,
        event_id: format!("evt_{id}"),
        authorization_id: id.into(),
        card: "ic_1".into(),
        cardholder: "ich_1".into(),
        amount: 100,
        currency: "usd".into(),
        merchant_category: "bakeries".into(),
        merchant_mcc: "5462".into(),
        merchant_country: "US".into(),
        merchant_name: "BAKERY".into(),
        approved: true,
        approved_amount: 100,
        reason: "approved".into(),
        rule: None,
        ruleset: "v1".into(),
        latency_us: 42,
        decided_at,
        event_json: bytes::Bytes::from_static(br#"{"id":"evt"}"#),
        spend_json: r#"{"card":{}}"#.into(),
        shadow_rules: None,
        format: 0,
        seen: Vec::new(),
        blobs: Vec::new(),
    }
}

fn rebuilt(store: &Store) -> Ledger {
    let l = Ledger::new();
    for f in store.facts().unwrap() {
        l.apply(&f).unwrap();
    }
    l
}

/// `cardgate_store_commit_batch_size`'s last finite bucket is the largest batch.
#[test]
fn the_batch_size_buckets_reach_the_largest_batch() {
    #[expect(clippy::cast_precision_loss, reason = "1024 is exact")]
    let max = super::MAX_BATCH as f64;
    assert_eq!(crate::metrics::BATCH_BUCKETS.last().copied(), Some(max));
}

#[test]
fn restart_preserves_totals_and_dedupes_event_ids() {
    let dir = tempfile::tempdir().unwrap();
    let live = Ledger::new();
    {
        let store = Store::open(dir.path(), Durability::Sync).unwrap();
        let facts = vec![
            reserve("e1", "iauth_1", 1000),
            reserve("e2", "iauth_2", 2500),
            Fact::Authorization {
                event_id: "e3".into(),
                event_created: T + 9,
                auth: match reserve("x", "iauth_2", 0) {
                    Fact::Reserve { auth, .. } => auth,
                    _ => unreachable!(),
                },
                approved: true,
                status: AuthStatus::Reversed,
                amount: 0,
                approved_requests: 1,
            },
        ];
        for f in &facts {
            live.apply(f).unwrap();
        }
        let writes: Vec<Write> = facts.into_iter().map(Write::Fact).collect();
        store.commit_blocking(writes).unwrap();
        // The same event id again is ignored by the unique index.
        store
            .commit_blocking(vec![Write::Fact(reserve("e1", "iauth_1", 1000))])
            .unwrap();
        store
            .enqueue(vec![Write::decision(row("iauth_1", T))])
            .unwrap();
    }
    let store = Store::open(dir.path(), Durability::Async).unwrap();
    assert_eq!(store.facts().unwrap().len(), 3);
    let again = rebuilt(&store);
    assert_eq!(again.all_totals(), live.all_totals());
    let usd = Currency::parse("usd").unwrap();
    assert_eq!(
        again.total("ich_1", Some("ic_1"), Interval::Daily, T, usd),
        1000
    );
    // The decision logged without waiting was committed by the shutdown drain.
    let log = store.decision_log(None).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(&log[0].event_json[..], br#"{"id":"evt"}"#);
}

#[test]
fn decision_log_filters_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Sync).unwrap();
    let rows = (0..5).map(|i| Write::decision(row(&format!("iauth_{i}"), 100 + i)));
    store.commit_blocking(rows.collect()).unwrap();
    let all = store.decision_log(None).unwrap();
    assert_eq!(all.len(), 5);
    let later = store.decision_log(Some(103)).unwrap();
    assert_eq!(
        later
            .iter()
            .map(|d| d.authorization_id.as_str())
            .collect::<Vec<_>>(),
        ["iauth_3", "iauth_4"]
    );
    let mut expected = row("iauth_4", 104);
    expected.id = later[1].id;
    assert_eq!(later[1], expected);
}

#[test]
fn corrupt_file_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = Store::open(dir.path(), Durability::Sync).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    // The file was not replaced by an empty database.
    assert_eq!(std::fs::read(&path).unwrap(), vec![0x5a; 8192]);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), Durability::Sync).unwrap());
    let path = dir.path().join(FILE_NAME);
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let err = Store::open(dir.path(), Durability::Sync).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
}

#[test]
fn unusable_data_dir_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the data directory should be: nothing can be created
    // under it (this holds for root too, unlike file modes).
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let data = blocker.join("data");
    let msg = Store::open(&data, Durability::Sync)
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&data.display().to_string()), "{msg}");
}

/// Makes every insert of a decision row for `iauth_boom` fail, from a second
/// connection (the writer's statements, prepared before this schema change, must
/// be re-prepared and still work).
pub(super) fn refuse_iauth_boom(store: &Store) {
    Connection::open(store.path())
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON decisions
             WHEN NEW.authorization_id = 'iauth_boom'
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
}

#[test]
fn a_failed_batch_leaves_nothing_and_its_blobs_are_written_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Sync).unwrap();
    refuse_iauth_boom(&store);
    let blob: (i64, std::sync::Arc<[u8]>) = (7, std::sync::Arc::from(&b"program"[..]));
    let mut boom = row("iauth_boom", T);
    boom.blobs = vec![blob.clone()];
    let err = store
        .commit_blocking(vec![
            Write::Fact(reserve("e1", "iauth_1", 1000)),
            Write::decision(boom),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(store.facts().unwrap().is_empty());
    assert!(store.decision_log(None).unwrap().is_empty());
    assert!(read_decision_blobs(store.path()).unwrap().is_empty());

    let mut ok = row("iauth_2", T);
    ok.blobs = vec![blob];
    store
        .commit_blocking(vec![
            Write::Fact(reserve("e2", "iauth_2", 500)),
            Write::decision(ok),
        ])
        .unwrap();
    assert_eq!(store.facts().unwrap().len(), 1);
    assert_eq!(store.decision_log(None).unwrap().len(), 1);
    let blobs = read_decision_blobs(store.path()).unwrap();
    assert_eq!(blobs.get(&7).map(Vec::as_slice), Some(&b"program"[..]));
}

#[test]
fn a_new_file_gets_4k_pages_and_an_existing_one_keeps_its_own() {
    let page_size = |path: &std::path::Path| -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap()
    };
    let new = tempfile::tempdir().unwrap();
    drop(Store::open(new.path(), Durability::Sync).unwrap());
    assert_eq!(page_size(&new.path().join(FILE_NAME)), 4096);

    let old = tempfile::tempdir().unwrap();
    let path = old.path().join(FILE_NAME);
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA page_size = 1024; CREATE TABLE t (x);")
        .unwrap();
    let store = Store::open(old.path(), Durability::Sync).unwrap();
    store
        .commit_blocking(vec![Write::decision(row("iauth_1", T))])
        .unwrap();
    assert_eq!(store.decision_log(None).unwrap().len(), 1);
    assert_eq!(page_size(&path), 1024);
}

/// The hold an approval keeps beside its row (schema 7) reads back as the very
/// reserve fact the ledger made, after the reserves written the old way (a file
/// from before schema 7 keeps them in `ledger_facts`), and a restart rebuilds the
/// same totals from both.
#[test]
fn a_hold_kept_beside_its_row_reads_back_as_its_reserve() {
    let dir = tempfile::tempdir().unwrap();
    let live = Ledger::new();
    let old = reserve("e1", "iauth_1", 1000);
    let mut held_row = row("iauth_2", T);
    held_row.event_id = "e2".into();
    let held = Held {
        amount: 2500,
        at: T - 60,
    };
    let new = held.fact(&held_row.text());
    assert_eq!(
        new,
        Fact::Reserve {
            event_id: "e2".into(),
            auth: AuthMeta {
                created: T - 60,
                ..match reserve("e2", "iauth_2", 2500) {
                    Fact::Reserve { auth, .. } => auth,
                    _ => unreachable!(),
                }
            },
            amount: 2500,
        }
    );
    {
        let store = Store::open(dir.path(), Durability::Sync).unwrap();
        store
            .commit_blocking(vec![
                Write::Fact(old.clone()),
                Write::decision(row("iauth_9", T)),
                Write::held(held_row, held),
            ])
            .unwrap();
        live.apply(&old).unwrap();
        live.apply(&new).unwrap();
    }
    let store = Store::open(dir.path(), Durability::Sync).unwrap();
    assert_eq!(store.facts().unwrap(), vec![old.clone(), new.clone()]);
    assert_eq!(rebuilt(&store).all_totals(), live.all_totals());
    assert_eq!(read_facts(store.path(), Some("ich_2")).unwrap(), Vec::new());
    assert_eq!(
        read_facts(store.path(), Some("ich_1")).unwrap(),
        vec![old, new]
    );
    let log = store.decision_log(None).unwrap();
    assert_eq!(log.len(), 2, "both rows are in the decision log");
}

/// A batch whose held row fails keeps neither the row nor its hold.
#[test]
fn a_failed_held_row_keeps_no_hold() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Sync).unwrap();
    Connection::open(store.path())
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON decisions
             WHEN NEW.hold_amount = 13
             BEGIN SELECT RAISE(ABORT, 'refused'); END;",
        )
        .unwrap();
    let held = |amount| Held { amount, at: T };
    let err = store
        .commit_blocking(vec![
            Write::held(row("iauth_1", T), held(100)),
            Write::held(row("iauth_2", T), held(13)),
        ])
        .unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");
    assert!(store.facts().unwrap().is_empty());
    assert!(store.decision_log(None).unwrap().is_empty());
    store
        .commit_blocking(vec![Write::held(row("iauth_3", T), held(7))])
        .unwrap();
    let facts = store.facts().unwrap();
    assert_eq!(facts.len(), 1);
    assert!(matches!(&facts[0], Fact::Reserve { amount: 7, auth, .. } if auth.id == "iauth_3"));
}

/// Commits `batches` batches of `rows` decisions whose bodies take ten 4 KiB WAL
/// pages each.
fn commit_ten_page_rows(store: &Store, batches: usize, rows: usize) {
    let body = bytes::Bytes::from(vec![b' '; 40_000]);
    for batch in 0..batches {
        let writes = (0..rows).map(|i| {
            let mut r = row(&format!("iauth_{batch}_{i}"), T);
            r.event_json = body.clone();
            Write::decision(r)
        });
        store.commit_blocking(writes.collect()).unwrap();
    }
}

/// Waits up to a minute for the store's checkpointer to complete a checkpoint;
/// fails with `what` was written when none does.
fn await_checkpoint(store: &Store, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    while store.checkpoints() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint after {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The writer hands WAL checkpoints to their own thread (SQLite's automatic one
/// ran inside the commit that crossed the threshold): once the WAL passes the
/// threshold a checkpoint completes there, and nothing written is lost by it.
#[test]
fn the_wal_is_checkpointed_off_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Sync).unwrap();
    // ~12,000 WAL pages: past the thresholds of both durabilities.
    commit_ten_page_rows(&store, 20, 60);
    await_checkpoint(&store, "~12,000 WAL pages");
    assert_eq!(store.decision_log(None).unwrap().len(), 1200);
}

/// A sync WAL walked ever longer WAL-index hash chains, one per 4,096-frame block,
/// because it started over only past 10,000 pages: in `sync` the checkpoint comes
/// at 1,000 (`writer::checkpoint_pages`), long before 10,000.
#[test]
fn a_sync_wal_starts_over_long_before_ten_thousand_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Sync).unwrap();
    commit_ten_page_rows(&store, 1, 150);
    await_checkpoint(&store, "~1,500 WAL pages in sync");
    assert_eq!(store.decision_log(None).unwrap().len(), 150);
}

/// The defect: under steady writes the WAL never started over. A checkpoint
/// beside the writer's commits did not copy the frames they appended meanwhile,
/// so the WAL stayed past its threshold and every commit asked for one more
/// checkpoint: back to back, each an fsync of the WAL beside the writer's own.
/// Now the checkpoint copies those frames in a turn at the gate, and the next
/// transaction writes the WAL from its start.
#[test]
fn a_checkpoint_beside_the_writers_commits_lets_the_wal_start_over() {
    use super::gate::{WriteGate, tests::until_waiting};
    use super::schema::open_checked;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let writer = open_checked(&path, Durability::Sync).unwrap();
    let checkpointer = open_checked(&path, Durability::Sync).unwrap();
    let write = |key: &str, bytes: usize| {
        writer
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)",
                rusqlite::params![key, " ".repeat(bytes)],
            )
            .unwrap();
    };
    write("before", 400_000);
    let gate = WriteGate::for_file(&path);
    let turn = gate.turn();
    std::thread::scope(|s| {
        let gate = &gate;
        let ckpt = s.spawn(move || super::writer::checkpoint(&checkpointer, gate));
        // The copy of "before" is done and the catch-up waits for its turn: a
        // commit of the writer lands in between, as under load.
        until_waiting(gate, 1);
        write("during", 400_000);
        drop(turn);
        assert!(
            ckpt.join().unwrap().unwrap(),
            "another checkpoint was running"
        );
    });
    // ~100 frames now; one small commit after them unless the WAL starts over.
    let before = wal_frames(&path);
    write("after", 10);
    let after = wal_frames(&path);
    assert!(
        after < before,
        "the WAL did not start over: {before} frames, then {after}"
    );
}

/// The defect: a checkpoint that found another connection's checkpoint running
/// (the ledger's checkpointer and an approvals or rule-set write's, in one
/// process) failed with "database is locked": a warning and a store error counted
/// for a WAL the other one was copying. Now it reports that it did not run.
#[test]
fn a_checkpoint_beside_another_connections_checkpoint_is_not_a_failure() {
    use super::gate::WriteGate;
    use super::schema::open_checked;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let writer = open_checked(&path, Durability::Sync).unwrap();
    let other = open_checked(&path, Durability::Sync).unwrap();
    let ours = open_checked(&path, Durability::Sync).unwrap();
    writer
        .execute("INSERT INTO meta (key, value) VALUES ('k', 'v')", [])
        .unwrap();
    // A FULL checkpoint takes SQLite's one checkpoint lock, then waits in its busy
    // handler for the write lock this transaction holds.
    writer.execute_batch("BEGIN IMMEDIATE").unwrap();
    let gate = WriteGate::for_file(&path);
    std::thread::scope(|s| {
        // It may find ours holding the lock first (SQLite answers at once): it
        // tries again until it holds the lock itself. The deadline only turns a
        // hang into a failure.
        let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
        let full = s.spawn(move || {
            loop {
                match other.wal_checkpoint_v2(None::<&str>, rusqlite::wal::CheckpointMode::FULL) {
                    Err(e)
                        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                            && std::time::Instant::now() < deadline => {}
                    r => return r,
                }
            }
        });
        // Until the FULL checkpoint holds the lock, ours runs and copies.
        let seen = loop {
            match super::writer::checkpoint(&ours, &gate) {
                Ok(true) if std::time::Instant::now() < deadline => {}
                r => break r,
            }
        };
        writer.execute_batch("COMMIT").unwrap();
        full.join().unwrap().unwrap();
        assert!(
            matches!(seen, Ok(false)),
            "beside the other checkpoint: {seen:?}"
        );
    });
}

/// The frames in the WAL of `path` (see [`wal_pages`]).
fn wal_frames(path: &std::path::Path) -> i64 {
    i64::try_from(wal_pages(path).len()).unwrap()
}

/// The page each frame in the WAL of `path` holds, in order, from its header and
/// size (SQLite keeps no count a test can read without checkpointing): frames are
/// written in order, each 24 bytes of header (the page number first) and a page,
/// after the 32-byte file header; the highest valid one is found by the salt each
/// frame repeats from the header.
pub(super) fn wal_pages(path: &std::path::Path) -> Vec<u32> {
    let wal = std::fs::read(path.with_extension("db-wal")).unwrap();
    let page = usize::try_from(u32::from_be_bytes(wal[8..12].try_into().unwrap())).unwrap();
    let salt = &wal[16..24];
    let frame = 24 + page;
    let mut pages = Vec::new();
    let mut at = 32;
    while at + frame <= wal.len() && &wal[at + 8..at + 16] == salt {
        pages.push(u32::from_be_bytes(wal[at..at + 4].try_into().unwrap()));
        at += frame;
    }
    pages
}

/// The ledger's writer, the approvals store and the rule-set store of one file
/// queue at one gate (the defect it pins: a publish starved by the writer's
/// back-to-back commits failed with "database is locked"). While the test holds
/// the turn, each one's write waits at the gate, and completes once it is let go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_writer_of_the_file_queues_at_one_gate() {
    use super::gate::{WriteGate, tests::until_waiting};
    use crate::approvals::{ApprovalStore, Change, Scope};
    use crate::rules::published::{NewRuleset, RulesetStore};

    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(dir.path(), Durability::Sync).unwrap());
    let approvals = approvals::SqliteApprovalStore::open(dir.path()).unwrap();
    let rulesets = rulesets::SqliteRulesetStore::open(&dir.path().join(".")).unwrap();
    let gate = WriteGate::for_file(&dir.path().join(FILE_NAME));

    let turn = gate.turn();
    let ledger = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || {
            store.commit_blocking(vec![Write::Fact(reserve("e1", "iauth_1", 1000))])
        })
    };
    let approval = tokio::spawn(async move {
        approvals
            .apply(vec![Change::ClearOverride {
                scope: Scope::Card,
                id: "ic_1".into(),
            }])
            .await
    });
    let publish = tokio::spawn(async move {
        rulesets
            .publish(NewRuleset {
                version: "v1",
                source: "",
                published_at: T,
                actor: "test",
            })
            .await
    });
    let waiting = gate.clone();
    tokio::task::spawn_blocking(move || until_waiting(&waiting, 3))
        .await
        .unwrap();
    drop(turn);
    ledger.await.unwrap().unwrap();
    approval.await.unwrap().unwrap();
    assert_eq!(publish.await.unwrap().unwrap(), 1);
    assert_eq!(store.facts().unwrap().len(), 1);
}

/// An approvals or rule-set connection checkpoints after its turn at the gate,
/// not inside its COMMIT (SQLite's automatic checkpoint), where the ledger's
/// writer would wait behind the copy.
#[test]
fn a_side_write_checkpoints_after_its_turn_not_in_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (mut conn, path) = open_for_approvals(dir.path()).unwrap();
    let writes = super::gate::SideWrites::install(&mut conn, &path).unwrap();
    let db_size = || std::fs::metadata(&path).unwrap().len();
    writes.write(&mut conn, |conn| {
        // ~11,000 WAL pages: past the threshold in one commit.
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('big', ?1)",
            [" ".repeat(45_000_000)],
        )
        .unwrap();
        assert!(db_size() < 1_000_000, "checkpointed inside the commit");
    });
    assert!(db_size() > 40_000_000, "not checkpointed after the turn");
}

/// Request bodies as Stripe sends them (the fixture, pretty-printed) and compact,
/// for `card`, with `n` in the event id and the amount.
fn request_body(card: &str, n: u32, compact: bool) -> bytes::Bytes {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/events/issuing_authorization.request.json"),
    )
    .unwrap();
    let mut ev: serde_json::Value = serde_json::from_str(&text).unwrap();
    ev["id"] = format!("evt_{card}_{n}").into();
    ev["data"]["object"]["card"]["id"] = card.into();
    ev["data"]["object"]["pending_request"]["amount"] = (100 + n).into();
    let body = if compact {
        serde_json::to_vec(&ev).unwrap()
    } else {
        serde_json::to_vec_pretty(&ev).unwrap()
    };
    body.into()
}

fn parts_stored(store: &Store) -> i64 {
    Connection::open(store.path())
        .unwrap()
        .query_row("SELECT COUNT(*) FROM decision_parts", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_body_whose_card_object_is_stored_once_reads_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut bodies = Vec::new();
    let mut changed: serde_json::Value =
        serde_json::from_slice(&request_body("ic_a", 9, false)).unwrap();
    changed["data"]["object"]["card"]["metadata"] = serde_json::json!({"changed": "yes"});
    let changed = serde_json::to_vec_pretty(&changed).unwrap();
    for (card, body) in [
        ("ic_a", request_body("ic_a", 1, false)),
        ("ic_a", request_body("ic_a", 2, false)),
        ("ic_b", request_body("ic_b", 3, true)),
        ("ic_a", request_body("ic_a", 4, false)),
        ("ic_b", request_body("ic_b", 5, true)),
        // The card changed: its object is stored again.
        ("ic_a", changed.into()),
        (
            "ic_c",
            bytes::Bytes::from_static(br#"{"id":"evt_no_card"}"#),
        ),
    ] {
        let mut r = row(&format!("iauth_{}", bodies.len()), T);
        r.card = card.into();
        r.event_json = body.clone();
        bodies.push(body);
        // A store per row: the parts it knows start empty each time it opens.
        let store = Store::open(dir.path(), Durability::Sync).unwrap();
        store.commit_blocking(vec![Write::decision(r)]).unwrap();
    }
    let store = Store::open(dir.path(), Durability::Sync).unwrap();
    let read: Vec<_> = store
        .decision_log(None)
        .unwrap()
        .into_iter()
        .map(|d| d.event_json)
        .collect();
    assert_eq!(read, bodies);
    let log = crate::store::decisions::SqliteDecisionLog::new(dir.path());
    for (i, body) in bodies.iter().enumerate() {
        let id = i64::try_from(i + 1).unwrap();
        let d = log.get(id).unwrap().unwrap();
        assert_eq!(
            &d.event_json, body,
            "row {id} through the explorer's reader"
        );
    }
    // A store reopened per row starts with no parts known: one per stored card body.
    assert_eq!(parts_stored(&store), 6);

    // One store: a card's object is stored once, rows of the same batch included.
    let writes = (10..16)
        .map(|n| {
            let mut r = row(&format!("iauth_{n}"), T);
            r.card = "ic_a".into();
            r.event_json = request_body("ic_a", n, false);
            Write::decision(r)
        })
        .collect::<Vec<_>>();
    store.commit_blocking(writes[..3].to_vec()).unwrap();
    store.commit_blocking(writes[3..].to_vec()).unwrap();
    assert_eq!(parts_stored(&store), 7);
    // The card changed while the store knew it: stored again, then shared.
    let mut writes = writes;
    for n in 16..18 {
        let mut r = row(&format!("iauth_{n}"), T);
        r.card = "ic_a".into();
        r.event_json = bodies[5].clone();
        writes.push(Write::decision(r));
    }
    store.commit_blocking(writes[6..].to_vec()).unwrap();
    assert_eq!(parts_stored(&store), 8);
    let rows = store.decision_log(None).unwrap();
    assert_eq!(rows.len(), 7 + writes.len());
    for (w, d) in writes.iter().zip(&rows[7..]) {
        let Write::Decision(r) = w else {
            unreachable!()
        };
        assert_eq!(d.event_json, r.event_json);
    }
    let whole: i64 = Connection::open(store.path())
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM decisions WHERE card_part IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        whole, 1,
        "only the body without a card object is stored whole"
    );
    // What a person reads with the `sqlite3` shell.
    let conn = Connection::open(store.path()).unwrap();
    let mut stmt = conn
        .prepare("SELECT event_json FROM decision_bodies ORDER BY id")
        .unwrap();
    let viewed: Vec<Vec<u8>> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<Vec<u8>> = rows.iter().map(|d| d.event_json.to_vec()).collect();
    assert_eq!(viewed, expected);
}

#[test]
fn a_failed_batch_forgets_the_card_objects_it_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Sync).unwrap();
    refuse_iauth_boom(&store);
    let decision = |id: &str, n| {
        let mut r = row(id, T);
        r.card = "ic_a".into();
        r.event_json = request_body("ic_a", n, false);
        Write::decision(r)
    };
    // The first row stores the card's object, the second fails the batch: the
    // part is rolled back with it, and its id may be given to another part.
    store
        .commit_blocking(vec![decision("iauth_1", 1), decision("iauth_boom", 2)])
        .unwrap_err();
    assert_eq!(parts_stored(&store), 0);
    let ok = decision("iauth_3", 3);
    store.commit_blocking(vec![ok.clone()]).unwrap();
    assert_eq!(parts_stored(&store), 1);
    let Write::Decision(r) = ok else {
        unreachable!()
    };
    assert_eq!(
        store.decision_log(None).unwrap()[0].event_json,
        r.event_json
    );
}

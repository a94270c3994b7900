use super::*;
use rusqlite::Connection;

use crate::decision::{Currency, Interval};
use crate::ledger::{AuthMeta, AuthStatus, Fact, Ledger};

const T: i64 = 1_795_003_020;

fn reserve(evt: &str, id: &str, amount: i64) -> Fact {
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

fn row(id: &str, decided_at: i64) -> LoggedDecision {
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
        event_json: br#"{"id":"evt"}"#.to_vec(),
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
            .enqueue(vec![Write::Decision(Box::new(row("iauth_1", T)))])
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
    assert_eq!(log[0].event_json, br#"{"id":"evt"}"#.to_vec());
}

#[test]
fn decision_log_filters_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Sync).unwrap();
    let rows = (0..5).map(|i| Write::Decision(Box::new(row(&format!("iauth_{i}"), 100 + i))));
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

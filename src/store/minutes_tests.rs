//! The decision log found by time through `decision_minutes` (schema 11,
//! `minutes`): every reader, rows out of time order, a failed batch.

use super::tests::{T, refuse_iauth_boom, row};
use super::*;

/// Every reader's ids of the rows decided at or after `since`, oldest first: the
/// CLI's log, the backtest's count, the decisions explorer's search and the
/// review page's recent window.
fn ids_since(store: &Store, since: i64) -> Vec<i64> {
    let ids: Vec<i64> = store
        .decision_log(Some(since))
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    let filter = DecisionFilter {
        since: Some(since),
        ..DecisionFilter::default()
    };
    assert_eq!(
        count_decisions(store.path(), &filter).unwrap(),
        ids.len() as u64
    );
    let log = decisions::SqliteDecisionLog::new(store.path().parent().unwrap());
    let q = crate::journal::DecisionQuery {
        since: Some(since),
        limit: 100,
        ..Default::default()
    };
    let mut searched: Vec<i64> = log.search(&q).unwrap().0.iter().map(|d| d.id).collect();
    searched.reverse();
    assert_eq!(searched, ids, "search since {since}");
    let recent: Vec<i64> = log
        .recent(since, 100)
        .unwrap()
        .0
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(recent, ids, "recent since {since}");
    ids
}

/// The log is found by time through the first id of each minute (schema 11),
/// not an index on the time. A row decided after the clock went back lies after
/// rows of later minutes; every reader still finds it, and only what it asked for.
#[test]
fn a_row_decided_after_the_clock_went_back_is_found_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Sync).unwrap();
    let times = [T, T + 120, T - 300, T + 10];
    store
        .commit_blocking(vec![Write::decision(row("iauth_1", times[0]))])
        .unwrap();
    store
        .commit_blocking(
            times[1..]
                .iter()
                .enumerate()
                .map(|(i, at)| Write::decision(row(&format!("iauth_{}", i + 2), *at)))
                .collect(),
        )
        .unwrap();
    for since in [
        T - 301,
        T - 300,
        T - 299,
        T - 1,
        T,
        T + 5,
        T + 11,
        T + 120,
        T + 121,
    ] {
        let expected: Vec<i64> = (1..)
            .zip(times)
            .filter(|(_, at)| *at >= since)
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids_since(&store, since), expected, "since {since}");
    }
}

/// A batch that fails takes the minute row it wrote with it: the next row of
/// that minute writes it again, so a search by time still finds that row.
#[test]
fn a_failed_batch_leaves_its_minute_to_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Durability::Sync).unwrap();
    refuse_iauth_boom(&store);
    store
        .commit_blocking(vec![
            Write::decision(row("iauth_1", T)),
            Write::decision(row("iauth_boom", T)),
        ])
        .unwrap_err();
    store
        .commit_blocking(vec![Write::decision(row("iauth_2", T + 1))])
        .unwrap();
    let found = ids_since(&store, T);
    assert_eq!(found.len(), 1, "{found:?}");
}

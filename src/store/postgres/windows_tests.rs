//! Window totals in PostgreSQL (migration 7, `ledger_windows`): the SQL window
//! bounds against the Rust ones, the kept totals against the records' sums, what
//! a snapshot reads, a record moving between windows on both backends, and the
//! migration itself (existing records summed; an older replica's hold committed
//! while this build migrates).

use super::holds_tests::{T, auth, auth_event, backends, reserve_approved, txn};
use super::{Database, PgHolds};
use crate::decision::{Interval, Scope, SpendView};
use crate::ledger::{AuthStatus, Fact, Holds};
use crate::testing::{limit, usd};

/// `ledger_windows`, kept as records change, against the same totals summed
/// from `ledger_records` afresh (zero totals left out on both sides).
pub(super) async fn assert_windows_are_the_records_sums(db: &Database) {
    let client = db.client().await.unwrap();
    // Each total as one line of text, so the two reads compare as lists.
    let read = |sql: &'static str| {
        let client = &client;
        async move {
            let rows = client.query(sql, &[]).await.unwrap();
            rows.iter().map(|r| r.get(0)).collect::<Vec<String>>()
        }
    };
    let kept = read(
        "SELECT format('%s [%s, %s) %s %s/%s/%s: %s', cardholder, lo, hi, card, category, mcc,
                       currency, spend)
         FROM ledger_windows WHERE spend <> 0 ORDER BY 1",
    )
    .await;
    let summed = read(
        "SELECT format('%s [%s, %s) %s %s/%s/%s: %s', r.cardholder, b.lo, b.hi, r.card,
                       r.category, r.mcc, r.currency, sum(r.spend))
         FROM ledger_records r, cardgate_windows(r.created) b
         GROUP BY r.cardholder, b.lo, b.hi, r.card, r.category, r.mcc, r.currency
         HAVING sum(r.spend) <> 0 ORDER BY 1",
    )
    .await;
    assert!(!kept.is_empty());
    assert_eq!(kept, summed);
}

#[tokio::test]
async fn the_database_s_windows_are_the_ledger_s_windows() {
    let Some((_server, url)) = super::tests::database() else {
        return;
    };
    let db = Database::connect(&url).await.unwrap();
    let client = db.client().await.unwrap();
    // Around the epoch, leap days, month and year ends, and far either side.
    let mut times: Vec<i64> = vec![
        0,
        -1,
        1,
        86_399,
        86_400,
        -86_400,
        -86_401,
        T,
        i64::from(i32::MAX),
    ];
    for day in (-800_000i64..800_000).step_by(997) {
        let t = day * 86_400 + 43_210;
        times.extend([day * 86_400, day * 86_400 - 1, t]);
        // The first second of its month and year, and the second before.
        for interval in [Interval::Monthly, Interval::Yearly] {
            let start = crate::ledger::window_start(interval, t);
            times.extend([start, start - 1]);
        }
    }
    // Leap days and the months around them (2000: a leap year, 1900, 2100: not).
    for (y, m, d) in [
        (2024, 2, 29),
        (2000, 2, 29),
        (1900, 2, 28),
        (2100, 3, 1),
        (1969, 12, 31),
    ] {
        let t = chrono_free_days(y, m, d) * 86_400;
        times.extend([t, t - 1, t + 86_399]);
    }
    times.sort_unstable();
    times.dedup();
    let rows = client
        .query(
            "SELECT t, b.lo, b.hi FROM unnest($1::bigint[]) AS t, cardgate_window_bounds(t) b",
            &[&times],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), times.len());
    for row in rows {
        let t: i64 = row.get(0);
        let (lo, hi): (Vec<i64>, Vec<i64>) = (row.get(1), row.get(2));
        let got: Vec<(i64, i64)> = lo.into_iter().zip(hi).collect();
        let want: Vec<(i64, i64)> = crate::ledger::WINDOWS
            .iter()
            .map(|i| super::holds::window_bounds(*i, t))
            .collect();
        assert_eq!(got, want, "t = {t}");
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date, counted day by day from
/// the epoch's year (independent of the civil algorithm both sides use).
fn chrono_free_days(y: i64, m: i64, d: i64) -> i64 {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let year_days = |y: i64| if leap(y) { 366 } else { 365 };
    let mut days: i64 = if y >= 1970 {
        (1970..y).map(year_days).sum()
    } else {
        -(y..1970).map(year_days).sum::<i64>()
    };
    let months = [
        31,
        if leap(y) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    days += months[..usize::try_from(m - 1).unwrap()]
        .iter()
        .sum::<i64>();
    days + d - 1
}

/// The defect: the snapshot summed `ledger_records` over each window's time
/// range, so the `all_time` window read every record the cardholder ever had and
/// a decision's cost grew with the cardholder's history; and the velocity counts
/// read the last day's records of all the cardholder's cards. Two hundred holds
/// a day apart, and a hundred on other cards today: the snapshot now reads the
/// window totals, and of the records only the card's of the last day.
#[tokio::test]
async fn a_snapshot_does_not_read_the_cardholder_s_whole_history() {
    let Some((_server, url)) = super::tests::database() else {
        return;
    };
    let db = Database::connect(&url).await.unwrap();
    let h = PgHolds::new(db.clone());
    for i in 0..200i64 {
        let id = format!("iauth_h{i}");
        let a = auth(&id, 100, vec![]);
        let at = T - (199 - i) * 86_400;
        assert!(
            reserve_approved(&h, &format!("evt_h{i}"), &a, at)
                .await
                .approved
        );
    }
    // And 100 today on the cardholder's other cards (a company's cards).
    for i in 0..100i64 {
        let id = format!("iauth_o{i}");
        let mut a = auth(&id, 10, vec![]);
        let card = format!("ic_other_{i}");
        a.card.id = &card;
        let evt = format!("evt_o{i}");
        assert!(reserve_approved(&h, &evt, &a, T - i).await.approved);
    }
    let probe = auth("iauth_probe", 1, vec![]);
    let s = h.snapshot(&probe, T).await.unwrap();
    assert_eq!(
        s.spent(Scope::Cardholder, Interval::AllTime, None, usd()),
        21_000
    );
    assert_eq!(
        s.spent(Scope::Cardholder, Interval::Daily, None, usd()),
        1_100
    );
    assert_eq!(s.card_velocity(), (1, 1));
    let mut client = db.client().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let (index, lo, hi) = super::holds::snapshot_windows(T);
    tx.query(
        super::holds::SNAPSHOT,
        &[&probe.cardholder.id, &probe.card.id, &index, &lo, &hi, &T],
    )
    .await
    .unwrap();
    let read: i64 = tx
        .query_one(
            "SELECT (coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0))::BIGINT
             FROM pg_stat_xact_user_tables WHERE relname = 'ledger_records'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // Only the velocity counts read records: the card's of the last day (one
    // here), a few tuples through the index. Summed from the records, the
    // all-time window alone read all 300 (and the yearly one the last year's);
    // by cardholder and time, the velocity counts read the other cards' 100.
    assert!(read < 20, "the snapshot read {read} records of 300");
}

/// A connection to a fresh database at schema 6, as a build before migration 7
/// left it.
async fn connect_before_windows(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let before = super::MIGRATIONS.len() - 1;
    for sql in &super::MIGRATIONS[..before] {
        client.batch_execute(sql).await.unwrap();
    }
    client
        .batch_execute(&format!(
            "CREATE TABLE cardgate_schema (
                 one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), version BIGINT NOT NULL);
             INSERT INTO cardgate_schema VALUES (TRUE, {before});"
        ))
        .await
        .unwrap();
    client
}

/// A hold through whatever `cardgate_reserve` the database has (schema 6's
/// before the migration), without limits: (event, cardholder, authorization,
/// card), created `at`.
async fn reserve_before_windows(
    client: &impl tokio_postgres::GenericClient,
    (event, cardholder, authorization, card): (&str, &str, &str, &str),
    at: i64,
    amount: i64,
) {
    let outcome: String = client
        .query_one(
            "SELECT o_outcome FROM cardgate_reserve($1, $2, $3, $4, $5, 'usd',
                 'grocery_stores_supermarkets', '5411', NULL, NULL, TRUE, $6, FALSE, 0,
                 'approved', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')",
            &[&event, &cardholder, &authorization, &card, &at, &amount],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(outcome, "held");
}

/// A database holding records from before migration 7: the migration sums them
/// into `ledger_windows`, and a later hold on top of them is checked against
/// the history.
#[tokio::test]
async fn migrating_a_ledger_sums_its_existing_records_into_window_totals() {
    let Some((_server, url)) = super::tests::database() else {
        return;
    };
    let client = connect_before_windows(&url).await;
    // Holds of two cards over 40 days, through the schema-6 reserve; one of them
    // captured for less.
    for i in 0..40i64 {
        let card = if i % 3 == 0 { "ic_a" } else { "ic_b" };
        let (evt, id) = (format!("evt_m{i}"), format!("iauth_m{i}"));
        reserve_before_windows(
            &client,
            (&evt, "ich_m", &id, card),
            T - i * 86_400,
            1000 + i,
        )
        .await;
    }
    drop(client);
    let db = Database::connect(&url).await.unwrap();
    assert_windows_are_the_records_sums(&db).await;
    let h = PgHolds::new(db.clone());
    let mut probe = auth("iauth_probe", 1, vec![]);
    probe.cardholder.id = "ich_m";
    probe.card.id = "ic_a";
    let s = h.snapshot(&probe, T).await.unwrap();
    let all: i64 = (0..40).map(|i| 1000 + i).sum();
    assert_eq!(
        s.spent(Scope::Cardholder, Interval::AllTime, None, usd()),
        all
    );
    let card_a: i64 = (0..40).filter(|i| i % 3 == 0).map(|i| 1000 + i).sum();
    assert_eq!(s.spent(Scope::Card, Interval::AllTime, None, usd()), card_a);
    // A cardholder limit of all the history plus 500: a 900 request is cut to 500.
    let mut a = auth("iauth_m_new", 900, vec![]);
    a.cardholder.id = "ich_m";
    a.card.id = "ic_a";
    a.is_amount_controllable = true;
    a.cardholder.controls.spending_limits = vec![limit(all + 500, Interval::AllTime)];
    let d = reserve_approved(&h, "evt_m_new", &a, T).await;
    assert_eq!((d.approved, d.amount), (true, Some(500)));
    assert_windows_are_the_records_sums(&db).await;
}

/// A record first known by its capture (created as the transaction) takes the
/// authorization's metadata when that arrives: the same spend moves to the
/// authorization's windows, though no amount changed.
#[tokio::test]
async fn a_record_whose_metadata_moves_moves_its_spend_between_windows_on_both_backends() {
    for (name, h, _server) in backends().await {
        let mut capture = txn("ev_mv_t", "ipi_mv", Some("iauth_mv"), -1000);
        if let Fact::Transaction { created, .. } = &mut capture {
            *created = T - 40 * 86_400;
        }
        h.apply(&capture).await.unwrap();
        let daily_at = |at: i64| {
            let h = &h;
            async move {
                h.snapshot(&auth("iauth_probe", 1, vec![]), at)
                    .await
                    .unwrap()
                    .spent(Scope::Card, Interval::Daily, None, usd())
            }
        };
        assert_eq!(
            (daily_at(T - 40 * 86_400).await, daily_at(T).await),
            (1000, 0),
            "{name}"
        );
        h.apply(&auth_event(
            "ev_mv_a",
            T,
            "iauth_mv",
            AuthStatus::Closed,
            1000,
            0,
        ))
        .await
        .unwrap();
        assert_eq!(
            (daily_at(T - 40 * 86_400).await, daily_at(T).await),
            (0, 1000),
            "{name}"
        );
    }
}

/// A replica of the build before migration 7 holds funds while this build
/// migrates: its uncommitted record is not in the migration's sums, so the
/// migration must wait for it (its triggers lock `ledger_records`) and count it
/// once it is committed. Summed before the lock, the hold would be missing from
/// every window total for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_an_older_replica_is_committing_while_this_build_migrates_is_counted() {
    let Some((_server, url)) = super::tests::database() else {
        return;
    };
    let mut old = connect_before_windows(&url).await;
    // The older replica's hold, written through the schema-6 reserve, not yet
    // committed.
    let tx = old.transaction().await.unwrap();
    reserve_before_windows(&tx, ("evt_old", "ich_old", "iauth_old", "ic_old"), T, 4200).await;
    let migrating = tokio::spawn({
        let url = url.clone();
        async move { Database::connect(&url).await.unwrap() }
    });
    // Until the migration waits for the hold's lock.
    super::tests::until_one_session_waits_for_a_lock(&url, &migrating, "the migration").await;
    tx.commit().await.unwrap();
    let db = migrating.await.unwrap();
    assert_windows_are_the_records_sums(&db).await;
    let mut probe = auth("iauth_probe", 1, vec![]);
    probe.cardholder.id = "ich_old";
    probe.card.id = "ic_old";
    let s = PgHolds::new(db).snapshot(&probe, T).await.unwrap();
    assert_eq!(s.spent(Scope::Card, Interval::Daily, None, usd()), 4200);
}

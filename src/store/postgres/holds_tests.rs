//! The reserve and lifecycle semantics of `crate::ledger`, one test body run on
//! both holds backends: the in-memory [`Ledger`] and [`PgHolds`] (the database
//! deciding). Each scenario goes through the [`Holds`] seam only and reads totals
//! back through the snapshot `decide()` sees, so a difference between the
//! PL/pgSQL mirror and `ledger/entry.rs` shows as a failing assertion naming the
//! backend. A differential test replays generated fact sequences on both and
//! compares every snapshot. The journal and the session settings (statement
//! timeout, commit mode) are checked at the end, on PostgreSQL alone.

use std::sync::Arc;

use super::testing;
use super::{Database, PgHolds};
use crate::decision::{
    self, AuthRequest, CategorySet, Decision, Interval, Level, ProgramControls, Reason, Scope,
    Source, SpendView, SpendingLimit, decide,
};
use crate::ledger::{Applied, AuthMeta, AuthStatus, Fact, Holds, Ledger};
use crate::rules::RuleSet;
use crate::testing::{auth_with_card_limits, limit, usd};

const T: i64 = 1_795_003_020;

/// A backend under test: its name, the seam, and (PostgreSQL) the server it
/// needs alive and its database.
type Backend = (
    &'static str,
    Arc<dyn Holds>,
    Option<(Arc<testing::TestServer>, Database)>,
);

/// Both backends, named; PostgreSQL only when a server is available.
async fn backends() -> Vec<Backend> {
    let mut out: Vec<Backend> = vec![("memory", Arc::new(Ledger::new()), None)];
    if let Some(server) = testing::shared().unwrap() {
        let url = server.database().unwrap();
        let db = Database::connect(&url).await.unwrap();
        out.push((
            "postgres",
            Arc::new(PgHolds::new(db.clone())),
            Some((server, db)),
        ));
    }
    out
}

fn auth(id: &str, amount: i64, card_limits: Vec<SpendingLimit>) -> AuthRequest<'_> {
    auth_with_card_limits(id, amount, card_limits)
}

fn daily(amount: i64) -> Vec<SpendingLimit> {
    vec![limit(amount, Interval::Daily)]
}

fn meta(id: &str, card: &str) -> AuthMeta {
    AuthMeta {
        id: id.into(),
        card: card.into(),
        cardholder: "ich_1".into(),
        created: T,
        currency: "usd".into(),
        category: "computer_software_stores".into(),
        mcc: "5734".into(),
    }
}

fn auth_event(evt: &str, at: i64, id: &str, status: AuthStatus, amount: i64, n: u32) -> Fact {
    Fact::Authorization {
        event_id: evt.into(),
        event_created: at,
        auth: meta(id, "ic_1"),
        approved: true,
        status,
        amount,
        approved_requests: n,
    }
}

fn txn(evt: &str, txn_id: &str, auth: Option<&str>, amount: i64) -> Fact {
    Fact::Transaction {
        event_id: evt.into(),
        txn_id: txn_id.into(),
        authorization: auth.map(Into::into),
        card: "ic_1".into(),
        cardholder: "ich_1".into(),
        created: T + 100,
        currency: "usd".into(),
        category: "computer_software_stores".into(),
        mcc: "5734".into(),
        amount,
    }
}

async fn card_daily(h: &dyn Holds) -> i64 {
    let a = auth("iauth_probe", 1, vec![]);
    h.snapshot(&a, T)
        .await
        .unwrap()
        .spent(Scope::Card, Interval::Daily, None, usd())
}

/// `decide()` over the backend's snapshot, then its reserve: the webhook's path.
async fn decide_and_reserve(h: &dyn Holds, evt: &str, a: &AuthRequest<'_>) -> Decision {
    let program = ProgramControls::default();
    let rules = RuleSet::empty();
    let snap = h.snapshot(a, a.created).await.unwrap();
    let ctx = decision::Context::new(a, &program, &rules, &snap, a.created);
    let d = decide(&ctx);
    h.reserve(evt, a, &program, a.created, d)
        .await
        .unwrap()
        .decision
}

#[tokio::test]
async fn reserve_holds_and_limits_apply_to_later_requests_on_both_backends() {
    for (name, h, _server) in backends().await {
        let h = &*h;
        let d = decide_and_reserve(h, "evt_1", &auth("iauth_1", 6000, daily(10_000))).await;
        assert!(d.approved && d.amount.is_none(), "{name}");
        assert_eq!(card_daily(h).await, 6000, "{name}");
        let d = decide_and_reserve(h, "evt_2", &auth("iauth_2", 6000, daily(10_000))).await;
        assert!(!d.approved, "{name}");
        assert_eq!(d.reason, Reason::SpendingLimit, "{name}");
        let mut a = auth("iauth_3", 6000, daily(10_000));
        a.is_amount_controllable = true;
        let d = decide_and_reserve(h, "evt_3", &a).await;
        assert_eq!((d.approved, d.amount), (true, Some(4000)), "{name}");
        assert_eq!(card_daily(h).await, 10_000, "{name}");
    }
}

#[tokio::test]
async fn recheck_cuts_a_stale_snapshot_decision_on_both_backends() {
    for (name, h, _server) in backends().await {
        let program = ProgramControls::default();
        let reserve = |evt: &'static str, a: AuthRequest<'static>| {
            let h = h.clone();
            let program = program.clone();
            async move {
                h.reserve(evt, &a, &program, T, Decision::approve())
                    .await
                    .unwrap()
            }
        };
        // Both decided on an empty snapshot; the second reserve must see the first.
        let r = reserve("e1", auth("iauth_1", 7000, daily(10_000))).await;
        assert!(r.decision.approved && r.fact.is_some(), "{name}");
        let r = reserve("e2", auth("iauth_2", 7000, daily(10_000))).await;
        assert!(!r.decision.approved && r.fact.is_none(), "{name}");
        assert_eq!(r.decision.reason, Reason::SpendingLimit, "{name}");
        let mut c = auth("iauth_3", 7000, daily(10_000));
        c.is_amount_controllable = true;
        let r = reserve("e3", c).await;
        assert_eq!(r.decision.amount, Some(3000), "{name}");
        assert_eq!(r.decision.reason, Reason::SpendingLimit, "{name}");
        assert_eq!(
            r.decision.source,
            Some(Source::Control(Level::Card, "daily")),
            "{name}"
        );
    }
}

#[tokio::test]
async fn increments_captures_and_refunds_derive_the_same_spend_on_both_backends() {
    for (name, h, _server) in backends().await {
        let h = &*h;
        let program = ProgramControls::default();
        let a = auth("iauth_1", 1000, vec![]);
        h.reserve("e1", &a, &program, T, Decision::approve())
            .await
            .unwrap();
        // The same request event again holds nothing more.
        let again = h
            .reserve("e1", &a, &program, T, Decision::approve())
            .await
            .unwrap();
        assert!(again.fact.is_none() && again.decision.approved, "{name}");
        assert_eq!(card_daily(h).await, 1000, "{name}");
        let inc = auth("iauth_1", 500, vec![]);
        h.reserve("e2", &inc, &program, T, Decision::approve())
            .await
            .unwrap();
        assert_eq!(card_daily(h).await, 1500, "{name}");
        let steps: [(Fact, i64); 7] = [
            (
                auth_event("ev_c", T + 1, "iauth_1", AuthStatus::Pending, 1000, 1),
                1500,
            ),
            (
                auth_event("ev_u", T + 2, "iauth_1", AuthStatus::Pending, 1500, 2),
                1500,
            ),
            (
                auth_event("ev_r", T + 3, "iauth_1", AuthStatus::Pending, 1200, 2),
                1200,
            ),
            (txn("ev_t", "ipi_1", Some("iauth_1"), -1100), 1200),
            (
                auth_event("ev_x", T + 4, "iauth_1", AuthStatus::Closed, 1200, 2),
                1100,
            ),
            (txn("ev_rf", "ipi_2", Some("iauth_1"), 100), 1000),
            // An older state arriving late changes nothing.
            (
                auth_event("ev_old", T, "iauth_1", AuthStatus::Pending, 5000, 0),
                1000,
            ),
        ];
        for (fact, expected) in &steps {
            assert_eq!(h.apply(fact).await.unwrap(), Applied::Applied, "{name}");
            assert_eq!(
                card_daily(h).await,
                *expected,
                "{name} after {}",
                fact.event_id()
            );
        }
        assert_eq!(
            h.apply(&steps[0].0).await.unwrap(),
            Applied::Duplicate,
            "{name}"
        );
        assert_eq!(
            h.apply(&txn("ev_u9", "ipi_9", Some("iauth_unknown"), -300))
                .await
                .unwrap(),
            Applied::UnknownAuthorization,
            "{name}"
        );
    }
}

#[tokio::test]
async fn reversed_and_expired_release_the_hold_on_both_backends() {
    for status in [AuthStatus::Reversed, AuthStatus::Expired] {
        for (name, h, _server) in backends().await {
            let h = &*h;
            h.apply(&auth_event("e1", T, "iauth_1", AuthStatus::Pending, 900, 1))
                .await
                .unwrap();
            assert_eq!(card_daily(h).await, 900, "{name}");
            h.apply(&auth_event("e2", T + 5, "iauth_1", status, 0, 1))
                .await
                .unwrap();
            assert_eq!(card_daily(h).await, 0, "{name} {status:?}");
        }
    }
}

#[tokio::test]
async fn category_filtered_cardholder_limits_count_only_their_categories_on_both_backends() {
    for (name, h, _server) in backends().await {
        let h = &*h;
        let program = ProgramControls::default();
        // A cardholder limit on software stores: spend elsewhere, on another card,
        // does not count; spend there on another card does.
        let mut software = CategorySet::default();
        software.insert_name("computer_software_stores");
        software.insert_name("not_a_stripe_category");
        let filtered = SpendingLimit {
            amount: 5000,
            interval: Interval::Weekly,
            categories: Some(software),
        };
        let mut other = auth("iauth_o", 4000, vec![]);
        other.card.id = "ic_2";
        other.merchant.category = "grocery_stores_supermarkets";
        other.merchant.category_code = "5411";
        assert!(
            h.reserve("e_o", &other, &program, T, Decision::approve())
                .await
                .unwrap()
                .decision
                .approved
        );
        let mut unknown = auth("iauth_u", 1000, vec![]);
        unknown.card.id = "ic_2";
        unknown.merchant.category = "not_a_stripe_category";
        unknown.merchant.category_code = "0000";
        h.reserve("e_u", &unknown, &program, T, Decision::approve())
            .await
            .unwrap();
        let mut a = auth("iauth_1", 4500, vec![]);
        a.cardholder.controls.spending_limits = vec![filtered];
        a.is_amount_controllable = true;
        let snap = h.snapshot(&a, T).await.unwrap();
        let set = a.cardholder.controls.spending_limits[0].categories.as_ref();
        assert_eq!(
            snap.spent(Scope::Cardholder, Interval::Weekly, set, usd()),
            1000,
            "{name}"
        );
        assert_eq!(
            snap.spent(Scope::Cardholder, Interval::Weekly, None, usd()),
            5000,
            "{name}"
        );
        assert_eq!(
            snap.spent(Scope::Card, Interval::Weekly, None, usd()),
            0,
            "{name}"
        );
        let r = h
            .reserve("e_1", &a, &program, T, Decision::approve())
            .await
            .unwrap();
        assert_eq!(
            (r.decision.approved, r.decision.amount),
            (true, Some(4000)),
            "{name}"
        );
        assert_eq!(
            r.decision.source,
            Some(Source::Control(Level::Cardholder, "weekly")),
            "{name}"
        );
        // Velocity: the three reserves of this cardholder, one on ic_1.
        let snap = h.snapshot(&a, T + 10).await.unwrap();
        assert_eq!(snap.card_velocity(), (1, 1), "{name}");
        assert_eq!(
            h.snapshot(&a, T + 7200).await.unwrap().card_velocity(),
            (0, 1),
            "{name}"
        );
    }
}

/// A tiny deterministic generator (xorshift), so the differential test needs no
/// seed file and fails the same way every run.
struct Gen(u64);

impl Gen {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test]
async fn generated_fact_sequences_give_the_same_snapshots_on_both_backends() {
    let backends = backends().await;
    if backends.len() < 2 {
        return;
    }
    let program = ProgramControls::default();
    let cards = ["ic_1", "ic_2"];
    let statuses = [
        AuthStatus::Pending,
        AuthStatus::Closed,
        AuthStatus::Reversed,
        AuthStatus::Expired,
    ];
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    for step in 0..160usize {
        let auth_id = format!("iauth_{}", g.next(12));
        let card = cards[usize::try_from(g.next(2)).unwrap()];
        let created = T - i64::try_from(g.next(4)).unwrap() * 86_400 * 5;
        let amount = i64::try_from(g.next(5000)).unwrap();
        let mut m = meta(&auth_id, card);
        m.created = created;
        let fact = match g.next(4) {
            0 => Fact::Reserve {
                event_id: format!("r{step}"),
                auth: m,
                amount,
            },
            1 => Fact::Authorization {
                event_id: format!("a{step}"),
                event_created: T + i64::try_from(g.next(50)).unwrap(),
                auth: m,
                approved: g.next(5) > 0,
                status: statuses[usize::try_from(g.next(4)).unwrap()],
                amount,
                approved_requests: u32::try_from(g.next(3)).unwrap(),
            },
            2 => Fact::Transaction {
                event_id: format!("t{step}"),
                txn_id: format!("ipi_{}", g.next(20)),
                authorization: (g.next(4) > 0).then(|| auth_id.clone()),
                card: card.into(),
                cardholder: "ich_1".into(),
                created,
                currency: "usd".into(),
                category: if g.next(2) == 0 {
                    "computer_software_stores".into()
                } else {
                    "grocery_stores_supermarkets".into()
                },
                mcc: "5411".into(),
                amount: amount - 2500,
            },
            _ => {
                // A request with limits, through `reserve` (partials included).
                let limits = vec![limit(
                    i64::try_from(g.next(20_000)).unwrap(),
                    [Interval::Daily, Interval::Weekly, Interval::Monthly]
                        [usize::try_from(g.next(3)).unwrap()],
                )];
                let mut a = auth(&auth_id, amount.max(1), limits);
                a.card.id = card;
                a.created = created;
                a.is_amount_controllable = g.next(2) == 0;
                let mut answers = Vec::new();
                for (_, h, _) in &backends {
                    let r = h
                        .reserve(
                            &format!("q{step}"),
                            &a,
                            &program,
                            created,
                            Decision::approve(),
                        )
                        .await
                        .unwrap();
                    answers.push((r.decision, r.fact.map(|f| f.event_id().to_string())));
                }
                assert_eq!(answers[0], answers[1], "step {step}");
                continue;
            }
        };
        let mut outcomes = Vec::new();
        for (_, h, _) in &backends {
            outcomes.push(h.apply(&fact).await);
        }
        assert_eq!(outcomes[0], outcomes[1], "step {step}: {fact:?}");
        assert_same_snapshots(&backends, step).await;
    }
    let (_, db) = backends[1].2.as_ref().unwrap();
    assert_windows_are_the_records_sums(db).await;
}

/// `ledger_windows`, kept as records change, against the same totals summed
/// from `ledger_records` afresh (zero totals left out on both sides).
async fn assert_windows_are_the_records_sums(db: &Database) {
    let client = db.client().await.unwrap();
    let read = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.get::<_, String>(0),
                        r.get::<_, i64>(1),
                        r.get::<_, i64>(2),
                        r.get::<_, String>(3),
                        r.get::<_, String>(4),
                        r.get::<_, i64>(5),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let kept = read(
        "SELECT cardholder, lo, hi, card, category || '/' || mcc || '/' || currency, spend
         FROM ledger_windows WHERE spend <> 0 ORDER BY 1, 2, 3, 4, 5",
    )
    .await;
    let summed = read(
        "SELECT r.cardholder, b.lo, b.hi, r.card, r.category || '/' || r.mcc || '/' || r.currency,
                sum(r.spend)::BIGINT
         FROM ledger_records r, cardgate_windows(r.created) b
         GROUP BY 1, 2, 3, 4, 5 HAVING sum(r.spend) <> 0 ORDER BY 1, 2, 3, 4, 5",
    )
    .await;
    assert!(!kept.is_empty());
    assert_eq!(kept, summed);
}

#[tokio::test]
async fn the_database_s_windows_are_the_ledger_s_windows() {
    let Some(server) = testing::shared().unwrap() else {
        return;
    };
    let db = Database::connect(&server.database().unwrap())
        .await
        .unwrap();
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
            "SELECT t, array_agg(b.lo), array_agg(b.hi)
             FROM unnest($1::bigint[]) AS t, cardgate_windows(t) b GROUP BY t",
            &[&times],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), times.len());
    for row in rows {
        let t: i64 = row.get(0);
        let (lo, hi): (Vec<i64>, Vec<i64>) = (row.get(1), row.get(2));
        let want: Vec<(i64, i64)> = crate::ledger::WINDOWS
            .iter()
            .map(|i| super::holds::window_bounds(*i, t))
            .collect();
        let mut got: Vec<(i64, i64)> = lo.into_iter().zip(hi).collect();
        got.sort_unstable();
        let mut want_sorted = want.clone();
        want_sorted.sort_unstable();
        assert_eq!(got, want_sorted, "t = {t}");
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
/// a decision's cost grew with the cardholder's history. Two hundred holds a
/// day apart: the snapshot now reads the window totals, and of the records only
/// the last day's (the velocity counts).
#[tokio::test]
async fn a_snapshot_does_not_read_the_cardholder_s_whole_history() {
    let Some(server) = testing::shared().unwrap() else {
        return;
    };
    let db = Database::connect(&server.database().unwrap())
        .await
        .unwrap();
    let h = PgHolds::new(db.clone());
    for i in 0..200i64 {
        let id = format!("iauth_h{i}");
        let a = auth(&id, 100, vec![]);
        let at = T - (199 - i) * 86_400;
        let r = h
            .reserve(
                &format!("evt_h{i}"),
                &a,
                &ProgramControls::default(),
                at,
                Decision::approve(),
            )
            .await
            .unwrap();
        assert!(r.decision.approved);
    }
    let probe = auth("iauth_probe", 1, vec![]);
    let s = h.snapshot(&probe, T).await.unwrap();
    assert_eq!(
        s.spent(Scope::Cardholder, Interval::AllTime, None, usd()),
        20_000
    );
    assert_eq!(
        s.spent(Scope::Cardholder, Interval::Daily, None, usd()),
        100
    );
    let mut client = db.client().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let (mut index, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new());
    for (i, interval) in (0i32..).zip(crate::ledger::WINDOWS) {
        let (l, h) = super::holds::window_bounds(interval, T);
        index.push(i);
        lo.push(l);
        hi.push(h);
    }
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
    // Only the velocity counts read records: the last day's (one here), a few
    // tuples through the index. Summed from the records, the all-time window
    // alone read all 200 (and the yearly one the last year's).
    assert!(read < 20, "the snapshot read {read} records of 200");
}

/// Every window total and velocity the two backends report, compared.
async fn assert_same_snapshots(backends: &[Backend], step: usize) {
    for card in ["ic_1", "ic_2"] {
        for at in [T, T - 86_400 * 5, T - 86_400 * 15] {
            let mut probe = auth("iauth_probe", 1, vec![]);
            probe.card.id = card;
            let mut seen = Vec::new();
            for (_, h, _) in backends {
                let s = h.snapshot(&probe, at).await.unwrap();
                let mut v = vec![s.card_velocity().0, s.card_velocity().1];
                for interval in crate::ledger::WINDOWS {
                    for scope in [Scope::Card, Scope::Cardholder] {
                        v.push(s.spent(scope, interval, None, usd()));
                    }
                }
                seen.push(v);
            }
            assert_eq!(seen[0], seen[1], "step {step} card {card} at {at}");
        }
    }
}

// === the journal and the session settings (PostgreSQL only) ===

fn logged(event_id: &str, decided_at: i64) -> crate::journal::LoggedDecision {
    crate::journal::LoggedDecision {
        id: 0,
        event_id: event_id.into(),
        authorization_id: "iauth_1".into(),
        card: "ic_1".into(),
        cardholder: "ich_1".into(),
        amount: 4250,
        currency: "usd".into(),
        merchant_category: "computer_software_stores".into(),
        merchant_mcc: "5734".into(),
        merchant_country: "US".into(),
        merchant_name: "PIXELFORGE".into(),
        approved: true,
        approved_amount: 4250,
        reason: "approved".into(),
        rule: None,
        ruleset: "v1".into(),
        latency_us: 120,
        decided_at,
        event_json: bytes::Bytes::from_static(b"{\"id\":\"evt\"}"),
        spend_json: "{}".into(),
        shadow_rules: Some("[\"s\"]".into()),
        format: crate::journal::seen::SEEN_FORMAT,
        seen: vec![1, 2, 3],
        blobs: vec![(7, std::sync::Arc::from(&b"program"[..]))],
    }
}

#[tokio::test]
async fn the_journal_commits_facts_and_decision_rows_and_reads_them_back() {
    use crate::journal::{Durability, Journal, Write};
    let Some(server) = testing::shared().unwrap() else {
        return;
    };
    let db = Database::connect(&server.database().unwrap())
        .await
        .unwrap();
    let journal = super::PgJournal::start(db.clone(), Durability::Sync);
    let fact = auth_event("ev_j", T, "iauth_1", AuthStatus::Pending, 900, 1);
    // Concurrent commits share batches; each resolves once its rows are stored.
    let (a, b) = tokio::join!(
        journal.commit(vec![
            Write::Fact(fact.clone()),
            Write::decision(logged("evt_a", T)),
        ]),
        journal.commit(vec![Write::decision(logged("evt_b", T + 5))]),
    );
    a.unwrap();
    b.unwrap();
    journal
        .enqueue(vec![Write::decision(logged("evt_c", T + 9))])
        .unwrap();
    assert_eq!(super::read_facts(&db, None).await.unwrap(), vec![fact]);
    let holds = PgHolds::new(db.clone());
    assert_eq!(card_daily(&holds).await, 900);
    let mut rows = Vec::new();
    for _ in 0..200 {
        rows = super::read_decisions(&db, Some(T + 1)).await.unwrap();
        if rows.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let events: Vec<&str> = rows.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(events, ["evt_b", "evt_c"]);
    let mut expected = logged("evt_b", T + 5);
    expected.id = rows[0].id;
    // Blob bodies are stored once by hash, not per row: read back apart.
    let blobs = std::mem::take(&mut expected.blobs);
    assert_eq!(rows[0], expected);
    let client = db.client().await.unwrap();
    let stored: Vec<u8> = client
        .query_one(
            "SELECT body FROM decision_blobs WHERE hash = $1",
            &[&blobs[0].0],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, &blobs[0].1[..]);
}

#[tokio::test]
async fn sessions_carry_the_configured_statement_timeout_and_commit_mode() {
    let Some(server) = testing::shared().unwrap() else {
        return;
    };
    let options = super::Options {
        pool_size: 2,
        statement_timeout: Some(std::time::Duration::from_millis(250)),
        synchronous_commit: false,
        ..super::Options::default()
    };
    let db = Database::connect_with(&server.database().unwrap(), &options)
        .await
        .unwrap();
    let client = db.client().await.unwrap();
    let show = |row: tokio_postgres::Row| row.get::<_, String>(0);
    assert_eq!(
        show(
            client
                .query_one("SHOW statement_timeout", &[])
                .await
                .unwrap()
        ),
        "250ms"
    );
    assert_eq!(
        show(
            client
                .query_one("SHOW synchronous_commit", &[])
                .await
                .unwrap()
        ),
        "off"
    );
    // A statement past the budget is cancelled by the server, not waited for.
    let err = client
        .query_one("SELECT pg_sleep(5)", &[])
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );
}

/// Migration 6 writes a new authorization's record from its first hold instead of
/// settling it from its facts: every record must be exactly what settling would
/// write, for first holds (plain and cut) and for a hold on a record that already
/// has facts (which still settles).
#[tokio::test]
async fn a_first_hold_writes_the_record_that_settling_its_facts_would() {
    let Some(server) = testing::shared().unwrap() else {
        return;
    };
    let db = Database::connect(&server.database().unwrap())
        .await
        .unwrap();
    let h = PgHolds::new(db.clone());
    decide_and_reserve(&h, "evt_s1", &auth("iauth_s1", 2500, daily(10_000))).await;
    // Decided on a stale (empty) snapshot: the reserve itself cuts the grant.
    let mut cut = auth("iauth_s2", 9000, daily(10_000));
    cut.is_amount_controllable = true;
    let r = h
        .reserve(
            "evt_s2",
            &cut,
            &ProgramControls::default(),
            T,
            Decision::approve(),
        )
        .await
        .unwrap();
    assert_eq!((r.decision.approved, r.decision.amount), (true, Some(7500)));
    // An incremental request on the first authorization: its record has facts.
    decide_and_reserve(&h, "evt_s3", &auth("iauth_s1", 100, daily(100_000))).await;
    let client = db.client().await.unwrap();
    let rows = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query(sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.get::<_, String>(0),
                        r.get::<_, i64>(1),
                        r.get::<_, i64>(2),
                        r.get::<_, bool>(3),
                        r.get::<_, i64>(4),
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let read = "SELECT record_id, spend, held, from_auth, created FROM ledger_records
                WHERE record_id LIKE 'iauth_s%' ORDER BY record_id";
    let written = rows(read).await;
    assert_eq!(
        written
            .iter()
            .map(|r| (r.0.as_str(), r.1, r.2))
            .collect::<Vec<_>>(),
        [("iauth_s1", 2600, 2600), ("iauth_s2", 7500, 7500)]
    );
    client
        .batch_execute(
            "SELECT cardgate_settle(cardholder, record_id) FROM ledger_records
             WHERE record_id LIKE 'iauth_s%'",
        )
        .await
        .unwrap();
    assert_eq!(rows(read).await, written);
}

/// A database holding records from before migration 7: the migration sums them
/// into `ledger_windows`, and a later hold on top of them is checked against
/// the history.
#[tokio::test]
async fn migrating_a_ledger_sums_its_existing_records_into_window_totals() {
    let Some(server) = testing::shared().unwrap() else {
        return;
    };
    let url = server.database().unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(connection);
    // Schema 6, as a build before migration 7 left it.
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
    // Holds of two cards over 40 days, through the schema-6 reserve; one of them
    // captured for less.
    for i in 0..40i64 {
        let card = if i % 3 == 0 { "ic_a" } else { "ic_b" };
        client
            .query_one(
                "SELECT o_outcome FROM cardgate_reserve($1, 'ich_m', $2, $3, $4, 'usd',
                     'grocery_stores_supermarkets', '5411', NULL, NULL, TRUE, $5, FALSE, 0,
                     'approved', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')",
                &[
                    &format!("evt_m{i}"),
                    &format!("iauth_m{i}"),
                    &card,
                    &(T - i * 86_400),
                    &(1000 + i),
                ],
            )
            .await
            .unwrap();
    }
    drop(client);
    task.await.unwrap().unwrap();
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
    let r = h
        .reserve(
            "evt_m_new",
            &a,
            &ProgramControls::default(),
            T,
            Decision::approve(),
        )
        .await
        .unwrap();
    assert_eq!((r.decision.approved, r.decision.amount), (true, Some(500)));
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
    let Some(server) = testing::shared().unwrap() else {
        return;
    };
    let url = server.database().unwrap();
    let connect = || async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
    };
    let mut old = connect().await;
    let before = super::MIGRATIONS.len() - 1;
    for sql in &super::MIGRATIONS[..before] {
        old.batch_execute(sql).await.unwrap();
    }
    old.batch_execute(&format!(
        "CREATE TABLE cardgate_schema (
             one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), version BIGINT NOT NULL);
         INSERT INTO cardgate_schema VALUES (TRUE, {before});"
    ))
    .await
    .unwrap();
    // The older replica's hold, written through the schema-6 reserve, not yet
    // committed.
    let tx = old.transaction().await.unwrap();
    tx.query_one(
        "SELECT o_outcome FROM cardgate_reserve('evt_old', 'ich_old', 'iauth_old', 'ic_old',
             $1, 'usd', 'grocery_stores_supermarkets', '5411', NULL, NULL, TRUE, 4200, FALSE,
             0, 'approved', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')",
        &[&T],
    )
    .await
    .unwrap();
    let migrating = tokio::spawn({
        let url = url.clone();
        async move { Database::connect(&url).await.unwrap() }
    });
    // Until the migration waits for the hold's lock (a deadline only turns a
    // hang into a failure).
    let watch = connect().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    loop {
        let waiting: i64 = watch
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        assert!(
            !migrating.is_finished(),
            "the migration did not wait for the hold"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the migration never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    tx.commit().await.unwrap();
    let db = migrating.await.unwrap();
    assert_windows_are_the_records_sums(&db).await;
    let mut probe = auth("iauth_probe", 1, vec![]);
    probe.cardholder.id = "ich_old";
    probe.card.id = "ic_old";
    let s = PgHolds::new(db).snapshot(&probe, T).await.unwrap();
    assert_eq!(s.spent(Scope::Card, Interval::Daily, None, usd()), 4200);
}

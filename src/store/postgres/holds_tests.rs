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

pub(super) const T: i64 = 1_795_003_020;

/// A backend under test: its name, the seam, and (PostgreSQL) the server it
/// needs alive and its database.
pub(super) type Backend = (
    &'static str,
    Arc<dyn Holds>,
    Option<(Arc<testing::TestServer>, Database)>,
);

/// Both backends, named; PostgreSQL only when a server is available.
pub(super) async fn backends() -> Vec<Backend> {
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

pub(super) fn auth(id: &str, amount: i64, card_limits: Vec<SpendingLimit>) -> AuthRequest<'_> {
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

pub(super) fn auth_event(
    evt: &str,
    at: i64,
    id: &str,
    status: AuthStatus,
    amount: i64,
    n: u32,
) -> Fact {
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

pub(super) fn txn(evt: &str, txn_id: &str, auth: Option<&str>, amount: i64) -> Fact {
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

/// `a` reserved as approved at `at`, no rule deciding first: what the reserve's
/// own re-check of the limits grants.
pub(super) async fn reserve_approved(
    h: &dyn Holds,
    evt: &str,
    a: &AuthRequest<'_>,
    at: i64,
) -> Decision {
    let program = ProgramControls::default();
    h.reserve(evt, a, &program, at, Decision::approve())
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
    super::windows_tests::assert_windows_are_the_records_sums(db).await;
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
    let Some((_server, url)) = super::tests::database() else {
        return;
    };
    let db = Database::connect(&url).await.unwrap();
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
    let Some((_server, url)) = super::tests::database() else {
        return;
    };
    let options = super::Options {
        pool_size: 2,
        statement_timeout: Some(std::time::Duration::from_millis(250)),
        synchronous_commit: false,
        ..super::Options::default()
    };
    let db = Database::connect_with(&url, &options).await.unwrap();
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
    let Some((_server, url)) = super::tests::database() else {
        return;
    };
    let db = Database::connect(&url).await.unwrap();
    let h = PgHolds::new(db.clone());
    decide_and_reserve(&h, "evt_s1", &auth("iauth_s1", 2500, daily(10_000))).await;
    // Decided on a stale (empty) snapshot: the reserve itself cuts the grant.
    let mut cut = auth("iauth_s2", 9000, daily(10_000));
    cut.is_amount_controllable = true;
    let d = reserve_approved(&h, "evt_s2", &cut, T).await;
    assert_eq!((d.approved, d.amount), (true, Some(7500)));
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

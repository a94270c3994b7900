use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::decision::{CategorySet, SpendView, SpendingLimit, decide};
use crate::rules::RuleSet;
use crate::testing::usd;

const T: i64 = 1_795_003_020;

/// The shared software-store authorization, `id` for `amount`, with `card_limits`.
fn auth(id: &str, amount: i64, card_limits: Vec<SpendingLimit>) -> AuthRequest<'_> {
    crate::testing::auth_with_card_limits(id, amount, card_limits)
}

fn daily(amount: i64) -> Vec<SpendingLimit> {
    vec![crate::testing::limit(amount, Interval::Daily)]
}

fn meta(id: &str) -> AuthMeta {
    AuthMeta {
        id: id.into(),
        card: "ic_1".into(),
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
        auth: meta(id),
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

fn card_daily(l: &Ledger) -> i64 {
    l.total("ich_1", Some("ic_1"), Interval::Daily, T, usd())
}

/// `decide()` over a snapshot, then reserve: the webhook's path without HTTP.
fn decide_and_reserve(l: &Ledger, evt: &str, a: &AuthRequest<'_>) -> Decision {
    let program = ProgramControls::default();
    let rules = RuleSet::empty();
    let snap = l.snapshot(a, a.created);
    let ctx = decision::Context::new(a, &program, &rules, &snap, a.created);
    let d = decide(&ctx);
    l.reserve(evt, a, &program, a.created, d).decision
}

#[test]
fn reserve_holds_and_limits_apply_to_later_requests() {
    let l = Ledger::new();
    let d = decide_and_reserve(&l, "evt_1", &auth("iauth_1", 6000, daily(10_000)));
    assert!(d.approved && d.amount.is_none());
    assert_eq!(card_daily(&l), 6000);
    let d = decide_and_reserve(&l, "evt_2", &auth("iauth_2", 6000, daily(10_000)));
    assert!(!d.approved);
    assert_eq!(d.reason, Reason::SpendingLimit);
    assert_eq!(card_daily(&l), 6000);
    // Controllable: the remaining room is approved as a partial.
    let mut a = auth("iauth_3", 6000, daily(10_000));
    a.is_amount_controllable = true;
    let d = decide_and_reserve(&l, "evt_3", &a);
    assert_eq!((d.approved, d.amount), (true, Some(4000)));
    assert_eq!(card_daily(&l), 10_000);
    assert_eq!(l.holds(), 2);
}

#[test]
fn recheck_cuts_a_stale_snapshot_decision() {
    let l = Ledger::new();
    let a = auth("iauth_1", 7000, daily(10_000));
    let program = ProgramControls::default();
    // Both decided on an empty snapshot; the second reserve must see the first.
    assert!(
        l.reserve("e1", &a, &program, T, Decision::approve())
            .decision
            .approved
    );
    let b = auth("iauth_2", 7000, daily(10_000));
    let r = l.reserve("e2", &b, &program, T, Decision::approve());
    assert!(!r.decision.approved && r.fact.is_none());
    assert_eq!(r.decision.reason, Reason::SpendingLimit);
    let mut c = auth("iauth_3", 7000, daily(10_000));
    c.is_amount_controllable = true;
    let r = l.reserve("e3", &c, &program, T, Decision::approve());
    assert_eq!(r.decision.amount, Some(3000));
    assert_eq!(r.decision.reason, Reason::SpendingLimit);
}

#[test]
fn increments_add_to_the_hold_and_repeated_events_do_not() {
    let l = Ledger::new();
    let program = ProgramControls::default();
    let a = auth("iauth_1", 1000, vec![]);
    l.reserve("e1", &a, &program, T, Decision::approve());
    l.reserve("e1", &a, &program, T, Decision::approve());
    assert_eq!(card_daily(&l), 1000);
    let inc = auth("iauth_1", 500, vec![]);
    l.reserve("e2", &inc, &program, T, Decision::approve());
    assert_eq!(card_daily(&l), 1500);
    // The created event for the first approval: its amount covers one request.
    l.apply(&auth_event(
        "ev_c",
        T + 1,
        "iauth_1",
        AuthStatus::Pending,
        1000,
        1,
    ))
    .unwrap();
    assert_eq!(card_daily(&l), 1500);
    // The update after the increment supersedes both reserves.
    l.apply(&auth_event(
        "ev_u",
        T + 2,
        "iauth_1",
        AuthStatus::Pending,
        1500,
        2,
    ))
    .unwrap();
    assert_eq!(card_daily(&l), 1500);
    // Partial reversal, then capture and close.
    l.apply(&auth_event(
        "ev_r",
        T + 3,
        "iauth_1",
        AuthStatus::Pending,
        1200,
        2,
    ))
    .unwrap();
    assert_eq!(card_daily(&l), 1200);
    l.apply(&txn("ev_t", "ipi_1", Some("iauth_1"), -1100))
        .unwrap();
    assert_eq!(card_daily(&l), 1200);
    l.apply(&auth_event(
        "ev_x",
        T + 4,
        "iauth_1",
        AuthStatus::Closed,
        1200,
        2,
    ))
    .unwrap();
    assert_eq!(card_daily(&l), 1100);
    assert_eq!(l.holds(), 0);
    // A refund reduces spend.
    l.apply(&txn("ev_rf", "ipi_2", Some("iauth_1"), 100))
        .unwrap();
    assert_eq!(card_daily(&l), 1000);
}

#[test]
fn reversed_and_expired_release_the_hold() {
    for status in [AuthStatus::Reversed, AuthStatus::Expired] {
        let l = Ledger::new();
        l.apply(&auth_event("e1", T, "iauth_1", AuthStatus::Pending, 900, 1))
            .unwrap();
        assert_eq!(card_daily(&l), 900);
        l.apply(&auth_event("e2", T + 5, "iauth_1", status, 0, 1))
            .unwrap();
        assert_eq!(card_daily(&l), 0, "{status:?}");
    }
}

#[test]
fn bad_facts_are_refused_and_change_nothing() {
    let l = Ledger::new();
    l.apply(&auth_event("e1", T, "iauth_1", AuthStatus::Pending, 900, 1))
        .unwrap();
    let before = l.all_totals();
    let bad = [
        auth_event("e2", T + 1, "iauth_1", AuthStatus::Pending, -5, 1),
        auth_event(
            "e3",
            T + 1,
            "iauth_1",
            AuthStatus::Pending,
            MAX_AMOUNT + 1,
            1,
        ),
        txn("e4", "ipi_1", Some("iauth_1"), i64::MIN),
        {
            let mut f = txn("e5", "ipi_1", Some("iauth_1"), -5);
            if let Fact::Transaction { currency, .. } = &mut f {
                *currency = "us dollars".into();
            }
            f
        },
    ];
    for f in &bad {
        assert!(l.apply(f).is_err(), "{f:?}");
    }
    assert_eq!(l.all_totals(), before);
    // Duplicates and unknown authorizations are results, not errors.
    assert_eq!(
        l.apply(&auth_event("e1", T, "iauth_1", AuthStatus::Pending, 900, 1)),
        Ok(Applied::Duplicate)
    );
    assert_eq!(
        l.apply(&txn("e6", "ipi_9", Some("iauth_unknown"), -300)),
        Ok(Applied::UnknownAuthorization)
    );
}

#[test]
fn category_filtered_limits_count_only_their_categories() {
    let l = Ledger::new();
    let program = ProgramControls::default();
    l.reserve(
        "e1",
        &auth("iauth_1", 5000, vec![]),
        &program,
        T,
        Decision::approve(),
    );
    let mut set = CategorySet::default();
    set.insert_name("taxicabs_limousines");
    let limit = vec![SpendingLimit {
        amount: 3000,
        interval: Interval::Daily,
        categories: Some(set),
    }];
    let mut taxi = auth("iauth_2", 2000, limit.clone());
    taxi.merchant.category = "taxicabs_limousines";
    taxi.merchant.category_code = "4121";
    // The software purchase does not count against the taxi limit.
    assert!(decide_and_reserve(&l, "e2", &taxi).approved);
    let mut taxi2 = auth("iauth_3", 2000, limit);
    taxi2.merchant.category = "taxicabs_limousines";
    taxi2.merchant.category_code = "4121";
    assert!(!decide_and_reserve(&l, "e3", &taxi2).approved);
}

#[test]
fn snapshot_sees_card_and_cardholder_and_velocity() {
    let l = Ledger::new();
    let program = ProgramControls::default();
    l.reserve(
        "e1",
        &auth("iauth_1", 100, vec![]),
        &program,
        T,
        Decision::approve(),
    );
    let mut other = auth("iauth_2", 200, vec![]);
    other.card.id = "ic_2";
    l.reserve("e2", &other, &program, T, Decision::approve());
    let snap = l.snapshot(&auth("iauth_3", 1, vec![]), T);
    assert_eq!(snap.spent(Scope::Card, Interval::Weekly, None, usd()), 100);
    assert_eq!(
        snap.spent(Scope::Cardholder, Interval::Weekly, None, usd()),
        300
    );
    let eur = Currency::parse("eur").unwrap();
    assert_eq!(
        snap.spent(Scope::Cardholder, Interval::Weekly, None, eur),
        0
    );
    assert_eq!(snap.card_velocity(), (1, 1));
    // Next day: daily resets, monthly does not (T is mid-November).
    let next = T + 86_400;
    let snap = l.snapshot(&auth("iauth_3", 1, vec![]), next);
    assert_eq!(
        snap.spent(Scope::Cardholder, Interval::Daily, None, usd()),
        0
    );
    assert_eq!(
        snap.spent(Scope::Cardholder, Interval::Monthly, None, usd()),
        300
    );
    assert_eq!(snap.card_velocity(), (0, 0));
}

#[test]
fn concurrent_reserves_never_exceed_the_limit() {
    const LIMIT: i64 = 10_000;
    for round in 0..20 {
        let l = Arc::new(Ledger::new());
        let approved = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let l = l.clone();
                    s.spawn(move || {
                        let mut sum = 0;
                        for i in 0..25 {
                            let id = format!("iauth_{round}_{t}_{i}");
                            let evt = format!("evt_{round}_{t}_{i}");
                            let mut a = auth(&id, 300 + 7 * i, daily(LIMIT));
                            a.is_amount_controllable = i % 2 == 0;
                            let d = decide_and_reserve(&l, &evt, &a);
                            if d.approved {
                                sum += d.amount.unwrap_or(a.amount);
                            }
                        }
                        sum
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum::<i64>()
        });
        assert!(approved <= LIMIT, "round {round}: approved {approved}");
        assert_eq!(approved, card_daily(&l), "round {round}");
        // Demand (8×25 requests of ≥300) far exceeds the limit: it must fill up.
        assert!(
            approved > LIMIT - 1000,
            "round {round}: approved {approved}"
        );
    }
}

fn lifecycle_facts() -> Vec<Fact> {
    vec![
        Fact::Reserve {
            event_id: "evt_req".into(),
            auth: meta("iauth_1"),
            amount: 4000,
        },
        auth_event("evt_c1", T + 1, "iauth_1", AuthStatus::Pending, 4000, 1),
        Fact::Reserve {
            event_id: "evt_inc".into(),
            auth: meta("iauth_1"),
            amount: 1000,
        },
        auth_event("evt_u1", T + 2, "iauth_1", AuthStatus::Pending, 5000, 2),
        txn("evt_t1", "ipi_1", Some("iauth_1"), -3000),
        auth_event("evt_u2", T + 3, "iauth_1", AuthStatus::Pending, 4500, 2),
        txn("evt_t2", "ipi_2", Some("iauth_1"), -1000),
        auth_event("evt_u3", T + 4, "iauth_1", AuthStatus::Closed, 4500, 2),
        txn("evt_t3", "ipi_3", Some("iauth_1"), 500),
        auth_event("evt_c2", T + 1, "iauth_2", AuthStatus::Pending, 700, 1),
        auth_event("evt_u4", T + 9, "iauth_2", AuthStatus::Reversed, 0, 1),
        auth_event("evt_c3", T + 1, "iauth_3", AuthStatus::Pending, 900, 1),
        txn("evt_t4", "ipi_4", None, -250),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Duplicated, reordered and replayed events converge to the same totals.
    /// Reserves keep their relative order (they are our own, made in sequence).
    #[test]
    fn any_order_and_duplicates_give_the_same_totals(
        order in Just((0..13usize).collect::<Vec<_>>()).prop_shuffle(),
        dups in proptest::collection::vec(0..13usize, 0..10),
    ) {
        let facts = lifecycle_facts();
        let reference = Ledger::new();
        for f in &facts {
            reference.apply(f).unwrap();
        }
        // iauth_1: captured 4000 − refund 500; iauth_2 reversed; iauth_3 held 900;
        // the force capture 250.
        prop_assert_eq!(card_daily(&reference), 3500 + 900 + 250);

        let l = Ledger::new();
        let mut seq: Vec<usize> = order.clone();
        // Reserves in their original relative order.
        let reserve_slots: Vec<usize> =
            seq.iter().enumerate().filter(|(_, i)| matches!(facts[**i], Fact::Reserve { .. })).map(|(p, _)| p).collect();
        let mut reserves = vec![0usize, 2];
        for p in reserve_slots {
            seq[p] = reserves.remove(0);
        }
        seq.extend(dups.iter().copied());
        for i in seq {
            l.apply(&facts[i]).unwrap();
        }
        prop_assert_eq!(l.all_totals(), reference.all_totals());
        prop_assert_eq!(l.holds(), reference.holds());
    }
}

/// Stand-ins (issue 17 #5): the `.created` event is the truth whatever cardgate
/// answered. An approval the network gave while cardgate was not asked holds
/// and counts; a network decline of what cardgate approved releases its hold;
/// `expired` releases and a capture after it still counts.
#[test]
fn stand_in_outcomes_override_cardgate_answer() {
    // Approved without cardgate: holds, counts against the next request.
    let l = Ledger::new();
    let stand_in = auth_event("e1", T, "iauth_si", AuthStatus::Pending, 7000, 1);
    assert!(!l.reserved(&stand_in));
    l.apply(&stand_in).unwrap();
    assert_eq!(card_daily(&l), 7000);
    let d = decide_and_reserve(&l, "evt_2", &auth("iauth_2", 6000, daily(10_000)));
    assert_eq!((d.approved, d.reason), (false, Reason::SpendingLimit));

    // cardgate approved, the network declined: nothing held.
    let l = Ledger::new();
    let d = decide_and_reserve(&l, "evt_1", &auth("iauth_1", 6000, daily(10_000)));
    assert!(d.approved);
    let declined = Fact::Authorization {
        event_id: "e2".into(),
        event_created: T + 1,
        auth: meta("iauth_1"),
        approved: false,
        status: AuthStatus::Closed,
        amount: 6000,
        approved_requests: 0,
    };
    assert!(l.reserved(&declined));
    l.apply(&declined).unwrap();
    assert_eq!((card_daily(&l), l.holds()), (0, 0));

    // Expired releases the hold; a late capture is spend again.
    let l = Ledger::new();
    l.apply(&stand_in).unwrap();
    l.apply(&auth_event(
        "e3",
        T + 5,
        "iauth_si",
        AuthStatus::Expired,
        7000,
        1,
    ))
    .unwrap();
    assert_eq!((card_daily(&l), l.holds()), (0, 0));
    l.apply(&txn("e4", "ipi_1", Some("iauth_si"), -7000))
        .unwrap();
    assert_eq!(card_daily(&l), 7000);
}

/// A ledger with two records of card `ic_1`: `iauth_a` from a lifecycle event of
/// cardholder `ich_1`, then `iauth_b` reserved for `cardholder`.
fn two_records(cardholder: &str) -> Ledger {
    let l = Ledger::new();
    l.apply(&auth_event(
        "evt_a",
        T,
        "iauth_a",
        AuthStatus::Pending,
        100,
        0,
    ))
    .unwrap();
    let mut auth = meta("iauth_b");
    auth.cardholder = cardholder.into();
    l.apply(&Fact::Reserve {
        event_id: "evt_b".into(),
        auth,
        amount: 200,
    })
    .unwrap();
    l
}

/// Every record of a card points at one copy of the card and cardholder ids
/// (`Ledger::intern`), and a reserve's record shares its event id with the dedupe
/// table: the ledger keeps ~1 KB per authorization, and these copies were a
/// seventh of it.
#[test]
fn a_cards_records_share_one_copy_of_its_ids() {
    let l = two_records("ich_1");
    let holder = l.holders.get("ich_1").unwrap();
    let (a, b) = (&holder.records["iauth_a"], &holder.records["iauth_b"]);
    let card = |r: &entry::Record| Arc::clone(&r.meta.as_ref().unwrap().1.card);
    assert!(Arc::ptr_eq(&card(a), &card(b)));
    assert!(Arc::ptr_eq(&a.cardholder, &b.cardholder));
    let seen = l.seen.get("evt_b").unwrap();
    assert!(Arc::ptr_eq(seen.key(), &b.reserves[0].0));
    assert_eq!(b.reserves.capacity(), 1);
}

/// A card that moves to another cardholder is found under the new one, and its
/// new records carry the new cardholder.
#[test]
fn a_card_that_changes_cardholder_is_interned_again() {
    let l = two_records("ich_2");
    assert_eq!(&**l.cards.get("ic_1").unwrap().value(), "ich_2");
    let holder = l.holders.get("ich_2").unwrap();
    assert_eq!(&*holder.records["iauth_b"].cardholder, "ich_2");
    assert_eq!(l.card_report("ic_1", T).unwrap().cardholder, "ich_2");
    // The card's id stays the one copy its earlier records point at.
    let card = |h: &str, id: &str| {
        let holder = l.holders.get(h).unwrap();
        Arc::clone(&holder.records[id].meta.as_ref().unwrap().1.card)
    };
    assert!(Arc::ptr_eq(
        &card("ich_1", "iauth_a"),
        &card("ich_2", "iauth_b")
    ));
}

/// The defect: a record's transactions sat in a `BTreeMap`, whose first entry
/// allocates a whole node (~280 bytes) for the one capture nearly every
/// authorization gets: in a program's traffic the ledger kept ~1.3 KB per
/// authorization where requests alone kept ~520 bytes. A redelivered or updated
/// transaction still replaces its amount, and a refund still adds.
#[test]
fn a_captured_authorization_keeps_its_transactions_in_one_small_allocation() {
    let l = Ledger::new();
    l.apply(&auth_event(
        "evt_a",
        T,
        "iauth_1",
        AuthStatus::Closed,
        500,
        0,
    ))
    .unwrap();
    l.apply(&txn("evt_t1", "ipi_1", Some("iauth_1"), -400))
        .unwrap();
    {
        let holder = l.holders.get("ich_1").unwrap();
        assert_eq!(holder.records["iauth_1"].txns.capacity(), 1);
    }
    assert_eq!(card_daily(&l), 400);
    // The same transaction again under another event id (an update): replaced.
    l.apply(&txn("evt_t2", "ipi_1", Some("iauth_1"), -450))
        .unwrap();
    assert_eq!(card_daily(&l), 450);
    // A refund: a second transaction.
    l.apply(&txn("evt_t3", "ipi_2", Some("iauth_1"), 50))
        .unwrap();
    assert_eq!(card_daily(&l), 400);
    let holder = l.holders.get("ich_1").unwrap();
    assert_eq!(holder.records["iauth_1"].txns.len(), 2);
}

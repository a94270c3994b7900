use super::*;

const T: i64 = 1_795_003_020;

fn key(card: &'static str, merchant: &str) -> Key<'static> {
    Key {
        card,
        cardholder: "ich_1",
        merchant: merchant_key(merchant),
    }
}

fn note(s: &SignalState, card: &'static str, merchant: &str, now: i64, amount: i64, ok: bool) {
    s.note(&Observation {
        key: key(card, merchant),
        country: country(if merchant == "m_fr" { "FR" } else { "US" }),
        amount,
        approved_amount: if ok { amount } else { 0 },
        declined: !ok,
        now,
    });
}

#[test]
fn an_unknown_card_has_no_history() {
    let s = SignalState::new();
    let g = s.read(&key("ic_1", "m1"), T);
    assert_eq!(g, Signals::NONE);
    assert!(g.new_merchant);
    assert_eq!((g.last_country(), g.seconds_since_last), ("", -1));
}

#[test]
fn every_signal_counts_what_it_names() {
    let s = SignalState::new();
    note(&s, "ic_1", "m1", T - 2 * DAY, 9_000, true); // outside 24 h, inside 30 d
    note(&s, "ic_1", "m1", T - 5 * HOUR, 1_000, true);
    note(&s, "ic_1", "m2", T - 30 * 60, 2_000, false);
    note(&s, "ic_2", "m3", T - 10 * 60, 500, true); // the cardholder's other card
    note(&s, "ic_1", "m_fr", T - 60, 3_000, true);
    let g = s.read(&key("ic_1", "m1"), T);
    assert_eq!((g.cardholder_count_1h, g.cardholder_count_24h), (3, 4));
    assert_eq!(g.card_amount_24h, 1_000 + 3_000, "approved amounts only");
    assert_eq!((g.card_declines_1h, g.card_declines_24h), (1, 1));
    assert_eq!(g.card_distinct_merchants_1h, 2);
    assert_eq!(g.first_seen, 2 * DAY);
    assert!(!g.new_merchant);
    assert!(s.read(&key("ic_1", "m9"), T).new_merchant);
    assert_eq!(
        g.amount_avg_30d,
        (9_000 + 1_000 + 2_000 + 3_000) / 4,
        "requested amounts"
    );
    assert_eq!(g.amount_max_30d, 9_000);
    assert_eq!((g.last_country(), g.seconds_since_last), ("FR", 60));
}

#[test]
fn state_stays_bounded_and_old_days_fall_out() {
    let s = SignalState::new();
    for i in 0..500 {
        note(
            &s,
            "ic_1",
            &format!("m{i}"),
            T - 40 * DAY + i * 3_600,
            100 + i,
            true,
        );
    }
    let c = s.cards.get("ic_1").unwrap();
    assert_eq!(c.recent.len(), RECENT);
    assert_eq!(c.merchants.len(), MERCHANTS);
    assert!(c.days.len() <= usize::try_from(DAYS).unwrap());
    drop(c);
    assert_eq!(s.holders.get("ich_1").unwrap().len(), HOLDER_RECENT);
    let g = s.read(&key("ic_1", "m0"), T - 40 * DAY + 500 * 3_600);
    assert!(
        g.new_merchant,
        "forgotten past the last {MERCHANTS} merchants"
    );
    assert_eq!(g.amount_max_30d, 599);
    assert_eq!(g.first_seen, 500 * 3_600);
}

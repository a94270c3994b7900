//! Ledger hot path: snapshot + atomic reserve for one authorization, on a
//! cardholder that already has many authorizations, uncontended and with several
//! threads reserving on the same cardholder (the lock everyone shares).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use cardgate::decision::{
    AuthRequest, Card, CardStatus, Cardholder, CardholderStatus, Controls, Currency, Decision,
    Interval, Merchant, ProgramControls, SpendingLimit, Verification,
};
use cardgate::ledger::Ledger;
use criterion::{Criterion, criterion_group, criterion_main};

const T: i64 = 1_795_003_020;

fn auth(id: &str) -> AuthRequest<'_> {
    let usd = Currency::parse("usd").unwrap_or_default();
    AuthRequest {
        id,
        created: T,
        amount: 1,
        currency: usd,
        merchant_amount: 1,
        merchant_currency: usd,
        is_amount_controllable: false,
        network_risk_score: None,
        cashback_amount: 0,
        authorization_method: "online",
        card_presence: None,
        wallet: "",
        merchant: Merchant {
            category: "computer_software_stores",
            category_code: "5734",
            ..Merchant::default()
        },
        card: Card {
            id: "ic_1",
            card_type: "virtual",
            status: CardStatus::Active,
            currency: Some(usd),
            metadata: vec![],
            controls: Controls {
                spending_limits: vec![
                    SpendingLimit {
                        amount: i64::MAX / 4,
                        interval: Interval::Daily,
                        categories: None,
                    },
                    SpendingLimit {
                        amount: i64::MAX / 4,
                        interval: Interval::Monthly,
                        categories: None,
                    },
                ],
                ..Controls::default()
            },
        },
        cardholder: Cardholder {
            id: "ich_1",
            kind: "individual",
            status: CardholderStatus::Active,
            controls: Controls::default(),
        },
        verification: Verification::default(),
    }
}

fn bench(c: &mut Criterion) {
    let ledger = Ledger::new();
    let program = ProgramControls::default();
    // A busy cardholder: 10 000 earlier authorizations.
    for i in 0..10_000 {
        let id = format!("iauth_seed_{i}");
        ledger.reserve(
            &format!("evt_seed_{i}"),
            &auth(&id),
            &program,
            T,
            Decision::approve(),
        );
    }
    let n = AtomicU64::new(0);
    c.bench_function("ledger/snapshot+reserve", |b| {
        b.iter(|| {
            let i = n.fetch_add(1, Ordering::Relaxed);
            let id = format!("iauth_{i}");
            let evt = format!("evt_{i}");
            let a = auth(&id);
            let snap = ledger.snapshot(&a, T);
            black_box(&snap);
            black_box(ledger.reserve(&evt, &a, &program, T, Decision::approve()))
        })
    });
    c.bench_function(
        "ledger/reserve contended (4 threads, one cardholder)",
        |b| {
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                std::thread::scope(|s| {
                    for t in 0..4 {
                        let (ledger, program, n) = (&ledger, &program, &n);
                        s.spawn(move || {
                            for _ in 0..iters.div_ceil(4) {
                                let i = n.fetch_add(1, Ordering::Relaxed);
                                let id = format!("iauth_{t}_{i}");
                                let evt = format!("evt_{t}_{i}");
                                black_box(ledger.reserve(
                                    &evt,
                                    &auth(&id),
                                    program,
                                    T,
                                    Decision::approve(),
                                ));
                            }
                        });
                    }
                });
                start.elapsed()
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

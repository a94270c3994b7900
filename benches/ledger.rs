//! Ledger hot path: snapshot + atomic reserve for one authorization, on a
//! cardholder that already has many authorizations, uncontended and with several
//! threads reserving on the same cardholder (the lock everyone shares).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use cardgate::decision::{AuthRequest, Decision, Interval, ProgramControls};
use cardgate::ledger::Ledger;
use cardgate::testing::{auth_with_card_limits, limit};
use criterion::{Criterion, criterion_group, criterion_main};

const T: i64 = 1_795_003_020;

/// The shared fixture for 1 cent, with daily and monthly card limits that never
/// bind, so every reserve walks the limit re-check and succeeds.
fn auth(id: &str) -> AuthRequest<'_> {
    let never = i64::MAX / 4;
    auth_with_card_limits(
        id,
        1,
        vec![
            limit(never, Interval::Daily),
            limit(never, Interval::Monthly),
        ],
    )
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
        });
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
            });
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

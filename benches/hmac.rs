//! HMAC-SHA256 over the 5 KiB request fixture, the way `stripe::verify` computes it
//! (`t.` + body), with the `hmac` + `sha2` crates (what cardgate uses) and with
//! `ring` (already in the tree through rustls), so the choice rests on a
//! measurement on this CPU. Both are checked to produce the same tag first.
//! Run: `cargo bench --bench hmac`.

#![allow(
    clippy::expect_used,
    reason = "bench setup on a bundled fixture: a panic, with its message and line, is the right failure"
)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const EVENT: &[u8] = include_bytes!("../tests/fixtures/events/issuing_authorization.request.json");
const SECRET: &[u8] = b"whsec_cardgate_bench_secret";
const PREFIX: &[u8] = b"1796190000.";

fn with_sha2(keyed: &Hmac<Sha256>) -> [u8; 32] {
    let mut mac = keyed.clone();
    mac.update(PREFIX);
    mac.update(EVENT);
    mac.finalize().into_bytes().into()
}

fn with_ring(key: &ring::hmac::Key) -> [u8; 32] {
    let mut ctx = ring::hmac::Context::with_key(key);
    ctx.update(PREFIX);
    ctx.update(EVENT);
    let tag = ctx.sign();
    let mut out = [0; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

fn bench_hmac(c: &mut Criterion) {
    let keyed = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET);
    assert_eq!(
        with_sha2(&keyed),
        with_ring(&key),
        "both compute the same tag"
    );
    let mut g = c.benchmark_group("hmac_sha256_5k_event");
    g.bench_function("hmac_sha2", |b| {
        b.iter(|| black_box(with_sha2(black_box(&keyed))));
    });
    g.bench_function("ring", |b| b.iter(|| black_box(with_ring(black_box(&key)))));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_hmac
}
criterion_main!(benches);

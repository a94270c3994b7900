//! Rules: decide with 1, 100 and 1000 rules through cardgate's compiled evaluator,
//! with and without the guard index, plus the cost of per-rule match counters
//! (metrics on vs off).
//!
//! `approve`: no rule matches; `late`: only the last one matches. `compiled` is the
//! whole `decide()` (controls + indexed rules); `rules_indexed` / `rules_linear` time
//! the rules alone with and without the index. Run: `cargo bench --bench rules`.
//! The comparison with other engines (the `cel` interpreter, zen-engine) lives in
//! the separate crate `benches/peers/`, so that testing this crate never builds them.

#![allow(
    clippy::unwrap_used,
    reason = "bench setup on generated rules and a bundled fixture: a panic, with its line, is the right failure"
)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

use cardgate::decision::{Context, NoSpend, ProgramControls, decide};
use cardgate::rules::RuleSet;

const NOW: i64 = 1_795_003_020;

/// Rule `i` of `n`: equality on category or MCC, `in` on a country list, amount
/// thresholds, conjunctions of two or three. None matches the sample
/// authorization (software, US, 42.50), except the last one in `late`. Kept
/// identical to the CEL side of `rule` in `benches/peers/benches/rules.rs`, whose
/// `compiled` column is this bench's `compiled`.
fn rule(i: usize, late: bool, n: usize) -> String {
    if late && i == n - 1 {
        return "merchant.category == \"computer_software_stores\" && amount > 1000".into();
    }
    let mcc = format!("{:04}", 1000 + i % 8000);
    match i % 4 {
        0 => format!("merchant.category == \"cat_{i}\""),
        1 => format!(
            "merchant.category_code == \"{mcc}\" && amount > {}",
            100 * i
        ),
        2 => format!("merchant.country in lists.l{i} && amount > {}", 10 * i),
        _ => format!(
            "merchant.category_code == \"{mcc}\" && merchant.country in lists.l{i} && amount > 500"
        ),
    }
}

fn rules_toml(n: usize, late: bool) -> String {
    let lists = (0..n)
        .filter(|i| i % 4 >= 2)
        .map(|i| format!("l{i} = [\"X{i}\", \"KP\", \"IR\"]\n"));
    let rules = (0..n).map(|i| {
        format!(
            "[[rule]]\nname = \"r{i}\"\nwhen = '{}'\naction = \"decline\"\n",
            rule(i, late, n)
        )
    });
    std::iter::once("[lists]\n".to_string())
        .chain(lists)
        .chain(rules)
        .collect()
}

fn benches(c: &mut Criterion) {
    cardgate::metrics::install();
    let mut body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/events/issuing_authorization.request.json"
    ))
    .unwrap();
    let doc = cardgate::stripe::parse_document(&mut body).unwrap();
    let event = cardgate::stripe::Event::read(&doc).unwrap();
    let auth = event.authorization_request().unwrap();
    let program = ProgramControls::default();

    let mut g = c.benchmark_group("rules");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30);
    for (n, late) in [
        (1, true),
        (100, false),
        (100, true),
        (1000, false),
        (1000, true),
    ] {
        let tag = format!("{n}/{}", if late { "late" } else { "approve" });
        let src = rules_toml(n, late);
        let set = RuleSet::from_toml(&src).unwrap();

        // Indexed and linear must agree (and match only in `late`) before either
        // is timed.
        let ctx = Context::new(&auth, &program, &set, &NoSpend, NOW);
        let indexed = set.evaluate(&ctx);
        assert_eq!(indexed, set.evaluate_linear(&ctx), "{tag}: index disagrees");
        assert_eq!(indexed.decisive.is_some(), late);

        g.bench_function(format!("compiled/{tag}"), |b| {
            b.iter(|| {
                let ctx = Context::new(black_box(&auth), &program, &set, &NoSpend, NOW);
                black_box(decide(&ctx))
            });
        });
        // The rules alone, with and without the index (same verdicts, tested).
        g.bench_function(format!("rules_indexed/{tag}"), |b| {
            b.iter(|| {
                let ctx = Context::new(black_box(&auth), &program, &set, &NoSpend, NOW);
                black_box(set.evaluate(&ctx))
            });
        });
        g.bench_function(format!("rules_linear/{tag}"), |b| {
            b.iter(|| {
                let ctx = Context::new(black_box(&auth), &program, &set, &NoSpend, NOW);
                black_box(set.evaluate_linear(&ctx))
            });
        });
    }
    g.finish();

    // Per-rule metrics: 100 shadow rules that all match, so every evaluation
    // increments 100 counters (metered) or none (unmetered).
    let mut g = c.benchmark_group("rule_metrics");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(30);
    let mut src = String::new();
    for i in 0..100 {
        writeln!(
            src,
            "[[rule]]\nname = \"m{i}\"\nwhen = 'amount > {i}'\naction = \"decline\"\nmode = \"shadow\""
        )
        .unwrap();
    }
    for (label, set) in [
        ("on", RuleSet::from_toml(&src).unwrap()),
        ("off", RuleSet::from_toml_unmetered(&src).unwrap()),
    ] {
        g.bench_function(format!("100_shadow_matches/{label}"), |b| {
            b.iter(|| {
                let ctx = Context::new(black_box(&auth), &program, &set, &NoSpend, NOW);
                black_box(set.evaluate(&ctx))
            });
        });
    }
    g.finish();
}

criterion_group!(rules, benches);
criterion_main!(rules);

//! Issue 16, measured: the backtest's replay rate and what behavioural signals cost
//! the decision.
//!
//! - `signals/decide_bundled_plus_10_signal_rules`: `decide()` with the bundled
//!   `config/rules.toml` plus ten rules on behavioural signals (none matching, so
//!   every rule is evaluated), signals precomputed as the pipeline hands them over.
//!   Target: ≤ 1 µs.
//! - `signals/read_busy_card`: `SignalState::read` for a card with full buffers
//!   (the O(1) cost added before `decide()`), and `signals/note`.
//! - `backtest/replay`: a decision log of `BACKTEST_ROWS` rows (default 100,000;
//!   the issue's figure uses 1,000,000) written to a temporary store, then replayed
//!   the way `cardgate backtest` does — streamed from SQLite, each event re-parsed,
//!   `decide()` with the candidate, knock-on tracked — once, timed end to end.
//!   The candidate declines about 1 % of the traffic, so knock-on is exercised.
//!
//! Run: `cargo bench --bench backtest`. For the 1 M figure, `BACKTEST_ROWS=1000000`
//! (about 4 GB of temporary disk, removed afterwards) or, where disk is short,
//! `BACKTEST_ROWS=100000 BACKTEST_PASSES=10` (the same log replayed ten times in one
//! replay). `DECIDE_LOOP=…` counts instructions instead (see [`decide_loop`]).

#![allow(
    clippy::unwrap_used,
    reason = "bench setup on generated data and a bundled fixture: a panic, with its line, is the right failure"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;

use cardgate::decision::{
    CategorySet, Currency, Interval, ProgramControls, Scope, Signals, SpendView, decide,
};
use cardgate::journal::LoggedDecision;
use cardgate::journal::seen::{self, SEEN_FORMAT, Seen};
use cardgate::rules::RuleSet;
use cardgate::rules::backtest::Replay;
use cardgate::signals::{Key, Observation, SignalSource, SignalState, merchant_key};
use cardgate::store::{self, DecisionFilter, Durability, Store, Write};

const NOW: i64 = 1_795_003_020;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/events/issuing_authorization.request.json"
);

/// Ten rules on behavioural signals, one per kind of use.
const SIGNAL_RULES: &str = r#"
[[rule]]
name = "cardholder-burst"
when = 'velocity.cardholder.count_1h > 20'
action = "decline"
[[rule]]
name = "cardholder-day"
when = 'velocity.cardholder.count_24h > 100'
action = "decline"
[[rule]]
name = "card-day-amount"
when = 'velocity.card.amount_24h + amount > 500000'
action = "decline"
[[rule]]
name = "declines-hour"
when = 'velocity.card.declines_1h >= 3'
action = "decline"
[[rule]]
name = "declines-day"
when = 'velocity.card.declines_24h >= 10'
action = "review"
[[rule]]
name = "merchant-hopper"
when = 'velocity.card.distinct_merchants_1h >= 5'
action = "decline"
[[rule]]
name = "young-card-big"
when = 'history.card.first_seen < 86400 && amount > 100000'
action = "review"
[[rule]]
name = "new-merchant-spike"
when = 'history.card.new_merchant && amount > history.card.amount_max_30d * 3'
action = "review"
[[rule]]
name = "amount-anomaly"
when = 'history.card.amount_avg_30d > 0 && amount > history.card.amount_avg_30d * 10'
action = "decline"
[[rule]]
name = "country-hop"
when = 'history.card.last_country != "" && history.card.last_country != merchant.country && history.card.seconds_since_last < 3600 && authorization_method != "online"'
action = "decline"
"#;

/// Past spend nobody has, and signals of a well-behaved card.
struct Quiet(Signals);

impl SpendView for Quiet {
    fn spent(&self, _: Scope, _: Interval, _: Option<&CategorySet>, _: Currency) -> i64 {
        0
    }
    fn signals(&self) -> &Signals {
        &self.0
    }
}

fn decide_with_signals(c: &mut Criterion) {
    let bundled =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules.toml")).unwrap();
    let set = RuleSet::from_toml(&format!("{bundled}\n{SIGNAL_RULES}")).unwrap();
    let mut body = std::fs::read(FIXTURE).unwrap();
    let doc = cardgate::stripe::parse_document(&mut body).unwrap();
    let event = cardgate::stripe::Event::read(&doc).unwrap();
    let auth = event.authorization_request().unwrap();
    let program = ProgramControls::default();
    let spend = Quiet(Signals {
        cardholder_count_1h: 2,
        cardholder_count_24h: 9,
        card_amount_24h: 12_000,
        card_declines_1h: 0,
        card_declines_24h: 1,
        card_distinct_merchants_1h: 2,
        first_seen: 90 * 86_400,
        new_merchant: true,
        amount_avg_30d: 3_000,
        amount_max_30d: 20_000,
        last_country: *b"US",
        seconds_since_last: 600,
    });
    let ctx = cardgate::decision::Context::new(&auth, &program, &set, &spend, NOW);
    assert!(
        decide(&ctx).approved,
        "no rule may match: all are evaluated"
    );
    let bundled_only = RuleSet::from_toml(&bundled).unwrap();
    let mut g = c.benchmark_group("signals");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    // The same decision without the signal rules, measured in the same run: on a
    // shared machine the difference is the figure to read.
    g.bench_function("decide_bundled_only", |b| {
        b.iter(|| {
            let ctx = cardgate::decision::Context::new(
                black_box(&auth),
                &program,
                &bundled_only,
                &spend,
                NOW,
            );
            black_box(decide(&ctx))
        });
    });
    g.bench_function("decide_bundled_plus_10_signal_rules", |b| {
        b.iter(|| {
            let ctx =
                cardgate::decision::Context::new(black_box(&auth), &program, &set, &spend, NOW);
            black_box(decide(&ctx))
        });
    });

    let state = SignalState::new();
    let key = |m: u32| Key {
        card: "ic_busy",
        cardholder: "ich_busy",
        merchant: m,
    };
    for i in 0..200u32 {
        state.note(&Observation {
            key: key(i % 40),
            country: *b"US",
            amount: 1_000 + i64::from(i),
            approved_amount: 1_000,
            declined: i % 7 == 0,
            now: NOW - 3_000 + i64::from(i) * 10,
        });
    }
    g.bench_function("read_busy_card", |b| {
        b.iter(|| black_box(state.read(black_box(&key(merchant_key("m"))), NOW)));
    });
    let mut t = NOW;
    g.bench_function("note", |b| {
        b.iter(|| {
            t += 1;
            state.note(black_box(&Observation {
                key: key(7),
                country: *b"US",
                amount: 1_000,
                approved_amount: 1_000,
                declined: false,
                now: t,
            }));
        });
    });
    g.finish();
}

/// Writes `rows` decisions shaped like the live record step's: the fixture's event
/// with its ids, card, cardholder and amount varied, a replay record, the program
/// controls blob. 20,000 cards over 5,000 cardholders.
fn write_log(dir: &std::path::Path, rows: usize) {
    let template = serde_json::to_string(
        &serde_json::from_slice::<serde_json::Value>(&std::fs::read(FIXTURE).unwrap()).unwrap(),
    )
    .unwrap();
    let program = seen::encode_program(&ProgramControls::default());
    let blob: (i64, Arc<[u8]>) = (seen::blob_hash(&program), Arc::from(program));
    let store = Store::open(dir, Durability::Async).unwrap();
    let mut batch = Vec::with_capacity(5_000);
    for i in 0..rows {
        let card = format!("ic_{:016}", i % 20_000);
        let holder = format!("ich_{:015}", i % 5_000);
        let amount = 500 + i64::try_from(i % 9_973).unwrap() * 7;
        let event = template
            .replace("iauth_1SfbND25Lk8vT3cGdL09jQ7n", &format!("iauth_{i:024}"))
            .replace("ic_1SbsKNr3Lk8vT3cGAOiDXANR", &card)
            .replace("ich_1S5p1NVELk8vT3cGCwBOYUft", &holder)
            .replace("\"amount\":4250", &format!("\"amount\":{amount}"));
        let now = NOW + i64::try_from(i / 10).unwrap();
        let s = Seen {
            now,
            card: [amount; 5],
            cardholder: [amount * 3; 5],
            velocity: (1, 4),
            program: blob.0,
            signals: Signals::NONE,
            ..Seen::default()
        };
        batch.push(Write::decision(LoggedDecision {
            id: 0,
            event_id: format!("evt_{i}"),
            authorization_id: format!("iauth_{i:024}"),
            card,
            cardholder: holder,
            amount,
            currency: "usd".into(),
            merchant_category: "computer_software_stores".into(),
            merchant_mcc: "5734".into(),
            merchant_country: "US".into(),
            merchant_name: "PIXELFORGE SOFTWARE".into(),
            approved: true,
            approved_amount: amount,
            reason: "approved".into(),
            rule: None,
            ruleset: "bench".into(),
            latency_us: 40,
            decided_at: now,
            event_json: event.into_bytes().into(),
            spend_json: "{}".into(),
            shadow_rules: None,
            format: SEEN_FORMAT,
            seen: s.encode(),
            blobs: vec![blob.clone()],
        }));
        if batch.len() == 5_000 {
            store.commit_blocking(std::mem::take(&mut batch)).unwrap();
        }
    }
    store.commit_blocking(batch).unwrap();
}

fn backtest_replay() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let rows = env("BACKTEST_ROWS", 100_000);
    // Passes over the same log, one replay (the knock-on state carries over): a
    // million replayed rows without a million-row file where disk is short.
    let passes = env("BACKTEST_PASSES", 1);
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    write_log(dir.path(), rows);
    let written = started.elapsed();
    let path = dir.path().join(store::FILE_NAME);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);

    let bundled =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules.toml")).unwrap();
    let candidate = RuleSet::from_toml_unmetered(&format!(
        "{bundled}\n[[rule]]\nname = \"big-software\"\nwhen = 'amount > 69000'\naction = \"decline\"\n"
    ))
    .unwrap();
    let program = ProgramControls::default();
    // Reading alone, for the split between the store and the replay.
    let started = Instant::now();
    let mut bytes = 0usize;
    store::for_each_decision(&path, &DecisionFilter::default(), |row| {
        bytes += row.event_json.len();
        ControlFlow::Continue(())
    })
    .unwrap();
    let read = started.elapsed();
    let started = Instant::now();
    let blobs: HashMap<i64, Vec<u8>> = store::read_decision_blobs(&path).unwrap();
    let mut replay = Replay::new(&candidate, &program, blobs);
    let mut index = 0;
    for _ in 0..passes {
        store::for_each_decision(&path, &DecisionFilter::default(), |row| {
            replay.push_logged(index, &row);
            index += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
    }
    let report = replay.finish();
    let took = started.elapsed();
    let rows = rows * passes;
    assert_eq!(report.replayed, rows, "{report}");
    #[expect(clippy::cast_precision_loss, reason = "a row count printed as a rate")]
    let rate = rows as f64 / took.as_secs_f64();
    println!(
        "backtest/replay: {rows} decisions replayed ({passes} pass(es)) in {:.2} s ({rate:.0}/s; \
         {} changed, {} knock-on; one pass reading alone {:.2} s, {} MB of events; log {} MB \
         written in {:.1} s)",
        took.as_secs_f64(),
        report.changes.total(),
        report.knock_on.total(),
        read.as_secs_f64(),
        bytes / 1_000_000,
        size / 1_000_000,
        written.as_secs_f64()
    );
}

/// `DECIDE_LOOP=bundled:N` or `signals:N`: N decisions and exit, for counting
/// instructions under `valgrind --tool=callgrind` (stable on a loaded machine):
/// (Ir at N − Ir at 0) / N is the cost of one `decide()`.
fn decide_loop(spec: &str) {
    let (which, n) = spec.split_once(':').unwrap();
    let n: u64 = n.parse().unwrap();
    let bundled =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/rules.toml")).unwrap();
    let src = if which == "signals" {
        format!("{bundled}\n{SIGNAL_RULES}")
    } else {
        bundled
    };
    let set = RuleSet::from_toml(&src).unwrap();
    let mut body = std::fs::read(FIXTURE).unwrap();
    let doc = cardgate::stripe::parse_document(&mut body).unwrap();
    let event = cardgate::stripe::Event::read(&doc).unwrap();
    let auth = event.authorization_request().unwrap();
    let program = ProgramControls::default();
    let spend = Quiet(Signals {
        first_seen: 90 * 86_400,
        amount_avg_30d: 3_000,
        amount_max_30d: 20_000,
        last_country: *b"US",
        seconds_since_last: 600,
        ..Signals::NONE
    });
    for _ in 0..n {
        let ctx = cardgate::decision::Context::new(black_box(&auth), &program, &set, &spend, NOW);
        black_box(decide(&ctx));
    }
}

fn main() {
    cardgate::metrics::install();
    if let Ok(spec) = std::env::var("DECIDE_LOOP") {
        decide_loop(&spec);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    decide_with_signals(&mut c);
    c.final_summary();
    // A positional filter that does not name the replay skips it (criterion's own
    // benches above honour the filter themselves).
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if filters.is_empty()
        || filters
            .iter()
            .any(|f| "backtest/replay".contains(f.as_str()))
    {
        backtest_replay();
    }
}

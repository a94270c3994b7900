//! Peers: cardgate's compiled evaluator vs the `cel` crate's interpreter on the
//! same rules vs zen-engine on an equivalent decision table (hit policy first,
//! `compile()` called), with 1, 100 and 1000 rules, interleaved in one run so the
//! columns are comparable on a noisy box.
//!
//! `approve`: no rule matches; `late`: only the last one matches. `compiled` is
//! cardgate's whole `decide()` (controls + indexed rules), the same case as the
//! main crate's `rules` bench, repeated here as this run's yardstick. Run:
//! `cargo bench --manifest-path benches/peers/Cargo.toml` (scripts/bench does).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

use cardgate::decision::{AuthRequest, Context, NoSpend, ProgramControls, decide};
use cardgate::rules::RuleSet;
use cardgate_peers::Interpreter;

const NOW: i64 = 1_795_003_020;

/// One generated rule, written for all three engines.
struct Gen {
    cel: String,
    /// zen cells: category, mcc, country, amount (empty = any).
    zen: [String; 4],
}

/// Rule `i` of `n`: equality on category or MCC, `in` on a country list, amount
/// thresholds, conjunctions of two or three. None matches the sample
/// authorization (software, US, 42.50), except the last one in `late`. The CEL
/// side must stay identical to `rule` in the main crate's `benches/rules.rs`, so
/// `compiled` here times what it times there.
fn rule(i: usize, late: bool, n: usize) -> Gen {
    if late && i == n - 1 {
        return Gen {
            cel: "merchant.category == \"computer_software_stores\" && amount > 1000".into(),
            zen: [
                "\"computer_software_stores\"".into(),
                String::new(),
                String::new(),
                "> 1000".into(),
            ],
        };
    }
    let mcc = format!("{:04}", 1000 + i % 8000);
    match i % 4 {
        0 => Gen {
            cel: format!("merchant.category == \"cat_{i}\""),
            zen: [
                format!("\"cat_{i}\""),
                String::new(),
                String::new(),
                String::new(),
            ],
        },
        1 => Gen {
            cel: format!(
                "merchant.category_code == \"{mcc}\" && amount > {}",
                100 * i
            ),
            zen: [
                String::new(),
                format!("\"{mcc}\""),
                String::new(),
                format!("> {}", 100 * i),
            ],
        },
        2 => Gen {
            cel: format!("merchant.country in lists.l{i} && amount > {}", 10 * i),
            zen: [
                String::new(),
                String::new(),
                format!("\"X{i}\", \"KP\", \"IR\""),
                format!("> {}", 10 * i),
            ],
        },
        _ => Gen {
            cel: format!(
                "merchant.category_code == \"{mcc}\" && merchant.country in lists.l{i} && amount > 500"
            ),
            zen: [
                String::new(),
                format!("\"{mcc}\""),
                format!("\"X{i}\", \"KP\", \"IR\""),
                "> 500".into(),
            ],
        },
    }
}

fn rules_toml(n: usize, late: bool) -> String {
    let mut s = String::from("[lists]\n");
    for i in 0..n {
        if i % 4 >= 2 {
            s.push_str(&format!("l{i} = [\"X{i}\", \"KP\", \"IR\"]\n"));
        }
    }
    for i in 0..n {
        let g = rule(i, late, n);
        s.push_str(&format!(
            "[[rule]]\nname = \"r{i}\"\nwhen = '{}'\naction = \"decline\"\n",
            g.cel
        ));
    }
    s
}

fn zen_decision(n: usize, late: bool) -> zen_engine::Decision {
    let cols = ["category", "mcc", "country", "amount"];
    let fields = [
        "merchant.category",
        "merchant.category_code",
        "merchant.country",
        "amount",
    ];
    let rows: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let g = rule(i, late, n);
            let mut row = serde_json::Map::new();
            row.insert("_id".into(), json!(format!("row{i}")));
            for (c, v) in cols.iter().zip(g.zen.iter()) {
                row.insert((*c).into(), json!(v));
            }
            row.insert("out".into(), json!(format!("\"r{i}\"")));
            serde_json::Value::Object(row)
        })
        .collect();
    let content = json!({
        "nodes": [
            {"id": "in", "name": "request", "type": "inputNode"},
            {"id": "table", "name": "rules", "type": "decisionTableNode", "content": {
                "hitPolicy": "first",
                "inputs": cols.iter().zip(fields.iter())
                    .map(|(c, f)| json!({"id": c, "name": c, "field": f})).collect::<Vec<_>>(),
                "outputs": [{"id": "out", "name": "rule", "field": "rule"}],
                "rules": rows,
            }},
            {"id": "out", "name": "response", "type": "outputNode"}
        ],
        "edges": [
            {"id": "e1", "sourceId": "in", "targetId": "table"},
            {"id": "e2", "sourceId": "table", "targetId": "out"}
        ]
    });
    let content: zen_engine::model::DecisionContent =
        serde_json::from_value(content).expect("valid JDM");
    let engine = zen_engine::DecisionEngine::default();
    let mut decision = engine.create_decision(Arc::new(content)).expect("a graph");
    // Without compile() zen evaluates every row's expressions from scratch.
    decision.compile();
    decision
}

fn zen_input(a: &AuthRequest<'_>) -> serde_json::Value {
    json!({
        "amount": a.amount,
        "merchant": {
            "category": a.merchant.category,
            "category_code": a.merchant.category_code,
            "country": a.merchant.country,
        }
    })
}

fn benches(c: &mut Criterion) {
    cardgate::metrics::install();
    let mut body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/events/issuing_authorization.request.json"
    ))
    .expect("the main crate's fixture");
    let doc = cardgate::stripe::parse_document(&mut body).expect("fixture parses");
    let event = cardgate::stripe::Event::read(&doc).expect("fixture is an event");
    let auth = event
        .authorization_request()
        .expect("fixture is an authorization request");
    let program = ProgramControls::default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");

    let mut g = c.benchmark_group("peers");
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
        let set = RuleSet::from_toml(&src).expect("generated rules compile");
        let interp = Interpreter::from_toml(&src).expect("the interpreter takes them");
        let zen = zen_decision(n, late);

        // All three must agree before any of them is timed.
        let ctx = Context::new(&auth, &program, &set, &NoSpend, NOW);
        let ours = set.evaluate(&ctx).decisive.map(|m| m.name.to_string());
        let theirs = interp.evaluate(&ctx).decisive.map(|m| m.name.to_string());
        let zen_out = rt
            .block_on(zen.evaluate(zen_input(&auth).into()))
            .expect("zen evaluates")
            .result
            .to_value();
        let zen_rule = zen_out["rule"].as_str().map(str::to_string);
        assert_eq!(ours, theirs, "{tag}: cel interpreter disagrees");
        assert_eq!(ours, zen_rule, "{tag}: zen disagrees ({zen_out})");
        assert_eq!(ours.is_some(), late);

        g.bench_function(format!("compiled/{tag}"), |b| {
            b.iter(|| {
                let ctx = Context::new(black_box(&auth), &program, &set, &NoSpend, NOW);
                black_box(decide(&ctx))
            })
        });
        g.bench_function(format!("cel_interpreter/{tag}"), |b| {
            b.iter(|| {
                let ctx = Context::new(black_box(&auth), &program, &set, &NoSpend, NOW);
                black_box(interp.evaluate(&ctx))
            })
        });
        g.bench_function(format!("zen/{tag}"), |b| {
            // zen's future is not Send: await it in one long-running loop on a
            // current-thread runtime, input building included.
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let input = zen_input(black_box(&auth));
                        black_box(zen.evaluate(input.into()).await.ok());
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

criterion_group!(peers, benches);
criterion_main!(peers);

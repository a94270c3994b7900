//! Criterion benches of the webhook decision path, stage by stage and whole:
//! signature verification, parsing (simd-json tape + typed view, our path, against
//! `serde_json` into an equivalent typed struct, and the tape alone), `decide()` with
//! controls only and with the bundled rule file compiled (`config/rules.toml`),
//! and the full `process()` (verify → parse → decide → encode, metrics included)
//! without the network. Payload: the realistic `issuing_authorization.request`
//! fixture.
//!
//! Measurement times are short on purpose: the benchmark box has 2 shared cores.
//! Run: `cargo bench --bench pipeline`.

#![allow(
    clippy::expect_used,
    reason = "bench setup on bundled fixtures: a panic, with its message and line, is the right failure"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cardgate::authorize::{Answer, Authorizer};
use cardgate::clock::Clock;
use cardgate::config::{Config, Overrides};
use cardgate::decision::{self, Context, NoSpend};
use cardgate::rules::RuleSet;
use cardgate::stripe::{self, Event, Secrets};
use criterion::{Criterion, criterion_group, criterion_main};
use serde::Deserialize;

const EVENT: &str = include_str!("../tests/fixtures/events/issuing_authorization.request.json");
const EVENT_CONTROLS: &str =
    include_str!("../tests/fixtures/events/issuing_authorization.request.spending_controls.json");
const CONFIG: &str = include_str!("../config/cardgate.toml");
const RULES: &str = include_str!("../config/rules.toml");
const SECRET: &str = "whsec_cardgate_bench_secret";

fn now() -> i64 {
    cardgate::clock::Clock::system().now()
}

fn bench_verify(c: &mut Criterion) {
    let secrets = Secrets::new(&[SECRET]);
    let t = now();
    let header = stripe::sign_header(&[SECRET], t, EVENT.as_bytes());
    let mut g = c.benchmark_group("verify");
    g.bench_function("hmac_sha256_5k_event", |b| {
        b.iter(|| {
            let body = EVENT.as_bytes().to_vec();
            let v = stripe::verify(Some(header.as_bytes()), body, &secrets, t, 300);
            black_box(v.is_ok())
        });
    });
    g.finish();
}

fn bench_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (name, event) in [("plain", EVENT), ("spending_controls", EVENT_CONTROLS)] {
        g.bench_function(format!("simd_json_typed/{name}"), |b| {
            b.iter(|| {
                // The copy is part of the real path: simd-json parses in place.
                let mut buf = event.as_bytes().to_vec();
                let doc = stripe::parse_document(&mut buf).expect("fixture parses");
                let ev = Event::read(&doc).expect("fixture is an event");
                let auth = ev.authorization_request().expect("fixture is a request");
                black_box(auth.amount)
            });
        });
        g.bench_function(format!("simd_json_tape_only/{name}"), |b| {
            b.iter(|| {
                // The floor under our typed read: stage 1 + 2, no field visited.
                let mut buf = event.as_bytes().to_vec();
                let doc = stripe::parse_document(&mut buf).expect("fixture parses");
                black_box(&doc);
            });
        });
        g.bench_function(format!("serde_json_typed/{name}"), |b| {
            b.iter(|| {
                let ev: serde_twin::Event<'_> =
                    serde_json::from_slice(event.as_bytes()).expect("fixture parses");
                black_box(ev.data.object.pending_request.amount)
            });
        });
    }
    g.finish();
}

fn bench_decide(c: &mut Criterion) {
    let config = config();
    let empty = RuleSet::empty();
    let bundled = RuleSet::from_toml(RULES).expect("bundled rules compile");
    let mut g = c.benchmark_group("decide");
    for (name, event) in [("plain", EVENT), ("spending_controls", EVENT_CONTROLS)] {
        let mut buf = event.as_bytes().to_vec();
        let doc = stripe::parse_document(&mut buf).expect("fixture parses");
        let ev = Event::read(&doc).expect("fixture is an event");
        let auth = ev.authorization_request().expect("fixture is a request");
        let t = now();
        for (label, rules) in [("controls_only", &empty), ("bundled_rules", &bundled)] {
            g.bench_function(format!("{label}/{name}"), |b| {
                b.iter(|| {
                    let ctx = Context::new(&auth, &config.program, rules, &NoSpend, t);
                    black_box(decision::decide(black_box(&ctx)))
                });
            });
        }
    }
    g.finish();
}

fn bench_process(c: &mut Criterion) {
    // The pipeline without HTTP or a store: what one webhook costs on the CPU.
    let authorizer = Authorizer::new(&config(), RuleSet::empty(), Clock::system());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let t = now();
    let header = stripe::sign_header(&[SECRET], t, EVENT.as_bytes());
    let body = Bytes::from_static(EVENT.as_bytes());
    let mut g = c.benchmark_group("process");
    g.bench_function("full_handler_no_network", |b| {
        b.iter(|| {
            let start = Instant::now();
            let answer = rt.block_on(authorizer.process(
                Some(header.as_bytes()),
                body.clone(),
                start,
                start + Duration::from_millis(1500),
            ));
            assert!(matches!(answer, Answer::Decision(..)), "{answer:?}");
            black_box(answer)
        });
    });
    g.finish();
}

fn config() -> Config {
    let env: HashMap<String, String> =
        HashMap::from([("CARDGATE_WEBHOOK_SECRET".into(), SECRET.into())]);
    Config::from_toml(
        CONFIG,
        Path::new("config/cardgate.toml"),
        &env,
        &Overrides::default(),
    )
    .expect("bundled config is valid")
}

/// `serde_json`'s best case for the same job: a derived, borrowing struct holding the
/// fields cardgate's typed view reads (unknown fields skipped, as in ours).
#[allow(
    dead_code,
    clippy::struct_field_names,
    reason = "fields mirror what cardgate reads, named as Stripe's keys (`type` renamed); only parsing is measured"
)]
mod serde_twin {
    use super::{Deserialize, HashMap};

    #[derive(Deserialize)]
    pub struct Event<'a> {
        #[serde(borrow)]
        pub id: &'a str,
        #[serde(rename = "type")]
        pub event_type: &'a str,
        pub created: i64,
        #[serde(borrow)]
        pub data: Data<'a>,
    }

    #[derive(Deserialize)]
    pub struct Data<'a> {
        #[serde(borrow)]
        pub object: Authorization<'a>,
    }

    #[derive(Deserialize)]
    pub struct Authorization<'a> {
        pub id: &'a str,
        pub created: i64,
        #[serde(borrow)]
        pub pending_request: PendingRequest<'a>,
        pub authorization_method: Option<&'a str>,
        pub card_presence: Option<&'a str>,
        pub wallet: Option<&'a str>,
        #[serde(borrow)]
        pub merchant_data: MerchantData<'a>,
        #[serde(borrow)]
        pub card: Card<'a>,
        #[serde(borrow)]
        pub verification_data: Option<VerificationData<'a>>,
    }

    #[derive(Deserialize)]
    pub struct PendingRequest<'a> {
        pub amount: i64,
        pub currency: &'a str,
        pub merchant_amount: Option<i64>,
        pub merchant_currency: Option<&'a str>,
        #[serde(default)]
        pub is_amount_controllable: bool,
        pub network_risk_score: Option<i64>,
        pub amount_details: Option<AmountDetails>,
    }

    #[derive(Deserialize)]
    pub struct AmountDetails {
        pub cashback_amount: Option<i64>,
    }

    #[derive(Deserialize)]
    pub struct MerchantData<'a> {
        pub category: &'a str,
        pub category_code: &'a str,
        pub country: Option<&'a str>,
        pub city: Option<&'a str>,
        pub name: Option<&'a str>,
        pub network_id: Option<&'a str>,
        pub postal_code: Option<&'a str>,
        pub state: Option<&'a str>,
    }

    #[derive(Deserialize)]
    pub struct Card<'a> {
        pub id: &'a str,
        #[serde(rename = "type")]
        pub card_type: Option<&'a str>,
        pub status: &'a str,
        pub currency: Option<&'a str>,
        #[serde(borrow, default)]
        pub metadata: HashMap<&'a str, &'a str>,
        #[serde(borrow)]
        pub spending_controls: Option<SpendingControls<'a>>,
        #[serde(borrow)]
        pub cardholder: Cardholder<'a>,
    }

    #[derive(Deserialize)]
    pub struct Cardholder<'a> {
        pub id: &'a str,
        #[serde(rename = "type")]
        pub kind: Option<&'a str>,
        pub status: &'a str,
        #[serde(borrow)]
        pub spending_controls: Option<SpendingControls<'a>>,
    }

    #[derive(Deserialize)]
    pub struct SpendingControls<'a> {
        #[serde(borrow)]
        pub allowed_categories: Option<Vec<&'a str>>,
        #[serde(borrow)]
        pub blocked_categories: Option<Vec<&'a str>>,
        #[serde(borrow)]
        pub allowed_merchant_countries: Option<Vec<&'a str>>,
        #[serde(borrow)]
        pub blocked_merchant_countries: Option<Vec<&'a str>>,
        #[serde(borrow)]
        pub allowed_card_presences: Option<Vec<&'a str>>,
        #[serde(borrow)]
        pub blocked_card_presences: Option<Vec<&'a str>>,
        #[serde(borrow, default)]
        pub spending_limits: Option<Vec<Limit<'a>>>,
        pub spending_limits_currency: Option<&'a str>,
    }

    #[derive(Deserialize)]
    pub struct Limit<'a> {
        pub amount: i64,
        pub interval: &'a str,
        #[serde(borrow)]
        pub categories: Option<Vec<&'a str>>,
    }

    #[derive(Deserialize)]
    pub struct VerificationData<'a> {
        pub cvc_check: Option<&'a str>,
        pub expiry_check: Option<&'a str>,
        pub address_postal_code_check: Option<&'a str>,
        #[serde(borrow)]
        pub three_d_secure: Option<ThreeDs<'a>>,
    }

    #[derive(Deserialize)]
    pub struct ThreeDs<'a> {
        pub result: Option<&'a str>,
    }
}

fn short() -> Criterion {
    // 2 shared cores: keep each bench to a few seconds.
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = short();
    targets = bench_verify, bench_parse, bench_decide, bench_process
}
criterion_main!(benches);

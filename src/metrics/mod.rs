//! Every metric cardgate exports, named in one place, and the Prometheus recorder.
//!
//! Names follow Prometheus conventions: `cardgate_` prefix, base units (`_seconds`),
//! `_total` on counters. Labels take bounded values only: never a card, cardholder
//! or authorization id.
//!
//! Counters and gauges live in the recorder; the histograms are `histogram.rs`'s
//! bucket counters, appended to the recorder's text by [`render`].

mod histogram;
mod hot;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub use histogram::BATCH_BUCKETS;
pub use hot::{
    CardObject, count_authorization, count_card_object, count_event, count_http_response,
    count_lifecycle, set_ledger_holds,
};

/// Histogram: whole webhook handling time, from headers read to response built.
pub const WEBHOOK_DURATION: &str = "cardgate_webhook_duration_seconds";
/// Histogram `{stage}`: time spent in each stage of the decision path (see [`Stage`]).
pub const WEBHOOK_STAGE_DURATION: &str = "cardgate_webhook_stage_duration_seconds";
/// Counter `{outcome, reason}`: decisions answered (fallbacks included).
pub const AUTHORIZATIONS: &str = "cardgate_authorizations_total";
/// Counter `{code}`: webhook requests refused for their signature.
pub const SIGNATURE_FAILURES: &str = "cardgate_signature_failures_total";
/// Counter: signed webhook bodies that were not a readable event.
pub const PARSE_FAILURES: &str = "cardgate_parse_failures_total";
/// Counter `{cause}`: fallback answers (deadline, internal, ledger).
pub const FALLBACKS: &str = "cardgate_fallbacks_total";
/// Counter `{type}`: non-request events received (bounded set of types, else `other`).
pub const EVENTS: &str = "cardgate_events_total";
/// Counter `{route, status}`: HTTP responses by route and status code.
pub const HTTP_RESPONSES: &str = "cardgate_http_responses_total";
/// Gauge: authorizations currently holding funds in the ledger.
pub const LEDGER_HOLDS: &str = "cardgate_ledger_holds";
/// Counter: reserves whose atomic re-check found less room than the snapshot
/// (the approval shrank or became a decline).
pub const LEDGER_RESERVE_REFUSED: &str = "cardgate_ledger_reserve_rechecks_total";
/// Counter `{type, result}`: lifecycle events by type and what the ledger did
/// (applied, duplicate, `unknown_authorization`, invalid, ignored, `store_error`).
pub const LIFECYCLE_EVENTS: &str = "cardgate_lifecycle_events_total";
/// Histogram: time of one store transaction (a group-commit batch).
pub const STORE_COMMIT_DURATION: &str = "cardgate_store_commit_duration_seconds";
/// Histogram: writes per committed batch.
pub const STORE_COMMIT_BATCH: &str = "cardgate_store_commit_batch_size";
/// Counter `{op}`: store failures (commit, enqueue).
pub const STORE_ERRORS: &str = "cardgate_store_errors_total";
/// Counter `{rule, mode}`: rule matches; `mode` is `decisive` or `shadow`. Rule
/// names are bounded by the rule-count limit of a rule set.
pub const RULE_MATCHES: &str = "cardgate_rule_matches_total";
/// Counter `{rule, error}`: rule conditions that failed at run time (division by
/// zero, overflow, missing metadata key, bad conversion) and so did not match.
pub const RULE_ERRORS: &str = "cardgate_rule_errors_total";
/// Counter `{result}`: rule set reloads, `ok` or `rejected` (the old set stays live).
pub const RULE_RELOADS: &str = "cardgate_rule_reloads_total";
/// Gauge `{version}`: 1 for the live rule set's version, 0 for replaced ones.
pub const RULESET_INFO: &str = "cardgate_ruleset_info";
/// Counter `{outcome}`: payment approval decisions, `approve` or `decline`.
pub const PAYMENT_APPROVALS: &str = "cardgate_payment_approvals_total";
/// Counter `{rule, mode}`: payment rule matches.
pub const PAYMENT_RULE_MATCHES: &str = "cardgate_payment_rule_matches_total";
/// Counter `{rule, error}`: payment rule conditions that failed at run time.
pub const PAYMENT_RULE_ERRORS: &str = "cardgate_payment_rule_errors_total";
/// Counter `{result}`: payment rule set reloads, `ok` or `rejected`.
pub const PAYMENT_RULE_RELOADS: &str = "cardgate_payment_rule_reloads_total";
/// Gauge `{version}`: 1 for the live payment rule set's version.
pub const PAYMENT_RULESET_INFO: &str = "cardgate_payment_ruleset_info";
/// Gauge `{version}`: always 1; carries the build version.
pub const BUILD_INFO: &str = "cardgate_build_info";
/// Counter `{result}`: legacy-mode approve/decline API calls: `ok`, `rejected`
/// (Stripe answered 4xx, e.g. after the window), `failed` (transport, 5xx, after
/// every retry).
pub const LEGACY_CALLS: &str = "cardgate_legacy_calls_total";
/// Counter `{field}`: enum values in a request that this build does not know
/// (Stripe's enums are open), kept as sent; `field` names the enum, never the value.
pub const UNKNOWN_ENUM_VALUES: &str = "cardgate_unknown_enum_values_total";
/// Counter `{reason, outcome, ours}`: `issuing_authorization.created` events whose
/// outcome the network or Stripe decided without cardgate's answer (stand-in);
/// `ours` is `approved` when cardgate had approved it, else `none`.
pub const STAND_IN_AUTHORIZATIONS: &str = "cardgate_stand_in_authorizations_total";
/// Counter `{result}`: the card object of each `issuing_authorization.request`:
/// `known` (its bytes were a card's read before, not parsed again), `learnt`
/// (parsed and remembered), `parsed` (parsed, not remembered: a card seen for the
/// first time, one with an unknown enum value, or no card object).
pub const REQUEST_CARD_OBJECTS: &str = "cardgate_request_card_objects_total";

/// Webhook latency buckets: fine from 50 µs (a decision's real cost) up to the 2 s
/// Stripe window, so p99 and the fallback cliff both show.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00015, 0.0002, 0.0003, 0.0004, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003,
    0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle; later calls
/// (several servers in one test process) share it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // Counters and gauges only: the histograms are `histogram`'s, whose
            // observations are bucket counters, not a list that grows until the
            // next scrape.
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (a test harness's): then
            // our handle renders nothing, which is visible and harmless.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            register_zeros();
            hot::register();
            handle
        })
        .clone()
}

/// What a metric is, for zero registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; starts at 0.
    Counter,
    /// Observations in buckets; starts with every bucket at 0.
    Histogram,
    /// Set to a value; the ones listed start at 0.
    Gauge,
}

/// One label of a [`Family`] and what the code puts in it.
#[derive(Debug, Clone, Copy)]
pub struct Label {
    /// The label name.
    pub name: &'static str,
    /// Every value the code emits, or `None` when the values are only known at run
    /// time (rule names, rule set versions): such families are not zero-registered
    /// and selectors on that label cannot be checked.
    pub values: Option<&'static [&'static str]>,
}

/// One metric and its labels.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// The metric name (one of the constants above).
    pub name: &'static str,
    /// Counter, histogram or gauge.
    pub kind: Kind,
    /// Its labels, in the order the code passes them.
    pub labels: &'static [Label],
    /// Whether [`install`] registers it at 0 for every combination of its label
    /// values. Off where the combinations are mostly impossible and the series
    /// appears with the first request anyway (`route` × `status`), or where 0
    /// would be a lie (`cardgate_build_info` is 1).
    pub zero: bool,
}

const fn label(name: &'static str, values: &'static [&'static str]) -> Label {
    Label {
        name,
        values: Some(values),
    }
}

const fn open(name: &'static str) -> Label {
    Label { name, values: None }
}

/// The `result` of a rule set reload (`rules::reload`).
pub const RELOAD_RESULTS: &[&str] = &["ok", "rejected"];
/// `decision::Decision::outcome`.
const OUTCOMES: &[&str] = &["approve", "partial", "decline"];
/// `decision::Reason::as_str`.
const REASONS: &[&str] = &[
    "approved",
    "card_inactive",
    "card_canceled",
    "cardholder_inactive",
    "cardholder_blocked",
    "category_blocked",
    "category_not_allowed",
    "country_blocked",
    "country_not_allowed",
    "card_presence_blocked",
    "card_presence_not_allowed",
    "mcc_blocked",
    "spending_limit",
    "currency_mismatch",
    "rule",
    "review",
    "challenge",
    "fallback:deadline",
    "fallback:internal",
    "fallback:ledger",
];
/// `stripe::VerifyError::code`.
const SIGNATURE_CODES: &[&str] = &[
    "signature_missing",
    "signature_malformed",
    "signature_timestamp_invalid",
    "signature_missing_v1",
    "signature_mismatch",
    "signature_expired",
];
/// `decision::FallbackCause::as_str`.
const FALLBACK_CAUSES: &[&str] = &["deadline", "internal", "ledger"];
/// `authorize::event_label`: the non-request event types counted by name.
const EVENT_TYPES: &[&str] = &[
    "issuing_authorization.created",
    "issuing_authorization.updated",
    "issuing_transaction.created",
    "issuing_transaction.updated",
    "other",
];
/// `authorize::lifecycle`: the event types the ledger reads.
const LIFECYCLE_TYPES: &[&str] = &[
    "issuing_authorization.created",
    "issuing_authorization.updated",
    "issuing_transaction.created",
    "other",
];
/// `authorize::lifecycle`: what the ledger did (`ledger::Applied` and the failures).
const LIFECYCLE_RESULTS: &[&str] = &[
    "applied",
    "duplicate",
    "unknown_authorization",
    "invalid",
    "ignored",
    "store_error",
];
/// `http::route`.
const ROUTES: &[&str] = &[
    "webhook",
    "metrics",
    "healthz",
    "readyz",
    "payment_approvals",
    "method_not_allowed",
    "api",
    "ui",
    "not_found",
];
/// `http::status_label`.
const STATUSES: &[&str] = &[
    "200", "400", "401", "403", "404", "405", "408", "409", "413", "422", "503", "other",
];
/// `store::writer`.
const STORE_OPS: &[&str] = &["commit", "enqueue"];
/// `rules::eval::RuntimeError::as_str`.
const RULE_ERROR_KINDS: &[&str] = &[
    "division_by_zero",
    "overflow",
    "no_such_key",
    "conversion",
    "unordered",
];
const RULE_MODES: &[&str] = &["decisive", "shadow"];
/// `http::legacy`.
const LEGACY_RESULTS: &[&str] = &["ok", "rejected", "failed"];
/// [`REQUEST_CARD_OBJECTS`]'s `result`, in [`CardObject`] order.
const CARD_OBJECT_RESULTS: &[&str] = &["known", "learnt", "parsed"];
const PAYMENT_OUTCOMES: &[&str] = &["approve", "decline"];
/// `stripe::parse::unknown_enum`: the enum fields whose unknown values are counted.
const UNKNOWN_ENUM_FIELDS: &[&str] = &[
    "card_presence",
    "allowed_card_presences",
    "blocked_card_presences",
    "spending_limits.interval",
];
/// `stripe::STAND_IN_REASONS`.
const STAND_IN_REASON_LABELS: &[&str] = &[
    "network_fallback",
    "webhook_timeout",
    "webhook_error",
    "card_active",
];
const STAND_IN_OUTCOMES: &[&str] = &["approved", "declined"];
const STAND_IN_OURS: &[&str] = &["approved", "none", "unknown"];

const fn family(name: &'static str, kind: Kind, labels: &'static [Label]) -> Family {
    Family {
        name,
        kind,
        labels,
        zero: true,
    }
}

/// Every metric cardgate exports with every label value the code can give it: the
/// dashboard and alerts are checked against this table
/// (`tests/observability_config.rs`), a running server is checked to emit nothing
/// outside it and to list it at 0 from the start (`tests/metrics_format.rs`).
pub const FAMILIES: &[Family] = &[
    family(WEBHOOK_DURATION, Kind::Histogram, &[]),
    family(
        WEBHOOK_STAGE_DURATION,
        Kind::Histogram,
        &[label(
            "stage",
            &["verify", "parse", "decide", "reserve", "respond"],
        )],
    ),
    family(
        AUTHORIZATIONS,
        Kind::Counter,
        &[label("outcome", OUTCOMES), label("reason", REASONS)],
    ),
    family(
        SIGNATURE_FAILURES,
        Kind::Counter,
        &[label("code", SIGNATURE_CODES)],
    ),
    family(PARSE_FAILURES, Kind::Counter, &[]),
    family(FALLBACKS, Kind::Counter, &[label("cause", FALLBACK_CAUSES)]),
    family(EVENTS, Kind::Counter, &[label("type", EVENT_TYPES)]),
    Family {
        zero: false,
        ..family(
            HTTP_RESPONSES,
            Kind::Counter,
            &[label("route", ROUTES), label("status", STATUSES)],
        )
    },
    family(LEDGER_HOLDS, Kind::Gauge, &[]),
    family(LEDGER_RESERVE_REFUSED, Kind::Counter, &[]),
    family(
        LIFECYCLE_EVENTS,
        Kind::Counter,
        &[
            label("type", LIFECYCLE_TYPES),
            label("result", LIFECYCLE_RESULTS),
        ],
    ),
    family(STORE_COMMIT_DURATION, Kind::Histogram, &[]),
    family(STORE_COMMIT_BATCH, Kind::Histogram, &[]),
    family(STORE_ERRORS, Kind::Counter, &[label("op", STORE_OPS)]),
    family(
        RULE_MATCHES,
        Kind::Counter,
        &[open("rule"), label("mode", RULE_MODES)],
    ),
    family(
        RULE_ERRORS,
        Kind::Counter,
        &[open("rule"), label("error", RULE_ERROR_KINDS)],
    ),
    family(
        RULE_RELOADS,
        Kind::Counter,
        &[label("result", RELOAD_RESULTS)],
    ),
    family(RULESET_INFO, Kind::Gauge, &[open("version")]),
    family(
        PAYMENT_APPROVALS,
        Kind::Counter,
        &[label("outcome", PAYMENT_OUTCOMES)],
    ),
    family(
        PAYMENT_RULE_MATCHES,
        Kind::Counter,
        &[open("rule"), label("mode", RULE_MODES)],
    ),
    family(
        PAYMENT_RULE_ERRORS,
        Kind::Counter,
        &[open("rule"), label("error", RULE_ERROR_KINDS)],
    ),
    family(
        PAYMENT_RULE_RELOADS,
        Kind::Counter,
        &[label("result", RELOAD_RESULTS)],
    ),
    family(PAYMENT_RULESET_INFO, Kind::Gauge, &[open("version")]),
    Family {
        zero: false,
        ..family(BUILD_INFO, Kind::Gauge, &[open("version")])
    },
    family(
        LEGACY_CALLS,
        Kind::Counter,
        &[label("result", LEGACY_RESULTS)],
    ),
    family(
        UNKNOWN_ENUM_VALUES,
        Kind::Counter,
        &[label("field", UNKNOWN_ENUM_FIELDS)],
    ),
    family(
        REQUEST_CARD_OBJECTS,
        Kind::Counter,
        &[label("result", CARD_OBJECT_RESULTS)],
    ),
    family(
        STAND_IN_AUTHORIZATIONS,
        Kind::Counter,
        &[
            label("reason", STAND_IN_REASON_LABELS),
            label("outcome", STAND_IN_OUTCOMES),
            label("ours", STAND_IN_OURS),
        ],
    ),
];

/// The family of `name`, if cardgate exports it.
pub fn family_of(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

/// Every label combination of a family: the cartesian product of its label
/// values, or nothing when a label's values are open.
fn combinations(f: &Family) -> Vec<Vec<metrics::Label>> {
    let mut out: Vec<Vec<metrics::Label>> = vec![Vec::new()];
    for l in f.labels {
        let Some(values) = l.values else {
            return Vec::new();
        };
        out = out
            .iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push(metrics::Label::new(l.name, *v));
                    next
                })
            })
            .collect();
    }
    out
}

/// Registers every bounded series at 0, so `/metrics` lists it before its first
/// event: a panel shows 0 instead of "No data", and `increase()` sees the first
/// fallback or store error as a step from 0 rather than a series appearing.
fn register_zeros() {
    for f in FAMILIES.iter().filter(|f| f.zero) {
        for labels in combinations(f) {
            match f.kind {
                Kind::Counter => metrics::counter!(f.name, labels).increment(0),
                // `histogram` renders every series of its families, from 0.
                Kind::Histogram => {}
                Kind::Gauge => metrics::gauge!(f.name, labels).set(0.0),
            }
        }
    }
}

/// The `/metrics` text: the exporter's counters and gauges, then the histograms.
pub fn render(handle: &PrometheusHandle) -> String {
    let mut text = handle.render();
    histogram::render(&mut text);
    text
}

fn describe() {
    // The histograms' help is `histogram`'s.
    use metrics::{describe_counter, describe_gauge};
    describe_counter!(
        AUTHORIZATIONS,
        "Authorization decisions by outcome and reason."
    );
    describe_counter!(SIGNATURE_FAILURES, "Webhook requests with a bad signature.");
    describe_counter!(
        PARSE_FAILURES,
        "Signed webhook bodies that could not be read."
    );
    describe_counter!(FALLBACKS, "Fallback answers by cause.");
    describe_counter!(EVENTS, "Non-request webhook events received, by type.");
    describe_counter!(HTTP_RESPONSES, "HTTP responses by route and status.");
    describe_gauge!(LEDGER_HOLDS, "Authorizations currently holding funds.");
    describe_counter!(
        LEDGER_RESERVE_REFUSED,
        "Reserves cut or declined by the atomic re-check."
    );
    describe_counter!(
        LIFECYCLE_EVENTS,
        "Lifecycle events by type and ledger result."
    );
    describe_counter!(STORE_ERRORS, "Store failures by operation.");
    describe_counter!(RULE_MATCHES, "Rule matches by rule and mode.");
    describe_counter!(RULE_ERRORS, "Rule conditions that failed at run time.");
    describe_counter!(RULE_RELOADS, "Rule set reloads by result.");
    describe_gauge!(RULESET_INFO, "1 for the live rule set version.");
    describe_counter!(PAYMENT_APPROVALS, "Payment approval decisions by outcome.");
    describe_counter!(
        PAYMENT_RULE_MATCHES,
        "Payment rule matches by rule and mode."
    );
    describe_counter!(
        PAYMENT_RULE_ERRORS,
        "Payment rule conditions that failed at run time."
    );
    describe_counter!(PAYMENT_RULE_RELOADS, "Payment rule set reloads by result.");
    describe_gauge!(
        PAYMENT_RULESET_INFO,
        "1 for the live payment rule set version."
    );
    describe_gauge!(BUILD_INFO, "Build information; always 1.");
    describe_counter!(
        LEGACY_CALLS,
        "Legacy-mode approve/decline API calls by result."
    );
    describe_counter!(
        UNKNOWN_ENUM_VALUES,
        "Request enum values this build does not know, by field."
    );
    describe_counter!(
        STAND_IN_AUTHORIZATIONS,
        "Authorizations the network or Stripe decided without cardgate's answer."
    );
    describe_counter!(
        REQUEST_CARD_OBJECTS,
        "Request card objects: known (not parsed again), learnt or parsed."
    );
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// A stage of the webhook decision path, the `stage` label of
/// [`WEBHOOK_STAGE_DURATION`]: a closed set, so the label stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Signature check (HMAC over the body).
    Verify = 0,
    /// simd-json parse and the typed authorization view.
    Parse,
    /// `decide()` under the deadline budget.
    Decide,
    /// Ledger check-and-reserve of the approved amount.
    Reserve,
    /// Encoding the answer and counting the decision.
    Respond,
}

impl Stage {
    /// Every stage, in path order.
    pub const ALL: [Stage; 5] = [
        Stage::Verify,
        Stage::Parse,
        Stage::Decide,
        Stage::Reserve,
        Stage::Respond,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Verify => "verify",
            Stage::Parse => "parse",
            Stage::Decide => "decide",
            Stage::Reserve => "reserve",
            Stage::Respond => "respond",
        }
    }
}

/// Records one webhook's whole handling time in [`WEBHOOK_DURATION`].
pub fn record_webhook_duration(d: Duration) {
    histogram::webhook(d);
}

/// Records one store commit in [`STORE_COMMIT_DURATION`] and
/// [`STORE_COMMIT_BATCH`]: its time and the writes it carried.
pub fn record_commit(d: Duration, writes: usize) {
    histogram::commit(d, writes);
}

/// Times consecutive stages of one request: each [`StageClock::lap`] records the
/// time since the previous lap under its stage.
#[derive(Debug)]
pub struct StageClock {
    last: Instant,
}

impl StageClock {
    /// Starts timing the first stage now.
    pub fn start() -> Self {
        StageClock {
            last: Instant::now(),
        }
    }

    /// Ends `stage`: records its duration and starts the next one. Returns the
    /// instant it read, so the caller's own end-of-request time needs no other
    /// clock read.
    pub fn lap(&mut self, stage: Stage) -> Instant {
        let now = Instant::now();
        histogram::stage(stage, now.duration_since(self.last));
        self.last = now;
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_cover_every_metric_constant_once() {
        let source = include_str!("mod.rs");
        let declared: Vec<&str> = source
            .lines()
            .filter(|l| l.starts_with("pub const ") && l.contains(": &str = \"cardgate_"))
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        assert!(declared.len() > 20, "{declared:?}");
        for name in &declared {
            let n = FAMILIES.iter().filter(|f| f.name == *name).count();
            assert_eq!(n, 1, "{name} is in FAMILIES {n} times");
        }
        assert_eq!(FAMILIES.len(), declared.len());
    }

    /// The defect: the exporter kept every histogram observation in a list until a
    /// scrape drained it, so memory grew with every request between scrapes (and
    /// forever without them). Only counters and gauges may live in the exporter.
    #[test]
    fn histogram_observations_do_not_pile_up_in_the_exporter() {
        let handle = install();
        let mut clock = StageClock::start();
        clock.lap(Stage::Verify);
        record_webhook_duration(Duration::from_micros(70));
        record_commit(Duration::from_micros(300), 3);
        let exporter = handle.render();
        for line in exporter.lines().filter(|l| l.starts_with("# TYPE ")) {
            assert!(
                !line.ends_with(" histogram") && !line.ends_with(" summary"),
                "the exporter keeps observations of {line}"
            );
        }
        let text = render(&handle);
        for name in histogram::NAMES {
            assert!(
                text.contains(&format!("# TYPE {name} histogram\n")),
                "{name}"
            );
            assert_eq!(
                FAMILIES.iter().find(|f| f.name == name).map(|f| f.kind),
                Some(Kind::Histogram),
                "{name}"
            );
        }
        let ours = FAMILIES
            .iter()
            .filter(|f| f.kind == Kind::Histogram)
            .count();
        assert_eq!(ours, histogram::NAMES.len());
    }

    #[test]
    fn stage_labels_match_stage_enum() {
        let stage = family_of(WEBHOOK_STAGE_DURATION).and_then(|f| f.labels[0].values);
        let names: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(stage, Some(names.as_slice()));
    }

    #[test]
    fn zero_registration_is_the_cartesian_product() {
        let lifecycle = family_of(LIFECYCLE_EVENTS).map(combinations);
        assert_eq!(lifecycle.map(|c| c.len()), Some(4 * 6));
        assert!(
            family_of(RULE_MATCHES)
                .map(combinations)
                .is_some_and(|c| c.is_empty())
        );
        assert_eq!(
            family_of(PARSE_FAILURES).map(combinations).map(|c| c.len()),
            Some(1)
        );
    }
}

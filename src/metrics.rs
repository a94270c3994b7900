//! Every metric cardgate exports, named in one place, and the Prometheus recorder.
//!
//! Names follow Prometheus conventions: `cardgate_` prefix, base units (`_seconds`),
//! `_total` on counters. Labels take bounded values only: never a card, cardholder
//! or authorization id.

use std::sync::OnceLock;
use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (a test harness's): then
            // our handle renders nothing, which is visible and harmless.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            register_stages();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(WEBHOOK_DURATION, Unit::Seconds, "Webhook handling time.");
    describe_histogram!(
        WEBHOOK_STAGE_DURATION,
        Unit::Seconds,
        "Webhook handling time by stage: verify, parse, decide, reserve, respond."
    );
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
    describe_histogram!(
        STORE_COMMIT_DURATION,
        Unit::Seconds,
        "Store group-commit duration."
    );
    describe_histogram!(STORE_COMMIT_BATCH, "Writes per store commit.");
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

/// Stage histograms resolved once: `histogram!` with a label hashes the key and
/// looks it up in the registry on every call, five times per request here; a
/// resolved handle is one atomic bucket update.
static STAGES: OnceLock<[metrics::Histogram; 5]> = OnceLock::new();

fn register_stages() {
    STAGES.get_or_init(|| {
        Stage::ALL.map(|s| metrics::histogram!(WEBHOOK_STAGE_DURATION, "stage" => s.as_str()))
    });
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

    /// Ends `stage`: records its duration and starts the next one.
    pub fn lap(&mut self, stage: Stage) {
        let now = Instant::now();
        if let Some(h) = STAGES.get() {
            h[stage as usize].record(now.duration_since(self.last).as_secs_f64());
        }
        self.last = now;
    }
}

//! What every request handler shares: the validated config, the authorization
//! pipeline (which owns secrets, the live rule set, ledger, journal and
//! approvals), the payment rules, the metrics handle and readiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::authorize::Authorizer;
use crate::config::Config;
use crate::payments::PaymentRuleSet;

/// Shared state of a running server.
pub struct AppState {
    /// Validated configuration.
    pub config: Config,
    /// `Stripe-Version` response header, parsed once from the config (`None` if the
    /// configured text is not a valid header value; config validation rejects empty).
    pub stripe_version: Option<hyper::header::HeaderValue>,
    /// The authorization pipeline behind `POST /webhooks/stripe`.
    pub authorizer: Authorizer,
    /// The live payment approval rule set (`POST /v1/payment_approvals`).
    pub payment_rules: ArcSwap<PaymentRuleSet>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Sends decisions as approve/decline calls in legacy mode; `None` in realtime.
    pub legacy: Option<Arc<super::legacy::LegacyClient>>,
    /// The store's published rule sets (with a store): the truth the live set
    /// follows; the rules file seeds it and mirrors it.
    pub rulesets: Option<Arc<crate::rules::published::Rulesets>>,
    /// The decision log read back (decisions explorer, review backtest); `None`
    /// when the store is off.
    decisions: Option<Arc<dyn crate::journal::DecisionLog>>,
    ready: AtomicBool,
    /// Whether the shared store (PostgreSQL) answers; always true without one.
    store_ok: AtomicBool,
}

impl AppState {
    /// Builds the state from a validated config and the pipeline built from it.
    pub fn new(config: Config, authorizer: Authorizer) -> Self {
        let stripe_version = hyper::header::HeaderValue::from_str(&config.stripe_version).ok();
        AppState {
            legacy: config
                .legacy
                .as_ref()
                .map(|l| Arc::new(super::legacy::LegacyClient::new(l, stripe_version.clone()))),
            authorizer,
            stripe_version,
            config,
            payment_rules: ArcSwap::from_pointee(PaymentRuleSet::empty()),
            metrics: crate::metrics::install(),
            rulesets: None,
            decisions: None,
            ready: AtomicBool::new(false),
            store_ok: AtomicBool::new(true),
        }
    }

    /// The live rule set (the pipeline's).
    pub fn rules(&self) -> &ArcSwap<crate::rules::RuleSet> {
        &self.authorizer.rules
    }

    /// Two-party approvals behind the admin API (the pipeline's); `None` when the
    /// store is off.
    pub fn approvals(&self) -> Option<&Arc<crate::approvals::Approvals>> {
        self.authorizer.approvals.as_ref()
    }

    /// Sets the payment approval rule set (empty until then: approve all).
    #[must_use]
    pub fn with_payment_rules(self, rules: PaymentRuleSet) -> Self {
        self.payment_rules.store(Arc::new(rules));
        self
    }

    /// Makes the store's published rule sets the truth of the live set.
    #[must_use]
    pub fn with_rulesets(mut self, rulesets: Arc<crate::rules::published::Rulesets>) -> Self {
        self.rulesets = Some(rulesets);
        self
    }

    /// Sets where the admin API reads the decision log back.
    #[must_use]
    pub fn with_decision_log(mut self, log: Option<Arc<dyn crate::journal::DecisionLog>>) -> Self {
        self.decisions = log;
        self
    }

    /// The decision log, read back; `None` when the store is off.
    pub fn decision_log(&self) -> Option<&Arc<dyn crate::journal::DecisionLog>> {
        self.decisions.as_ref()
    }

    /// Whether `/readyz` answers 200: serving, and the shared store answers.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && self.store_ok.load(Ordering::Acquire)
    }

    /// Records whether the shared store answers (the readiness probe in `app`).
    pub fn set_store_ok(&self, ok: bool) {
        self.store_ok.store(ok, Ordering::Release);
    }

    /// Flips readiness (on once serving, off when draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Current Unix time in seconds, by the pipeline's clock.
    pub fn now(&self) -> i64 {
        self.authorizer.now()
    }
}

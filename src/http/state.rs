//! What every request handler shares: the validated config, pre-keyed webhook
//! secrets, the live rule set, the metrics handle, readiness, and the spend ledger
//! with its store (absent when `[store] enabled = false`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::ledger::Ledger;
use crate::payments::PaymentRuleSet;
use crate::rules::RuleSet;
use crate::store::Store;
use crate::stripe::Secrets;

/// Shared state of a running server.
pub struct AppState {
    /// Validated configuration.
    pub config: Config,
    /// `Stripe-Version` response header, parsed once from the config (`None` if the
    /// configured text is not a valid header value; config validation rejects empty).
    pub stripe_version: Option<hyper::header::HeaderValue>,
    /// Webhook secrets, keyed once.
    pub secrets: Secrets,
    /// The live rule set; swapped whole on reload, read with one atomic load.
    pub rules: ArcSwap<RuleSet>,
    /// The live payment approval rule set (`POST /v1/payment_approvals`).
    pub payment_rules: ArcSwap<PaymentRuleSet>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Spend per card and cardholder; `None` runs without past spend.
    pub ledger: Option<Arc<Ledger>>,
    /// Durable facts and decision log; `None` keeps the ledger in memory only.
    pub store: Option<Arc<Store>>,
    /// Sends decisions as approve/decline calls in legacy mode; `None` in realtime.
    pub legacy: Option<Arc<super::legacy::LegacyClient>>,
    /// Two-party approvals behind the admin API; `None` when the store is off.
    pub approvals: Option<Arc<crate::approvals::Approvals>>,
    ready: AtomicBool,
}

impl AppState {
    /// Builds the state from a validated config.
    pub fn new(config: Config, rules: RuleSet) -> Self {
        let stripe_version = hyper::header::HeaderValue::from_str(&config.stripe_version).ok();
        AppState {
            legacy: config
                .legacy
                .as_ref()
                .map(|l| Arc::new(super::legacy::LegacyClient::new(l, stripe_version.clone()))),
            secrets: Secrets::new(&config.webhook_secrets),
            stripe_version,
            config,
            rules: ArcSwap::from_pointee(rules),
            payment_rules: ArcSwap::from_pointee(PaymentRuleSet::empty()),
            metrics: crate::metrics::install(),
            ledger: None,
            store: None,
            approvals: None,
            ready: AtomicBool::new(false),
        }
    }

    /// Adds the ledger (already rebuilt from `store`) and the store. Readiness
    /// is flipped by `http::serve`, so a server built this way is only ready once
    /// the ledger it was given is complete.
    pub fn with_ledger(mut self, ledger: Arc<Ledger>, store: Option<Arc<Store>>) -> Self {
        self.ledger = Some(ledger);
        self.store = store;
        self
    }

    /// Sets the payment approval rule set (empty until then: approve all).
    pub fn with_payment_rules(self, rules: PaymentRuleSet) -> Self {
        self.payment_rules.store(std::sync::Arc::new(rules));
        self
    }

    /// Adds the approvals service (admin API, overrides, allowances).
    pub fn with_approvals(mut self, approvals: Arc<crate::approvals::Approvals>) -> Self {
        self.approvals = Some(approvals);
        self
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Flips readiness (on once serving, off when draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Current Unix time in seconds.
    pub fn now(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    }
}

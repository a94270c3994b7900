//! What every request handler shares: the validated config, pre-keyed webhook
//! secrets, the live rule set, the metrics handle and readiness.

use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::rules::RuleSet;
use crate::stripe::Secrets;

/// Shared state of a running server.
pub struct AppState {
    /// Validated configuration.
    pub config: Config,
    /// Webhook secrets, keyed once.
    pub secrets: Secrets,
    /// The live rule set; swapped whole on reload, read with one atomic load.
    pub rules: ArcSwap<RuleSet>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    ready: AtomicBool,
}

impl AppState {
    /// Builds the state from a validated config.
    pub fn new(config: Config, rules: RuleSet) -> Self {
        AppState {
            secrets: Secrets::new(&config.webhook_secrets),
            config,
            rules: ArcSwap::from_pointee(rules),
            metrics: crate::metrics::install(),
            ready: AtomicBool::new(false),
        }
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

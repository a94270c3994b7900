//! What `cardgate simulate serve|run` need besides the network: the command
//! line's options resolved into a validated [`Setup`] (secret, window, timeout
//! fallback, id namespace), the progress display of a scenario run, and its
//! [`RunReport`]. The network side (`http::emulator`) binds, sends and serves.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::model::{Emulator, TimeoutFallback};
use super::scenario::{self, Scenario, ScenarioError, Summary};
use super::service::{Simulator, SimulatorConfig, SimulatorConfigError, WebhookSender};
use crate::clock::Clock;
use crate::config::{Config, ConfigError, Env, Overrides};

/// The Stripe API version the emulated account is pinned to by default.
pub const API_VERSION: &str = "2026-10-28.endive";

/// The emulator's command-line options, shared by `simulate serve` and `run`.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// cardgate's webhook URL (`--webhook-url`); checked by the network side.
    pub webhook_url: Option<String>,
    /// `--secret`; else the first of `CARDGATE_WEBHOOK_SECRET`, else of the config.
    pub secret: Option<String>,
    /// The config file the secret is read from when none is given.
    pub config: PathBuf,
    /// The real-time window in milliseconds (`--window-ms`).
    pub window_ms: u64,
    /// `approve` or `decline` (`--timeout-fallback`).
    pub timeout_fallback: String,
    /// Namespace in every id (`--namespace`); default from the clock.
    pub namespace: Option<String>,
    /// The Stripe API version events are shaped as (`--api-version`).
    pub api_version: String,
}

/// The options, validated: what a [`Simulator`] is built from.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Signing and waiting.
    pub config: SimulatorConfig,
    /// The account's timeout setting.
    pub fallback: TimeoutFallback,
    /// Namespace in every id.
    pub namespace: String,
    /// The API version the account is pinned to.
    pub api_version: String,
}

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// No `--secret` or environment secret, and the config file failed to load.
    #[error("no --secret given and the config could not supply one")]
    SecretFromConfig(#[source] ConfigError),
    /// The config file loaded but lists no webhook secret.
    #[error("no webhook secret configured")]
    NoSecret,
    /// `--window-ms` out of range.
    #[error("--window-ms must be between 1 and 60000")]
    Window,
    /// The secret was refused.
    #[error(transparent)]
    Config(#[from] SimulatorConfigError),
    /// `--timeout-fallback` is neither `approve` nor `decline`.
    #[error("--timeout-fallback {0:?} must be approve or decline")]
    TimeoutFallback(String),
    /// `--api-version` is not a version the emulator can shape.
    #[error(
        "--api-version {0:?} must be a Stripe API version from 2024-06-20 on (YYYY-MM-DD[.name])"
    )]
    ApiVersion(String),
    /// `--namespace` is empty or not alphanumeric.
    #[error("--namespace must be letters and digits")]
    Namespace,
    /// `simulate run` needs somewhere to send its traffic.
    #[error("--webhook-url is required")]
    WebhookUrlRequired,
    /// The scenario file was refused.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
}

impl EmulatorOptions {
    /// Validates every option but the URL (the network side's to parse), in the
    /// order the command line has always reported them.
    pub fn setup(&self, env: &dyn Env, clock: &Clock) -> Result<Setup, SetupError> {
        let secret = self.secret(env)?;
        if !(1..=60_000).contains(&self.window_ms) {
            return Err(SetupError::Window);
        }
        let config = SimulatorConfig::new(&secret, Duration::from_millis(self.window_ms))?;
        let fallback = match self.timeout_fallback.as_str() {
            "approve" => TimeoutFallback::Approve,
            "decline" => TimeoutFallback::Decline,
            other => return Err(SetupError::TimeoutFallback(other.to_string())),
        };
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| clock_namespace(clock));
        if namespace.is_empty() || !namespace.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(SetupError::Namespace);
        }
        if !super::versions::supported(&self.api_version) {
            return Err(SetupError::ApiVersion(self.api_version.clone()));
        }
        Ok(Setup {
            config,
            fallback,
            namespace,
            api_version: self.api_version.clone(),
        })
    }

    fn secret(&self, env: &dyn Env) -> Result<String, SetupError> {
        let from_env = env.var("CARDGATE_WEBHOOK_SECRET").and_then(|v| {
            v.split(',')
                .map(str::trim)
                .find(|s| !s.is_empty())
                .map(str::to_string)
        });
        if let Some(s) = self.secret.clone().or(from_env) {
            return Ok(s);
        }
        Config::load(&self.config, env, &Overrides::default())
            .map_err(SetupError::SecretFromConfig)?
            .webhook_secrets
            .into_iter()
            .next()
            .ok_or(SetupError::NoSecret)
    }
}

impl Setup {
    /// A fresh, empty account.
    pub fn emulator(&self) -> Emulator {
        Emulator::new(&self.namespace, self.fallback, &self.api_version)
    }
}

/// Base-36 Unix seconds and process id: short ids, distinct between runs (two
/// runs in one second are two processes).
fn clock_namespace(clock: &Clock) -> String {
    let mut s = base36(u64::try_from(clock.now()).unwrap_or(0));
    s.push_str(&base36(u64::from(std::process::id())));
    s
}

fn base36(mut n: u64) -> String {
    let mut s = String::new();
    while n > 0 {
        s.insert(0, char::from_digit((n % 36) as u32, 36).unwrap_or('0'));
        n /= 36;
    }
    s
}

/// What `simulate run` came to.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The scenario's summary.
    pub summary: Summary,
    /// Wall time of the run, for the throughput line.
    pub elapsed: Duration,
}

impl RunReport {
    /// The summary and the throughput line, as printed.
    #[expect(
        clippy::cast_precision_loss,
        reason = "a request count shown as a rate with no decimals; f64 is exact far past any run"
    )]
    pub fn render(&self) -> String {
        let requests = self.summary.approved + self.summary.partial + self.summary.declined;
        format!(
            "{}throughput: {requests} requests in {:.1}s ({:.0}/s)\n",
            self.summary.render(),
            self.elapsed.as_secs_f64(),
            requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
        )
    }

    /// No disagreement with the oracle, every event accepted, no emulator error.
    pub fn passed(&self) -> bool {
        self.summary.disagreements == 0
            && self.summary.undelivered == 0
            && self.summary.errors.is_empty()
    }
}

/// Runs `scenario` with `seed` through `sim`, drawing progress on stderr unless
/// `quiet`.
pub async fn run_scenario<S: WebhookSender>(
    scenario: Arc<Scenario>,
    seed: u64,
    sim: Arc<Simulator<S>>,
    quiet: bool,
) -> RunReport {
    let started = tokio::time::Instant::now();
    let total = scenario.purchases(seed);
    let progress = Arc::new(AtomicU64::new(0));
    let ticker = (!quiet).then(|| tokio::spawn(draw_progress(progress.clone(), total)));
    let summary = scenario::run(scenario, seed, sim, progress.clone()).await;
    if let Some(t) = ticker {
        t.abort();
        let done = progress.load(Ordering::Relaxed);
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            eprintln!("\r[{}] {done}/{total} purchases", "#".repeat(30));
        } else {
            eprintln!("{done}/{total} purchases: done");
        }
    }
    RunReport {
        summary,
        elapsed: started.elapsed(),
    }
}

/// A redrawn bar on a terminal; one line per tenth in a log file. Runs until
/// aborted.
async fn draw_progress(progress: Arc<AtomicU64>, total: u64) {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let mut last = u64::MAX;
    loop {
        let done = progress.load(Ordering::Relaxed);
        let tenth = (done * 10).checked_div(total).unwrap_or(10);
        if !tty && tenth != last {
            last = tenth;
            eprintln!("{done}/{total} purchases");
        } else if tty && done != last {
            last = done;
            let width = 30u64;
            let filled = (done * width)
                .checked_div(total)
                .unwrap_or(width)
                .min(width);
            let cells = |n: u64| usize::try_from(n).unwrap_or(0);
            eprint!(
                "\r[{}{}] {done}/{total} purchases",
                "#".repeat(cells(filled)),
                " ".repeat(cells(width - filled))
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn options() -> EmulatorOptions {
        EmulatorOptions {
            webhook_url: None,
            secret: None,
            config: PathBuf::from("/nonexistent/cardgate.toml"),
            window_ms: 2000,
            timeout_fallback: "decline".into(),
            namespace: Some("t1".into()),
            api_version: API_VERSION.into(),
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_secret_comes_from_the_flag_then_the_environment_then_the_config() {
        let clock = Clock::fixed(1_767_484_800);
        let flag = EmulatorOptions {
            secret: Some("whsec_flag".into()),
            ..options()
        };
        let e = env(&[("CARDGATE_WEBHOOK_SECRET", " , whsec_env ,whsec_b")]);
        assert_eq!(flag.setup(&e, &clock).unwrap().config.secret, "whsec_flag");
        assert_eq!(
            options().setup(&e, &clock).unwrap().config.secret,
            "whsec_env"
        );
        let err = options().setup(&env(&[]), &clock).unwrap_err();
        assert!(matches!(err, SetupError::SecretFromConfig(_)), "{err}");
    }

    #[test]
    fn bad_options_are_refused() {
        let clock = Clock::fixed(1_767_484_800);
        let e = env(&[("CARDGATE_WEBHOOK_SECRET", "whsec_x")]);
        let refused = |o: EmulatorOptions| o.setup(&e, &clock).unwrap_err().to_string();
        assert_eq!(
            refused(EmulatorOptions {
                window_ms: 0,
                ..options()
            }),
            "--window-ms must be between 1 and 60000"
        );
        assert_eq!(
            refused(EmulatorOptions {
                timeout_fallback: "maybe".into(),
                ..options()
            }),
            "--timeout-fallback \"maybe\" must be approve or decline"
        );
        assert_eq!(
            refused(EmulatorOptions {
                namespace: Some("a-b".into()),
                ..options()
            }),
            "--namespace must be letters and digits"
        );
        assert_eq!(
            refused(EmulatorOptions {
                secret: Some("sk_nope".into()),
                ..options()
            }),
            "webhook secret must start with whsec_"
        );
        assert_eq!(
            refused(EmulatorOptions {
                api_version: "2023-10-16".into(),
                ..options()
            }),
            "--api-version \"2023-10-16\" must be a Stripe API version from 2024-06-20 on (YYYY-MM-DD[.name])"
        );
    }

    #[test]
    fn the_default_namespace_comes_from_the_clock() {
        let e = env(&[("CARDGATE_WEBHOOK_SECRET", "whsec_x")]);
        let o = EmulatorOptions {
            namespace: None,
            ..options()
        };
        let a = o.setup(&e, &Clock::fixed(1_767_484_800)).unwrap().namespace;
        let b = o.setup(&e, &Clock::fixed(1_767_484_801)).unwrap().namespace;
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_eq!(base36(36 * 36 + 35), "10z");
    }
}

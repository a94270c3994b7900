//! Configuration: the TOML file plus environment overrides, turned into a typed,
//! validated [`Config`] before anything binds a port.
//!
//! Every bad setting is reported at once (not just the first), with the file path,
//! so an operator fixes a config in one round. The environment is read through the
//! [`Env`] trait so tests feed a map instead of mutating the process environment.
//!
//! Environment overrides: `CARDGATE_WEBHOOK_SECRET`, `CARDGATE_LISTEN`,
//! `CARDGATE_ADMIN_LISTEN`, `CARDGATE_DATA_DIR`, `CARDGATE_DATABASE_URL` (flags beat
//! them, they beat the file).

mod approvals_config;
mod edge_config;
mod store_config;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::decision::{
    CategorySet, Controls, CountrySet, Currency, CurrencyMismatch, Interval, MccRange, Presence,
    PresenceSet, ProgramControls, SpendingLimit,
};

pub use approvals_config::ApprovalsConfig;
use approvals_config::ApprovalsSection;
pub use edge_config::HttpConfig;
pub use store_config::StoreConfig;
use store_config::StoreSection;

/// Default config path, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/cardgate.toml";

/// Where environment variables come from.
pub trait Env {
    /// The value of `key`, if set and valid UTF-8.
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

impl<H: std::hash::BuildHasher> Env for HashMap<String, String, H> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown/mistyped keys.
    #[error("config file {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The TOML parser's message, with line and column.
        message: String,
    },
    /// Values parsed but do not make sense; every problem is listed.
    #[error("config file {path} has {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// One line per problem.
        problems: Vec<String>,
    },
}

/// What to answer when no decision can be made in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Approve.
    Approve,
    /// Decline.
    Decline,
}

/// How a decision reaches Stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WebhookMode {
    /// In the webhook's response body (Stripe's current flow).
    #[default]
    Realtime,
    /// The deprecated flow: the webhook is answered `200 {"received":true}` and the
    /// decision is sent with `POST /v1/issuing/authorizations/{id}/approve|decline`.
    Legacy,
}

/// `[legacy]`: the Stripe API the deprecated approve/decline calls go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyConfig {
    /// `http://host:port` (no path); Stripe's is `https://api.stripe.com`.
    pub api_base: String,
    /// Secret key (`sk_…`/`rk_…`), from `CARDGATE_STRIPE_API_KEY` or the file.
    pub api_key: String,
    /// Budget for one call, retries included (Stripe's window is about 2 s).
    pub timeout: Duration,
    /// Extra attempts after a transport failure or a 5xx.
    pub retries: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LegacySection {
    api_base: String,
    api_key: String,
    timeout_ms: u64,
    retries: u32,
}

impl Default for LegacySection {
    fn default() -> Self {
        LegacySection {
            api_base: "https://api.stripe.com".into(),
            api_key: String::new(),
            timeout_ms: 1500,
            retries: 2,
        }
    }
}

/// Fault injection, to exercise the fallback path in tests and drills. Never set in
/// production: the defaults do nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultInjection {
    /// Sleep this long before deciding.
    #[serde(default)]
    pub decision_delay_ms: u64,
    /// Panic inside the decision (caught; the fallback answers).
    #[serde(default)]
    pub decision_panic: bool,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Most connections served at once; further accepts wait.
    pub max_connections: usize,
    /// How long graceful shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
    /// Webhook endpoint secrets (`whsec_…`); any may match.
    pub webhook_secrets: Vec<String>,
    /// Signature timestamp tolerance in seconds.
    pub tolerance_seconds: u64,
    /// `Stripe-Version` of a decision whose event has no `api_version` (else the event's).
    pub stripe_version: String,
    /// Deadline budget per request.
    pub deadline: Duration,
    /// Answer when the deadline passes or the decision fails.
    pub fallback: Fallback,
    /// cardgate's own spending controls.
    pub program: ProgramControls,
    /// Fault injection (tests only).
    pub fault_injection: FaultInjection,
    /// Spend ledger and its SQLite store.
    pub store: StoreConfig,
    /// How decisions reach Stripe.
    pub mode: WebhookMode,
    /// The API for [`WebhookMode::Legacy`]; `None` in realtime mode.
    pub legacy: Option<LegacyConfig>,
    /// `[approvals]`: two-party approvals and outgoing events.
    pub approvals: ApprovalsConfig,
    /// `[http]`: what one connection may cost.
    pub http: HttpConfig,
    /// `[admin] listen`: the admin surface's own listener (`None`: one port for all).
    pub admin_listen: Option<SocketAddr>,
}

/// When an approval may be answered relative to its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After the batch holding its reserve committed.
    #[default]
    Sync,
    /// At once; the writer commits within milliseconds.
    Async,
}

// === file format ===

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    webhook: WebhookSection,
    #[serde(default)]
    program: ProgramSection,
    #[serde(default)]
    fault_injection: FaultInjection,
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    legacy: LegacySection,
    #[serde(default)]
    approvals: ApprovalsSection,
    #[serde(default)]
    http: edge_config::HttpSection,
    #[serde(default)]
    admin: edge_config::AdminSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerSection {
    listen: String,
    max_connections: usize,
    shutdown_grace_seconds: u64,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:8080".into(),
            max_connections: 4096,
            shutdown_grace_seconds: 10,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct WebhookSection {
    secrets: Vec<String>,
    tolerance_seconds: u64,
    stripe_version: String,
    deadline_ms: u64,
    fallback: Fallback,
    mode: WebhookMode,
}

impl Default for WebhookSection {
    fn default() -> Self {
        WebhookSection {
            secrets: Vec::new(),
            tolerance_seconds: 300,
            stripe_version: "2026-10-28.endive".into(),
            deadline_ms: 1500,
            fallback: Fallback::Decline,
            mode: WebhookMode::Realtime,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProgramSection {
    allowed_categories: Option<Vec<String>>,
    blocked_categories: Option<Vec<String>>,
    allowed_merchant_countries: Option<Vec<String>>,
    blocked_merchant_countries: Option<Vec<String>>,
    allowed_card_presences: Option<Vec<String>>,
    blocked_card_presences: Option<Vec<String>>,
    #[serde(default)]
    spending_limits: Vec<LimitEntry>,
    spending_limits_currency: Option<String>,
    #[serde(default)]
    blocked_mccs: Vec<String>,
    currency_mismatch: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitEntry {
    amount: i64,
    interval: String,
    categories: Option<Vec<String>>,
}

/// Settings given on the command line; they win over env and file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--admin-listen`.
    pub admin_listen: Option<String>,
}

impl Config {
    /// Reads `path`, applies the `CARDGATE_*` overrides from `env` and then
    /// `overrides`, and validates everything.
    pub fn load(path: &Path, env: &dyn Env, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path, env, overrides)
    }

    /// Like [`Config::load`] with the file's text already read.
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: &dyn Env,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let mut problems = Vec::new();

        let listen_text = overrides
            .listen
            .clone()
            .or_else(|| env.var("CARDGATE_LISTEN"))
            .unwrap_or_else(|| file.server.listen.clone());
        let listen = listen_text.parse().unwrap_or_else(|_| {
            problems.push(format!(
                "listen address {listen_text:?} is not IP:PORT (e.g. 127.0.0.1:8080)"
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        });

        let (http, admin_listen) = edge_config::build(&file, env, overrides, listen, &mut problems);
        let secrets: Vec<String> = match env.var("CARDGATE_WEBHOOK_SECRET") {
            Some(list) => list
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            None => file.webhook.secrets.clone(),
        };
        if secrets.is_empty() {
            problems.push(
                "no webhook secret: set webhook.secrets or CARDGATE_WEBHOOK_SECRET (whsec_…)"
                    .into(),
            );
        }
        for (i, s) in secrets.iter().enumerate() {
            if !s.starts_with("whsec_") {
                // Say which one without echoing the secret.
                problems.push(format!(
                    "webhook secret #{} does not start with whsec_",
                    i + 1
                ));
            }
        }
        let w = &file.webhook;
        if w.deadline_ms == 0 || w.deadline_ms > 1900 {
            problems.push(format!(
                "webhook.deadline_ms = {} must be between 1 and 1900 (Stripe waits about 2 s)",
                w.deadline_ms
            ));
        }
        if w.stripe_version.trim().is_empty() {
            problems.push("webhook.stripe_version must not be empty".into());
        }
        if file.server.max_connections == 0 {
            problems.push("server.max_connections must be at least 1".into());
        }

        let store = store_config::build(
            &file.store,
            env,
            overrides,
            Duration::from_millis(w.deadline_ms),
            &mut problems,
        );

        let legacy = match w.mode {
            WebhookMode::Realtime => None,
            WebhookMode::Legacy => Some(legacy_config(&file.legacy, env, &mut problems)),
        };
        let program = program_controls(&file.program, &mut problems);
        let approvals = ApprovalsConfig::build(file.approvals, env, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        Ok(Config {
            listen,
            max_connections: file.server.max_connections,
            shutdown_grace: Duration::from_secs(file.server.shutdown_grace_seconds),
            webhook_secrets: secrets,
            tolerance_seconds: w.tolerance_seconds,
            stripe_version: w.stripe_version.clone(),
            deadline: Duration::from_millis(w.deadline_ms),
            fallback: w.fallback,
            program,
            fault_injection: file.fault_injection,
            store,
            mode: w.mode,
            legacy,
            approvals,
            http,
            admin_listen,
        })
    }
}

fn legacy_config(l: &LegacySection, env: &dyn Env, problems: &mut Vec<String>) -> LegacyConfig {
    let api_key = env
        .var("CARDGATE_STRIPE_API_KEY")
        .unwrap_or_else(|| l.api_key.clone());
    if api_key.trim().is_empty() {
        problems.push(
            "webhook.mode = \"legacy\" needs a Stripe secret key: set CARDGATE_STRIPE_API_KEY or legacy.api_key".into(),
        );
    }
    let base = l.api_base.trim_end_matches('/');
    let host = base
        .strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"));
    if !host.is_some_and(|h| !h.is_empty() && !h.contains('/')) {
        problems.push(format!(
            "legacy.api_base {base:?} must be https://HOST[:PORT] or http://HOST[:PORT], without a path"
        ));
    }
    if l.timeout_ms == 0 || l.timeout_ms > 1900 {
        problems.push(format!(
            "legacy.timeout_ms = {} must be between 1 and 1900 (the call must land inside Stripe's window)",
            l.timeout_ms
        ));
    }
    if l.retries > 10 {
        problems.push("legacy.retries must be at most 10".into());
    }
    LegacyConfig {
        api_base: base.to_string(),
        api_key,
        timeout: Duration::from_millis(l.timeout_ms),
        retries: l.retries,
    }
}

fn categories(
    key: &str,
    names: Option<&[String]>,
    problems: &mut Vec<String>,
) -> Option<CategorySet> {
    let names = names?;
    let mut set = CategorySet::default();
    for n in names {
        // Config is typed by people: an unknown name is a typo, not a new Stripe value.
        if !set.insert_name(n) {
            problems.push(format!("program.{key}: unknown Stripe category {n:?}"));
        }
    }
    Some(set)
}

fn countries(
    key: &str,
    codes: Option<&[String]>,
    problems: &mut Vec<String>,
) -> Option<CountrySet> {
    let codes = codes?;
    let mut set = CountrySet::default();
    for c in codes {
        if !set.insert(c) {
            problems.push(format!(
                "program.{key}: {c:?} is not an ISO alpha-2 country code"
            ));
        }
    }
    Some(set)
}

fn presences(
    key: &str,
    values: Option<&[String]>,
    problems: &mut Vec<String>,
) -> Option<PresenceSet> {
    let values = values?;
    let mut set = PresenceSet::default();
    for v in values {
        match Presence::parse(v) {
            Some(p) => set.insert(p),
            None => problems.push(format!(
                "program.{key}: {v:?} is not `present` or `not_present`"
            )),
        }
    }
    Some(set)
}

#[expect(
    clippy::too_many_lines,
    reason = "one pass over [program], so that every bad field lands in the same report"
)]
fn program_controls(p: &ProgramSection, problems: &mut Vec<String>) -> ProgramControls {
    for (a, b) in [
        (
            "allowed_categories",
            p.allowed_categories.is_some() && p.blocked_categories.is_some(),
        ),
        (
            "allowed_merchant_countries",
            p.allowed_merchant_countries.is_some() && p.blocked_merchant_countries.is_some(),
        ),
        (
            "allowed_card_presences",
            p.allowed_card_presences.is_some() && p.blocked_card_presences.is_some(),
        ),
    ] {
        if b {
            problems.push(format!(
                "program.{a} and its blocked_ twin cannot both be set (Stripe refuses it too)"
            ));
        }
    }
    let mut spending_limits = Vec::new();
    for (i, l) in p.spending_limits.iter().enumerate() {
        let interval = Interval::parse(&l.interval);
        if interval.is_none() {
            problems.push(format!(
                "program.spending_limits[{i}].interval {:?} is not one of per_authorization, daily, weekly, monthly, yearly, all_time",
                l.interval
            ));
        }
        if l.amount < 0 {
            problems.push(format!(
                "program.spending_limits[{i}].amount must not be negative"
            ));
        }
        let key = format!("spending_limits[{i}].categories");
        let cats = categories(&key, l.categories.as_deref(), problems).filter(|s| !s.is_empty());
        if let Some(interval) = interval {
            spending_limits.push(SpendingLimit {
                amount: l.amount,
                interval,
                categories: cats,
            });
        }
    }
    let spending_limits_currency = p.spending_limits_currency.as_ref().and_then(|c| {
        let parsed = Currency::parse(c);
        if parsed.is_none() {
            problems.push(format!(
                "program.spending_limits_currency {c:?} is not a 3-letter code"
            ));
        }
        parsed
    });
    let mut blocked_mccs = Vec::new();
    for m in &p.blocked_mccs {
        match MccRange::parse(m) {
            Some(r) => blocked_mccs.push(r),
            None => problems.push(format!(
                "program.blocked_mccs: {m:?} is not an MCC (NNNN) or range (NNNN-NNNN)"
            )),
        }
    }
    let currency_mismatch = match p.currency_mismatch.as_deref() {
        None | Some("decline") => CurrencyMismatch::Decline,
        Some("ignore") => CurrencyMismatch::Ignore,
        Some(other) => {
            problems.push(format!(
                "program.currency_mismatch {other:?} must be \"decline\" or \"ignore\""
            ));
            CurrencyMismatch::Decline
        }
    };
    ProgramControls {
        controls: Controls {
            allowed_categories: categories(
                "allowed_categories",
                p.allowed_categories.as_deref(),
                problems,
            ),
            blocked_categories: categories(
                "blocked_categories",
                p.blocked_categories.as_deref(),
                problems,
            ),
            allowed_merchant_countries: countries(
                "allowed_merchant_countries",
                p.allowed_merchant_countries.as_deref(),
                problems,
            ),
            blocked_merchant_countries: countries(
                "blocked_merchant_countries",
                p.blocked_merchant_countries.as_deref(),
                problems,
            ),
            allowed_card_presences: presences(
                "allowed_card_presences",
                p.allowed_card_presences.as_deref(),
                problems,
            ),
            blocked_card_presences: presences(
                "blocked_card_presences",
                p.blocked_card_presences.as_deref(),
                problems,
            ),
            spending_limits,
            spending_limits_currency,
        },
        blocked_mccs,
        currency_mismatch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_toml(text, Path::new("test.toml"), &env, &Overrides::default())
    }

    #[test]
    fn bundled_example_config_is_valid() {
        let text = include_str!("../config/cardgate.toml");
        let c = load(text, &[]).unwrap();
        assert_eq!(c.webhook_secrets.len(), 1);
        assert_eq!(c.deadline, Duration::from_millis(1500));
    }

    #[test]
    fn env_overrides_file() {
        let text = "[webhook]\nsecrets = [\"whsec_file\"]\n[server]\nlisten = \"127.0.0.1:1\"\n";
        let c = load(
            text,
            &[
                ("CARDGATE_WEBHOOK_SECRET", "whsec_a, whsec_b"),
                ("CARDGATE_LISTEN", "127.0.0.1:0"),
            ],
        )
        .unwrap();
        assert_eq!(c.webhook_secrets, vec!["whsec_a", "whsec_b"]);
        assert_eq!(c.listen.port(), 0);
        let over = Overrides {
            listen: Some("127.0.0.1:9".into()),
            ..Overrides::default()
        };
        let c = Config::from_toml(text, Path::new("t"), &HashMap::new(), &over).unwrap();
        assert_eq!(c.listen.port(), 9);
    }

    #[test]
    fn every_problem_is_reported_and_secrets_are_not_echoed() {
        let text = r#"
[server]
listen = "nowhere"
[webhook]
secrets = ["supersecretvalue"]
deadline_ms = 0
[program]
blocked_categories = ["bakeries", "bakerys"]
blocked_merchant_countries = ["USA"]
blocked_mccs = ["12"]
spending_limits = [{ amount = 5, interval = "hourly" }]
"#;
        let err = load(text, &[]).unwrap_err().to_string();
        for needle in [
            "nowhere",
            "whsec_",
            "deadline_ms",
            "bakerys",
            "USA",
            "\"12\"",
            "hourly",
        ] {
            assert!(err.contains(needle), "{needle} not in {err}");
        }
        assert!(!err.contains("supersecretvalue"));
    }

    #[test]
    fn store_section_env_and_flag() {
        let text = "[webhook]\nsecrets = [\"whsec_a\"]\n[store]\ndata_dir = \"/file\"\ndurability = \"async\"\n";
        let c = load(text, &[]).unwrap();
        assert_eq!(c.store.data_dir, PathBuf::from("/file"));
        assert_eq!(c.store.durability, Durability::Async);
        assert!(c.store.enabled);
        let c = load(text, &[("CARDGATE_DATA_DIR", "/env")]).unwrap();
        assert_eq!(c.store.data_dir, PathBuf::from("/env"));
        let over = Overrides {
            data_dir: Some("/flag".into()),
            ..Overrides::default()
        };
        let env: HashMap<String, String> =
            [("CARDGATE_DATA_DIR".to_string(), "/env".to_string())].into();
        let c = Config::from_toml(text, Path::new("t"), &env, &over).unwrap();
        assert_eq!(c.store.data_dir, PathBuf::from("/flag"));
        let c = load("[webhook]\nsecrets = [\"whsec_a\"]\n", &[]).unwrap();
        assert_eq!(c.store.data_dir, PathBuf::from("./data"));
        assert_eq!(c.store.durability, Durability::Sync);
        let err = load(
            "[webhook]\nsecrets = [\"whsec_a\"]\n[store]\ndurability = \"maybe\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("store.durability"), "{err}");
    }

    #[test]
    fn legacy_mode_needs_a_key_and_a_valid_base() {
        let c = load("[webhook]\nsecrets = [\"whsec_a\"]\n", &[]).unwrap();
        assert_eq!((c.mode, c.legacy), (WebhookMode::Realtime, None));
        let text = "[webhook]\nsecrets = [\"whsec_a\"]\nmode = \"legacy\"\n[legacy]\napi_base = \"http://127.0.0.1:9/\"\n";
        let err = load(text, &[]).unwrap_err().to_string();
        assert!(err.contains("CARDGATE_STRIPE_API_KEY"), "{err}");
        let c = load(text, &[("CARDGATE_STRIPE_API_KEY", "sk_test_x")]).unwrap();
        let l = c.legacy.unwrap();
        assert_eq!(
            (l.api_base.as_str(), l.api_key.as_str()),
            ("http://127.0.0.1:9", "sk_test_x")
        );
        let text =
            "[webhook]\nsecrets = [\"whsec_a\"]\nmode = \"legacy\"\n[legacy]\napi_key = \"k\"\n";
        let l = load(text, &[]).unwrap().legacy.unwrap();
        assert_eq!(l.api_base, "https://api.stripe.com");
        let text = "[webhook]\nsecrets = [\"whsec_a\"]\nmode = \"legacy\"\n[legacy]\napi_key = \"k\"\ntimeout_ms = 5000\napi_base = \"ftp://x/y\"\n";
        let err = load(text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("api_base") && err.contains("timeout_ms"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_syntax_errors_with_position() {
        let err = load("[webhook]\nsecretz = []\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("secretz") && err.contains("line 2"), "{err}");
    }
}

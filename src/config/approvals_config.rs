//! The `[approvals]` config section, validated with the rest of the config. Owned
//! by `config` (not `approvals`) so that reading the file needs nothing of the
//! service, and the service reads its settings from here.
//!
//! ```toml
//! [approvals]
//! request_expiry_seconds = 86400     # unsubmitted requests expire (default 24 h)
//! review_expiry_seconds = 604800     # submitted, unreviewed requests expire (7 days)
//! allowance_window_seconds = 1800    # an approved authorization retry must come within
//! event_endpoints = ["http://127.0.0.1:9000/cardgate-events"]
//! signing_secret = "whsec_…"         # or CARDGATE_EVENTS_SECRET
//! retry_initial_ms = 1000            # first retry delay, doubled per attempt
//! retry_max_ms = 3600000             # cap on one delay
//! max_attempts = 12                  # then the delivery is marked failed
//! max_key_lifetime = "90d"           # optional: keys without expiry get it, longer are refused
//! ```
//!
//! `CARDGATE_APPROVALS_CLOCK_OFFSET_SECONDS` (tests only) shifts the clock that
//! expiry and allowances read, so a test can restart the server "25 hours later".

use std::time::Duration;

use serde::Deserialize;

use super::Env;

/// `[approvals]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ApprovalsSection {
    request_expiry_seconds: u64,
    review_expiry_seconds: u64,
    allowance_window_seconds: u64,
    event_endpoints: Vec<String>,
    signing_secret: Option<String>,
    retry_initial_ms: u64,
    retry_max_ms: u64,
    max_attempts: u32,
    max_key_lifetime: Option<String>,
}

impl Default for ApprovalsSection {
    fn default() -> Self {
        ApprovalsSection {
            request_expiry_seconds: 24 * 3600,
            review_expiry_seconds: 7 * 24 * 3600,
            allowance_window_seconds: 30 * 60,
            event_endpoints: Vec::new(),
            signing_secret: None,
            retry_initial_ms: 1000,
            retry_max_ms: 3_600_000,
            max_attempts: 12,
            max_key_lifetime: None,
        }
    }
}

/// Validated approvals settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalsConfig {
    /// Lifetime of an unsubmitted request.
    pub request_expiry: Duration,
    /// Lifetime of a submitted request awaiting review.
    pub review_expiry: Duration,
    /// How long an approved authorization allowance waits for its retry.
    pub allowance_window: Duration,
    /// Where outgoing events are sent, by POST (`http://` only).
    pub endpoints: Vec<String>,
    /// Signs outgoing events (`whsec_…`).
    pub signing_secret: Option<String>,
    /// First retry delay.
    pub retry_initial: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Attempts per delivery before it is given up.
    pub max_attempts: u32,
    /// Test-only clock shift, seconds.
    pub clock_offset: i64,
    /// The longest an API key may live: keys created without an expiry get it,
    /// longer ones are refused. `None`: keys may live forever.
    pub max_key_lifetime: Option<Duration>,
    /// The authorization rules file `serve` loaded (`--rules`), which an approved
    /// publish or list change rewrites so it survives a restart; `None` keeps such
    /// changes in memory only. Set by `serve`, not by the config file.
    pub rules_file: Option<std::path::PathBuf>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        let mut problems = Vec::new();
        let s = ApprovalsConfig::build(
            ApprovalsSection::default(),
            &std::collections::HashMap::new(),
            &mut problems,
        );
        debug_assert!(problems.is_empty());
        s
    }
}

impl ApprovalsConfig {
    /// Validates `s`, pushing one line per problem.
    pub(super) fn build(
        s: ApprovalsSection,
        env: &dyn Env,
        problems: &mut Vec<String>,
    ) -> ApprovalsConfig {
        if s.request_expiry_seconds == 0 || s.review_expiry_seconds == 0 {
            problems.push("approvals.*_expiry_seconds must be at least 1".into());
        }
        if s.allowance_window_seconds == 0 {
            problems.push("approvals.allowance_window_seconds must be at least 1".into());
        }
        if s.retry_initial_ms == 0 || s.retry_max_ms < s.retry_initial_ms {
            problems.push(
                "approvals.retry_initial_ms must be at least 1 and at most retry_max_ms".into(),
            );
        }
        if s.max_attempts == 0 {
            problems.push("approvals.max_attempts must be at least 1".into());
        }
        for (i, url) in s.event_endpoints.iter().enumerate() {
            if !is_http_url(url) {
                problems.push(format!(
                    "approvals.event_endpoints[{i}] {url:?} is not an http:// URL"
                ));
            }
        }
        let secret = env
            .var("CARDGATE_EVENTS_SECRET")
            .filter(|v| !v.is_empty())
            .or(s.signing_secret);
        match &secret {
            Some(k) if !k.starts_with("whsec_") => {
                problems.push("approvals.signing_secret does not start with whsec_".into());
            }
            None if !s.event_endpoints.is_empty() => problems.push(
                "approvals.event_endpoints is set but no signing secret: set approvals.signing_secret or CARDGATE_EVENTS_SECRET (whsec_…)".into(),
            ),
            _ => {}
        }
        let clock_offset = match env.var("CARDGATE_APPROVALS_CLOCK_OFFSET_SECONDS") {
            None => 0,
            Some(v) => v.trim().parse().unwrap_or_else(|_| {
                problems.push(format!(
                    "CARDGATE_APPROVALS_CLOCK_OFFSET_SECONDS {v:?} is not an integer"
                ));
                0
            }),
        };
        let max_key_lifetime = s.max_key_lifetime.as_deref().and_then(|v| {
            match humantime::parse_duration(v.trim()) {
                Ok(d) if d.as_secs() >= 1 => Some(d),
                Ok(_) => {
                    problems.push(format!(
                        "approvals.max_key_lifetime {v:?} must be at least 1 s"
                    ));
                    None
                }
                Err(e) => {
                    problems.push(format!(
                        "approvals.max_key_lifetime {v:?} is not a duration like \"90d\" or \"12h\": {e}"
                    ));
                    None
                }
            }
        });
        ApprovalsConfig {
            request_expiry: Duration::from_secs(s.request_expiry_seconds),
            review_expiry: Duration::from_secs(s.review_expiry_seconds),
            allowance_window: Duration::from_secs(s.allowance_window_seconds),
            endpoints: s.event_endpoints,
            signing_secret: secret,
            retry_initial: Duration::from_millis(s.retry_initial_ms),
            retry_max: Duration::from_millis(s.retry_max_ms),
            max_attempts: s.max_attempts,
            clock_offset,
            max_key_lifetime,
            rules_file: None,
        }
    }

    /// The `[approvals]` section of the config file at `path` alone, validated,
    /// with `env`'s overrides: what `cardgate keys` applies. Only this section is
    /// read, so a key can be managed with a config that `serve` would refuse for
    /// another reason (no webhook secret on this machine); a missing file gives
    /// the defaults, as `keys` finds its data directory without one.
    pub fn from_config_file(path: &std::path::Path, env: &dyn Env) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct OnlyApprovals {
            #[serde(default)]
            approvals: Option<toml::Value>,
        }
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let file: OnlyApprovals =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let section = match file.approvals {
            None => ApprovalsSection::default(),
            Some(v) => v
                .try_into()
                .map_err(|e| format!("{}: [approvals]: {e}", path.display()))?,
        };
        let mut problems = Vec::new();
        let settings = ApprovalsConfig::build(section, env, &mut problems);
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(format!("{}: {}", path.display(), problems.join("; ")))
        }
    }

    /// Delay before attempt `attempts + 1`, after `attempts` failures: doubles from
    /// `retry_initial`, capped at `retry_max`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempts.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.retry_initial
            .checked_mul(factor)
            .unwrap_or(self.retry_max)
            .min(self.retry_max)
    }
}

/// Whether `url` is an absolute `http://` URL with a host, which is what the
/// outbox's HTTP client can POST to. Checked by hand because config knows no HTTP
/// crate: the scheme (case-insensitive, as HTTP clients read it), a non-empty host
/// after any `user@`, an optional numeric port, and only characters a URI may
/// carry unescaped.
fn is_http_url(url: &str) -> bool {
    const SCHEME: &str = "http://";
    let Some(rest) = url
        .get(..SCHEME.len())
        .filter(|s| s.eq_ignore_ascii_case(SCHEME))
        .map(|_| &url[SCHEME.len()..])
    else {
        return false;
    };
    let uri_char = |b: u8| b.is_ascii_graphic() && !b"\"<>\\^`{|}".contains(&b);
    if !rest.bytes().all(uri_char) {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:8080`.
        let Some((addr, after)) = v6.split_once(']') else {
            return false;
        };
        match after {
            "" => (addr, None),
            _ => match after.strip_prefix(':') {
                Some(p) => (addr, Some(p)),
                None => return false,
            },
        }
    } else {
        match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    });
    !host.is_empty() && port_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn defaults_are_valid() {
        let s = ApprovalsConfig::default();
        assert_eq!(s.request_expiry, Duration::from_hours(24));
        assert_eq!(s.allowance_window, Duration::from_mins(30));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = ApprovalsConfig::default();
        assert_eq!(s.backoff(1), Duration::from_secs(1));
        assert_eq!(s.backoff(2), Duration::from_secs(2));
        assert_eq!(s.backoff(4), Duration::from_secs(8));
        assert_eq!(s.backoff(40), Duration::from_hours(1));
    }

    #[test]
    fn max_key_lifetime_is_a_humantime_duration() {
        let build = |v: &str| {
            let mut p = Vec::new();
            let sec = ApprovalsSection {
                max_key_lifetime: Some(v.into()),
                ..ApprovalsSection::default()
            };
            let s = ApprovalsConfig::build(sec, &HashMap::new(), &mut p);
            (s.max_key_lifetime, p)
        };
        assert_eq!(build("90d"), (Some(Duration::from_hours(90 * 24)), vec![]));
        assert_eq!(build(" 1h 30m "), (Some(Duration::from_mins(90)), vec![]));
        for bad in ["", "90", "ninety days", "0s", "-1d"] {
            let (d, p) = build(bad);
            assert_eq!(d, None, "{bad:?}");
            assert_eq!(p.len(), 1, "{bad:?}: {p:?}");
            assert!(p[0].contains("max_key_lifetime"), "{p:?}");
        }
        assert_eq!(ApprovalsConfig::default().max_key_lifetime, None);
    }

    #[test]
    fn endpoints_need_http_and_a_secret() {
        let mut p = Vec::new();
        let sec = ApprovalsSection {
            event_endpoints: vec!["ftp://x".into()],
            ..ApprovalsSection::default()
        };
        ApprovalsConfig::build(sec, &HashMap::new(), &mut p);
        assert_eq!(p.len(), 2, "{p:?}");
        let mut p = Vec::new();
        let env: HashMap<String, String> =
            [("CARDGATE_EVENTS_SECRET".to_string(), "whsec_x".to_string())].into();
        let sec = ApprovalsSection {
            event_endpoints: vec!["http://127.0.0.1:1/e".into()],
            ..ApprovalsSection::default()
        };
        let s = ApprovalsConfig::build(sec, &env, &mut p);
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(s.signing_secret.as_deref(), Some("whsec_x"));
    }

    #[test]
    fn endpoint_urls_are_checked_without_an_http_crate() {
        for ok in [
            "http://127.0.0.1:9000/cardgate-events",
            "http://localhost/e?x=1",
            "HTTP://example.com",
            "http://user@example.com:80/",
            "http://[::1]:8080/events",
            "http://[::1]",
        ] {
            assert!(is_http_url(ok), "{ok}");
        }
        for bad in [
            "https://example.com/",
            "ftp://x",
            "http://",
            "http:///path",
            "http://:80/",
            "http://host:port/",
            "http://host:99999/",
            "http://exa mple.com/",
            "http://[::1/",
            "127.0.0.1:9000",
        ] {
            assert!(!is_http_url(bad), "{bad}");
        }
    }
}

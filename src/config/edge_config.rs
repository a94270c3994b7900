//! The `[http]` and `[admin]` config sections: what one connection may cost and
//! where the admin surface listens. Validated with the rest of the config.
//!
//! ```toml
//! [http]
//! header_read_timeout = 10   # seconds from open (or a request's first byte) to its full head
//! idle_timeout = 60          # seconds a kept-alive connection may wait for its next request
//!
//! [admin]
//! listen = "127.0.0.1:9090"  # or CARDGATE_ADMIN_LISTEN / --admin-listen; unset: one port
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{Env, Overrides};

/// `[http]`: how long a connection may hold one of the server's slots without
/// making progress. A slot is what a flood of idle or slow clients would exhaust,
/// so both phases in which cardgate waits for the client are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// From a connection's open, or from the first byte of a request on a kept-alive
    /// connection, until that request's head (request line and headers) is complete.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request (and how long
    /// an answered request may wait for a client that does not read its response).
    pub idle_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_read_timeout: Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

const DEFAULT_HEADER_READ_TIMEOUT: u64 = 10;
const DEFAULT_IDLE_TIMEOUT: u64 = 60;
/// An hour: past that a "timeout" no longer protects the slots.
const MAX_SECONDS: f64 = 3600.0;

/// `[http]` as written: seconds, fractions allowed (tests use short values).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct HttpSection {
    header_read_timeout: f64,
    idle_timeout: f64,
}

impl Default for HttpSection {
    #[allow(clippy::cast_precision_loss, reason = "small constants, exact in f64")]
    fn default() -> Self {
        HttpSection {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT as f64,
            idle_timeout: DEFAULT_IDLE_TIMEOUT as f64,
        }
    }
}

/// `[admin]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminSection {
    listen: Option<String>,
}

impl HttpConfig {
    /// Validates `[http]`, adding a line to `problems` per bad value.
    fn build(h: &HttpSection, problems: &mut Vec<String>) -> HttpConfig {
        let mut seconds = |key: &str, v: f64, default: u64| {
            if v.is_finite() && v > 0.0 && v <= MAX_SECONDS {
                Duration::from_secs_f64(v)
            } else {
                problems.push(format!(
                    "http.{key} = {v} must be a number of seconds above 0 and at most {MAX_SECONDS}"
                ));
                Duration::from_secs(default)
            }
        };
        HttpConfig {
            header_read_timeout: seconds(
                "header_read_timeout",
                h.header_read_timeout,
                DEFAULT_HEADER_READ_TIMEOUT,
            ),
            idle_timeout: seconds("idle_timeout", h.idle_timeout, DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// Validates `[http]` and `[admin]`: the connection bounds and the admin address.
pub(super) fn build(
    file: &super::File,
    env: &dyn Env,
    overrides: &Overrides,
    listen: SocketAddr,
    problems: &mut Vec<String>,
) -> (HttpConfig, Option<SocketAddr>) {
    let http = HttpConfig::build(&file.http, problems);
    (
        http,
        admin_listen(&file.admin, env, overrides, listen, problems),
    )
}

/// `--admin-listen`, else `CARDGATE_ADMIN_LISTEN`, else `[admin] listen`; an empty
/// value at any level means "unset", so an environment can switch the file's off.
fn admin_listen(
    file: &AdminSection,
    env: &dyn Env,
    overrides: &Overrides,
    listen: SocketAddr,
    problems: &mut Vec<String>,
) -> Option<SocketAddr> {
    let text = overrides
        .admin_listen
        .clone()
        .or_else(|| env.var("CARDGATE_ADMIN_LISTEN"))
        .or_else(|| file.listen.clone())?;
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let Ok(addr) = text.parse::<SocketAddr>() else {
        problems.push(format!(
            "admin listen address {text:?} is not IP:PORT (e.g. 127.0.0.1:9090)"
        ));
        return None;
    };
    // Port 0 twice means two different free ports; any other equal pair cannot bind.
    if addr == listen && addr.port() != 0 {
        problems.push(format!(
            "admin listen address {addr} is the webhook's: the admin surface needs its own port"
        ));
    }
    Some(addr)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::path::Path;

    use super::super::{Config, ConfigError};
    use super::*;

    const BASE: &str = "[webhook]\nsecrets = [\"whsec_a\"]\n";

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        load_with(text, env, &Overrides::default())
    }

    fn load_with(
        text: &str,
        env: &[(&str, &str)],
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Config::from_toml(text, Path::new("test.toml"), &env, overrides)
    }

    #[test]
    fn http_timeouts_default_take_fractions_and_refuse_nonsense() {
        let c = load(BASE, &[]).unwrap();
        assert_eq!(c.http, HttpConfig::default());
        assert_eq!(c.http.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.http.idle_timeout, Duration::from_mins(1));
        let text = format!("{BASE}[http]\nheader_read_timeout = 0.5\nidle_timeout = 2\n");
        let c = load(&text, &[]).unwrap();
        assert_eq!(c.http.header_read_timeout, Duration::from_millis(500));
        assert_eq!(c.http.idle_timeout, Duration::from_secs(2));
        let text = format!("{BASE}[http]\nheader_read_timeout = 0\nidle_timeout = 7200\n");
        let err = load(&text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("http.header_read_timeout") && err.contains("http.idle_timeout"),
            "{err}"
        );
    }

    #[test]
    fn admin_listen_flag_beats_env_beats_file_and_must_differ() {
        assert_eq!(load(BASE, &[]).unwrap().admin_listen, None);
        let text = format!("{BASE}[admin]\nlisten = \"127.0.0.1:9001\"\n");
        let addr = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        assert_eq!(
            load(&text, &[]).unwrap().admin_listen,
            addr("127.0.0.1:9001")
        );
        let env = [("CARDGATE_ADMIN_LISTEN", "127.0.0.1:9002")];
        assert_eq!(
            load(&text, &env).unwrap().admin_listen,
            addr("127.0.0.1:9002")
        );
        // An empty environment value switches the file's listener off.
        let off = [("CARDGATE_ADMIN_LISTEN", "")];
        assert_eq!(load(&text, &off).unwrap().admin_listen, None);
        let flag = Overrides {
            admin_listen: Some("127.0.0.1:9003".into()),
            ..Overrides::default()
        };
        let c = load_with(&text, &env, &flag).unwrap();
        assert_eq!(c.admin_listen, addr("127.0.0.1:9003"));

        let bad = format!("{BASE}[admin]\nlisten = \"admin\"\n");
        let err = load(&bad, &[]).unwrap_err().to_string();
        assert!(err.contains("admin listen address \"admin\""), "{err}");
        let same = format!(
            "{BASE}[server]\nlisten = \"127.0.0.1:9001\"\n[admin]\nlisten = \"127.0.0.1:9001\"\n"
        );
        let err = load(&same, &[]).unwrap_err().to_string();
        assert!(err.contains("its own port"), "{err}");
        // Port 0 twice: two free ports, not a clash.
        let zeros = [
            ("CARDGATE_LISTEN", "127.0.0.1:0"),
            ("CARDGATE_ADMIN_LISTEN", "127.0.0.1:0"),
        ];
        let c = load(BASE, &zeros).unwrap();
        assert_eq!(c.admin_listen.map(|a| a.port()), Some(0));
    }
}

//! Shared helpers for integration tests: start the real `cardgate` binary on
//! 127.0.0.1:0 with a temporary config, sign events the way Stripe does, and talk
//! to it over real HTTP/1.1.
#![allow(
    dead_code,
    reason = "each test crate uses its own subset of these helpers"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

pub mod postgres;
pub mod raw;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The secret tests configure unless they say otherwise.
pub const SECRET: &str = "whsec_integration_test_secret";

/// Minimal config: the test secret, no program controls.
pub fn base_config() -> String {
    format!("[webhook]\nsecrets = [\"{SECRET}\"]\n")
}

/// A running `cardgate serve`; killed on drop.
pub struct Server {
    child: Option<Child>,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// The admin listener's `127.0.0.1:PORT`, when started with one.
    pub admin_addr: Option<String>,
    /// Everything the server wrote to stderr so far.
    pub stderr: Arc<Mutex<String>>,
    dir: Option<tempfile::TempDir>,
}

/// Version of the empty rule set every `Server` starts with.
pub fn empty_ruleset() -> String {
    cardgate::rules::RuleSet::from_toml("")
        .expect("empty rules file compiles")
        .version()
        .to_string()
}

/// Spawns `cmd` (stdout and stderr piped), collects its stderr in the background,
/// and reads its first stdout line, which must be `banner` followed by the address
/// it bound. Returns the child, that address and the stderr collected so far.
pub fn spawn_listening(
    cmd: &mut Command,
    banner: &str,
) -> (std::process::Child, String, Arc<Mutex<String>>) {
    let (child, mut addrs, stderr) = spawn_listening_lines(cmd, &[banner]);
    (child, addrs.remove(0), stderr)
}

/// Like [`spawn_listening`] for a banner of several lines, one address each.
pub fn spawn_listening_lines(
    cmd: &mut Command,
    banners: &[&str],
) -> (std::process::Child, Vec<String>, Arc<Mutex<String>>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut err = child.stderr.take().unwrap();
    let sink = stderr.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut addrs = Vec::new();
    for banner in banners {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let Some(addr) = line.trim().strip_prefix(banner).map(str::to_string) else {
            let _ = child.kill();
            panic!(
                "did not start: stdout {line:?}, stderr {}",
                stderr.lock().unwrap()
            )
        };
        addrs.push(addr);
    }
    (child, addrs, stderr)
}

impl Server {
    /// Starts the binary with `config` (TOML text) and extra environment variables.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Server {
        Server::start_in(tempfile::tempdir().unwrap(), config, env)
    }

    /// Like [`Server::start`] in a given directory (its `data/` holds
    /// cardgate.db), so a test can create keys first or restart on the same data.
    pub fn start_in(dir: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Server {
        Server::launch(dir, config, env, false)
    }

    /// Like [`Server::start_in`] with `--admin-listen 127.0.0.1:0`: the admin
    /// surface on its own port ([`Server::admin_url`]).
    pub fn start_with_admin_listener(
        dir: tempfile::TempDir,
        config: &str,
        env: &[(&str, &str)],
    ) -> Server {
        Server::launch(dir, config, env, true)
    }

    fn launch(
        dir: tempfile::TempDir,
        config: &str,
        env: &[(&str, &str)],
        admin_listener: bool,
    ) -> Server {
        let path = dir.path().join("cardgate.toml");
        std::fs::write(&path, config).unwrap();
        // An empty rule set unless the test brings its own (CARDGATE_RULES in `env`):
        // the bundled config/rules.toml would make decisions depend on its contents.
        let rules = dir.path().join("rules.toml");
        std::fs::write(&rules, "").unwrap();
        let payment_rules = dir.path().join("payment_rules.toml");
        std::fs::write(&payment_rules, "").unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cardgate"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .env_remove("CARDGATE_WEBHOOK_SECRET")
            .env_remove("CARDGATE_LISTEN")
            .env_remove("CARDGATE_ADMIN_LISTEN")
            .env("CARDGATE_DATA_DIR", dir.path().join("data"))
            .env("CARDGATE_LOG", "debug")
            .env("CARDGATE_RULES", &rules)
            .env("CARDGATE_PAYMENT_RULES", &payment_rules);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut banners = vec!["cardgate listening on http://"];
        if admin_listener {
            cmd.args(["--admin-listen", "127.0.0.1:0"]);
            banners.push("cardgate admin listening on http://");
        }
        let (child, mut addrs, stderr) = spawn_listening_lines(&mut cmd, &banners);
        let admin_addr = admin_listener.then(|| addrs.remove(1));
        Server {
            child: Some(child),
            addr: addrs.remove(0),
            admin_addr,
            stderr,
            dir: Some(dir),
        }
    }

    /// Stops the server (SIGTERM) and hands back its directory for a restart.
    pub fn stop(mut self) -> tempfile::TempDir {
        self.terminate();
        self.dir.take().unwrap()
    }

    /// `http://ADDR{path}`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `http://ADMIN_ADDR{path}` (panics unless started with an admin listener).
    pub fn admin_url(&self, path: &str) -> String {
        let addr = self.admin_addr.as_ref().expect("no admin listener");
        format!("http://{addr}{path}")
    }

    /// Sends signal `sig` (a `kill` name such as `HUP`) to the server.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let ok = Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -{sig} {pid} failed");
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let ok = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        child.wait().unwrap()
    }

    /// Waits until `/readyz` answers 200.
    pub async fn ready(&self) {
        for _ in 0..500 {
            if let Ok(r) = get(&self.url("/readyz")).await
                && r.status == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("server never became ready");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The data directory of a test directory (what `CARDGATE_DATA_DIR` points at).
pub fn data_dir(dir: &std::path::Path) -> PathBuf {
    dir.join("data")
}

/// Creates an API key with `cardgate keys create` in `dir`'s data directory and
/// returns `(id, secret)`.
pub fn create_key(dir: &std::path::Path, role: &str) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cardgate"))
        .args([
            "keys",
            "create",
            "--role",
            role,
            "--name",
            &format!("test {role}"),
            "--data-dir",
        ])
        .arg(data_dir(dir))
        .env("CARDGATE_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "keys create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let err = String::from_utf8_lossy(&out.stderr);
    let id = err
        .split_whitespace()
        .find(|w| w.starts_with("key_"))
        .unwrap_or_else(|| panic!("no key id in {err}"))
        .to_string();
    (id, secret)
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (panics with the body text if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request.
pub async fn send(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Result<Reply, String> {
    let mut req = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    let resp = client().request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// GET `url`.
pub async fn get(url: &str) -> Result<Reply, String> {
    send("GET", url, &[], Vec::new()).await
}

/// Unix seconds now, on the wall clock the server under test also reads.
pub fn now() -> i64 {
    cardgate::clock::Clock::system().now()
}

/// POSTs `body` to the webhook signed with `secrets` at `now()`.
pub async fn post_signed(server: &Server, body: &[u8], secrets: &[&str]) -> Reply {
    let header = cardgate::stripe::sign_header(secrets, now(), body);
    post_with_signature(server, body, Some(header)).await
}

/// POSTs `body` to the webhook with a given `Stripe-Signature` (or none).
pub async fn post_with_signature(server: &Server, body: &[u8], signature: Option<String>) -> Reply {
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let Some(s) = signature {
        headers.push(("stripe-signature", s));
    }
    send(
        "POST",
        &server.url("/webhooks/stripe"),
        &headers,
        body.to_vec(),
    )
    .await
    .unwrap()
}

/// Path of a fixture event.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/events")
        .join(name)
}

/// A fixture event as JSON.
pub fn fixture(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture_path(name)).unwrap()).unwrap()
}

/// The reference authorization request: active card, 42.50 USD, software store.
pub fn request() -> serde_json::Value {
    fixture("issuing_authorization.request.json")
}

/// Sets the value at a `/`-separated path (JSON pointer without the leading slash).
pub fn set(v: &mut serde_json::Value, path: &str, value: serde_json::Value) {
    let ptr = format!("/{path}");
    *v.pointer_mut(&ptr)
        .unwrap_or_else(|| panic!("no {path} in event")) = value;
}

/// Value of metric line `name{labels}` in a /metrics text, 0 when absent.
/// The sum over every labelled series of `name` (`name{…} value` lines): with
/// every series registered at zero on start, "nothing counted" is a sum of 0.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    let prefix = format!("{name}{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

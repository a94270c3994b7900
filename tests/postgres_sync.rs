//! Issue 14: replicas on one PostgreSQL database agree. Two or three real
//! `cardgate serve` processes share a throwaway database
//! (`CARDGATE_DATABASE_URL`; each keeps its own data dir and rules file): a rule
//! set published through one is live on the others within 2 s and survives a
//! restart of all of them; a rules file changed and signalled on one replica is
//! published with the file as actor; a key revoked, an override set or an
//! allowance granted through one is in force on the others; a one-time
//! allowance passes exactly one of 20 retries spread over three replicas.
//!
//! Skipped without PostgreSQL unless `CARDGATE_REQUIRE_POSTGRES=1`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cardgate::approvals::{Actor, Role};
use cardgate::store::postgres::open_approvals_tool;
use common::{Reply, Server, base_config, postgres, send};
use serde_json::{Value, json};

/// The propagation bound the issue sets.
const WITHIN: Duration = Duration::from_secs(2);

const SET: &str =
    "[[rule]]\nname = \"no-kp\"\nwhen = 'merchant.country == \"KP\"'\naction = \"decline\"\n";

fn version(src: &str) -> String {
    cardgate::rules::content_version(src.as_bytes())
}

/// An admin key created straight in the database (as `keys create` will).
async fn admin_key(url: &str) -> String {
    let tool = open_approvals_tool(url, cardgate::approvals::ApprovalsConfig::default())
        .await
        .unwrap();
    tool.create_key(&Actor::cli(), Role::Admin, Some("admin"))
        .await
        .unwrap()
        .1
}

fn start(dir: tempfile::TempDir, url: &str, config: &str) -> Server {
    Server::start_in(dir, config, &[("CARDGATE_DATABASE_URL", url)])
}

/// `n` ready replicas, each in its own directory, and each one's rules file.
async fn replicas(url: &str, n: usize, config: &str) -> (Vec<Server>, Vec<std::path::PathBuf>) {
    let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
    let files = dirs.iter().map(|d| d.path().join("rules.toml")).collect();
    let servers: Vec<Server> = dirs.into_iter().map(|d| start(d, url, config)).collect();
    for s in &servers {
        s.ready().await;
    }
    (servers, files)
}

async fn call(server: &Server, key: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
    let mut headers = vec![("authorization", format!("Bearer {key}"))];
    let bytes = match body {
        Some(b) => {
            headers.push(("content-type", "application/json".into()));
            serde_json::to_vec(&b).unwrap()
        }
        None => Vec::new(),
    };
    send(method, &server.url(path), &headers, bytes)
        .await
        .unwrap()
}

async fn ok(server: &Server, key: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let r = call(server, key, method, path, body).await;
    assert_eq!(
        r.status,
        200,
        "{method} {path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

async fn publish(server: &Server, key: &str, src: &str) {
    let r = send(
        "POST",
        &server.url("/v1/rulesets"),
        &[("authorization", format!("Bearer {key}"))],
        src.as_bytes().to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

static EVENTS: AtomicUsize = AtomicUsize::new(0);

/// The reference request (42.50 USD at the reference merchant) as a fresh
/// authorization, with `amount`.
fn request(amount: i64) -> Vec<u8> {
    let n = EVENTS.fetch_add(1, Ordering::Relaxed);
    let mut e = common::request();
    common::set(&mut e, "id", json!(format!("evt_sync_{n}")));
    common::set(&mut e, "data/object/id", json!(format!("iauth_sync_{n}")));
    common::set(&mut e, "data/object/pending_request/amount", json!(amount));
    serde_json::to_vec(&e).unwrap()
}

/// A decision for a fresh 42.50 USD authorization.
async fn decide(server: &Server, amount: i64) -> Value {
    let r = common::post_signed(server, &request(amount), &[common::SECRET]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

/// Polls `probe` until it holds, failing after `within` (measured from `since`).
async fn within<F, Fut>(since: Instant, within: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if probe().await {
            return;
        }
        assert!(
            since.elapsed() < within,
            "{what}: not within {within:?} (waited {:?})",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ruleset_of(server: &Server) -> String {
    decide(server, 500).await["metadata"]["ruleset"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_rule_set_published_on_one_replica_is_live_on_all_within_2s_and_survives_restarting_all()
{
    let Some((_pg, url)) = postgres::database() else {
        return;
    };
    let admin = admin_key(&url).await;
    let config = base_config();
    let (servers, files) = replicas(&url, 3, &config).await;
    let empty = common::empty_ruleset();
    for s in &servers {
        assert_eq!(ruleset_of(s).await, empty);
    }

    let published = Instant::now();
    publish(&servers[0], &admin, SET).await;
    let v = version(SET);
    for s in &servers[1..] {
        within(
            published,
            WITHIN,
            "published set live on a replica",
            || async { ruleset_of(s).await == v },
        )
        .await;
        eprintln!(
            "published set live on a replica after {:?}",
            published.elapsed()
        );
        let current = ok(s, &admin, "GET", "/v1/rulesets/current", None).await;
        assert_eq!(current["version"], v.as_str());
    }
    // Each replica's rules file mirrors what is live.
    for f in &files {
        within(published, Duration::from_secs(5), "mirrored", || async {
            std::fs::read_to_string(f).unwrap() == SET
        })
        .await;
    }

    // Restart every replica; one comes back with a stale rules file, which must
    // not win over the published set (the file only seeds an empty database).
    let mut dirs: Vec<tempfile::TempDir> = servers.into_iter().map(Server::stop).collect();
    let stale = &files[1];
    std::fs::write(stale, "").unwrap();
    let servers: Vec<Server> = dirs.drain(..).map(|d| start(d, &url, &config)).collect();
    for s in &servers {
        s.ready().await;
        assert_eq!(ruleset_of(s).await, v, "the published set stays live");
    }
    assert_eq!(std::fs::read_to_string(stale).unwrap(), SET, "re-mirrored");
}

#[tokio::test]
async fn sighup_on_one_replica_publishes_its_file_to_all_with_the_file_as_actor() {
    let Some((_pg, url)) = postgres::database() else {
        return;
    };
    let admin = admin_key(&url).await;
    let (servers, files) = replicas(&url, 2, &base_config()).await;
    let (a, b) = (&servers[0], &servers[1]);
    let file = &files[1];
    std::fs::write(file, SET).unwrap();
    let sent = Instant::now();
    b.signal("HUP");
    let v = version(SET);
    within(
        sent,
        WITHIN,
        "the signalled file live on the other replica",
        || async { ruleset_of(a).await == v },
    )
    .await;
    let h = ok(
        a,
        &admin,
        "GET",
        "/v1/security_history?type=ruleset.published&limit=10",
        None,
    )
    .await;
    let row = h["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["object_id"] == v.as_str())
        .unwrap_or_else(|| panic!("no publish of {v} in {h}"))
        .clone();
    assert_eq!(
        row["actor"],
        format!("file:{}", file.display()).as_str(),
        "{row}"
    );
    // The other replica's file now mirrors the set; a SIGHUP there publishes nothing.
    let before = h["data"].as_array().unwrap().len();
    within(
        sent,
        Duration::from_secs(5),
        "mirrored on the other replica",
        || async { std::fs::read_to_string(&files[0]).unwrap() == SET },
    )
    .await;
    a.signal("HUP");
    // A publish of something else afterwards is the barrier: had the SIGHUP
    // published, its row would sit between the two.
    let next = "[[rule]]\nname = \"x\"\nwhen = 'amount > 1'\naction = \"decline\"\n";
    publish(b, &admin, next).await;
    let h = ok(
        a,
        &admin,
        "GET",
        "/v1/security_history?type=ruleset.published&limit=10",
        None,
    )
    .await;
    assert_eq!(h["data"].as_array().unwrap().len(), before + 1, "{h}");
}

#[tokio::test]
async fn a_key_revoked_on_one_replica_is_refused_by_the_other() {
    let Some((_pg, url)) = postgres::database() else {
        return;
    };
    let admin = admin_key(&url).await;
    let (servers, _) = replicas(&url, 2, &base_config()).await;
    let (a, b) = (&servers[0], &servers[1]);
    let made = ok(
        a,
        &admin,
        "POST",
        "/v1/api_keys",
        Some(json!({"role": "analyst", "name": "temp"})),
    )
    .await;
    let (id, secret) = (
        made["id"].as_str().unwrap().to_string(),
        made["secret"].as_str().unwrap().to_string(),
    );
    assert_eq!(
        call(b, &secret, "GET", "/v1/events", None).await.status,
        200
    );
    let revoked = Instant::now();
    ok(
        a,
        &admin,
        "POST",
        &format!("/v1/api_keys/{id}/revoke"),
        Some(json!({})),
    )
    .await;
    within(revoked, WITHIN, "revoked key refused", || async {
        call(b, &secret, "GET", "/v1/events", None).await.status == 401
    })
    .await;
}

#[tokio::test]
async fn an_override_set_on_one_replica_applies_on_the_other_within_2s() {
    let Some((_pg, url)) = postgres::database() else {
        return;
    };
    let admin = admin_key(&url).await;
    let (servers, _) = replicas(&url, 2, &base_config()).await;
    let (a, b) = (&servers[0], &servers[1]);
    assert_eq!(decide(b, 4250).await["approved"], true);
    let card = common::request()["data"]["object"]["card"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let set = Instant::now();
    ok(
        a,
        &admin,
        "POST",
        "/v1/control_overrides",
        Some(json!({"scope": "card", "id": card,
                    "spending_limits": [{"amount": 1000, "interval": "per_authorization"}]})),
    )
    .await;
    within(
        set,
        WITHIN,
        "override applied on the other replica",
        || async {
            let d = decide(b, 4250).await;
            d["approved"] == false && d["metadata"]["reason"] == "spending_limit"
        },
    )
    .await;
}

#[tokio::test]
async fn a_one_time_allowance_passes_exactly_one_of_20_retries_spread_over_three_replicas() {
    let Some((_pg, url)) = postgres::database() else {
        return;
    };
    let admin = admin_key(&url).await;
    // Each decision waits 300 ms: every retry is past its look-up before the
    // first is answered, the window in which each replica's own map would pass one.
    let config = format!(
        "{}[fault_injection]\ndecision_delay_ms = 300\n",
        base_config()
    );
    let servers = Arc::new(replicas(&url, 3, &config).await.0);
    let e = common::request();
    let o = &e["data"]["object"];
    ok(
        &servers[0],
        &admin,
        "POST",
        "/v1/authorization_allowances",
        Some(
            json!({"card": o["card"]["id"], "merchant": o["merchant_data"]["network_id"],
                    "amount": 4250, "currency": "usd"}),
        ),
    )
    .await;
    // Published after the grant: a replica's listener refreshes allowances
    // before rule sets, so a replica deciding with this set holds the allowance.
    let review = "[[rule]]\nname = \"big\"\nwhen = 'amount > 1000'\naction = \"review\"\n";
    let published = Instant::now();
    publish(&servers[0], &admin, review).await;
    for s in servers.iter() {
        within(published, WITHIN, "review set live", || async {
            ruleset_of(s).await == version(review)
        })
        .await;
    }

    let start = Arc::new(tokio::sync::Barrier::new(20));
    let mut retries = tokio::task::JoinSet::new();
    for n in 0..20 {
        let (servers, start) = (servers.clone(), start.clone());
        retries.spawn(async move {
            let body = request(4250);
            start.wait().await;
            let r = common::post_signed(&servers[n % 3], &body, &[common::SECRET]).await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            r.json()
        });
    }
    let mut approved = 0;
    while let Some(answer) = retries.join_next().await {
        let answer = answer.unwrap();
        if answer["approved"] == true {
            approved += 1;
        } else {
            assert_eq!(answer["metadata"]["reason"], "review", "{answer}");
        }
    }
    assert_eq!(approved, 1, "one allowance, one approval");
    let deadline = Instant::now();
    within(
        deadline,
        Duration::from_secs(10),
        "use recorded",
        || async {
            let a = ok(
                &servers[1],
                &admin,
                "GET",
                "/v1/authorization_allowances",
                None,
            )
            .await;
            !a["data"][0]["used_by"].is_null()
        },
    )
    .await;
}

/// `cardgate store copy --from DIR --to URL`: its exit status and stdout.
fn store_copy(from: &std::path::Path, url: &str) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cardgate"))
        .args(["store", "copy", "--from"])
        .arg(from)
        .args(["--to", url])
        .env("CARDGATE_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn store_copy_moves_a_sqlite_installation_to_postgres_verified_and_refuses_a_second_copy() {
    let Some((_pg, url)) = postgres::database() else {
        return;
    };
    // A single-machine installation: a key, a published set, an override.
    let dir = tempfile::tempdir().unwrap();
    let (_, admin) = common::create_key(dir.path(), "admin");
    let sqlite = Server::start_in(dir, &base_config(), &[]);
    sqlite.ready().await;
    publish(&sqlite, &admin, SET).await;
    let card = common::request()["data"]["object"]["card"]["id"].clone();
    ok(
        &sqlite,
        &admin,
        "POST",
        "/v1/control_overrides",
        Some(json!({"scope": "card", "id": card,
                    "spending_limits": [{"amount": 1000, "interval": "per_authorization"}]})),
    )
    .await;
    let dir = sqlite.stop();

    let (copied, stdout, stderr) = store_copy(&common::data_dir(dir.path()), &url);
    assert!(copied, "{stdout}{stderr}");
    assert!(stdout.contains("verified"), "{stdout}");
    let rulesets = stdout
        .lines()
        .find(|l| l.starts_with("rulesets"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert_eq!(
        rulesets.split_whitespace().collect::<Vec<_>>(),
        ["rulesets", "2", "2"],
        "the seed and the publish"
    );

    // A replica on the database runs what the installation ran.
    let (servers, _) = replicas(&url, 1, &base_config()).await;
    let pg = &servers[0];
    assert_eq!(ruleset_of(pg).await, version(SET));
    let d = decide(pg, 4250).await;
    assert_eq!(d["metadata"]["reason"], "spending_limit", "{d}");
    let h = ok(
        pg,
        &admin,
        "GET",
        "/v1/security_history?type=ruleset.published",
        None,
    )
    .await;
    assert!(!h["data"].as_array().unwrap().is_empty(), "{h}");
    drop(servers);

    // A second copy would merge: refused, nothing written.
    let (copied, stdout, stderr) = store_copy(&common::data_dir(dir.path()), &url);
    assert!(!copied, "{stdout}");
    assert!(stderr.contains("already holds"), "{stderr}");
}

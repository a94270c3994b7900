//! Issue 18 #5: what an analyst and a reviewer read over the admin API. The
//! decisions explorer (`GET /v1/decisions`, `GET /v1/decisions/{id}`) searches the
//! real decision log by authorization, card, reason and rule (shadow matches
//! included) for `analyst` keys and up, and refuses the automation and checkout
//! keys; `GET /v1/approval_requests/{id}/review` shows an authorization allowance
//! with the declined decision it changes and a control override with the recent
//! decisions it would decline.
//!
//! Each test body runs on both backends: the SQLite data dir, and PostgreSQL
//! (`CARDGATE_DATABASE_URL`, issue 14), where the log is the shared `decisions`
//! table.
#![allow(
    clippy::unwrap_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

mod common;

use std::time::{Duration, Instant};

use common::{SECRET, Server, base_config, create_key, post_signed, request, send, set};
use serde_json::{Value, json};

struct Keys {
    admin: String,
    agent: String,
    analyst: String,
    payments: String,
}

async fn get(server: &Server, key: &str, path: &str) -> (u16, Value) {
    let r = send(
        "GET",
        &server.url(path),
        &[("authorization", format!("Bearer {key}"))],
        vec![],
    )
    .await
    .unwrap();
    (r.status, r.json())
}

/// Polls `path` until `done` holds: decision-log rows and review requests are
/// written in the background after the webhook answers.
async fn until(server: &Server, key: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(server, key, path).await;
        if status == 200 && done(&body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{path}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn authorize(server: &Server, n: u32, amount: i64, card: &str) -> Value {
    let mut e = request();
    set(&mut e, "id", json!(format!("evt_explore_{n}")));
    set(
        &mut e,
        "data/object/id",
        json!(format!("iauth_explore_{n}")),
    );
    set(&mut e, "data/object/card/id", json!(card));
    set(&mut e, "data/object/pending_request/amount", json!(amount));
    set(
        &mut e,
        "data/object/pending_request/merchant_amount",
        json!(amount),
    );
    post_signed(server, &serde_json::to_vec(&e).unwrap(), &[SECRET])
        .await
        .json()
}

/// Where a test's server keeps its state.
enum Backend {
    Sqlite,
    /// A fresh database's URL; `_server` keeps the test server up while held.
    Postgres {
        _server: std::sync::Arc<cardgate::store::postgres::testing::TestServer>,
        url: String,
    },
}

impl Backend {
    /// PostgreSQL, or `None` when the test is skipped (no server installed and
    /// `CARDGATE_REQUIRE_POSTGRES` unset).
    fn postgres() -> Option<Backend> {
        let (server, url) = common::postgres::database()?;
        Some(Backend::Postgres {
            _server: server,
            url,
        })
    }

    async fn key(&self, dir: &std::path::Path, role: &str) -> String {
        use cardgate::approvals::{Actor, ApprovalsConfig, Role};
        match self {
            Backend::Sqlite => create_key(dir, role).1,
            Backend::Postgres { url, .. } => {
                let tool =
                    cardgate::store::open_shared_approvals_tool(url, ApprovalsConfig::default())
                        .await
                        .unwrap();
                tool.create_key(&Actor::cli(), Role::parse(role).unwrap(), Some(role))
                    .await
                    .unwrap()
                    .1
            }
        }
    }
}

async fn start(backend: &Backend) -> (Server, Keys) {
    let dir = tempfile::tempdir().unwrap();
    let keys = Keys {
        admin: backend.key(dir.path(), "admin").await,
        agent: backend.key(dir.path(), "agent").await,
        analyst: backend.key(dir.path(), "analyst").await,
        payments: backend.key(dir.path(), "payments").await,
    };
    // Over 100.00 goes to review; over 50.00 is also noted by a shadow rule.
    let rules = dir.path().join("explore-rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"big\"\nwhen = 'amount > 10000'\naction = \"review\"\n\n\
         [[rule]]\nname = \"watch\"\nwhen = 'amount > 5000'\naction = \"decline\"\nmode = \"shadow\"\n",
    )
    .unwrap();
    let rules = rules.to_str().unwrap().to_string();
    let mut env = vec![("CARDGATE_RULES", rules.as_str())];
    if let Backend::Postgres { url, .. } = backend {
        env.push(("CARDGATE_DATABASE_URL", url));
    }
    let server = Server::start_in(dir, &base_config(), &env);
    server.ready().await;
    (server, keys)
}

#[tokio::test]
async fn analysts_search_and_explain_decisions_and_automation_keys_cannot() {
    explore(&Backend::Sqlite).await;
}

#[tokio::test]
async fn analysts_search_and_explain_decisions_on_postgres() {
    if let Some(backend) = Backend::postgres() {
        explore(&backend).await;
    }
}

async fn explore(backend: &Backend) {
    let (server, k) = start(backend).await;
    assert_eq!(authorize(&server, 1, 4250, "ic_a").await["approved"], true);
    assert_eq!(authorize(&server, 2, 8000, "ic_a").await["approved"], true);
    let declined = authorize(&server, 3, 20000, "ic_b").await;
    assert_eq!(declined["metadata"]["reason"], "review");

    let all = until(&server, &k.analyst, "/v1/decisions", |b| {
        b["data"].as_array().is_some_and(|d| d.len() == 3)
    })
    .await;
    let auths: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["authorization"].as_str().unwrap())
        .collect();
    assert_eq!(
        auths,
        ["iauth_explore_3", "iauth_explore_2", "iauth_explore_1"]
    );

    let by = |q: &str| {
        let path = format!("/v1/decisions?{q}");
        let server = &server;
        let key = k.analyst.clone();
        async move {
            let (status, body) = get(server, &key, &path).await;
            assert_eq!(status, 200, "{path}: {body}");
            body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["authorization"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        by("card=ic_a").await,
        ["iauth_explore_2", "iauth_explore_1"]
    );
    assert_eq!(
        by("rule=watch").await,
        ["iauth_explore_3", "iauth_explore_2"]
    );
    assert_eq!(by("rule=big").await, ["iauth_explore_3"]);
    assert_eq!(by("reason=review").await, ["iauth_explore_3"]);
    assert_eq!(
        by("authorization=iauth_explore_1").await,
        ["iauth_explore_1"]
    );
    let (_, page) = get(&server, &k.analyst, "/v1/decisions?limit=2").await;
    assert_eq!(page["has_more"], true);
    let last = page["data"][1]["id"].as_str().unwrap();
    assert_eq!(
        by(&format!("limit=2&starting_after={last}")).await,
        ["iauth_explore_1"]
    );

    let id = all["data"][0]["id"].as_str().unwrap();
    let (status, d) = get(&server, &k.analyst, &format!("/v1/decisions/{id}")).await;
    assert_eq!(status, 200, "{d}");
    let x = &d["explanation"];
    assert_eq!(x["rules"]["decisive"], "big");
    assert_eq!(x["rules"]["shadow"], json!(["watch"]));
    assert_eq!(x["rules"]["ruleset_is_live"], true);
    assert_eq!(x["status"]["card"], "active");
    assert_eq!(x["controls"][0]["level"], "card");
    assert!(x["spend"]["card"].is_object(), "{d}");
    assert!(x["latency_us"].as_i64().unwrap() >= 0);
    assert_eq!(d["amount"], 20000);

    let (status, _) = get(&server, &k.analyst, "/v1/decisions/dec_999999").await;
    assert_eq!(status, 404);
    let (status, _) = get(&server, &k.analyst, "/v1/decisions?limit=0").await;
    assert_eq!(status, 400);
    for key in [&k.agent, &k.payments] {
        let (status, body) = get(&server, key, "/v1/decisions").await;
        assert_eq!(status, 403, "{body}");
    }
    let (status, _) = get(&server, &k.admin, "/v1/decisions").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn review_shows_the_decision_an_allowance_or_an_override_changes() {
    review_subjects(&Backend::Sqlite).await;
}

#[tokio::test]
async fn review_shows_the_decision_an_allowance_or_an_override_changes_on_postgres() {
    if let Some(backend) = Backend::postgres() {
        review_subjects(&backend).await;
    }
}

async fn review_subjects(backend: &Backend) {
    let (server, k) = start(backend).await;
    authorize(&server, 1, 8000, "ic_a").await;
    authorize(&server, 2, 3000, "ic_a").await;
    authorize(&server, 3, 20000, "ic_a").await;
    let list = until(
        &server,
        &k.analyst,
        "/v1/approval_requests?action=authorization_allowance",
        |b| b["data"].as_array().is_some_and(|d| !d.is_empty()),
    )
    .await;
    let id = list["data"][0]["id"].as_str().unwrap();
    let path = format!("/v1/approval_requests/{id}/review");
    let review = until(&server, &k.analyst, &path, |b| {
        !b["allowance"]["declined_decision"].is_null()
    })
    .await;
    let a = &review["allowance"];
    assert_eq!(a["card"], "ic_a");
    assert_eq!(a["amount"], 20000);
    assert_eq!(a["rule"], "big");
    assert_eq!(a["declined_decision"]["authorization"], "iauth_explore_3");
    assert_eq!(a["declined_decision"]["reason"], "review");

    // Overrides need approval; the review shows what the override would decline.
    let rule =
        json!({"action": "set_control_override", "control": "require_approval", "active": true});
    let r = send(
        "POST",
        &server.url("/v1/approval_rules"),
        &[("authorization", format!("Bearer {}", k.admin))],
        serde_json::to_vec(&rule).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let spec = json!({"scope": "card", "id": "ic_a",
        "spending_limits": [{"amount": 5000, "interval": "per_authorization"}]});
    let r = send(
        "POST",
        &server.url("/v1/control_overrides"),
        &[("authorization", format!("Bearer {}", k.agent))],
        serde_json::to_vec(&spec).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403);
    let id = r.json()["error"]["approval_request"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, review) = get(
        &server,
        &k.analyst,
        &format!("/v1/approval_requests/{id}/review"),
    )
    .await;
    assert_eq!(status, 200, "{review}");
    let o = &review["override"];
    assert_eq!(o["id"], "ic_a");
    assert!(o["current"].is_null());
    let would: Vec<(i64, Value)> = o["recent_decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["amount"].as_i64().unwrap(), d["would_decline"].clone()))
        .collect();
    // Newest first: the declined 200.00 stays declined (not a change), 30.00 fits,
    // the approved 80.00 would now decline.
    assert_eq!(
        would,
        [
            (20000, Value::Null),
            (3000, Value::Null),
            (8000, json!("spending_limits"))
        ]
    );
    let (status, _) = get(
        &server,
        &k.agent,
        &format!("/v1/approval_requests/{id}/review"),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn review_backtests_a_proposed_rule_set_on_the_logged_decisions() {
    backtest_review(&Backend::Sqlite).await;
}

#[tokio::test]
async fn review_backtests_a_proposed_rule_set_on_postgres() {
    if let Some(backend) = Backend::postgres() {
        backtest_review(&backend).await;
    }
}

/// A publish held for approval: its review replays the logged decisions through
/// the proposed set (the log read through `DecisionLog::recent` and `blobs`).
async fn backtest_review(backend: &Backend) {
    let (server, k) = start(backend).await;
    assert_eq!(authorize(&server, 1, 4250, "ic_a").await["approved"], true);
    assert_eq!(authorize(&server, 2, 8000, "ic_a").await["approved"], true);
    assert_eq!(
        authorize(&server, 3, 20000, "ic_b").await["approved"],
        false
    );
    until(&server, &k.analyst, "/v1/decisions", |b| {
        b["data"].as_array().is_some_and(|d| d.len() == 3)
    })
    .await;
    let rule = json!({"action": "publish_ruleset", "control": "require_approval", "active": true});
    let r = send(
        "POST",
        &server.url("/v1/approval_rules"),
        &[("authorization", format!("Bearer {}", k.admin))],
        serde_json::to_vec(&rule).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Declines anything over 60.00: the approved 80.00 would now be declined.
    let proposed = "[[rule]]\nname = \"tight\"\nwhen = 'amount > 6000'\naction = \"decline\"\n";
    let r = send(
        "POST",
        &server.url("/v1/rulesets"),
        &[("authorization", format!("Bearer {}", k.admin))],
        proposed.as_bytes().to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["error"]["approval_request"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, review) = get(
        &server,
        &k.analyst,
        &format!("/v1/approval_requests/{id}/review"),
    )
    .await;
    assert_eq!(status, 200, "{review}");
    let report = &review["ruleset"]["backtest"]["report"];
    assert_eq!(report["replayed"], 3, "{review}");
    assert_eq!(report["changed"]["approve_to_decline"], 1, "{review}");
    assert_eq!(report["changed"]["decline_to_approve"], 0, "{review}");
    let flipped: Vec<&Value> = report["examples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["before"]["approved"] == true && e["after"]["approved"] == false)
        .collect();
    assert_eq!(flipped.len(), 1, "{review}");
    assert_eq!(flipped[0]["authorization"], "iauth_explore_2");
    assert_eq!(flipped[0]["after"]["rule"], "tight");
}

//! Two-party approvals over real HTTP against the real binary (issue 6): the
//! whole lifecycle, every forbidden transition, bad input, concurrent approvals,
//! expiry on the injectable clock, a restart in the middle, signed event delivery
//! with retries, control overrides, and authorization reviews with allowances.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]
#![allow(
    clippy::too_many_lines,
    reason = "a scenario test is one story against one running server; split, its steps lose their order"
)]

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Reply, Server, base_config, create_key, send};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

const EVENTS_SECRET: &str = "whsec_cardgate_events_test";

struct Api<'a> {
    server: &'a Server,
}

impl Api<'_> {
    async fn call(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> Reply {
        let mut headers = vec![("authorization", format!("Bearer {key}"))];
        let bytes = match body {
            Some(b) => {
                headers.push(("content-type", "application/json".into()));
                serde_json::to_vec(&b).unwrap()
            }
            None => Vec::new(),
        };
        send(method, &self.server.url(path), &headers, bytes)
            .await
            .unwrap()
    }
    async fn get(&self, key: &str, path: &str) -> Value {
        let r = self.call(key, "GET", path, None).await;
        assert_eq!(
            r.status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        r.json()
    }
    async fn post(&self, key: &str, path: &str, body: Value) -> Reply {
        self.call(key, "POST", path, Some(body)).await
    }
    async fn publish(&self, key: &str, src: &str) -> Reply {
        send(
            "POST",
            &self.server.url("/v1/rulesets"),
            &[("authorization", format!("Bearer {key}"))],
            src.as_bytes().to_vec(),
        )
        .await
        .unwrap()
    }
    async fn version(&self, key: &str) -> String {
        self.get(key, "/v1/rulesets/current").await["version"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

struct Keys {
    admin: String,
    admin_id: String,
    agent: String,
    agent_id: String,
    reviewer: String,
    reviewer2: String,
    analyst: String,
}

fn keys(dir: &std::path::Path) -> Keys {
    let (admin_id, admin) = create_key(dir, "admin");
    let (agent_id, agent) = create_key(dir, "agent");
    let (_, reviewer) = create_key(dir, "reviewer");
    let (_, reviewer2) = create_key(dir, "reviewer");
    let (_, analyst) = create_key(dir, "analyst");
    Keys {
        admin,
        admin_id,
        agent,
        agent_id,
        reviewer,
        reviewer2,
        analyst,
    }
}

const SET: &str = "[lists]\nrisky = [\"KP\"]\n\n[[rule]]\nname = \"risky\"\nwhen = 'merchant.country in lists.risky'\naction = \"decline\"\n";

async fn gate(api: &Api<'_>, k: &Keys, action: &str, control: &str) -> String {
    let r = api
        .post(
            &k.admin,
            "/v1/approval_rules",
            json!({"action": action, "control": control, "name": format!("gate {action}"),
                   "reviewers": {"roles": ["reviewer"]}, "active": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["id"].as_str().unwrap().to_string()
}

fn apreq(r: &Reply) -> String {
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    let e = &r.json()["error"];
    assert_eq!(e["code"], "approval_required");
    assert_eq!(e["type"], "invalid_request_error");
    let req = &e["approval_request"];
    assert_eq!(req["object"], "approval_request");
    assert_eq!(req["status"], "pending");
    assert!(req["expires_at"].as_i64().is_some());
    let id = req["id"].as_str().unwrap();
    assert!(id.starts_with("apreq_"), "{id}");
    id.to_string()
}

fn code(r: &Reply) -> String {
    r.json()["error"]["code"].as_str().unwrap_or("").to_string()
}

async fn history_types(api: &Api<'_>, key: &str, object: &str) -> Vec<String> {
    let h = api
        .get(
            key,
            &format!("/v1/security_history?object={object}&limit=100"),
        )
        .await;
    h["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn gated_publish_is_approved_by_another_key_and_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let server = Server::start_in(dir, &base_config(), &[]);
    server.ready().await;
    let api = Api { server: &server };
    let before = api.version(&k.analyst).await;

    // Ungated, the admin publishes directly.
    let r = api.publish(&k.agent, SET).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v1 = api.version(&k.analyst).await;
    assert_ne!(v1, before);

    gate(&api, &k, "publish_ruleset", "require_approval").await;
    let next = SET.replace("KP", "IR");
    let id = apreq(&api.publish(&k.agent, &next).await);
    assert_eq!(
        api.version(&k.analyst).await,
        v1,
        "a gated call changes nothing"
    );

    // Not yet submitted: reviewers cannot act.
    let r = api
        .post(
            &k.reviewer,
            &format!("/v1/approval_requests/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (409, "request_not_submitted")
    );
    // Only the requester submits.
    let r = api
        .post(
            &k.reviewer,
            &format!("/v1/approval_requests/{id}/submit"),
            json!({"reason": "x"}),
        )
        .await;
    assert_eq!((r.status, code(&r).as_str()), (403, "not_requester"));
    let r = api
        .post(
            &k.agent,
            &format!("/v1/approval_requests/{id}/submit"),
            json!({"reason": "block Iran too"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "requires_review");
    assert_eq!(r.json()["reason"], "block Iran too");
    // Self-approval, wrong role, not a listed reviewer.
    let r = api
        .post(
            &k.agent,
            &format!("/v1/approval_requests/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = api
        .post(
            &k.analyst,
            &format!("/v1/approval_requests/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!((r.status, code(&r).as_str()), (403, "permission_denied"));
    let r = api
        .post(
            &k.admin,
            &format!("/v1/approval_requests/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(
        (r.status, code(&r).as_str()),
        (403, "not_a_reviewer"),
        "the rule names only reviewers"
    );

    let r = api
        .post(
            &k.reviewer,
            &format!("/v1/approval_requests/{id}/approve"),
            json!({"reason": "fine"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let done = r.json();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["review"]["result"], "approved");
    let v2 = api.version(&k.analyst).await;
    assert_eq!(
        done["status_details"]["succeeded"]["result"]["version"],
        v2.as_str()
    );
    assert_ne!(v2, v1);

    // Done is done: no second approval, denial or cancel.
    for (key, verb) in [
        (&k.reviewer2, "approve"),
        (&k.reviewer2, "deny"),
        (&k.agent, "cancel"),
        (&k.agent, "submit"),
    ] {
        let r = api
            .post(
                key,
                &format!("/v1/approval_requests/{id}/{verb}"),
                json!({}),
            )
            .await;
        assert_eq!(
            (r.status, code(&r).as_str()),
            (409, "invalid_transition"),
            "{verb}"
        );
    }
    let types = history_types(&api, &k.analyst, &id).await;
    for t in [
        "approval_request.created",
        "approval_request.submitted",
        "approval_request.approved",
        "approval_request.executed",
    ] {
        assert_eq!(
            types.iter().filter(|x| *x == t).count(),
            1,
            "{t} in {types:?}"
        );
    }
    let list = api
        .get(&k.analyst, "/v1/approval_requests?status=succeeded")
        .await;
    assert_eq!(list["data"][0]["id"], id.as_str());
    // A denied request changes nothing.
    let id2 = apreq(&api.publish(&k.agent, SET).await);
    api.post(
        &k.agent,
        &format!("/v1/approval_requests/{id2}/submit"),
        json!({}),
    )
    .await;
    let r = api
        .post(
            &k.reviewer2,
            &format!("/v1/approval_requests/{id2}/deny"),
            json!({"reason": "no"}),
        )
        .await;
    assert_eq!(r.json()["status"], "rejected");
    assert_eq!(api.version(&k.analyst).await, v2);
    let r = api
        .post(
            &k.reviewer,
            &format!("/v1/approval_requests/{id2}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 409);
}

#[tokio::test]
async fn keys_roles_and_bad_input_are_refused_with_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let server = Server::start_in(dir, &base_config(), &[]);
    server.ready().await;
    let api = Api { server: &server };

    let r = send("GET", &server.url("/v1/approval_requests"), &[], vec![])
        .await
        .unwrap();
    assert_eq!((r.status, code(&r).as_str()), (401, "missing_api_key"));
    let fake = format!("cgk_{}", "0".repeat(64));
    let r = api.call(&fake, "GET", "/v1/approval_requests", None).await;
    assert_eq!((r.status, code(&r).as_str()), (401, "invalid_api_key"));
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = api
        .call("' OR 1=1 --", "GET", "/v1/approval_requests", None)
        .await;
    assert_eq!(r.status, 401);

    // Wrong roles.
    let r = api
        .post(
            &k.agent,
            "/v1/approval_rules",
            json!({"action": "update_list", "control": "block"}),
        )
        .await;
    assert_eq!((r.status, code(&r).as_str()), (403, "permission_denied"));
    let r = api.call(&k.reviewer, "GET", "/v1/api_keys", None).await;
    assert_eq!(r.status, 403);
    let r = api.publish(&k.analyst, SET).await;
    assert_eq!(r.status, 403);

    // Keys created through the API, revoked through the API.
    let r = api
        .post(
            &k.admin,
            "/v1/api_keys",
            json!({"role": "agent", "name": "bot"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let (bot_id, bot) = (
        r.json()["id"].as_str().unwrap().to_string(),
        r.json()["secret"].as_str().unwrap().to_string(),
    );
    assert_eq!(api.call(&bot, "GET", "/v1/events", None).await.status, 200);
    let keys = api.get(&k.admin, "/v1/api_keys").await;
    assert!(!keys.to_string().contains(&bot), "secrets are never listed");
    let r = api
        .post(
            &k.admin,
            &format!("/v1/api_keys/{bot_id}/revoke"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = api.call(&bot, "GET", "/v1/events", None).await;
    assert_eq!((r.status, code(&r).as_str()), (401, "api_key_revoked"));

    // Malformed JSON, unknown fields (named), oversized bodies, bad values.
    let r = send(
        "POST",
        &server.url("/v1/control_overrides"),
        &[("authorization", format!("Bearer {}", k.admin))],
        b"{\"scope\":".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!((r.status, code(&r).as_str()), (400, "invalid_json"));
    let r = api
        .post(
            &k.admin,
            "/v1/control_overrides",
            json!({"scope": "card", "id": "ic_1", "colour": "red"}),
        )
        .await;
    assert_eq!((r.status, code(&r).as_str()), (400, "parameter_unknown"));
    assert_eq!(r.json()["error"]["param"], "colour");
    let r = api
        .post(
            &k.admin,
            "/v1/approval_rules",
            json!({"action": "fly", "control": "block"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fly")
    );
    let big = json!({"values": vec!["x".repeat(100); 1000]});
    let r = api.post(&k.admin, "/v1/lists/risky", big).await;
    assert_eq!((r.status, code(&r).as_str()), (413, "body_too_large"));
    let r = api
        .call(&k.admin, "GET", "/v1/approval_requests?colour=red", None)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "colour");
    let r = api
        .publish(
            &k.admin,
            "[[rule]]\nname = \"x\"\nwhen = 'amount >'\naction = \"decline\"\n",
        )
        .await;
    assert_eq!((r.status, code(&r).as_str()), (422, "invalid_rules"));
    let r = api
        .call(&k.admin, "GET", "/v1/approval_requests/apreq_nope", None)
        .await;
    assert_eq!((r.status, code(&r).as_str()), (404, "resource_missing"));

    // SQL-looking text is stored verbatim and harms nothing.
    let evil = "x'); DROP TABLE approval_requests; --";
    let r = api.post(&k.admin, "/v1/approval_rules",
        json!({"action": "update_list", "control": "require_approval", "name": evil, "active": true})).await;
    assert_eq!(r.status, 200);
    let r = api
        .post(&k.agent, "/v1/lists/risky", json!({"values": ["KP", evil]}))
        .await;
    let id = apreq(&r);
    let r = api
        .post(
            &k.agent,
            &format!("/v1/approval_requests/{id}/submit"),
            json!({"reason": evil}),
        )
        .await;
    assert_eq!(r.json()["reason"], evil);
    assert_eq!(r.json()["rule"]["name"], evil);
    assert_eq!(r.json()["params"]["values"][1], evil);
    let list = api.get(&k.analyst, "/v1/approval_requests").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    // One active rule per action: the 409 names the first.
    let r = api
        .post(
            &k.admin,
            "/v1/approval_rules",
            json!({"action": "update_list", "control": "block"}),
        )
        .await;
    let second = r.json()["id"].as_str().unwrap().to_string();
    let first = api
        .get(
            &k.admin,
            "/v1/approval_rules?action=update_list&active=true",
        )
        .await["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api
        .post(
            &k.admin,
            &format!("/v1/approval_rules/{second}/activate"),
            json!({}),
        )
        .await;
    assert_eq!((r.status, code(&r).as_str()), (409, "rule_already_active"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&first)
    );
    // Swap them: deactivate the first, activate the block rule.
    assert_eq!(
        api.post(
            &k.admin,
            &format!("/v1/approval_rules/{first}/deactivate"),
            json!({})
        )
        .await
        .status,
        200
    );
    assert_eq!(
        api.post(
            &k.admin,
            &format!("/v1/approval_rules/{second}/activate"),
            json!({})
        )
        .await
        .status,
        200
    );
    let r = api
        .post(&k.agent, "/v1/lists/risky", json!({"values": ["KP"]}))
        .await;
    assert_eq!((r.status, code(&r).as_str()), (403, "action_blocked"));
    let r = api
        .call(
            &k.admin,
            "DELETE",
            &format!("/v1/approval_rules/{second}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = api
        .post(&k.agent, "/v1/lists/risky", json!({"values": ["KP", "IR"]}))
        .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let src = api.get(&k.analyst, "/v1/rulesets/current").await["source"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(src.contains("IR"), "{src}");

    // The requester cancels; nobody approves a canceled request.
    let r = api
        .post(
            &k.admin,
            &format!("/v1/approval_rules/{first}/activate"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    let id = apreq(
        &api.post(&k.agent, "/v1/lists/risky", json!({"values": []}))
            .await,
    );
    api.post(
        &k.agent,
        &format!("/v1/approval_requests/{id}/submit"),
        json!({}),
    )
    .await;
    let r = api
        .post(
            &k.reviewer,
            &format!("/v1/approval_requests/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = api
        .post(
            &k.agent,
            &format!("/v1/approval_requests/{id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(r.json()["status"], "canceled");
    let r = api
        .post(
            &k.reviewer,
            &format!("/v1/approval_requests/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!((r.status, code(&r).as_str()), (409, "invalid_transition"));

    // Rule changes and key events are in the history, with their actor.
    let h = api
        .get(
            &k.analyst,
            &format!(
                "/v1/security_history?actor={}&type=approval_rule.created",
                k.admin_id
            ),
        )
        .await;
    assert_eq!(h["data"].as_array().unwrap().len(), 2);
    let h = api
        .get(&k.analyst, "/v1/security_history?type=api_key.revoked")
        .await;
    assert_eq!(h["data"][0]["object_id"], bot_id.as_str());
    let _ = k.agent_id;
}

#[tokio::test]
async fn two_reviewers_approving_at_once_run_the_action_once() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let server = Server::start_in(dir, &base_config(), &[]);
    server.ready().await;
    let api = Api { server: &server };
    gate(&api, &k, "set_control_override", "require_approval").await;
    for round in 0..5 {
        let body = json!({"scope": "card", "id": format!("ic_{round}"),
            "spending_limits": [{"amount": 1000 + round, "interval": "per_authorization"}]});
        let id = apreq(&api.post(&k.agent, "/v1/control_overrides", body).await);
        api.post(
            &k.agent,
            &format!("/v1/approval_requests/{id}/submit"),
            json!({}),
        )
        .await;
        let path = format!("/v1/approval_requests/{id}/approve");
        let (a, b) = tokio::join!(
            api.post(&k.reviewer, &path, json!({})),
            api.post(&k.reviewer2, &path, json!({}))
        );
        let mut statuses = [a.status, b.status];
        statuses.sort_unstable();
        assert_eq!(
            statuses,
            [200, 409],
            "round {round}: {:?} {:?}",
            a.json(),
            b.json()
        );
        let types = history_types(&api, &k.analyst, &id).await;
        assert_eq!(
            types
                .iter()
                .filter(|t| *t == "approval_request.approved")
                .count(),
            1
        );
        assert_eq!(
            types
                .iter()
                .filter(|t| *t == "approval_request.executed")
                .count(),
            1
        );
        let ev = api
            .get(
                &k.analyst,
                "/v1/events?type=v2.core.approval_request.succeeded&limit=100",
            )
            .await;
        let n = ev["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["related_object"]["id"] == id.as_str())
            .count();
        assert_eq!(n, 1);
    }
    let overrides = api.get(&k.analyst, "/v1/control_overrides").await;
    assert_eq!(overrides["data"].as_array().unwrap().len(), 5);
}

/// A local event receiver: records deliveries, answers 500 to the first
/// `fail_first` of them.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(String, Bytes)>>>,
    hits: Arc<AtomicUsize>,
    /// Attempts answered 500 before the receiver starts accepting.
    fail_first: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receiver(fail_first: usize) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let hits = Arc::new(AtomicUsize::new(0));
    let fail = Arc::new(AtomicUsize::new(fail_first));
    let (g, h, f) = (got.clone(), hits.clone(), fail.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (g, h, f) = (g.clone(), h.clone(), f.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (g, h, f) = (g.clone(), h.clone(), f.clone());
                        async move {
                            let sig = req
                                .headers()
                                .get("cardgate-signature")
                                .map(|v| v.to_str().unwrap_or("").to_string())
                                .unwrap_or_default();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(http_body_util::Collected::to_bytes)
                                .unwrap_or_default();
                            let n = h.fetch_add(1, Ordering::SeqCst);
                            let status = if n < f.load(Ordering::SeqCst) {
                                500
                            } else {
                                g.lock().unwrap().push((sig, body));
                                200
                            };
                            let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Receiver {
        url,
        got,
        hits,
        fail_first: fail,
        task,
    }
}

fn events_config(url: &str) -> String {
    format!(
        "{}\n[approvals]\nevent_endpoints = [\"{url}\"]\nsigning_secret = \"{EVENTS_SECRET}\"\nretry_initial_ms = 20\nretry_max_ms = 200\nmax_attempts = 100000\n",
        base_config()
    )
}

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn delivered(r: &Receiver) -> Vec<Value> {
    let secrets = cardgate::stripe::Secrets::new(&[EVENTS_SECRET]);
    r.got
        .lock()
        .unwrap()
        .iter()
        .map(|(sig, body)| {
            let v = cardgate::stripe::verify(
                Some(sig.as_bytes()),
                body.to_vec(),
                &secrets,
                common::now(),
                300,
            )
            .unwrap_or_else(|e| panic!("bad signature on delivered event: {e}"));
            serde_json::from_slice(&v.into_body()).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn events_are_signed_and_retried_after_receiver_failures() {
    let rx = receiver(3).await;
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let server = Server::start_in(dir, &events_config(&rx.url), &[]);
    server.ready().await;
    let api = Api { server: &server };
    gate(&api, &k, "authorization_allowance", "require_approval").await;
    let id = apreq(
        &api.post(
            &k.agent,
            "/v1/authorization_allowances",
            json!({"card": "ic_1", "merchant": "m1", "amount": 5000, "currency": "usd"}),
        )
        .await,
    );
    api.post(
        &k.agent,
        &format!("/v1/approval_requests/{id}/submit"),
        json!({}),
    )
    .await;
    api.post(
        &k.reviewer,
        &format!("/v1/approval_requests/{id}/approve"),
        json!({}),
    )
    .await;

    let want = [
        "v2.core.approval_rule.created",
        "v2.core.approval_request.created",
        "v2.core.approval_request.approved",
        "v2.core.approval_request.succeeded",
    ];
    wait_for("every event delivered", || {
        let types: Vec<String> = delivered(&rx)
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_string())
            .collect();
        want.iter().all(|w| types.iter().any(|t| t == w))
    })
    .await;
    assert!(
        rx.hits.load(Ordering::SeqCst) >= 3 + want.len(),
        "the first three attempts failed and were retried"
    );
    let events = delivered(&rx);
    let ok = events
        .iter()
        .find(|e| e["type"] == "v2.core.approval_request.succeeded")
        .unwrap();
    assert_eq!(ok["related_object"]["id"], id.as_str());
    assert_eq!(ok["object"], "v2.core.event");
    // A tampered body fails cardgate's own verifier.
    let (sig, body) = rx.got.lock().unwrap()[0].clone();
    let mut tampered = body.to_vec();
    tampered[0] = b' ';
    assert!(
        cardgate::stripe::verify(
            Some(sig.as_bytes()),
            tampered,
            &cardgate::stripe::Secrets::new(&[EVENTS_SECRET]),
            common::now(),
            300
        )
        .is_err()
    );
    // GET /v1/events shows them delivered.
    let ev = api.get(&k.analyst, "/v1/events?limit=100").await;
    let e = ev["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == ok["id"])
        .unwrap();
    assert_eq!(e["delivery"]["delivered"], 1);
}

#[tokio::test]
async fn pending_requests_and_the_outbox_survive_a_restart_and_expiry_follows_the_clock() {
    // The receiver fails everything during the first run: events wait in the outbox.
    let rx = receiver(usize::MAX).await;
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let server = Server::start_in(dir, &events_config(&rx.url), &[]);
    server.ready().await;
    let api = Api { server: &server };
    gate(&api, &k, "set_control_override", "require_approval").await;
    let body =
        |id: &str| json!({"scope": "cardholder", "id": id, "blocked_merchant_countries": ["KP"]});
    let unsubmitted = apreq(
        &api.post(&k.agent, "/v1/control_overrides", body("ich_a"))
            .await,
    );
    let submitted = apreq(
        &api.post(&k.agent, "/v1/control_overrides", body("ich_b"))
            .await,
    );
    api.post(
        &k.agent,
        &format!("/v1/approval_requests/{submitted}/submit"),
        json!({"reason": "fraud"}),
    )
    .await;
    let ev = api.get(&k.analyst, "/v1/events?limit=100").await;
    let before: Vec<String> = ev["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert!(before.len() >= 4);
    let dir = server.stop();

    // Restart 25 hours later with the receiver up: the old events arrive, the
    // unsubmitted request has expired, the submitted one still awaits review.
    assert!(delivered(&rx).is_empty());
    rx.fail_first.store(0, Ordering::SeqCst);
    let server = Server::start_in(
        dir,
        &events_config(&rx.url),
        &[("CARDGATE_APPROVALS_CLOCK_OFFSET_SECONDS", "90000")],
    );
    server.ready().await;
    let api = Api { server: &server };
    wait_for("outbox drained after restart", || {
        let ids: Vec<String> = delivered(&rx)
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect();
        before.iter().all(|b| ids.contains(b))
    })
    .await;
    let r = api
        .post(
            &k.agent,
            &format!("/v1/approval_requests/{unsubmitted}/submit"),
            json!({}),
        )
        .await;
    assert_eq!((r.status, code(&r).as_str()), (409, "request_expired"));
    let r = api
        .post(
            &k.reviewer,
            &format!("/v1/approval_requests/{unsubmitted}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(
        api.get(&k.analyst, &format!("/v1/approval_requests/{unsubmitted}"))
            .await["status"],
        "expired"
    );
    let r = api
        .post(
            &k.reviewer,
            &format!("/v1/approval_requests/{submitted}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(r.json()["status"], "succeeded", "{}", r.json());
    wait_for("expired event delivered", || {
        delivered(&rx)
            .iter()
            .any(|e| e["type"] == "v2.core.approval_request.expired")
    })
    .await;
    let ov = api.get(&k.analyst, "/v1/control_overrides").await;
    assert_eq!(ov["data"][0]["id"], "ich_b");
}

#[tokio::test]
async fn review_rule_opens_a_request_and_the_approved_retry_passes_once() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let rules = dir.path().join("review.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"big\"\nwhen = 'amount > 1000'\naction = \"review\"\n",
    )
    .unwrap();
    let rules_s = rules.to_str().unwrap().to_string();
    let server = Server::start_in(dir, &base_config(), &[("CARDGATE_RULES", &rules_s)]);
    server.ready().await;
    let api = Api { server: &server };

    let event = common::request();
    let amount = event["data"]["object"]["pending_request"]["amount"]
        .as_i64()
        .unwrap();
    assert!(amount > 1000);
    let send_auth = |n: u32| {
        let mut e = common::request();
        common::set(&mut e, "id", json!(format!("evt_review_{n}")));
        common::set(&mut e, "data/object/id", json!(format!("iauth_review_{n}")));
        e
    };
    let r = common::post_signed(
        &server,
        &serde_json::to_vec(&send_auth(1)).unwrap(),
        &[common::SECRET],
    )
    .await;
    assert_eq!(r.json()["approved"], false);
    assert_eq!(r.json()["metadata"]["reason"], "review");

    let mut found = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(20);
    while found.is_null() {
        assert!(Instant::now() < deadline, "no review request opened");
        let l = api
            .get(
                &k.analyst,
                "/v1/approval_requests?action=authorization_allowance&status=requires_review",
            )
            .await;
        found = l["data"][0].clone();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(found["params"]["authorization"], "iauth_review_1");
    assert_eq!(found["params"]["amount"], amount);
    // A second decline of the same retry does not open a second request.
    common::post_signed(
        &server,
        &serde_json::to_vec(&send_auth(2)).unwrap(),
        &[common::SECRET],
    )
    .await;
    let id = found["id"].as_str().unwrap();
    let r = api
        .post(
            &k.reviewer,
            &format!("/v1/approval_requests/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(r.json()["status"], "succeeded", "{}", r.json());

    let r = common::post_signed(
        &server,
        &serde_json::to_vec(&send_auth(3)).unwrap(),
        &[common::SECRET],
    )
    .await;
    assert_eq!(r.json()["approved"], true, "{}", r.json());
    let r = common::post_signed(
        &server,
        &serde_json::to_vec(&send_auth(4)).unwrap(),
        &[common::SECRET],
    )
    .await;
    assert_eq!(r.json()["approved"], false, "the allowance is one-time");
    // That decline opens its review request in the background, after the answer:
    // wait for it to appear before counting.
    let deadline = Instant::now() + Duration::from_secs(20);
    let l = loop {
        let l = api
            .get(
                &k.analyst,
                "/v1/approval_requests?action=authorization_allowance",
            )
            .await;
        if l["data"].as_array().unwrap().len() >= 2 || Instant::now() >= deadline {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        l["data"].as_array().unwrap().len(),
        2,
        "one per open review: {l}"
    );
    let a = api.get(&k.analyst, "/v1/authorization_allowances").await;
    assert_eq!(a["data"][0]["used_by"], "iauth_review_3");

    // A card override declines above its per-authorization limit.
    let card = event["data"]["object"]["card"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api.post(&k.admin, "/v1/control_overrides",
        json!({"scope": "card", "id": card, "spending_limits": [{"amount": amount - 1, "interval": "per_authorization"}]})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let mut e = send_auth(5);
    common::set(
        &mut e,
        "data/object/pending_request/is_amount_controllable",
        json!(false),
    );
    let r = common::post_signed(&server, &serde_json::to_vec(&e).unwrap(), &[common::SECRET]).await;
    assert_eq!(r.json()["approved"], false);
    assert_eq!(
        r.json()["metadata"]["reason"],
        "spending_limit",
        "{}",
        r.json()
    );
}

#[tokio::test]
async fn openapi_document_is_served_and_names_every_route() {
    let server = Server::start(&base_config(), &[]);
    server.ready().await;
    let r = send("GET", &server.url("/v1/openapi.json"), &[], vec![])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/api_keys",
        "/v1/api_keys/{id}/revoke",
        "/v1/approval_rules",
        "/v1/approval_rules/{id}",
        "/v1/approval_rules/{id}/activate",
        "/v1/approval_rules/{id}/deactivate",
        "/v1/approval_requests",
        "/v1/approval_requests/{id}",
        "/v1/approval_requests/{id}/submit",
        "/v1/approval_requests/{id}/approve",
        "/v1/approval_requests/{id}/deny",
        "/v1/approval_requests/{id}/cancel",
        "/v1/security_history",
        "/v1/events",
        "/v1/rulesets",
        "/v1/rulesets/current",
        "/v1/lists/{name}",
        "/v1/control_overrides",
        "/v1/authorization_allowances",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} undocumented");
    }
    // The page is served, framed by nobody, with its script from this origin only.
    let r = send("GET", &server.url("/ui/"), &[], vec![]).await.unwrap();
    assert_eq!(r.status, 200);
    let csp = r.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(
        send("GET", &server.url("/ui/app.js"), &[], vec![])
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        send("POST", &server.url("/ui/"), &[], vec![])
            .await
            .unwrap()
            .status,
        405
    );
}

#[tokio::test]
async fn an_action_that_fails_when_approved_ends_failed_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    let (victim, _) = create_key(dir.path(), "analyst");
    let path = dir.path().to_path_buf();
    let server = Server::start_in(dir, &base_config(), &[]);
    server.ready().await;
    let api = Api { server: &server };
    gate(&api, &k, "revoke_api_key", "require_approval").await;
    let id = apreq(
        &api.post(
            &k.admin,
            &format!("/v1/api_keys/{victim}/revoke"),
            json!({}),
        )
        .await,
    );
    api.post(
        &k.admin,
        &format!("/v1/approval_requests/{id}/submit"),
        json!({"reason": "left"}),
    )
    .await;
    // Meanwhile the operator revokes it at the command line (not gated).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cardgate"))
        .args(["keys", "revoke", &victim, "--data-dir"])
        .arg(common::data_dir(&path))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = api
        .post(
            &k.reviewer,
            &format!("/v1/approval_requests/{id}/approve"),
            json!({}),
        )
        .await;
    assert_eq!(r.status, 200);
    let req = r.json();
    assert_eq!(req["status"], "failed", "{req}");
    assert_eq!(
        req["status_details"]["failed"]["error_code"],
        "already_revoked"
    );
    let h = api
        .get(&k.analyst, &format!("/v1/security_history?object={victim}"))
        .await;
    assert_eq!(h["data"][0]["actor"], "cli");
    let ev = api
        .get(
            &k.analyst,
            "/v1/events?type=v2.core.approval_request.failed",
        )
        .await;
    assert_eq!(ev["data"][0]["related_object"]["id"], id.as_str());
}

#[tokio::test]
async fn a_published_rule_set_is_written_to_the_rules_file_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let k = keys(dir.path());
    // A rules file of the test's own: `Server::start_in` rewrites its default one
    // at every start, which would hide what a restart reads.
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("live.toml");
    std::fs::write(&rules, "").unwrap();
    let env = [("CARDGATE_RULES", rules.to_str().unwrap())];
    let server = Server::start_in(dir, &base_config(), &env);
    server.ready().await;
    let api = Api { server: &server };
    let r = api.publish(&k.admin, SET).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let published = api.version(&k.analyst).await;
    assert_ne!(published, common::empty_ruleset());
    assert_eq!(std::fs::read_to_string(&rules).unwrap(), SET);
    // A set that does not compile changes neither the file nor the live set.
    let r = api.publish(&k.admin, "[[rule]]\nname = 1\n").await;
    assert_eq!(r.status, 422, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(std::fs::read_to_string(&rules).unwrap(), SET);
    let dir = server.stop();

    let server = Server::start_in(dir, &base_config(), &env);
    server.ready().await;
    let api = Api { server: &server };
    assert_eq!(api.version(&k.analyst).await, published);
    server.stop();
}

#[tokio::test]
async fn an_admin_body_that_never_arrives_is_answered_408_not_held_open() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (_, admin) = create_key(dir.path(), "admin");
    let server = Server::start_in(dir, &base_config(), &[]);
    server.ready().await;
    let host = server.url("").trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&host).await.unwrap();
    // Headers promise a body that is never sent.
    let head = format!(
        "POST /v1/approval_rules HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {admin}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    // The server's own body timeout (10 s) ends this; the outer bound only keeps a
    // broken server from hanging the suite.
    tokio::time::timeout(std::time::Duration::from_mins(1), async {
        let mut buf = [0u8; 4096];
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the server answered");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    server.stop();
}

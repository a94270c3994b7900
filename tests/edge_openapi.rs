//! Issue 15 #7: `GET /v1/security_history` accepted `starting_after`, which the
//! OpenAPI document did not list, and nothing could notice. The router's route
//! table (`cardgate::http::API_ROUTES`, which the router looks every request up
//! in) is checked against `src/http/openapi.json` both ways, and every route in
//! the table is checked to be routed by the real binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use cardgate::http::API_ROUTES;
use common::{Server, base_config, create_key, send};
use serde_json::Value;

fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/openapi.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `(METHOD, path)` → its query parameters, as the document lists them.
fn documented(doc: &Value) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let shared = item
            .get("parameters")
            .cloned()
            .unwrap_or(Value::Array(vec![]));
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let params = op
                .get("parameters")
                .cloned()
                .unwrap_or(Value::Array(vec![]));
            let query = shared
                .as_array()
                .unwrap()
                .iter()
                .chain(params.as_array().unwrap())
                .filter(|p| p["in"] == "query")
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect();
            out.insert((method.to_uppercase(), path.clone()), query);
        }
    }
    out
}

#[test]
fn openapi_lists_every_route_and_query_parameter_the_router_accepts() {
    let documented = documented(&document());
    let mut problems = Vec::new();
    for r in API_ROUTES {
        let key = (r.method.to_string(), r.path.to_string());
        let Some(listed) = documented.get(&key) else {
            problems.push(format!(
                "{} {} is routed but not documented",
                r.method, r.path
            ));
            continue;
        };
        let accepted: BTreeSet<String> = r.query.iter().map(ToString::to_string).collect();
        for q in accepted.difference(listed) {
            problems.push(format!(
                "{} {}: query parameter {q} accepted but not documented",
                r.method, r.path
            ));
        }
        for q in listed.difference(&accepted) {
            problems.push(format!(
                "{} {}: query parameter {q} documented but refused",
                r.method, r.path
            ));
        }
    }
    for (method, path) in documented.keys() {
        if !API_ROUTES
            .iter()
            .any(|r| r.method == method && r.path == path)
        {
            problems.push(format!("{method} {path} is documented but not routed"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The defect the issue found, by name.
    let history = &documented[&("GET".to_string(), "/v1/security_history".to_string())];
    assert!(history.contains("starting_after"));
}

/// A value the route's parameter accepts, so a refusal can only mean "unknown".
fn sample(param: &str) -> &'static str {
    match param {
        "limit" => "1",
        "active" => "true",
        "since" | "until" => "0",
        "status" => "pending",
        "action" => "publish_ruleset",
        _ => "x",
    }
}

#[tokio::test]
async fn every_route_in_the_table_is_routed_with_every_query_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let (_, key) = create_key(dir.path(), "admin");
    let server = Server::start_in(dir, &base_config(), &[]);
    server.ready().await;
    let auth = vec![("authorization", format!("Bearer {key}"))];
    for r in API_ROUTES {
        let path = r
            .path
            .split('/')
            .map(|s| if s.starts_with('{') { "none" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let query = r
            .query
            .iter()
            .map(|q| format!("{q}={}", sample(q)))
            .collect::<Vec<_>>()
            .join("&");
        let url = server.url(&format!("{path}?{query}"));
        // Bodies stay empty: a 400 for the body still proves the route exists.
        let reply = send(r.method, &url, &auth, vec![]).await.unwrap();
        let j = reply.json();
        let code = j["error"]["code"].as_str().unwrap_or("");
        // 404 `resource_missing` (no object "none") is an answer of the route.
        assert!(
            !matches!(code, "not_found" | "method_not_allowed"),
            "{} {url}: {} {j}",
            r.method,
            reply.status
        );
        let message = j["error"]["message"].as_str().unwrap_or("");
        assert!(
            !message.contains("unknown query parameter"),
            "{} {url}: {j}",
            r.method
        );
    }
    // And what is not in the table is refused.
    let r = send("GET", &server.url("/v1/events?bogus=1"), &auth, vec![])
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.json()["error"]["param"].clone()),
        (400, "bogus".into())
    );
}

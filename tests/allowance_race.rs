//! Issue 15 #2: a one-time allowance must pass exactly one authorization, however
//! many retries arrive at once. The allowance used to be checked when the decision
//! was made and taken only after the hold's commit, so every retry decided in
//! between passed on it. Here a reviewer approves one flagged purchase, then 20
//! retries arrive together while each decision is held open (fault injection's
//! decision delay), against the real binary.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Server, base_config, create_key, send};
use serde_json::{Value, json};

const RETRIES: usize = 20;

async fn get(server: &Server, key: &str, path: &str) -> Value {
    let r = send(
        "GET",
        &server.url(path),
        &[("authorization", format!("Bearer {key}"))],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        r.status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// Polls `GET path` until `done` holds for its JSON (background work lands after
/// the answer that caused it), then returns it.
async fn wait_for(server: &Server, key: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = get(server, key, path).await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "GET {path} never got there: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The reference request (above the review rule's 10.00) as retry `n`.
fn retry(n: usize) -> Vec<u8> {
    let mut e = common::request();
    common::set(&mut e, "id", json!(format!("evt_race_{n}")));
    common::set(&mut e, "data/object/id", json!(format!("iauth_race_{n}")));
    serde_json::to_vec(&e).unwrap()
}

#[tokio::test]
async fn one_time_allowance_passes_exactly_one_of_20_concurrent_retries() {
    let dir = tempfile::tempdir().unwrap();
    let (_, reviewer) = create_key(dir.path(), "reviewer");
    let (_, analyst) = create_key(dir.path(), "analyst");
    let rules = dir.path().join("review.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"big\"\nwhen = 'amount > 1000'\naction = \"review\"\n",
    )
    .unwrap();
    // Each decision waits 300 ms: all 20 retries are past the allowance look-up
    // before the first of them is answered, which is the window the defect needs.
    let config = format!(
        "{}[fault_injection]\ndecision_delay_ms = 300\n",
        base_config()
    );
    let server = Server::start_in(dir, &config, &[("CARDGATE_RULES", rules.to_str().unwrap())]);
    server.ready().await;

    let r = common::post_signed(&server, &retry(0), &[common::SECRET]).await;
    assert_eq!(r.json()["approved"], false);
    assert_eq!(r.json()["metadata"]["reason"], "review");
    let open = wait_for(
        &server,
        &analyst,
        "/v1/approval_requests?action=authorization_allowance&status=requires_review",
        |l| !l["data"][0].is_null(),
    )
    .await;
    let id = open["data"][0]["id"].as_str().unwrap();
    let r = send(
        "POST",
        &server.url(&format!("/v1/approval_requests/{id}/approve")),
        &[
            ("authorization", format!("Bearer {reviewer}")),
            ("content-type", "application/json".into()),
        ],
        b"{}".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.json()["status"], "succeeded", "{}", r.json());

    let server = Arc::new(server);
    let start = Arc::new(tokio::sync::Barrier::new(RETRIES));
    let mut retries = tokio::task::JoinSet::new();
    for n in 1..=RETRIES {
        let (server, start) = (server.clone(), start.clone());
        retries.spawn(async move {
            let body = retry(n);
            start.wait().await;
            let r = common::post_signed(&server, &body, &[common::SECRET]).await;
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
            (n, r.json())
        });
    }
    let mut approved = Vec::new();
    while let Some(done) = retries.join_next().await {
        let (n, answer) = done.unwrap();
        if answer["approved"] == true {
            approved.push(n);
        } else {
            assert_eq!(answer["metadata"]["reason"], "review", "{answer}");
        }
    }
    assert_eq!(approved.len(), 1, "retries approved: {approved:?}");
    let winner = format!("iauth_race_{}", approved[0]);

    let a = wait_for(&server, &analyst, "/v1/authorization_allowances", |a| {
        !a["data"][0]["used_by"].is_null()
    })
    .await;
    assert_eq!(a["data"].as_array().unwrap().len(), 1, "{a}");
    assert_eq!(a["data"][0]["used_by"], winner.as_str(), "{a}");
    let used = get(
        &server,
        &analyst,
        "/v1/security_history?type=authorization_allowance.used&limit=100",
    )
    .await;
    assert_eq!(used["data"].as_array().unwrap().len(), 1, "one use: {used}");
    assert_eq!(used["data"][0]["details"]["authorization"], winner.as_str());
}

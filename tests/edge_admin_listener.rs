//! Issue 15 #4: key management, rule publishing, `/ui/`, `/metrics` and the rest
//! of `/v1/` were reachable wherever Stripe must reach the webhook. With
//! `--admin-listen` the webhook's port answers only the webhook and health, and
//! the admin surface lives on its own port.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

mod common;

use common::{SECRET, Server, base_config, create_key, get, post_signed, send};

#[tokio::test]
async fn the_webhook_port_serves_no_admin_surface_with_an_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let (_, admin_key) = create_key(dir.path(), "admin");
    let (_, payments_key) = create_key(dir.path(), "payments");
    let server = Server::start_with_admin_listener(dir, &base_config(), &[]);
    server.ready().await;
    assert_ne!(server.admin_addr.as_deref(), Some(server.addr.as_str()));
    let admin = vec![("authorization", format!("Bearer {admin_key}"))];
    let payments = vec![("authorization", format!("Bearer {payments_key}"))];
    let cart = br#"{"amount":100,"currency":"usd"}"#.to_vec();

    // The webhook's port: the decision and health, nothing else.
    let body = std::fs::read(common::fixture_path("issuing_authorization.request.json")).unwrap();
    let r = post_signed(&server, &body, &[SECRET]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["approved"], true);
    for path in ["/healthz", "/readyz"] {
        assert_eq!(get(&server.url(path)).await.unwrap().status, 200, "{path}");
    }
    for (method, path, headers, body) in [
        ("GET", "/metrics", &admin, vec![]),
        ("GET", "/ui/", &admin, vec![]),
        ("GET", "/ui", &admin, vec![]),
        ("GET", "/v1/openapi.json", &admin, vec![]),
        ("GET", "/v1/api_keys", &admin, vec![]),
        (
            "POST",
            "/v1/api_keys",
            &admin,
            br#"{"role":"admin"}"#.to_vec(),
        ),
        ("POST", "/v1/rulesets", &admin, vec![]),
        ("POST", "/v1/payment_approvals", &payments, cart.clone()),
    ] {
        let r = send(method, &server.url(path), headers, body)
            .await
            .unwrap();
        assert_eq!(r.status, 404, "{method} {path} on the webhook port");
        assert_eq!(r.json()["error"]["code"], "not_found", "{method} {path}");
    }

    // The admin port: the admin surface and health, not the webhook.
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/ui/",
        "/v1/openapi.json",
    ] {
        let r = get(&server.admin_url(path)).await.unwrap();
        assert_eq!(r.status, 200, "{path} on the admin port");
    }
    let r = send("GET", &server.admin_url("/v1/api_keys"), &admin, vec![])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
    let r = send(
        "POST",
        &server.admin_url("/v1/payment_approvals"),
        &payments,
        cart,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["approved"], true);
    let r = send(
        "POST",
        &server.admin_url("/webhooks/stripe"),
        &[],
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn without_an_admin_listener_one_port_serves_everything() {
    let dir = tempfile::tempdir().unwrap();
    let (_, admin_key) = create_key(dir.path(), "admin");
    let server = Server::start_in(dir, &base_config(), &[]);
    server.ready().await;
    assert!(server.admin_addr.is_none());
    let admin = vec![("authorization", format!("Bearer {admin_key}"))];
    for path in ["/metrics", "/ui/", "/healthz"] {
        assert_eq!(get(&server.url(path)).await.unwrap().status, 200, "{path}");
    }
    let r = send("GET", &server.url("/v1/api_keys"), &admin, vec![])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn an_admin_address_equal_to_the_webhook_address_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cardgate.toml");
    std::fs::write(&config, base_config()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cardgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:18111",
            "--admin-listen",
            "127.0.0.1:18111",
        ])
        .arg("--config")
        .arg(&config)
        .env("CARDGATE_DATA_DIR", dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("its own port"), "{err}");
}

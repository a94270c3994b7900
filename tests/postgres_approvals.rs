//! The approvals store on PostgreSQL through the library's public entry points,
//! as the command line and `serve` will use them once `CARDGATE_DATABASE_URL` is
//! wired (issue 14): a tool may be the first to touch an empty database, and
//! what one process changes the other sees at once. Runs on the harness of
//! `tests/common/postgres.rs` (skipped without PostgreSQL unless required).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

mod common;

use cardgate::approvals::{Actor, ApprovalsConfig, AuthError, Role};
use cardgate::store::postgres::{open_approvals, open_approvals_tool};
use common::postgres;

#[tokio::test]
async fn a_tool_may_migrate_an_empty_database_and_a_server_sees_its_keys() {
    let Some((_server, url)) = postgres::database() else {
        return;
    };
    // `keys create` before any replica ever started.
    let tool = open_approvals_tool(&url, cardgate::approvals::ApprovalsConfig::default())
        .await
        .unwrap();
    let (id, secret) = tool
        .create_key(&Actor::cli(), Role::Agent, Some("bot"))
        .await
        .unwrap();
    let serve = open_approvals(&url, ApprovalsConfig::default())
        .await
        .unwrap();
    assert_eq!(serve.authenticate(&secret).await.unwrap().key_id, id);
    // `keys revoke` beside the running server: in force at the next request.
    tool.revoke_key_cli(&id).await.unwrap();
    assert_eq!(serve.authenticate(&secret).await, Err(AuthError::Revoked));
}

#[tokio::test]
async fn the_harness_hands_out_an_ordinary_role_owning_its_database() {
    let Some((_server, url)) = postgres::database() else {
        return;
    };
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT r.rolsuper, r.rolcreatedb, r.rolcreaterole,
                    pg_get_userbyid(d.datdba) = current_user
             FROM pg_roles r, pg_database d
             WHERE r.rolname = current_user AND d.datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    let (superuser, createdb, createrole, owner): (bool, bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert!(!superuser && !createdb && !createrole, "{row:?}");
    assert!(owner);
}

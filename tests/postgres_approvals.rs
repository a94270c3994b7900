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

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use cardgate::approvals::policy::Combinator;
use cardgate::approvals::{
    Action, Actor, Approvals, ApprovalsConfig, AuthError, Control, Error, LiveRules, Role,
    RuleInput, Status,
};
use cardgate::rules::RuleSet;
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

/// A live rule set whose first read after [`Gate::arm`] stops until the test
/// lets it go: an approved `update_list` reads the live set (on a blocking
/// thread) while its request is `requires_execution`, so the execution is held
/// open exactly as long as the test wants, without sleeping.
struct Gate {
    set: ArcSwap<RuleSet>,
    armed: Mutex<
        Option<(
            tokio::sync::oneshot::Sender<()>,
            std::sync::mpsc::Receiver<()>,
        )>,
    >,
}

impl LiveRules for Gate {
    fn live(&self) -> &ArcSwap<RuleSet> {
        let armed = self.armed.lock().unwrap().take();
        if let Some((entered, release)) = armed {
            entered.send(()).unwrap();
            // Sender dropped (the test gave up) counts as a release.
            let _ = release.recv();
        }
        &self.set
    }
}

impl Gate {
    /// The next read of the live set waits; answers "it is waiting" and "go on".
    fn arm(
        &self,
    ) -> (
        tokio::sync::oneshot::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        *self.armed.lock().unwrap() = Some((entered_tx, release_rx));
        (entered_rx, release_tx)
    }
}

/// Replica A with an `update_list` request approved by a reviewer and its
/// execution stopped inside the action; the approve call runs on its own task.
struct Executing {
    id: String,
    approving: tokio::task::JoinHandle<Result<cardgate::approvals::ApprovalRequest, Error>>,
    release: std::sync::mpsc::Sender<()>,
}

async fn execution_held_open(a: &Arc<Approvals>) -> Executing {
    let gate = Arc::new(Gate {
        set: ArcSwap::from_pointee(RuleSet::from_toml("[lists]\nblocked = [\"a\"]\n").unwrap()),
        armed: Mutex::new(None),
    });
    let rules: Arc<dyn LiveRules> = gate.clone();
    let mut actors = Vec::new();
    for role in [Role::Admin, Role::Agent, Role::Reviewer] {
        let (_, secret) = a.create_key(&Actor::cli(), role, None).await.unwrap();
        actors.push(a.authenticate(&secret).await.unwrap());
    }
    let [admin, agent, reviewer] = actors.try_into().unwrap();
    let gate_lists = RuleInput {
        action: "update_list".into(),
        name: Some("two eyes".into()),
        conditions: vec![],
        combinator: Combinator::default(),
        control: Control::RequireApproval,
        reviewers: None,
        active: true,
    };
    a.perform(&admin, Action::CreateApprovalRule(gate_lists), &rules)
        .await
        .unwrap();
    let update = Action::UpdateList {
        name: "blocked".into(),
        values: vec![serde_json::json!("b")],
    };
    let id = match a.perform(&agent, update, &rules).await {
        Err(Error::ApprovalRequired { request, .. }) => request.id,
        other => panic!("{other:?}"),
    };
    a.submit(&agent, &id, None).await.unwrap();
    let (entered, release) = gate.arm();
    let approving = {
        let (a, id) = (a.clone(), id.clone());
        tokio::spawn(async move { a.approve(&reviewer, &id, None, &rules).await })
    };
    entered.await.unwrap();
    assert_eq!(
        a.get_request(&id).await.unwrap().status,
        Status::RequiresExecution
    );
    Executing {
        id,
        approving,
        release,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_start_fails_another_replicas_execution() {
    let Some((_server, url)) = postgres::database() else {
        return;
    };
    let a = Arc::new(
        open_approvals(&url, ApprovalsConfig::default())
            .await
            .unwrap(),
    );
    let running = execution_held_open(&a).await;
    // Replica B starts (start-up recovery) while A is still executing.
    let b = open_approvals(&url, ApprovalsConfig::default())
        .await
        .unwrap();
    assert_eq!(
        b.get_request(&running.id).await.unwrap().status,
        Status::RequiresExecution,
        "a starting replica failed an execution another replica is running"
    );
    running.release.send(()).unwrap();
    let done = running.approving.await.unwrap().unwrap();
    assert_eq!(done.status, Status::Succeeded);
    assert_eq!(
        b.get_request(&running.id).await.unwrap().status,
        Status::Succeeded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_whose_replica_died_is_failed_by_the_next_replica_to_start() {
    let Some((_server, url)) = postgres::database() else {
        return;
    };
    let a = Arc::new(
        open_approvals(&url, ApprovalsConfig::default())
            .await
            .unwrap(),
    );
    let running = execution_held_open(&a).await;
    // A dies: its task stops mid-action and its database sessions end (the
    // server frees what they held once the backend has exited, which
    // `pg_terminate_backend` with a timeout waits for).
    running.approving.abort();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let killed = client
        .query_one(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 10000))
             FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND backend_type = 'client backend'",
            &[],
        )
        .await
        .unwrap();
    assert!(killed.get::<_, i64>(0) > 0);
    drop(running.release);
    let b = open_approvals(&url, ApprovalsConfig::default())
        .await
        .unwrap();
    let req = b.get_request(&running.id).await.unwrap();
    assert_eq!(req.status, Status::Failed);
    let shown = serde_json::to_value(cardgate::approvals::tagged(&req)).unwrap();
    assert_eq!(
        shown["status_details"]["failed"]["error_code"],
        "interrupted"
    );
}

//! What only PostgreSQL has to prove: concurrent starts migrate once, a newer
//! schema is refused, replicas racing on one database keep every guard (two
//! approvals execute once; the guard indexes turn a racing insert into a stale
//! change), outbox claims are exclusive, and an unreachable server is an error
//! that never shows the password. The shared contract of both backends is in
//! `store/approvals/tests.rs`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_postgres::{Client, NoTls};

use super::testing::{self, TestServer};
use super::{Database, MIGRATIONS, PgApprovalStore, PostgresError, open_approvals};
use crate::approvals::model::{Attempt, Event, HistoryFilter, Page};
use crate::approvals::policy::Combinator;
use crate::approvals::{
    Action, Actor, AllowanceSpec, ApprovalStore, ApprovalStoreError, Approvals, ApprovalsConfig,
    Change, Control, Error, LiveRules, Role, RuleInput, Status,
};
use crate::rules::RuleSet;

/// A fresh database on the shared server, or `None` (skipped) without one.
pub(super) fn database() -> Option<(Arc<TestServer>, String)> {
    let server = testing::shared().unwrap()?;
    let url = server.database().unwrap();
    Some((server, url))
}

/// A plain connection of the test's own, outside cardgate's pool.
async fn raw(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |db| db.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_migrate_once() {
    let Some((_server, url)) = database() else {
        return;
    };
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Database::connect(&url).await })
        })
        .collect();
    for start in starts {
        start.await.unwrap().unwrap();
    }
    let version: i64 = raw(&url)
        .await
        .query_one("SELECT version FROM cardgate_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, i64::try_from(MIGRATIONS.len()).unwrap());
    // And again, on a migrated database: nothing to do, nothing fails.
    Database::connect(&url).await.unwrap();
}

#[tokio::test]
async fn a_schema_from_a_newer_build_is_refused() {
    let Some((_server, url)) = database() else {
        return;
    };
    Database::connect(&url).await.unwrap();
    raw(&url)
        .await
        .execute("UPDATE cardgate_schema SET version = 999", &[])
        .await
        .unwrap();
    match Database::connect(&url).await {
        Err(PostgresError::TooNew { found, known, .. }) => {
            assert_eq!(found, 999);
            assert_eq!(known, i64::try_from(MIGRATIONS.len()).unwrap());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_without_the_password() {
    // Port 1 on loopback: nothing listens there, the connection is refused.
    let err = Database::connect("postgres://cardgate:s3cret-pw@127.0.0.1:1/cardgate")
        .await
        .unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, PostgresError::Database { .. }), "{err:?}");
    assert!(
        shown.contains("postgres://cardgate@127.0.0.1:1/cardgate"),
        "{shown}"
    );
    assert!(!shown.contains("s3cret-pw"), "{shown}");
    assert!(matches!(
        Database::connect("postgres://[not a url").await,
        Err(PostgresError::Url(_))
    ));
}

#[tokio::test]
async fn history_cannot_be_truncated_either() {
    let Some((_server, url)) = database() else {
        return;
    };
    let a = open_approvals(&url, ApprovalsConfig::default())
        .await
        .unwrap();
    a.create_key(&Actor::cli(), Role::Admin, None)
        .await
        .unwrap();
    let err = raw(&url)
        .await
        .execute("TRUNCATE security_history", &[])
        .await
        .unwrap_err();
    assert!(db_message(&err).contains("append-only"), "{err:?}");
}

/// Two replicas (two services, two pools) on one database.
struct Replicas {
    one: Approvals,
    two: Approvals,
    rules: (Arc<dyn LiveRules>, Arc<dyn LiveRules>),
    agent: Actor,
    reviewers: (Actor, Actor),
}

async fn replicas(url: &str) -> Replicas {
    let one = open_approvals(url, ApprovalsConfig::default())
        .await
        .unwrap();
    let two = open_approvals(url, ApprovalsConfig::default())
        .await
        .unwrap();
    let mut keys = Vec::new();
    for role in [Role::Admin, Role::Agent, Role::Reviewer, Role::Reviewer] {
        let (_, secret) = one.create_key(&Actor::cli(), role, None).await.unwrap();
        // Keys made through one replica authenticate on the other.
        keys.push(two.authenticate(&secret).await.unwrap());
    }
    let [admin, agent, first, second] = keys.try_into().unwrap();
    let rules: (Arc<dyn LiveRules>, Arc<dyn LiveRules>) = (
        Arc::new(ArcSwap::from_pointee(RuleSet::empty())),
        Arc::new(ArcSwap::from_pointee(RuleSet::empty())),
    );
    let gate = RuleInput {
        action: "publish_ruleset".into(),
        name: Some("two eyes".into()),
        conditions: vec![],
        combinator: Combinator::default(),
        control: Control::RequireApproval,
        reviewers: None,
        active: true,
    };
    one.perform(&admin, Action::CreateApprovalRule(gate), &rules.0)
        .await
        .unwrap();
    Replicas {
        one,
        two,
        rules,
        agent,
        reviewers: (first, second),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_approving_at_once_execute_once() {
    let Some((_server, url)) = database() else {
        return;
    };
    let r = replicas(&url).await;
    // Several rounds, so that the two approvals really overlap in some of them.
    for round in 0..5 {
        let source =
            format!("[[rule]]\nname = \"r\"\nwhen = 'amount > {round}'\naction = \"decline\"\n");
        // Gated on replica two, submitted there, approved on both at once.
        let id = match r
            .two
            .perform(&r.agent, Action::PublishRuleset { source }, &r.rules.1)
            .await
        {
            Err(Error::ApprovalRequired { request, .. }) => request.id,
            other => panic!("{other:?}"),
        };
        r.two.submit(&r.agent, &id, None).await.unwrap();
        let (x, y) = tokio::join!(
            r.one.approve(&r.reviewers.0, &id, None, &r.rules.0),
            r.two.approve(&r.reviewers.1, &id, None, &r.rules.1),
        );
        assert_eq!(
            [&x, &y].iter().filter(|r| r.is_ok()).count(),
            1,
            "round {round}: {x:?} {y:?}"
        );
        let lost = if x.is_ok() { y } else { x };
        assert!(
            matches!(
                lost,
                Err(Error::Conflict {
                    code: "invalid_transition",
                    ..
                })
            ),
            "round {round}: {lost:?}"
        );
        let executed = HistoryFilter {
            kind: Some("approval_request.executed".into()),
            object: Some(id.clone()),
            ..HistoryFilter::default()
        };
        for replica in [&r.one, &r.two] {
            assert_eq!(
                replica
                    .history(&executed, &Page::default())
                    .await
                    .unwrap()
                    .0
                    .len(),
                1
            );
            assert_eq!(
                replica.get_request(&id).await.unwrap().status,
                Status::Succeeded
            );
        }
    }
}

/// Waits until one session of `url`'s database waits for a lock (the caller's
/// open transaction), polling every 50 ms; fails if `task` (`what`) finished
/// first, which means it did not wait, or after 200 polls.
pub(super) async fn until_one_session_waits_for_a_lock<T>(
    url: &str,
    task: &tokio::task::JoinHandle<T>,
    what: &str,
) {
    let watcher = raw(url).await;
    let mut waited = 0;
    loop {
        let waiting: i64 = watcher
            .query_one(
                "SELECT COUNT(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting == 1 {
            return;
        }
        assert!(waited < 200, "{what} never waited for the lock");
        assert!(!task.is_finished(), "{what} did not wait for the lock");
        waited += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `sql` in a transaction left open on its own connection, starts
/// `change` on `store` (which must then wait for that transaction), commits,
/// and answers what `change` got.
async fn racing(
    url: &str,
    store: &PgApprovalStore,
    sql: &str,
    args: &[&str],
    change: Change,
) -> Result<(), ApprovalStoreError> {
    let mut other = raw(url).await;
    let tx = other.transaction().await.unwrap();
    let args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
        .iter()
        .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    assert_eq!(tx.execute(sql, &args).await.unwrap(), 1);
    let store = store.clone();
    let apply = tokio::spawn(async move { store.apply(vec![change]).await });
    // The change's own read cannot see the uncommitted row, so only the index
    // stops it: wait until its session waits for our transaction's lock.
    until_one_session_waits_for_a_lock(url, &apply, "the change").await;
    tx.commit().await.unwrap();
    apply.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_racing_open_request_with_the_same_dedupe_key_makes_the_insert_stale() {
    let Some((_server, url)) = database() else {
        return;
    };
    let a = open_approvals(&url, ApprovalsConfig::default())
        .await
        .unwrap();
    let spec = AllowanceSpec {
        card: "ic_1".into(),
        merchant: "m".into(),
        amount: 500,
        currency: "usd".into(),
        authorization: None,
        rule: None,
        details: None,
    };
    let first = a.open_review(spec).await.unwrap();
    let store = PgApprovalStore::connect(&url).await.unwrap();
    let mut second = first.clone();
    second.id = "apreq_second".into();
    second.dedupe = Some("review:other".into());
    let got = racing(
        &url,
        &store,
        "INSERT INTO approval_requests (id, action, params, status, requested_by,
             requester_role, reviewers, created, expires_at, dedupe)
         SELECT 'apreq_racer', action, params, 'pending', requested_by, requester_role,
             reviewers, created, expires_at, 'review:other'
         FROM approval_requests WHERE id = $1",
        &[&first.id],
        Change::InsertRequest(second),
    )
    .await;
    assert_eq!(got, Err(ApprovalStoreError::Stale));
    assert_eq!(store.request("apreq_second").await.unwrap(), None);
    assert_eq!(
        store
            .open_request("review:other")
            .await
            .unwrap()
            .map(|r| r.id),
        Some("apreq_racer".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_racing_active_rule_for_the_same_action_makes_the_insert_stale() {
    let Some((_server, url)) = database() else {
        return;
    };
    let r = replicas(&url).await;
    let store = PgApprovalStore::connect(&url).await.unwrap();
    let gate = store
        .active_rule(crate::approvals::ActionKind::PublishRuleset)
        .await
        .unwrap()
        .unwrap();
    // Deactivate the gate, then race a second active rule for the action
    // against a raw re-activation of the first.
    let mut off = gate.clone();
    off.active = false;
    store
        .apply(vec![Change::UpdateRule {
            before: gate.clone(),
            after: off,
        }])
        .await
        .unwrap();
    let mut other = gate.clone();
    other.id = "aprule_other".into();
    let got = racing(
        &url,
        &store,
        "UPDATE approval_rules SET active = TRUE WHERE id = $1",
        &[&gate.id],
        Change::InsertRule(other),
    )
    .await;
    assert_eq!(got, Err(ApprovalStoreError::Stale));
    assert_eq!(store.rule("aprule_other").await.unwrap(), None);
    drop(r);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_claims_are_exclusive_until_the_attempt_is_recorded() {
    let Some((_server, url)) = database() else {
        return;
    };
    let one = PgApprovalStore::connect(&url).await.unwrap();
    let two = PgApprovalStore::connect(&url).await.unwrap();
    let endpoints: Vec<String> = (0..6).map(|i| format!("http://127.0.0.1:9/{i}")).collect();
    one.apply(vec![Change::Event {
        event: Event {
            id: "evt_1".into(),
            kind: "v2.core.test".into(),
            created: 1,
            related_id: "apreq_1".into(),
            body: "{\"id\":\"evt_1\"}".into(),
        },
        endpoints: endpoints.clone(),
        first_attempt_ms: 1_000,
    }])
    .await
    .unwrap();
    assert_eq!(one.next_delivery_ms().await.unwrap(), Some(1_000));
    assert!(one.due_deliveries(999, 10).await.unwrap().is_empty());
    let (x, y) = tokio::join!(one.due_deliveries(1_000, 4), two.due_deliveries(1_000, 4));
    let (x, y) = (x.unwrap(), y.unwrap());
    let mut seen: Vec<String> = x.iter().chain(&y).map(|d| d.endpoint.clone()).collect();
    seen.sort();
    assert_eq!(seen, endpoints, "every entry claimed exactly once");
    assert!(x.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
    // Claimed entries are not due again until the claim lapses...
    assert!(one.due_deliveries(1_000, 10).await.unwrap().is_empty());
    // ...and the recorded attempt sets what happens next.
    let first = &x[0];
    let failed = &y[0];
    one.apply(vec![
        Change::Attempted {
            id: first.id,
            attempts: 1,
            result: Attempt::Delivered { at_ms: 1_001 },
        },
        Change::Attempted {
            id: failed.id,
            attempts: 1,
            result: Attempt::Failed {
                error: "refused".into(),
                next_attempt_ms: 2_000,
                give_up: false,
            },
        },
    ])
    .await
    .unwrap();
    let again = two.due_deliveries(2_000, 10).await.unwrap();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!((again[0].id, again[0].attempts), (failed.id, 1));
    let (events, _) = one.events(None, None, 10).await.unwrap();
    assert_eq!((events[0].delivered, events[0].failed), (1, 0));
    assert_eq!(events[0].pending, 5);
}

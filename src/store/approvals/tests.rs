//! The approvals service end to end on its store, one test body for each
//! backend: SQLite (a file in a temporary directory) and PostgreSQL (a fresh
//! database on the test server of `store::postgres::testing`). Lifecycle,
//! guards, expiry on an injected clock, recovery, and the append-only history.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{SqliteApprovalStore, open, open_tool, open_with_clock};
use crate::approvals::model::{HistoryFilter, Page};
use crate::approvals::policy::Combinator;
use crate::approvals::{
    Action, Actor, AllowanceKey, AllowanceSpec, ApprovalStore, Approvals, ApprovalsConfig,
    AuthError, Change, Clock, Control, Error, Executed, KeyExpiry, LiveRules, Role, RuleInput,
    Status,
};
use crate::rules::RuleSet;
use crate::store::postgres::{self as pg, PgApprovalStore, testing::TestServer};

/// Where a test's approvals are stored.
enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres {
        url: String,
        /// Keeps the shared server up while the test runs.
        _server: Arc<TestServer>,
    },
}

impl Backend {
    fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }

    /// `None` when no PostgreSQL is installed (and none is required): the test
    /// is skipped with the harness's message.
    fn postgres() -> Option<Backend> {
        let server = pg::testing::shared().unwrap()?;
        let url = server.database().unwrap();
        Some(Backend::Postgres {
            url,
            _server: server,
        })
    }

    /// The service as `serve` opens it (recovery included).
    async fn open(&self, settings: ApprovalsConfig) -> Approvals {
        match self {
            Backend::Sqlite(dir) => open(dir.path(), settings).await.unwrap(),
            Backend::Postgres { url, .. } => pg::open_approvals(url, settings).await.unwrap(),
        }
    }

    async fn open_with_clock(&self, settings: ApprovalsConfig, clock: Clock) -> Approvals {
        match self {
            Backend::Sqlite(dir) => open_with_clock(dir.path(), settings, clock).await.unwrap(),
            Backend::Postgres { url, .. } => pg::open_approvals_with_clock(url, settings, clock)
                .await
                .unwrap(),
        }
    }

    /// The service as a command-line tool opens it (no recovery).
    async fn open_tool(&self) -> Approvals {
        match self {
            Backend::Sqlite(dir) => open_tool(dir.path()).await.unwrap(),
            Backend::Postgres { url, .. } => {
                pg::open_approvals_tool(url, ApprovalsConfig::default())
                    .await
                    .unwrap()
            }
        }
    }

    /// A second store on the same database, for the port's own contract.
    async fn store(&self) -> Arc<dyn ApprovalStore> {
        match self {
            Backend::Sqlite(dir) => Arc::new(SqliteApprovalStore::open(dir.path()).unwrap()),
            Backend::Postgres { url, .. } => Arc::new(PgApprovalStore::connect(url).await.unwrap()),
        }
    }

    /// Runs one statement on a connection of its own, for what only SQL can
    /// show; `$1`… are bound to `args`.
    async fn execute(&self, sql: &str, args: &[&str]) -> Result<u64, String> {
        match self {
            Backend::Sqlite(dir) => {
                let conn =
                    rusqlite::Connection::open(dir.path().join(crate::store::FILE_NAME)).unwrap();
                conn.execute(sql, rusqlite::params_from_iter(args))
                    .map(|n| u64::try_from(n).unwrap())
                    .map_err(|e| e.to_string())
            }
            Backend::Postgres { url, .. } => {
                let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let args: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = args
                    .iter()
                    .map(|a| a as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                client
                    .execute(sql, &args)
                    .await
                    .map_err(|e| match e.as_db_error() {
                        Some(db) => db.message().to_string(),
                        None => e.to_string(),
                    })
            }
        }
    }
}

/// Runs each named `async fn(Backend)` as a test on SQLite (`…::sqlite::name`)
/// and on PostgreSQL (`…::postgres::name`).
macro_rules! on_both_backends {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$test(super::Backend::sqlite()).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    if let Some(backend) = super::Backend::postgres() {
                        super::$test(backend).await;
                    }
                }
            )+
        }
    };
}

on_both_backends!(
    gated_publish_runs_only_after_another_key_approves,
    unsubmitted_requests_expire_on_the_injected_clock,
    canceled_requests_cannot_be_approved_and_history_is_append_only,
    one_active_rule_per_action_and_block_refuses,
    revoked_keys_stop_authenticating_and_requests_survive_reopen,
    allowance_is_one_time,
    interrupted_executions_fail_at_start_but_not_when_a_tool_opens_the_file,
    a_guard_that_no_longer_holds_writes_nothing,
    concurrent_approvals_run_the_action_once,
    a_requester_cannot_approve_with_a_reviewer_key_it_minted,
    api_keys_never_expire,
    max_key_lifetime_bounds_every_new_key,
);

struct Fixture {
    a: Approvals,
    clock: Clock,
    rules: Arc<dyn LiveRules>,
    admin: Actor,
    agent: Actor,
    reviewer: Actor,
    backend: Backend,
}

impl Fixture {
    fn version(&self) -> String {
        self.rules.live().load().version().to_string()
    }
}

async fn fixture(backend: Backend) -> Fixture {
    let clock = Clock::with_offset(0);
    let a = backend
        .open_with_clock(ApprovalsConfig::default(), clock.clone())
        .await;
    let mut made = Vec::new();
    for role in [Role::Admin, Role::Agent, Role::Reviewer] {
        let (id, secret) = a.create_key(&Actor::cli(), role, None).await.unwrap();
        let actor = a.authenticate(&secret).await.unwrap();
        assert_eq!(actor.key_id, id);
        made.push(actor);
    }
    let [admin, agent, reviewer] = made.try_into().unwrap();
    Fixture {
        a,
        clock,
        rules: Arc::new(ArcSwap::from_pointee(RuleSet::empty())),
        admin,
        agent,
        reviewer,
        backend,
    }
}

async fn gate_publish(f: &Fixture) {
    let rule = RuleInput {
        action: "publish_ruleset".into(),
        name: Some("two eyes".into()),
        conditions: vec![],
        combinator: Combinator::default(),
        control: Control::RequireApproval,
        reviewers: None,
        active: true,
    };
    f.a.perform(&f.admin, Action::CreateApprovalRule(rule), &f.rules)
        .await
        .unwrap();
}

const SET: &str = "[[rule]]\nname = \"r\"\nwhen = 'amount > 5'\naction = \"decline\"\n";

async fn gated(f: &Fixture) -> String {
    let err =
        f.a.perform(
            &f.agent,
            Action::PublishRuleset { source: SET.into() },
            &f.rules,
        )
        .await
        .unwrap_err();
    match err {
        Error::ApprovalRequired { request, .. } => {
            assert_eq!(request.status, Status::Pending);
            request.id
        }
        other => panic!("{other:?}"),
    }
}

async fn gated_publish_runs_only_after_another_key_approves(b: Backend) {
    let f = fixture(b).await;
    gate_publish(&f).await;
    let id = gated(&f).await;
    assert_eq!(f.version(), "empty");
    // Approving before submission, or by the requester, fails.
    assert!(matches!(
        f.a.approve(&f.reviewer, &id, None, &f.rules).await,
        Err(Error::Conflict {
            code: "request_not_submitted",
            ..
        })
    ));
    f.a.submit(&f.agent, &id, Some("ship it")).await.unwrap();
    assert!(matches!(
        f.a.approve(&f.agent, &id, None, &f.rules).await,
        Err(Error::Forbidden {
            code: "self_approval",
            ..
        })
    ));
    let done =
        f.a.approve(&f.reviewer, &id, Some("ok"), &f.rules)
            .await
            .unwrap();
    assert_eq!(done.status, Status::Succeeded, "{done:?}");
    assert_ne!(f.version(), "empty");
    assert!(matches!(
        f.a.approve(&f.admin, &id, None, &f.rules).await,
        Err(Error::Conflict {
            code: "invalid_transition",
            ..
        })
    ));
    let (hist, _) =
        f.a.history(&HistoryFilter::default(), &Page::default())
            .await
            .unwrap();
    let kinds: Vec<_> = hist.iter().map(|h| h.kind.as_str()).collect();
    for k in [
        "approval_request.created",
        "approval_request.submitted",
        "approval_request.approved",
        "approval_request.executed",
        "ruleset.published",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
}

async fn unsubmitted_requests_expire_on_the_injected_clock(b: Backend) {
    let f = fixture(b).await;
    gate_publish(&f).await;
    let id = gated(&f).await;
    f.clock.advance(24 * 3600 + 1);
    assert!(matches!(
        f.a.submit(&f.agent, &id, None).await,
        Err(Error::Conflict {
            code: "request_expired",
            ..
        })
    ));
    assert_eq!(f.a.get_request(&id).await.unwrap().status, Status::Expired);
}

async fn canceled_requests_cannot_be_approved_and_history_is_append_only(b: Backend) {
    let f = fixture(b).await;
    gate_publish(&f).await;
    let id = gated(&f).await;
    f.a.submit(&f.agent, &id, None).await.unwrap();
    assert!(matches!(
        f.a.cancel(&f.reviewer, &id).await,
        Err(Error::Forbidden {
            code: "not_requester",
            ..
        })
    ));
    f.a.cancel(&f.agent, &id).await.unwrap();
    assert!(matches!(
        f.a.approve(&f.reviewer, &id, None, &f.rules).await,
        Err(Error::Conflict {
            code: "invalid_transition",
            ..
        })
    ));
    for sql in [
        "DELETE FROM security_history",
        "UPDATE security_history SET actor = 'x'",
    ] {
        let refused = f.backend.execute(sql, &[]).await.unwrap_err();
        assert!(refused.contains("append-only"), "{sql}: {refused}");
    }
}

async fn one_active_rule_per_action_and_block_refuses(b: Backend) {
    let f = fixture(b).await;
    gate_publish(&f).await;
    let second = RuleInput {
        action: "publish_ruleset".into(),
        name: None,
        conditions: vec![],
        combinator: Combinator::default(),
        control: Control::Block,
        reviewers: None,
        active: false,
    };
    let r =
        f.a.perform(&f.admin, Action::CreateApprovalRule(second), &f.rules)
            .await
            .unwrap();
    let Executed::Rule(r) = r else {
        panic!("{r:?}")
    };
    let err =
        f.a.perform(
            &f.admin,
            Action::ActivateApprovalRule { id: r.id.clone() },
            &f.rules,
        )
        .await
        .unwrap_err();
    match err {
        Error::Conflict { code, message } => {
            assert_eq!(code, "rule_already_active");
            assert!(message.contains("aprule_"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

async fn revoked_keys_stop_authenticating_and_requests_survive_reopen(b: Backend) {
    let a = b.open(ApprovalsConfig::default()).await;
    let (id, secret) = a
        .create_key(&Actor::cli(), Role::Agent, Some("bot"))
        .await
        .unwrap();
    a.revoke_key_cli(&id).await.unwrap();
    assert!(matches!(
        a.revoke_key_cli(&id).await,
        Err(Error::Conflict {
            code: "already_revoked",
            ..
        })
    ));
    assert_eq!(a.authenticate(&secret).await, Err(AuthError::Revoked));
    assert_eq!(a.authenticate("cgk_nope").await, Err(AuthError::Unknown));
    drop(a);
    let a = b.open(ApprovalsConfig::default()).await;
    assert_eq!(a.list_keys().await.unwrap().len(), 1);
}

async fn allowance_is_one_time(b: Backend) {
    let f = fixture(b).await;
    let spec = AllowanceSpec {
        card: "ic_1".into(),
        merchant: "m".into(),
        amount: 500,
        currency: "usd".into(),
        authorization: None,
        rule: None,
        details: None,
    };
    f.a.perform(
        &f.admin,
        Action::AuthorizationAllowance(spec.clone()),
        &f.rules,
    )
    .await
    .unwrap();
    let key = AllowanceKey::from(&spec);
    assert!(f.a.allowance(&key).is_some());
    let id = f.a.take_allowance(&key).unwrap();
    assert!(f.a.take_allowance(&key).is_none());
    f.a.consume_allowance(&id, "iauth_1").await.unwrap();
    let listed = f.a.list_allowances().await.unwrap();
    assert_eq!(listed[0].used_by.as_deref(), Some("iauth_1"));
    // A restart does not revive a used allowance.
    let again = f.backend.open_tool().await;
    assert!(!again.has_allowances());
}

async fn interrupted_executions_fail_at_start_but_not_when_a_tool_opens_the_file(b: Backend) {
    let f = fixture(b).await;
    gate_publish(&f).await;
    let id = gated(&f).await;
    f.backend
        .execute(
            "UPDATE approval_requests SET status = 'requires_execution' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    let tool = f.backend.open_tool().await;
    assert_eq!(
        tool.get_request(&id).await.unwrap().status,
        Status::RequiresExecution
    );
    let server = f.backend.open(ApprovalsConfig::default()).await;
    let req = server.get_request(&id).await.unwrap();
    assert_eq!(req.status, Status::Failed);
    let shown = serde_json::to_value(crate::approvals::tagged(&req)).unwrap();
    assert_eq!(
        shown["status_details"]["failed"]["error_code"],
        "interrupted"
    );
}

async fn a_guard_that_no_longer_holds_writes_nothing(b: Backend) {
    let f = fixture(b).await;
    gate_publish(&f).await;
    let id = gated(&f).await;
    let store = f.backend.store().await;
    let req = store.request(&id).await.unwrap().unwrap();
    let mut next = req.clone();
    next.status = Status::Canceled;
    // Read as `requires_review`, but it is `pending`: stale, and the history row
    // in the same list is not written either.
    let before =
        f.a.history(&HistoryFilter::default(), &Page::default())
            .await
            .unwrap()
            .0
            .len();
    let stale = store
        .apply(vec![
            Change::UpdateRequest {
                from: Status::RequiresReview,
                request: next.clone(),
            },
            Change::History(crate::approvals::HistoryEntry {
                id: 0,
                kind: "approval_request.canceled".into(),
                actor: "x".into(),
                object_id: id.clone(),
                created: 0,
                details: serde_json::json!({}),
            }),
        ])
        .await;
    assert_eq!(stale, Err(crate::approvals::ApprovalStoreError::Stale));
    let after =
        f.a.history(&HistoryFilter::default(), &Page::default())
            .await
            .unwrap()
            .0
            .len();
    assert_eq!(before, after);
    assert_eq!(store.request(&id).await.unwrap().unwrap(), req);
    // Round trip: what is written is what is read.
    store
        .apply(vec![Change::UpdateRequest {
            from: Status::Pending,
            request: next.clone(),
        }])
        .await
        .unwrap();
    assert_eq!(store.request(&id).await.unwrap().unwrap(), next);
}

async fn concurrent_approvals_run_the_action_once(b: Backend) {
    let f = Arc::new(fixture(b).await);
    gate_publish(&f).await;
    // The second reviewer exists before the request opens: a key created after it
    // may not review it, and on the wall clock "after" was a second boundary away
    // (the test failed whenever one fell between the two).
    let second =
        f.a.create_key(&Actor::cli(), Role::Reviewer, None)
            .await
            .unwrap()
            .1;
    let second = f.a.authenticate(&second).await.unwrap();
    let id = gated(&f).await;
    f.a.submit(&f.agent, &id, None).await.unwrap();
    let (x, y) = tokio::join!(
        f.a.approve(&f.reviewer, &id, None, &f.rules),
        f.a.approve(&second, &id, None, &f.rules)
    );
    let oks = [&x, &y].iter().filter(|r| r.is_ok()).count();
    assert_eq!(oks, 1, "{x:?} {y:?}");
    let lost = if x.is_ok() { y } else { x };
    assert!(
        matches!(
            lost,
            Err(Error::Conflict {
                code: "invalid_transition",
                ..
            })
        ),
        "{lost:?}"
    );
    let f2 = HistoryFilter {
        kind: Some("approval_request.executed".into()),
        object: Some(id.clone()),
        ..HistoryFilter::default()
    };
    assert_eq!(f.a.history(&f2, &Page::default()).await.unwrap().0.len(), 1);
}

/// Issue 15 #3: an admin opened a request, created a reviewer key through the
/// (ungated) key API and approved its own request with it. "No self-approval" now
/// covers keys the requester created, directly or through keys it created, and keys
/// created after the request opened; an independent reviewer still approves.
async fn a_requester_cannot_approve_with_a_reviewer_key_it_minted(b: Backend) {
    let f = fixture(b).await;
    gate_publish(&f).await;
    // The admin asks for a publish…
    let id = match f
        .a
        .perform(
            &f.admin,
            Action::PublishRuleset { source: SET.into() },
            &f.rules,
        )
        .await
    {
        Err(Error::ApprovalRequired { request, .. }) => request.id,
        other => panic!("{other:?}"),
    };
    f.a.submit(&f.admin, &id, Some("mine")).await.unwrap();
    // …then mints a reviewer, and through it a second one.
    let mint = |by: Actor, role: &str| {
        let a = &f.a;
        let rules = &f.rules;
        let role = role.to_string();
        async move {
            let action = Action::CreateApiKey {
                role,
                name: None,
                pending: None,
                expires_at: None,
                expires_in: None,
            };
            match a.perform(&by, action, rules).await.unwrap() {
                Executed::KeyCreated {
                    secret: Some(secret),
                    ..
                } => a.authenticate(&secret).await.unwrap(),
                other => panic!("{other:?}"),
            }
        }
    };
    let minted_admin = mint(f.admin.clone(), "admin").await;
    let minted = mint(f.admin.clone(), "reviewer").await;
    let grandchild = mint(minted_admin.clone(), "reviewer").await;
    for reviewer in [&minted, &grandchild] {
        let refused = f.a.approve(reviewer, &id, None, &f.rules).await;
        assert!(
            matches!(
                refused,
                Err(Error::Forbidden {
                    code: "self_approval",
                    ..
                })
            ),
            "{refused:?}"
        );
    }
    // A key someone else created after the request opened cannot review it either.
    f.clock.advance(5);
    let late =
        f.a.create_key(&Actor::cli(), Role::Reviewer, None)
            .await
            .unwrap();
    let late = f.a.authenticate(&late.1).await.unwrap();
    assert!(matches!(
        f.a.approve(&late, &id, None, &f.rules).await,
        Err(Error::Forbidden {
            code: "self_approval",
            ..
        })
    ));
    assert_eq!(f.version(), "empty");
    // The independent reviewer (created by the command line before the request).
    let done = f.a.approve(&f.reviewer, &id, None, &f.rules).await.unwrap();
    assert_eq!(done.status, Status::Succeeded, "{done:?}");
}

/// Issue 15 #6: keys lived forever. A key created with a lifetime authenticates
/// until the approvals clock reaches its `expires_at`, then is refused as expired
/// (not as unknown); a key without one never expires; both survive a reopen.
async fn api_keys_never_expire(b: Backend) {
    let clock = Clock::with_offset(0);
    let a = b
        .open_with_clock(ApprovalsConfig::default(), clock.clone())
        .await;
    let (forever, forever_secret) = a
        .create_key(&Actor::cli(), Role::Analyst, None)
        .await
        .unwrap();
    let (key, secret) = a
        .create_expiring_key(
            &Actor::cli(),
            Role::Agent,
            Some("short"),
            KeyExpiry::After(60),
        )
        .await
        .unwrap();
    assert_eq!(key.expires_at, Some(key.created + 60));
    clock.advance(59);
    assert_eq!(a.authenticate(&secret).await.unwrap().key_id, key.id);
    clock.advance(1);
    assert_eq!(a.authenticate(&secret).await, Err(AuthError::Expired));
    assert_eq!(
        a.authenticate(&forever_secret).await.unwrap().key_id,
        forever
    );
    // Revoked wins over expired: the more deliberate refusal is reported.
    a.revoke_key_cli(&key.id).await.unwrap();
    assert_eq!(a.authenticate(&secret).await, Err(AuthError::Revoked));
    drop(a);

    let a = b.open_with_clock(ApprovalsConfig::default(), clock).await;
    let keys = a.list_keys().await.unwrap();
    let expiry = |id: &str| keys.iter().find(|k| k.id == id).unwrap().expires_at;
    assert_eq!(expiry(&key.id), Some(key.created + 60));
    assert_eq!(expiry(&forever), None);
    // An absolute expiry, and through the API's path (`perform`).
    let at = a.now() + 3600;
    let created = a
        .perform(
            &Actor::cli(),
            Action::CreateApiKey {
                role: "reviewer".into(),
                name: None,
                pending: None,
                expires_at: Some(at),
                expires_in: None,
            },
            &(Arc::new(ArcSwap::from_pointee(RuleSet::empty())) as Arc<dyn LiveRules>),
        )
        .await
        .unwrap();
    let Executed::KeyCreated { key, .. } = created else {
        panic!("{created:?}");
    };
    assert_eq!(key.expires_at, Some(at));
    let history = a
        .history(&HistoryFilter::default(), &Page::default())
        .await
        .unwrap()
        .0;
    let created = history.iter().find(|h| h.object_id == key.id).unwrap();
    assert_eq!(created.details["expires_at"], at);
}

/// `[approvals] max_key_lifetime`: a key asked without expiry gets it, a shorter
/// one is kept, a longer one (or one already past, or both fields at once) is
/// refused as invalid before anything is stored.
async fn max_key_lifetime_bounds_every_new_key(b: Backend) {
    let settings = ApprovalsConfig {
        max_key_lifetime: Some(std::time::Duration::from_hours(1)),
        ..ApprovalsConfig::default()
    };
    let a = b.open_with_clock(settings, Clock::with_offset(0)).await;
    let cli = Actor::cli();
    let create = |expiry| a.create_expiring_key(&cli, Role::Agent, None, expiry);
    let (k, _) = create(KeyExpiry::Unset).await.unwrap();
    assert_eq!(k.expires_at, Some(k.created + 3600));
    let (k, _) = create(KeyExpiry::After(1800)).await.unwrap();
    assert_eq!(k.expires_at, Some(k.created + 1800));
    let (k, _) = create(KeyExpiry::After(3600)).await.unwrap();
    assert_eq!(k.expires_at, Some(k.created + 3600));
    for refused in [
        KeyExpiry::After(3601),
        KeyExpiry::At(a.now() + 7200),
        KeyExpiry::At(a.now()),
    ] {
        match create(refused).await {
            Err(Error::Invalid { message }) => {
                assert!(
                    message.contains("max_key_lifetime") || message.contains("not in the future"),
                    "{message}"
                );
            }
            other => panic!("{refused:?}: {other:?}"),
        }
    }
    let rules: Arc<dyn LiveRules> = Arc::new(ArcSwap::from_pointee(RuleSet::empty()));
    for (at, secs) in [
        (Some(a.now() + 60), Some(60)),
        (None, Some(86_400)),
        (None, Some(0)),
    ] {
        let action = Action::CreateApiKey {
            role: "agent".into(),
            name: None,
            pending: None,
            expires_at: at,
            expires_in: secs,
        };
        let got = a.perform(&Actor::cli(), action, &rules).await;
        assert!(
            matches!(got, Err(Error::Invalid { .. })),
            "{at:?} {secs:?}: {got:?}"
        );
    }
    assert_eq!(a.list_keys().await.unwrap().len(), 3);
}

/// A key stored before keys could expire (schema without `expires_at`) is
/// migrated to one that never expires, and still authenticates.
#[tokio::test]
async fn keys_from_before_expiry_keep_no_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, hash) = {
        let s = crate::approvals::keys::generate().unwrap();
        let h = crate::approvals::keys::hash(&s);
        (s, h)
    };
    {
        let conn = rusqlite::Connection::open(dir.path().join(crate::store::FILE_NAME)).unwrap();
        // Migrations 1-3 made the key table; expiry came later.
        for sql in &crate::store::MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch("PRAGMA user_version = 3").unwrap();
        conn.execute(
            "INSERT INTO api_keys (id, name, role, hash, created, created_by) VALUES ('key_old', NULL, 'admin', ?1, 1, 'cli')",
            [&hash],
        )
        .unwrap();
    }
    let a = open_tool(dir.path()).await.unwrap();
    assert_eq!(a.authenticate(&secret).await.unwrap().key_id, "key_old");
    assert_eq!(a.list_keys().await.unwrap()[0].expires_at, None);
}

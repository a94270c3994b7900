//! The approvals service end to end on its SQLite store: lifecycle, guards,
//! expiry on an injected clock, recovery, and the append-only history.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rusqlite::{Connection, params};

use super::{SqliteApprovalStore, open, open_tool, open_with_clock};
use crate::approvals::model::{HistoryFilter, Page};
use crate::approvals::policy::Combinator;
use crate::approvals::{
    Action, Actor, AllowanceKey, AllowanceSpec, ApprovalStore, Approvals, ApprovalsConfig,
    AuthError, Change, Clock, Control, Error, Executed, LiveRules, Role, RuleInput, Status,
};
use crate::rules::RuleSet;

struct Fixture {
    a: Approvals,
    clock: Clock,
    rules: Arc<dyn LiveRules>,
    admin: Actor,
    agent: Actor,
    reviewer: Actor,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn version(&self) -> String {
        self.rules.live().load().version().to_string()
    }

    /// A second connection on the same file, for what only SQL can show.
    fn sql(&self) -> Connection {
        Connection::open(self.dir.path().join(crate::store::FILE_NAME)).unwrap()
    }
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::with_offset(0);
    let a = open_with_clock(dir.path(), ApprovalsConfig::default(), clock.clone())
        .await
        .unwrap();
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
        dir,
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

#[tokio::test]
async fn gated_publish_runs_only_after_another_key_approves() {
    let f = fixture().await;
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

#[tokio::test]
async fn unsubmitted_requests_expire_on_the_injected_clock() {
    let f = fixture().await;
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

#[tokio::test]
async fn canceled_requests_cannot_be_approved_and_history_is_append_only() {
    let f = fixture().await;
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
    let conn = f.sql();
    assert!(conn.execute("DELETE FROM security_history", []).is_err());
    assert!(
        conn.execute("UPDATE security_history SET actor = 'x'", [])
            .is_err()
    );
}

#[tokio::test]
async fn one_active_rule_per_action_and_block_refuses() {
    let f = fixture().await;
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

#[tokio::test]
async fn revoked_keys_stop_authenticating_and_requests_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path(), ApprovalsConfig::default()).await.unwrap();
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
    let a = open(dir.path(), ApprovalsConfig::default()).await.unwrap();
    assert_eq!(a.list_keys().await.unwrap().len(), 1);
}

#[tokio::test]
async fn allowance_is_one_time() {
    let f = fixture().await;
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
    let again = open_tool(f.dir.path()).await.unwrap();
    assert!(!again.has_allowances());
}

#[tokio::test]
async fn interrupted_executions_fail_at_start_but_not_when_a_tool_opens_the_file() {
    let f = fixture().await;
    gate_publish(&f).await;
    let id = gated(&f).await;
    f.sql()
        .execute(
            "UPDATE approval_requests SET status = 'requires_execution' WHERE id = ?1",
            params![id],
        )
        .unwrap();
    let tool = open_tool(f.dir.path()).await.unwrap();
    assert_eq!(
        tool.get_request(&id).await.unwrap().status,
        Status::RequiresExecution
    );
    let server = open(f.dir.path(), ApprovalsConfig::default())
        .await
        .unwrap();
    let req = server.get_request(&id).await.unwrap();
    assert_eq!(req.status, Status::Failed);
    let shown = serde_json::to_value(crate::approvals::tagged(&req)).unwrap();
    assert_eq!(
        shown["status_details"]["failed"]["error_code"],
        "interrupted"
    );
}

#[tokio::test]
async fn a_guard_that_no_longer_holds_writes_nothing() {
    let f = fixture().await;
    gate_publish(&f).await;
    let id = gated(&f).await;
    let store = SqliteApprovalStore::open(f.dir.path()).unwrap();
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

#[tokio::test]
async fn concurrent_approvals_run_the_action_once() {
    let f = Arc::new(fixture().await);
    gate_publish(&f).await;
    let id = gated(&f).await;
    f.a.submit(&f.agent, &id, None).await.unwrap();
    let second =
        f.a.create_key(&Actor::cli(), Role::Reviewer, None)
            .await
            .unwrap()
            .1;
    let second = f.a.authenticate(&second).await.unwrap();
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

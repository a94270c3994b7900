use super::*;
use arc_swap::ArcSwap;

struct Fixture {
    a: Approvals,
    clock: Clock,
    rules: ArcSwap<RuleSet>,
    admin: Actor,
    agent: Actor,
    reviewer: Actor,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Clock::with_offset(0);
    let a = Approvals::open_with_clock(dir.path(), Settings::default(), clock.clone()).unwrap();
    let mk = |role| {
        let (id, secret) = a.create_key(&Actor::cli(), role, None).unwrap();
        let actor = a.authenticate(&secret).unwrap();
        assert_eq!(actor.key_id, id);
        actor
    };
    let (admin, agent, reviewer) = (mk(Role::Admin), mk(Role::Agent), mk(Role::Reviewer));
    Fixture {
        a,
        clock,
        rules: ArcSwap::from_pointee(RuleSet::empty()),
        admin,
        agent,
        reviewer,
        _dir: dir,
    }
}

fn gate_publish(f: &Fixture) {
    let rule = RuleInput {
        action: "publish_ruleset".into(),
        name: Some("two eyes".into()),
        conditions: vec![],
        combinator: Default::default(),
        control: Control::RequireApproval,
        reviewers: None,
        active: true,
    };
    f.a.perform(&f.admin, Action::CreateApprovalRule(rule), &f.rules)
        .unwrap();
}

const SET: &str = "[[rule]]\nname = \"r\"\nwhen = 'amount > 5'\naction = \"decline\"\n";

fn gated(f: &Fixture) -> String {
    let err =
        f.a.perform(
            &f.agent,
            Action::PublishRuleset { source: SET.into() },
            &f.rules,
        )
        .unwrap_err();
    match err {
        Error::ApprovalRequired { request, .. } => {
            assert_eq!(request["status"], "pending");
            request["id"].as_str().unwrap().to_string()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn gated_publish_runs_only_after_another_key_approves() {
    let f = fixture();
    gate_publish(&f);
    let id = gated(&f);
    assert_eq!(f.rules.load().version(), "empty");
    // Approving before submission, by the requester, or by an analyst-free set fails.
    assert!(matches!(
        f.a.approve(&f.reviewer, &id, None, &f.rules),
        Err(Error::Conflict {
            code: "request_not_submitted",
            ..
        })
    ));
    f.a.submit(&f.agent, &id, Some("ship it")).unwrap();
    assert!(matches!(
        f.a.approve(&f.agent, &id, None, &f.rules),
        Err(Error::Forbidden {
            code: "self_approval",
            ..
        })
    ));
    let done = f.a.approve(&f.reviewer, &id, Some("ok"), &f.rules).unwrap();
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_ne!(f.rules.load().version(), "empty");
    assert!(matches!(
        f.a.approve(&f.admin, &id, None, &f.rules),
        Err(Error::Conflict {
            code: "invalid_transition",
            ..
        })
    ));
    let (hist, _) =
        f.a.history(&HistoryFilter::default(), &Page::default())
            .unwrap();
    let kinds: Vec<_> = hist.iter().map(|h| h["type"].as_str().unwrap()).collect();
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

#[test]
fn unsubmitted_requests_expire_on_the_injected_clock() {
    let f = fixture();
    gate_publish(&f);
    let id = gated(&f);
    f.clock.advance(24 * 3600 + 1);
    assert!(matches!(
        f.a.submit(&f.agent, &id, None),
        Err(Error::Conflict {
            code: "request_expired",
            ..
        })
    ));
    assert_eq!(f.a.get_request(&id).unwrap()["status"], "expired");
}

#[test]
fn canceled_requests_cannot_be_approved_and_history_is_append_only() {
    let f = fixture();
    gate_publish(&f);
    let id = gated(&f);
    f.a.submit(&f.agent, &id, None).unwrap();
    assert!(matches!(
        f.a.cancel(&f.reviewer, &id),
        Err(Error::Forbidden {
            code: "not_requester",
            ..
        })
    ));
    f.a.cancel(&f.agent, &id).unwrap();
    assert!(matches!(
        f.a.approve(&f.reviewer, &id, None, &f.rules),
        Err(Error::Conflict {
            code: "invalid_transition",
            ..
        })
    ));
    let conn = f.a.conn();
    assert!(conn.execute("DELETE FROM security_history", []).is_err());
    assert!(
        conn.execute("UPDATE security_history SET actor = 'x'", [])
            .is_err()
    );
}

#[test]
fn one_active_rule_per_action_and_block_refuses() {
    let f = fixture();
    gate_publish(&f);
    let second = RuleInput {
        action: "publish_ruleset".into(),
        name: None,
        conditions: vec![],
        combinator: Default::default(),
        control: Control::Block,
        reviewers: None,
        active: false,
    };
    let r =
        f.a.perform(&f.admin, Action::CreateApprovalRule(second), &f.rules)
            .unwrap();
    let id = r["id"].as_str().unwrap().to_string();
    let err =
        f.a.perform(
            &f.admin,
            Action::ActivateApprovalRule { id: id.clone() },
            &f.rules,
        )
        .unwrap_err();
    match err {
        Error::Conflict { code, message } => {
            assert_eq!(code, "rule_already_active");
            assert!(message.contains("aprule_"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn revoked_keys_stop_authenticating_and_requests_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = Approvals::open(dir.path(), Settings::default()).unwrap();
    let (id, secret) = a
        .create_key(&Actor::cli(), Role::Agent, Some("bot"))
        .unwrap();
    a.revoke_key_cli(&id).unwrap();
    assert_eq!(a.authenticate(&secret), Err(AuthError::Revoked));
    assert_eq!(a.authenticate("cgk_nope"), Err(AuthError::Unknown));
    drop(a);
    let a = Approvals::open(dir.path(), Settings::default()).unwrap();
    assert_eq!(a.list_keys().unwrap().len(), 1);
}

#[test]
fn allowance_is_one_time() {
    let f = fixture();
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
    .unwrap();
    let key = allowance_key(&spec);
    assert!(f.a.allowance(&key).is_some());
    let id = f.a.take_allowance(&key).unwrap();
    assert!(f.a.take_allowance(&key).is_none());
    f.a.consume_allowance(&id, "iauth_1").unwrap();
}

#[test]
fn interrupted_executions_fail_at_start_but_not_when_a_tool_opens_the_file() {
    let f = fixture();
    gate_publish(&f);
    let id = gated(&f);
    f.a.conn()
        .execute(
            "UPDATE approval_requests SET status = 'requires_execution' WHERE id = ?1",
            params![id],
        )
        .unwrap();
    let dir = f.a.path().parent().unwrap().to_path_buf();
    let tool = Approvals::open_tool(&dir).unwrap();
    assert_eq!(
        tool.get_request(&id).unwrap()["status"],
        "requires_execution"
    );
    let server = Approvals::open(&dir, Settings::default()).unwrap();
    let req = server.get_request(&id).unwrap();
    assert_eq!(req["status"], "failed");
    assert_eq!(req["status_details"]["failed"]["error_code"], "interrupted");
}

//! Each API object's JSON, pinned field by field as the API has always
//! answered it (tests/approvals.rs and `http/openapi.json` rely on it).

use serde_json::json;

use super::*;
use crate::approvals::action::{OverrideLimit, Scope};
use crate::approvals::policy::{Combinator, Control};

fn show<T: ApiObject>(v: &T) -> Value {
    serde_json::to_value(tagged(v)).unwrap()
}

fn request() -> ApprovalRequest {
    ApprovalRequest {
        id: "apreq_1".into(),
        action: Action::CreateApiKey {
            role: "agent".into(),
            name: Some("bot".into()),
            pending: Some(("key_9".into(), "hash".into())),
            expires_at: None,
            expires_in: None,
        },
        status: Status::Succeeded,
        requested_by: Actor {
            key_id: "key_1".into(),
            role: Role::Agent,
            name: None,
        },
        rule: Some(RuleRef {
            id: "aprule_1".into(),
            name: Some("gate".into()),
        }),
        reviewers: Reviewers::default_set(),
        reason: Some("why".into()),
        created: 10,
        expires_at: 20,
        submitted_at: Some(11),
        review: Some(Review {
            result: Verdict::Approved,
            reason: None,
            reviewed_at: 12,
            reviewed_by: Reviewer {
                id: "key_2".into(),
                name: Some("rev".into()),
            },
        }),
        outcome: Some(Outcome::Succeeded {
            result: json!({"id": "key_9"}),
        }),
        transitions: Transitions {
            approved_at: Some(12),
            succeeded_at: Some(13),
            ..Transitions::default()
        },
        dedupe: None,
    }
}

#[test]
fn a_request_shows_its_params_without_the_pending_hash() {
    assert_eq!(
        show(&request()),
        json!({
            "id": "apreq_1",
            "object": "approval_request",
            "action": "create_api_key",
            "params": {"role": "agent", "name": "bot"},
            "status": "succeeded",
            "requested_by": {"id": "key_1", "role": "agent", "name": null},
            "rule": {"id": "aprule_1", "name": "gate"},
            "reviewers": {"roles": ["admin", "reviewer"], "keys": []},
            "reason": "why",
            "created": 10,
            "expires_at": 20,
            "review": {"result": "approved", "reason": null, "reviewed_at": 12,
                       "reviewed_by": {"id": "key_2", "name": "rev"}},
            "status_details": {"succeeded": {"result": {"id": "key_9"}}},
            "status_transitions": {"approved_at": 12, "succeeded_at": 13},
        })
    );
    let mut open = request();
    open.status = Status::Pending;
    open.rule = None;
    open.review = None;
    open.outcome = None;
    open.transitions = Transitions::default();
    let v = show(&open);
    assert_eq!(v["rule"], Value::Null);
    assert_eq!(v["review"], Value::Null);
    assert_eq!(v["status_details"], Value::Null);
    assert_eq!(v["status_transitions"], json!({}));
    open.status = Status::Failed;
    open.outcome = Some(Outcome::Failed(Failure {
        error_code: "interrupted".into(),
        error_message: "stopped".into(),
    }));
    assert_eq!(
        show(&open)["status_details"],
        json!({"failed": {"error_code": "interrupted", "error_message": "stopped"}})
    );
}

#[test]
fn keys_rules_history_overrides_and_allowances_keep_their_fields() {
    let key = ApiKey {
        id: "key_1".into(),
        name: None,
        role: Role::Reviewer,
        created: 1,
        created_by: "cli".into(),
        revoked_at: Some(2),
        expires_at: Some(3),
    };
    assert_eq!(
        show(&key),
        json!({"id": "key_1", "object": "api_key", "name": null, "role": "reviewer",
               "created": 1, "created_by": "cli", "revoked_at": 2, "expires_at": 3})
    );
    let rule = ApprovalRule {
        id: "aprule_1".into(),
        action: ActionKind::UpdateList,
        name: None,
        conditions: vec![],
        combinator: Combinator::And,
        control: Control::Block,
        reviewers: Reviewers::default_set(),
        active: true,
        created: 1,
        updated: 2,
    };
    assert_eq!(
        show(&rule),
        json!({"id": "aprule_1", "object": "approval_rule", "action": "update_list",
               "name": null, "conditions": [], "combinator": "and", "control": "block",
               "reviewers": {"roles": ["admin", "reviewer"], "keys": []}, "active": true,
               "created": 1, "updated": 2})
    );
    let entry = HistoryEntry {
        id: 7,
        kind: "api_key.revoked".into(),
        actor: "cli".into(),
        object_id: "key_1".into(),
        created: 3,
        details: json!({}),
    };
    assert_eq!(
        show(&entry),
        json!({"id": "sh_7", "object": "security_history_entry", "type": "api_key.revoked",
               "actor": "cli", "object_id": "key_1", "created": 3, "details": {}})
    );
    let spec = OverrideSpec {
        scope: Scope::Card,
        id: "ic_1".into(),
        spending_limits: vec![OverrideLimit {
            amount: 5,
            interval: "per_authorization".into(),
        }],
        blocked_categories: vec![],
        blocked_merchant_countries: vec!["KP".into()],
    };
    let o = ControlOverride { spec, updated: 4 };
    assert_eq!(
        show(&o),
        json!({"scope": "card", "id": "ic_1", "object": "control_override", "updated": 4,
               "spending_limits": [{"amount": 5, "interval": "per_authorization"}],
               "blocked_categories": [], "blocked_merchant_countries": ["KP"]})
    );
    let a = Allowance {
        id: "allow_1".into(),
        spec: AllowanceSpec {
            card: "ic_1".into(),
            merchant: "m".into(),
            amount: 500,
            currency: "usd".into(),
            authorization: Some("iauth_1".into()),
            rule: None,
            details: None,
        },
        created: 5,
        expires_at: 6,
        used_at: None,
        used_by: None,
    };
    assert_eq!(
        show(&a),
        json!({"id": "allow_1", "object": "authorization_allowance", "card": "ic_1",
               "merchant": "m", "amount": 500, "currency": "usd", "authorization": "iauth_1",
               "created": 5, "expires_at": 6, "used_at": null, "used_by": null})
    );
    assert_eq!(
        serde_json::to_value(Executed::Allowance(a)).unwrap(),
        json!({"id": "allow_1", "object": "authorization_allowance", "card": "ic_1",
               "merchant": "m", "amount": 500, "currency": "usd", "created": 5,
               "expires_at": 6})
    );
}

#[test]
fn executed_actions_answer_as_they_always_have() {
    let key = ApiKey {
        id: "key_1".into(),
        name: Some("bot".into()),
        role: Role::Agent,
        created: 1,
        created_by: "key_0".into(),
        revoked_at: None,
        expires_at: None,
    };
    let created = |secret: Option<&str>| {
        serde_json::to_value(Executed::KeyCreated {
            key: key.clone(),
            secret: secret.map(str::to_string),
        })
        .unwrap()
    };
    assert_eq!(
        created(None),
        json!({"id": "key_1", "object": "api_key", "role": "agent", "name": "bot", "created": 1,
               "expires_at": null})
    );
    assert_eq!(created(Some("cgk_x"))["secret"], "cgk_x");
    let cases = [
        (
            Executed::KeyRevoked {
                id: "key_1".into(),
                revoked_at: 2,
            },
            json!({"id": "key_1", "object": "api_key", "revoked_at": 2}),
        ),
        (
            Executed::RuleDeleted {
                id: "aprule_1".into(),
            },
            json!({"id": "aprule_1", "object": "approval_rule", "deleted": true}),
        ),
        (
            Executed::Ruleset(RulesetChange {
                version: "v2".into(),
                previous: "v1".into(),
                rules: 3,
                list: None,
            }),
            json!({"object": "ruleset", "version": "v2", "previous": "v1", "rules": 3}),
        ),
        (
            Executed::Ruleset(RulesetChange {
                version: "v2".into(),
                previous: "v1".into(),
                rules: 3,
                list: Some("risky".into()),
            }),
            json!({"object": "ruleset", "version": "v2", "previous": "v1", "rules": 3,
                   "list": "risky"}),
        ),
    ];
    for (done, want) in cases {
        assert_eq!(serde_json::to_value(&done).unwrap(), want);
    }
}

#[test]
fn stamps_follow_the_status_entered() {
    let mut t = Transitions::default();
    t.record(Status::RequiresReview, 1);
    assert_eq!(t, Transitions::default());
    t.record(Status::RequiresExecution, 2);
    t.record(Status::Failed, 3);
    assert_eq!(
        serde_json::to_value(&t).unwrap(),
        json!({"approved_at": 2, "failed_at": 3})
    );
    for s in Status::ALL {
        assert_eq!(Status::parse(s.as_str()), Some(s));
        assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
    }
}

//! The approvals domain as types: request statuses, actors, API keys, approval
//! requests and their reviews, security-history entries, events and outbox
//! entries, control overrides, allowances and what an executed action returns.
//!
//! Each object's API form is its `Serialize` impl, wrapped by [`tagged`] with
//! its `object` name: `http/api.rs` answers it, and an event embeds the same
//! form (events are rendered in the transaction of the change they announce, so
//! the form cannot live only in `http/`). No code reads these objects back by
//! string keys.

use serde::{Serialize, Serializer};
use serde_json::Value;

use super::action::{Action, ActionKind, AllowanceSpec, OverrideSpec};
use super::keys::Role;
use super::policy::{ApprovalRule, Reviewers};

/// A type the API shows as a JSON object named by an `object` field (Stripe style).
pub trait ApiObject: Serialize {
    /// The `object` field's value.
    const OBJECT: &'static str;
}

/// `value`'s fields plus `"object"`: the form the API answers and events embed.
#[derive(Debug, Serialize)]
pub struct Tagged<'a, T: ApiObject> {
    object: &'static str,
    #[serde(flatten)]
    value: &'a T,
}

/// Wraps `value` in its API form.
pub fn tagged<T: ApiObject>(value: &T) -> Tagged<'_, T> {
    Tagged {
        object: T::OBJECT,
        value,
    }
}

/// Where an approval request stands; see the lifecycle in the module doc of
/// [`crate::approvals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Created by a gated call, not yet submitted.
    Pending,
    /// Submitted; waiting for a reviewer.
    RequiresReview,
    /// Approved; the action is running.
    RequiresExecution,
    /// The action ran.
    Succeeded,
    /// The action failed (error kept).
    Failed,
    /// A reviewer denied it.
    Rejected,
    /// The requester canceled it.
    Canceled,
    /// Lapsed.
    Expired,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 8] = [
        Status::Pending,
        Status::RequiresReview,
        Status::RequiresExecution,
        Status::Succeeded,
        Status::Failed,
        Status::Rejected,
        Status::Canceled,
        Status::Expired,
    ];

    /// Statuses a request can still leave by itself or by someone's hand: at most
    /// one request per dedupe key is in one of them.
    pub const OPEN: [Status; 3] = [
        Status::Pending,
        Status::RequiresReview,
        Status::RequiresExecution,
    ];

    /// Statuses that lapse at `expires_at` (a running action does not).
    pub const EXPIRING: [Status; 2] = [Status::Pending, Status::RequiresReview];

    /// The name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::RequiresReview => "requires_review",
            Status::RequiresExecution => "requires_execution",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Rejected => "rejected",
            Status::Canceled => "canceled",
            Status::Expired => "expired",
        }
    }

    /// Parses a status name.
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// Who is calling: an authenticated key, or cardgate itself (`system`) or the
/// operator's CLI (`cli`). Also who asked for a request (`requested_by`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// `key_…`, `system` or `cli`.
    #[serde(rename = "id")]
    pub key_id: String,
    /// The key's role (`system` and `cli` act as admin).
    pub role: Role,
    /// The key's label.
    pub name: Option<String>,
}

impl Actor {
    /// cardgate itself (authorization reviews, expiry, recovery).
    pub fn system() -> Self {
        Actor {
            key_id: "system".into(),
            role: Role::Admin,
            name: Some("cardgate".into()),
        }
    }

    /// The operator at the command line.
    pub fn cli() -> Self {
        Actor {
            key_id: "cli".into(),
            role: Role::Admin,
            name: Some("command line".into()),
        }
    }

    /// Whether this is one of cardgate's own actors, which have no key that could
    /// be revoked.
    pub fn is_builtin(&self) -> bool {
        self.key_id == "system" || self.key_id == "cli"
    }
}

/// A stored API key (never its secret or hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    /// `key_…`
    pub id: String,
    /// Label.
    pub name: Option<String>,
    /// What it may do.
    pub role: Role,
    /// Unix seconds.
    pub created: i64,
    /// The key id (or `cli`) that created it.
    pub created_by: String,
    /// Set once revoked.
    pub revoked_at: Option<i64>,
}

impl ApiObject for ApiKey {
    const OBJECT: &'static str = "api_key";
}

impl ApiObject for ApprovalRule {
    const OBJECT: &'static str = "approval_rule";
}

/// The approval rule that opened a request, as copied into it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// `aprule_…`
    pub id: String,
    /// The rule's name then.
    pub name: Option<String>,
}

/// A reviewer's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Approved: the action runs.
    Approved,
    /// Denied.
    Rejected,
}

/// Who reviewed a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Reviewer {
    /// Key id.
    pub id: String,
    /// Key label.
    pub name: Option<String>,
}

/// A request's review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Review {
    /// Approved or rejected.
    pub result: Verdict,
    /// The reviewer's reason.
    pub reason: Option<String>,
    /// Unix seconds.
    pub reviewed_at: i64,
    /// Who.
    pub reviewed_by: Reviewer,
}

/// Why an action failed, kept in its request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Failure {
    /// Machine code.
    pub error_code: String,
    /// What happened.
    pub error_message: String,
}

/// How an executed request ended (its `status_details`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The action ran; its answer as it was shown then, kept whole.
    Succeeded {
        /// What the action returned.
        result: Value,
    },
    /// The action failed.
    Failed(Failure),
}

/// When a request reached each stage (`status_transitions`); the stamp a status
/// sets is [`Transitions::record`]'s business.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Transitions {
    /// Approved (the action started).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<i64>,
    /// Canceled by the requester.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canceled_at: Option<i64>,
    /// Lapsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<i64>,
    /// The action failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<i64>,
    /// Denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_at: Option<i64>,
    /// The action ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub succeeded_at: Option<i64>,
}

impl Transitions {
    /// Stamps entering `status` at `at`. Submission has its own column and no
    /// stamp; approval is stamped when execution starts.
    pub fn record(&mut self, status: Status, at: i64) {
        let slot = match status {
            Status::Pending | Status::RequiresReview => return,
            Status::RequiresExecution => &mut self.approved_at,
            Status::Succeeded => &mut self.succeeded_at,
            Status::Failed => &mut self.failed_at,
            Status::Rejected => &mut self.rejected_at,
            Status::Canceled => &mut self.canceled_at,
            Status::Expired => &mut self.expired_at,
        };
        *slot = Some(at);
    }
}

/// An approval request: one sensitive action waiting for (or past) review.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRequest {
    /// `apreq_…`
    pub id: String,
    /// What runs once approved, exactly as asked.
    pub action: Action,
    /// Where it stands.
    pub status: Status,
    /// Who asked.
    pub requested_by: Actor,
    /// The rule that gated it (`None` for cardgate's own reviews without a rule).
    pub rule: Option<RuleRef>,
    /// Who may review, copied from the rule when the request opened.
    pub reviewers: Reviewers,
    /// The requester's reason, given on submission.
    pub reason: Option<String>,
    /// Unix seconds.
    pub created: i64,
    /// When it lapses unless it moved on.
    pub expires_at: i64,
    /// When it was submitted.
    pub submitted_at: Option<i64>,
    /// The review, once reviewed.
    pub review: Option<Review>,
    /// How the action ended, once it ran.
    pub outcome: Option<Outcome>,
    /// Stage stamps.
    pub transitions: Transitions,
    /// At most one open request exists per dedupe key (authorization reviews).
    pub dedupe: Option<String>,
}

impl ApprovalRequest {
    /// The action's parameters as the API shows them: without a pending key's
    /// hash, which stays in the database.
    fn shown_params(&self) -> Value {
        let mut whole = serde_json::to_value(&self.action).unwrap_or_default();
        let mut params = whole.get_mut("params").map(Value::take).unwrap_or_default();
        if let Some(p) = params.as_object_mut() {
            p.remove("pending");
        }
        params
    }
}

impl ApiObject for ApprovalRequest {
    const OBJECT: &'static str = "approval_request";
}

impl Serialize for ApprovalRequest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            id: &'a str,
            action: ActionKind,
            params: Value,
            status: Status,
            requested_by: &'a Actor,
            rule: Option<&'a RuleRef>,
            reviewers: &'a Reviewers,
            reason: Option<&'a str>,
            created: i64,
            expires_at: i64,
            review: Option<&'a Review>,
            status_details: Option<&'a Outcome>,
            status_transitions: &'a Transitions,
        }
        Shown {
            id: &self.id,
            action: self.action.kind(),
            params: self.shown_params(),
            status: self.status,
            requested_by: &self.requested_by,
            rule: self.rule.as_ref(),
            reviewers: &self.reviewers,
            reason: self.reason.as_deref(),
            created: self.created,
            expires_at: self.expires_at,
            review: self.review.as_ref(),
            status_details: self.outcome.as_ref(),
            status_transitions: &self.transitions,
        }
        .serialize(s)
    }
}

/// One security-history row. Append-only: the store refuses to change or delete
/// one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    /// Row id, shown as `sh_<id>`; ignored when writing.
    #[serde(serialize_with = "history_id")]
    pub id: i64,
    /// What happened, e.g. `approval_request.approved`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Key id, `system` or `cli`.
    pub actor: String,
    /// The object it happened to.
    pub object_id: String,
    /// Unix seconds.
    pub created: i64,
    /// Free-form detail for auditors, kept whole.
    pub details: Value,
}

fn history_id<S: Serializer>(id: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("sh_{id}"))
}

impl ApiObject for HistoryEntry {
    const OBJECT: &'static str = "security_history_entry";
}

/// An outgoing event. Its wire body is rendered once, with the change it
/// announces, and never changes after: the signature covers those bytes and
/// receivers dedupe on its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `evt_…`
    pub id: String,
    /// `v2.core.approval_request.approved` etc.
    pub kind: String,
    /// Unix seconds.
    pub created: i64,
    /// The request or rule it is about.
    pub related_id: String,
    /// The JSON delivered.
    pub body: String,
}

/// A stored event with the state of its deliveries (`GET /v1/events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// The JSON delivered.
    pub body: String,
    /// Deliveries that succeeded.
    pub delivered: i64,
    /// Deliveries still being tried.
    pub pending: i64,
    /// Deliveries given up.
    pub failed: i64,
}

/// An outbox entry due for an attempt: one event for one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Outbox row.
    pub id: i64,
    /// Where it goes.
    pub endpoint: String,
    /// Attempts so far.
    pub attempts: u32,
    /// `evt_…` (sent as `Cardgate-Event-Id`).
    pub event_id: String,
    /// The JSON to send.
    pub body: String,
}

/// How a delivery attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver took it.
    Delivered {
        /// Unix milliseconds.
        at_ms: i64,
    },
    /// It did not; retried at `next_attempt_ms` unless `give_up`.
    Failed {
        /// Why.
        error: String,
        /// Unix milliseconds.
        next_attempt_ms: i64,
        /// No more attempts.
        give_up: bool,
    },
}

/// A card or cardholder control override as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ControlOverride {
    /// What it sets.
    #[serde(flatten)]
    pub spec: OverrideSpec,
    /// Unix seconds of the last change.
    pub updated: i64,
}

impl ApiObject for ControlOverride {
    const OBJECT: &'static str = "control_override";
}

/// A granted authorization allowance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    /// `allow_…`
    pub id: String,
    /// What retry it lets through.
    pub spec: AllowanceSpec,
    /// Unix seconds.
    pub created: i64,
    /// The retry must come before this.
    pub expires_at: i64,
    /// When a retry used it.
    pub used_at: Option<i64>,
    /// The authorization that used it.
    pub used_by: Option<String>,
}

impl ApiObject for Allowance {
    const OBJECT: &'static str = "authorization_allowance";
}

impl Serialize for Allowance {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Shown<'a> {
            id: &'a str,
            card: &'a str,
            merchant: &'a str,
            amount: i64,
            currency: &'a str,
            authorization: Option<&'a str>,
            created: i64,
            expires_at: i64,
            used_at: Option<i64>,
            used_by: Option<&'a str>,
        }
        Shown {
            id: &self.id,
            card: &self.spec.card,
            merchant: &self.spec.merchant,
            amount: self.spec.amount,
            currency: &self.spec.currency,
            authorization: self.spec.authorization.as_deref(),
            created: self.created,
            expires_at: self.expires_at,
            used_at: self.used_at,
            used_by: self.used_by.as_deref(),
        }
        .serialize(s)
    }
}

/// A rule-set change made by an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulesetChange {
    /// The new live version.
    pub version: String,
    /// The version it replaced.
    pub previous: String,
    /// Rules in the new set.
    pub rules: usize,
    /// The list an `update_list` replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
}

impl ApiObject for RulesetChange {
    const OBJECT: &'static str = "ruleset";
}

/// What an executed action returns: the API's answer to an ungated call, and the
/// `result` kept in an approved request.
#[derive(Debug, Clone, PartialEq)]
pub enum Executed {
    /// A publish or list change.
    Ruleset(RulesetChange),
    /// An override set (or cleared).
    Override(ControlOverride),
    /// An allowance granted.
    Allowance(Allowance),
    /// A key created. `secret` is set only when it is shown now (an ungated
    /// creation); an approved one showed it when the request opened.
    KeyCreated {
        /// The key.
        key: ApiKey,
        /// The plaintext, once.
        secret: Option<String>,
    },
    /// A key revoked.
    KeyRevoked {
        /// `key_…`
        id: String,
        /// Unix seconds.
        revoked_at: i64,
    },
    /// An approval rule created or changed.
    Rule(ApprovalRule),
    /// An approval rule deleted.
    RuleDeleted {
        /// `aprule_…`
        id: String,
    },
}

impl Serialize for Executed {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Granted<'a> {
            id: &'a str,
            object: &'static str,
            card: &'a str,
            merchant: &'a str,
            amount: i64,
            currency: &'a str,
            created: i64,
            expires_at: i64,
        }
        #[derive(Serialize)]
        struct Created<'a> {
            id: &'a str,
            object: &'static str,
            role: Role,
            name: Option<&'a str>,
            created: i64,
            #[serde(skip_serializing_if = "Option::is_none")]
            secret: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct Revoked<'a> {
            id: &'a str,
            object: &'static str,
            revoked_at: i64,
        }
        #[derive(Serialize)]
        struct Deleted<'a> {
            id: &'a str,
            object: &'static str,
            deleted: bool,
        }
        match self {
            Executed::Ruleset(r) => tagged(r).serialize(s),
            Executed::Override(o) => tagged(o).serialize(s),
            Executed::Allowance(a) => Granted {
                id: &a.id,
                object: Allowance::OBJECT,
                card: &a.spec.card,
                merchant: &a.spec.merchant,
                amount: a.spec.amount,
                currency: &a.spec.currency,
                created: a.created,
                expires_at: a.expires_at,
            }
            .serialize(s),
            Executed::KeyCreated { key, secret } => Created {
                id: &key.id,
                object: ApiKey::OBJECT,
                role: key.role,
                name: key.name.as_deref(),
                created: key.created,
                secret: secret.as_deref(),
            }
            .serialize(s),
            Executed::KeyRevoked { id, revoked_at } => Revoked {
                id,
                object: ApiKey::OBJECT,
                revoked_at: *revoked_at,
            }
            .serialize(s),
            Executed::Rule(r) => tagged(r).serialize(s),
            Executed::RuleDeleted { id } => Deleted {
                id,
                object: ApprovalRule::OBJECT,
                deleted: true,
            }
            .serialize(s),
        }
    }
}

/// List paging shared by the list endpoints.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// At most this many (1..=100, default 20).
    pub limit: Option<u32>,
    /// Objects after this id (newest first).
    pub starting_after: Option<String>,
}

impl Page {
    /// The effective page size.
    pub fn size(&self) -> usize {
        self.limit.unwrap_or(20).clamp(1, 100) as usize
    }
}

/// Filters for the approval-request list.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFilter {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this action.
    pub action: Option<ActionKind>,
}

/// Filters for the security history.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    /// Entry type, e.g. `approval_request.approved`.
    pub kind: Option<String>,
    /// Actor key id.
    pub actor: Option<String>,
    /// Object id.
    pub object: Option<String>,
    /// Created at or after (Unix seconds).
    pub since: Option<i64>,
    /// Created at or before.
    pub until: Option<i64>,
}

#[cfg(test)]
mod tests {
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
        };
        assert_eq!(
            show(&key),
            json!({"id": "key_1", "object": "api_key", "name": null, "role": "reviewer",
                   "created": 1, "created_by": "cli", "revoked_at": 2})
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
            json!({"id": "key_1", "object": "api_key", "role": "agent", "name": "bot", "created": 1})
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
}

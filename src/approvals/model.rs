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
    /// Unix seconds from which the key no longer authenticates (judged by the
    /// approvals clock); `None`: never expires.
    pub expires_at: Option<i64>,
}

impl ApiKey {
    /// Whether the key has expired at `now` (Unix seconds, the approvals clock).
    pub fn expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }
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

#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's `serialize_with` hands the field over by reference"
)]
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
    #[expect(
        clippy::struct_field_names,
        reason = "the local structs spell the API objects' wire fields (`created`, `revoked_at`, `deleted`)"
    )]
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
            expires_at: Option<i64>,
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
                expires_at: key.expires_at,
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
mod tests;

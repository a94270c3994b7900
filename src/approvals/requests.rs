//! The approval-request lifecycle: opening a request (for a gated call, or for a
//! declined authorization's review), and the one `transition` every later step
//! goes through: submit, cancel, deny, approve, the execution's result, expiry and
//! start-up recovery. A transition checks who may take the step and the status it
//! leaves, then commits the new state, its security-history row and its event in
//! one store transaction guarded on that status: of two concurrent steps the
//! second re-reads and is refused as if it had come after.

use std::sync::Arc;

use serde_json::{Value, json};

use super::events::Subject;
use super::model::{
    ApprovalRequest, Executed, Failure, Outcome, Page, RequestFilter, Review, Reviewer, RuleRef,
    Status, Transitions, Verdict,
};
use super::{
    Action, ActionKind, Actor, AllowanceSpec, ApprovalRule, Approvals, Change, Error, LiveRules,
    ROUNDS, Reviewers, Role, conflict, contended, history, invalid, not_found,
};

/// One step of a request's lifecycle.
#[derive(Debug)]
enum Step<'a> {
    /// The requester sends it to review, with a reason.
    Submit(Option<&'a str>),
    /// The requester withdraws it.
    Cancel,
    /// A reviewer denies it.
    Deny(Option<&'a str>),
    /// A reviewer approves it; the action runs next.
    Approve(Option<&'a str>),
    /// The action ran.
    Executed(&'a Result<Executed, Error>),
    /// Its time passed.
    Expire,
    /// The process stopped while the action ran.
    Interrupted,
}

/// Who may take a step.
enum Who {
    Requester,
    Reviewer,
    Cardgate,
}

impl Step<'_> {
    fn verb(&self) -> &'static str {
        match self {
            Step::Submit(_) => "submit",
            Step::Cancel => "cancel",
            Step::Deny(_) => "deny",
            Step::Approve(_) => "approve",
            Step::Executed(_) | Step::Interrupted => "finish",
            Step::Expire => "expire",
        }
    }

    fn who(&self) -> Who {
        match self {
            Step::Submit(_) | Step::Cancel => Who::Requester,
            Step::Deny(_) | Step::Approve(_) => Who::Reviewer,
            Step::Executed(_) | Step::Expire | Step::Interrupted => Who::Cardgate,
        }
    }

    /// The statuses it may leave.
    fn from(&self) -> &'static [Status] {
        match self {
            Step::Submit(_) => &[Status::Pending],
            Step::Cancel => &[Status::Pending, Status::RequiresReview],
            Step::Deny(_) | Step::Approve(_) => &[Status::RequiresReview],
            Step::Executed(_) | Step::Interrupted => &[Status::RequiresExecution],
            Step::Expire => &Status::EXPIRING,
        }
    }

    fn to(&self) -> Status {
        match self {
            Step::Submit(_) => Status::RequiresReview,
            Step::Cancel => Status::Canceled,
            Step::Deny(_) => Status::Rejected,
            Step::Approve(_) => Status::RequiresExecution,
            Step::Executed(Ok(_)) => Status::Succeeded,
            Step::Executed(Err(_)) | Step::Interrupted => Status::Failed,
            Step::Expire => Status::Expired,
        }
    }

    /// The history entry type and the details it records.
    fn history(&self) -> (&'static str, Value) {
        match self {
            Step::Submit(reason) => ("approval_request.submitted", json!({"reason": reason})),
            Step::Cancel => ("approval_request.canceled", json!({})),
            Step::Deny(reason) => ("approval_request.rejected", json!({"reason": reason})),
            Step::Approve(reason) => ("approval_request.approved", json!({"reason": reason})),
            Step::Executed(_) => (
                "approval_request.executed",
                json!({"status": self.to().as_str()}),
            ),
            Step::Expire => ("approval_request.expired", json!({})),
            Step::Interrupted => (
                "approval_request.executed",
                json!({"status": "failed", "interrupted": true}),
            ),
        }
    }

    /// The event type's last part (`v2.core.approval_request.<this>`).
    fn event(&self) -> &'static str {
        match self {
            Step::Submit(_) => "submitted",
            Step::Cancel => "canceled",
            Step::Deny(_) => "rejected",
            Step::Approve(_) => "approved",
            Step::Executed(Ok(_)) => "succeeded",
            Step::Executed(Err(_)) | Step::Interrupted => "failed",
            Step::Expire => "expired",
        }
    }
}

/// Refuses a status the step may not leave, naming the status and why.
fn expect_status(req: &ApprovalRequest, allowed: &[Status], verb: &str) -> Result<(), Error> {
    if allowed.contains(&req.status) {
        return Ok(());
    }
    let code = match req.status {
        Status::Expired => "request_expired",
        Status::Pending => "request_not_submitted",
        _ => "invalid_transition",
    };
    Err(conflict(
        code,
        format!(
            "cannot {verb} approval request {} in status {} (allowed from: {})",
            req.id,
            req.status.as_str(),
            allowed
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// Nobody reviews their own request; only admins and reviewers named by the
/// request (copied from its rule when it opened) review it.
fn may_review(req: &ApprovalRequest, actor: &Actor) -> Result<(), Error> {
    if req.requested_by.key_id == actor.key_id {
        return Err(Error::Forbidden {
            code: "self_approval",
            message: "nobody can review their own approval request".into(),
        });
    }
    if !matches!(actor.role, Role::Admin | Role::Reviewer)
        || !req.reviewers.allows(&actor.key_id, actor.role)
    {
        return Err(Error::Forbidden {
            code: "not_a_reviewer",
            message: "this key is not a reviewer of this approval request".into(),
        });
    }
    Ok(())
}

/// How far `independent_of_requester` follows `created_by`.
const MAX_CREATOR_CHAIN: usize = 64;

fn seconds(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Approvals {
    /// Opens a request. `submitted`: skip `pending` (cardgate opens authorization
    /// reviews itself, with nobody to submit them). `dedupe`: a key under which
    /// at most one open request may exist; an existing one is returned instead.
    pub(super) async fn open_request(
        &self,
        actor: &Actor,
        action: &Action,
        rule: Option<&ApprovalRule>,
        submitted: bool,
        dedupe: Option<&str>,
    ) -> Result<ApprovalRequest, Error> {
        let id = super::rand_id("apreq_")?;
        for _ in 0..ROUNDS {
            if let Some(d) = dedupe
                && let Some(existing) = self.store.open_request(d).await?
            {
                return Ok(existing);
            }
            let now = self.now();
            let (status, expiry) = if submitted {
                (Status::RequiresReview, self.settings.review_expiry)
            } else {
                (Status::Pending, self.settings.request_expiry)
            };
            let req = ApprovalRequest {
                id: id.clone(),
                action: action.clone(),
                status,
                requested_by: actor.clone(),
                rule: rule.map(|r| RuleRef {
                    id: r.id.clone(),
                    name: r.name.clone(),
                }),
                reviewers: rule
                    .map(|r| r.reviewers.clone())
                    .unwrap_or_else(Reviewers::default_set),
                reason: None,
                created: now,
                expires_at: now.saturating_add(seconds(expiry)),
                submitted_at: submitted.then_some(now),
                review: None,
                outcome: None,
                transitions: Transitions::default(),
                dedupe: dedupe.map(str::to_string),
            };
            let details = json!({"action": action.kind().as_str(), "rule": rule.map(|r| &r.id)});
            let changes = vec![
                Change::InsertRequest(req.clone()),
                history("approval_request.created", &actor.key_id, &id, now, details),
                self.emit(
                    "v2.core.approval_request.created",
                    Subject::Request(&req),
                    now,
                )?,
            ];
            if self.commit(changes).await? {
                return Ok(req);
            }
        }
        Err(contended())
    }

    /// Opens (or finds) the review request for a declined authorization. Called
    /// off the decision path, from a background task.
    pub async fn open_review(&self, spec: AllowanceSpec) -> Result<ApprovalRequest, Error> {
        let dedupe = format!(
            "review:{}:{}:{}:{}",
            spec.card, spec.merchant, spec.amount, spec.currency
        );
        let action = Action::AuthorizationAllowance(spec);
        action.validate().map_err(invalid)?;
        let rule = self.active_rule(ActionKind::AuthorizationAllowance).await?;
        self.open_request(
            &Actor::system(),
            &action,
            rule.as_ref(),
            true,
            Some(&dedupe),
        )
        .await
    }

    /// Queues a review for a declined authorization without blocking (the
    /// decision path calls this). False when the queue is full.
    pub fn queue_review(&self, spec: AllowanceSpec) -> bool {
        self.reviews_tx.try_send(spec).is_ok()
    }

    /// Opens queued reviews until the runtime stops. Call once.
    pub async fn run_reviews(self: Arc<Self>) {
        let rx = self
            .reviews_rx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut rx) = rx else { return };
        while let Some(spec) = rx.recv().await {
            let auth = spec.authorization.clone();
            match self.open_review(spec).await {
                Ok(req) => {
                    tracing::info!(request = %req.id, authorization = ?auth, "authorization review opened");
                }
                Err(e) => {
                    tracing::error!(error = ?e, authorization = ?auth, "opening an authorization review failed");
                }
            }
        }
    }

    async fn load(&self, id: &str) -> Result<ApprovalRequest, Error> {
        self.store
            .request(id)
            .await?
            .ok_or_else(|| not_found("approval_request", id))
    }

    /// One request; expires due requests first.
    pub async fn get_request(&self, id: &str) -> Result<ApprovalRequest, Error> {
        self.expire_due().await?;
        self.load(id).await
    }

    /// Requests, newest first, and whether more follow.
    pub async fn list_requests(
        &self,
        filter: RequestFilter,
        page: &Page,
    ) -> Result<(Vec<ApprovalRequest>, bool), Error> {
        self.expire_due().await?;
        Ok(self
            .store
            .requests(filter, page.starting_after.as_deref(), page.size())
            .await?)
    }

    /// Moves a pending request into the reviewers' queue, with the requester's reason.
    pub async fn submit(
        &self,
        actor: &Actor,
        id: &str,
        reason: Option<&str>,
    ) -> Result<ApprovalRequest, Error> {
        self.expire_due().await?;
        self.take(id, actor, &Step::Submit(reason)).await
    }

    /// Cancels a pending or submitted request (requester only).
    pub async fn cancel(&self, actor: &Actor, id: &str) -> Result<ApprovalRequest, Error> {
        self.expire_due().await?;
        self.take(id, actor, &Step::Cancel).await
    }

    /// Denies a submitted request.
    pub async fn deny(
        &self,
        actor: &Actor,
        id: &str,
        reason: Option<&str>,
    ) -> Result<ApprovalRequest, Error> {
        self.expire_due().await?;
        self.take(id, actor, &Step::Deny(reason)).await
    }

    /// Approves a submitted request and runs its action; the request ends
    /// `succeeded` or `failed`. Of concurrent approvals exactly one gets past the
    /// transition to `requires_execution`, so the action runs once.
    pub async fn approve(
        &self,
        actor: &Actor,
        id: &str,
        reason: Option<&str>,
        rules: &Arc<dyn LiveRules>,
    ) -> Result<ApprovalRequest, Error> {
        self.expire_due().await?;
        // Held before the approval commits, so no instant exists where another
        // replica's recovery sees `requires_execution` with nobody holding it.
        let hold = self.store.hold_execution(id).await?;
        let approved = match self.take(id, actor, &Step::Approve(reason)).await {
            Ok(approved) => approved,
            Err(e) => {
                hold.release().await;
                return Err(e);
            }
        };
        let result = self
            .execute_approved(&approved.requested_by, &approved.action, rules)
            .await;
        let done = self.take(id, actor, &Step::Executed(&result)).await;
        hold.release().await;
        done
    }

    async fn execute_approved(
        &self,
        requester: &Actor,
        action: &Action,
        rules: &Arc<dyn LiveRules>,
    ) -> Result<Executed, Error> {
        // The requester's authority is what runs: a key revoked while its request
        // waited no longer acts. (cardgate's own reviews have no key to revoke.)
        if !requester.is_builtin() {
            let live = self.store.key(&requester.key_id).await?;
            if live.is_none_or(|k| k.revoked_at.is_some()) {
                return Err(Error::Forbidden {
                    code: "requester_revoked",
                    message: "the requester's API key was revoked".into(),
                });
            }
        }
        self.precheck(action, rules).await?;
        self.execute(requester, action, rules).await
    }

    /// Takes `step` on request `id` for `actor`, re-reading and re-deciding when
    /// another change got there first.
    async fn take(
        &self,
        id: &str,
        actor: &Actor,
        step: &Step<'_>,
    ) -> Result<ApprovalRequest, Error> {
        for _ in 0..ROUNDS {
            let req = self.load(id).await?;
            if matches!(step.who(), Who::Reviewer) {
                self.independent_of_requester(&req, actor).await?;
            }
            let (next, changes) = self.transition(&req, actor, step, self.now())?;
            if self.commit(changes).await? {
                return Ok(next);
            }
        }
        Err(contended())
    }

    /// "Nobody reviews their own request" covers the keys a requester could mint:
    /// a reviewer key created by the requester, directly or through keys it created
    /// (the `created_by` chain up to the command line), and any key created after the
    /// request opened, are refused like the requester itself.
    async fn independent_of_requester(
        &self,
        req: &ApprovalRequest,
        actor: &Actor,
    ) -> Result<(), Error> {
        if actor.is_builtin() {
            return Ok(());
        }
        let refuse = |message: &str| {
            Err(Error::Forbidden {
                code: "self_approval",
                message: message.into(),
            })
        };
        let Some(key) = self.store.key(&actor.key_id).await? else {
            return Ok(());
        };
        if key.created > req.created {
            return refuse("a key created after the approval request opened cannot review it");
        }
        // Keys are created by earlier keys, so the chain ends; the bound is for a
        // hand-edited database.
        let mut creator = key.created_by;
        for _ in 0..MAX_CREATOR_CHAIN {
            if creator == req.requested_by.key_id {
                return refuse("a key created by the requester cannot review its request");
            }
            match self.store.key(&creator).await? {
                Some(parent) if parent.created_by != creator => {
                    creator = parent.created_by;
                }
                _ => break,
            }
        }
        Ok(())
    }

    /// The one transition every step goes through. Checks who may take `step` on
    /// `req` (the requester; a reviewer who is not the requester; or cardgate
    /// itself) and the status it leaves, and decides the request it leaves behind
    /// with the changes that store it (guarded on the status it was read in), its
    /// security-history row and its event — one transaction when committed.
    fn transition(
        &self,
        req: &ApprovalRequest,
        actor: &Actor,
        step: &Step<'_>,
        now: i64,
    ) -> Result<(ApprovalRequest, Vec<Change>), Error> {
        match step.who() {
            Who::Requester if req.requested_by.key_id != actor.key_id => {
                return Err(Error::Forbidden {
                    code: "not_requester",
                    message: format!("only the requester can {} an approval request", step.verb()),
                });
            }
            Who::Reviewer => may_review(req, actor)?,
            Who::Requester | Who::Cardgate => {}
        }
        expect_status(req, step.from(), step.verb())?;
        let mut next = req.clone();
        next.status = step.to();
        next.transitions.record(next.status, now);
        let review = |result, reason: Option<&str>| Review {
            result,
            reason: reason.map(str::to_string),
            reviewed_at: now,
            reviewed_by: Reviewer {
                id: actor.key_id.clone(),
                name: actor.name.clone(),
            },
        };
        match step {
            Step::Submit(reason) => {
                next.reason = reason.map(str::to_string);
                next.submitted_at = Some(now);
                next.expires_at = now.saturating_add(seconds(self.settings.review_expiry));
            }
            Step::Deny(reason) => next.review = Some(review(Verdict::Rejected, *reason)),
            Step::Approve(reason) => next.review = Some(review(Verdict::Approved, *reason)),
            Step::Executed(Ok(done)) => {
                next.outcome = Some(Outcome::Succeeded {
                    result: serde_json::to_value(done).unwrap_or_default(),
                });
            }
            Step::Executed(Err(e)) => next.outcome = Some(Outcome::Failed(e.failure())),
            Step::Interrupted => {
                next.outcome = Some(Outcome::Failed(Failure {
                    error_code: "interrupted".into(),
                    error_message: "cardgate stopped while running the action; it is not re-run, to avoid running it twice".into(),
                }));
            }
            Step::Cancel | Step::Expire => {}
        }
        let (kind, details) = step.history();
        let changes = vec![
            Change::UpdateRequest {
                from: req.status,
                request: next.clone(),
            },
            history(kind, &actor.key_id, &req.id, now, details),
            self.emit(
                &format!("v2.core.approval_request.{}", step.event()),
                Subject::Request(&next),
                now,
            )?,
        ];
        Ok((next, changes))
    }

    /// Takes `step` (expiry or recovery: cardgate's own) on every request it
    /// applies to, in one transaction. Returns how many moved.
    async fn sweep(&self, step: &Step<'_>) -> Result<usize, Error> {
        for _ in 0..ROUNDS {
            let now = self.now();
            // A plain read first, and a write only when something is found: taking
            // the database's write lock every second for nothing would make the
            // ledger's writer wait behind it.
            let reqs = match step {
                Step::Expire => self.store.lapsed_requests(&Status::EXPIRING, now).await?,
                _ => self.abandoned().await?,
            };
            if reqs.is_empty() {
                return Ok(0);
            }
            let mut changes = Vec::new();
            for req in &reqs {
                changes.extend(self.transition(req, &Actor::system(), step, now)?.1);
            }
            if self.commit(changes).await? {
                return Ok(reqs.len());
            }
        }
        Err(contended())
    }

    /// Requests in `requires_execution` that no live process is executing. Read
    /// before the store is asked: an execution holds its request from before its
    /// approval commits until its result does, so one found unheld after it was
    /// read in this status was abandoned — or has just finished, and then the
    /// transition's status guard finds it moved on.
    async fn abandoned(&self) -> Result<Vec<ApprovalRequest>, Error> {
        let mut abandoned = Vec::new();
        for req in self.store.requests_in(Status::RequiresExecution).await? {
            if self.store.execution_held(&req.id).await? {
                tracing::info!(request = %req.id, "approved action running elsewhere; not interrupted");
            } else {
                abandoned.push(req);
            }
        }
        Ok(abandoned)
    }

    /// Expires every open request past its `expires_at`; returns how many.
    pub async fn expire_due(&self) -> Result<usize, Error> {
        self.sweep(&Step::Expire).await
    }

    /// Marks executions cut short by a stop as failed, leaving alone those a live
    /// process (another replica) is running (see the module doc of
    /// [`crate::approvals`]).
    pub(super) async fn recover(&self) -> Result<(), Error> {
        self.sweep(&Step::Interrupted).await.map(|_| ())
    }
}

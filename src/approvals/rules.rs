//! Approval rules as the service keeps them: reads, and the changes the rule
//! actions make (create, update, activate, deactivate, delete), each one
//! transaction with its history row and its `v2.core.approval_rule.*` event.
//! What a rule *means* (conditions, reviewers) is `policy.rs`.

use serde_json::{Value, json};

use super::events::Subject;
use super::model::Executed;
use super::policy::Reviewers;
use super::{
    ActionKind, Actor, ApprovalRule, Approvals, Change, Error, ROUNDS, RuleInput, RuleUpdate,
    contended, history, invalid, not_found, shown,
};

/// One rule change, decided from the rule as read.
enum Edit<'a> {
    Update(&'a RuleUpdate),
    Activate(bool),
}

impl Approvals {
    /// The active rule for `kind`, if any.
    pub(super) async fn active_rule(
        &self,
        kind: ActionKind,
    ) -> Result<Option<ApprovalRule>, Error> {
        Ok(self.store.active_rule(kind).await?)
    }

    /// One approval rule.
    pub async fn get_rule(&self, id: &str) -> Result<ApprovalRule, Error> {
        self.store
            .rule(id)
            .await?
            .ok_or_else(|| not_found("approval_rule", id))
    }

    /// Approval rules, newest first; `action` and `active` filter.
    pub async fn list_rules(
        &self,
        action: Option<ActionKind>,
        active: Option<bool>,
    ) -> Result<Vec<ApprovalRule>, Error> {
        Ok(self.store.rules(action, active).await?)
    }

    /// Refuses when a rule other than `except` is active for `kind`: one active
    /// rule per action.
    pub(super) async fn no_other_active(
        &self,
        kind: ActionKind,
        except: Option<&str>,
    ) -> Result<(), Error> {
        if let Some(r) = self.active_rule(kind).await?
            && Some(r.id.as_str()) != except
        {
            return Err(super::conflict(
                "rule_already_active",
                format!(
                    "approval rule {} is already active for {}; deactivate it first (one active rule per action)",
                    r.id,
                    kind.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// Refuses reviewers naming keys that do not exist.
    pub(super) async fn reviewer_keys_exist(&self, r: &Reviewers) -> Result<(), Error> {
        for k in &r.keys {
            self.key_exists(k)
                .await
                .map_err(|_| invalid(format!("reviewers.keys: no API key {k:?}")))?;
        }
        Ok(())
    }

    /// The changes that record a rule change and announce it.
    fn rule_changes(
        &self,
        write: Change,
        what: &str,
        actor: &Actor,
        rule: &ApprovalRule,
        details: Value,
        now: i64,
    ) -> Result<Vec<Change>, Error> {
        Ok(vec![
            write,
            history(
                format!("approval_rule.{what}"),
                &actor.key_id,
                &rule.id,
                now,
                details,
            ),
            self.emit(
                &format!("v2.core.approval_rule.{what}"),
                Subject::Rule(rule),
                now,
            )?,
        ])
    }

    pub(super) async fn create_rule(
        &self,
        actor: &Actor,
        input: &RuleInput,
    ) -> Result<Executed, Error> {
        let kind = ActionKind::parse(&input.action).ok_or_else(|| invalid("action"))?;
        let now = self.now();
        let rule = ApprovalRule {
            id: super::rand_id("aprule_")?,
            action: kind,
            name: input.name.clone(),
            conditions: input.conditions.clone(),
            combinator: input.combinator,
            control: input.control,
            reviewers: input
                .reviewers
                .clone()
                .unwrap_or_else(Reviewers::default_set),
            active: input.active,
            created: now,
            updated: now,
        };
        for _ in 0..ROUNDS {
            if rule.active {
                self.no_other_active(kind, Some(&rule.id)).await?;
            }
            let changes = self.rule_changes(
                Change::InsertRule(rule.clone()),
                "created",
                actor,
                &rule,
                shown(&rule),
                now,
            )?;
            if self.commit(changes).await? {
                return Ok(Executed::Rule(rule));
            }
        }
        Err(contended())
    }

    pub(super) async fn update_rule(
        &self,
        actor: &Actor,
        id: &str,
        changes: &RuleUpdate,
    ) -> Result<Executed, Error> {
        self.edit_rule(actor, id, Edit::Update(changes)).await
    }

    pub(super) async fn activate_rule(
        &self,
        actor: &Actor,
        id: &str,
        on: bool,
    ) -> Result<Executed, Error> {
        self.edit_rule(actor, id, Edit::Activate(on)).await
    }

    async fn edit_rule(&self, actor: &Actor, id: &str, edit: Edit<'_>) -> Result<Executed, Error> {
        for _ in 0..ROUNDS {
            let before = self.get_rule(id).await?;
            let now = self.now();
            let mut after = before.clone();
            let (what, details) = match &edit {
                Edit::Update(c) => {
                    if let Some(n) = &c.name {
                        after.name = Some(n.clone());
                    }
                    if let Some(v) = &c.conditions {
                        after.conditions = v.clone();
                    }
                    if let Some(v) = c.combinator {
                        after.combinator = v;
                    }
                    if let Some(v) = c.control {
                        after.control = v;
                    }
                    if let Some(r) = &c.reviewers {
                        after.reviewers = r.clone();
                    }
                    ("updated", serde_json::to_value(c).unwrap_or_default())
                }
                Edit::Activate(on) => {
                    if *on {
                        self.no_other_active(before.action, Some(id)).await?;
                    }
                    after.active = *on;
                    let what = if *on { "activated" } else { "deactivated" };
                    (what, json!({}))
                }
            };
            after.updated = now;
            let write = Change::UpdateRule {
                before,
                after: after.clone(),
            };
            let changes = self.rule_changes(write, what, actor, &after, details, now)?;
            if self.commit(changes).await? {
                return Ok(Executed::Rule(after));
            }
        }
        Err(contended())
    }

    pub(super) async fn delete_rule(&self, actor: &Actor, id: &str) -> Result<Executed, Error> {
        for _ in 0..ROUNDS {
            let rule = self.get_rule(id).await?;
            let now = self.now();
            let changes = self.rule_changes(
                Change::DeleteRule(rule.clone()),
                "deleted",
                actor,
                &rule,
                shown(&rule),
                now,
            )?;
            if self.commit(changes).await? {
                return Ok(Executed::RuleDeleted { id: id.into() });
            }
        }
        Err(contended())
    }
}

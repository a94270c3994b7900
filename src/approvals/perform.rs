//! Sensitive actions: the gate ([`Approvals::perform`]: run now, open an approval
//! request, or refuse), the checks against stored state that make a doomed request
//! fail now rather than after its approval, and execution.

use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::json;

use super::model::{Executed, RulesetChange};
use super::{
    Action, ActionKind, Actor, Approvals, Control, Error, KeyExpiry, PendingKey, Role, action,
    history, invalid,
};
use crate::rules::RuleSet;
use crate::rules::published::Rulesets;

/// The live authorization rule set an approved publish or list change installs
/// into. A trait rather than `&ArcSwap` because compiling and writing the rules
/// file run on a blocking thread, which needs an owned handle to the set's owner.
pub trait LiveRules: Send + Sync + 'static {
    /// The swap cell holding the live set.
    fn live(&self) -> &ArcSwap<RuleSet>;
    /// Where published sets are kept, when the process has a store: a publish
    /// is appended there (and reaches the other replicas) before it is swapped
    /// in. `None`: the rules file is the only copy.
    fn published(&self) -> Option<&Rulesets> {
        None
    }
}

impl LiveRules for ArcSwap<RuleSet> {
    fn live(&self) -> &ArcSwap<RuleSet> {
        self
    }
}

/// Runs CPU or file work (compiling, fsync) off the runtime's worker threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Storage(format!("rule set work failed: {e}")))?
}

/// Checks a rule set compiles; a rejection counts like any other reload's.
fn compiles(src: &str) -> Result<(), Error> {
    RuleSet::from_toml_unmetered(src).map(|_| ()).map_err(|e| {
        crate::rules::reload::rejected::<RuleSet>("api", &e.to_string());
        Error::InvalidRules(e)
    })
}

/// The live source with list `name` replaced by `values`.
fn with_list(
    rules: &dyn LiveRules,
    name: &str,
    values: &[serde_json::Value],
) -> Result<String, Error> {
    action::replace_list(rules.live().load().source(), name, values).map_err(invalid)
}

impl Approvals {
    /// Performs `action` for `actor`: validates it, then either runs it, or (when
    /// an active approval rule matches) opens an approval request and answers
    /// [`Error::ApprovalRequired`], or refuses it with [`Error::Blocked`].
    #[expect(
        clippy::similar_names,
        reason = "`role` and `rule` are both the domain's words; renaming either would blur it"
    )]
    pub async fn perform(
        &self,
        actor: &Actor,
        mut action: Action,
        rules: &Arc<dyn LiveRules>,
    ) -> Result<Executed, Error> {
        action.validate().map_err(invalid)?;
        self.precheck(&action, rules).await?;
        let kind = action.kind();
        let facts = action.facts(actor.role, &actor.key_id);
        let rule = self.active_rule(kind).await?;
        if let Some(rule) = rule.filter(|r| r.matches(&facts)) {
            if rule.control == Control::Block {
                let now = self.now();
                let details = json!({"action": kind.as_str(), "rule": rule.id});
                self.commit_unguarded(vec![history(
                    "action.blocked",
                    &actor.key_id,
                    &rule.id,
                    now,
                    details,
                )])
                .await?;
                return Err(Error::Blocked {
                    action: kind,
                    rule: rule.id,
                });
            }
            // A gated key creation gets its secret now, shown only in this answer;
            // only its hash waits in the request.
            let mut pending_key = None;
            if let Action::CreateApiKey {
                role,
                name,
                expires_at,
                expires_in,
                ..
            } = action
            {
                let (id, secret, hash) = super::keys::fresh()?;
                pending_key = Some(PendingKey {
                    id: id.clone(),
                    secret,
                });
                action = Action::CreateApiKey {
                    role,
                    name,
                    pending: Some((id, hash)),
                    expires_at,
                    expires_in,
                };
            }
            let request = self
                .open_request(actor, &action, Some(&rule), false, None)
                .await?;
            return Err(Error::ApprovalRequired {
                request: Box::new(request),
                pending_key,
            });
        }
        if let Action::CreateApiKey {
            role,
            name,
            expires_at,
            expires_in,
            ..
        } = &action
        {
            let role = Role::parse(role).ok_or_else(|| invalid("role"))?;
            let expiry = KeyExpiry::from_fields(*expires_at, *expires_in).map_err(invalid)?;
            let (id, secret, hash) = super::keys::fresh()?;
            let key = self
                .insert_key(actor, id, role, name.clone(), hash, expiry)
                .await?;
            return Ok(Executed::KeyCreated {
                key,
                secret: Some(secret),
            });
        }
        self.execute(actor, &action, rules).await
    }

    /// Checks that depend on stored state, so a request that could never
    /// succeed is refused now rather than approved and failed later.
    pub(super) async fn precheck(
        &self,
        action: &Action,
        rules: &Arc<dyn LiveRules>,
    ) -> Result<(), Error> {
        match action {
            Action::PublishRuleset { source } => {
                let source = source.clone();
                blocking(move || compiles(&source)).await?;
            }
            Action::UpdateList { name, values } => {
                let (rules, name, values) = (rules.clone(), name.clone(), values.clone());
                blocking(move || compiles(&with_list(&*rules, &name, &values)?)).await?;
            }
            Action::RevokeApiKey { id } => {
                self.key_exists(id).await?;
            }
            Action::CreateApprovalRule(r) => {
                if let Some(rev) = &r.reviewers {
                    self.reviewer_keys_exist(rev).await?;
                }
                if r.active {
                    let kind = ActionKind::parse(&r.action).ok_or_else(|| invalid("action"))?;
                    self.no_other_active(kind, None).await?;
                }
            }
            Action::UpdateApprovalRule { id, changes } => {
                self.get_rule(id).await?;
                if let Some(rev) = &changes.reviewers {
                    self.reviewer_keys_exist(rev).await?;
                }
            }
            Action::ActivateApprovalRule { id } => {
                let r = self.get_rule(id).await?;
                self.no_other_active(r.action, Some(id)).await?;
            }
            Action::DeactivateApprovalRule { id } | Action::DeleteApprovalRule { id } => {
                self.get_rule(id).await?;
            }
            Action::CreateApiKey {
                expires_at,
                expires_in,
                ..
            } => {
                // Over the longest lifetime or already past: refused now, not
                // after a reviewer approved it.
                let expiry = KeyExpiry::from_fields(*expires_at, *expires_in).map_err(invalid)?;
                self.key_expiry(expiry)?;
            }
            Action::SetControlOverride(_) | Action::AuthorizationAllowance(_) => {}
        }
        Ok(())
    }

    /// Runs `action` now (it passed the gate, or its request was approved) and
    /// records it.
    pub(super) async fn execute(
        &self,
        actor: &Actor,
        action: &Action,
        rules: &Arc<dyn LiveRules>,
    ) -> Result<Executed, Error> {
        match action {
            Action::PublishRuleset { source } => {
                self.install(actor, source.clone(), None, rules, "api")
                    .await
            }
            Action::UpdateList { name, values } => {
                let (live, n, v) = (rules.clone(), name.clone(), values.clone());
                let src = blocking(move || with_list(&*live, &n, &v)).await?;
                self.install(actor, src, Some(name.clone()), rules, "api")
                    .await
            }
            Action::SetControlOverride(o) => self.set_override(actor, o).await,
            Action::AuthorizationAllowance(a) => self.grant_allowance(actor, a).await,
            Action::CreateApiKey {
                role,
                name,
                pending,
                expires_at,
                expires_in,
            } => {
                let role = Role::parse(role).ok_or_else(|| invalid("role"))?;
                let Some((id, hash)) = pending else {
                    return Err(invalid("key creation without a generated key"));
                };
                let expiry = KeyExpiry::from_fields(*expires_at, *expires_in).map_err(invalid)?;
                let key = self
                    .insert_key(actor, id.clone(), role, name.clone(), hash.clone(), expiry)
                    .await?;
                Ok(Executed::KeyCreated { key, secret: None })
            }
            Action::RevokeApiKey { id } => self.revoke_key(actor, id).await,
            Action::CreateApprovalRule(input) => self.create_rule(actor, input).await,
            Action::UpdateApprovalRule { id, changes } => {
                self.update_rule(actor, id, changes).await
            }
            Action::ActivateApprovalRule { id } => self.activate_rule(actor, id, true).await,
            Action::DeactivateApprovalRule { id } => self.activate_rule(actor, id, false).await,
            Action::DeleteApprovalRule { id } => self.delete_rule(actor, id).await,
        }
    }

    /// Records in the security history that the rules file seeded an empty
    /// store at start (the first published version).
    ///
    /// # Errors
    /// The store fails.
    pub async fn record_seed(
        &self,
        seeded: &crate::rules::published::Published,
        rules: usize,
    ) -> Result<(), Error> {
        let details = json!({"version": seeded.version, "rules": rules, "origin": "start"});
        self.commit_unguarded(vec![history(
            "ruleset.published",
            &seeded.actor,
            &seeded.version,
            seeded.published_at,
            details,
        )])
        .await
    }

    /// Publishes the rules file at the store's mirror path when its content is
    /// not the live set: the file watcher's and SIGHUP's path in store mode, the
    /// API's path with the file as actor (not gated: whoever can write the file
    /// or signal the process operates it). `Ok(None)`: nothing to publish.
    ///
    /// # Errors
    /// The file cannot be read, does not compile, or the store fails.
    pub async fn publish_file(
        &self,
        rules: &Arc<dyn LiveRules>,
        origin: &'static str,
    ) -> Result<Option<Executed>, Error> {
        let Some(published) = rules.published() else {
            return Ok(None);
        };
        let Some(path) = published.mirror().map(std::path::Path::to_path_buf) else {
            return Ok(None);
        };
        let read = {
            let rules = rules.clone();
            blocking(move || {
                rules
                    .published()
                    .map(|p| p.file_to_publish(rules.live()))
                    .transpose()
                    .map(Option::flatten)
                    .map_err(|e| {
                        crate::rules::reload::rejected::<RuleSet>(origin, &e.to_string());
                        invalid(e.to_string())
                    })
            })
            .await?
        };
        let Some(src) = read else {
            return Ok(None);
        };
        let actor = Actor {
            key_id: format!("file:{}", path.display()),
            role: Role::Admin,
            name: Some("rules file".into()),
        };
        self.install(&actor, src, None, rules, origin)
            .await
            .map(Some)
    }

    /// Makes `src` the live rule set and records it. With a store the set is
    /// published there first (the store is the truth; the rules file becomes its
    /// mirror); without one it is written to the rules file `serve` named, if any,
    /// so it survives a restart. `list` names the list an `update_list` replaced.
    async fn install(
        &self,
        actor: &Actor,
        src: String,
        list: Option<String>,
        rules: &Arc<dyn LiveRules>,
        origin: &'static str,
    ) -> Result<Executed, Error> {
        use crate::rules::reload::{self, PersistError};
        let previous = rules.live().load().version().to_string();
        let persist_error = |e| match e {
            PersistError::Invalid(e) => Error::InvalidRules(e),
            PersistError::Io(message) => Error::Storage(message),
        };
        let set = if let Some(published) = rules.published() {
            published
                .publish(rules.live(), src, self.now(), &actor.key_id, origin)
                .await
                .map_err(persist_error)?
        } else {
            let (live, file) = (rules.clone(), self.settings.rules_file.clone());
            blocking(move || match file {
                Some(path) => reload::persist_and_install(live.live(), &src, origin, &path)
                    .map_err(persist_error),
                None => reload::install(live.live(), &src, origin).map_err(Error::InvalidRules),
            })
            .await?
        };
        let now = self.now();
        let what = if list.is_some() {
            "list_updated"
        } else {
            "published"
        };
        let change = RulesetChange {
            version: set.version().to_string(),
            previous,
            rules: set.len(),
            list,
        };
        let details = json!({
            "version": change.version,
            "previous": change.previous,
            "rules": change.rules,
            "origin": origin,
        });
        self.commit_unguarded(vec![history(
            format!("ruleset.{what}"),
            &actor.key_id,
            set.version(),
            now,
            details,
        )])
        .await?;
        Ok(Executed::Ruleset(change))
    }
}

//! Two-party approvals for sensitive admin actions (DESIGN.md "Two-party
//! approvals"): API keys and roles, approval rules, the approval-request
//! lifecycle, the append-only security history, outgoing events (outbox), and the
//! two things approvals hand to the decision path: card/cardholder control
//! overrides and one-time authorization allowances.
//!
//! Knows SQL (its own tables in `cardgate.db`, created by migrations in
//! [`crate::store::MIGRATIONS`]) but not HTTP. One rusqlite connection behind a
//! mutex: approvals are low-volume, and serializing them is what makes every
//! state transition a check-and-set (two reviewers approving at once: the second
//! finds the request no longer awaiting review, so the action runs once).
//!
//! Lifecycle:
//! ```text
//! gated call ─► pending ─submit─► requires_review ─approve─► requires_execution ─► succeeded | failed
//!                  │                     ├─deny──► rejected
//!                  ├─cancel──────────────┴─cancel─► canceled
//!                  └─ past expires_at (either state) ─► expired
//! ```
//! A request found in `requires_execution` at start-up (the process stopped while
//! running it) is marked `failed`, never re-run: running an action twice is worse
//! than asking again.

pub mod action;
pub mod events;
pub mod keys;
pub mod policy;
pub mod settings;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::{Value, json};

use crate::decision::Controls;
use crate::rules::{RuleSet, RuleSetError};
pub use action::{Action, ActionKind, AllowanceSpec, OverrideSpec, RuleInput, RuleUpdate, Scope};
pub use keys::Role;
pub use policy::{ApprovalRule, Control, Reviewers};
pub use settings::Settings;

pub use crate::clock::Clock;

/// Who is calling: an authenticated key, or cardgate itself (`system`) or the
/// operator's CLI (`cli`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `key_…`, `system` or `cli`.
    pub key_id: String,
    /// The key's role (`system` and `cli` act as admin).
    pub role: Role,
    /// The key's label.
    pub name: Option<String>,
}

impl Actor {
    /// cardgate itself (authorization reviews).
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
}

/// Why a bearer key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// Not a cardgate key, or no key with that hash.
    Unknown,
    /// The key was revoked.
    Revoked,
    /// The database could not be read.
    Storage,
}

/// Why an approvals operation was refused.
#[derive(Debug)]
pub enum Error {
    /// The action needs approval; the (pending) request is attached.
    ApprovalRequired {
        /// The request, short form.
        request: Value,
        /// Anything only the requester may see (a pending key's secret).
        extra: Option<Value>,
    },
    /// A `block` rule refused the action.
    Blocked {
        /// The action.
        action: ActionKind,
        /// The rule's id.
        rule: String,
    },
    /// No such object.
    NotFound {
        /// Its kind.
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The state forbids it (transition, uniqueness).
    Conflict {
        /// Machine code.
        code: &'static str,
        /// What and why.
        message: String,
    },
    /// The caller may not do this.
    Forbidden {
        /// Machine code.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// Bad parameters.
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// A rule set that does not compile.
    InvalidRules(RuleSetError),
    /// SQLite failed.
    Storage(String),
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Storage(e.to_string())
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::Invalid {
        message: message.into(),
    }
}

fn conflict(code: &'static str, message: impl Into<String>) -> Error {
    Error::Conflict {
        code,
        message: message.into(),
    }
}

/// Request statuses.
pub mod status {
    /// Created by a gated call, not yet submitted.
    pub const PENDING: &str = "pending";
    /// Submitted; waiting for a reviewer.
    pub const REQUIRES_REVIEW: &str = "requires_review";
    /// Approved; the action is running.
    pub const REQUIRES_EXECUTION: &str = "requires_execution";
    /// The action ran.
    pub const SUCCEEDED: &str = "succeeded";
    /// The action failed (error kept).
    pub const FAILED: &str = "failed";
    /// A reviewer denied it.
    pub const REJECTED: &str = "rejected";
    /// The requester canceled it.
    pub const CANCELED: &str = "canceled";
    /// Lapsed.
    pub const EXPIRED: &str = "expired";
    /// Every status.
    pub const ALL: [&str; 8] = [
        PENDING,
        REQUIRES_REVIEW,
        REQUIRES_EXECUTION,
        SUCCEEDED,
        FAILED,
        REJECTED,
        CANCELED,
        EXPIRED,
    ];
}

/// What an authorization allowance matches: the retry must be for the same
/// card, merchant, amount and currency.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AllowanceKey {
    /// `ic_…`
    pub card: String,
    /// Merchant network id, else name.
    pub merchant: String,
    /// Minor units.
    pub amount: i64,
    /// Lowercase ISO code.
    pub currency: String,
}

#[derive(Debug, Clone)]
struct AllowanceEntry {
    id: String,
    expires_at: i64,
}

/// Control overrides by card and by cardholder, read by the decision path.
#[derive(Debug, Default)]
pub struct OverrideTable {
    card: HashMap<String, Arc<Controls>>,
    cardholder: HashMap<String, Arc<Controls>>,
}

impl OverrideTable {
    /// The override of card or cardholder `id`; looked up by `&str`, so the
    /// decision path reads it without building an owned key.
    pub fn get(&self, scope: Scope, id: &str) -> Option<&Controls> {
        let map = match scope {
            Scope::Card => &self.card,
            Scope::Cardholder => &self.cardholder,
        };
        map.get(id).map(|c| &**c)
    }

    /// True when no card or cardholder has an override.
    pub fn is_empty(&self) -> bool {
        self.card.is_empty() && self.cardholder.is_empty()
    }

    fn insert(&mut self, scope: Scope, id: String, controls: Controls) {
        let map = match scope {
            Scope::Card => &mut self.card,
            Scope::Cardholder => &mut self.cardholder,
        };
        map.insert(id, Arc::new(controls));
    }
}

/// List filters shared by the list endpoints.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// At most this many (1..=100, default 20).
    pub limit: Option<u32>,
    /// Objects after this id (newest first).
    pub starting_after: Option<String>,
}

impl Page {
    fn limit(&self) -> i64 {
        self.limit.unwrap_or(20).clamp(1, 100) as i64
    }
}

/// The approvals service.
pub struct Approvals {
    db: Mutex<Connection>,
    path: PathBuf,
    /// Validated settings.
    pub settings: Settings,
    clock: Clock,
    overrides: ArcSwap<OverrideTable>,
    allowances: DashMap<AllowanceKey, AllowanceEntry>,
    /// Woken when an event is queued, so delivery does not wait for its next poll.
    pub(crate) wake: tokio::sync::Notify,
    /// Reviews handed over by the decision path (which must not wait on SQLite).
    reviews_tx: tokio::sync::mpsc::Sender<AllowanceSpec>,
    reviews_rx: Mutex<Option<tokio::sync::mpsc::Receiver<AllowanceSpec>>>,
}

/// Review requests waiting to be opened, at most; past this the decision path
/// drops them (logged and counted): the authorization is declined either way.
pub const REVIEW_QUEUE: usize = 1024;

impl std::fmt::Debug for Approvals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approvals")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn rand_id(prefix: &str) -> Result<String, Error> {
    keys::random_hex(12)
        .map(|h| format!("{prefix}{h}"))
        .map_err(|e| Error::Storage(format!("no randomness: {e}")))
}

impl Approvals {
    /// Opens the approvals tables in `<dir>/cardgate.db` (migrating the file if
    /// needed), recovers interrupted executions and loads overrides and allowances.
    pub fn open(dir: &Path, settings: Settings) -> Result<Approvals, crate::store::StoreError> {
        let clock = Clock::with_offset(settings.clock_offset);
        Self::open_inner(dir, settings, clock, true)
    }

    /// Opens the tables for a command-line tool beside a possibly running server:
    /// no start-up recovery (a request the server is executing right now must not
    /// be marked interrupted).
    pub fn open_tool(dir: &Path) -> Result<Approvals, crate::store::StoreError> {
        Self::open_inner(dir, Settings::default(), Clock::default(), false)
    }

    /// [`Approvals::open`] with a given clock (tests).
    pub fn open_with_clock(
        dir: &Path,
        settings: Settings,
        clock: Clock,
    ) -> Result<Approvals, crate::store::StoreError> {
        Self::open_inner(dir, settings, clock, true)
    }

    fn open_inner(
        dir: &Path,
        settings: Settings,
        clock: Clock,
        recover: bool,
    ) -> Result<Approvals, crate::store::StoreError> {
        let (conn, path) = crate::store::open_for_approvals(dir)?;
        let (reviews_tx, reviews_rx) = tokio::sync::mpsc::channel(REVIEW_QUEUE);
        let a = Approvals {
            reviews_tx,
            reviews_rx: Mutex::new(Some(reviews_rx)),
            db: Mutex::new(conn),
            path: path.clone(),
            settings,
            clock,
            overrides: ArcSwap::from_pointee(OverrideTable::default()),
            allowances: DashMap::new(),
            wake: tokio::sync::Notify::new(),
        };
        let err = |e: Error| crate::store::StoreError::Sqlite {
            path: path.clone(),
            message: format!("{e:?}"),
        };
        if recover {
            a.recover().map_err(err)?;
        }
        a.reload_overrides().map_err(err)?;
        a.reload_allowances().map_err(err)?;
        Ok(a)
    }

    /// The approvals clock, Unix seconds.
    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A poisoned lock means a panic mid-operation; SQLite rolled the
        // transaction back, so the connection itself is still consistent.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one transaction, waking event delivery after commit.
    fn tx<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, Error>) -> Result<T, Error> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        drop(conn);
        self.wake.notify_one();
        Ok(out)
    }

    // === keys ===

    /// Creates a key; returns `(id, secret)`. The secret is shown once.
    pub fn create_key(
        &self,
        actor: &Actor,
        role: Role,
        name: Option<&str>,
    ) -> Result<(String, String), Error> {
        let secret = keys::generate().map_err(|e| Error::Storage(format!("no randomness: {e}")))?;
        let id = rand_id("key_")?;
        let hash = keys::hash(&secret);
        self.tx(|tx| insert_key(tx, &id, role, name, &hash, actor, self.now()))?;
        Ok((id, secret))
    }

    /// Authenticates a bearer secret.
    pub fn authenticate(&self, secret: &str) -> Result<Actor, AuthError> {
        if !keys::well_formed(secret) {
            return Err(AuthError::Unknown);
        }
        let hash = keys::hash(secret);
        let row = self
            .conn()
            .query_row(
                "SELECT id, role, name, hash, revoked_at FROM api_keys WHERE hash = ?1",
                params![hash],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                    ))
                },
            )
            .optional()
            .map_err(|_| AuthError::Storage)?;
        let Some((id, role, name, stored, revoked)) = row else {
            return Err(AuthError::Unknown);
        };
        if !keys::hashes_equal(&stored, &hash) {
            return Err(AuthError::Unknown);
        }
        if revoked.is_some() {
            return Err(AuthError::Revoked);
        }
        let role = Role::parse(&role).ok_or(AuthError::Unknown)?;
        Ok(Actor {
            key_id: id,
            role,
            name,
        })
    }

    /// Every key (never a secret or hash), newest first.
    pub fn list_keys(&self) -> Result<Vec<Value>, Error> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, name, role, created, created_by, revoked_at FROM api_keys ORDER BY rowid DESC",
        )?;
        let rows = st.query_map([], |r| {
            Ok(json!({
                "id": r.get::<_, String>(0)?,
                "object": "api_key",
                "name": r.get::<_, Option<String>>(1)?,
                "role": r.get::<_, String>(2)?,
                "created": r.get::<_, i64>(3)?,
                "created_by": r.get::<_, String>(4)?,
                "revoked_at": r.get::<_, Option<i64>>(5)?,
            }))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Revokes `id` from the command line (see README: the CLI is the operator's
    /// local escape hatch and is not gated, but it is recorded).
    pub fn revoke_key_cli(&self, id: &str) -> Result<(), Error> {
        self.tx(|tx| revoke_key(tx, id, &Actor::cli(), self.now()))
    }

    // === sensitive actions ===

    /// Performs `action` for `actor`: validates it, then either runs it, or (when
    /// an active approval rule matches) opens an approval request and answers
    /// [`Error::ApprovalRequired`], or refuses it with [`Error::Blocked`].
    pub fn perform(
        &self,
        actor: &Actor,
        mut action: Action,
        rules: &ArcSwap<RuleSet>,
    ) -> Result<Value, Error> {
        action.validate().map_err(invalid)?;
        self.precheck(&action, rules)?;
        let kind = action.kind();
        let facts = action.facts(actor.role, &actor.key_id);
        let rule = self.active_rule(kind)?;
        if let Some(rule) = rule.filter(|r| r.matches(&facts)) {
            if rule.control == Control::Block {
                self.tx(|tx| {
                    history(
                        tx,
                        "action.blocked",
                        &actor.key_id,
                        &rule.id,
                        self.now(),
                        json!({"action": kind.as_str(), "rule": rule.id}),
                    )
                })?;
                return Err(Error::Blocked {
                    action: kind,
                    rule: rule.id,
                });
            }
            // A gated key creation gets its secret now, shown only in this answer;
            // only its hash waits in the request.
            let mut extra = None;
            if let Action::CreateApiKey { .. } = action {
                let (id, secret) = self.pending_key()?;
                extra = Some(json!({"pending_api_key": {"id": id.0, "secret": secret,
                    "note": "usable only once the approval request succeeds"}}));
                action = with_pending_key(action, id);
            }
            let req = self.open_request(actor, &action, Some(&rule), false, None)?;
            return Err(Error::ApprovalRequired {
                request: short(&req),
                extra,
            });
        }
        if let Action::CreateApiKey { .. } = action {
            let (id, secret) = self.pending_key()?;
            action = with_pending_key(action, id);
            let mut out = self.execute(actor, &action, rules)?;
            out["secret"] = json!(secret);
            return Ok(out);
        }
        self.execute(actor, &action, rules)
    }

    fn pending_key(&self) -> Result<((String, String), String), Error> {
        let secret = keys::generate().map_err(|e| Error::Storage(format!("no randomness: {e}")))?;
        Ok(((rand_id("key_")?, keys::hash(&secret)), secret))
    }

    /// Checks that depend on stored state, so a request that could never
    /// succeed is refused now rather than approved and failed later.
    fn precheck(&self, action: &Action, rules: &ArcSwap<RuleSet>) -> Result<(), Error> {
        match action {
            Action::PublishRuleset { source } => {
                compiles(source)?;
            }
            Action::UpdateList { name, values } => {
                let src =
                    action::replace_list(rules.load().source(), name, values).map_err(invalid)?;
                compiles(&src)?;
            }
            Action::RevokeApiKey { id } => {
                self.key_exists(id)?;
            }
            Action::CreateApprovalRule(r) => {
                if let Some(rev) = &r.reviewers {
                    self.reviewer_keys_exist(rev)?;
                }
                if r.active {
                    let kind = ActionKind::parse(&r.action).ok_or_else(|| invalid("action"))?;
                    self.no_other_active(kind, None)?;
                }
            }
            Action::UpdateApprovalRule { id, changes } => {
                self.rule(id)?;
                if let Some(rev) = &changes.reviewers {
                    self.reviewer_keys_exist(rev)?;
                }
            }
            Action::ActivateApprovalRule { id } => {
                let r = self.rule(id)?;
                self.no_other_active(r.action, Some(id))?;
            }
            Action::DeactivateApprovalRule { id } | Action::DeleteApprovalRule { id } => {
                self.rule(id)?;
            }
            Action::SetControlOverride(_) | Action::AuthorizationAllowance(_) => {}
            Action::CreateApiKey { .. } => {}
        }
        Ok(())
    }

    fn key_exists(&self, id: &str) -> Result<(), Error> {
        let found: Option<i64> = self
            .conn()
            .query_row("SELECT 1 FROM api_keys WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()?;
        found.map(|_| ()).ok_or(Error::NotFound {
            what: "api_key",
            id: id.into(),
        })
    }

    fn reviewer_keys_exist(&self, r: &Reviewers) -> Result<(), Error> {
        for k in &r.keys {
            self.key_exists(k)
                .map_err(|_| invalid(format!("reviewers.keys: no API key {k:?}")))?;
        }
        Ok(())
    }

    fn no_other_active(&self, kind: ActionKind, except: Option<&str>) -> Result<(), Error> {
        if let Some(r) = self.active_rule(kind)?
            && Some(r.id.as_str()) != except
        {
            return Err(conflict(
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

    /// Runs `action` now (it passed the gate, or its request was approved) and
    /// records it. Returns the result object.
    fn execute(
        &self,
        actor: &Actor,
        action: &Action,
        rules: &ArcSwap<RuleSet>,
    ) -> Result<Value, Error> {
        let now = self.now();
        match action {
            Action::PublishRuleset { source } => {
                self.install(actor, source, "publish_ruleset", rules)
            }
            Action::UpdateList { name, values } => {
                let src =
                    action::replace_list(rules.load().source(), name, values).map_err(invalid)?;
                let mut out = self.install(actor, &src, "update_list", rules)?;
                out["list"] = json!(name);
                Ok(out)
            }
            Action::SetControlOverride(o) => {
                o.controls().map_err(invalid)?;
                self.tx(|tx| {
                    if o.is_empty() {
                        tx.execute(
                            "DELETE FROM control_overrides WHERE scope = ?1 AND id = ?2",
                            params![o.scope.as_str(), o.id],
                        )?;
                    } else {
                        tx.execute(
                            "INSERT INTO control_overrides (scope, id, body, updated) VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT (scope, id) DO UPDATE SET body = excluded.body, updated = excluded.updated",
                            params![o.scope.as_str(), o.id, to_json(o), now],
                        )?;
                    }
                    history(tx, "control_override.set", &actor.key_id, &o.id, now, json!(o))
                })?;
                self.reload_overrides()?;
                Ok(override_object(o, now))
            }
            Action::AuthorizationAllowance(a) => {
                let id = rand_id("allow_")?;
                let expires = now + self.settings.allowance_window.as_secs() as i64;
                self.tx(|tx| {
                    tx.execute(
                        "INSERT INTO allowances (id, card, merchant, amount, currency, body, created, expires_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                        params![id, a.card, a.merchant, a.amount, a.currency, to_json(a), now, expires],
                    )?;
                    history(tx, "authorization_allowance.created", &actor.key_id, &id, now, json!(a))
                })?;
                self.allowances.insert(
                    allowance_key(a),
                    AllowanceEntry {
                        id: id.clone(),
                        expires_at: expires,
                    },
                );
                Ok(
                    json!({"id": id, "object": "authorization_allowance", "card": a.card,
                    "merchant": a.merchant, "amount": a.amount, "currency": a.currency,
                    "created": now, "expires_at": expires}),
                )
            }
            Action::CreateApiKey {
                role,
                name,
                pending,
            } => {
                let role = Role::parse(role).ok_or_else(|| invalid("role"))?;
                let Some((id, hash)) = pending else {
                    return Err(invalid("key creation without a generated key"));
                };
                self.tx(|tx| insert_key(tx, id, role, name.as_deref(), hash, actor, now))?;
                Ok(
                    json!({"id": id, "object": "api_key", "role": role.as_str(), "name": name, "created": now}),
                )
            }
            Action::RevokeApiKey { id } => {
                self.tx(|tx| revoke_key(tx, id, actor, now))?;
                Ok(json!({"id": id, "object": "api_key", "revoked_at": now}))
            }
            Action::CreateApprovalRule(input) => {
                let id = rand_id("aprule_")?;
                let kind = ActionKind::parse(&input.action).ok_or_else(|| invalid("action"))?;
                let rule = ApprovalRule {
                    id: id.clone(),
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
                self.tx(|tx| {
                    if rule.active {
                        only_active(tx, kind, &id)?;
                    }
                    save_rule(tx, &rule, true)?;
                    history(
                        tx,
                        "approval_rule.created",
                        &actor.key_id,
                        &id,
                        now,
                        rule_object(&rule),
                    )?;
                    emit(
                        tx,
                        &self.settings,
                        "v2.core.approval_rule.created",
                        &id,
                        "approval_rule",
                        rule_object(&rule),
                        now,
                    )
                })?;
                Ok(rule_object(&rule))
            }
            Action::UpdateApprovalRule { id, changes } => {
                let rule = self.tx(|tx| {
                    let mut rule = load_rule(tx, id)?;
                    if let Some(n) = &changes.name {
                        rule.name = Some(n.clone());
                    }
                    if let Some(c) = &changes.conditions {
                        rule.conditions = c.clone();
                    }
                    if let Some(c) = changes.combinator {
                        rule.combinator = c;
                    }
                    if let Some(c) = changes.control {
                        rule.control = c;
                    }
                    if let Some(r) = &changes.reviewers {
                        rule.reviewers = r.clone();
                    }
                    rule.updated = now;
                    save_rule(tx, &rule, false)?;
                    history(
                        tx,
                        "approval_rule.updated",
                        &actor.key_id,
                        id,
                        now,
                        json!(changes),
                    )?;
                    emit(
                        tx,
                        &self.settings,
                        "v2.core.approval_rule.updated",
                        id,
                        "approval_rule",
                        rule_object(&rule),
                        now,
                    )?;
                    Ok(rule)
                })?;
                Ok(rule_object(&rule))
            }
            Action::ActivateApprovalRule { id } | Action::DeactivateApprovalRule { id } => {
                let on = matches!(action, Action::ActivateApprovalRule { .. });
                let rule = self.tx(|tx| {
                    let mut rule = load_rule(tx, id)?;
                    if on {
                        only_active(tx, rule.action, id)?;
                    }
                    rule.active = on;
                    rule.updated = now;
                    save_rule(tx, &rule, false)?;
                    let what = if on { "activated" } else { "deactivated" };
                    history(
                        tx,
                        &format!("approval_rule.{what}"),
                        &actor.key_id,
                        id,
                        now,
                        json!({}),
                    )?;
                    emit(
                        tx,
                        &self.settings,
                        &format!("v2.core.approval_rule.{what}"),
                        id,
                        "approval_rule",
                        rule_object(&rule),
                        now,
                    )?;
                    Ok(rule)
                })?;
                Ok(rule_object(&rule))
            }
            Action::DeleteApprovalRule { id } => {
                self.tx(|tx| {
                    let rule = load_rule(tx, id)?;
                    tx.execute("DELETE FROM approval_rules WHERE id = ?1", params![id])?;
                    history(
                        tx,
                        "approval_rule.deleted",
                        &actor.key_id,
                        id,
                        now,
                        rule_object(&rule),
                    )?;
                    emit(
                        tx,
                        &self.settings,
                        "v2.core.approval_rule.deleted",
                        id,
                        "approval_rule",
                        rule_object(&rule),
                        now,
                    )
                })?;
                Ok(json!({"id": id, "object": "approval_rule", "deleted": true}))
            }
        }
    }

    fn install(
        &self,
        actor: &Actor,
        src: &str,
        what: &'static str,
        rules: &ArcSwap<RuleSet>,
    ) -> Result<Value, Error> {
        let previous = rules.load().version().to_string();
        use crate::rules::reload::{self, PersistError};
        let set = match &self.settings.rules_file {
            Some(path) => {
                reload::persist_and_install(rules, src, "api", path).map_err(|e| match e {
                    PersistError::Invalid(e) => Error::InvalidRules(e),
                    PersistError::Io(message) => Error::Storage(message),
                })?
            }
            None => reload::install(rules, src, "api").map_err(Error::InvalidRules)?,
        };
        let now = self.now();
        self.tx(|tx| {
            history(
                tx,
                &format!(
                    "ruleset.{}",
                    if what == "update_list" {
                        "list_updated"
                    } else {
                        "published"
                    }
                ),
                &actor.key_id,
                set.version(),
                now,
                json!({"version": set.version(), "previous": previous, "rules": set.len()}),
            )
        })?;
        Ok(
            json!({"object": "ruleset", "version": set.version(), "previous": previous, "rules": set.len()}),
        )
    }

    // === approval rules (reads) ===

    fn active_rule(&self, kind: ActionKind) -> Result<Option<ApprovalRule>, Error> {
        let body: Option<String> = self
            .conn()
            .query_row(
                "SELECT body FROM approval_rules WHERE action = ?1 AND active = 1",
                params![kind.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        body.map(|b| serde_json::from_str(&b).map_err(|e| Error::Storage(e.to_string())))
            .transpose()
    }

    fn rule(&self, id: &str) -> Result<ApprovalRule, Error> {
        load_rule(&self.conn(), id)
    }

    /// One approval rule as an API object.
    pub fn get_rule(&self, id: &str) -> Result<Value, Error> {
        self.rule(id).map(|r| rule_object(&r))
    }

    /// Approval rules, newest first; `action` and `active` filter.
    pub fn list_rules(
        &self,
        action: Option<ActionKind>,
        active: Option<bool>,
    ) -> Result<Vec<Value>, Error> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT body FROM approval_rules
             WHERE (?1 IS NULL OR action = ?1) AND (?2 IS NULL OR active = ?2)
             ORDER BY rowid DESC",
        )?;
        let rows = st.query_map(params![action.map(|a| a.as_str()), active], |r| {
            r.get::<_, String>(0)
        })?;
        let mut out = Vec::new();
        for body in rows {
            let rule: ApprovalRule =
                serde_json::from_str(&body?).map_err(|e| Error::Storage(e.to_string()))?;
            out.push(rule_object(&rule));
        }
        Ok(out)
    }

    // === approval requests ===

    /// Opens a request. `submitted`: skip `pending` (cardgate opens authorization
    /// reviews itself, with nobody to submit them). `dedupe`: a key under which
    /// at most one open request may exist; an existing one is returned instead.
    fn open_request(
        &self,
        actor: &Actor,
        action: &Action,
        rule: Option<&ApprovalRule>,
        submitted: bool,
        dedupe: Option<&str>,
    ) -> Result<Value, Error> {
        let id = rand_id("apreq_")?;
        let now = self.now();
        let (st, expires) = if submitted {
            (
                status::REQUIRES_REVIEW,
                now + self.settings.review_expiry.as_secs() as i64,
            )
        } else {
            (
                status::PENDING,
                now + self.settings.request_expiry.as_secs() as i64,
            )
        };
        let reviewers = rule
            .map(|r| r.reviewers.clone())
            .unwrap_or_else(Reviewers::default_set);
        self.tx(|tx| {
            if let Some(d) = dedupe {
                let existing: Option<String> = tx
                    .query_row(
                        "SELECT id FROM approval_requests WHERE dedupe = ?1
                         AND status IN ('pending', 'requires_review', 'requires_execution')",
                        params![d],
                        |r| r.get(0),
                    )
                    .optional()?;
                if let Some(existing) = existing {
                    return load_request(tx, &existing);
                }
            }
            tx.execute(
                "INSERT INTO approval_requests
                 (id, action, params, status, requested_by, requester_role, requester_name,
                  rule_id, rule_name, reviewers, created, expires_at, submitted_at, dedupe)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    id,
                    action.kind().as_str(),
                    to_json(action),
                    st,
                    actor.key_id,
                    actor.role.as_str(),
                    actor.name,
                    rule.map(|r| r.id.clone()),
                    rule.and_then(|r| r.name.clone()),
                    to_json(&reviewers),
                    now,
                    expires,
                    submitted.then_some(now),
                    dedupe,
                ],
            )?;
            let req = load_request(tx, &id)?;
            history(
                tx,
                "approval_request.created",
                &actor.key_id,
                &id,
                now,
                json!({"action": action.kind().as_str(), "rule": rule.map(|r| r.id.clone())}),
            )?;
            emit(
                tx,
                &self.settings,
                "v2.core.approval_request.created",
                &id,
                "approval_request",
                req.clone(),
                now,
            )?;
            Ok(req)
        })
    }

    /// Opens (or finds) the review request for a declined authorization. Called
    /// off the decision path, from a background task.
    pub fn open_review(&self, spec: AllowanceSpec) -> Result<Value, Error> {
        let dedupe = format!(
            "review:{}:{}:{}:{}",
            spec.card, spec.merchant, spec.amount, spec.currency
        );
        let action = Action::AuthorizationAllowance(spec);
        action.validate().map_err(invalid)?;
        let rule = self.active_rule(ActionKind::AuthorizationAllowance)?;
        self.open_request(
            &Actor::system(),
            &action,
            rule.as_ref(),
            true,
            Some(&dedupe),
        )
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
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(mut rx) = rx else { return };
        while let Some(spec) = rx.recv().await {
            let a = self.clone();
            let auth = spec.authorization.clone();
            match tokio::task::spawn_blocking(move || a.open_review(spec)).await {
                Ok(Ok(req)) => {
                    tracing::info!(request = %req["id"], authorization = ?auth, "authorization review opened")
                }
                Ok(Err(e)) => {
                    tracing::error!(error = ?e, authorization = ?auth, "opening an authorization review failed")
                }
                Err(_) => {
                    tracing::error!(authorization = ?auth, "opening an authorization review panicked")
                }
            }
        }
    }

    /// One request; expires it first if its time has passed.
    pub fn get_request(&self, id: &str) -> Result<Value, Error> {
        self.expire_due()?;
        let conn = self.conn();
        load_request(&conn, id)
    }

    /// Requests, newest first.
    pub fn list_requests(
        &self,
        status: Option<&str>,
        action: Option<ActionKind>,
        page: &Page,
    ) -> Result<(Vec<Value>, bool), Error> {
        self.expire_due()?;
        let conn = self.conn();
        let after = cursor(&conn, "approval_requests", page.starting_after.as_deref())?;
        let mut st = conn.prepare(
            "SELECT id FROM approval_requests
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR action = ?2) AND rowid < ?3
             ORDER BY rowid DESC LIMIT ?4",
        )?;
        let ids: Vec<String> = st
            .query_map(
                params![status, action.map(|a| a.as_str()), after, page.limit() + 1],
                |r| r.get(0),
            )?
            .collect::<Result<_, _>>()?;
        let more = ids.len() as i64 > page.limit();
        let mut out = Vec::new();
        for id in ids.iter().take(page.limit() as usize) {
            out.push(load_request(&conn, id)?);
        }
        Ok((out, more))
    }

    /// Moves a pending request into the reviewers' queue, with the requester's reason.
    pub fn submit(&self, actor: &Actor, id: &str, reason: Option<&str>) -> Result<Value, Error> {
        self.expire_due()?;
        let now = self.now();
        self.tx(|tx| {
            let req = load_request(tx, id)?;
            if req["requested_by"]["id"] != actor.key_id {
                return Err(Error::Forbidden {
                    code: "not_requester",
                    message: "only the requester can submit an approval request".into(),
                });
            }
            expect_status(&req, &[status::PENDING], "submit")?;
            let expires = now + self.settings.review_expiry.as_secs() as i64;
            tx.execute(
                "UPDATE approval_requests SET status = 'requires_review', reason = ?2,
                 submitted_at = ?3, expires_at = ?4 WHERE id = ?1 AND status = 'pending'",
                params![id, reason, now, expires],
            )?;
            history(
                tx,
                "approval_request.submitted",
                &actor.key_id,
                id,
                now,
                json!({"reason": reason}),
            )?;
            let req = load_request(tx, id)?;
            emit(
                tx,
                &self.settings,
                "v2.core.approval_request.submitted",
                id,
                "approval_request",
                req.clone(),
                now,
            )?;
            Ok(req)
        })
    }

    /// Cancels a pending or submitted request (requester only).
    pub fn cancel(&self, actor: &Actor, id: &str) -> Result<Value, Error> {
        self.expire_due()?;
        let now = self.now();
        self.tx(|tx| {
            let req = load_request(tx, id)?;
            if req["requested_by"]["id"] != actor.key_id {
                return Err(Error::Forbidden {
                    code: "not_requester",
                    message: "only the requester can cancel an approval request".into(),
                });
            }
            expect_status(&req, &[status::PENDING, status::REQUIRES_REVIEW], "cancel")?;
            set_status(tx, id, status::CANCELED, now)?;
            history(
                tx,
                "approval_request.canceled",
                &actor.key_id,
                id,
                now,
                json!({}),
            )?;
            let req = load_request(tx, id)?;
            emit(
                tx,
                &self.settings,
                "v2.core.approval_request.canceled",
                id,
                "approval_request",
                req.clone(),
                now,
            )?;
            Ok(req)
        })
    }

    /// Denies a submitted request.
    pub fn deny(&self, actor: &Actor, id: &str, reason: Option<&str>) -> Result<Value, Error> {
        self.expire_due()?;
        let now = self.now();
        self.tx(|tx| {
            let req = load_request(tx, id)?;
            may_review(&req, actor)?;
            expect_status(&req, &[status::REQUIRES_REVIEW], "deny")?;
            set_status(tx, id, status::REJECTED, now)?;
            set_review(tx, id, "rejected", reason, actor, now)?;
            history(
                tx,
                "approval_request.rejected",
                &actor.key_id,
                id,
                now,
                json!({"reason": reason}),
            )?;
            let req = load_request(tx, id)?;
            emit(
                tx,
                &self.settings,
                "v2.core.approval_request.rejected",
                id,
                "approval_request",
                req.clone(),
                now,
            )?;
            Ok(req)
        })
    }

    /// Approves a submitted request and runs its action; the request ends
    /// `succeeded` or `failed`. Exactly one of concurrent approvals gets here
    /// past the status check (the check and the update share one transaction).
    pub fn approve(
        &self,
        actor: &Actor,
        id: &str,
        reason: Option<&str>,
        rules: &ArcSwap<RuleSet>,
    ) -> Result<Value, Error> {
        self.expire_due()?;
        let now = self.now();
        let (action, requester) = self.tx(|tx| {
            let req = load_request(tx, id)?;
            may_review(&req, actor)?;
            expect_status(&req, &[status::REQUIRES_REVIEW], "approve")?;
            let changed = tx.execute(
                "UPDATE approval_requests SET status = 'requires_execution'
                 WHERE id = ?1 AND status = 'requires_review'",
                params![id],
            )?;
            if changed != 1 {
                return Err(conflict("invalid_transition", "the request is no longer awaiting review"));
            }
            set_review(tx, id, "approved", reason, actor, now)?;
            stamp(tx, id, "approved_at", now)?;
            history(tx, "approval_request.approved", &actor.key_id, id, now, json!({"reason": reason}))?;
            let req = load_request(tx, id)?;
            emit(tx, &self.settings, "v2.core.approval_request.approved", id, "approval_request", req, now)?;
            let params: String = tx.query_row(
                "SELECT params FROM approval_requests WHERE id = ?1", params![id], |r| r.get(0))?;
            let who: (String, String, Option<String>) = tx.query_row(
                "SELECT requested_by, requester_role, requester_name FROM approval_requests WHERE id = ?1",
                params![id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            let action: Action = serde_json::from_str(&params).map_err(|e| Error::Storage(e.to_string()))?;
            Ok((action, who))
        })?;
        let requester = Actor {
            key_id: requester.0,
            role: Role::parse(&requester.1).unwrap_or(Role::Agent),
            name: requester.2,
        };
        let result = self.execute_approved(&requester, &action, rules);
        let now = self.now();
        self.tx(|tx| {
            let (st, ty) = match &result {
                Ok(v) => {
                    tx.execute(
                        "UPDATE approval_requests SET status = 'succeeded', result = ?2 WHERE id = ?1",
                        params![id, v.to_string()],
                    )?;
                    (status::SUCCEEDED, "succeeded")
                }
                Err(e) => {
                    let (code, msg) = error_parts(e);
                    tx.execute(
                        "UPDATE approval_requests SET status = 'failed', error = ?2 WHERE id = ?1",
                        params![id, json!({"error_code": code, "error_message": msg}).to_string()],
                    )?;
                    (status::FAILED, "failed")
                }
            };
            stamp(tx, id, &format!("{st}_at"), now)?;
            history(tx, "approval_request.executed", &actor.key_id, id, now, json!({"status": st}))?;
            let req = load_request(tx, id)?;
            emit(tx, &self.settings, &format!("v2.core.approval_request.{ty}"), id, "approval_request", req.clone(), now)?;
            Ok(req)
        })
    }

    fn execute_approved(
        &self,
        requester: &Actor,
        action: &Action,
        rules: &ArcSwap<RuleSet>,
    ) -> Result<Value, Error> {
        // The requester's authority is what runs: a key revoked while its request
        // waited no longer acts. (cardgate's own reviews have no key to revoke.)
        if requester.key_id != "system" && requester.key_id != "cli" {
            let revoked: Option<Option<i64>> = self
                .conn()
                .query_row(
                    "SELECT revoked_at FROM api_keys WHERE id = ?1",
                    params![requester.key_id],
                    |r| r.get(0),
                )
                .optional()?;
            if !matches!(revoked, Some(None)) {
                return Err(Error::Forbidden {
                    code: "requester_revoked",
                    message: "the requester's API key was revoked".into(),
                });
            }
        }
        self.precheck(action, rules)?;
        self.execute(requester, action, rules)
    }

    /// Expires every open request past its `expires_at`; returns how many.
    pub fn expire_due(&self) -> Result<usize, Error> {
        let now = self.now();
        // A plain read first: taking SQLite's write lock every second for nothing
        // would make the ledger's writer wait behind it.
        let due: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM approval_requests
             WHERE status IN ('pending', 'requires_review') AND expires_at <= ?1",
            params![now],
            |r| r.get(0),
        )?;
        if due == 0 {
            return Ok(0);
        }
        self.tx(|tx| {
            let ids: Vec<String> = {
                let mut st = tx.prepare(
                    "SELECT id FROM approval_requests
                     WHERE status IN ('pending', 'requires_review') AND expires_at <= ?1",
                )?;
                st.query_map(params![now], |r| r.get(0))?
                    .collect::<Result<_, _>>()?
            };
            for id in &ids {
                set_status(tx, id, status::EXPIRED, now)?;
                history(tx, "approval_request.expired", "system", id, now, json!({}))?;
                let req = load_request(tx, id)?;
                emit(
                    tx,
                    &self.settings,
                    "v2.core.approval_request.expired",
                    id,
                    "approval_request",
                    req,
                    now,
                )?;
            }
            Ok(ids.len())
        })
    }

    /// Marks executions cut short by a stop as failed (see the module doc).
    fn recover(&self) -> Result<(), Error> {
        let now = self.now();
        self.tx(|tx| {
            let ids: Vec<String> = {
                let mut st = tx.prepare(
                    "SELECT id FROM approval_requests WHERE status = 'requires_execution'",
                )?;
                st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
            };
            for id in &ids {
                tx.execute(
                    "UPDATE approval_requests SET status = 'failed', error = ?2 WHERE id = ?1",
                    params![id, json!({"error_code": "interrupted",
                        "error_message": "cardgate stopped while running the action; it is not re-run, to avoid running it twice"}).to_string()],
                )?;
                stamp(tx, id, "failed_at", now)?;
                history(tx, "approval_request.executed", "system", id, now, json!({"status": "failed", "interrupted": true}))?;
                let req = load_request(tx, id)?;
                emit(tx, &self.settings, "v2.core.approval_request.failed", id, "approval_request", req, now)?;
            }
            Ok(())
        })
    }

    // === security history and events ===

    /// Security history, newest first, filtered by type, actor, object and time.
    pub fn history(&self, f: &HistoryFilter, page: &Page) -> Result<(Vec<Value>, bool), Error> {
        let conn = self.conn();
        let after: i64 = match page.starting_after.as_deref() {
            None => i64::MAX,
            Some(s) => s
                .strip_prefix("sh_")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| invalid(format!("starting_after {s:?} is not a history id")))?,
        };
        let mut st = conn.prepare(
            "SELECT id, type, actor, object_id, created, details FROM security_history
             WHERE (?1 IS NULL OR type = ?1) AND (?2 IS NULL OR actor = ?2)
               AND (?3 IS NULL OR object_id = ?3) AND (?4 IS NULL OR created >= ?4)
               AND (?5 IS NULL OR created <= ?5) AND id < ?6
             ORDER BY id DESC LIMIT ?7",
        )?;
        let rows: Vec<Value> = st
            .query_map(
                params![
                    f.kind,
                    f.actor,
                    f.object,
                    f.since,
                    f.until,
                    after,
                    page.limit() + 1
                ],
                |r| {
                    let details: String = r.get(5)?;
                    Ok(json!({
                        "id": format!("sh_{}", r.get::<_, i64>(0)?),
                        "object": "security_history_entry",
                        "type": r.get::<_, String>(1)?,
                        "actor": r.get::<_, String>(2)?,
                        "object_id": r.get::<_, String>(3)?,
                        "created": r.get::<_, i64>(4)?,
                        "details": serde_json::from_str::<Value>(&details).unwrap_or(Value::Null),
                    }))
                },
            )?
            .collect::<Result<_, _>>()?;
        let more = rows.len() as i64 > page.limit();
        Ok((rows.into_iter().take(page.limit() as usize).collect(), more))
    }

    /// Events, newest first, with their delivery state.
    pub fn events(&self, kind: Option<&str>, page: &Page) -> Result<(Vec<Value>, bool), Error> {
        let conn = self.conn();
        let after = cursor(&conn, "events", page.starting_after.as_deref())?;
        let mut st = conn.prepare(
            "SELECT e.body,
                    (SELECT COUNT(*) FROM outbox o WHERE o.event_id = e.id AND o.delivered_ms IS NOT NULL),
                    (SELECT COUNT(*) FROM outbox o WHERE o.event_id = e.id AND o.delivered_ms IS NULL AND o.failed = 0),
                    (SELECT COUNT(*) FROM outbox o WHERE o.event_id = e.id AND o.failed = 1)
             FROM events e WHERE (?1 IS NULL OR e.type = ?1) AND e.rowid < ?2
             ORDER BY e.rowid DESC LIMIT ?3",
        )?;
        let rows: Vec<Value> = st
            .query_map(params![kind, after, page.limit() + 1], |r| {
                let mut v: Value =
                    serde_json::from_str(&r.get::<_, String>(0)?).unwrap_or(Value::Null);
                v["delivery"] = json!({
                    "delivered": r.get::<_, i64>(1)?,
                    "pending": r.get::<_, i64>(2)?,
                    "failed": r.get::<_, i64>(3)?,
                });
                Ok(v)
            })?
            .collect::<Result<_, _>>()?;
        let more = rows.len() as i64 > page.limit();
        Ok((rows.into_iter().take(page.limit() as usize).collect(), more))
    }

    // === overrides and allowances (read by the decision path) ===

    fn reload_overrides(&self) -> Result<(), Error> {
        let conn = self.conn();
        let mut st = conn.prepare("SELECT body FROM control_overrides")?;
        let mut table = OverrideTable::default();
        for body in st.query_map([], |r| r.get::<_, String>(0))? {
            let spec: OverrideSpec =
                serde_json::from_str(&body?).map_err(|e| Error::Storage(e.to_string()))?;
            let controls = spec.controls().map_err(Error::Storage)?;
            table.insert(spec.scope, spec.id, controls);
        }
        self.overrides.store(Arc::new(table));
        Ok(())
    }

    /// The override table, one atomic load (the decision path's read).
    pub fn overrides(&self) -> arc_swap::Guard<Arc<OverrideTable>> {
        self.overrides.load()
    }

    /// Every stored override.
    pub fn list_overrides(&self) -> Result<Vec<Value>, Error> {
        let conn = self.conn();
        let mut st =
            conn.prepare("SELECT body, updated FROM control_overrides ORDER BY scope, id")?;
        let rows = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (body, updated) = row?;
            let spec: OverrideSpec =
                serde_json::from_str(&body).map_err(|e| Error::Storage(e.to_string()))?;
            out.push(override_object(&spec, updated));
        }
        Ok(out)
    }

    fn reload_allowances(&self) -> Result<(), Error> {
        let conn = self.conn();
        let now = self.now();
        let mut st = conn.prepare(
            "SELECT id, card, merchant, amount, currency, expires_at FROM allowances
             WHERE used_at IS NULL AND expires_at > ?1",
        )?;
        let rows = st.query_map(params![now], |r| {
            Ok((
                AllowanceKey {
                    card: r.get(1)?,
                    merchant: r.get(2)?,
                    amount: r.get(3)?,
                    currency: r.get(4)?,
                },
                AllowanceEntry {
                    id: r.get(0)?,
                    expires_at: r.get(5)?,
                },
            ))
        })?;
        self.allowances.clear();
        for row in rows {
            let (k, v) = row?;
            self.allowances.insert(k, v);
        }
        Ok(())
    }

    /// Whether any allowance is held (lets the decision path skip building a key).
    pub fn has_allowances(&self) -> bool {
        !self.allowances.is_empty()
    }

    /// Whether an unexpired allowance exists for this retry (no I/O: the decision
    /// path calls it). Consume it with [`Approvals::consume_allowance`] once used.
    pub fn allowance(&self, key: &AllowanceKey) -> Option<String> {
        let now = self.now();
        self.allowances
            .get(key)
            .filter(|e| e.expires_at > now)
            .map(|e| e.id.clone())
    }

    /// Takes an allowance out of memory at once (one retry only) and returns its id
    /// so the caller can record the use off the decision path.
    pub fn take_allowance(&self, key: &AllowanceKey) -> Option<String> {
        let now = self.now();
        self.allowances
            .remove_if(key, |_, e| e.expires_at > now)
            .map(|(_, e)| e.id)
    }

    /// Records that allowance `id` was used by `authorization` (durable, so a
    /// restart does not revive it).
    pub fn consume_allowance(&self, id: &str, authorization: &str) -> Result<(), Error> {
        let now = self.now();
        self.tx(|tx| {
            tx.execute(
                "UPDATE allowances SET used_at = ?2, used_by = ?3 WHERE id = ?1 AND used_at IS NULL",
                params![id, now, authorization],
            )?;
            history(tx, "authorization_allowance.used", "system", id, now, json!({"authorization": authorization}))
        })
    }

    /// Allowances, newest first.
    pub fn list_allowances(&self) -> Result<Vec<Value>, Error> {
        let conn = self.conn();
        let mut st = conn.prepare(
            "SELECT id, body, created, expires_at, used_at, used_by FROM allowances ORDER BY rowid DESC LIMIT 100",
        )?;
        let rows = st.query_map([], |r| {
            let spec: Value = serde_json::from_str(&r.get::<_, String>(1)?).unwrap_or(Value::Null);
            Ok(json!({
                "id": r.get::<_, String>(0)?,
                "object": "authorization_allowance",
                "card": spec["card"], "merchant": spec["merchant"], "amount": spec["amount"],
                "currency": spec["currency"], "authorization": spec["authorization"],
                "created": r.get::<_, i64>(2)?,
                "expires_at": r.get::<_, i64>(3)?,
                "used_at": r.get::<_, Option<i64>>(4)?,
                "used_by": r.get::<_, Option<String>>(5)?,
            }))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Filters for [`Approvals::history`].
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

/// Checks a rule set compiles; a rejection counts like any other reload's.
fn compiles(src: &str) -> Result<(), Error> {
    RuleSet::from_toml_unmetered(src).map(|_| ()).map_err(|e| {
        crate::rules::reload::rejected::<crate::rules::RuleSet>("api", &e.to_string());
        Error::InvalidRules(e)
    })
}

fn with_pending_key(action: Action, pending: (String, String)) -> Action {
    match action {
        Action::CreateApiKey { role, name, .. } => Action::CreateApiKey {
            role,
            name,
            pending: Some(pending),
        },
        other => other,
    }
}

fn allowance_key(a: &AllowanceSpec) -> AllowanceKey {
    AllowanceKey {
        card: a.card.clone(),
        merchant: a.merchant.clone(),
        amount: a.amount,
        currency: a.currency.clone(),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Short machine code and message of an execution failure.
fn error_parts(e: &Error) -> (&'static str, String) {
    match e {
        Error::InvalidRules(r) => ("invalid_rules", r.to_string()),
        Error::NotFound { what, id } => ("resource_missing", format!("no {what} {id}")),
        Error::Conflict { code, message } => (code, message.clone()),
        Error::Forbidden { code, message } => (code, message.clone()),
        Error::Invalid { message } => ("invalid_request", message.clone()),
        Error::Storage(m) => ("storage", m.clone()),
        Error::ApprovalRequired { .. } => ("approval_required", "approval required".into()),
        Error::Blocked { rule, .. } => ("action_blocked", format!("blocked by {rule}")),
    }
}

fn insert_key(
    tx: &Transaction<'_>,
    id: &str,
    role: Role,
    name: Option<&str>,
    hash: &str,
    actor: &Actor,
    now: i64,
) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO api_keys (id, name, role, hash, created, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, name, role.as_str(), hash, now, actor.key_id],
    )?;
    history(
        tx,
        "api_key.created",
        &actor.key_id,
        id,
        now,
        json!({"role": role.as_str(), "name": name}),
    )
}

fn revoke_key(tx: &Transaction<'_>, id: &str, actor: &Actor, now: i64) -> Result<(), Error> {
    let n = tx.execute(
        "UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![id, now],
    )?;
    if n == 0 {
        let exists: Option<i64> = tx
            .query_row("SELECT 1 FROM api_keys WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()?;
        return Err(match exists {
            None => Error::NotFound {
                what: "api_key",
                id: id.into(),
            },
            Some(_) => conflict(
                "already_revoked",
                format!("API key {id} is already revoked"),
            ),
        });
    }
    history(tx, "api_key.revoked", &actor.key_id, id, now, json!({}))
}

fn only_active(tx: &Transaction<'_>, kind: ActionKind, id: &str) -> Result<(), Error> {
    let other: Option<String> = tx
        .query_row(
            "SELECT id FROM approval_rules WHERE action = ?1 AND active = 1 AND id != ?2",
            params![kind.as_str(), id],
            |r| r.get(0),
        )
        .optional()?;
    match other {
        Some(o) => Err(conflict(
            "rule_already_active",
            format!(
                "approval rule {o} is already active for {}; deactivate it first (one active rule per action)",
                kind.as_str()
            ),
        )),
        None => Ok(()),
    }
}

fn save_rule(tx: &Transaction<'_>, rule: &ApprovalRule, new: bool) -> Result<(), Error> {
    if new {
        tx.execute(
            "INSERT INTO approval_rules (id, action, body, active, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![rule.id, rule.action.as_str(), to_json(rule), rule.active, rule.created],
        )?;
    } else {
        tx.execute(
            "UPDATE approval_rules SET body = ?2, active = ?3 WHERE id = ?1",
            params![rule.id, to_json(rule), rule.active],
        )?;
    }
    Ok(())
}

/// One approval rule, read on a plain connection or inside a transaction (a
/// `Transaction` derefs to its `Connection`).
fn load_rule(conn: &Connection, id: &str) -> Result<ApprovalRule, Error> {
    let body: Option<String> = conn
        .query_row(
            "SELECT body FROM approval_rules WHERE id = ?1",
            params![id],
            |r| r.get(0),
        )
        .optional()?;
    let body = body.ok_or_else(|| Error::NotFound {
        what: "approval_rule",
        id: id.into(),
    })?;
    serde_json::from_str(&body).map_err(|e| Error::Storage(e.to_string()))
}

fn rule_object(r: &ApprovalRule) -> Value {
    json!({
        "id": r.id,
        "object": "approval_rule",
        "action": r.action.as_str(),
        "name": r.name,
        "conditions": r.conditions,
        "combinator": r.combinator,
        "control": r.control,
        "reviewers": r.reviewers,
        "active": r.active,
        "created": r.created,
        "updated": r.updated,
    })
}

fn override_object(o: &OverrideSpec, updated: i64) -> Value {
    let mut v = json!(o);
    v["object"] = json!("control_override");
    v["updated"] = json!(updated);
    v
}

/// Appends one security-history row. The table refuses updates and deletes
/// (triggers in the migration), so history can only grow.
fn history(
    tx: &Transaction<'_>,
    kind: &str,
    actor: &str,
    object: &str,
    now: i64,
    details: Value,
) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO security_history (type, actor, object_id, created, details) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![kind, actor, object, now, details.to_string()],
    )?;
    Ok(())
}

/// Records an event and queues one delivery per endpoint, in the caller's
/// transaction: the state change and its event commit together or not at all.
fn emit(
    tx: &Transaction<'_>,
    settings: &Settings,
    kind: &str,
    related: &str,
    related_type: &str,
    object: Value,
    now: i64,
) -> Result<(), Error> {
    let id = rand_id("evt_")?;
    let url = match related_type {
        "approval_request" => format!("/v1/approval_requests/{related}"),
        _ => format!("/v1/approval_rules/{related}"),
    };
    // Events stay small (a request can carry a multi-megabyte rule set): past
    // this size the receiver gets the short form and reads the rest by URL.
    const MAX_OBJECT: usize = 64 * 1024;
    let object = if object.to_string().len() > MAX_OBJECT {
        json!({"id": object["id"], "object": object["object"], "status": object["status"],
               "action": object["action"], "truncated": true})
    } else {
        object
    };
    let body = json!({
        "id": id,
        "object": "v2.core.event",
        "type": kind,
        "created": now,
        "livemode": false,
        "related_object": {"id": related, "type": related_type, "url": url},
        "data": {"object": object},
    });
    tx.execute(
        "INSERT INTO events (id, type, created, related_id, body) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, kind, now, related, body.to_string()],
    )?;
    let now_ms = events::now_ms();
    for endpoint in &settings.endpoints {
        tx.execute(
            "INSERT INTO outbox (event_id, endpoint, next_attempt_ms) VALUES (?1, ?2, ?3)",
            params![id, endpoint, now_ms],
        )?;
    }
    Ok(())
}

fn cursor(conn: &Connection, table: &str, after: Option<&str>) -> Result<i64, Error> {
    match after {
        None => Ok(i64::MAX),
        Some(id) => conn
            .query_row(
                &format!("SELECT rowid FROM {table} WHERE id = ?1"),
                params![id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| invalid(format!("starting_after: no object {id:?}"))),
    }
}

fn set_status(tx: &Transaction<'_>, id: &str, st: &str, now: i64) -> Result<(), Error> {
    tx.execute(
        "UPDATE approval_requests SET status = ?2 WHERE id = ?1",
        params![id, st],
    )?;
    stamp(tx, id, &format!("{st}_at"), now)
}

fn stamp(tx: &Transaction<'_>, id: &str, field: &str, now: i64) -> Result<(), Error> {
    let current: String = tx.query_row(
        "SELECT transitions FROM approval_requests WHERE id = ?1",
        params![id],
        |r| r.get(0),
    )?;
    let mut t: Value = serde_json::from_str(&current).unwrap_or_else(|_| json!({}));
    t[field] = json!(now);
    tx.execute(
        "UPDATE approval_requests SET transitions = ?2 WHERE id = ?1",
        params![id, t.to_string()],
    )?;
    Ok(())
}

fn set_review(
    tx: &Transaction<'_>,
    id: &str,
    result: &str,
    reason: Option<&str>,
    actor: &Actor,
    now: i64,
) -> Result<(), Error> {
    let review = json!({"result": result, "reason": reason, "reviewed_at": now,
        "reviewed_by": {"id": actor.key_id, "name": actor.name}});
    tx.execute(
        "UPDATE approval_requests SET review = ?2 WHERE id = ?1",
        params![id, review.to_string()],
    )?;
    Ok(())
}

fn expect_status(req: &Value, allowed: &[&str], verb: &str) -> Result<(), Error> {
    let st = req["status"].as_str().unwrap_or("");
    if allowed.contains(&st) {
        return Ok(());
    }
    let code = match st {
        status::EXPIRED => "request_expired",
        status::PENDING => "request_not_submitted",
        _ => "invalid_transition",
    };
    Err(conflict(
        code,
        format!(
            "cannot {verb} approval request {} in status {st} (allowed from: {})",
            req["id"].as_str().unwrap_or(""),
            allowed.join(", ")
        ),
    ))
}

fn may_review(req: &Value, actor: &Actor) -> Result<(), Error> {
    if req["requested_by"]["id"] == actor.key_id {
        return Err(Error::Forbidden {
            code: "self_approval",
            message: "nobody can review their own approval request".into(),
        });
    }
    let reviewers: Reviewers = serde_json::from_value(req["reviewers"].clone()).unwrap_or_default();
    if !matches!(actor.role, Role::Admin | Role::Reviewer)
        || !reviewers.allows(&actor.key_id, actor.role)
    {
        return Err(Error::Forbidden {
            code: "not_a_reviewer",
            message: "this key is not a reviewer of this approval request".into(),
        });
    }
    Ok(())
}

/// The fields of the `approval_required` error's embedded object.
fn short(req: &Value) -> Value {
    json!({
        "id": req["id"],
        "object": "approval_request",
        "action": req["action"],
        "status": req["status"],
        "expires_at": req["expires_at"],
    })
}

fn load_request(conn: &Connection, id: &str) -> Result<Value, Error> {
    conn.query_row(
        "SELECT id, action, params, status, requested_by, requester_role, requester_name,
                rule_id, rule_name, reviewers, reason, created, expires_at, review, result,
                error, transitions
         FROM approval_requests WHERE id = ?1",
        params![id],
        |r| {
            let parse = |s: Option<String>| {
                s.and_then(|s| serde_json::from_str::<Value>(&s).ok())
                    .unwrap_or(Value::Null)
            };
            let mut params = parse(r.get(2)?);
            // The pending key's hash stays in the database.
            if let Some(p) = params.get_mut("params").and_then(|p| p.as_object_mut()) {
                p.remove("pending");
            }
            let st: String = r.get(3)?;
            let rule_id: Option<String> = r.get(7)?;
            let result = parse(r.get(14)?);
            let error = parse(r.get(15)?);
            let details = match st.as_str() {
                status::SUCCEEDED => json!({"succeeded": {"result": result}}),
                status::FAILED => json!({"failed": error}),
                _ => Value::Null,
            };
            Ok(json!({
                "id": r.get::<_, String>(0)?,
                "object": "approval_request",
                "action": r.get::<_, String>(1)?,
                "params": params["params"],
                "status": st,
                "requested_by": {"id": r.get::<_, String>(4)?, "role": r.get::<_, String>(5)?,
                                 "name": r.get::<_, Option<String>>(6)?},
                "rule": rule_id.map(|id| json!({"id": id, "name": r.get::<_, Option<String>>(8).ok().flatten()})),
                "reviewers": parse(r.get(9)?),
                "reason": r.get::<_, Option<String>>(10)?,
                "created": r.get::<_, i64>(11)?,
                "expires_at": r.get::<_, i64>(12)?,
                "review": parse(r.get(13)?),
                "status_details": details,
                "status_transitions": parse(r.get(16)?),
            }))
        },
    )
    .optional()?
    .ok_or_else(|| Error::NotFound {
        what: "approval_request",
        id: id.into(),
    })
}

#[cfg(test)]
mod tests;

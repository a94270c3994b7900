//! What approvals hand to the decision path, readable without I/O: control
//! overrides (an immutable table behind one `ArcSwap`, rebuilt from the store
//! after every change) and one-time authorization allowances (an in-memory map,
//! loaded at start and kept in step with the store). Using an allowance and
//! opening a review are the decision path's only writes, and both go to
//! background work.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;

use super::model::{Allowance, ControlOverride, Executed};
use super::{AllowanceSpec, Approvals, Change, Error, OverrideSpec, Scope, history, invalid};
use crate::decision::Controls;

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

impl From<&AllowanceSpec> for AllowanceKey {
    fn from(a: &AllowanceSpec) -> Self {
        AllowanceKey {
            card: a.card.clone(),
            merchant: a.merchant.clone(),
            amount: a.amount,
            currency: a.currency.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct AllowanceEntry {
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

impl Approvals {
    /// Sets (or, when it sets nothing, clears) a control override.
    pub(super) async fn set_override(
        &self,
        actor: &super::Actor,
        o: &OverrideSpec,
    ) -> Result<Executed, Error> {
        o.controls().map_err(invalid)?;
        let now = self.now();
        let set = ControlOverride {
            spec: o.clone(),
            updated: now,
        };
        let write = if o.is_empty() {
            Change::ClearOverride {
                scope: o.scope,
                id: o.id.clone(),
            }
        } else {
            Change::SetOverride(set.clone())
        };
        let details = serde_json::to_value(o).unwrap_or_default();
        self.commit_unguarded(vec![
            write,
            history("control_override.set", &actor.key_id, &o.id, now, details),
        ])
        .await?;
        self.reload_overrides().await?;
        Ok(Executed::Override(set))
    }

    /// Rebuilds the decision path's override table from the store.
    pub(super) async fn reload_overrides(&self) -> Result<(), Error> {
        let mut table = OverrideTable::default();
        for o in self.store.overrides().await? {
            let controls = o.spec.controls().map_err(Error::Storage)?;
            table.insert(o.spec.scope, o.spec.id, controls);
        }
        self.overrides.store(Arc::new(table));
        Ok(())
    }

    /// The override table, one atomic load (the decision path's read).
    pub fn overrides(&self) -> arc_swap::Guard<Arc<OverrideTable>> {
        self.overrides.load()
    }

    /// Every stored override.
    pub async fn list_overrides(&self) -> Result<Vec<ControlOverride>, Error> {
        Ok(self.store.overrides().await?)
    }

    /// Grants a one-time allowance for the retry `a` describes.
    pub(super) async fn grant_allowance(
        &self,
        actor: &super::Actor,
        a: &AllowanceSpec,
    ) -> Result<Executed, Error> {
        let now = self.now();
        let window = i64::try_from(self.settings.allowance_window.as_secs()).unwrap_or(i64::MAX);
        let allowance = Allowance {
            id: super::rand_id("allow_")?,
            spec: a.clone(),
            created: now,
            expires_at: now.saturating_add(window),
            used_at: None,
            used_by: None,
        };
        let details = serde_json::to_value(a).unwrap_or_default();
        self.commit_unguarded(vec![
            Change::InsertAllowance(allowance.clone()),
            history(
                "authorization_allowance.created",
                &actor.key_id,
                &allowance.id,
                now,
                details,
            ),
        ])
        .await?;
        self.allowances.insert(
            AllowanceKey::from(a),
            AllowanceEntry {
                id: allowance.id.clone(),
                expires_at: allowance.expires_at,
            },
        );
        Ok(Executed::Allowance(allowance))
    }

    /// Loads the unused, unexpired allowances into memory.
    pub(super) async fn reload_allowances(&self) -> Result<(), Error> {
        let live = self.store.live_allowances(self.now()).await?;
        self.allowances.clear();
        for a in live {
            self.allowances.insert(
                AllowanceKey::from(&a.spec),
                AllowanceEntry {
                    id: a.id,
                    expires_at: a.expires_at,
                },
            );
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
    pub async fn consume_allowance(&self, id: &str, authorization: &str) -> Result<(), Error> {
        let now = self.now();
        self.commit_unguarded(vec![
            Change::UseAllowance {
                id: id.into(),
                at: now,
                by: authorization.into(),
            },
            history(
                "authorization_allowance.used",
                "system",
                id,
                now,
                json!({"authorization": authorization}),
            ),
        ])
        .await
    }

    /// Allowances, newest first (the latest hundred).
    pub async fn list_allowances(&self) -> Result<Vec<Allowance>, Error> {
        Ok(self.store.allowances(100).await?)
    }
}

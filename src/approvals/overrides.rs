//! What approvals hand to the decision path, readable without I/O: control
//! overrides (an immutable table behind one `ArcSwap`, rebuilt from the store
//! after every change) and one-time authorization allowances (an in-memory map,
//! loaded at start and kept in step with the store). Using an allowance and
//! opening a review are the decision path's only writes, and both go to
//! background work.
//!
//! An allowance is *claimed* (taken out of the map) when a decision looks it up,
//! not when the approval is finally answered: between the two the request awaits
//! the decision and the commit of its hold, and every concurrent retry that looked
//! in the meantime would otherwise find the same allowance and pass too. A claim
//! that does not end in an approval goes back into the map when dropped.
//!
//! **Replicas.** On a shared store every replica holds its own map, refreshed from
//! the store when another one changes it ([`Approvals::refresh`], called on a
//! change notification). The map is then only a fast "is there one?": a
//! [`ClaimGuard`] set with [`Approvals::guard_allowances`] makes the claim in the
//! store too (a lease on the row), so of retries spread over replicas one at most
//! holds the allowance, and giving it back releases the lease first. Without a
//! guard (SQLite, one process) the map's atomic remove is the whole claim.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use dashmap::DashMap;
use serde_json::json;

use super::model::{Allowance, ControlOverride, Executed};
use super::{
    AllowanceSpec, ApprovalStoreError, Approvals, Change, Error, OverrideSpec, Scope, history,
    invalid,
};
use crate::decision::Controls;

/// How long a claim in a shared store holds an allowance for the authorization
/// that took it: far past any deadline, so only a replica that died mid-request
/// leaves one behind, and then only for this long.
pub const CLAIM_LEASE_SECS: i64 = 30;

/// Makes allowance claims exclusive across processes sharing one store
/// (implemented on PostgreSQL in `src/store/postgres/rulesets.rs`).
#[async_trait]
pub trait ClaimGuard: Send + Sync + std::fmt::Debug + 'static {
    /// Leases allowance `id` to authorization `by` until `until`, unless it is
    /// used, expired at `now`, or leased to another authorization until after
    /// `now`. True when `by` holds it now.
    async fn claim(
        &self,
        id: &str,
        by: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, ApprovalStoreError>;
    /// Ends `by`'s lease on `id`, if it still holds one and has not used it.
    async fn release(&self, id: &str, by: &str) -> Result<(), ApprovalStoreError>;
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

/// The unused allowances in memory, by the retry they admit. Shared with every
/// outstanding [`AllowanceClaim`] so a dropped claim can put its allowance back.
#[derive(Debug, Clone, Default)]
pub(super) struct Allowances {
    map: Arc<DashMap<AllowanceKey, AllowanceEntry>>,
    /// Set once, at start, when the store is shared.
    guard: Arc<OnceLock<Arc<dyn ClaimGuard>>>,
}

impl Allowances {
    fn insert(&self, key: AllowanceKey, entry: AllowanceEntry) {
        self.map.insert(key, entry);
    }

    /// Makes the map hold exactly `live`, without emptying it first: a look-up
    /// during a refresh finds an allowance that stays.
    fn replace(&self, live: impl IntoIterator<Item = (AllowanceKey, AllowanceEntry)>) {
        let mut ids = HashMap::new();
        for (key, entry) in live {
            ids.insert(key.clone(), entry.id.clone());
            self.map.insert(key, entry);
        }
        self.map.retain(|k, e| ids.get(k) == Some(&e.id));
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The id of the unexpired allowance for `key`, left in place.
    fn peek(&self, key: &AllowanceKey, now: i64) -> Option<String> {
        self.map
            .get(key)
            .filter(|e| e.expires_at > now)
            .map(|e| e.id.clone())
    }

    /// Removes the unexpired allowance for `key` in one step (the map's shard lock
    /// makes it atomic), so of any number of concurrent callers one at most gets it.
    fn claim(&self, key: &AllowanceKey, now: i64) -> Option<AllowanceClaim> {
        let (key, entry) = self.map.remove_if(key, |_, e| e.expires_at > now)?;
        Some(AllowanceClaim {
            home: self.clone(),
            key,
            entry: Some(entry),
            leased_to: None,
        })
    }

    /// Puts a claimed allowance back unless a newer grant for the same retry was
    /// made while it was out (that one wins; this one stays unused in the store).
    fn give_back(&self, key: AllowanceKey, entry: AllowanceEntry) {
        self.map.entry(key).or_insert(entry);
    }
}

/// One allowance, held by the one request that claimed it. [`keep`] it when the
/// request is approved with it; dropped any other way (declined, a fallback, the
/// request abandoned mid-flight or panicking) it goes back for the next retry.
///
/// [`keep`]: AllowanceClaim::keep
#[derive(Debug)]
#[must_use = "a claim dropped unused gives its allowance back"]
pub struct AllowanceClaim {
    home: Allowances,
    key: AllowanceKey,
    /// `None` once kept.
    entry: Option<AllowanceEntry>,
    /// The authorization holding the store's lease, when the store is shared.
    leased_to: Option<String>,
}

impl AllowanceClaim {
    /// The allowance's id (`allow_…`).
    pub fn id(&self) -> &str {
        self.entry.as_ref().map_or("", |e| e.id.as_str())
    }

    /// With a shared store, takes the store's lease for authorization `by` (one
    /// round trip, bounded by `deadline`). `None` when another replica holds or
    /// used it, or the store cannot say in time: the claim is given back and
    /// the authorization is decided without the allowance (it fails closed).
    /// Without a guard the claim is already exclusive and is returned as is.
    pub async fn lease(
        mut self,
        by: &str,
        now: i64,
        deadline: tokio::time::Instant,
    ) -> Option<AllowanceClaim> {
        let Some(guard) = self.home.guard.get().cloned() else {
            return Some(self);
        };
        let until = now.saturating_add(CLAIM_LEASE_SECS);
        let taken = tokio::time::timeout_at(deadline, guard.claim(self.id(), by, now, until)).await;
        match taken {
            Ok(Ok(true)) => {
                self.leased_to = Some(by.to_string());
                Some(self)
            }
            Ok(Ok(false)) => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "allowance claim failed; deciding without it");
                None
            }
            Err(_) => {
                // The UPDATE may still land: its lease lapses on its own.
                tracing::warn!("allowance claim timed out; deciding without it");
                None
            }
        }
    }

    /// Spends the allowance: it stays out of memory and its id is returned so the
    /// caller can record the use durably ([`Approvals::consume_allowance`]).
    pub fn keep(mut self) -> String {
        self.entry.take().map(|e| e.id).unwrap_or_default()
    }
}

impl Drop for AllowanceClaim {
    fn drop(&mut self) {
        let Some(entry) = self.entry.take() else {
            return;
        };
        let (home, key) = (self.home.clone(), self.key.clone());
        match (self.leased_to.take(), home.guard.get().cloned()) {
            (Some(by), Some(guard)) => {
                // Release the store's lease before the map offers it again, or a
                // retry here would find it in the map and be refused by the store.
                let Ok(rt) = tokio::runtime::Handle::try_current() else {
                    // No runtime (shutting down): the lease lapses on its own.
                    home.give_back(key, entry);
                    return;
                };
                rt.spawn(async move {
                    if let Err(e) = guard.release(&entry.id, &by).await {
                        tracing::warn!(error = %e, allowance = entry.id, "releasing an allowance claim failed; it lapses on its own");
                    }
                    home.give_back(key, entry);
                });
            }
            _ => home.give_back(key, entry),
        }
    }
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

    /// Makes allowance claims go through `guard` (a store shared by replicas).
    /// Set once, before serving; a second call is ignored.
    pub fn guard_allowances(&self, guard: Arc<dyn ClaimGuard>) {
        if self.allowances.guard.set(guard).is_err() {
            tracing::warn!("allowance claim guard already set; keeping the first");
        }
    }

    /// Re-reads what the decision path caches from the store: the override
    /// table and the allowance map. Called when another replica or the command
    /// line changed them (a change notification), and after a reconnect.
    ///
    /// # Errors
    /// The store cannot be read; the cached tables stay as they were.
    pub async fn refresh(&self, overrides: bool, allowances: bool) -> Result<(), Error> {
        if overrides {
            self.reload_overrides().await?;
        }
        if allowances {
            self.reload_allowances().await?;
        }
        Ok(())
    }

    /// Loads the unused, unexpired allowances into memory.
    pub(super) async fn reload_allowances(&self) -> Result<(), Error> {
        let live = self.store.live_allowances(self.now()).await?;
        self.allowances.replace(live.into_iter().map(|a| {
            (
                AllowanceKey::from(&a.spec),
                AllowanceEntry {
                    id: a.id,
                    expires_at: a.expires_at,
                },
            )
        }));
        Ok(())
    }

    /// Whether any allowance is held (lets the decision path skip building a key).
    pub fn has_allowances(&self) -> bool {
        !self.allowances.is_empty()
    }

    /// Whether an unexpired allowance exists for this retry, left in place.
    pub fn allowance(&self, key: &AllowanceKey) -> Option<String> {
        self.allowances.peek(key, self.now())
    }

    /// Claims the unexpired allowance for this retry (no I/O: the decision path
    /// calls it before deciding). Of concurrent retries one at most gets it; the
    /// claim gives it back when dropped unless [kept](AllowanceClaim::keep).
    pub fn claim_allowance(&self, key: &AllowanceKey) -> Option<AllowanceClaim> {
        self.allowances.claim(key, self.now())
    }

    /// Takes an allowance out of memory for good (one retry only) and returns its
    /// id so the caller can record the use off the decision path.
    pub fn take_allowance(&self, key: &AllowanceKey) -> Option<String> {
        self.claim_allowance(key).map(AllowanceClaim::keep)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(amount: i64) -> AllowanceKey {
        AllowanceKey {
            card: "ic_1".into(),
            merchant: "1000384276".into(),
            amount,
            currency: "usd".into(),
        }
    }

    fn held(id: &str, expires_at: i64) -> Allowances {
        let a = Allowances::default();
        a.insert(
            key(500),
            AllowanceEntry {
                id: id.into(),
                expires_at,
            },
        );
        a
    }

    #[test]
    fn a_claimed_allowance_is_out_until_the_claim_is_dropped() {
        let a = held("allow_1", 100);
        let claim = a.claim(&key(500), 10).unwrap();
        assert_eq!(claim.id(), "allow_1");
        assert!(a.claim(&key(500), 10).is_none(), "held by the first claim");
        assert!(a.peek(&key(500), 10).is_none());
        drop(claim);
        assert_eq!(a.peek(&key(500), 10).as_deref(), Some("allow_1"));
        assert_eq!(a.claim(&key(500), 10).unwrap().keep(), "allow_1");
        assert!(a.is_empty(), "a kept allowance does not come back");
    }

    #[test]
    fn of_many_threads_claiming_at_once_exactly_one_gets_the_allowance() {
        let a = held("allow_1", 100);
        let barrier = std::sync::Barrier::new(20);
        let won = std::thread::scope(|s| {
            let handles: Vec<_> = (0..20)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        a.claim(&key(500), 10).map(AllowanceClaim::keep)
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        });
        assert_eq!(won, ["allow_1"]);
    }

    #[test]
    fn expired_or_other_retries_claim_nothing() {
        let a = held("allow_1", 100);
        assert!(a.claim(&key(500), 100).is_none(), "expired at 100");
        assert!(a.claim(&key(501), 10).is_none(), "another amount");
        assert!(!a.is_empty(), "a failed claim removes nothing");
    }

    #[test]
    fn a_give_back_does_not_replace_a_grant_made_meanwhile() {
        let a = held("allow_1", 100);
        let claim = a.claim(&key(500), 10).unwrap();
        a.insert(
            key(500),
            AllowanceEntry {
                id: "allow_2".into(),
                expires_at: 200,
            },
        );
        drop(claim);
        assert_eq!(a.peek(&key(500), 10).as_deref(), Some("allow_2"));
    }

    /// A guard holding one allowance's lease, as the shared store does.
    #[derive(Debug, Default)]
    struct OneLease(std::sync::Mutex<Option<String>>);

    #[async_trait]
    impl ClaimGuard for OneLease {
        async fn claim(
            &self,
            _id: &str,
            by: &str,
            _now: i64,
            _until: i64,
        ) -> Result<bool, ApprovalStoreError> {
            let mut held = self.0.lock().unwrap();
            if held.is_some() {
                return Ok(false);
            }
            *held = Some(by.to_string());
            Ok(true)
        }
        async fn release(&self, _id: &str, by: &str) -> Result<(), ApprovalStoreError> {
            let mut held = self.0.lock().unwrap();
            if held.as_deref() == Some(by) {
                *held = None;
            }
            Ok(())
        }
    }

    fn far() -> tokio::time::Instant {
        tokio::time::Instant::now() + std::time::Duration::from_mins(1)
    }

    #[tokio::test]
    async fn with_a_guard_a_claim_another_replica_holds_is_refused_and_a_give_back_releases_first()
    {
        let a = held("allow_1", 100);
        let guard = Arc::new(OneLease::default());
        a.guard.set(guard.clone()).unwrap();
        // Another replica holds the lease: this one's map still offers the
        // allowance, the store refuses it, and the map gets it back.
        *guard.0.lock().unwrap() = Some("iauth_elsewhere".into());
        let claim = a.claim(&key(500), 10).unwrap();
        assert!(claim.lease("iauth_1", 10, far()).await.is_none());
        assert_eq!(a.peek(&key(500), 10).as_deref(), Some("allow_1"));
        // Released there; taken here, then given back on decline: the lease
        // ends before the map offers it again.
        *guard.0.lock().unwrap() = None;
        let claim = a
            .claim(&key(500), 10)
            .unwrap()
            .lease("iauth_1", 10, far())
            .await;
        assert_eq!(guard.0.lock().unwrap().as_deref(), Some("iauth_1"));
        drop(claim);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while a.peek(&key(500), 10).is_none() {
            assert!(std::time::Instant::now() < deadline, "never given back");
            tokio::task::yield_now().await;
        }
        assert_eq!(
            *guard.0.lock().unwrap(),
            None,
            "released before it came back"
        );
        // Kept: the lease stays with the winner (its use ends it for good).
        let kept = a
            .claim(&key(500), 10)
            .unwrap()
            .lease("iauth_2", 10, far())
            .await;
        assert_eq!(kept.unwrap().keep(), "allow_1");
        assert_eq!(guard.0.lock().unwrap().as_deref(), Some("iauth_2"));
    }

    #[test]
    fn a_refresh_replaces_the_map_without_emptying_it_first() {
        let a = held("allow_1", 100);
        let entry = |id: &str| AllowanceEntry {
            id: id.into(),
            expires_at: 100,
        };
        a.replace([(key(500), entry("allow_1")), (key(600), entry("allow_2"))]);
        assert_eq!(a.peek(&key(600), 10).as_deref(), Some("allow_2"));
        a.replace([(key(600), entry("allow_2"))]);
        assert!(a.peek(&key(500), 10).is_none(), "used elsewhere: gone");
        assert_eq!(a.peek(&key(600), 10).as_deref(), Some("allow_2"));
    }
}

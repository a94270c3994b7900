//! Behavioural signals: what a card and its cardholder did recently, as typed rule
//! fields (`velocity.cardholder.count_1h`, `velocity.card.amount_24h`,
//! `history.card.new_merchant`, …; the values are `decision::Signals`).
//!
//! **Owns** the per-card and per-cardholder state the signals are computed from,
//! and the two operations on it: [`SignalSource::read`] before `decide()` (O(1):
//! every scan is over a fixed-capacity buffer) and [`SignalSource::note`] after the
//! decision settled. The state is fed by this instance's decisions, so the
//! answer-dependent signals (`amount_24h`: approved amounts; `declines_*`) follow
//! what cardgate answered; every other signal counts requests whatever the answer.
//!
//! **Bounded.** Per card: the last [`RECENT`] requests (time, approved amount,
//! merchant, declined), the last [`MERCHANTS`] distinct merchants, one bucket per
//! UTC day with requests over the last [`DAYS`] days, the first and the previous
//! request: at most about 1.8 KB, a few hundred bytes for a card with little
//! traffic. Per cardholder: the times of its last [`HOLDER_RECENT`] requests
//! (≤ 0.6 KB). Consequences, by design: the 1 h / 24 h card signals see at most the
//! last [`RECENT`] requests (a card past that many in 24 h reads as at least that
//! busy, with the oldest amounts forgotten); `new_merchant` means "not among the
//! card's last [`MERCHANTS`] distinct merchants".
//!
//! **Rebuilt at start** from the decision log (`store::read_signal_history`: the
//! last [`DAYS`] days of decisions in log order, and each card's first decision),
//! so a restart computes what an uninterrupted run would have. **Identical in
//! backtest and live:** each decision records the values it read
//! (`journal::seen`), and the backtest hands exactly those back.
//!
//! **Seam for replicas.** The pipeline reads and feeds signals only through
//! [`SignalSource`]. In PostgreSQL mode, where several replicas decide for the same
//! card, an implementation backed by the shared store (per-card state rows
//! updated in the reserve's transaction, read with the snapshot) gives every
//! replica the same values; [`SignalState`] is the single-node one.

use std::collections::VecDeque;

use dashmap::DashMap;

use crate::decision::{AuthRequest, Signals};

/// Requests kept per card for the 1 h / 24 h signals.
pub const RECENT: usize = 32;
/// Distinct merchants remembered per card for `new_merchant`.
pub const MERCHANTS: usize = 32;
/// Days of per-day amounts kept per card for `amount_avg_30d` / `amount_max_30d`.
pub const DAYS: i64 = 30;
/// Request times kept per cardholder for `velocity.cardholder.*`.
pub const HOLDER_RECENT: usize = 64;

const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

/// Where the pipeline gets signals from and reports decisions to.
pub trait SignalSource: Send + Sync {
    /// The signals of `key`'s card and cardholder for a request at `now` (its
    /// window time: `created`, as the ledger's windows go by).
    fn read(&self, key: &Key<'_>, now: i64) -> Signals;
    /// Adds a decided request.
    fn note(&self, obs: &Observation<'_>);
}

/// Whose signals: the card, its cardholder, and the merchant asked about.
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    /// `ic_…`
    pub card: &'a str,
    /// `ich_…`
    pub cardholder: &'a str,
    /// [`merchant_key`] of the merchant.
    pub merchant: u32,
}

impl<'a> Key<'a> {
    /// The key of an authorization request.
    pub fn of(auth: &AuthRequest<'a>) -> Self {
        Key {
            card: auth.card.id,
            cardholder: auth.cardholder.id,
            merchant: merchant_key(merchant_id(auth)),
        }
    }
}

/// One decided request, as the signals remember it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Card, cardholder, merchant.
    pub key: Key<'a>,
    /// Merchant country (alpha-2; `[0, 0]` when absent).
    pub country: [u8; 2],
    /// Requested amount.
    pub amount: i64,
    /// Approved amount (0 when declined).
    pub approved_amount: i64,
    /// Declined?
    pub declined: bool,
    /// The request's window time (`created`, else the decision's clock).
    pub now: i64,
}

/// The merchant as signals identify it: the network id, else the name.
pub fn merchant_id<'a>(auth: &AuthRequest<'a>) -> &'a str {
    if auth.merchant.network_id.is_empty() {
        auth.merchant.name
    } else {
        auth.merchant.network_id
    }
}

/// A 32-bit FNV-1a hash of a merchant id: four bytes per remembered merchant.
pub fn merchant_key(id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A country code as two bytes (`[0, 0]` unless two ASCII letters).
pub fn country(code: &str) -> [u8; 2] {
    match code.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            [a.to_ascii_uppercase(), b.to_ascii_uppercase()]
        }
        _ => [0, 0],
    }
}

#[derive(Debug, Clone, Copy)]
struct Recent {
    now: i64,
    approved_amount: i64,
    merchant: u32,
    declined: bool,
}

#[derive(Debug, Clone, Copy)]
struct Day {
    index: i64,
    count: i64,
    sum: i64,
    max: i64,
}

#[derive(Debug, Default)]
struct CardState {
    first_seen: Option<i64>,
    last: Option<(i64, [u8; 2])>,
    recent: VecDeque<Recent>,
    merchants: VecDeque<u32>,
    days: VecDeque<Day>,
}

/// The hasher of the signal maps, as the ledger's: the keys are card and
/// cardholder ids from events whose signature was verified, so no outsider can
/// choose them to flood a bucket, and SipHash cost four hashes' worth of
/// instructions per decision for that resistance. foldhash seeds itself per process.
type Hasher = foldhash::fast::RandomState;

/// The single-node signal state: per card and per cardholder, in memory.
#[derive(Debug, Default)]
pub struct SignalState {
    cards: DashMap<Box<str>, CardState, Hasher>,
    holders: DashMap<Box<str>, VecDeque<i64>, Hasher>,
}

impl SignalState {
    /// No history.
    pub fn new() -> Self {
        SignalState::default()
    }

    /// Sets a card's first request time if it is earlier than the one known (the
    /// rebuild's all-time look-up, beyond the days it replays).
    pub fn first_seen(&self, card: &str, at: i64) {
        let mut c = entry(&self.cards, card);
        c.first_seen = Some(c.first_seen.map_or(at, |f| f.min(at)));
    }

    /// Cards with state (for the start-up log line).
    pub fn cards(&self) -> usize {
        self.cards.len()
    }
}

/// The state of `key` in `map`, created empty if missing. A known key (every
/// request after a card's first) is found with `get_mut`, so its id is not copied
/// into a new `Box<str>` only to be dropped, as `entry` would make us do.
fn entry<'m, V: Default>(
    map: &'m DashMap<Box<str>, V, Hasher>,
    key: &str,
) -> dashmap::mapref::one::RefMut<'m, Box<str>, V> {
    match map.get_mut(key) {
        Some(v) => v,
        None => map.entry(key.into()).or_default(),
    }
}

/// `t` lies in the `span` seconds up to `now`: (now − span, now].
fn within(t: i64, now: i64, span: i64) -> bool {
    t <= now && t > now - span
}

impl SignalSource for SignalState {
    fn read(&self, key: &Key<'_>, now: i64) -> Signals {
        let mut s = Signals::NONE;
        if let Some(h) = self.holders.get(key.cardholder) {
            // One pass for both windows: the hour lies inside the day.
            for &t in h.iter().filter(|t| within(**t, now, DAY)) {
                s.cardholder_count_24h += 1;
                s.cardholder_count_1h += i64::from(within(t, now, HOUR));
            }
        }
        let Some(c) = self.cards.get(key.card) else {
            return s;
        };
        let mut merchants = [0u32; RECENT];
        let mut distinct = 0;
        for r in &c.recent {
            if !within(r.now, now, DAY) {
                continue;
            }
            s.card_amount_24h = s.card_amount_24h.saturating_add(r.approved_amount);
            s.card_declines_24h += i64::from(r.declined);
            if within(r.now, now, HOUR) {
                s.card_declines_1h += i64::from(r.declined);
                if !merchants[..distinct].contains(&r.merchant) {
                    merchants[distinct] = r.merchant;
                    distinct += 1;
                }
            }
        }
        s.card_distinct_merchants_1h = count(0..distinct);
        s.first_seen = c.first_seen.map_or(0, |f| (now - f).max(0));
        s.new_merchant = !c.merchants.contains(&key.merchant);
        let today = now.div_euclid(DAY);
        let (mut n, mut sum) = (0i64, 0i64);
        for d in c
            .days
            .iter()
            .filter(|d| d.index > today - DAYS && d.index <= today)
        {
            n += d.count;
            sum = sum.saturating_add(d.sum);
            s.amount_max_30d = s.amount_max_30d.max(d.max);
        }
        s.amount_avg_30d = if n > 0 { sum / n } else { 0 };
        if let Some((t, country)) = c.last {
            s.last_country = country;
            s.seconds_since_last = (now - t).max(0);
        }
        s
    }

    fn note(&self, o: &Observation<'_>) {
        {
            let mut h = entry(&self.holders, o.key.cardholder);
            if h.len() == HOLDER_RECENT {
                h.pop_front();
            }
            h.push_back(o.now);
        }
        let mut c = entry(&self.cards, o.key.card);
        c.first_seen = Some(c.first_seen.map_or(o.now, |f| f.min(o.now)));
        c.last = Some((o.now, o.country));
        if c.recent.len() == RECENT {
            c.recent.pop_front();
        }
        c.recent.push_back(Recent {
            now: o.now,
            approved_amount: o.approved_amount,
            merchant: o.key.merchant,
            declined: o.declined,
        });
        if let Some(i) = c.merchants.iter().position(|m| *m == o.key.merchant) {
            c.merchants.remove(i);
        } else if c.merchants.len() == MERCHANTS {
            c.merchants.pop_front();
        }
        c.merchants.push_back(o.key.merchant);
        let day = o.now.div_euclid(DAY);
        match c.days.back_mut() {
            Some(d) if d.index == day => {
                d.count += 1;
                d.sum = d.sum.saturating_add(o.amount);
                d.max = d.max.max(o.amount);
            }
            _ => c.days.push_back(Day {
                index: day,
                count: 1,
                sum: o.amount,
                max: o.amount,
            }),
        }
        while c.days.front().is_some_and(|d| d.index <= day - DAYS) {
            c.days.pop_front();
        }
    }
}

fn count<T>(it: impl Iterator<Item = T>) -> i64 {
    i64::try_from(it.count()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;

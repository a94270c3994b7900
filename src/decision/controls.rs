//! Spending-control values: category and country sets, card-presence sets, spending
//! limits. One shape serves the card's and cardholder's `spending_controls` from the
//! payload and cardgate's own program controls from config, so every level is
//! checked by the same code.
//!
//! Sets are bitsets over Stripe's fixed category table and the 26×26 alpha-2 space:
//! building one is cheap, membership is a shift and a mask, and nothing here
//! allocates per request except the rare category name Stripe added after our table.

use super::categories::{BY_MCC, CATEGORIES, COUNT};

/// Index of a category in [`CATEGORIES`].
pub type CategoryId = u16;

// Every row index of the generated table fits a `CategoryId`.
const _: () = assert!(COUNT <= 1 << 16);

/// Looks a category up by its Stripe API name: one slot of [`BY_NAME`] and one
/// comparison (a binary search over the 295 names cost ten, once per request).
pub fn category_by_name(name: &str) -> Option<CategoryId> {
    let mut h = name_hash(name.as_bytes());
    loop {
        let id = BY_NAME[h];
        let row = CATEGORIES.get(usize::from(id))?;
        if row.name == name {
            return Some(id);
        }
        h = (h + 1) & (NAME_SLOTS - 1);
    }
}

/// Looks a category up by its four-digit MCC: an index into [`MCC_TABLE`].
pub fn category_by_mcc(mcc: &str) -> Option<CategoryId> {
    let id = MCC_TABLE[mcc_number(mcc.as_bytes())?];
    (id != NONE).then_some(id)
}

/// The number an MCC's four ASCII digits spell (`0..10_000`), else `None`.
const fn mcc_number(mcc: &[u8]) -> Option<usize> {
    let &[a, b, c, d] = mcc else {
        return None;
    };
    if !(a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() && d.is_ascii_digit()) {
        return None;
    }
    let [a, b, c, d] = [a - b'0', b - b'0', c - b'0', d - b'0'];
    Some(a as usize * 1000 + b as usize * 100 + c as usize * 10 + d as usize)
}

/// An empty slot of [`BY_NAME`] or [`MCC_TABLE`]: no category has this id.
const NONE: CategoryId = CategoryId::MAX;
const _: () = assert!(COUNT < NONE as usize);

/// Slots in [`BY_NAME`]: a power of two, under half full.
const NAME_SLOTS: usize = 1024;
const _: () = assert!(COUNT * 2 < NAME_SLOTS);

/// A hash of a category name in `0..NAME_SLOTS` from its length and four of its
/// bytes (no loop over the name).
const fn name_hash(k: &[u8]) -> usize {
    let n = k.len();
    if n == 0 {
        return 0;
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "only the low bits of the length feed the hash"
    )]
    let x = u64::from_le_bytes([
        n as u8,
        k[0],
        k[n / 3],
        k[n / 2],
        k[2 * n / 3],
        k[n - 1],
        0,
        0,
    ]);
    // Fibonacci hashing: the top bits of the product mix every input byte.
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize
}

/// Category ids by [`name_hash`] of their names (linear probing), built at compile
/// time from [`CATEGORIES`].
static BY_NAME: [CategoryId; NAME_SLOTS] = {
    let mut table = [NONE; NAME_SLOTS];
    let mut i = 0;
    while i < COUNT {
        let mut h = name_hash(CATEGORIES[i].name.as_bytes());
        while table[h] != NONE {
            h = (h + 1) & (NAME_SLOTS - 1);
        }
        #[expect(
            clippy::cast_possible_truncation,
            reason = "i < COUNT < NONE, asserted above"
        )]
        {
            table[h] = i as CategoryId;
        }
        i += 1;
    }
    table
};

/// Category ids by MCC (`0..10_000`), built at compile time from [`BY_MCC`].
static MCC_TABLE: [CategoryId; 10_000] = {
    let mut table = [NONE; 10_000];
    let mut i = 0;
    while i < BY_MCC.len() {
        let (mcc, id) = BY_MCC[i];
        let Some(n) = mcc_number(mcc.as_bytes()) else {
            panic!("an MCC has four digits");
        };
        table[n] = id;
        i += 1;
    }
    table
};

/// How a merchant is categorized, resolved once per request: by the category name
/// Stripe sent and independently by its MCC, so a control naming a category catches
/// the merchant if either points at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MerchantCategory<'a> {
    /// The raw `merchant_data.category` string.
    pub name: &'a str,
    /// The raw `merchant_data.category_code` (MCC) string.
    pub mcc: &'a str,
    /// `name` found in Stripe's table.
    pub by_name: Option<CategoryId>,
    /// `mcc` found in Stripe's table.
    pub by_mcc: Option<CategoryId>,
}

impl<'a> MerchantCategory<'a> {
    /// Resolves both lookups.
    pub fn new(name: &'a str, mcc: &'a str) -> Self {
        MerchantCategory {
            name,
            mcc,
            by_name: category_by_name(name),
            by_mcc: category_by_mcc(mcc),
        }
    }
}

const CATEGORY_WORDS: usize = COUNT.div_ceil(64);

/// A set of Stripe merchant categories.
///
/// Names Stripe introduced after our table was generated are kept verbatim in
/// `unknown` so they still match a merchant reporting the same name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CategorySet {
    bits: [u64; CATEGORY_WORDS],
    unknown: Vec<Box<str>>,
}

impl CategorySet {
    /// Adds a category by API name; returns false when the name is not in Stripe's table
    /// (it is still kept and matched by name).
    pub fn insert_name(&mut self, name: &str) -> bool {
        if let Some(id) = category_by_name(name) {
            self.insert(id);
            true
        } else {
            if !self.unknown.iter().any(|n| &**n == name) {
                self.unknown.push(name.into());
            }
            false
        }
    }

    /// Adds a category by id.
    pub fn insert(&mut self, id: CategoryId) {
        let id = usize::from(id);
        self.bits[id / 64] |= 1 << (id % 64);
    }

    fn has(&self, id: CategoryId) -> bool {
        let id = usize::from(id);
        self.bits[id / 64] & (1 << (id % 64)) != 0
    }

    /// True when the merchant's category name or its MCC's category is in the set.
    pub fn matches(&self, m: &MerchantCategory<'_>) -> bool {
        m.by_name.is_some_and(|id| self.has(id))
            || m.by_mcc.is_some_and(|id| self.has(id))
            || (m.by_name.is_none() && self.unknown.iter().any(|n| &**n == m.name))
    }

    /// Names outside Stripe's table, matched verbatim (for a store that evaluates
    /// the set in SQL, and the decision log's encoding of controls, `journal::seen`).
    pub fn unknown_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.unknown.iter().map(|n| &**n)
    }

    /// True when nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0) && self.unknown.is_empty()
    }

    /// Category ids in the set (for display and tests).
    #[expect(
        clippy::cast_possible_truncation,
        reason = "COUNT fits a CategoryId (asserted beside category_by_name)"
    )]
    pub fn ids(&self) -> impl Iterator<Item = CategoryId> + '_ {
        (0..COUNT as CategoryId).filter(|id| self.has(*id))
    }
}

/// A set of ISO 3166-1 alpha-2 country codes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountrySet {
    bits: [u64; 11],
}

fn country_index(code: &str) -> Option<usize> {
    match code.as_bytes() {
        [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            let a = usize::from(a.to_ascii_uppercase() - b'A');
            let b = usize::from(b.to_ascii_uppercase() - b'A');
            Some(a * 26 + b)
        }
        _ => None,
    }
}

impl CountrySet {
    /// Adds a country; returns false when `code` is not two ASCII letters.
    pub fn insert(&mut self, code: &str) -> bool {
        match country_index(code) {
            Some(i) => {
                self.bits[i / 64] |= 1 << (i % 64);
                true
            }
            None => false,
        }
    }

    /// True when `code` is a valid alpha-2 code in the set.
    pub fn contains(&self, code: &str) -> bool {
        country_index(code).is_some_and(|i| self.bits[i / 64] & (1 << (i % 64)) != 0)
    }

    /// True when nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }
}

/// Whether the card was physically present (`card_presence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// `present`
    Present,
    /// `not_present`
    NotPresent,
}

impl Presence {
    /// Parses Stripe's value; `None` for a value Stripe added after this code.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "present" => Some(Presence::Present),
            "not_present" => Some(Presence::NotPresent),
            _ => None,
        }
    }
}

/// A set of `card_presence` values.
///
/// Stripe's enum is open: a value it adds later is kept verbatim in `unknown`,
/// so the list stays non-empty (an allow-list of only new values must not turn
/// into "unset" and allow everything) and still matches an authorization
/// reporting the same value, as [`CategorySet`] does for new category names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceSet {
    present: bool,
    not_present: bool,
    unknown: Vec<Box<str>>,
}

impl PresenceSet {
    /// Adds a value.
    pub fn insert(&mut self, p: Presence) {
        match p {
            Presence::Present => self.present = true,
            Presence::NotPresent => self.not_present = true,
        }
    }

    /// Adds Stripe's string; returns false when the value is not one we know (it
    /// is still kept and matched by name).
    pub fn insert_str(&mut self, s: &str) -> bool {
        if let Some(p) = Presence::parse(s) {
            self.insert(p);
            true
        } else {
            if !self.unknown.iter().any(|u| &**u == s) {
                self.unknown.push(s.into());
            }
            false
        }
    }

    /// Membership of the authorization's `card_presence` as sent (`""` when
    /// absent or null, which is in no set).
    pub fn contains(&self, p: &str) -> bool {
        match Presence::parse(p) {
            Some(Presence::Present) => self.present,
            Some(Presence::NotPresent) => self.not_present,
            None => !p.is_empty() && self.unknown.iter().any(|u| &**u == p),
        }
    }

    /// True when nothing was inserted.
    pub fn is_empty(&self) -> bool {
        !self.present && !self.not_present && self.unknown.is_empty()
    }

    /// Values outside the ones this build knows, kept verbatim (for the decision
    /// log's encoding of controls, `journal::seen`).
    pub fn unknown_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.unknown.iter().map(|n| &**n)
    }
}

/// A spending-limit window. Stripe's windows are fixed calendar windows in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Interval {
    /// Each authorization on its own.
    PerAuthorization,
    /// Calendar day, from 00:00 UTC.
    Daily,
    /// Week starting Sunday 00:00 UTC (Stripe's definition).
    Weekly,
    /// Calendar month, from the 1st 00:00 UTC.
    Monthly,
    /// Calendar year, from January 1st 00:00 UTC.
    Yearly,
    /// Never resets.
    AllTime,
}

impl Interval {
    /// Every interval, in Stripe's order.
    pub const ALL: [Interval; 6] = [
        Interval::PerAuthorization,
        Interval::Daily,
        Interval::Weekly,
        Interval::Monthly,
        Interval::Yearly,
        Interval::AllTime,
    ];

    /// Parses Stripe's enum string; `None` for a value we do not know (see
    /// [`Interval::parse_open`] for the payload's reading of it).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "per_authorization" => Interval::PerAuthorization,
            "daily" => Interval::Daily,
            "weekly" => Interval::Weekly,
            "monthly" => Interval::Monthly,
            "yearly" => Interval::Yearly,
            "all_time" => Interval::AllTime,
            _ => return None,
        })
    }

    /// Reads an interval from a payload, where Stripe may send a value added after
    /// this code: an unknown interval counts as `all_time`, the window that
    /// contains every other, so the limit still guards (as tightly as any known
    /// window could) instead of being dropped. Returns whether the value was known.
    pub fn parse_open(s: &str) -> (Self, bool) {
        match Interval::parse(s) {
            Some(i) => (i, true),
            None => (Interval::AllTime, false),
        }
    }

    /// Stripe's enum string.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::PerAuthorization => "per_authorization",
            Interval::Daily => "daily",
            Interval::Weekly => "weekly",
            Interval::Monthly => "monthly",
            Interval::Yearly => "yearly",
            Interval::AllTime => "all_time",
        }
    }
}

/// One entry of `spending_limits`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendingLimit {
    /// Maximum spend in the window, smallest currency unit of the controls' currency.
    pub amount: i64,
    /// The window.
    pub interval: Interval,
    /// Only spend in these categories counts and is guarded; `None` = all categories.
    pub categories: Option<CategorySet>,
}

impl SpendingLimit {
    /// Whether this limit guards a purchase in `m`.
    pub fn applies_to(&self, m: &MerchantCategory<'_>) -> bool {
        self.categories.as_ref().is_none_or(|c| c.matches(m))
    }
}

/// A three-letter ISO 4217 currency code, lowercase as Stripe sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Parses a code; case-insensitive, stored lowercase.
    pub fn parse(s: &str) -> Option<Self> {
        match s.as_bytes() {
            [a, b, c] if s.bytes().all(|x| x.is_ascii_alphabetic()) => Some(Currency([
                a.to_ascii_lowercase(),
                b.to_ascii_lowercase(),
                c.to_ascii_lowercase(),
            ])),
            _ => None,
        }
    }

    /// The lowercase code.
    pub fn as_str(&self) -> &str {
        // The bytes are ASCII letters by construction (or zero for Default, which
        // is also valid UTF-8), so this cannot fail; fall back to "" defensively.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One level of spending controls (card, cardholder or program).
///
/// Stripe treats an empty allow/block list as unset, and so do we: `None` and an
/// empty set both mean "no restriction".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Controls {
    /// Only these categories may spend.
    pub allowed_categories: Option<CategorySet>,
    /// These categories decline.
    pub blocked_categories: Option<CategorySet>,
    /// Only merchants in these countries may be paid.
    pub allowed_merchant_countries: Option<CountrySet>,
    /// Merchants in these countries decline.
    pub blocked_merchant_countries: Option<CountrySet>,
    /// Only these card presences may spend.
    pub allowed_card_presences: Option<PresenceSet>,
    /// These card presences decline.
    pub blocked_card_presences: Option<PresenceSet>,
    /// Amount limits.
    pub spending_limits: Vec<SpendingLimit>,
    /// Currency of every limit amount; `None` = the authorization's currency.
    pub spending_limits_currency: Option<Currency>,
}

/// An MCC or an inclusive MCC range, e.g. `7995` or `3000-3299`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MccRange {
    /// First MCC.
    pub lo: u16,
    /// Last MCC (inclusive).
    pub hi: u16,
}

impl MccRange {
    /// Parses `NNNN` or `NNNN-NNNN`.
    pub fn parse(s: &str) -> Option<Self> {
        let num = |p: &str| {
            let p = p.trim();
            (p.len() == 4 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u16>().ok())
                .flatten()
        };
        match s.split_once('-') {
            Some((a, b)) => {
                let (lo, hi) = (num(a)?, num(b)?);
                (lo <= hi).then_some(MccRange { lo, hi })
            }
            None => num(s).map(|v| MccRange { lo: v, hi: v }),
        }
    }

    /// Whether the MCC text falls in the range.
    pub fn contains(&self, mcc: &str) -> bool {
        mcc.len() == 4
            && mcc
                .parse::<u16>()
                .is_ok_and(|v| (self.lo..=self.hi).contains(&v))
    }
}

/// cardgate's own controls from config, checked after Stripe's: where operators
/// tighten what Stripe enforces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProgramControls {
    /// Same shape as a card's controls.
    pub controls: Controls,
    /// MCCs or MCC ranges that decline regardless of category name.
    pub blocked_mccs: Vec<MccRange>,
    /// What to do when a limit's currency differs from the authorization's.
    pub currency_mismatch: CurrencyMismatch,
}

/// Policy for a spending limit in another currency than the authorization. We do
/// not convert (no rates on the hot path), so the safe default is to decline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CurrencyMismatch {
    /// Decline with reason `currency_mismatch`.
    #[default]
    Decline,
    /// Skip the limit.
    Ignore,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tsv_row_is_in_the_table() {
        let tsv = include_str!("../../data/stripe-categories.tsv");
        let mut n = 0;
        for line in tsv.lines().skip(1) {
            let cols: Vec<&str> = line.split('\t').collect();
            assert_eq!(cols.len(), 3, "bad row {line:?}");
            let id = category_by_name(cols[0]).unwrap_or_else(|| panic!("{} missing", cols[0]));
            let row = CATEGORIES[usize::from(id)];
            assert_eq!((row.mcc, row.label), (cols[1], cols[2]), "row {line:?}");
            if !cols[1].is_empty() {
                assert_eq!(category_by_mcc(cols[1]), Some(id), "mcc of {line:?}");
            }
            n += 1;
        }
        assert_eq!(n, COUNT);
    }

    #[test]
    fn category_matches_by_name_or_mcc() {
        let mut set = CategorySet::default();
        assert!(set.insert_name("betting_casino_gambling"));
        assert!(set.matches(&MerchantCategory::new("betting_casino_gambling", "0000")));
        assert!(set.matches(&MerchantCategory::new("miscellaneous", "7995")));
        assert!(!set.matches(&MerchantCategory::new("bakeries", "5462")));
        assert!(!set.insert_name("brand_new_category"));
        assert!(set.matches(&MerchantCategory::new("brand_new_category", "")));
    }

    #[test]
    fn countries_and_mcc_ranges() {
        let mut c = CountrySet::default();
        assert!(c.insert("kp"));
        assert!(!c.insert("KOR"));
        assert!(c.contains("KP") && !c.contains("US") && !c.contains(""));
        let r = MccRange::parse("3000-3299").unwrap();
        assert!(r.contains("3000") && r.contains("3299") && !r.contains("3300"));
        assert_eq!(MccRange::parse("99"), None);
        assert_eq!(MccRange::parse("5000-4000"), None);
    }

    #[test]
    fn currency_is_lowercased() {
        assert_eq!(Currency::parse("USD").unwrap().as_str(), "usd");
        assert_eq!(Currency::parse("us"), None);
    }
}

//! What one live decision saw beyond its event body, recorded compactly in the
//! decision log so the backtest rebuilds the decision's [`Context`] exactly.
//!
//! *Recorded, not re-derived.* The alternative — replaying the ledger facts in
//! arrival order beside the decisions — cannot see what never reached the ledger
//! (overrides and allowances then active, the program controls of the config then
//! in force, the clock `decide()` read, whether the reserve's re-check cut the
//! answer), depends on the interleaving of concurrent requests, and would re-apply
//! every fact since the store began for each backtest. A few dozen bytes per row
//! are cheaper and exact by construction.
//!
//! A [`Seen`] holds: the clock; the card's and cardholder's unfiltered totals per
//! interval window and the velocity counts (what rules read as `spend.*` and
//! `velocity.card.*`); the spend under every interval limit with a `categories`
//! filter, in [`for_each_filtered_limit`] order (the same limits `decide()` checks,
//! which the replay rebuilds from the same inputs); whether an allowance covered the
//! request; whether the re-check cut it; the behavioural signals; and, by hash, the
//! program controls and overrides, whose bodies ([`encode_program`],
//! [`encode_controls`]) the store keeps once each. Encoding: a format byte, then
//! zig-zag LEB128 integers — no JSON on the hot path.

use crate::decision::{
    AuthRequest, CategorySet, Controls, CountrySet, Currency, CurrencyMismatch, Interval, MccRange,
    MerchantCategory, Presence, PresenceSet, ProgramControls, Scope, Signals, SpendingLimit,
};

/// The order of [`Seen::card`] and [`Seen::cardholder`]: every accumulating interval.
pub const WINDOWS: [Interval; 5] = [
    Interval::Daily,
    Interval::Weekly,
    Interval::Monthly,
    Interval::Yearly,
    Interval::AllTime,
];

/// The `format` of a decision-log row that carries an encoded [`Seen`].
pub const SEEN_FORMAT: i64 = 1;

/// Rows recorded before exact replay existed: replayed from their window totals,
/// reported as approximate.
pub const LEGACY_FORMAT: i64 = 0;

/// What a live decision saw that its event body does not carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// The clock `decide()` read, Unix seconds.
    pub now: i64,
    /// The request's window time: its `created`, else `now` (what the ledger's
    /// windows and the signals go by).
    pub at: i64,
    /// The card's totals per window ([`WINDOWS`] order), all categories, in
    /// the authorization's currency.
    pub card: [i64; 5],
    /// The cardholder's totals, likewise.
    pub cardholder: [i64; 5],
    /// The card's authorizations in the last hour and day (the ledger's count).
    pub velocity: (i64, i64),
    /// Spend under each category-filtered interval limit, in
    /// [`for_each_filtered_limit`] order.
    pub filtered: Vec<i64>,
    /// An approved allowance covered this retry.
    pub review_allowed: bool,
    /// The reserve's atomic re-check found less room than the snapshot and cut the
    /// answer (to the logged partial amount, or to a decline).
    pub recheck_cut: bool,
    /// Hash of the program controls in force ([`encode_program`]).
    pub program: i64,
    /// Hash of the card's override, if one applied ([`encode_controls`]).
    pub card_override: Option<i64>,
    /// Hash of the cardholder's override, if one applied.
    pub cardholder_override: Option<i64>,
    /// The behavioural signals the decision read.
    pub signals: Signals,
    /// The merchant the signals keyed the request by (`signals::merchant_key`), so
    /// the signal state can be rebuilt from the log without re-parsing events.
    pub merchant: u32,
}

/// Why a recorded body could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable replay record: {0}")]
pub struct CodecError(&'static str);

const REVIEW_ALLOWED: u8 = 1;
const RECHECK_CUT: u8 = 2;
const CARD_OVERRIDE: u8 = 4;
const CARDHOLDER_OVERRIDE: u8 = 8;

impl Seen {
    /// The compact encoding (format [`SEEN_FORMAT`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Enc(Vec::with_capacity(64));
        let flags = (u8::from(self.review_allowed) * REVIEW_ALLOWED)
            | (u8::from(self.recheck_cut) * RECHECK_CUT)
            | (u8::from(self.card_override.is_some()) * CARD_OVERRIDE)
            | (u8::from(self.cardholder_override.is_some()) * CARDHOLDER_OVERRIDE);
        w.0.push(flags);
        w.int(self.now);
        w.int(self.now.wrapping_sub(self.at));
        for v in self.card.iter().chain(&self.cardholder) {
            w.int(*v);
        }
        w.int(self.velocity.0);
        w.int(self.velocity.1);
        w.fixed(self.program);
        for h in [self.card_override, self.cardholder_override]
            .into_iter()
            .flatten()
        {
            w.fixed(h);
        }
        w.len(self.filtered.len());
        for v in &self.filtered {
            w.int(*v);
        }
        let s = &self.signals;
        for v in [
            s.cardholder_count_1h,
            s.cardholder_count_24h,
            s.card_amount_24h,
            s.card_declines_1h,
            s.card_declines_24h,
            s.card_distinct_merchants_1h,
            s.first_seen,
            s.amount_avg_30d,
            s.amount_max_30d,
            s.seconds_since_last,
        ] {
            w.int(v);
        }
        w.0.push(u8::from(s.new_merchant));
        w.0.extend_from_slice(&s.last_country);
        w.0.extend_from_slice(&self.merchant.to_le_bytes());
        w.0
    }

    /// Reads [`Seen::encode`]'s output back.
    ///
    /// # Errors
    /// A truncated or malformed body.
    pub fn decode(bytes: &[u8]) -> Result<Seen, CodecError> {
        let mut r = Dec { buf: bytes, at: 0 };
        let flags = r.byte()?;
        let now = r.int()?;
        let mut s = Seen {
            now,
            at: now.wrapping_sub(r.int()?),
            review_allowed: flags & REVIEW_ALLOWED != 0,
            recheck_cut: flags & RECHECK_CUT != 0,
            ..Seen::default()
        };
        for v in s.card.iter_mut().chain(s.cardholder.iter_mut()) {
            *v = r.int()?;
        }
        s.velocity = (r.int()?, r.int()?);
        s.program = r.fixed()?;
        if flags & CARD_OVERRIDE != 0 {
            s.card_override = Some(r.fixed()?);
        }
        if flags & CARDHOLDER_OVERRIDE != 0 {
            s.cardholder_override = Some(r.fixed()?);
        }
        let n = r.len()?;
        s.filtered = (0..n).map(|_| r.int()).collect::<Result<_, _>>()?;
        let g = &mut s.signals;
        for v in [
            &mut g.cardholder_count_1h,
            &mut g.cardholder_count_24h,
            &mut g.card_amount_24h,
            &mut g.card_declines_1h,
            &mut g.card_declines_24h,
            &mut g.card_distinct_merchants_1h,
            &mut g.first_seen,
            &mut g.amount_avg_30d,
            &mut g.amount_max_30d,
            &mut g.seconds_since_last,
        ] {
            *v = r.int()?;
        }
        g.new_merchant = r.byte()? != 0;
        g.last_country = [r.byte()?, r.byte()?];
        s.merchant = u32::from_le_bytes([r.byte()?, r.byte()?, r.byte()?, r.byte()?]);
        if r.at != bytes.len() {
            return Err(CodecError("trailing bytes"));
        }
        Ok(s)
    }
}

/// Calls `f` with every interval limit that filters by category and guards `auth`,
/// in the order `decide()` checks them: card, cardholder and program controls,
/// then the card's and cardholder's overrides. Limits in another currency are left
/// out (`decide()` never reads their spend). The live record and the replay both
/// walk this order, so the recorded values line up with the limits.
pub fn for_each_filtered_limit<'c>(
    auth: &'c AuthRequest<'c>,
    program: &'c ProgramControls,
    card_override: Option<&'c Controls>,
    cardholder_override: Option<&'c Controls>,
    mut f: impl FnMut(Scope, Interval, &'c CategorySet),
) {
    let category = MerchantCategory::new(auth.merchant.category, auth.merchant.category_code);
    let levels = [
        (Some(&auth.card.controls), Scope::Card),
        (Some(&auth.cardholder.controls), Scope::Cardholder),
        (Some(&program.controls), Scope::Card),
        (card_override, Scope::Card),
        (cardholder_override, Scope::Cardholder),
    ];
    for (controls, scope) in levels {
        let Some(c) = controls else { continue };
        if c.spending_limits_currency.unwrap_or(auth.currency) != auth.currency {
            continue;
        }
        for l in &c.spending_limits {
            if let (Some(cats), false) = (&l.categories, l.interval == Interval::PerAuthorization)
                && cats.matches(&category)
            {
                f(scope, l.interval, cats);
            }
        }
    }
}

/// A stable 64-bit hash of a stored body (FNV-1a): the key the decision log uses
/// for program controls and overrides.
pub fn blob_hash(bytes: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

/// Program controls as the decision log keeps them.
pub fn encode_program(p: &ProgramControls) -> Vec<u8> {
    let mut w = Enc(Vec::new());
    w.controls(&p.controls);
    w.len(p.blocked_mccs.len());
    for r in &p.blocked_mccs {
        w.int(i64::from(r.lo));
        w.int(i64::from(r.hi));
    }
    w.0.push(match p.currency_mismatch {
        CurrencyMismatch::Decline => 0,
        CurrencyMismatch::Ignore => 1,
    });
    w.0
}

/// Reads [`encode_program`]'s output back.
///
/// # Errors
/// A truncated or malformed body.
pub fn decode_program(bytes: &[u8]) -> Result<ProgramControls, CodecError> {
    let mut r = Dec { buf: bytes, at: 0 };
    let controls = r.controls()?;
    let n = r.len()?;
    let mut blocked_mccs = Vec::with_capacity(n);
    for _ in 0..n {
        let lo = u16::try_from(r.int()?).map_err(|_| CodecError("mcc"))?;
        let hi = u16::try_from(r.int()?).map_err(|_| CodecError("mcc"))?;
        blocked_mccs.push(MccRange { lo, hi });
    }
    let currency_mismatch = match r.byte()? {
        0 => CurrencyMismatch::Decline,
        1 => CurrencyMismatch::Ignore,
        _ => return Err(CodecError("currency_mismatch")),
    };
    Ok(ProgramControls {
        controls,
        blocked_mccs,
        currency_mismatch,
    })
}

/// One level of controls (an override) as the decision log keeps it.
pub fn encode_controls(c: &Controls) -> Vec<u8> {
    let mut w = Enc(Vec::new());
    w.controls(c);
    w.0
}

/// Reads [`encode_controls`]'s output back.
///
/// # Errors
/// A truncated or malformed body.
pub fn decode_controls(bytes: &[u8]) -> Result<Controls, CodecError> {
    Dec { buf: bytes, at: 0 }.controls()
}

// === the wire: zig-zag LEB128 integers, length-prefixed strings ===

struct Enc(Vec<u8>);

impl Enc {
    fn uint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(u8::try_from(v & 0x7f).unwrap_or(0) | 0x80);
            v >>= 7;
        }
        self.0.push(u8::try_from(v).unwrap_or(0));
    }

    fn int(&mut self, v: i64) {
        let z = (v << 1) ^ (v >> 63);
        self.uint(u64::from_ne_bytes(z.to_ne_bytes()));
    }

    fn len(&mut self, n: usize) {
        self.uint(u64::try_from(n).unwrap_or(u64::MAX));
    }

    fn fixed(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn categories(&mut self, set: Option<&CategorySet>) {
        let Some(set) = set else {
            self.0.push(0);
            return;
        };
        self.0.push(1);
        let ids: Vec<u16> = set.ids().collect();
        self.len(ids.len());
        for id in ids {
            self.uint(u64::from(id));
        }
        let unknown: Vec<&str> = set.unknown_names().collect();
        self.len(unknown.len());
        for n in unknown {
            self.str(n);
        }
    }

    fn countries(&mut self, set: Option<&CountrySet>) {
        let Some(set) = set else {
            self.0.push(0);
            return;
        };
        self.0.push(1);
        let codes: Vec<[u8; 2]> = all_countries()
            .filter(|c| set.contains(std::str::from_utf8(c).unwrap_or("")))
            .collect();
        self.len(codes.len());
        for c in codes {
            self.0.extend_from_slice(&c);
        }
    }

    fn presences(&mut self, set: Option<&PresenceSet>) {
        let Some(s) = set else {
            self.0.push(0);
            return;
        };
        // Values Stripe added after this build (kept by name) follow as strings.
        let unknown: Vec<&str> = s.unknown_names().collect();
        self.0.push(
            1 | (u8::from(s.contains("present")) * 2)
                | (u8::from(s.contains("not_present")) * 4)
                | (u8::from(!unknown.is_empty()) * 8),
        );
        if !unknown.is_empty() {
            self.len(unknown.len());
            for u in unknown {
                self.str(u);
            }
        }
    }

    fn controls(&mut self, c: &Controls) {
        self.categories(c.allowed_categories.as_ref());
        self.categories(c.blocked_categories.as_ref());
        self.countries(c.allowed_merchant_countries.as_ref());
        self.countries(c.blocked_merchant_countries.as_ref());
        self.presences(c.allowed_card_presences.as_ref());
        self.presences(c.blocked_card_presences.as_ref());
        self.len(c.spending_limits.len());
        for l in &c.spending_limits {
            self.int(l.amount);
            self.0.push(interval_code(l.interval));
            self.categories(l.categories.as_ref());
        }
        match c.spending_limits_currency {
            Some(cur) => {
                self.0.push(1);
                self.str(cur.as_str());
            }
            None => self.0.push(0),
        }
    }
}

fn all_countries() -> impl Iterator<Item = [u8; 2]> {
    (b'A'..=b'Z').flat_map(|a| (b'A'..=b'Z').map(move |b| [a, b]))
}

fn interval_code(i: Interval) -> u8 {
    match i {
        Interval::PerAuthorization => 0,
        Interval::Daily => 1,
        Interval::Weekly => 2,
        Interval::Monthly => 3,
        Interval::Yearly => 4,
        Interval::AllTime => 5,
    }
}

struct Dec<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Dec<'a> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let b = *self.buf.get(self.at).ok_or(CodecError("truncated"))?;
        self.at += 1;
        Ok(b)
    }

    fn uint(&mut self) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError("varint too long"))
    }

    fn int(&mut self) -> Result<i64, CodecError> {
        let z = i64::from_ne_bytes(self.uint()?.to_ne_bytes());
        Ok(((z >> 1) & i64::MAX) ^ -(z & 1))
    }

    fn len(&mut self) -> Result<usize, CodecError> {
        let n = usize::try_from(self.uint()?).map_err(|_| CodecError("length"))?;
        // Every element takes at least one byte: a longer count is corrupt.
        if n > self.buf.len() - self.at {
            return Err(CodecError("length past the end"));
        }
        Ok(n)
    }

    fn fixed(&mut self) -> Result<i64, CodecError> {
        let end = self.at + 8;
        let b = self.buf.get(self.at..end).ok_or(CodecError("truncated"))?;
        self.at = end;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }

    fn str(&mut self) -> Result<&'a str, CodecError> {
        let n = self.len()?;
        let b = &self.buf[self.at..self.at + n];
        self.at += n;
        std::str::from_utf8(b).map_err(|_| CodecError("utf-8"))
    }

    fn categories(&mut self) -> Result<Option<CategorySet>, CodecError> {
        if self.byte()? == 0 {
            return Ok(None);
        }
        let mut set = CategorySet::default();
        for _ in 0..self.len()? {
            let id = u16::try_from(self.uint()?).map_err(|_| CodecError("category"))?;
            if usize::from(id) >= crate::decision::categories::COUNT {
                return Err(CodecError("category id"));
            }
            set.insert(id);
        }
        for _ in 0..self.len()? {
            set.insert_name(self.str()?);
        }
        Ok(Some(set))
    }

    fn countries(&mut self) -> Result<Option<CountrySet>, CodecError> {
        if self.byte()? == 0 {
            return Ok(None);
        }
        let mut set = CountrySet::default();
        for _ in 0..self.len()? {
            let c = [self.byte()?, self.byte()?];
            set.insert(std::str::from_utf8(&c).map_err(|_| CodecError("country"))?);
        }
        Ok(Some(set))
    }

    fn presences(&mut self) -> Result<Option<PresenceSet>, CodecError> {
        let b = self.byte()?;
        if b & 1 == 0 {
            return Ok(None);
        }
        let mut s = PresenceSet::default();
        if b & 2 != 0 {
            s.insert(Presence::Present);
        }
        if b & 4 != 0 {
            s.insert(Presence::NotPresent);
        }
        if b & 8 != 0 {
            for _ in 0..self.len()? {
                s.insert_str(self.str()?);
            }
        }
        Ok(Some(s))
    }

    fn controls(&mut self) -> Result<Controls, CodecError> {
        let mut c = Controls {
            allowed_categories: self.categories()?,
            blocked_categories: self.categories()?,
            allowed_merchant_countries: self.countries()?,
            blocked_merchant_countries: self.countries()?,
            allowed_card_presences: self.presences()?,
            blocked_card_presences: self.presences()?,
            ..Controls::default()
        };
        for _ in 0..self.len()? {
            let amount = self.int()?;
            let interval = match self.byte()? {
                0 => Interval::PerAuthorization,
                1 => Interval::Daily,
                2 => Interval::Weekly,
                3 => Interval::Monthly,
                4 => Interval::Yearly,
                5 => Interval::AllTime,
                _ => return Err(CodecError("interval")),
            };
            let categories = self.categories()?;
            c.spending_limits.push(SpendingLimit {
                amount,
                interval,
                categories,
            });
        }
        if self.byte()? != 0 {
            c.spending_limits_currency =
                Some(Currency::parse(self.str()?).ok_or(CodecError("currency"))?);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program() -> ProgramControls {
        let mut cats = CategorySet::default();
        cats.insert_name("eating_places_restaurants");
        cats.insert_name("a_category_stripe_added_later");
        let mut countries = CountrySet::default();
        countries.insert("KP");
        countries.insert("IR");
        let mut presences = PresenceSet::default();
        presences.insert(Presence::NotPresent);
        ProgramControls {
            controls: Controls {
                blocked_categories: Some(cats.clone()),
                blocked_merchant_countries: Some(countries),
                blocked_card_presences: Some(presences),
                allowed_categories: Some(CategorySet::default()),
                spending_limits: vec![
                    SpendingLimit {
                        amount: 1_000_000,
                        interval: Interval::PerAuthorization,
                        categories: None,
                    },
                    SpendingLimit {
                        amount: 5_000,
                        interval: Interval::Weekly,
                        categories: Some(cats),
                    },
                ],
                spending_limits_currency: Currency::parse("usd"),
                ..Controls::default()
            },
            blocked_mccs: vec![MccRange::parse("7801-7802").unwrap()],
            currency_mismatch: CurrencyMismatch::Ignore,
        }
    }

    #[test]
    fn program_controls_round_trip() {
        let p = program();
        let bytes = encode_program(&p);
        assert_eq!(decode_program(&bytes).unwrap(), p);
        assert_eq!(blob_hash(&bytes), blob_hash(&encode_program(&p)));
        let c = &p.controls;
        assert_eq!(decode_controls(&encode_controls(c)).unwrap(), *c);
    }

    #[test]
    fn seen_round_trips_and_refuses_truncation() {
        let s = Seen {
            now: 1_764_000_000,
            at: 1_763_999_990,
            card: [1, 2, 3, 4, -5],
            cardholder: [6, 7, 8, 9, i64::MAX],
            velocity: (3, 9),
            filtered: vec![0, 4200, i64::MIN],
            review_allowed: true,
            recheck_cut: false,
            program: -42,
            card_override: None,
            cardholder_override: Some(7),
            merchant: 0xdead_beef,
            signals: Signals {
                cardholder_count_1h: 2,
                first_seen: 86_400,
                new_merchant: true,
                last_country: *b"US",
                ..Signals::default()
            },
        };
        let bytes = s.encode();
        assert!(bytes.len() < 120, "compact: {} bytes", bytes.len());
        assert_eq!(Seen::decode(&bytes).unwrap(), s);
        for cut in 0..bytes.len() {
            assert!(Seen::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}

//! The plan: a SplitMix64 generator per cardholder and, from it, every purchase
//! (time, card, merchant, amount, controllability) and the fate of each approval.

use super::{Fates, Scenario, parse_date};

/// SplitMix64: tiny, fast, and fixed forever (see the module docs).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `p` (decided on integers: 2⁻³² resolution).
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "`p` is clamped to [0, 1], so the product is in [0, 2^32]"
    )]
    fn chance(&mut self, p: f64) -> bool {
        let threshold = (p.clamp(0.0, 1.0) * 4_294_967_296.0) as u64;
        (self.next() >> 32) < threshold
    }

    /// In `[lo, hi]`, skewed towards `lo` (square of a uniform): many small
    /// purchases, a few large ones. Integer-only, so the same on every machine.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "(span * u * u) >> 40 is at most span, itself an i64 difference"
    )]
    fn skewed(&mut self, lo: i64, hi: i64) -> i64 {
        let u = i128::from(self.next() >> 44); // 20 bits
        let span = i128::from(hi - lo);
        lo + ((span * u * u) >> 40) as i64
    }
}

/// What happens to an approved authorization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    Capture,
    PartialCapture,
    OverCapture,
    Reverse,
    PartialReverse,
    Expire,
    Increment,
    Pending,
}

#[derive(Debug, Clone)]
pub(super) struct Purchase {
    pub(super) at: i64,
    pub(super) card: usize,
    pub(super) merchant: usize,
    pub(super) amount: i64,
    pub(super) controllable: bool,
    pub(super) fate: Fate,
    /// Per-mille for partial amounts (capture, reversal, tip, increment size).
    pub(super) share: i64,
    /// Seconds after the purchase when the fate's first step runs.
    pub(super) delay: i64,
}

#[expect(
    clippy::cast_precision_loss,
    reason = "53 random bits over 2^53, both exact in f64: a uniform in [0, 1)"
)]
fn pick_fate(f: &Fates, rng: &mut Rng) -> Fate {
    let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    let mut acc = 0.0;
    for (p, fate) in [
        (f.capture, Fate::Capture),
        (f.partial_capture, Fate::PartialCapture),
        (f.over_capture, Fate::OverCapture),
        (f.reverse, Fate::Reverse),
        (f.partial_reverse, Fate::PartialReverse),
        (f.expire, Fate::Expire),
        (f.increment, Fate::Increment),
    ] {
        acc += p;
        if u < acc {
            return fate;
        }
    }
    Fate::Pending
}

/// Cardholder `index`'s purchases, in time order.
#[expect(
    clippy::cast_possible_wrap,
    reason = "the ranges cast to i64 have small constant bounds (at most 20 hours of seconds)"
)]
pub(super) fn plan(s: &Scenario, seed: u64, index: u32) -> Vec<Purchase> {
    let mut rng = Rng::new(seed, u64::from(index) + 1);
    let start = parse_date(&s.start).unwrap_or(0);
    let total_weight: u64 = s.merchants.iter().map(|m| u64::from(m.weight)).sum();
    let mut out = Vec::new();
    for day in 0..i64::from(s.days) {
        for card in 0..s.cards_per_cardholder as usize {
            let [lo, hi] = s.purchases_per_card_per_day;
            let n = rng.range(u64::from(lo), u64::from(hi));
            for _ in 0..n {
                let mut w = rng.range(0, total_weight.saturating_sub(1));
                let merchant = s
                    .merchants
                    .iter()
                    .position(|m| {
                        if w < u64::from(m.weight) {
                            true
                        } else {
                            w -= u64::from(m.weight);
                            false
                        }
                    })
                    .unwrap_or(0);
                let m = &s.merchants[merchant];
                out.push(Purchase {
                    at: start + day * 86_400 + rng.range(0, 86_399) as i64,
                    card,
                    merchant,
                    amount: rng.skewed(m.amount[0], m.amount[1]),
                    controllable: rng.chance(m.controllable),
                    fate: pick_fate(&s.fates, &mut rng),
                    share: rng.range(200, 900) as i64,
                    delay: rng.range(60, 20 * 3600) as i64,
                });
            }
        }
    }
    // Stable: equal times keep their generation order.
    out.sort_by_key(|p| p.at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_scenario_is_valid_and_plans_deterministically() {
        let s = Scenario::parse(super::super::tests::EXAMPLE, "config/scenario.toml").unwrap();
        let a: Vec<_> = plan(&s, 7, 0)
            .iter()
            .map(|p| (p.at, p.amount, p.merchant))
            .collect();
        let b: Vec<_> = plan(&s, 7, 0)
            .iter()
            .map(|p| (p.at, p.amount, p.merchant))
            .collect();
        assert_eq!(a, b);
        let c: Vec<_> = plan(&s, 8, 0)
            .iter()
            .map(|p| (p.at, p.amount, p.merchant))
            .collect();
        assert_ne!(a, c);
        assert!(s.purchases(7) > 0);
        for p in plan(&s, 7, 3) {
            let m = &s.merchants[p.merchant];
            assert!((m.amount[0]..=m.amount[1]).contains(&p.amount));
        }
    }

    #[test]
    fn randomness_is_fixed() {
        // SplitMix64's published first output for seed 0 after one step.
        let mut r = Rng(0);
        assert_eq!(r.next(), 0xE220_A839_7B1D_CDAF);
        let mut r = Rng::new(1, 1);
        for _ in 0..1000 {
            let v = r.skewed(100, 200);
            assert!((100..=200).contains(&v));
            assert!(r.range(3, 5) >= 3);
        }
    }
}

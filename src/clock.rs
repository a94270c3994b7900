//! The one clock every module reads wall time through.
//!
//! Owns "what time is it" for the whole crate: the decision path, the ledger's
//! windows, approval expiry, key expiry, the outbox's back-off and the emulator all
//! take a [`Clock`] (or a `now` read from one) instead of calling
//! `SystemTime::now()` themselves. *Why:* a test moves one clock forward instead of
//! sleeping, and every module agrees on the same instant when it does.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Unix seconds: wall time plus an offset, or a fixed instant plus an offset.
///
/// Cheap to clone (one `Arc`); clones share the offset, so advancing one advances
/// every holder. The offset exists for tests and for
/// `CARDGATE_APPROVALS_CLOCK_OFFSET_SECONDS`; production runs at offset 0.
#[derive(Debug, Clone, Default)]
pub struct Clock(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// `None` follows the wall clock; `Some(t)` stands still at `t` (tests).
    fixed: Option<i64>,
    offset: AtomicI64,
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Clock::default()
    }

    /// Wall time shifted by `offset` seconds.
    pub fn with_offset(offset: i64) -> Self {
        Clock(Arc::new(Inner {
            fixed: None,
            offset: AtomicI64::new(offset),
        }))
    }

    /// A clock that stands at `unix_seconds` until [`advance`](Self::advance)d.
    pub fn fixed(unix_seconds: i64) -> Self {
        Clock(Arc::new(Inner {
            fixed: Some(unix_seconds),
            offset: AtomicI64::new(0),
        }))
    }

    /// Unix seconds now.
    pub fn now(&self) -> i64 {
        let base = self.0.fixed.unwrap_or_else(wall_seconds);
        base + self.0.offset.load(Ordering::Relaxed)
    }

    /// Unix milliseconds now, on the same base and offset as [`now`](Self::now):
    /// the outbox schedules retries finer than whole seconds.
    pub fn now_millis(&self) -> i64 {
        let base = self
            .0
            .fixed
            .map_or_else(wall_millis, |s| s.saturating_mul(1000));
        base.saturating_add(self.0.offset.load(Ordering::Relaxed).saturating_mul(1000))
    }

    /// Moves the clock (and every clone of it) forward by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.0.offset.fetch_add(seconds, Ordering::Relaxed);
    }
}

fn wall_seconds() -> i64 {
    wall_millis().div_euclid(1000)
}

/// The only read of the system clock in the crate.
#[expect(
    clippy::disallowed_methods,
    reason = "this is the one reader that clippy.toml's ban points everyone else to"
)]
fn wall_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn fixed_clock_stands_still_until_advanced_and_clones_share_it() {
        let c = Clock::fixed(1_000);
        let d = c.clone();
        assert_eq!(c.now(), 1_000);
        d.advance(30);
        assert_eq!(c.now(), 1_030);
        assert_eq!(c.now_millis(), 1_030_000);
    }

    #[test]
    fn offset_clock_follows_the_wall_clock() {
        let wall = Clock::system().now();
        let ahead = Clock::with_offset(3_600).now();
        assert!(ahead - wall >= 3_600 && ahead - wall <= 3_602);
    }
}

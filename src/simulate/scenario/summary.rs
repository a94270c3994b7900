//! The run's report: counts by outcome, reason and lifecycle step, oracle
//! disagreements, and latency percentiles kept apart from what the seed decides.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// What a run did, and how it went.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Seed used.
    pub seed: u64,
    /// Authorizations created.
    pub authorizations: u64,
    /// Increment requests.
    pub increments: u64,
    /// Requests approved in full.
    pub approved: u64,
    /// Requests approved for less.
    pub partial: u64,
    /// Requests declined.
    pub declined: u64,
    /// Requests by `request_history.reason`.
    pub by_reason: BTreeMap<String, u64>,
    /// Requests by cardgate's `metadata.reason`.
    pub by_cardgate_reason: BTreeMap<String, u64>,
    /// Captures by kind (`full`, `partial`, `over`, `late`).
    pub captures: BTreeMap<&'static str, u64>,
    /// Full reversals.
    pub reversals: u64,
    /// Partial reversals.
    pub partial_reversals: u64,
    /// Expiries.
    pub expiries: u64,
    /// Sum of approved amounts.
    pub approved_amount: i64,
    /// Sum of captured amounts.
    pub captured_amount: i64,
    /// Lifecycle events cardgate did not accept.
    pub undelivered: u64,
    /// Emulator calls that failed (should be none).
    pub errors: Vec<String>,
    /// Requests whose answer differs from the oracle's.
    pub disagreements: u64,
    /// The first few disagreements, described.
    pub disagreement_samples: Vec<String>,
    /// Request webhook round trips.
    pub latencies: Vec<Duration>,
}

pub(super) const SAMPLES: usize = 10;

impl Summary {
    pub(super) fn merge(&mut self, o: Summary) {
        self.authorizations += o.authorizations;
        self.increments += o.increments;
        self.approved += o.approved;
        self.partial += o.partial;
        self.declined += o.declined;
        for (k, v) in o.by_reason {
            *self.by_reason.entry(k).or_default() += v;
        }
        for (k, v) in o.by_cardgate_reason {
            *self.by_cardgate_reason.entry(k).or_default() += v;
        }
        for (k, v) in o.captures {
            *self.captures.entry(k).or_default() += v;
        }
        self.reversals += o.reversals;
        self.partial_reversals += o.partial_reversals;
        self.expiries += o.expiries;
        self.approved_amount += o.approved_amount;
        self.captured_amount += o.captured_amount;
        self.undelivered += o.undelivered;
        self.errors.extend(o.errors);
        self.disagreements += o.disagreements;
        for d in o.disagreement_samples {
            if self.disagreement_samples.len() < SAMPLES {
                self.disagreement_samples.push(d);
            }
        }
        self.latencies.extend(o.latencies);
    }

    /// Latency at quantile `q` (nearest rank), if any request was sent.
    #[expect(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "a nearest rank: `q` times a sample count, rounded up and clamped to the samples"
    )]
    pub fn latency(&self, q: f64) -> Option<Duration> {
        let mut l = self.latencies.clone();
        if l.is_empty() {
            return None;
        }
        l.sort();
        let rank = ((q * l.len() as f64).ceil() as usize).clamp(1, l.len());
        Some(l[rank - 1])
    }

    /// The report: everything that follows from the seed, then the latencies.
    pub fn render(&self) -> String {
        let mut out = self.render_outcomes();
        out.push_str("latency (request webhook round trip):");
        match (
            self.latency(0.5),
            self.latency(0.9),
            self.latency(0.99),
            self.latency(1.0),
        ) {
            (Some(p50), Some(p90), Some(p99), Some(max)) => {
                // Writing to a String cannot fail.
                let _ = writeln!(
                    out,
                    " p50 {} p90 {} p99 {} max {}",
                    ms(p50),
                    ms(p90),
                    ms(p99),
                    ms(max)
                );
            }
            _ => out.push_str(" none sent\n"),
        }
        out
    }

    /// The part of the report that the seed alone decides.
    pub fn render_outcomes(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_outcomes(&mut out);
        out
    }

    fn write_outcomes(&self, out: &mut String) -> std::fmt::Result {
        let requests = self.approved + self.partial + self.declined;
        writeln!(
            out,
            "seed {}: {} authorizations, {} increments, {} requests",
            self.seed, self.authorizations, self.increments, requests
        )?;
        writeln!(
            out,
            "decisions: approved {}  partial {}  declined {}",
            self.approved, self.partial, self.declined
        )?;
        writeln!(out, "by request_history.reason:")?;
        for (k, v) in &self.by_reason {
            writeln!(out, "  {k:<28} {v}")?;
        }
        writeln!(out, "by cardgate metadata.reason:")?;
        for (k, v) in &self.by_cardgate_reason {
            writeln!(out, "  {k:<28} {v}")?;
        }
        let captures: Vec<String> = self
            .captures
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(
            out,
            "lifecycle: captures [{}]  reversals {}  partial reversals {}  expiries {}",
            captures.join(", "),
            self.reversals,
            self.partial_reversals,
            self.expiries
        )?;
        writeln!(
            out,
            "amounts: approved {}  captured {}",
            self.approved_amount, self.captured_amount
        )?;
        writeln!(
            out,
            "delivery: {} lifecycle events not accepted, {} emulator errors",
            self.undelivered,
            self.errors.len()
        )?;
        for e in self.errors.iter().take(SAMPLES) {
            writeln!(out, "  error: {e}")?;
        }
        writeln!(out, "oracle: {} disagreements", self.disagreements)?;
        for d in &self.disagreement_samples {
            writeln!(out, "  {d}")?;
        }
        Ok(())
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles_and_sections() {
        let mut s = Summary {
            seed: 3,
            latencies: (1..=100).map(Duration::from_millis).collect(),
            ..Summary::default()
        };
        assert_eq!(s.latency(0.5), Some(Duration::from_millis(50)));
        assert_eq!(s.latency(0.99), Some(Duration::from_millis(99)));
        assert_eq!(s.latency(1.0), Some(Duration::from_millis(100)));
        let text = s.render();
        assert!(
            text.contains("p50 50.00ms p90 90.00ms p99 99.00ms max 100.00ms"),
            "{text}"
        );
        assert!(!s.render_outcomes().contains("latency"));
        s.latencies.clear();
        assert!(s.render().contains("none sent"));
    }
}

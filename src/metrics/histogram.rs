//! The histograms cardgate exports, each a fixed set of buckets of atomic counters,
//! and their Prometheus text.
//!
//! *Why not the exporter's histograms:* `metrics-exporter-prometheus` keeps every
//! observation (its value and the time it was made, 16 bytes) in a list until a
//! scrape, or an upkeep the embedding program must run, drains the list into
//! buckets. cardgate ran no upkeep, so a server nobody scraped grew by about 120
//! bytes per request (six observations each; 88 MB after 726,000 requests), and the
//! scrape after a busy interval drained them all on the runtime thread serving it
//! (29 ms for those 726,000). A bucket counter is what Prometheus reads anyway: an
//! observation here is one bucket increment and one add to the sum, memory never
//! grows, and a scrape reads a few dozen counters per series.
//!
//! Values are kept as integer ticks (nanoseconds for durations, the count itself
//! for sizes) so the sum is one atomic add, exact, with no float compare-and-swap.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{
    LATENCY_BUCKETS, STORE_COMMIT_BATCH, STORE_COMMIT_DURATION, Stage, WEBHOOK_DURATION,
    WEBHOOK_STAGE_DURATION,
};

/// Writes per store commit: one bucket per power of two up to `store::MAX_BATCH`.
pub const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Ticks per unit of a family's values.
const NANOS_PER_SECOND: f64 = 1e9;
const ONE: f64 = 1.0;

/// One series: a count per bucket (not cumulative: an observation touches one
/// counter) and the sum of the observed ticks.
#[derive(Debug)]
pub struct Histogram {
    /// Upper bounds in ticks, ascending; an observation equal to a bound falls in
    /// that bound's bucket (Prometheus's `le`).
    bounds: Box<[u64]>,
    /// One counter per bound, then the `+Inf` bucket.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: &[f64], ticks_per_unit: f64) -> Self {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "bounds are small positive constants (at most 2 s, or 1024)"
        )]
        let bounds: Box<[u64]> = bounds
            .iter()
            .map(|b| (b * ticks_per_unit).round() as u64)
            .collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Histogram {
            bounds,
            counts,
            sum: AtomicU64::new(0),
        }
    }

    /// Counts one observation of `ticks`.
    pub fn observe(&self, ticks: u64) {
        let i = self.bounds.partition_point(|&b| b < ticks);
        // Relaxed: each counter is read on its own; a scrape between the two adds
        // sees the count before the sum, which Prometheus tolerates (rates settle
        // at the next scrape).
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(ticks, Ordering::Relaxed);
    }

    /// Counts one duration (ticks are nanoseconds).
    pub fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// The series' lines: cumulative buckets, `+Inf`, sum and count. The count is
    /// the `+Inf` bucket by construction, so the two always agree.
    #[expect(
        clippy::cast_precision_loss,
        reason = "a sum of nanoseconds rendered as seconds: f64's 53 bits are the exposition format's precision"
    )]
    fn render(&self, out: &mut String, name: &str, labels: &str, les: &[String], per_unit: f64) {
        let mut cumulative = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Ordering::Relaxed);
            let le = les.get(i).map_or("+Inf", String::as_str);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum.load(Ordering::Relaxed) as f64 / per_unit;
        let braces = labels.trim_end_matches(',');
        let braces = if braces.is_empty() {
            String::new()
        } else {
            format!("{{{braces}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// One family: its name, help, bucket bounds as Prometheus prints them, and its
/// series by the value of its one label (or one unlabelled series).
struct Family {
    name: &'static str,
    help: &'static str,
    label: Option<&'static str>,
    les: Vec<String>,
    per_unit: f64,
    series: Vec<(&'static str, Histogram)>,
}

impl Family {
    fn new(
        name: &'static str,
        help: &'static str,
        bounds: &[f64],
        per_unit: f64,
        label: Option<(&'static str, &[&'static str])>,
    ) -> Self {
        let values: &[&'static str] = label.map_or(&[""], |(_, v)| v);
        Family {
            name,
            help,
            label: label.map(|(n, _)| n),
            les: bounds.iter().map(f64::to_string).collect(),
            per_unit,
            series: values
                .iter()
                .map(|v| (*v, Histogram::new(bounds, per_unit)))
                .collect(),
        }
    }

    fn render(&self, out: &mut String) {
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}", self.help);
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (value, h) in &self.series {
            let labels = self
                .label
                .map(|l| format!("{l}=\"{value}\","))
                .unwrap_or_default();
            h.render(out, name, &labels, &self.les, self.per_unit);
        }
        out.push('\n');
    }

    fn series(&self, i: usize) -> Option<&Histogram> {
        self.series.get(i).map(|(_, h)| h)
    }
}

/// Every histogram family cardgate exports, in `/metrics` order.
struct All {
    webhook: Family,
    stages: Family,
    commit: Family,
    batch: Family,
}

static ALL: LazyLock<All> = LazyLock::new(|| All {
    webhook: Family::new(
        WEBHOOK_DURATION,
        "Webhook handling time.",
        LATENCY_BUCKETS,
        NANOS_PER_SECOND,
        None,
    ),
    stages: Family::new(
        WEBHOOK_STAGE_DURATION,
        "Webhook handling time by stage: verify, parse, decide, reserve, respond.",
        LATENCY_BUCKETS,
        NANOS_PER_SECOND,
        Some(("stage", &Stage::ALL.map(Stage::as_str))),
    ),
    commit: Family::new(
        STORE_COMMIT_DURATION,
        "Store group-commit duration.",
        LATENCY_BUCKETS,
        NANOS_PER_SECOND,
        None,
    ),
    batch: Family::new(
        STORE_COMMIT_BATCH,
        "Writes per store commit.",
        BATCH_BUCKETS,
        ONE,
        None,
    ),
});

/// The names of the families this module exports (and the exporter must not).
#[cfg(test)]
pub const NAMES: [&str; 4] = [
    WEBHOOK_DURATION,
    WEBHOOK_STAGE_DURATION,
    STORE_COMMIT_DURATION,
    STORE_COMMIT_BATCH,
];

/// Appends every histogram family's text to `out`.
pub fn render(out: &mut String) {
    let all = &*ALL;
    for f in [&all.webhook, &all.stages, &all.commit, &all.batch] {
        f.render(out);
    }
}

/// Records one webhook's whole handling time.
pub fn webhook(d: Duration) {
    if let Some(h) = ALL.webhook.series(0) {
        h.observe_duration(d);
    }
}

/// Records one stage's time.
pub fn stage(stage: Stage, d: Duration) {
    if let Some(h) = ALL.stages.series(stage as usize) {
        h.observe_duration(d);
    }
}

/// Records one store commit: its time and how many writes it carried.
pub fn commit(d: Duration, writes: usize) {
    if let Some(h) = ALL.commit.series(0) {
        h.observe_duration(d);
    }
    if let Some(h) = ALL.batch.series(0) {
        h.observe(u64::try_from(writes).unwrap_or(u64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(h: &Histogram, les: &[String], per_unit: f64) -> Vec<String> {
        let mut out = String::new();
        h.render(&mut out, "x", "", les, per_unit);
        out.lines().map(str::to_string).collect()
    }

    #[test]
    fn an_observation_on_a_bound_counts_in_that_bound_bucket() {
        let bounds = [1.0, 2.0, 4.0];
        let les: Vec<String> = bounds.iter().map(f64::to_string).collect();
        let h = Histogram::new(&bounds, ONE);
        for v in [0, 1, 2, 3, 4, 5, 9] {
            h.observe(v);
        }
        assert_eq!(
            lines(&h, &les, ONE),
            [
                "x_bucket{le=\"1\"} 2",
                "x_bucket{le=\"2\"} 3",
                "x_bucket{le=\"4\"} 5",
                "x_bucket{le=\"+Inf\"} 7",
                "x_sum 24",
                "x_count 7",
            ]
        );
    }

    #[test]
    fn durations_render_in_seconds_with_the_exporters_bucket_labels() {
        let les: Vec<String> = LATENCY_BUCKETS.iter().map(f64::to_string).collect();
        let h = Histogram::new(LATENCY_BUCKETS, NANOS_PER_SECOND);
        h.observe_duration(Duration::from_micros(50));
        h.observe_duration(Duration::from_micros(51));
        h.observe_duration(Duration::from_secs(3));
        let out = lines(&h, &les, NANOS_PER_SECOND);
        assert_eq!(out[0], "x_bucket{le=\"0.00005\"} 1");
        assert_eq!(out[1], "x_bucket{le=\"0.0001\"} 2");
        assert!(
            out.contains(&"x_bucket{le=\"0.00075\"} 2".to_string()),
            "{out:?}"
        );
        assert!(out.contains(&"x_bucket{le=\"2\"} 2".to_string()), "{out:?}");
        assert!(
            out.contains(&"x_bucket{le=\"+Inf\"} 3".to_string()),
            "{out:?}"
        );
        assert!(out.contains(&"x_sum 3.000101".to_string()), "{out:?}");
    }

    #[test]
    fn a_labelled_family_renders_each_series_under_one_help_and_type() {
        let f = Family::new(
            "y_seconds",
            "Y.",
            &[0.5],
            NANOS_PER_SECOND,
            Some(("stage", &["a", "b"])),
        );
        f.series(1)
            .unwrap()
            .observe_duration(Duration::from_millis(600));
        let mut out = String::new();
        f.render(&mut out);
        assert_eq!(
            out,
            "# HELP y_seconds Y.\n# TYPE y_seconds histogram\n\
             y_seconds_bucket{stage=\"a\",le=\"0.5\"} 0\n\
             y_seconds_bucket{stage=\"a\",le=\"+Inf\"} 0\n\
             y_seconds_sum{stage=\"a\"} 0\ny_seconds_count{stage=\"a\"} 0\n\
             y_seconds_bucket{stage=\"b\",le=\"0.5\"} 0\n\
             y_seconds_bucket{stage=\"b\",le=\"+Inf\"} 1\n\
             y_seconds_sum{stage=\"b\"} 0.6\ny_seconds_count{stage=\"b\"} 1\n\n"
        );
    }
}

//! The Grafana dashboard and Prometheus alerts shipped in `config/` only query
//! metrics cardgate exports, and only select label values the code emits
//! (`cardgate::metrics::FAMILIES`): a renamed metric or label value must fail here,
//! not on an on-call night with an empty panel or an alert that can never fire.
//! `promtool` checks and unit-tests the alerts; with `CARDGATE_REQUIRE_PROMTOOL=1`
//! (set by `scripts/test`) a missing promtool fails instead of skipping.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

use std::collections::BTreeSet;
use std::process::Command;

use cardgate::metrics::{self, FAMILIES, Family, Kind};
use regex::Regex;
use serde::Deserialize;

const DASHBOARD: &str = include_str!("../config/grafana/cardgate.json");
const ALERTS: &str = include_str!("../config/prometheus/alerts.yml");
const ALERT_TESTS: &str = include_str!("../config/prometheus/alerts_test.yml");

fn metric_names(text: &str) -> BTreeSet<String> {
    let re = Regex::new(r"\bcardgate_[a-z0-9_]*[a-z0-9]").expect("valid regex");
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

/// Every name cardgate exports: the families of `src/metrics.rs`.
fn exported() -> BTreeSet<String> {
    FAMILIES.iter().map(|f| f.name.to_string()).collect()
}

/// A queried name's family: the metric itself, or the histogram it is a series of
/// (`_bucket`, `_sum`, `_count`), with the extra label that series carries.
fn family_of_series(name: &str) -> Option<(&'static Family, Option<&'static str>)> {
    if let Some(f) = metrics::family_of(name) {
        return Some((f, None));
    }
    [("_bucket", Some("le")), ("_sum", None), ("_count", None)]
        .iter()
        .find_map(|(suffix, extra)| {
            let f = metrics::family_of(name.strip_suffix(suffix)?)?;
            (f.kind == Kind::Histogram).then_some((f, *extra))
        })
}

/// A queried name is known if it is exported, or is a histogram's series of one.
fn check_names(source: &str, query: &str, exported: &BTreeSet<String>) {
    for name in metric_names(query) {
        assert!(
            family_of_series(&name).is_some(),
            "{source}: `{name}` is not a metric cardgate exports\n  query: {query}\n  exported: {exported:?}"
        );
    }
}

/// Every `metric{label op "value"}` selector in `query` names a label its metric has
/// and values the code emits for it. Returns the `(metric, label, value)` triples
/// checked, so a test can prove it saw the selectors it expects.
fn check_selectors(source: &str, query: &str) -> Vec<(String, String, String)> {
    let selector = Regex::new(r"\b(cardgate_[a-z0-9_]+)\s*\{([^}]*)\}").expect("valid regex");
    let matcher = Regex::new(r#"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*$"#)
        .expect("valid regex");
    let mut checked = Vec::new();
    for c in selector.captures_iter(query) {
        let name = &c[1];
        let Some((family, extra)) = family_of_series(name) else {
            panic!("{source}: `{name}` is not a metric cardgate exports\n  query: {query}");
        };
        for m in c[2].split(',').filter(|m| !m.trim().is_empty()) {
            let Some(m) = matcher.captures(m) else {
                panic!("{source}: cannot read matcher {m:?} in {query}");
            };
            let (label, op, value) = (&m[1], &m[2], &m[3]);
            if Some(label) == extra {
                continue;
            }
            let Some(l) = family.labels.iter().find(|l| l.name == label) else {
                panic!(
                    "{source}: `{name}` has no label `{label}` (it has {:?})\n  query: {query}",
                    family.labels.iter().map(|l| l.name).collect::<Vec<_>>()
                );
            };
            // Rule names and versions are only known at run time.
            let Some(values) = l.values else { continue };
            let alternatives: Vec<&str> = if op.ends_with('~') {
                assert!(
                    !value.contains(|c: char| "\\.*+?()[]{}^$".contains(c)),
                    "{source}: `{label}{op}\"{value}\"` is more than an alternation of values; \
                     this check reads only `a|b|c`\n  query: {query}"
                );
                value.split('|').collect()
            } else {
                vec![value]
            };
            for v in alternatives {
                assert!(
                    values.contains(&v),
                    "{source}: `{name}` never has {label}=\"{v}\"; the code emits {values:?}\n  query: {query}"
                );
                checked.push((name.to_string(), label.to_string(), v.to_string()));
            }
        }
    }
    checked
}

#[test]
fn metric_constants_are_found() {
    let names = exported();
    for n in [
        "cardgate_webhook_duration_seconds",
        "cardgate_webhook_stage_duration_seconds",
        "cardgate_authorizations_total",
        "cardgate_fallbacks_total",
    ] {
        assert!(names.contains(n), "{n} missing from {names:?}");
    }
}

fn collect_panels<'a>(panels: &'a [serde_json::Value], out: &mut Vec<&'a serde_json::Value>) {
    for p in panels {
        out.push(p);
        if let Some(inner) = p.get("panels").and_then(|v| v.as_array()) {
            collect_panels(inner, out);
        }
    }
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("config/grafana/cardgate.json is valid JSON");
    let exported = exported();
    let mut panels = Vec::new();
    collect_panels(
        dashboard["panels"]
            .as_array()
            .expect("dashboard has panels"),
        &mut panels,
    );
    let mut ids = BTreeSet::new();
    let mut queried = BTreeSet::new();
    let mut selected = Vec::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(
            ids.insert(p["id"].as_i64().expect("numeric id")),
            "duplicate id: {title}"
        );
        let targets = p["targets"].as_array().expect("panel has targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("a PromQL expr");
            check_names(&format!("panel {title:?}"), expr, &exported);
            selected.extend(check_selectors(&format!("panel {title:?}"), expr));
            queried.extend(metric_names(expr));
        }
    }
    // What the dashboard is for: latency by stage, throughput/approval, declines,
    // fallbacks, reloads.
    for must in [
        "cardgate_webhook_stage_duration_seconds_bucket",
        "cardgate_authorizations_total",
        "cardgate_fallbacks_total",
        "cardgate_rule_reloads_total",
    ] {
        assert!(queried.contains(must), "dashboard never queries {must}");
    }
    // The approval-rate and decline panels select outcomes: the checker saw them.
    for outcome in ["approve", "partial", "decline"] {
        assert!(
            selected
                .iter()
                .any(|(m, l, v)| m == "cardgate_authorizations_total"
                    && l == "outcome"
                    && v == outcome),
            "dashboard selectors checked: {selected:?}"
        );
    }
}

#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

#[test]
fn alerts_parse_and_query_only_exported_metrics() {
    let file: RuleFile =
        serde_yaml::from_str(ALERTS).expect("config/prometheus/alerts.yml is a rules file");
    let exported = exported();
    let duration = Regex::new(r"^\d+[smhd]$").expect("valid regex");
    let mut alerts = BTreeSet::new();
    let mut selected = Vec::new();
    for g in &file.groups {
        assert!(!g.name.is_empty());
        for r in &g.rules {
            assert!(
                alerts.insert(r.alert.clone()),
                "duplicate alert {}",
                r.alert
            );
            assert!(
                r.labels.contains_key("severity"),
                "{} has no severity",
                r.alert
            );
            assert!(
                r.annotations.contains_key("summary"),
                "{} has no summary",
                r.alert
            );
            if let Some(f) = &r.for_ {
                assert!(duration.is_match(f), "{}: for {f:?}", r.alert);
            }
            check_names(&format!("alert {}", r.alert), &r.expr, &exported);
            selected.extend(check_selectors(&format!("alert {}", r.alert), &r.expr));
        }
    }
    let queried: BTreeSet<String> = file
        .groups
        .iter()
        .flat_map(|g| &g.rules)
        .flat_map(|r| metric_names(&r.expr))
        .collect();
    for must in [
        "cardgate_webhook_duration_seconds_bucket",
        "cardgate_fallbacks_total",
        "cardgate_authorizations_total",
        "cardgate_store_errors_total",
        "cardgate_rule_reloads_total",
    ] {
        assert!(queried.contains(must), "no alert queries {must}");
    }
    assert!(
        selected.contains(&(
            "cardgate_rule_reloads_total".into(),
            "result".into(),
            "rejected".into()
        )),
        "the reload alert selects the result a rejected reload emits; checked: {selected:?}"
    );
}

/// `CardgateRuleReloadFailed` selected `result="failed"`, which reload never
/// emits (it counts `rejected`): the alert could never fire. The selector check
/// refuses exactly that query, and a value outside the label's set generally.
#[test]
fn rule_reload_alert_selecting_result_failed_is_refused() {
    let refused =
        |query: &'static str| std::panic::catch_unwind(|| check_selectors("test", query)).is_err();
    assert!(refused(
        r#"sum(increase(cardgate_rule_reloads_total{result="failed"}[15m])) > 0"#
    ));
    assert!(refused(
        r#"cardgate_authorizations_total{outcome=~"approve|approved"}"#
    ));
    assert!(refused(r#"cardgate_fallbacks_total{reason="deadline"}"#));
    assert!(refused(r#"cardgate_fallbacks_total{cause=~"dead.*"}"#));
    assert!(!refused(
        r#"sum(increase(cardgate_rule_reloads_total{result="rejected"}[15m])) > 0"#
    ));
    assert!(!refused(
        r#"cardgate_webhook_stage_duration_seconds_bucket{stage="parse", le="0.001"}"#
    ));
    assert!(!refused(
        r#"cardgate_rule_matches_total{rule="any-name", mode="shadow"}"#
    ));
}

/// Runs `promtool` with `args`; `None` when it is not installed and the run does
/// not require it. `CARDGATE_REQUIRE_PROMTOOL=1` (`scripts/test`, which installs
/// Debian's `prometheus` package) turns a missing promtool into a failure, so CI
/// cannot pass without the reference validator having run.
fn promtool(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    {
        Ok(out) => Some(out),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("CARDGATE_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
                "promtool is not installed and CARDGATE_REQUIRE_PROMTOOL=1 \
                 (install: apt-get install prometheus)"
            );
            eprintln!("promtool not installed; skipped (install: apt-get install prometheus)");
            None
        }
        Err(e) => panic!("running promtool: {e}"),
    }
}

fn assert_success(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// promtool is the reference validator (PromQL syntax included).
#[test]
fn alerts_pass_promtool_check_rules() {
    if let Some(out) = promtool(&["check", "rules", "config/prometheus/alerts.yml"]) {
        assert_success("promtool check rules", &out);
    }
}

/// Each alert fires on a synthetic series of its failure and stays quiet on a
/// healthy one (`config/prometheus/alerts_test.yml`).
#[test]
fn alerts_pass_promtool_unit_tests() {
    if let Some(out) = promtool(&["test", "rules", "config/prometheus/alerts_test.yml"]) {
        assert_success("promtool test rules", &out);
    }
}

/// Every alert has a unit test that expects it to fire.
#[test]
fn every_alert_has_a_promtool_unit_test() {
    let file: RuleFile =
        serde_yaml::from_str(ALERTS).expect("config/prometheus/alerts.yml is a rules file");
    for r in file.groups.iter().flat_map(|g| &g.rules) {
        let firing = format!("alertname: {}", r.alert);
        assert!(
            ALERT_TESTS.contains(&firing),
            "config/prometheus/alerts_test.yml has no `{firing}` case"
        );
    }
}

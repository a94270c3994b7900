//! The Grafana dashboard and Prometheus alerts shipped in `config/` only query
//! metrics cardgate exports: a renamed metric must fail here, not on an on-call
//! night with an empty panel or an alert that can never fire.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic is the test failure, with its line (clippy.toml covers #[test] fns, not helpers)"
)]

use std::collections::BTreeSet;
use std::process::Command;

use regex::Regex;
use serde::Deserialize;

const DASHBOARD: &str = include_str!("../config/grafana/cardgate.json");
const ALERTS: &str = include_str!("../config/prometheus/alerts.yml");
const METRICS_RS: &str = include_str!("../src/metrics.rs");

/// Names being added by work in flight on other branches (rules reloads/matches,
/// store errors and commit latency). Each belongs in `src/metrics.rs` once merged;
/// then it can leave this list.
const IN_FLIGHT: &[&str] = &[
    "cardgate_rule_reloads_total",
    "cardgate_rule_matches_total",
    "cardgate_store_errors_total",
    "cardgate_store_commit_duration_seconds",
];

fn metric_names(text: &str) -> BTreeSet<String> {
    let re = Regex::new(r"\bcardgate_[a-z0-9_]*[a-z0-9]").expect("valid regex");
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

/// Every name cardgate exports: the string constants of `src/metrics.rs` plus the
/// in-flight list.
fn exported() -> BTreeSet<String> {
    let re = Regex::new(r#""(cardgate_[a-z0-9_]+)""#).expect("valid regex");
    let mut names: BTreeSet<String> = re
        .captures_iter(METRICS_RS)
        .map(|c| c[1].to_string())
        .collect();
    names.extend(IN_FLIGHT.iter().map(std::string::ToString::to_string));
    names
}

/// A queried name is known if it is exported, or is a histogram's series of one.
fn check_names(source: &str, query: &str, exported: &BTreeSet<String>) {
    for name in metric_names(query) {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| exported.contains(*b))
            .unwrap_or(&name);
        assert!(
            exported.contains(base),
            "{source}: `{name}` is not a metric cardgate exports\n  query: {query}\n  exported: {exported:?}"
        );
    }
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
}

/// promtool is the reference validator (PromQL syntax included); it runs when
/// installed (`apt-get install prometheus`), otherwise the checks above stand alone.
#[test]
fn alerts_pass_promtool_when_installed() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/prometheus/alerts.yml");
    match Command::new("promtool")
        .args(["check", "rules", path])
        .output()
    {
        Ok(out) => assert!(
            out.status.success(),
            "promtool check rules failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("promtool not installed; skipped (install: apt-get install prometheus)");
        }
        Err(e) => panic!("running promtool: {e}"),
    }
}

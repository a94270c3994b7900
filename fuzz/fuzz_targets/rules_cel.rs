//! The rules compiler on an arbitrary CEL `when` expression: the input is the
//! expression itself, written into a rules file with lists of both element types
//! (TOML-escaped, so the CEL parser and type checker see it verbatim).
//!
//! Properties: no panic in parse, type check, lowering or evaluation; a compile
//! error names the rule; when it compiles, the indexed evaluation answers as the
//! linear scan does on every sample authorization.

#![no_main]

#[path = "../common.rs"]
mod common;

use cardgate::rules::RuleSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(when) = std::str::from_utf8(data) else {
        return;
    };
    let mut rule = toml::Table::new();
    rule.insert("name".into(), "fuzz".into());
    rule.insert("when".into(), when.into());
    rule.insert("action".into(), "decline".into());
    let mut shadow = rule.clone();
    shadow.insert("name".into(), "fuzz-shadow".into());
    shadow.insert("mode".into(), "shadow".into());
    let mut lists = toml::Table::new();
    lists.insert(
        "countries".into(),
        toml::Value::Array(vec!["US".into(), "KP".into()]),
    );
    lists.insert(
        "codes".into(),
        toml::Value::Array(vec![5734.into(), 5542.into()]),
    );
    let mut file = toml::Table::new();
    file.insert("lists".into(), lists.into());
    file.insert(
        "rule".into(),
        toml::Value::Array(vec![rule.into(), shadow.into()]),
    );
    let Ok(src) = toml::to_string(&file) else {
        return;
    };
    match RuleSet::from_toml_unmetered(&src) {
        Ok(set) => common::check_index_agrees(&set),
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty(), "empty compile error for {when:?}");
        }
    }
});

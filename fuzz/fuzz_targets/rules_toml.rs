//! The rules compiler on an arbitrary rules file (TOML, lists, several rules,
//! shadow modes, caps): what `POST /v1/rulesets` and a reload compile.
//!
//! Properties: no panic; when it compiles, the indexed evaluation answers as the
//! linear scan does on every sample authorization, and the version is the
//! content hash (compiling the same text twice gives the same version).

#![no_main]

#[path = "../common.rs"]
mod common;

use cardgate::rules::RuleSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(set) = RuleSet::from_toml_unmetered(src) else {
        return;
    };
    common::check_index_agrees(&set);
    let again = RuleSet::from_toml_unmetered(src).unwrap_or_else(|e| panic!("second compile: {e}"));
    assert_eq!(set.version(), again.version());
});

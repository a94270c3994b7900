//! The emulator's parameter reader on arbitrary bodies, both as a Stripe form
//! body (`a[b][0]=v`) and as JSON, followed by every typed reader (cardholders,
//! cards, authorizations, approve/decline).
//!
//! Properties: no panic; what parses is a JSON object; a refusal is a 4xx that
//! names its parameter or says what is wrong.

#![no_main]

use cardgate::http::emulator::fuzz_params;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for is_json in [false, true] {
        match fuzz_params(data, is_json) {
            Ok(v) => assert!(v.is_object(), "params are not an object: {v}"),
            Err(e) => {
                let text = e.to_string();
                assert!(!text.is_empty(), "empty refusal for {data:?}");
            }
        }
    }
});

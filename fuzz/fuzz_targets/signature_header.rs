//! `Stripe-Signature` parsing and verification on arbitrary header bytes.
//!
//! Properties: no panic; a header verifies only if it carries the right MAC for
//! its own timestamp; and extra items after a valid signature change the answer
//! exactly as the header grammar says (an item without `=` is malformed, a second
//! `t=` is refused, anything else is ignored).

#![no_main]

use cardgate::stripe::{Secrets, sign_header, signature, verify};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "whsec_fuzz_0123456789";
const NOW: i64 = 1_795_003_020;
const BODY: &[u8] = br#"{"id":"evt_fuzz","type":"issuing_authorization.request"}"#;

/// Whether `extra`, appended to a valid header, leaves it valid.
fn extra_items_are_harmless(extra: &[u8]) -> bool {
    extra.split(|b| *b == b',').all(|item| {
        let item = item.trim_ascii();
        if item.is_empty() {
            return true;
        }
        match item.iter().position(|b| *b == b'=') {
            None => false,
            Some(eq) => &item[..eq] != b"t",
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let secrets = Secrets::new(&[SECRET]);

    if let Ok(v) = verify(Some(data), BODY.to_vec(), &secrets, NOW, 300) {
        let mac = signature(SECRET, v.timestamp(), BODY);
        let carried = data
            .windows(mac.len())
            .any(|w| w.eq_ignore_ascii_case(mac.as_bytes()));
        assert!(carried, "a header without the MAC verified: {data:?}");
    }

    let mut header = sign_header(&[SECRET], NOW, BODY).into_bytes();
    header.push(b',');
    header.extend_from_slice(data);
    let ok = verify(Some(&header), BODY.to_vec(), &secrets, NOW, 300).is_ok();
    assert_eq!(
        ok,
        extra_items_are_harmless(data),
        "valid header followed by {data:?}"
    );
});

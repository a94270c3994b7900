//! Byte-level reads of a JSON body that run before (or instead of) the parser:
//! where the value of `data.object.card` starts, and where an object ends.
//!
//! Both are exact on valid JSON and never panic or loop on anything else; what
//! they find is only trusted once simd-json has accepted the document it came
//! from (`parse::known`), or only decides how bytes are shared (`store::parts`).

/// The path of the one value [`card_value_at`] looks for, one key per level
/// below the root.
const CARD_PATH: [&[u8]; 3] = [b"data", b"object", b"card"];

/// Nesting deeper than this is not followed (a Stripe event nests about six
/// levels): the scan gives up and the parser reads the body whole.
const MAX_DEPTH: usize = 128;

/// Where the value of `data.object.card` starts in the JSON document `b`, if that
/// value is an object: the document is read token by token from its start
/// (strings to their closing quote, past every escape; nesting counted), and only
/// as far as that key. `None` when the document has no such object before
/// `data.object` closes, when a key on the path is written with escapes, or on
/// bytes that are not JSON.
pub(crate) fn card_value_at(b: &[u8]) -> Option<usize> {
    // Bit d: the container at depth d + 1 is an array.
    let mut arrays: u128 = 0;
    // Containers open.
    let mut depth = 0usize;
    // Containers 1..=on_path are the root, `data`, `data.object`.
    let mut on_path = 0usize;
    // The raw key of the value about to be read (in an object).
    let mut key: &[u8] = b"";
    let mut i = skip_space(b, 0);
    // At the top of each turn `i` is at the first byte of a value.
    'value: loop {
        let c = *b.get(i)?;
        // `on_path == depth` also says the container is an object: an array
        // never joins the path.
        let on = on_path == depth && (depth == 0 || key == CARD_PATH[depth - 1]);
        if on && depth == CARD_PATH.len() {
            return (c == b'{').then_some(i);
        }
        match c {
            b'{' | b'[' => {
                if depth == MAX_DEPTH {
                    return None;
                }
                let object = c == b'{';
                if object {
                    arrays &= !(1 << depth);
                    if on {
                        on_path = depth + 1;
                    }
                } else {
                    arrays |= 1 << depth;
                }
                depth += 1;
                i = skip_space(b, i + 1);
                // Not empty: its first value. Empty: closed below.
                if *b.get(i)? != if object { b'}' } else { b']' } {
                    if object {
                        i = read_key(b, i, &mut key)?;
                    }
                    continue 'value;
                }
            }
            b'"' => i = string_end(b, i)?,
            _ => {
                // A number or a literal: to the next delimiter.
                let start = i;
                while b.get(i).is_some_and(|c| {
                    !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                }) {
                    i += 1;
                }
                if i == start {
                    return None;
                }
            }
        }
        // After a value: the next one, or the end of containers.
        if depth == 0 {
            // The document is one string, number or literal.
            return None;
        }
        loop {
            i = skip_space(b, i);
            let c = *b.get(i)?;
            let in_array = (arrays >> (depth - 1)) & 1 != 0;
            if c == b',' {
                i = skip_space(b, i + 1);
                if !in_array {
                    i = read_key(b, i, &mut key)?;
                }
                continue 'value;
            }
            if c != (if in_array { b']' } else { b'}' }) || on_path == depth {
                // A mismatched bracket, or a container on the path closing
                // without the card in it.
                return None;
            }
            depth -= 1;
            if depth == 0 {
                return None;
            }
            i += 1;
        }
    }
}

/// Reads the key whose opening quote is at `i` into `key` (raw, escapes as
/// written) and its colon; the index of its value.
fn read_key<'b>(b: &'b [u8], i: usize, key: &mut &'b [u8]) -> Option<usize> {
    if *b.get(i)? != b'"' {
        return None;
    }
    let end = string_end(b, i)?;
    *key = &b[i + 1..end - 1];
    let i = skip_space(b, end);
    if *b.get(i)? != b':' {
        return None;
    }
    Some(skip_space(b, i + 1))
}

/// The index after the closing quote of the string whose opening quote is at
/// `start`, past every escaped character. Eight bytes at a time: most strings
/// of an event are short, and a `memchr2` call per string cost more than this
/// loop (callgrind).
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // The high bit of each zero byte of `x` (and maybe of bytes above the
    // lowest one, but only the lowest is read).
    let zeros = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut i = start + 1;
    loop {
        if let Some(&w) = b.get(i..).and_then(|r| r.first_chunk::<8>()) {
            let x = u64::from_le_bytes(w);
            let hits = zeros(x ^ (ONES * u64::from(b'"'))) | zeros(x ^ (ONES * u64::from(b'\\')));
            if hits == 0 {
                i += 8;
                continue;
            }
            i += (hits.trailing_zeros() / 8) as usize;
        }
        match *b.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// The index of the first byte at or after `i` that is not JSON whitespace.
pub(crate) fn skip_space(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        i += 1;
    }
    i
}

/// The end (one past its `}`) of the object whose `{` is at `start`, skipping
/// strings and their escapes; `None` if it does not close.
pub(crate) fn object_end(body: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    loop {
        i += memchr::memchr3(b'{', b'}', b'"', body.get(i..)?)?;
        match body[i] {
            b'{' => depth += 1,
            b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {
                i = string_end(body, i)?;
                continue;
            }
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card_at(s: &str) -> Option<&str> {
        let at = card_value_at(s.as_bytes())?;
        Some(&s[at..object_end(s.as_bytes(), at)?])
    }

    #[test]
    fn the_card_is_found_at_its_path_and_nowhere_else() {
        let card = r#"{"id":"ic_1","cardholder":{"id":"ich_1"},"x":[1,{"}":"{"}]}"#;
        for doc in [
            format!(r#"{{"id":"evt","data":{{"object":{{"id":"iauth","card":{card}}}}}}}"#),
            // Pretty, with every kind of value before it.
            format!(
                "{{\n  \"id\": \"evt\",\n  \"n\": -1.5e3, \"t\": true, \"f\": false, \"z\": null,\n  \"a\": [[], {{}}, [1, \"]\"], {{\"card\": {{}}}}],\n  \"data\": {{\n    \"object\": {{\n      \"card\" :\t{card}\n    }}\n  }}\n}}"
            ),
            // Decoys: "card" as a value, in a string with escaped quotes, in a
            // nested object and at another depth.
            format!(
                r#"{{"card":{{"id":"no"}},"s":"\"card\":{{\"id\":\"no\"}}","data":{{"card":{{}},"x":{{"object":{{"card":{{}}}}}},"object":{{"a":"card","b":{{"card":{{}}}},"card":{card}}}}}}}"#
            ),
        ] {
            assert_eq!(card_at(&doc), Some(card), "{doc}");
        }
    }

    #[test]
    fn no_card_object_at_the_path_is_none() {
        for doc in [
            r#"{"data":{"object":{"card":"ic_1"}}}"#,
            r#"{"data":{"object":{"card":null}}}"#,
            r#"{"data":{"object":{"c\u0061rd":{}}}}"#,
            r#"{"data":{"object":{"cardholder":{}}},"card":{}}"#,
            r#"{"data":{"object":{}},"object":{"card":{}}}"#,
            r#"{"data":[{"object":{"card":{}}}]}"#,
            r#"{"data":{"object":[{"card":{}}]}}"#,
            r#"[{"data":{"object":{"card":{}}}}]"#,
            r#"{"data":{"object":{"x":"unterminated"#,
            r#"{"data":{"object":{"x" "card":{}}}}"#,
            r#"{"data":{"object":{"x":1:"card":{}}}}"#,
            r#"{"data":{"object":{"x":1]"card":{}}}}"#,
            "",
            "{",
            "}",
            "1",
            "\"card\"",
        ] {
            assert_eq!(card_value_at(doc.as_bytes()), None, "{doc}");
        }
        // Found where it starts, but it never ends.
        let open = r#"{"data":{"object":{"card":{"id":"ic_1","s":"}"#;
        assert_eq!(card_value_at(open.as_bytes()), Some(26));
        assert_eq!(card_at(open), None);
    }

    #[test]
    fn a_string_ends_at_its_closing_quote_past_escapes_at_any_offset() {
        // The naive reading: one byte at a time.
        fn naive(b: &[u8], start: usize) -> Option<usize> {
            let mut i = start + 1;
            loop {
                match *b.get(i)? {
                    b'"' => return Some(i + 1),
                    b'\\' => i += 2,
                    _ => i += 1,
                }
            }
        }
        for len in 0..40 {
            for esc in 0..=len {
                for tail in ["\"x", "\"", "", "\\", "\\\""] {
                    let mut s = vec![b'"'];
                    s.extend(std::iter::repeat_n(b'a', len));
                    s.splice((1 + esc)..=esc, *b"\\\"\\\\");
                    s.extend_from_slice(tail.as_bytes());
                    assert_eq!(
                        string_end(&s, 0),
                        naive(&s, 0),
                        "{}",
                        String::from_utf8_lossy(&s)
                    );
                }
            }
        }
    }

    #[test]
    fn nesting_past_the_limit_gives_up() {
        let deep = format!(
            "{{\"x\":{}1{},\"data\":{{\"object\":{{\"card\":{{}}}}}}}}",
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert_eq!(card_value_at(deep.as_bytes()), None);
        let fits = format!(
            "{{\"x\":{}1{},\"data\":{{\"object\":{{\"card\":{{}}}}}}}}",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert!(card_value_at(fits.as_bytes()).is_some());
    }

    proptest::proptest! {
        /// Whatever the bytes, the scans end without a panic, and what they find
        /// lies inside the input.
        #[test]
        fn any_bytes_are_scanned_without_a_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            if let Some(at) = card_value_at(&b) {
                proptest::prop_assert_eq!(b[at], b'{');
                if let Some(end) = object_end(&b, at) {
                    proptest::prop_assert!(end <= b.len() && end > at);
                }
            }
        }
    }
}

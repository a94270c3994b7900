//! Reading fields of tape objects: [`Lookup`] (a tape object, or the [`Fields`] a
//! single pass over one dispatched through a compile-time [`Keys`] table), the
//! duplicate-key check, and typed reads where absent and null are the same to
//! Stripe. Every error names the path it was found at.

use simd_json::prelude::*;

use super::{Obj, ParseError, Problem, Val, err};
use crate::decision::Currency;

// === field helpers: absent and null are the same to Stripe ===

/// An object whose fields can be read by key: a tape object (a linear scan of its
/// keys per read, for the lifecycle events and the rare signal objects) or the
/// [`Fields`] of one dispatched in a single pass (the request's objects).
pub(crate) trait Lookup<'v> {
    /// The value at `key`, if present and not null.
    fn field(&self, key: &str) -> Option<Val<'v>>;
}

impl<'v> Lookup<'v> for Obj<'v> {
    fn field(&self, key: &str) -> Option<Val<'v>> {
        self.get(key).filter(|v| !v.is_null())
    }
}

/// A present, non-null field.
pub(crate) fn field<'v>(o: &impl Lookup<'v>, key: &str) -> Option<Val<'v>> {
    o.field(key)
}

/// The keys a reader takes from one object, and a 256-slot open-addressing table
/// from [`key_hash`] to their index, built at compile time: finding a key's slot is
/// one table load and, on a hit, one comparison.
pub(crate) struct Keys<const N: usize> {
    pub(super) names: [&'static str; N],
    /// `1 +` the index in `names` of the key hashed here (linear probing), 0 empty.
    table: [u8; 256],
}

impl<const N: usize> Keys<N> {
    /// The table for `names` (distinct, fewer than 256).
    pub(crate) const fn new(names: [&'static str; N]) -> Self {
        assert!(N < 256, "a key table holds fewer than 256 keys");
        let mut table = [0u8; 256];
        let mut i = 0;
        while i < N {
            let mut h = key_hash(names[i].as_bytes());
            while table[h] != 0 {
                h = (h + 1) & 255;
            }
            #[expect(
                clippy::cast_possible_truncation,
                reason = "i < N < 256, asserted above"
            )]
            {
                table[h] = (i + 1) as u8;
            }
            i += 1;
        }
        Keys { names, table }
    }

    /// The index of `k` (whose [`key_hash`] is `h`), if it is one of the keys.
    pub(super) fn slot(&self, k: &str, mut h: usize) -> Option<usize> {
        loop {
            let i = usize::from(self.table[h]).checked_sub(1)?;
            if self.names[i] == k {
                return Some(i);
            }
            h = (h + 1) & 255;
        }
    }
}

/// The values of an object's keys in a [`Keys`] set, found in one pass over the
/// object ([`Fields::scan`]) instead of one scan of its keys per field read.
pub(crate) struct Fields<'v, const N: usize> {
    keys: &'static Keys<N>,
    vals: [Option<Val<'v>>; N],
}

impl<'v, const N: usize> Fields<'v, N> {
    /// Reads `o`, the object at `key` of the object at `path`, in one pass: refuses
    /// it if a key occurs twice (as [`unique_keys`]), and keeps the non-null value
    /// of every key in `keys`.
    pub(crate) fn scan(
        o: &Obj<'v>,
        path: &str,
        key: &str,
        keys: &'static Keys<N>,
    ) -> Result<Self, ParseError> {
        let mut vals = [None; N];
        each_unique_key(o, path, key, |k, h, v| {
            if let Some(i) = keys.slot(k, h)
                && !v.is_null()
            {
                vals[i] = Some(v);
            }
        })?;
        Ok(Fields { keys, vals })
    }
}

impl<'v, const N: usize> Lookup<'v> for Fields<'v, N> {
    fn field(&self, key: &str) -> Option<Val<'v>> {
        let i = self.keys.slot(key, key_hash(key.as_bytes()));
        debug_assert!(i.is_some(), "`{key}` is not in the object's key table");
        self.vals[i?]
    }
}

/// Refuses `o`, the object at `key` of the object at `path`, if a key occurs twice
/// in it; the error names the repeated key's path. Every object the parser reads
/// fields from passes here (or through [`Fields::scan`]) once, when it is opened,
/// so the field reads after it can stop at the first match.
pub(crate) fn unique_keys(o: &Obj<'_>, path: &str, key: &str) -> Result<(), ParseError> {
    each_unique_key(o, path, key, |_, _, _| {})
}

/// Calls `each(key, key_hash(key), value)` for every entry of `o`, and refuses `o`
/// if a key occurs twice.
///
/// One pass over the keys with a 256-bit filter of a hash of each (length, first,
/// middle and last byte: no loop over the key): a key whose bit is clear is new,
/// and only a set bit (a repeat, or two keys sharing a bit) costs a look back over
/// the keys before it. Nothing is allocated unless the body is refused.
pub(super) fn each_unique_key<'v>(
    o: &Obj<'v>,
    path: &str,
    key: &str,
    mut each: impl FnMut(&'v str, usize, Val<'v>),
) -> Result<(), ParseError> {
    let mut seen = [0u64; 4];
    for (i, (k, v)) in o.iter().enumerate() {
        let h = key_hash(k.as_bytes());
        let (word, bit) = (h >> 6, 1u64 << (h & 63));
        if seen[word] & bit != 0 && o.keys().take(i).any(|earlier| earlier == k) {
            return Err(err(
                &err(path, key, Problem::DuplicateKey).path,
                k,
                Problem::DuplicateKey,
            ));
        }
        seen[word] |= bit;
        each(k, h, v);
    }
    Ok(())
}

/// A hash of `k` in `0..256` from its length and three of its bytes.
pub(super) const fn key_hash(k: &[u8]) -> usize {
    let n = k.len();
    if n == 0 {
        return 0;
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "only the low byte of the length feeds the hash"
    )]
    let len = n as u8;
    let x = u32::from_le_bytes([len, k[0], k[n / 2], k[n - 1]]);
    // Fibonacci hashing: the top byte of the product mixes all four inputs.
    (x.wrapping_mul(0x9E37_79B9) >> 24) as usize
}

/// A required string field.
pub(crate) fn req_str<'v>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
) -> Result<&'v str, ParseError> {
    match field(o, key) {
        None => Err(err(path, key, Problem::Missing)),
        Some(v) => v
            .into_string()
            .ok_or_else(|| err(path, key, Problem::WrongType("string"))),
    }
}

/// An optional string field; absent or null is `""`.
pub(crate) fn opt_str<'v>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
) -> Result<&'v str, ParseError> {
    match field(o, key) {
        None => Ok(""),
        Some(v) => v
            .into_string()
            .ok_or_else(|| err(path, key, Problem::WrongType("string"))),
    }
}

/// An optional string field that keeps "absent or null" apart from `""`.
pub(crate) fn some_str<'v>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
) -> Result<Option<&'v str>, ParseError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v
            .into_string()
            .map(Some)
            .ok_or_else(|| err(path, key, Problem::WrongType("string"))),
    }
}

/// An optional number (integer or float), as a double.
pub(crate) fn opt_f64<'v>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
) -> Result<Option<f64>, ParseError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v
            .cast_f64()
            .map(Some)
            .ok_or_else(|| err(path, key, Problem::WrongType("number"))),
    }
}

/// A required integer field.
pub(crate) fn req_i64<'v>(o: &impl Lookup<'v>, path: &str, key: &str) -> Result<i64, ParseError> {
    opt_i64(o, path, key)?.ok_or_else(|| err(path, key, Problem::Missing))
}

/// An optional integer field.
pub(crate) fn opt_i64<'v>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
) -> Result<Option<i64>, ParseError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| err(path, key, Problem::WrongType("integer"))),
    }
}

/// An optional boolean field; absent or null is `false`.
pub(crate) fn opt_bool<'v>(o: &impl Lookup<'v>, path: &str, key: &str) -> Result<bool, ParseError> {
    match field(o, key) {
        None => Ok(false),
        Some(v) => v
            .as_bool()
            .ok_or_else(|| err(path, key, Problem::WrongType("boolean"))),
    }
}

/// An optional object field.
pub(crate) fn opt_obj<'v>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
) -> Result<Option<Obj<'v>>, ParseError> {
    let Some(v) = field(o, key) else {
        return Ok(None);
    };
    let obj = v
        .as_object()
        .ok_or_else(|| err(path, key, Problem::WrongType("object")))?;
    unique_keys(&obj, path, key)?;
    Ok(Some(obj))
}

/// A required object field, read in one pass ([`Fields::scan`]).
pub(super) fn req_fields<'v, const N: usize>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
    keys: &'static Keys<N>,
) -> Result<Fields<'v, N>, ParseError> {
    opt_fields(o, path, key, keys)?.ok_or_else(|| err(path, key, Problem::Missing))
}

/// An optional object field, read in one pass ([`Fields::scan`]).
pub(super) fn opt_fields<'v, const N: usize>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
    keys: &'static Keys<N>,
) -> Result<Option<Fields<'v, N>>, ParseError> {
    let Some(v) = field(o, key) else {
        return Ok(None);
    };
    let obj = v
        .as_object()
        .ok_or_else(|| err(path, key, Problem::WrongType("object")))?;
    Fields::scan(&obj, path, key, keys).map(Some)
}

/// A required object field, as a tape object and read in one pass.
pub(super) fn req_obj_fields<'v, const N: usize>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
    keys: &'static Keys<N>,
) -> Result<(Obj<'v>, Fields<'v, N>), ParseError> {
    let obj = field(o, key)
        .ok_or_else(|| err(path, key, Problem::Missing))?
        .as_object()
        .ok_or_else(|| err(path, key, Problem::WrongType("object")))?;
    let fields = Fields::scan(&obj, path, key, keys)?;
    Ok((obj, fields))
}

/// An optional array field.
pub(crate) fn opt_array<'v>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
) -> Result<Option<simd_json::tape::Array<'v, 'v>>, ParseError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v
            .as_array()
            .map(Some)
            .ok_or_else(|| err(path, key, Problem::WrongType("array"))),
    }
}

pub(super) fn opt_strings<'v, T: Default>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
    mut add: impl FnMut(&str, &mut T) -> Result<(), Problem>,
) -> Result<Option<T>, ParseError> {
    let Some(items) = opt_array(o, path, key)? else {
        return Ok(None);
    };
    let mut set = T::default();
    for (i, item) in items.iter().enumerate() {
        let at = || format!("{key}[{i}]");
        let s = item
            .as_str()
            .ok_or_else(|| err(path, &at(), Problem::WrongType("string")))?;
        add(s, &mut set).map_err(|p| err(path, &at(), p))?;
    }
    Ok(Some(set))
}

/// A required three-letter currency code.
pub(crate) fn req_currency<'v>(
    o: &impl Lookup<'v>,
    path: &str,
    key: &str,
) -> Result<Currency, ParseError> {
    let s = req_str(o, path, key)?;
    Currency::parse(s)
        .ok_or_else(|| err(path, key, Problem::Invalid("not a 3-letter currency code")))
}

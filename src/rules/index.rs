//! Rule index: skips rules whose required string equality cannot hold.
//!
//! Most real rules start with an equality or `in` test on a string field of the
//! context (`merchant.category_code == "7995" && …`, `merchant.country in
//! lists.high_risk && …`). Such a conjunct is a *guard*: when it is false the
//! whole `&&` chain is false — and false without error, since a context field
//! read never fails and CEL's `&&` absorbs errors from the other side when one
//! side is false. Skipping a rule whose guard is false is therefore exactly the
//! same as evaluating it: no match and no error metric.
//!
//! At build time the rules are grouped by the most common guarded fields (at most
//! [`MAX_KEYS`]); for each such field a hash map goes from value to the ascending
//! rule positions guarded by it. Every other rule is in `rest`. At evaluation,
//! one hash lookup per indexed field gives the candidate lists; merging them with
//! `rest` by position visits the candidates in file order, so "first decisive
//! match wins" is unchanged. Nothing is allocated per evaluation.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use super::eval::{Bool, Cmp, Fnv, Str};
use super::schema::Schema;

/// Most fields indexed: each costs one hash lookup per evaluation.
pub(super) const MAX_KEYS: usize = 4;
/// Below this many rules a plain scan is as fast as the lookups.
const MIN_RULES: usize = 8;
/// A field is indexed only when at least this many rules are guarded by it.
const MIN_GUARDED: usize = 2;
/// `in` lists longer than this are not used as guards (the index would hold one
/// bucket entry per list element).
const MAX_GUARD_VALUES: usize = 256;

type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

/// One indexed field: value → positions of the rules it guards, ascending.
#[derive(Debug)]
struct Key<S: Schema> {
    field: S::StrField,
    buckets: FnvMap<Box<str>, Box<[u32]>>,
}

/// Candidate rules per context, in file order.
#[derive(Debug)]
pub(super) struct Index<S: Schema> {
    keys: Box<[Key<S>]>,
    /// Rules without a guard on an indexed field, ascending.
    rest: Box<[u32]>,
}

impl<S: Schema> Index<S> {
    /// Every rule, scanned in order: the reference the indexed form must agree with.
    #[expect(
        clippy::cast_possible_truncation,
        reason = "rule positions are below MAX_RULES (10 000), refused before anything is indexed"
    )]
    pub fn linear(n: usize) -> Self {
        Index {
            keys: Box::new([]),
            rest: (0..n as u32).collect(),
        }
    }

    /// Indexes `conds` (the conditions of one group of rules, in file order).
    #[expect(
        clippy::cast_possible_truncation,
        reason = "rule positions are below MAX_RULES (10 000), refused before anything is indexed"
    )]
    pub fn build(conds: &[&Bool<S>]) -> Self {
        if conds.len() < MIN_RULES {
            return Index::linear(conds.len());
        }
        let guards: Vec<Vec<(S::StrField, Vec<&str>)>> = conds
            .iter()
            .map(|c| {
                let mut g = Vec::new();
                guards_of(c, &mut g);
                g
            })
            .collect();
        // How many rules each field guards; ties broken by field order so the
        // choice is deterministic.
        let mut count: Vec<(S::StrField, usize)> = Vec::new();
        for g in &guards {
            let mut seen: Vec<S::StrField> = Vec::new();
            for (f, _) in g {
                if !seen.contains(f) {
                    seen.push(*f);
                    match count.iter_mut().find(|(k, _)| k == f) {
                        Some((_, n)) => *n += 1,
                        None => count.push((*f, 1)),
                    }
                }
            }
        }
        count.sort_by_key(|(f, n)| (std::cmp::Reverse(*n), *f));
        let chosen: Vec<S::StrField> = count
            .iter()
            .filter(|(_, n)| *n >= MIN_GUARDED)
            .take(MAX_KEYS)
            .map(|(f, _)| *f)
            .collect();
        let mut buckets: Vec<FnvMap<Box<str>, Vec<u32>>> = vec![FnvMap::default(); chosen.len()];
        let mut rest = Vec::new();
        for (i, g) in guards.iter().enumerate() {
            // The most selective choice would need value statistics; the most
            // common field is a good proxy and keeps the key count small.
            let pick = chosen
                .iter()
                .enumerate()
                .find_map(|(k, f)| g.iter().find(|(gf, _)| gf == f).map(|(_, v)| (k, v)));
            match pick {
                Some((k, values)) => {
                    for v in values {
                        let list = buckets[k].entry(Box::from(*v)).or_default();
                        // One rule may list a value twice (`x in ["a", "a"]`).
                        if list.last() != Some(&(i as u32)) {
                            list.push(i as u32);
                        }
                    }
                }
                None => rest.push(i as u32),
            }
        }
        Index {
            keys: chosen
                .into_iter()
                .zip(buckets)
                .map(|(field, b)| Key {
                    field,
                    buckets: b
                        .into_iter()
                        .map(|(k, v)| (k, v.into_boxed_slice()))
                        .collect(),
                })
                .collect(),
            rest: rest.into_boxed_slice(),
        }
    }

    /// Indexed fields (for tests and `rules check`).
    pub fn indexed_fields(&self) -> usize {
        self.keys.len()
    }

    /// Calls `visit(position)` for each candidate rule in ascending position until
    /// it returns true.
    #[inline]
    pub fn visit(&self, ctx: &S::Ctx<'_>, mut visit: impl FnMut(usize) -> bool) {
        if self.keys.is_empty() {
            for &i in &self.rest {
                if visit(i as usize) {
                    return;
                }
            }
            return;
        }
        let mut lists: [&[u32]; MAX_KEYS + 1] = [&[]; MAX_KEYS + 1];
        let mut n = 0;
        for k in &self.keys {
            if let Some(b) = k.buckets.get(S::str(ctx, k.field)) {
                lists[n] = b;
                n += 1;
            }
        }
        if !self.rest.is_empty() {
            lists[n] = &self.rest;
            n += 1;
        }
        let lists = &mut lists[..n];
        loop {
            let mut best = u32::MAX;
            let mut which = usize::MAX;
            for (j, l) in lists.iter().enumerate() {
                if let Some(&h) = l.first()
                    && h < best
                {
                    best = h;
                    which = j;
                }
            }
            if which == usize::MAX {
                return;
            }
            lists[which] = &lists[which][1..];
            if visit(best as usize) {
                return;
            }
        }
    }
}

/// Collects the guards among the top-level conjuncts of `c`.
fn guards_of<'b, S: Schema>(c: &'b Bool<S>, out: &mut Vec<(S::StrField, Vec<&'b str>)>) {
    match c {
        Bool::And(a, b) => {
            guards_of(a, out);
            guards_of(b, out);
        }
        Bool::CmpStr(Cmp::Eq, a, b) => match (&**a, &**b) {
            (Str::Field(f), Str::Const(v)) | (Str::Const(v), Str::Field(f)) => {
                out.push((*f, vec![v]));
            }
            _ => {}
        },
        Bool::StrIn(s, set) => {
            if let Str::Field(f) = &**s
                && set.len() <= MAX_GUARD_VALUES
            {
                out.push((*f, set.iter().collect()));
            }
        }
        _ => {}
    }
}

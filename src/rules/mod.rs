//! Rules: an ordered, immutable set of named CEL rules evaluated after spending
//! controls.
//!
//! Owns the rules file format, the CEL compiler (parse with the `cel` crate,
//! type-check against the authorization context, lower to cardgate's own
//! evaluator), the content-hash version, shadow rules, hot reload and backtest.
//!
//! # Rules file
//!
//! ```toml
//! [lists]
//! high_risk_countries = ["KP", "IR"]
//!
//! [[rule]]
//! name   = "cap-fuel"
//! when   = 'merchant.category_code == "5542" && is_amount_controllable'
//! action = "cap"          # approve | decline | cap (needs `amount`) | review | challenge
//! amount = 10000
//! mode   = "shadow"       # optional: evaluated and counted, never decides
//! description = "…"       # optional
//! on_verified = "skip"    # challenge only: approve (default) | skip
//! ```
//!
//! # Evaluation order
//!
//! Decisive rules are tried in file order and **the first one that matches wins**;
//! later decisive rules are not evaluated. Every shadow rule is evaluated on every
//! authorization that reaches the rules (one declined by a spending control never
//! does), whether or not a decisive rule matched, so its match count does not
//! depend on the rules around it; shadow matches are reported in the [`Verdict`]
//! and counted, and never change the answer. A condition that fails at run time
//! (division by zero, overflow, missing metadata key) does not match and is
//! counted in `cardgate_rule_errors_total`.
//!
//! A rule whose `&&` chain requires a string field to equal a constant (or be
//! `in` a list) is skipped when the field holds another value: see [`index`].
//! That is an optimization only; the verdict and the metrics are those of
//! evaluating every rule in order.
//!
//! **Invariant:** a [`RuleSet`] never changes after it is built; reload builds a
//! new one off the hot path and swaps one pointer (see [`reload`]).
pub mod backtest;
mod compile;
mod error;
mod eval;
mod file;
mod index;
// Test-only: the differential tests' oracle. The bench against the same
// interpreter has its own copy in benches/peers/, so no build but `cargo test`
// links the interpreter.
pub mod published;
#[cfg(test)]
pub(crate) mod reference;
pub mod reload;
pub(crate) mod schema;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use schema::{Auth, Schema};

use crate::decision::Context;
pub use crate::decision::{Action, Matched, Verdict};
pub use error::{CompileError, CompileErrorKind, RuleSetError};
pub use eval::RuntimeError;

/// Largest accepted rules file. Far above any real rule set (10 000 rules of a few
/// hundred bytes each), small enough that a mistaken upload cannot stall a reload.
pub const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;
/// Most rules in one set: linear evaluation past this would eat the deadline.
pub const MAX_RULES: usize = 10_000;
/// Longest `when` expression, in bytes: bounds parse time and tree depth.
pub const MAX_EXPR_BYTES: usize = 8 * 1024;
/// Deepest expression tree a `when` may have. The byte limit alone does not bound
/// it: `1+1+…` is as deep as it is long (4 096 levels in 8 KiB), and the compiler
/// and the evaluator recurse once per level, so such a rule overflowed the stack
/// and aborted the process (issue 15, found writing the rules fuzz target).
/// `&&`/`||` chains are balanced by the parser and stay shallow; 100 levels is far
/// past any rule a person writes.
pub const MAX_EXPR_DEPTH: usize = 100;
/// Stack of the thread a rule set compiles on (see `Compiled::build`): the
/// parser's deepest recursion over an 8 KiB `when` fits in 16 MiB in a debug
/// build (4 MiB does not; `a_deeply_nested_when_overflowed_the_stack`), release
/// needs far less; 4x that for margin. Only the pages used are ever mapped.
const BUILD_STACK: usize = 64 * 1024 * 1024;
/// Most entries over all `[lists]`.
pub const MAX_LIST_ENTRIES: usize = 1_000_000;

/// One compiled rule.
#[derive(Clone)]
struct Rule<S: Schema> {
    name: Arc<str>,
    action: Action,
    shadow: bool,
    description: Option<Arc<str>>,
    cond: eval::Bool<S>,
    /// Registered once at build so a match costs one atomic add, not a registry
    /// lookup by labels; a no-op handle when built unmetered.
    matches: metrics::Counter,
}

impl<S: Schema> std::fmt::Debug for Rule<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rule")
            .field("name", &self.name)
            .field("action", &self.action)
            .field("shadow", &self.shadow)
            .finish_non_exhaustive()
    }
}

impl<S: Schema> Rule<S> {
    #[inline]
    fn eval(&self, ctx: &S::Ctx<'_>, metered: bool) -> bool {
        match self.cond.eval(ctx) {
            Ok(m) => m,
            Err(e) => {
                // Cold path: the label allocation happens only when a rule errors.
                if metered {
                    metrics::counter!(
                        S::ERRORS_METRIC,
                        "rule" => self.name.to_string(),
                        "error" => e.as_str(),
                    )
                    .increment(1);
                }
                false
            }
        }
    }
}

/// A summary of one rule, for `rules check` / `rules test` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// Name.
    pub name: Arc<str>,
    /// Action.
    pub action: Action,
    /// Shadow mode.
    pub shadow: bool,
    /// The description, if written.
    pub description: Option<Arc<str>>,
}

/// An immutable, versioned rule set over the authorization context.
#[derive(Debug, Clone)]
pub struct RuleSet(Compiled<Auth>);

/// An immutable, versioned rule set over context schema `S`: what [`RuleSet`]
/// (authorizations) and the payment approval rules are built on.
#[derive(Debug, Clone)]
pub(crate) struct Compiled<S: Schema> {
    version: Arc<str>,
    /// The file the set was compiled from: list edits through the admin API
    /// rebuild the set from it.
    source: Arc<str>,
    /// Decisive rules, file order.
    decisive: Arc<[Rule<S>]>,
    /// Shadow rules, file order.
    shadow: Arc<[Rule<S>]>,
    /// Candidates of `decisive` per context (see [`index`]).
    decisive_index: Arc<index::Index<S>>,
    /// Candidates of `shadow` per context.
    shadow_index: Arc<index::Index<S>>,
    metered: bool,
}

/// Why a rules file could not be loaded from disk.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("reading rules file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file was read and is invalid.
    #[error("rules file {path}: {errors}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        errors: RuleSetError,
    },
}

impl crate::decision::Rules for RuleSet {
    fn evaluate(&self, ctx: &Context<'_>) -> Verdict {
        RuleSet::evaluate(self, ctx)
    }
}

impl RuleSet {
    /// The empty rule set: every authorization that passes controls is approved.
    pub fn empty() -> Self {
        RuleSet(Compiled::empty())
    }

    /// Compiles a rules file, counting rule matches in the process metrics.
    /// Install the metrics recorder first: counters are bound at build time.
    pub fn from_toml(src: &str) -> Result<Self, RuleSetError> {
        Compiled::build(src, true).map(RuleSet)
    }

    /// Compiles a rules file whose matches are not counted: for backtests and
    /// `rules test`, which must not pollute the live server's metrics, and for
    /// measuring what counting costs.
    pub fn from_toml_unmetered(src: &str) -> Result<Self, RuleSetError> {
        Compiled::build(src, false).map(RuleSet)
    }

    /// Reads and compiles `path` (metered).
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        Compiled::load(path).map(RuleSet)
    }

    /// Content-hash version (first 12 hex digits of the file's SHA-256), reported
    /// in every decision.
    pub fn version(&self) -> &str {
        self.0.version()
    }

    /// The rules file this set was compiled from (empty for [`RuleSet::empty`]).
    pub fn source(&self) -> &str {
        &self.0.source
    }

    /// Number of rules, shadow included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no rules.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The rules, decisive first then shadow, each group in file order.
    pub fn rules(&self) -> impl Iterator<Item = RuleInfo> + '_ {
        self.0.rules()
    }

    /// Evaluates the rules against `ctx`: the first matching decisive rule, and
    /// every matching shadow rule (see the module doc for the order). Rules whose
    /// guard cannot hold are skipped through the index, with the same result as
    /// evaluating them.
    #[inline]
    pub fn evaluate(&self, ctx: &Context<'_>) -> Verdict {
        self.0.evaluate(ctx)
    }

    /// [`RuleSet::evaluate`] without the index: every rule in file order. The
    /// reference the indexed evaluation is tested against.
    pub fn evaluate_linear(&self, ctx: &Context<'_>) -> Verdict {
        self.0.evaluate_linear(ctx)
    }

    /// How many string fields the decisive rules are indexed by (0: plain scan).
    pub fn indexed_fields(&self) -> usize {
        self.0.indexed_fields()
    }
}

impl<S: Schema> Compiled<S> {
    pub(crate) fn empty() -> Self {
        Compiled {
            version: Arc::from("empty"),
            source: Arc::from(""),
            decisive: Arc::from(Vec::new()),
            shadow: Arc::from(Vec::new()),
            decisive_index: Arc::new(index::Index::linear(0)),
            shadow_index: Arc::new(index::Index::linear(0)),
            metered: false,
        }
    }

    pub(crate) fn load(path: &Path) -> Result<Self, LoadError> {
        let src = read_rules_file(path)?;
        Self::build(&src, true).map_err(|errors| LoadError::Invalid {
            path: path.display().to_string(),
            errors,
        })
    }

    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    pub(crate) fn len(&self) -> usize {
        self.decisive.len() + self.shadow.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn rules(&self) -> impl Iterator<Item = RuleInfo> + '_ {
        self.decisive
            .iter()
            .chain(self.shadow.iter())
            .map(|r| RuleInfo {
                name: r.name.clone(),
                action: r.action,
                shadow: r.shadow,
                description: r.description.clone(),
            })
    }

    #[inline]
    pub(crate) fn evaluate(&self, ctx: &S::Ctx<'_>) -> Verdict {
        self.evaluate_with(ctx, &self.decisive_index, &self.shadow_index)
    }

    pub(crate) fn evaluate_linear(&self, ctx: &S::Ctx<'_>) -> Verdict {
        self.evaluate_with(
            ctx,
            &index::Index::linear(self.decisive.len()),
            &index::Index::linear(self.shadow.len()),
        )
    }

    pub(crate) fn indexed_fields(&self) -> usize {
        self.decisive_index.indexed_fields()
    }

    /// The first decisive rule's condition, errors kept (differential tests).
    #[cfg(test)]
    pub(crate) fn evaluate_condition(&self, ctx: &S::Ctx<'_>) -> Result<bool, ()> {
        self.decisive[0].cond.eval(ctx).map_err(|_| ())
    }

    #[inline]
    fn evaluate_with(
        &self,
        ctx: &S::Ctx<'_>,
        decisive: &index::Index<S>,
        shadow: &index::Index<S>,
    ) -> Verdict {
        let mut verdict = Verdict::default();
        let verified = S::challenge_verified(ctx);
        decisive.visit(ctx, |i| {
            let rule = &self.decisive[i];
            // A verified retry passes over a `skip` challenge rule: not
            // evaluated, as if absent (see `decision::OnVerified`).
            if verified && rule.action == Action::Challenge(crate::decision::OnVerified::Skip) {
                return false;
            }
            if rule.eval(ctx, self.metered) {
                rule.matches.increment(1);
                verdict.decisive = Some(Matched {
                    name: rule.name.clone(),
                    action: rule.action,
                });
                return true;
            }
            false
        });
        shadow.visit(ctx, |i| {
            let rule = &self.shadow[i];
            if rule.eval(ctx, self.metered) {
                rule.matches.increment(1);
                verdict.shadow.push(Matched {
                    name: rule.name.clone(),
                    action: rule.action,
                });
            }
            false
        });
        verdict
    }

    /// Compiles `src` on a thread of its own with a [`BUILD_STACK`] stack: the
    /// `cel` parser recurses once per level of a left-nested chain (`1+1+…`, up
    /// to 4 096 levels in a `when` of [`MAX_EXPR_BYTES`]) before the compiler can
    /// refuse it at [`MAX_EXPR_DEPTH`], and on the caller's stack (2 MiB on a
    /// tokio thread) that overflowed and aborted the process.
    pub(crate) fn build(src: &str, metered: bool) -> Result<Self, RuleSetError> {
        std::thread::scope(|scope| {
            match std::thread::Builder::new()
                .name("rules-compile".into())
                .stack_size(BUILD_STACK)
                .spawn_scoped(scope, || Self::build_here(src, metered))
            {
                Ok(thread) => thread
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                // No thread to be had (resource limits): compile here, as before.
                Err(_) => Self::build_here(src, metered),
            }
        })
    }

    #[expect(
        clippy::too_many_lines,
        reason = "every rule checked in one pass, so that one build reports every error in the file"
    )]
    fn build_here(src: &str, metered: bool) -> Result<Self, RuleSetError> {
        if src.len() > MAX_FILE_BYTES {
            return Err(file_error(CompileErrorKind::FileTooLarge {
                size: src.len(),
                limit: MAX_FILE_BYTES,
            })
            .into());
        }
        let lines = file::LineIndex::new(src);
        let raw = file::parse(src, &lines)?;
        if raw.rule.len() > MAX_RULES {
            return Err(file_error(CompileErrorKind::TooManyRules {
                count: raw.rule.len(),
                limit: MAX_RULES,
            })
            .into());
        }
        let mut errors = Vec::new();
        let lists = build_lists(&raw.lists, &lines, &mut errors);

        let env = cel::Env::stdlib();
        let mut seen: HashMap<&str, u32> = HashMap::new();
        let mut decisive = Vec::new();
        let mut shadow = Vec::new();
        for spanned in &raw.rule {
            let r = spanned.get_ref();
            let name = r.name.get_ref().as_str();
            let at = |span: std::ops::Range<usize>, kind| {
                let (line, col) = lines.position(span.start);
                CompileError {
                    rule: name.to_string(),
                    line,
                    col,
                    kind,
                }
            };
            let mut ok = true;
            if let Some(problem) = invalid_name(name) {
                errors.push(at(r.name.span(), CompileErrorKind::Invalid(problem)));
                ok = false;
            }
            let name_line = lines.position(r.name.span().start).0;
            if let Some(first_line) = seen.insert(name, name_line) {
                errors.push(at(
                    r.name.span(),
                    CompileErrorKind::DuplicateName { first_line },
                ));
                seen.insert(name, first_line);
                ok = false;
            }
            let action = match parse_action(r, S::ACTIONS) {
                Ok(a) => Some(a),
                Err((span, kind)) => {
                    errors.push(at(span, kind));
                    None
                }
            };
            let is_shadow = match &r.mode {
                None => false,
                Some(m) if m.get_ref() == "shadow" => true,
                Some(m) => {
                    errors.push(at(m.span(), CompileErrorKind::Mode(m.get_ref().clone())));
                    ok = false;
                    false
                }
            };
            let when = r.when.get_ref();
            let cond = if when.len() > MAX_EXPR_BYTES {
                errors.push(at(
                    r.when.span(),
                    CompileErrorKind::Invalid(format!(
                        "`when` is {} bytes, over the {MAX_EXPR_BYTES}-byte limit",
                        when.len()
                    )),
                ));
                None
            } else {
                match compile_expr::<S>(&env, when, &lists) {
                    Ok(c) => Some(c),
                    Err((char_offset, kind)) => {
                        let (line, col) = lines.in_string(r.when.span().start, char_offset);
                        errors.push(CompileError {
                            rule: name.to_string(),
                            line,
                            col,
                            kind,
                        });
                        None
                    }
                }
            };
            if let (true, Some(action), Some(cond)) = (ok, action, cond) {
                let name: Arc<str> = Arc::from(name);
                let mode = if is_shadow { "shadow" } else { "decisive" };
                let matches = if metered {
                    metrics::counter!(
                        S::MATCHES_METRIC,
                        "rule" => name.to_string(),
                        "mode" => mode,
                    )
                } else {
                    metrics::Counter::noop()
                };
                let rule = Rule {
                    name,
                    action,
                    shadow: is_shadow,
                    description: r.description.as_deref().map(Arc::from),
                    cond,
                    matches,
                };
                if is_shadow {
                    shadow.push(rule);
                } else {
                    decisive.push(rule);
                }
            }
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| (e.line, e.col));
            return Err(RuleSetError { errors });
        }
        let index_of = |rules: &[Rule<S>]| {
            let conds: Vec<&eval::Bool<S>> = rules.iter().map(|r| &r.cond).collect();
            Arc::new(index::Index::build(&conds))
        };
        Ok(Compiled {
            version: Arc::from(content_version(src.as_bytes())),
            decisive_index: index_of(&decisive),
            shadow_index: index_of(&shadow),
            source: Arc::from(src),
            decisive: Arc::from(decisive),
            shadow: Arc::from(shadow),
            metered,
        })
    }
}

/// First 12 hex digits of the SHA-256 of the file: identical files give identical
/// versions on every replica, and the decision log can name the set that decided.
pub fn content_version(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    hex::encode(&digest[..6])
}

/// Reads a rules file as UTF-8, refusing one over [`MAX_FILE_BYTES`] after reading
/// at most one byte more than the limit (never a huge file whole).
pub fn read_rules_file(path: &Path) -> Result<String, LoadError> {
    use std::io::Read;
    let p = || path.display().to_string();
    let io = |source| LoadError::Io { path: p(), source };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut buf = Vec::new();
    f.take(MAX_FILE_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    let invalid = |kind| LoadError::Invalid {
        path: p(),
        errors: file_error(kind).into(),
    };
    if buf.len() > MAX_FILE_BYTES {
        let size = std::fs::metadata(path)
            .map(|m| usize::try_from(m.len()).unwrap_or(usize::MAX))
            .unwrap_or(buf.len());
        return Err(invalid(CompileErrorKind::FileTooLarge {
            size,
            limit: MAX_FILE_BYTES,
        }));
    }
    String::from_utf8(buf).map_err(|_| invalid(CompileErrorKind::Toml("not UTF-8".into())))
}

fn file_error(kind: CompileErrorKind) -> CompileError {
    CompileError {
        rule: "-".into(),
        line: 1,
        col: 1,
        kind,
    }
}

/// Names go into metric labels and the `rule:<name>` reason: keep them short and
/// printable.
fn invalid_name(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 128 {
        return Some("rule names must be 1 to 128 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Some(format!(
            "rule name `{name}` may only contain ASCII letters, digits, '-', '_', '.', ':'"
        ));
    }
    None
}

type Span = std::ops::Range<usize>;

fn parse_action(r: &file::RawRule, allowed: &[&str]) -> Result<Action, (Span, CompileErrorKind)> {
    let written = r.action.get_ref().as_str();
    if !allowed.contains(&written)
        && ["approve", "decline", "cap", "review", "challenge"].contains(&written)
    {
        return Err((
            r.action.span(),
            CompileErrorKind::Action(format!(
                "action `{written}` is not available in this rule set ({})",
                allowed.join(", ")
            )),
        ));
    }
    let action = match r.action.get_ref().as_str() {
        "approve" => Action::Approve,
        "decline" => Action::Decline,
        "review" => Action::Review,
        "challenge" => {
            Action::Challenge(match r.on_verified.as_ref().map(|o| o.get_ref().as_str()) {
                None | Some("approve") => crate::decision::OnVerified::Approve,
                Some("skip") => crate::decision::OnVerified::Skip,
                Some(other) => {
                    return Err((
                        r.on_verified
                            .as_ref()
                            .map_or(r.action.span(), toml::Spanned::span),
                        CompileErrorKind::Action(format!(
                            "on_verified `{other}` must be \"approve\" or \"skip\""
                        )),
                    ));
                }
            })
        }
        "cap" => match &r.amount {
            Some(a) if *a.get_ref() >= 0 => Action::Cap(*a.get_ref()),
            Some(a) => {
                return Err((
                    a.span(),
                    CompileErrorKind::Action("cap `amount` must not be negative".into()),
                ));
            }
            None => {
                return Err((
                    r.action.span(),
                    CompileErrorKind::Action(
                        "action `cap` needs `amount` (smallest currency unit)".into(),
                    ),
                ));
            }
        },
        other => {
            return Err((
                r.action.span(),
                CompileErrorKind::Action(format!(
                    "unknown action `{other}` (approve, decline, cap, review or challenge)"
                )),
            ));
        }
    };
    if let (Some(o), false) = (&r.on_verified, matches!(action, Action::Challenge(_))) {
        return Err((
            o.span(),
            CompileErrorKind::Action(
                "`on_verified` is only valid with action = \"challenge\"".into(),
            ),
        ));
    }
    if let (Some(a), false) = (&r.amount, matches!(action, Action::Cap(_))) {
        return Err((
            a.span(),
            CompileErrorKind::Action("`amount` is only valid with action = \"cap\"".into()),
        ));
    }
    Ok(action)
}

fn build_lists(
    raw: &BTreeMap<String, toml::Spanned<Vec<toml::Spanned<toml::Value>>>>,
    lines: &file::LineIndex<'_>,
    errors: &mut Vec<CompileError>,
) -> BTreeMap<String, compile::List> {
    let mut out = BTreeMap::new();
    let mut total = 0usize;
    for (name, items) in raw {
        let err = |span: Span, msg: String| {
            let (line, col) = lines.position(span.start);
            CompileError {
                rule: format!("lists.{name}"),
                line,
                col,
                kind: CompileErrorKind::Invalid(msg),
            }
        };
        let ident = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident {
            errors.push(err(
                items.span(),
                format!("list name `{name}` must be an identifier (letters, digits, '_')"),
            ));
            continue;
        }
        total += items.get_ref().len();
        if total > MAX_LIST_ENTRIES {
            errors.push(err(
                items.span(),
                format!("lists hold more than {MAX_LIST_ENTRIES} entries in total"),
            ));
            break;
        }
        let mut strs = Vec::new();
        let mut ints = Vec::new();
        let mut bad = false;
        for item in items.get_ref() {
            match item.get_ref() {
                toml::Value::String(s) => strs.push(s.clone()),
                toml::Value::Integer(i) => ints.push(*i),
                other => {
                    errors.push(err(
                        item.span(),
                        format!(
                            "list entries must be strings or integers, not {}",
                            other.type_str()
                        ),
                    ));
                    bad = true;
                }
            }
        }
        if !strs.is_empty() && !ints.is_empty() {
            errors.push(err(items.span(), "list mixes strings and integers".into()));
            bad = true;
        }
        if bad {
            continue;
        }
        let len = strs.len() + ints.len();
        out.insert(
            name.clone(),
            compile::List {
                len,
                strs: ints.is_empty().then(|| Arc::new(eval::StrSet::new(strs))),
                ints: (len == 0 || !ints.is_empty()).then(|| Arc::new(eval::IntSet::new(ints))),
            },
        );
    }
    out
}

/// Parses and compiles one expression; errors carry the character offset inside
/// the expression.
fn compile_expr<S: Schema>(
    env: &cel::Env,
    src: &str,
    lists: &BTreeMap<String, compile::List>,
) -> Result<eval::Bool<S>, (usize, CompileErrorKind)> {
    let (ast, info) = match env.parser().parse_with_source_info(src) {
        Ok(x) => x,
        Err(errs) => {
            let first = errs.errors.first();
            let offset = first
                .map(|e| expr_offset(src, e.pos.0, e.pos.1))
                .unwrap_or(0);
            let msg = errs
                .errors
                .iter()
                .map(|e| e.msg.clone())
                .collect::<Vec<_>>()
                .join("; ");
            return Err((offset, CompileErrorKind::Syntax(msg)));
        }
    };
    compile::compile_when::<S>(&ast, lists).map_err(|(id, kind)| {
        let offset = info.offset_for(id).map(|(s, _)| s as usize).unwrap_or(0);
        (offset, kind)
    })
}

/// Character offset of a 1-based (line, column) inside an expression.
fn expr_offset(src: &str, line: isize, col: isize) -> usize {
    let line = line.max(1).unsigned_abs();
    let col = col.max(1).unsigned_abs();
    let before: usize = src
        .split_inclusive('\n')
        .take(line - 1)
        .map(|l| l.chars().count())
        .sum();
    before + col - 1
}

#[cfg(test)]
mod tests;

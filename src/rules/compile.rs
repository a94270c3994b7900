//! Type-checks a parsed CEL expression against the authorization context and lowers
//! it to the typed tree of `eval.rs`.
//!
//! Everything is decided here, at load time: which field an access reads, the type
//! of every node, which list a `lists.<name>` is, the compiled regex of every
//! `matches`. A construct the evaluator does not support is rejected here with a
//! message, never discovered while an authorization waits.
//!
//! Types are strict, as in CEL's checker: `==` and `<` need both sides of one type
//! (`int(x)`, `uint(x)`, `double(x)` convert), `&&`/`||`/`!`/ternary conditions
//! need bools, and a `when` must be a bool.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;

use cel::common::ast::{CallExpr, ComprehensionExpr, Expr, IdedExpr, LiteralValue, operators};

use super::error::CompileErrorKind;
use super::eval::{Arith, Bool, Cmp, Dec, Decimal, Double, Int, IntSet, Str, StrSet, Uint};
use super::schema::{Field, Schema};

/// A declared `[lists]` entry, pre-built. An empty list is usable as either type.
#[derive(Debug, Clone)]
pub(super) struct List {
    pub strs: Option<Arc<StrSet>>,
    pub ints: Option<Arc<IntSet>>,
    pub len: usize,
}

/// A compile failure, located by the CEL node id (mapped to a file position later).
pub(super) type Fail = (u64, CompileErrorKind);

type Res<T> = Result<T, Fail>;

/// A typed node.
enum Typed<S: Schema> {
    Bool(Bool<S>),
    Int(Int<S>),
    Uint(Uint<S>),
    Double(Double<S>),
    Str(Str<S>),
    /// A decimal-string field, or a literal compared with one.
    Decimal(Dec<S>),
    /// A list: `lists.<name>` or a constant list literal.
    List(List),
    /// `card.metadata`.
    Meta,
    /// The context's item list (`line_items`).
    Items,
}

impl<S: Schema> Typed<S> {
    fn type_name(&self) -> &'static str {
        match self {
            Typed::Bool(_) => "bool",
            Typed::Int(_) => "int",
            Typed::Uint(_) => "uint",
            Typed::Double(_) => "double",
            Typed::Str(_) => "string",
            Typed::Decimal(_) => "decimal",
            Typed::List(_) => "list",
            Typed::Meta => "map(string, string)",
            Typed::Items => "list(item)",
        }
    }
}

fn type_err(id: u64, msg: String) -> Fail {
    (id, CompileErrorKind::Type(msg))
}

fn unsupported(id: u64, msg: impl Into<String>) -> Fail {
    (id, CompileErrorKind::Unsupported(msg.into()))
}

/// Compiles one `when` into a bool condition over schema `S`.
pub(super) fn compile_when<S: Schema>(
    expr: &IdedExpr,
    lists: &BTreeMap<String, List>,
) -> Res<Bool<S>> {
    let c = Compiler::<S> {
        lists,
        item_var: None,
        depth: Cell::new(0),
        _schema: std::marker::PhantomData,
    };
    match c.expr(expr)? {
        Typed::Bool(b) => Ok(b),
        other => Err(type_err(
            expr.id,
            format!(
                "`when` must be a bool expression, this one is {}",
                other.type_name()
            ),
        )),
    }
}

struct Compiler<'l, S> {
    lists: &'l BTreeMap<String, List>,
    /// Inside a macro: the name of its item variable.
    item_var: Option<&'l str>,
    /// Nodes open on the way down to the one being compiled (see
    /// [`super::MAX_EXPR_DEPTH`]).
    depth: Cell<usize>,
    _schema: std::marker::PhantomData<S>,
}

impl<S: Schema> Compiler<'_, S> {
    /// Every recursion of the compiler passes here, so the depth check bounds
    /// both this stack and the evaluator's (its tree has the same shape).
    fn expr(&self, e: &IdedExpr) -> Res<Typed<S>> {
        let depth = self.depth.get() + 1;
        if depth > super::MAX_EXPR_DEPTH {
            return Err(unsupported(
                e.id,
                format!(
                    "expression nested deeper than {} levels; split the rule or use a list",
                    super::MAX_EXPR_DEPTH
                ),
            ));
        }
        self.depth.set(depth);
        let typed = self.expr_node(e);
        self.depth.set(depth - 1);
        typed
    }

    fn expr_node(&self, e: &IdedExpr) -> Res<Typed<S>> {
        match &e.expr {
            Expr::Literal(lit) => literal(e.id, lit),
            Expr::Ident(_) | Expr::Select(_) => self.path(e),
            Expr::Call(call) => self.call(e.id, call),
            Expr::List(_) => Err(unsupported(
                e.id,
                "list literals are only supported on the right of `in`",
            )),
            Expr::Comprehension(c) => self.comprehension(e.id, c),
            Expr::Map(_) => Err(unsupported(e.id, "map literals are not supported")),
            Expr::Struct(_) => Err(unsupported(e.id, "message literals are not supported")),
            Expr::Unspecified => Err(unsupported(e.id, "empty expression")),
        }
    }

    fn bool(&self, e: &IdedExpr, what: &str) -> Res<Bool<S>> {
        match self.expr(e)? {
            Typed::Bool(b) => Ok(b),
            t => Err(type_err(
                e.id,
                format!("{what} needs a bool, got {}", t.type_name()),
            )),
        }
    }

    fn str(&self, e: &IdedExpr, what: &str) -> Res<Str<S>> {
        match self.expr(e)? {
            Typed::Str(s) => Ok(s),
            t => Err(type_err(
                e.id,
                format!("{what} needs a string, got {}", t.type_name()),
            )),
        }
    }

    /// An identifier or a chain of field selections on one.
    fn path(&self, e: &IdedExpr) -> Res<Typed<S>> {
        if let Expr::Select(sel) = &e.expr
            && sel.test
        {
            // `has(x.f)`: a metadata key, or a context field the payload may
            // leave out (the schema says which can be absent).
            return match segments(&sel.operand) {
                Some(p) if S::META.is_some_and(|m| p.join(".") == m) => Ok(Typed::Bool(
                    Bool::HasMeta(Box::new(Str::Const(sel.field.as_str().into()))),
                )),
                Some(p) => {
                    let mut full = p.join(".");
                    full.push('.');
                    full.push_str(&sel.field);
                    if let Some(f) = S::resolve(&full) {
                        return Ok(Typed::Bool(Bool::Has(f)));
                    }
                    match self.resolve(e.id, &full)? {
                        // Context fields are always present.
                        Typed::Meta
                        | Typed::Items
                        | Typed::List(_)
                        | Typed::Bool(_)
                        | Typed::Int(_)
                        | Typed::Str(_) => Ok(Typed::Bool(Bool::Const(true))),
                        _ => Err(unsupported(e.id, "has() on this expression")),
                    }
                }
                None => Err(unsupported(e.id, "has() on a computed value")),
            };
        }
        match segments(e) {
            // Point errors at the start of the path, not at its last `.`.
            Some(p) => self.resolve(root_id(e), &p.join(".")),
            None => Err(unsupported(
                e.id,
                "field selection on a computed value; select from a context field",
            )),
        }
    }

    fn resolve(&self, id: u64, path: &str) -> Res<Typed<S>> {
        let typed = |f: Field<S>| match f {
            Field::Str(f) => Typed::Str(Str::Field(f)),
            Field::Int(f) => Typed::Int(Int::Field(f)),
            Field::Bool(f) => Typed::Bool(Bool::Field(f)),
            Field::Double(f) => Typed::Double(Double::Field(f)),
            Field::Decimal(f) => Typed::Decimal(Dec::Field(f)),
        };
        // The item variable shadows context fields of the same name, as in CEL.
        if let Some(var) = self.item_var {
            if path == var {
                return Err(type_err(
                    id,
                    format!("`{var}` is an item: select one of its fields"),
                ));
            }
            if let Some(field) = path.strip_prefix(var).and_then(|p| p.strip_prefix('.')) {
                return S::resolve_item(field)
                    .map(typed)
                    .ok_or_else(|| (id, CompileErrorKind::UnknownField(path.to_string())));
            }
        }
        if let Some(f) = S::resolve(path) {
            return Ok(typed(f));
        }
        if let Some(meta) = S::META {
            if path == meta {
                return Ok(Typed::Meta);
            }
            if let Some(key) = path.strip_prefix(meta).and_then(|p| p.strip_prefix('.')) {
                return Ok(Typed::Str(Str::Meta(key.into())));
            }
        }
        if S::ITEMS == Some(path) {
            return Ok(Typed::Items);
        }
        if let Some(name) = path.strip_prefix("lists.") {
            return match self.lists.get(name) {
                Some(l) => Ok(Typed::List(l.clone())),
                None => Err((id, CompileErrorKind::UnknownList(name.to_string()))),
            };
        }
        if path == "lists" {
            return Err(type_err(
                id,
                "`lists` is a namespace: use lists.<name>".to_string(),
            ));
        }
        if S::is_object(path) {
            return Err(type_err(
                id,
                format!("`{path}` is an object: select one of its fields"),
            ));
        }
        Err((id, CompileErrorKind::UnknownField(path.to_string())))
    }

    /// `items.exists(i, body)`, `items.all(i, body)`, `items.exists_one(i, body)`
    /// as the `cel` parser expands them; anything else (map, filter, macros over
    /// other lists, nested macros) is refused.
    fn comprehension(&self, id: u64, c: &ComprehensionExpr) -> Res<Typed<S>> {
        let refuse = || {
            unsupported(
                id,
                match S::ITEMS {
                    Some(items) => format!(
                        "only {items}.exists(), {items}.all() and {items}.exists_one() macros are supported"
                    ),
                    None => {
                        "macros are not supported in this context (it has no item list)".to_string()
                    }
                },
            )
        };
        if self.item_var.is_some() {
            return Err(unsupported(id, "nested macros"));
        }
        if c.iter_var2.is_some() || c.accu_var != "@result" {
            return Err(refuse());
        }
        let over_items = segments(&c.iter_range)
            .is_some_and(|p| S::ITEMS.is_some_and(|items| p.join(".") == items));
        if !over_items {
            return Err(refuse());
        }
        let Expr::Call(step) = &c.loop_step.expr else {
            return Err(refuse());
        };
        let (kind, body) = match (&c.accu_init.expr, step.func_name.as_str()) {
            (Expr::Literal(LiteralValue::Boolean(b)), operators::LOGICAL_OR)
                if !*b.inner() && step.args.len() == 2 =>
            {
                ("exists", &step.args[1])
            }
            (Expr::Literal(LiteralValue::Boolean(b)), operators::LOGICAL_AND)
                if *b.inner() && step.args.len() == 2 =>
            {
                ("all", &step.args[1])
            }
            (Expr::Literal(LiteralValue::Int(_)), operators::CONDITIONAL)
                if step.args.len() == 3 =>
            {
                ("exists_one", &step.args[0])
            }
            _ => return Err(refuse()),
        };
        let inner = Compiler::<S> {
            lists: self.lists,
            item_var: Some(c.iter_var.as_str()),
            depth: Cell::new(self.depth.get()),
            _schema: std::marker::PhantomData,
        };
        let body = Box::new(inner.bool(body, &format!("the body of {kind}()"))?);
        Ok(Typed::Bool(match kind {
            "exists" => Bool::Exists(body),
            "all" => Bool::All(body),
            _ => Bool::ExistsOne(body),
        }))
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one arm per CEL function and macro the compiler accepts; the match is the supported set"
    )]
    fn call(&self, id: u64, call: &CallExpr) -> Res<Typed<S>> {
        let name = call.func_name.as_str();
        let args = &call.args;
        if let Some(target) = &call.target {
            return self.method(id, name, target, args);
        }
        let arity = |n: usize| -> Res<()> {
            if args.len() == n {
                Ok(())
            } else {
                Err(type_err(
                    id,
                    format!("`{name}` takes {n} argument(s), got {}", args.len()),
                ))
            }
        };
        match name {
            operators::LOGICAL_AND | operators::LOGICAL_OR => {
                let mut it = args.iter();
                let first = it
                    .next()
                    .ok_or_else(|| unsupported(id, "empty logical operator"))?;
                let op = if name == operators::LOGICAL_AND {
                    "&&"
                } else {
                    "||"
                };
                let mut acc = self.bool(first, &format!("`{op}`"))?;
                for a in it {
                    let b = self.bool(a, &format!("`{op}`"))?;
                    acc = if name == operators::LOGICAL_AND {
                        Bool::And(Box::new(acc), Box::new(b))
                    } else {
                        Bool::Or(Box::new(acc), Box::new(b))
                    };
                }
                Ok(Typed::Bool(acc))
            }
            operators::LOGICAL_NOT => {
                arity(1)?;
                Ok(Typed::Bool(Bool::Not(Box::new(
                    self.bool(&args[0], "`!`")?,
                ))))
            }
            operators::CONDITIONAL => {
                arity(3)?;
                let c = Box::new(self.bool(&args[0], "the ternary condition")?);
                let (a, b) = (self.expr(&args[1])?, self.expr(&args[2])?);
                Ok(match (a, b) {
                    (Typed::Bool(a), Typed::Bool(b)) => {
                        Typed::Bool(Bool::Cond(c, a.into(), b.into()))
                    }
                    (Typed::Int(a), Typed::Int(b)) => Typed::Int(Int::Cond(c, a.into(), b.into())),
                    (Typed::Uint(a), Typed::Uint(b)) => {
                        Typed::Uint(Uint::Cond(c, a.into(), b.into()))
                    }
                    (Typed::Double(a), Typed::Double(b)) => {
                        Typed::Double(Double::Cond(c, a.into(), b.into()))
                    }
                    (Typed::Str(a), Typed::Str(b)) => Typed::Str(Str::Cond(c, a.into(), b.into())),
                    (a, b) => {
                        return Err(type_err(
                            id,
                            format!(
                                "ternary branches must have one scalar type, got {} and {}",
                                a.type_name(),
                                b.type_name()
                            ),
                        ));
                    }
                })
            }
            operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS => {
                arity(2)?;
                let op = match name {
                    operators::EQUALS => Cmp::Eq,
                    operators::NOT_EQUALS => Cmp::Ne,
                    operators::LESS => Cmp::Lt,
                    operators::LESS_EQUALS => Cmp::Le,
                    operators::GREATER => Cmp::Gt,
                    _ => Cmp::Ge,
                };
                let (a, b) = (self.expr(&args[0])?, self.expr(&args[1])?);
                Ok(Typed::Bool(match (a, b) {
                    (Typed::Decimal(a), b) => {
                        Bool::CmpDec(op, a.into(), decimal_operand(args[1].id, &b)?.into())
                    }
                    (a, Typed::Decimal(b)) => {
                        Bool::CmpDec(op, decimal_operand(args[0].id, &a)?.into(), b.into())
                    }
                    // As the `cel` interpreter (and cel-go) do: an int meets a
                    // double as the nearest double, so `score > 75` works.
                    (Typed::Double(a), Typed::Int(b)) => {
                        Bool::CmpDouble(op, a.into(), Double::FromInt(b.into()).into())
                    }
                    (Typed::Int(a), Typed::Double(b)) => {
                        Bool::CmpDouble(op, Double::FromInt(a.into()).into(), b.into())
                    }
                    (Typed::Int(a), Typed::Int(b)) => Bool::CmpInt(op, a.into(), b.into()),
                    (Typed::Uint(a), Typed::Uint(b)) => Bool::CmpUint(op, a.into(), b.into()),
                    (Typed::Double(a), Typed::Double(b)) => Bool::CmpDouble(op, a.into(), b.into()),
                    (Typed::Str(a), Typed::Str(b)) => Bool::CmpStr(op, a.into(), b.into()),
                    (Typed::Bool(a), Typed::Bool(b)) if matches!(op, Cmp::Eq | Cmp::Ne) => {
                        Bool::CmpBools(op, a.into(), b.into())
                    }
                    (a, b) => {
                        return Err(type_err(
                            id,
                            format!(
                                "cannot compare {} with {} using {}{}",
                                a.type_name(),
                                b.type_name(),
                                cmp_symbol(op),
                                numeric_hint(&a, &b)
                            ),
                        ));
                    }
                }))
            }
            operators::ADD
            | operators::SUBSTRACT
            | operators::MULTIPLY
            | operators::DIVIDE
            | operators::MODULO => {
                arity(2)?;
                let op = match name {
                    operators::ADD => Arith::Add,
                    operators::SUBSTRACT => Arith::Sub,
                    operators::MULTIPLY => Arith::Mul,
                    operators::DIVIDE => Arith::Div,
                    _ => Arith::Rem,
                };
                let (a, b) = (self.expr(&args[0])?, self.expr(&args[1])?);
                Ok(match (a, b) {
                    (Typed::Int(a), Typed::Int(b)) => Typed::Int(Int::Bin(op, a.into(), b.into())),
                    (Typed::Uint(a), Typed::Uint(b)) => {
                        Typed::Uint(Uint::Bin(op, a.into(), b.into()))
                    }
                    (Typed::Double(a), Typed::Double(b)) if op != Arith::Rem => {
                        Typed::Double(Double::Bin(op, a.into(), b.into()))
                    }
                    (Typed::Str(_), Typed::Str(_)) if op == Arith::Add => {
                        return Err(unsupported(
                            id,
                            "string concatenation (it would allocate on every authorization); \
                             compare the parts instead",
                        ));
                    }
                    (a, b) => {
                        return Err(type_err(
                            id,
                            format!(
                                "no arithmetic operator for {} and {}{}",
                                a.type_name(),
                                b.type_name(),
                                numeric_hint(&a, &b)
                            ),
                        ));
                    }
                })
            }
            operators::NEGATE => {
                arity(1)?;
                match self.expr(&args[0])? {
                    Typed::Int(a) => Ok(Typed::Int(Int::Neg(a.into()))),
                    Typed::Double(a) => Ok(Typed::Double(Double::Neg(a.into()))),
                    t => Err(type_err(id, format!("cannot negate {}", t.type_name()))),
                }
            }
            operators::IN => {
                arity(2)?;
                self.in_op(id, &args[0], &args[1])
            }
            operators::INDEX => {
                arity(2)?;
                match (self.expr(&args[0])?, &args[1].expr) {
                    (Typed::Meta, Expr::Literal(LiteralValue::String(k))) => {
                        Ok(Typed::Str(Str::Meta(k.inner().into())))
                    }
                    (Typed::Meta, _) => Err(unsupported(
                        id,
                        "card.metadata[...] needs a string literal key",
                    )),
                    (t, _) => Err(unsupported(id, format!("indexing a {}", t.type_name()))),
                }
            }
            "size" => {
                arity(1)?;
                self.size(id, &args[0])
            }
            "matches" => {
                arity(2)?;
                self.matches(id, &args[0], &args[1])
            }
            "int" | "uint" | "double" | "string" | "bool" => {
                arity(1)?;
                self.convert(id, name, &args[0])
            }
            "has" => Err(unsupported(
                id,
                "has() needs a field selection, like has(card.metadata.key)",
            )),
            _ => Err(unsupported(id, format!("function `{name}`"))),
        }
    }

    fn method(&self, id: u64, name: &str, target: &IdedExpr, args: &[IdedExpr]) -> Res<Typed<S>> {
        if args.len() != usize::from(name != "size") {
            return Err(type_err(
                id,
                format!("`.{name}()` got {} argument(s)", args.len()),
            ));
        }
        match name {
            "startsWith" | "endsWith" | "contains" => {
                let s = Box::new(self.str(target, &format!("`.{name}()`"))?);
                let p = Box::new(self.str(&args[0], &format!("`.{name}()`"))?);
                Ok(Typed::Bool(match name {
                    "startsWith" => Bool::StartsWith(s, p),
                    "endsWith" => Bool::EndsWith(s, p),
                    _ => Bool::Contains(s, p),
                }))
            }
            "matches" => self.matches(id, target, &args[0]),
            "size" => self.size(id, target),
            _ => Err(unsupported(id, format!("method `.{name}()`"))),
        }
    }

    fn size(&self, id: u64, arg: &IdedExpr) -> Res<Typed<S>> {
        match self.expr(arg)? {
            Typed::Str(s) => Ok(Typed::Int(Int::SizeStr(s.into()))),
            Typed::List(l) => Ok(Typed::Int(Int::Const(
                i64::try_from(l.len).unwrap_or(i64::MAX),
            ))),
            Typed::Meta => Ok(Typed::Int(Int::MetaLen)),
            Typed::Items => Ok(Typed::Int(Int::ItemCount)),
            t => Err(type_err(id, format!("size() of {}", t.type_name()))),
        }
    }

    fn matches(&self, id: u64, subject: &IdedExpr, pattern: &IdedExpr) -> Res<Typed<S>> {
        let s = self.str(subject, "matches()")?;
        let Expr::Literal(LiteralValue::String(p)) = &pattern.expr else {
            return Err(unsupported(
                pattern.id,
                "matches() needs a string literal pattern (compiled once at load)",
            ));
        };
        // A size limit keeps a hostile pattern from eating memory at load.
        let re = regex::RegexBuilder::new(p.inner())
            .size_limit(1 << 20)
            .build()
            .map_err(|e| (pattern.id, CompileErrorKind::Regex(e.to_string())))?;
        let _ = id;
        Ok(Typed::Bool(Bool::Matches(s.into(), re)))
    }

    fn convert(&self, id: u64, name: &str, arg: &IdedExpr) -> Res<Typed<S>> {
        let v = self.expr(arg)?;
        Ok(match (name, v) {
            ("int", Typed::Int(i)) => Typed::Int(i),
            ("int", Typed::Uint(u)) => Typed::Int(Int::FromUint(u.into())),
            ("int", Typed::Double(d)) => Typed::Int(Int::FromDouble(d.into())),
            ("uint", Typed::Uint(u)) => Typed::Uint(u),
            ("uint", Typed::Int(i)) => Typed::Uint(Uint::FromInt(i.into())),
            ("uint", Typed::Double(d)) => Typed::Uint(Uint::FromDouble(d.into())),
            ("double", Typed::Double(d)) => Typed::Double(d),
            ("double", Typed::Int(i)) => Typed::Double(Double::FromInt(i.into())),
            ("double", Typed::Uint(u)) => Typed::Double(Double::FromUint(u.into())),
            ("string", Typed::Str(s)) => Typed::Str(s),
            ("string", Typed::Decimal(Dec::Field(f))) => Typed::Str(Str::Field(f)),
            ("bool", Typed::Bool(b)) => Typed::Bool(b),
            (_, t) => {
                return Err(unsupported(
                    id,
                    format!(
                        "{name}() of {} (parsing or formatting would allocate per authorization)",
                        t.type_name()
                    ),
                ));
            }
        })
    }

    fn in_op(&self, id: u64, elem: &IdedExpr, list: &IdedExpr) -> Res<Typed<S>> {
        let l = match &list.expr {
            Expr::List(items) => literal_list(list.id, &items.elements)?,
            _ => match self.expr(list)? {
                Typed::List(l) => l,
                Typed::Meta => {
                    let k = self.str(elem, "`in card.metadata`")?;
                    return Ok(Typed::Bool(Bool::HasMeta(k.into())));
                }
                t => {
                    return Err(type_err(
                        list.id,
                        format!("`in` needs a list on the right, got {}", t.type_name()),
                    ));
                }
            },
        };
        match self.expr(elem)? {
            Typed::Str(s) => match l.strs {
                Some(set) => Ok(Typed::Bool(Bool::StrIn(s.into(), set))),
                None => Err(type_err(id, "string `in` a list of ints".into())),
            },
            Typed::Int(i) => match l.ints {
                Some(set) => Ok(Typed::Bool(Bool::IntIn(i.into(), set))),
                None => Err(type_err(id, "int `in` a list of strings".into())),
            },
            t => Err(unsupported(
                id,
                format!("`in` on a {}: lists hold strings or ints", t.type_name()),
            )),
        }
    }
}

/// The id of the identifier a selection chain starts from.
fn root_id(e: &IdedExpr) -> u64 {
    let mut cur = e;
    while let Expr::Select(s) = &cur.expr {
        cur = &s.operand;
    }
    cur.id
}

/// `a.b.c` as segments, if the expression is only an identifier and selections.
fn segments(e: &IdedExpr) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    let mut cur = e;
    loop {
        match &cur.expr {
            Expr::Ident(n) => {
                out.push(n.as_str());
                out.reverse();
                return Some(out);
            }
            Expr::Select(s) if !s.test => {
                out.push(s.field.as_str());
                cur = &s.operand;
            }
            _ => return None,
        }
    }
}

fn literal<S: Schema>(id: u64, lit: &LiteralValue) -> Res<Typed<S>> {
    Ok(match lit {
        LiteralValue::Boolean(b) => Typed::Bool(Bool::Const(*b.inner())),
        LiteralValue::Int(i) => Typed::Int(Int::Const(*i.inner())),
        LiteralValue::UInt(u) => Typed::Uint(Uint::Const(*u.inner())),
        LiteralValue::Double(d) => Typed::Double(Double::Const(*d.inner())),
        LiteralValue::String(s) => Typed::Str(Str::Const(s.inner().into())),
        LiteralValue::Null => return Err(unsupported(id, "null (context fields are never null)")),
        LiteralValue::Bytes(_) => return Err(unsupported(id, "bytes literals")),
    })
}

/// A list literal of constants, pre-built as a set.
fn literal_list(id: u64, items: &[IdedExpr]) -> Res<List> {
    let mut strs = Vec::new();
    let mut ints = Vec::new();
    for it in items {
        match &it.expr {
            Expr::Literal(LiteralValue::String(s)) => strs.push(s.inner().to_string()),
            Expr::Literal(LiteralValue::Int(i)) => ints.push(*i.inner()),
            _ => {
                return Err(unsupported(
                    it.id,
                    "list literal elements must be string or int literals",
                ));
            }
        }
    }
    if !strs.is_empty() && !ints.is_empty() {
        return Err(type_err(id, "list literal mixes strings and ints".into()));
    }
    Ok(List {
        len: items.len(),
        strs: ints.is_empty().then(|| Arc::new(StrSet::new(strs))),
        ints: (items.is_empty() || !ints.is_empty()).then(|| Arc::new(IntSet::new(ints))),
    })
}

/// The other side of a comparison with a decimal: a decimal, or a literal read
/// exactly as a decimal (an int, a double as written, or a decimal string).
fn decimal_operand<S: Schema>(id: u64, t: &Typed<S>) -> Res<Dec<S>> {
    let lit = match t {
        Typed::Decimal(d) => return Ok(d.clone()),
        Typed::Int(Int::Const(i)) => Some(Decimal::from_int(*i)),
        Typed::Int(Int::Neg(i)) => match &**i {
            Int::Const(i) => i.checked_neg().map(Decimal::from_int),
            _ => None,
        },
        Typed::Double(Double::Const(d)) => Decimal::from_double(*d),
        Typed::Double(Double::Neg(d)) => match &**d {
            Double::Const(d) => Decimal::from_double(-*d),
            _ => None,
        },
        Typed::Str(Str::Const(s)) => Decimal::parse(s),
        _ => {
            return Err(type_err(
                id,
                format!(
                    "a decimal compares with a decimal field or a number or decimal-string literal, not {}",
                    t.type_name()
                ),
            ));
        }
    };
    lit.map(Dec::Const).ok_or_else(|| {
        type_err(
            id,
            "not an exact decimal (at most 20 integer and 18 fractional digits)".into(),
        )
    })
}

fn cmp_symbol(op: Cmp) -> &'static str {
    match op {
        Cmp::Eq => "==",
        Cmp::Ne => "!=",
        Cmp::Lt => "<",
        Cmp::Le => "<=",
        Cmp::Gt => ">",
        Cmp::Ge => ">=",
    }
}

fn numeric_hint<S: Schema>(a: &Typed<S>, b: &Typed<S>) -> &'static str {
    let num = |t: &Typed<S>| matches!(t, Typed::Int(_) | Typed::Uint(_) | Typed::Double(_));
    if num(a) && num(b) {
        " (convert one side with int(), uint() or double())"
    } else {
        ""
    }
}

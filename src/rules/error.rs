//! Why a rules file was rejected. Every error names the rule (or `-` for the file
//! itself) and the line and column in the TOML file, so an analyst can jump to it;
//! the old rule set stays live whenever one of these is returned.

use std::fmt;

/// One problem in a rules file, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule `{rule}` at {line}:{col}: {kind}")]
pub struct CompileError {
    /// The rule's name, `lists.<name>` for a list, or `-` for the file as a whole.
    pub rule: String,
    /// 1-based line in the rules file.
    pub line: u32,
    /// 1-based column (characters) in the rules file.
    pub col: u32,
    /// What is wrong.
    pub kind: CompileErrorKind,
}

/// What is wrong with a rule, a list or the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompileErrorKind {
    /// The file is bigger than [`super::MAX_FILE_BYTES`]; nothing else was read.
    #[error("rules file is {size} bytes, over the {limit}-byte limit")]
    FileTooLarge {
        /// Size of the refused input.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// More rules than [`super::MAX_RULES`].
    #[error("{count} rules, over the limit of {limit}")]
    TooManyRules {
        /// Rules in the file.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The file is not TOML of the expected shape (unknown key, wrong value type…).
    #[error("invalid rules file: {0}")]
    Toml(String),
    /// The `when` expression does not parse as CEL.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// A field the authorization context does not have.
    #[error("unknown field `{0}`")]
    UnknownField(String),
    /// `lists.<name>` where no such list is declared.
    #[error("unknown list `{0}`")]
    UnknownList(String),
    /// An operator or function applied to values of the wrong types.
    #[error("type error: {0}")]
    Type(String),
    /// A CEL construct cardgate's evaluator does not support.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A `matches` pattern that does not compile.
    #[error("invalid regex: {0}")]
    Regex(String),
    /// `action` is not approve, decline, cap, review or challenge; or `amount` or
    /// `on_verified` is missing/misplaced.
    #[error("{0}")]
    Action(String),
    /// `mode` is not `shadow`.
    #[error("unknown mode `{0}` (only \"shadow\" is allowed)")]
    Mode(String),
    /// Two rules with one name.
    #[error("duplicate rule name (first defined on line {first_line})")]
    DuplicateName {
        /// Where the first one is.
        first_line: u32,
    },
    /// A bad name or list entry.
    #[error("{0}")]
    Invalid(String),
}

/// Every problem found in a rules file (at least one), in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSetError {
    /// The problems.
    pub errors: Vec<CompileError>,
}

impl fmt::Display for RuleSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error(s) in rules file", self.errors.len())?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleSetError {}

impl From<CompileError> for RuleSetError {
    fn from(e: CompileError) -> Self {
        RuleSetError { errors: vec![e] }
    }
}

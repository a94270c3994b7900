//! The rules file as written: TOML deserialized with the byte spans of every value,
//! so that errors found later (in a `when` expression, say) point at a line and
//! column of the file rather than of the expression.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::error::{CompileError, CompileErrorKind};

/// `[lists]` and `[[rule]]`, nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub lists: BTreeMap<String, Spanned<Vec<Spanned<toml::Value>>>>,
    #[serde(default)]
    pub rule: Vec<Spanned<RawRule>>,
}

/// One `[[rule]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub name: Spanned<String>,
    pub when: Spanned<String>,
    pub action: Spanned<String>,
    pub amount: Option<Spanned<i64>>,
    pub mode: Option<Spanned<String>>,
    /// `challenge` only: `approve` (default) or `skip` for a verified retry.
    pub on_verified: Option<Spanned<String>>,
    // Documentation for humans; kept so `rules test` can show it.
    pub description: Option<String>,
}

/// Parses the TOML; the error carries the position toml reports.
pub(super) fn parse(src: &str, lines: &LineIndex) -> Result<RawFile, CompileError> {
    toml::from_str::<RawFile>(src).map_err(|e| {
        let (line, col) = e.span().map(|s| lines.position(s.start)).unwrap_or((1, 1));
        CompileError {
            rule: "-".into(),
            line,
            col,
            kind: CompileErrorKind::Toml(e.message().trim().to_string()),
        }
    })
}

/// Maps byte offsets of the file to 1-based (line, column in characters).
pub(super) struct LineIndex<'s> {
    src: &'s str,
    /// Byte offset where each line starts.
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    pub fn new(src: &'s str) -> Self {
        let mut starts = vec![0];
        starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { src, starts }
    }

    /// Position of byte `offset` (clamped to the file).
    #[expect(
        clippy::cast_possible_truncation,
        reason = "a rules file is at most MAX_FILE_BYTES (4 MiB), so lines and columns fit u32"
    )]
    pub fn position(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.src.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let col = self
            .src
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(offset - start);
        (line as u32, col as u32 + 1)
    }

    /// File position of character `char_offset` inside the string value whose
    /// (quoted) span starts at byte `value_start`. Exact for literal strings and
    /// basic strings without escapes, which is how `when` is written in practice;
    /// with escapes the column may be off by the escapes' extra characters.
    #[expect(
        clippy::bool_to_int_with_if,
        reason = "byte lengths of the opening delimiter and line break, read as a table"
    )]
    pub fn in_string(&self, value_start: usize, char_offset: usize) -> (u32, u32) {
        let rest = self.src.get(value_start..).unwrap_or("");
        let mut content = value_start
            + if rest.starts_with("'''") || rest.starts_with("\"\"\"") {
                // A newline right after the opening delimiter is not part of the value.
                let after = &rest[3..];
                3 + if after.starts_with("\r\n") {
                    2
                } else if after.starts_with('\n') {
                    1
                } else {
                    0
                }
            } else if rest.starts_with('\'') || rest.starts_with('"') {
                1
            } else {
                0
            };
        content = content.min(self.src.len());
        let offset = self.src[content..]
            .char_indices()
            .nth(char_offset)
            .map(|(i, _)| content + i)
            .unwrap_or(self.src.len());
        self.position(offset)
    }
}

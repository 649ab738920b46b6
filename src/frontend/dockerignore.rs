//! Reading a `.dockerignore` file into patterns (moby/patternmatcher's
//! `ignorefile.ReadAll` rules). Pure: the caller reads the file.
//!
//! Rules: a UTF-8 BOM at the start is dropped; a line is a comment only when
//! its first character is `#` (so `  # x` is a pattern); lines are trimmed
//! and blank ones skipped; a leading `!` marks an exception and the space
//! after it is trimmed too; the rest is cleaned like a path and one leading
//! `/` removed. A lone `!` comes back as `!`: the matcher rejects it.

use crate::frontend::patternmatcher::clean_path;

/// One pattern with where it came from (1-based line, and the 1-based
/// column, in characters, of its first non-blank character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreLine {
    pub line: usize,
    pub column: usize,
    pub pattern: String,
}

/// The patterns of an ignore file, in order.
pub fn read_patterns(text: &str) -> Vec<String> {
    read_pattern_lines(text)
        .into_iter()
        .map(|l| l.pattern)
        .collect()
}

/// The patterns of an ignore file with their positions, for error messages.
pub fn read_pattern_lines(text: &str) -> Vec<IgnoreLine> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.starts_with('#') {
            continue;
        }
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        let column = raw.chars().take_while(|c| c.is_whitespace()).count() + 1;
        let (invert, body) = match trimmed.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, trimmed),
        };
        let mut pattern = String::with_capacity(body.len() + 1);
        if invert {
            pattern.push('!');
        }
        if !body.is_empty() {
            let cleaned = clean_path(body);
            match cleaned.strip_prefix('/') {
                Some(rest) if !rest.is_empty() => pattern.push_str(rest),
                _ => pattern.push_str(&cleaned),
            }
        }
        out.push(IgnoreLine {
            line: index + 1,
            column,
            pattern,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_only_at_column_one() {
        assert_eq!(
            read_patterns("# c\n  # not a comment\n"),
            ["# not a comment"]
        );
    }

    #[test]
    fn bom_crlf_and_slashes() {
        let got = read_patterns("\u{feff}a\r\n//b/../c/\r\n!  /d\n/\n");
        assert_eq!(got, ["a", "c", "!d", "/"]);
    }

    #[test]
    fn positions_are_recorded() {
        let got = read_pattern_lines("\n# x\n  !\n");
        assert_eq!(
            got,
            [IgnoreLine {
                line: 3,
                column: 3,
                pattern: "!".into()
            }]
        );
    }

    #[test]
    fn empty_input() {
        assert!(read_patterns("").is_empty());
    }
}

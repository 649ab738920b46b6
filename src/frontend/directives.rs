//! Parser directives: `# syntax=...`, `# escape=...` and `# check=...` lines
//! at the very top of a Dockerfile. Any other line, including a blank line,
//! an ordinary comment or an unknown directive, ends the directive section.

use std::fmt;
use std::sync::OnceLock;

use regex::Regex;

use super::error::Pos;

/// One directive as written. `pos` is where its name starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// The name, lower-cased (`syntax`, `escape`, `check`).
    pub name: String,
    /// The value with surrounding white space removed.
    pub value: String,
    pub pos: Pos,
}

/// The directives a Dockerfile declared.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Directives {
    pub syntax: Option<Directive>,
    pub escape: Option<Directive>,
    pub check: Option<Directive>,
}

/// A directive found by [`detect_syntax`] or [`parse_named_directive`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// The value up to its first space (for `syntax`, the frontend reference).
    pub value: String,
    /// The whole value.
    pub cmdline: String,
    /// 1-based line of the directive.
    pub line: usize,
}

/// A repeated directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectiveError {
    pub message: String,
    pub pos: Pos,
}

impl fmt::Display for DirectiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DirectiveError {}

const KNOWN: [&str; 3] = ["syntax", "escape", "check"];

/// The comment prefixes a directive line may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// `# name=value`, the only form a Dockerfile itself honours.
    Hash,
    /// `// name=value`, accepted only when detecting the syntax directive.
    Slashes,
}

fn directive_regex(prefix: Prefix) -> &'static Regex {
    static HASH: OnceLock<Regex> = OnceLock::new();
    static SLASHES: OnceLock<Regex> = OnceLock::new();
    // `\s` spelled out as Go's RE2 reads it (ASCII only, no \v).
    let build = |p: &str| {
        let pattern = format!(
            r"^{p}[\t\n\f\r ]*([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$"
        );
        Regex::new(&pattern).unwrap_or_else(|_| unreachable!("constant pattern"))
    };
    match prefix {
        Prefix::Hash => HASH.get_or_init(|| build("#")),
        Prefix::Slashes => SLASHES.get_or_init(|| build("//")),
    }
}

/// Reads directive lines one at a time and knows when the section is over.
#[derive(Debug, Clone)]
pub struct DirectiveParser {
    prefix: Prefix,
    done: bool,
    seen: Vec<String>,
}

impl DirectiveParser {
    pub fn new(prefix: Prefix) -> Self {
        DirectiveParser {
            prefix,
            done: false,
            seen: Vec::new(),
        }
    }

    /// True once a non-directive line has been seen.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Looks at one line (newline removed). `line_no` is its 1-based number
    /// and `first_col` the column of the line's first character, for
    /// positions. A repeated directive is an error.
    pub fn parse_line(
        &mut self,
        line: &str,
        line_no: usize,
        first_col: usize,
    ) -> Result<Option<Directive>, DirectiveError> {
        if self.done {
            return Ok(None);
        }
        let found = directive_regex(self.prefix)
            .captures(line)
            .and_then(|c| Some((c.get(1)?, c.get(2)?)));
        let Some((key, value)) = found else {
            self.done = true;
            return Ok(None);
        };
        let name = key.as_str().to_ascii_lowercase();
        if !KNOWN.contains(&name.as_str()) {
            self.done = true;
            return Ok(None);
        }
        let col = |byte: usize| first_col + line.get(..byte).map_or(0, |s| s.chars().count());
        let pos = Pos::new(line_no, col(key.start()));
        if self.seen.contains(&name) {
            return Err(DirectiveError {
                message: format!("only one {name} parser directive can be used"),
                pos,
            });
        }
        self.seen.push(name.clone());
        Ok(Some(Directive {
            name,
            value: value.as_str().to_string(),
            pos,
        }))
    }

    /// Reads the directives at the top of `source` (lines as written, not
    /// trimmed; a CR before the newline is ignored). Stops at the first
    /// non-directive line.
    pub fn parse_all(&mut self, source: &str) -> Result<Vec<Directive>, DirectiveError> {
        self.parse_all_from(source, 0).0
    }

    /// `parse_all` with lines numbered after `skipped` lines; also returns what
    /// was read before an error.
    fn parse_all_from(
        &mut self,
        source: &str,
        skipped: usize,
    ) -> (Result<Vec<Directive>, DirectiveError>, Vec<Directive>) {
        let mut found = Vec::new();
        for (i, line) in source.lines().enumerate() {
            if self.done {
                break;
            }
            match self.parse_line(line, skipped + i + 1, 1) {
                Ok(Some(d)) => found.push(d),
                Ok(None) => {}
                Err(e) => return (Err(e), found),
            }
        }
        (Ok(found.clone()), found)
    }
}

/// Reads all `#` directives at the top of `source`.
pub fn parse_all(source: &str) -> Result<Vec<Directive>, DirectiveError> {
    DirectiveParser::new(Prefix::Hash).parse_all(source)
}

/// Finds the `syntax` directive: `# syntax=`, then `// syntax=`, then a JSON
/// object with a string `"syntax"` member. A BOM and a `#!` first line are
/// skipped.
pub fn detect_syntax(source: &str) -> Option<Detected> {
    find_directive("syntax", source, true)
}

/// Finds a `#` directive by name (e.g. `check`), skipping a BOM and a `#!` line.
pub fn parse_named_directive(name: &str, source: &str) -> Option<Detected> {
    find_directive(name, source, false)
}

fn find_directive(key: &str, source: &str, any_format: bool) -> Option<Detected> {
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let first = source.split('\n').next().unwrap_or("");
    let (body, skipped) = if first.starts_with("#!") {
        (source.get(first.len() + 1..).unwrap_or(""), 1)
    } else {
        (source, 0)
    };
    let mut prefixes = vec![Prefix::Hash];
    if any_format {
        prefixes.push(Prefix::Slashes);
    }
    for prefix in prefixes {
        // A repeated directive is not fatal here: what came before it counts.
        let (_, found) = DirectiveParser::new(prefix).parse_all_from(body, skipped);
        if let Some(d) = found.into_iter().find(|d| d.name == key) {
            let value = d.value.split(' ').next().unwrap_or("").to_string();
            return Some(Detected {
                value,
                cmdline: d.value,
                line: d.pos.line,
            });
        }
    }
    if !any_format {
        return None;
    }
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(body).ok()?;
    let value = object.get(key)?.as_str()?.to_string();
    Some(Detected {
        cmdline: value.clone(),
        value,
        line: skipped + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_ends_at_first_other_line() {
        let all = parse_all("# syntax=a\n#ESCAPE = `\n\n# check=x\n").unwrap();
        let names: Vec<_> = all
            .iter()
            .map(|d| (d.name.as_str(), d.value.as_str()))
            .collect();
        assert_eq!(names, [("syntax", "a"), ("escape", "`")]);
        assert_eq!(all[1].pos, Pos::new(2, 2));
    }

    #[test]
    fn repeated_directive_is_an_error() {
        let e = parse_all("# escape=\\\n#  escape=`\n").unwrap_err();
        assert_eq!(e.message, "only one escape parser directive can be used");
        assert_eq!(e.pos, Pos::new(2, 4));
    }

    #[test]
    fn value_keeps_inner_spaces_and_crlf_is_ignored() {
        let d = detect_syntax("# syntax = a b  \r\nFROM x\r\n").unwrap();
        assert_eq!(
            (d.value.as_str(), d.cmdline.as_str(), d.line),
            ("a", "a b", 1)
        );
    }

    #[test]
    fn json_object_form() {
        assert_eq!(detect_syntax("{\"syntax\": 1}"), None);
        assert_eq!(
            detect_syntax("#!x\n{\"syntax\": \"f\"}").map(|d| d.line),
            Some(2)
        );
    }
}

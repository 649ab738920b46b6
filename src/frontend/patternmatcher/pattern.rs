//! One cleaned pattern and how it is matched.
//!
//! Like moby/patternmatcher, a pattern is matched by the cheapest strategy
//! that gives the same answer as the full translation: plain text compares
//! exactly, `dir/**` is a prefix test, a leading `**` is a suffix test, and
//! anything else becomes an anchored regular expression. The suffix test is
//! what upstream does too, so `**file` also matches `xfile` there and here.

use regex::Regex;

use super::glob;
use super::{clean_path, PatternError};

/// One pattern of a [`super::PatternMatcher`], cleaned and classified.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    exclusion: bool,
    /// A pattern can pass the syntax check and still fail to compile (a
    /// reversed range such as `[l-O]`); upstream reports that on every match
    /// that evaluates the pattern, and so do we.
    strategy: Result<Strategy, PatternError>,
}

#[derive(Debug, Clone)]
enum Strategy {
    Exact,
    Prefix(String),
    Suffix(String),
    Regex(Regex),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Exact,
    Prefix,
    Suffix,
    Regex,
}

impl Pattern {
    /// Trims, cleans and checks one raw pattern; `None` for a blank one.
    pub(super) fn parse(raw: &str) -> Result<Option<Pattern>, PatternError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Ok(None);
        }
        // The whole pattern is cleaned before the `!` is looked at, as upstream
        // does; the ignore-file reader has already cleaned what follows `!`.
        let cleaned = clean_path(trimmed);
        let (exclusion, text) = match cleaned.strip_prefix('!') {
            Some("") => return Err(PatternError::IllegalExclusion),
            Some(rest) => (true, rest.to_string()),
            None => (false, cleaned),
        };
        glob::validate(&text).map_err(|reason| PatternError::Syntax {
            pattern: text.clone(),
            reason: reason.to_string(),
        })?;
        let strategy = compile(&text);
        Ok(Some(Pattern {
            text,
            exclusion,
            strategy,
        }))
    }

    /// The cleaned pattern, without the leading `!` of an exception.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True for an exception (`!pattern`), which re-includes what it matches.
    pub fn exclusion(&self) -> bool {
        self.exclusion
    }

    /// The error every match that evaluates this pattern returns, if any.
    pub fn check(&self) -> Result<(), PatternError> {
        self.strategy.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    /// Does the pattern match `path` itself (no parent directories)?
    pub fn matches(&self, path: &str) -> Result<bool, PatternError> {
        let strategy = self.strategy.as_ref().map_err(Clone::clone)?;
        Ok(match strategy {
            Strategy::Exact => path == self.text,
            Strategy::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Strategy::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Strategy::Regex(re) => re.is_match(path),
        })
    }

    /// Could this pattern match some path strictly inside directory `dir`
    /// (or `dir` itself)? `false` is a promise, `true` may be a guess.
    ///
    /// Walkers use it to leave a directory unopened: an excluded directory
    /// needs reading only when an exception might re-include something in
    /// it, an unselected one only when an include pattern might select
    /// something in it.
    pub fn may_match_inside(&self, dir: &str) -> bool {
        let text = self.text.as_str();
        // Upstream's test for patterns that are literal once a trailing `/**`
        // or `/*` is dropped: they reach inside `dir` only if they name it
        // or a path under it.
        let trimmed = text.strip_suffix("/**").unwrap_or(text);
        let trimmed = trimmed.strip_suffix("/*").unwrap_or(trimmed);
        if !trimmed.contains(['*', '[', ']', '?', '^', '\\']) {
            return trimmed
                .strip_prefix(dir)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        }
        // With `**`, a class (which may match `/`) or an escape (which may
        // escape `/`), segments do not line up with the path: assume yes.
        if text.contains("**") || text.contains(['[', '\\']) {
            return true;
        }
        // Otherwise every wildcard stays inside one segment, so the pattern can
        // only match paths with as many segments as it has, and reaching inside
        // `dir` needs each of `dir`'s segments to match in turn.
        let mut segments = text.split('/');
        dir.split('/').all(|d| {
            segments
                .next()
                .is_some_and(|segment| glob::match_name(segment, d))
        })
    }
}

/// Chooses the strategy and, when a regex is needed, builds it. `**` matches
/// any run of characters including `/`; `**/` may also match nothing.
fn compile(text: &str) -> Result<Strategy, PatternError> {
    let mut re = String::from("^");
    let mut kind = Kind::Exact;
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    let mut first = true;
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.next_if_eq(&'*').is_some() => {
                chars.next_if_eq(&'/');
                if chars.peek().is_none() {
                    if kind == Kind::Exact {
                        kind = Kind::Prefix;
                    } else {
                        re.push_str(".*");
                        kind = Kind::Regex;
                    }
                } else {
                    re.push_str("(.*/)?");
                    kind = Kind::Regex;
                }
                if first {
                    kind = Kind::Suffix;
                }
            }
            '*' => {
                re.push_str("[^/]*");
                kind = Kind::Regex;
            }
            '?' => {
                re.push_str("[^/]");
                kind = Kind::Regex;
            }
            '\\' => match chars.next() {
                Some(escaped) => {
                    push_literal(&mut re, escaped);
                    kind = Kind::Regex;
                }
                // Unreachable after validation; kept literal like upstream.
                None => push_literal(&mut re, '\\'),
            },
            '[' => {
                let class = glob::parse_class(&mut chars).map_err(|reason| syntax(text, reason))?;
                push_class(&mut re, &class).map_err(|reason| syntax(text, &reason))?;
                kind = Kind::Regex;
            }
            ']' => {
                // A lone `]` is literal, but upstream still switches to a regex
                // for it, which matters when the pattern starts with `**`.
                push_literal(&mut re, ']');
                kind = Kind::Regex;
            }
            c => {
                push_literal(&mut re, c);
                literal.push(c);
            }
        }
        first = false;
    }
    match kind {
        Kind::Exact => Ok(Strategy::Exact),
        Kind::Prefix => Ok(Strategy::Prefix(literal)),
        Kind::Suffix => Ok(Strategy::Suffix(
            text.strip_prefix("**").unwrap_or(text).to_string(),
        )),
        Kind::Regex => {
            re.push('$');
            Regex::new(&re)
                .map(Strategy::Regex)
                .map_err(|e| syntax(text, &e.to_string()))
        }
    }
}

fn syntax(text: &str, reason: &str) -> PatternError {
    PatternError::Syntax {
        pattern: text.to_string(),
        reason: reason.to_string(),
    }
}

fn push_literal(re: &mut String, c: char) {
    let mut buf = [0u8; 4];
    re.push_str(&regex::escape(c.encode_utf8(&mut buf)));
}

/// Class members are always literal here. Upstream copies the class text
/// into its regex, so a few odd members (`[*]`, `[\d]`) mean something else
/// there; the glob meaning is the documented one.
fn push_class(re: &mut String, class: &glob::Class) -> Result<(), String> {
    re.push('[');
    if class.negated {
        re.push('^');
    }
    for &(lo, hi) in &class.ranges {
        if lo > hi {
            return Err(format!("invalid character class range {lo}-{hi}"));
        }
        push_literal(re, lo);
        if hi != lo {
            re.push('-');
            push_literal(re, hi);
        }
    }
    re.push(']');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(raw: &str) -> Pattern {
        Pattern::parse(raw).unwrap().unwrap()
    }

    fn kind(raw: &str) -> &'static str {
        match pat(raw).strategy.unwrap() {
            Strategy::Exact => "exact",
            Strategy::Prefix(_) => "prefix",
            Strategy::Suffix(_) => "suffix",
            Strategy::Regex(_) => "regexp",
        }
    }

    #[test]
    fn strategies_match_upstream_classification() {
        for (p, k) in [
            ("*", "regexp"),
            ("**", "suffix"),
            ("**/**", "regexp"),
            ("dir/**", "prefix"),
            ("**/dir", "suffix"),
            ("**/dir2/*", "regexp"),
            ("**file", "suffix"),
            ("abc.def", "exact"),
            ("a(b)c/def", "exact"),
            ("a.|)$(}+{bc", "exact"),
            ("**a]", "regexp"),
        ] {
            assert_eq!(kind(p), k, "{p}");
        }
    }

    #[test]
    fn suffix_quirk_is_kept() {
        assert!(pat("**file").matches("xfile").unwrap());
        assert!(pat("**.txt").matches("a/b.txt").unwrap());
        assert!(!pat("**/foo").matches("xfoo").unwrap());
        assert!(pat("**/foo").matches("foo").unwrap());
    }

    #[test]
    fn doublestar_edges() {
        let p = pat("a/**/b");
        assert!(p.matches("a/b").unwrap());
        assert!(p.matches("a/x/y/b").unwrap());
        assert!(!p.matches("a/xb").unwrap());
        let p = pat("a**");
        assert!(p.matches("a").unwrap() && p.matches("abc/d").unwrap());
        let p = pat("x/**/");
        assert_eq!(p.text(), "x/**");
        assert!(p.matches("x/y").unwrap());
        assert!(!p.matches("x").unwrap());
        let p = pat("**/x/**");
        assert!(p.matches("x/y").unwrap() && p.matches("a/x/y").unwrap());
        assert!(!p.matches("x").unwrap());
    }

    #[test]
    fn class_members_are_literal() {
        let p = pat("[*.]x");
        assert!(p.matches("*x").unwrap() && p.matches(".x").unwrap());
        assert!(!p.matches("ax").unwrap());
        assert!(pat("a[^b]c").matches("a/c").unwrap());
    }

    #[test]
    fn reversed_range_fails_on_every_match() {
        let p = pat("[Local-Only]/");
        assert!(p.check().is_err());
        for _ in 0..2 {
            let err = p.matches("x").unwrap_err();
            assert!(err.to_string().contains("[Local-Only]"), "{err}");
        }
    }

    #[test]
    fn may_match_inside_is_conservative_and_useful() {
        // Literal patterns: upstream's prefix test.
        assert!(pat("foo/bar/baz").may_match_inside("foo/bar"));
        assert!(pat("foo/bar").may_match_inside("foo/bar"));
        assert!(!pat("foo/barn").may_match_inside("foo/bar"));
        assert!(!pat("foo").may_match_inside("foo/bar"));
        assert!(pat("foo/*").may_match_inside("foo"));
        // Wildcards that stay within a segment.
        assert!(!pat("*.md").may_match_inside("node_modules"));
        assert!(pat("*/x").may_match_inside("node_modules"));
        assert!(!pat("src/*.go").may_match_inside("vendor"));
        assert!(pat("src/*.go").may_match_inside("src"));
        assert!(!pat("a?/b").may_match_inside("abc"));
        // Anything that can span segments is assumed to reach inside.
        assert!(pat("**/*.md").may_match_inside("node_modules"));
        assert!(pat("[^x]y").may_match_inside("z"));
        assert!(pat("a\\*").may_match_inside("q"));
    }
}

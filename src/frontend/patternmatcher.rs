//! The `.dockerignore` pattern matcher, with moby/patternmatcher semantics
//! (used by BuildKit for `.dockerignore`, `COPY --exclude` and context
//! filtering). Pure: paths are slash-separated strings relative to the
//! context root.
//!
//! Deciding: patterns are evaluated in order; a plain pattern that matches the
//! path or one of its parent directories marks the path as matched, and an
//! exception (`!pattern`) is only considered while the path is matched and
//! clears the mark. The last relevant pattern wins.
//!
//! Pattern language: Go `filepath.Match` globs (`*` and `?` stop at `/`,
//! `[...]`/`[^...]` classes, `\` escapes) plus `**`, which matches any number
//! of path segments including none (`**/foo` also matches `foo`).

pub(crate) mod glob;
mod pattern;

pub use pattern::Pattern;

/// Why a pattern list was rejected or a pattern could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("illegal exclusion pattern: \"!\"")]
    IllegalExclusion,
    #[error("syntax error in pattern {pattern:?}: {reason}")]
    Syntax { pattern: String, reason: String },
    #[error("parent match info holds {got} results but the matcher has {expected} patterns")]
    MatchInfoMismatch { expected: usize, got: usize },
}

/// An ordered list of patterns, checked when built.
#[derive(Debug, Clone, Default)]
pub struct PatternMatcher {
    patterns: Vec<Pattern>,
    exclusions: bool,
}

/// What each pattern decided for a directory, handed to its children by
/// [`PatternMatcher::matches_using_parent_results`] so a walker does not
/// re-test every ancestor. `MatchInfo::default()` means "no parent info".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

impl PatternMatcher {
    /// Trims each pattern, drops blank ones, cleans them like paths, and
    /// checks their glob syntax. A lone `!` is an error.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, PatternError> {
        let mut parsed = Vec::with_capacity(patterns.len());
        for raw in patterns {
            if let Some(p) = Pattern::parse(raw.as_ref())? {
                parsed.push(p);
            }
        }
        let exclusions = parsed.iter().any(Pattern::exclusion);
        Ok(PatternMatcher {
            patterns: parsed,
            exclusions,
        })
    }

    /// Is `path` (used as given, not cleaned) or one of its parent
    /// directories matched, after exceptions?
    pub fn matches_or_parent_matches(&self, path: &str) -> Result<bool, PatternError> {
        let mut matched = false;
        let mut parents = None;
        for p in &self.patterns {
            if p.exclusion() != matched {
                continue;
            }
            let hit = p.matches(path)? || any_parent_matches(p, path, &mut parents);
            if hit {
                matched = !p.exclusion();
            }
        }
        Ok(matched)
    }

    /// The same decision during a walk: `parent` is what this call returned
    /// for the parent directory, so only `path` itself is tested against
    /// patterns the parent did not match. With `MatchInfo::default()` the
    /// parents are tested as in [`Self::matches_or_parent_matches`].
    pub fn matches_using_parent_results(
        &self,
        path: &str,
        parent: &MatchInfo,
    ) -> Result<(bool, MatchInfo), PatternError> {
        let known = &parent.parent_matched;
        if !known.is_empty() && known.len() != self.patterns.len() {
            return Err(PatternError::MatchInfoMismatch {
                expected: self.patterns.len(),
                got: known.len(),
            });
        }
        let mut matched = false;
        let mut results = vec![false; self.patterns.len()];
        let mut parents = None;
        for (i, p) in self.patterns.iter().enumerate() {
            let mut hit = known.get(i).copied().unwrap_or(false);
            if !hit {
                // A pattern skipped here is recorded as unmatched, so a child
                // tests it again against its own path only (upstream does too).
                if p.exclusion() != matched {
                    continue;
                }
                hit = p.matches(path)?
                    || (known.is_empty() && any_parent_matches(p, path, &mut parents));
            }
            results[i] = hit;
            if hit {
                matched = !p.exclusion();
            }
        }
        Ok((
            matched,
            MatchInfo {
                parent_matched: results,
            },
        ))
    }

    /// True when any pattern is an exception (`!pattern`).
    pub fn exclusions(&self) -> bool {
        self.exclusions
    }

    /// The patterns, cleaned, in order; blank ones were dropped.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }
}

/// Tests the parent directories of `path` (computed once per call, lazily).
/// Errors cannot occur here: the pattern already matched `path` without one.
fn any_parent_matches(p: &Pattern, path: &str, parents: &mut Option<Vec<String>>) -> bool {
    parents
        .get_or_insert_with(|| parent_dirs(path))
        .iter()
        .any(|dir| p.matches(dir).unwrap_or(false))
}

/// `a`, `a/b` for `a/b/c`, from Go's `filepath.Dir` (so `file/` has the
/// parent `file`, and `/` yields `""` and `/`).
fn parent_dirs(path: &str) -> Vec<String> {
    let Some(slash) = path.rfind('/') else {
        return Vec::new();
    };
    let dir = clean_path(&path[..=slash]);
    if dir == "." {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut acc = String::with_capacity(dir.len());
    for (i, segment) in dir.split('/').enumerate() {
        if i > 0 {
            acc.push('/');
        }
        acc.push_str(segment);
        out.push(acc.clone());
    }
    out
}

/// Go's `filepath.Clean` with `/` separators: the shortest lexically
/// equivalent path (`.` for empty, `..` kept only where nothing precedes it,
/// and dropped at a leading `/`).
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let rooted = p.starts_with('/');
    let mut kept: Vec<&str> = Vec::new();
    for segment in p.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if kept.last().is_some_and(|s| *s != "..") {
                    kept.pop();
                } else if !rooted {
                    kept.push("..");
                }
            }
            s => kept.push(s),
        }
    }
    let joined = kept.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(patterns: &[&str]) -> PatternMatcher {
        PatternMatcher::new(patterns).unwrap()
    }

    #[test]
    fn clean_path_like_go() {
        for (input, want) in [
            ("", "."),
            (".", "."),
            ("/", "/"),
            ("a/", "a"),
            ("a//b/./c/..", "a/b"),
            ("../..", "../.."),
            ("/../a", "/a"),
            ("a/../..", ".."),
            ("**/", "**"),
            ("!docs/", "!docs"),
        ] {
            assert_eq!(clean_path(input), want, "{input:?}");
        }
    }

    #[test]
    fn parent_dirs_follow_go_dir() {
        assert_eq!(parent_dirs("a/b/c"), ["a", "a/b"]);
        assert_eq!(parent_dirs("file/"), ["file"]);
        assert_eq!(parent_dirs("/"), ["", "/"]);
        assert!(parent_dirs("file").is_empty());
    }

    #[test]
    fn exception_reincludes_below_an_excluded_dir() {
        let pm = m(&["foo", "!foo/bar", "foo/bar/baz", "!foo/bar/baz/x"]);
        assert!(pm.exclusions());
        assert!(pm.matches_or_parent_matches("foo").unwrap());
        assert!(pm.matches_or_parent_matches("foo/other").unwrap());
        assert!(!pm.matches_or_parent_matches("foo/bar").unwrap());
        assert!(!pm.matches_or_parent_matches("foo/bar/q").unwrap());
        assert!(pm.matches_or_parent_matches("foo/bar/baz/y").unwrap());
        assert!(!pm.matches_or_parent_matches("foo/bar/baz/x").unwrap());
    }

    #[test]
    fn exception_before_any_match_is_ignored() {
        let pm = m(&["!a", "a"]);
        assert!(pm.matches_or_parent_matches("a/b").unwrap());
    }

    #[test]
    fn incremental_agrees_with_one_shot() {
        let pm = m(&["**", "!util/docker/web", "util/docker/web/foo"]);
        let mut info = MatchInfo::default();
        for p in [
            "util",
            "util/docker",
            "util/docker/web",
            "util/docker/web/foo",
        ] {
            let (got, next) = pm.matches_using_parent_results(p, &info).unwrap();
            assert_eq!(got, pm.matches_or_parent_matches(p).unwrap(), "{p}");
            info = next;
        }
    }

    #[test]
    fn foreign_match_info_is_rejected() {
        let one = m(&["a"]);
        let two = m(&["a", "b"]);
        let (_, info) = two
            .matches_using_parent_results("a", &MatchInfo::default())
            .unwrap();
        let err = one.matches_using_parent_results("a/b", &info).unwrap_err();
        assert_eq!(
            err,
            PatternError::MatchInfoMismatch {
                expected: 1,
                got: 2
            }
        );
    }

    #[test]
    fn errors_name_the_pattern() {
        assert_eq!(
            PatternMatcher::new(&["!"]).unwrap_err().to_string(),
            "illegal exclusion pattern: \"!\""
        );
        let err = PatternMatcher::new(&["a/["]).unwrap_err().to_string();
        assert!(
            err.starts_with("syntax error in pattern \"a/[\": "),
            "{err}"
        );
    }

    #[test]
    fn blank_patterns_are_dropped_and_text_is_cleaned() {
        let pm = m(&["", "  ", " docs/ ", "!./x"]);
        let texts: Vec<_> = pm.patterns().iter().map(Pattern::text).collect();
        assert_eq!(texts, ["docs", "./x"]);
    }
}

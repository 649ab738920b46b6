//! One filter of the stack: what it selects (include), what it drops
//! (exclude), and how a walk decides about each entry it meets.

use crate::frontend::patternmatcher::{MatchInfo, PatternMatcher};

use super::walk::FilterOpts;
use super::ContextError;

/// What a filter does with one walked entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Listed.
    Show,
    /// Not listed, but a directory is still read because something inside
    /// it may be listed (and then it is listed before that entry).
    Hide,
    /// Not listed, and a directory is not even opened: nothing inside it can
    /// be listed.
    Prune,
}

pub(super) struct Decision {
    pub verdict: Verdict,
    pub include: MatchInfo,
    pub exclude: MatchInfo,
}

#[derive(Debug, Clone)]
pub(super) struct Layer {
    include: Option<PatternMatcher>,
    exclude: Option<PatternMatcher>,
}

impl Layer {
    /// `followed` holds the paths the follow list resolved to (`None` when
    /// there is no follow list, or when it reached the whole root); they
    /// select like include patterns.
    pub fn new(opts: &FilterOpts, followed: Option<Vec<String>>) -> Result<Self, ContextError> {
        let mut include_patterns = opts.include.clone();
        include_patterns.extend(followed.unwrap_or_default());
        let include = if include_patterns.is_empty() {
            None
        } else {
            Some(
                PatternMatcher::new(&include_patterns).map_err(|err| ContextError::Filter {
                    which: "include",
                    patterns: opts.include.clone(),
                    err,
                })?,
            )
        };
        let exclude = if opts.exclude.is_empty() {
            None
        } else {
            Some(
                PatternMatcher::new(&opts.exclude).map_err(|err| ContextError::Filter {
                    which: "exclude",
                    patterns: opts.exclude.clone(),
                    err,
                })?,
            )
        };
        Ok(Layer { include, exclude })
    }

    /// Does this filter let `path` through? (The one-shot form, for opening
    /// single paths.)
    pub fn allows(&self, path: &str) -> Result<bool, ContextError> {
        if let Some(m) = &self.include {
            let selected =
                m.matches_or_parent_matches(path)
                    .map_err(|err| ContextError::Match {
                        which: "include",
                        err,
                    })?;
            if !selected {
                return Ok(false);
            }
        }
        if let Some(m) = &self.exclude {
            let excluded =
                m.matches_or_parent_matches(path)
                    .map_err(|err| ContextError::Match {
                        which: "exclude",
                        err,
                    })?;
            if excluded {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Decides about a walked entry from its parent directory's results.
    pub fn decide(
        &self,
        path: &str,
        is_dir: bool,
        parent_include: &MatchInfo,
        parent_exclude: &MatchInfo,
    ) -> Result<Decision, ContextError> {
        let mut decision = Decision {
            verdict: Verdict::Show,
            include: MatchInfo::default(),
            exclude: MatchInfo::default(),
        };
        if let Some(m) = &self.include {
            let (selected, info) = m
                .matches_using_parent_results(path, parent_include)
                .map_err(|err| ContextError::Match {
                    which: "include",
                    err,
                })?;
            decision.include = info;
            if !selected {
                let reachable = m
                    .patterns()
                    .iter()
                    .any(|p| !p.exclusion() && p.may_match_inside(path));
                if is_dir && !reachable {
                    decision.verdict = Verdict::Prune;
                    return Ok(decision);
                }
                decision.verdict = Verdict::Hide;
            }
        }
        if let Some(m) = &self.exclude {
            let (excluded, info) = m
                .matches_using_parent_results(path, parent_exclude)
                .map_err(|err| ContextError::Match {
                    which: "exclude",
                    err,
                })?;
            decision.exclude = info;
            if excluded {
                // Only an exception can bring back something inside an
                // excluded directory.
                let reachable = m
                    .patterns()
                    .iter()
                    .any(|p| p.exclusion() && p.may_match_inside(path));
                if is_dir && !reachable {
                    decision.verdict = Verdict::Prune;
                    return Ok(decision);
                }
                decision.verdict = Verdict::Hide;
            }
        }
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(include: &[&str], exclude: &[&str]) -> Layer {
        let opts = FilterOpts {
            include: include.iter().map(|p| p.to_string()).collect(),
            exclude: exclude.iter().map(|p| p.to_string()).collect(),
            follow_paths: Vec::new(),
        };
        Layer::new(&opts, None).unwrap()
    }

    fn verdict(l: &Layer, path: &str, is_dir: bool) -> Verdict {
        let none = MatchInfo::default();
        l.decide(path, is_dir, &none, &none).unwrap().verdict
    }

    #[test]
    fn excluded_dirs_are_pruned_unless_an_exception_reaches_inside() {
        let l = layer(&[], &["node_modules", "*.log"]);
        assert_eq!(verdict(&l, "node_modules", true), Verdict::Prune);
        assert_eq!(verdict(&l, "x.log", false), Verdict::Hide);
        assert_eq!(verdict(&l, "src", true), Verdict::Show);
        let l = layer(&[], &["node_modules", "!node_modules/keep", "!*.md"]);
        assert_eq!(verdict(&l, "node_modules", true), Verdict::Hide);
        let l = layer(&[], &["node_modules", "!*.md"]);
        assert_eq!(verdict(&l, "node_modules", true), Verdict::Prune);
        let l = layer(&[], &["node_modules", "!**/*.md"]);
        assert_eq!(verdict(&l, "node_modules", true), Verdict::Hide);
    }

    #[test]
    fn unselected_dirs_are_pruned_unless_an_include_reaches_inside() {
        let l = layer(&["*.txt"], &[]);
        assert_eq!(verdict(&l, "docs", true), Verdict::Prune);
        assert_eq!(verdict(&l, "a.txt", false), Verdict::Show);
        let l = layer(&["docs/*.md", "!docs/x.md"], &[]);
        assert_eq!(verdict(&l, "docs", true), Verdict::Hide);
        assert_eq!(verdict(&l, "src", true), Verdict::Prune);
        assert_eq!(verdict(&l, "docs/x.md", false), Verdict::Hide);
    }

    #[test]
    fn allows_is_the_one_shot_form() {
        let l = layer(&["bar*"], &["bar/secret"]);
        assert!(l.allows("bar/foo").unwrap());
        assert!(!l.allows("baz").unwrap());
        assert!(!l.allows("bar/secret/x").unwrap());
    }
}

//! Resolving a filter's follow paths: each path is kept, and every symlink
//! met on the way (a glob in a segment picks the symlinks it matches) adds
//! its target, resolved inside the root, as another path to follow.
//! The result is a list of include patterns (fsutil's `FollowLinks`).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::frontend::patternmatcher::{clean_path, glob};

use super::filter::Layer;
use super::walk::{is_missing, join, read_names};
use super::ContextError;

/// More nested link hops than any kernel allows (Linux stops at 40); only a
/// loop the resolved set does not catch could get here.
const MAX_HOPS: usize = 64;

/// The paths to include, sorted, without those already under another one;
/// `None` when the root itself was reached (no restriction then).
pub(super) fn resolve(
    root: &Path,
    below: &[Layer],
    paths: &[String],
) -> Result<Option<Vec<String>>, ContextError> {
    let mut resolver = Resolver {
        root,
        below,
        resolved: BTreeSet::new(),
    };
    for p in paths {
        resolver.add(p, 0)?;
    }
    if resolver.resolved.contains("") {
        return Ok(None);
    }
    let mut out: Vec<String> = Vec::with_capacity(resolver.resolved.len());
    for path in resolver.resolved {
        let covered = out.last().is_some_and(|last| {
            path.strip_prefix(last.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        });
        if !covered {
            out.push(path);
        }
    }
    Ok(Some(out))
}

struct Resolver<'a> {
    root: &'a Path,
    below: &'a [Layer],
    /// Relative paths (possibly with globs); `""` is the root.
    resolved: BTreeSet<String>,
}

impl Resolver<'_> {
    fn add(&mut self, path: &str, hops: usize) -> Result<(), ContextError> {
        if hops > MAX_HOPS {
            return Err(ContextError::FollowLoop {
                path: path.to_string(),
            });
        }
        // Absolute paths and `..` stay inside the root.
        let rooted = clean_path(&format!("/{path}"));
        let mut rest = rooted.trim_start_matches('/');
        if rest.is_empty() {
            self.resolved.insert(String::new());
            return Ok(());
        }
        let mut current = String::new();
        loop {
            let (segment, remaining) = rest.split_once('/').unwrap_or((rest, ""));
            current = join(&current, segment);
            rest = remaining;
            let targets = self.link_targets(&current, true)?;
            if (rest.is_empty() || !targets.is_empty()) && self.resolved.contains(&current) {
                return Ok(());
            }
            if !targets.is_empty() {
                self.resolved.insert(current);
                for target in targets {
                    self.add(&join(&target, rest), hops + 1)?;
                }
                return Ok(());
            }
            if rest.is_empty() {
                self.resolved.insert(current);
                return Ok(());
            }
        }
    }

    /// The targets (rooted, e.g. `/baz/one`) of the symlink at `path`, or of
    /// every symlink its last segment matches when that segment is a glob.
    /// Entries the filters below hide are not seen.
    fn link_targets(&self, path: &str, allow_glob: bool) -> Result<Vec<String>, ContextError> {
        let (dir, base) = path.rsplit_once('/').unwrap_or(("", path));
        if !self.real_dirs(dir) {
            return Ok(Vec::new());
        }
        if allow_glob && glob::has_wildcards(base) {
            let abs_dir = self.root.join(dir);
            let names = match read_names(&abs_dir) {
                Ok(names) => names,
                Err(err) if is_missing(&err) => return Ok(Vec::new()),
                Err(err) => {
                    return Err(ContextError::Io {
                        op: "readdir",
                        path: abs_dir,
                        err,
                    })
                }
            };
            let mut out = Vec::new();
            for name in names.iter().filter(|n| glob::match_name(base, n)) {
                out.extend(self.link_targets(&join(dir, name), false)?);
            }
            return Ok(out);
        }
        if !self.visible(path)? {
            return Ok(Vec::new());
        }
        let abs = self.root.join(path);
        let io_err = |op, err| ContextError::Io {
            op,
            path: abs.clone(),
            err,
        };
        match fs::symlink_metadata(&abs) {
            Ok(m) if m.is_symlink() => {}
            Ok(_) => return Ok(Vec::new()),
            Err(err) if is_missing(&err) => return Ok(Vec::new()),
            Err(err) => return Err(io_err("lstat", err)),
        }
        let target = fs::read_link(&abs).map_err(|err| io_err("readlink", err))?;
        let target = target
            .into_os_string()
            .into_string()
            .map_err(|_| ContextError::NonUtf8 { path: abs.clone() })?;
        let resolved = if target.starts_with('/') {
            clean_path(&target)
        } else {
            clean_path(&format!("/{dir}/{target}"))
        };
        Ok(vec![resolved])
    }

    /// Is every segment of `dir` a real directory (not a symlink)? Checked so
    /// that looking inside never leaves the root.
    fn real_dirs(&self, dir: &str) -> bool {
        if dir.is_empty() {
            return true;
        }
        let mut abs = self.root.to_path_buf();
        dir.split('/').all(|segment| {
            abs.push(segment);
            fs::symlink_metadata(&abs).is_ok_and(|m| m.is_dir())
        })
    }

    fn visible(&self, path: &str) -> Result<bool, ContextError> {
        for layer in self.below {
            if !layer.allows(path)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

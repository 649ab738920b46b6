//! Walking a build context through a stack of filters (tonistiigi/fsutil
//! semantics, which BuildKit uses to send the context and select COPY
//! sources).
//!
//! Contract of [`FilteredFs::walk`]:
//! * depth first, names sorted bytewise, each directory before its contents;
//!   paths are relative to the root, slash-separated; the root itself is
//!   never listed, a start path other than the root is;
//! * symlinks are listed, never followed;
//! * the parents of a listed entry are always listed (before it), even when
//!   the filters do not select them;
//! * a directory that no filter can list anything inside (excluded with no
//!   `!` exception that could re-include something in it, or outside every
//!   include pattern) is not opened; one read only because something inside
//!   might be listed may be unreadable without failing the walk;
//! * the filters are a stack: the first filters the raw tree, each later one
//!   filters what the previous one lets through.

use std::fs::{self, File, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use crate::frontend::patternmatcher::{clean_path, MatchInfo};

use super::filter::{Layer, Verdict};
use super::{follow, ContextError};

/// One filter of the stack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterOpts {
    /// Keep only what these patterns match (and everything below a match).
    /// `!` exceptions are allowed. Empty: keep everything.
    pub include: Vec<String>,
    /// Drop what these patterns match, with `.dockerignore` semantics.
    pub exclude: Vec<String>,
    /// Keep only these paths (globs allowed in the last segment) plus what
    /// the symlinks met on them lead to, resolved inside the root when the
    /// filter is built. Empty: no restriction.
    pub follow_paths: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// Anything that is neither a directory nor a symlink (regular files, and
    /// also fifos, sockets and devices: see `metadata.file_type()`).
    File,
    Dir,
    /// A symbolic link and its target, as stored.
    Symlink(String),
}

#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative to the context root, slash-separated.
    pub path: String,
    pub kind: EntryKind,
    /// From `lstat`.
    pub metadata: Metadata,
}

impl Entry {
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }
}

/// What the walk callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkAction {
    Continue,
    /// Do not enter this directory (no effect on other entries).
    SkipDir,
    /// End the walk now, successfully.
    Stop,
}

/// A context directory seen through a stack of filters.
#[derive(Debug, Clone)]
pub struct FilteredFs {
    root: PathBuf,
    layers: Vec<Layer>,
}

impl FilteredFs {
    /// Builds the filters, resolving each filter's follow paths through the
    /// view below it. Fails on an invalid pattern or a root that is not a
    /// directory.
    pub fn new(root: impl AsRef<Path>, filters: Vec<FilterOpts>) -> Result<Self, ContextError> {
        let root = root.as_ref().to_path_buf();
        let meta = fs::metadata(&root).map_err(|err| ContextError::Io {
            op: "stat",
            path: root.clone(),
            err,
        })?;
        if !meta.is_dir() {
            return Err(ContextError::Io {
                op: "stat",
                path: root,
                err: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        let mut layers = Vec::with_capacity(filters.len());
        for opts in &filters {
            let followed = if opts.follow_paths.is_empty() {
                None
            } else {
                follow::resolve(&root, &layers, &opts.follow_paths)?
            };
            layers.push(Layer::new(opts, followed)?);
        }
        Ok(FilteredFs { root, layers })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Walks the subtree at `start` (`""` or `/` for the whole context) and
    /// calls `cb` for every entry the filters let through, in the order the
    /// module documentation gives. A missing `start` lists nothing.
    pub fn walk<F>(&self, start: &str, cb: F) -> Result<(), ContextError>
    where
        F: FnMut(&Entry) -> Result<WalkAction, ContextError>,
    {
        let start = normalize(start)?;
        let mut run = Run {
            root: &self.root,
            levels: self.layers.iter().map(|l| (l, Vec::new())).collect(),
            cb,
        };
        if start.is_empty() {
            run.walk_dir("")?;
            return Ok(());
        }
        self.check_ancestors(&start)?;
        let Some(entry) = lstat_entry(&self.root, &start)? else {
            return Ok(());
        };
        if run.deliver(0, &entry)? == Flow::Continue && entry.is_dir() {
            run.walk_dir(&start)?;
        }
        Ok(())
    }

    /// Opens a file for reading. A path the filters leave out is not found
    /// ([`ContextError::is_not_found`]); a path through or to a symlink is
    /// refused, so nothing outside the root can be read.
    pub fn open(&self, path: &str) -> Result<File, ContextError> {
        let rel = normalize(path)?;
        if !rel.is_empty() {
            for layer in &self.layers {
                if !layer.allows(&rel)? {
                    return Err(ContextError::Filtered { path: rel });
                }
            }
            self.check_ancestors(&rel)?;
        }
        let abs = self.root.join(&rel);
        let meta = fs::symlink_metadata(&abs).map_err(|err| ContextError::Io {
            op: "open",
            path: abs.clone(),
            err,
        })?;
        if meta.is_symlink() {
            return Err(ContextError::InvalidPath {
                path: rel,
                reason: "is a symbolic link",
            });
        }
        File::open(&abs).map_err(|err| ContextError::Io {
            op: "open",
            path: abs,
            err,
        })
    }

    /// Refuses a relative path whose directories include a symlink. A missing
    /// component is left for the caller's own lookup to report.
    fn check_ancestors(&self, rel: &str) -> Result<(), ContextError> {
        let mut prefix = self.root.clone();
        let mut parts = rel.split('/').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                break;
            }
            prefix.push(part);
            match fs::symlink_metadata(&prefix) {
                Ok(m) if m.is_symlink() => {
                    return Err(ContextError::InvalidPath {
                        path: rel.to_string(),
                        reason: "passes through a symbolic link",
                    })
                }
                Ok(_) => {}
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }
}

/// `""` for the root; anything that climbs out of the root is refused.
fn normalize(path: &str) -> Result<String, ContextError> {
    let cleaned = clean_path(path);
    let rel = cleaned.trim_start_matches('/');
    if rel == "." || rel.is_empty() {
        return Ok(String::new());
    }
    if rel == ".." || rel.starts_with("../") {
        return Err(ContextError::InvalidPath {
            path: path.to_string(),
            reason: "outside the context",
        });
    }
    Ok(rel.to_string())
}

pub(super) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The entry at `rel`, or `None` when it does not exist (it may vanish
/// between listing and `lstat`).
fn lstat_entry(root: &Path, rel: &str) -> Result<Option<Entry>, ContextError> {
    let abs = root.join(rel);
    let walk_err = |op, err| ContextError::Walk {
        op,
        path: rel.to_string(),
        err,
    };
    let metadata = match fs::symlink_metadata(&abs) {
        Ok(m) => m,
        Err(err) if is_missing(&err) => return Ok(None),
        Err(err) => return Err(walk_err("lstat", err)),
    };
    let kind = if metadata.is_symlink() {
        let target = fs::read_link(&abs).map_err(|err| walk_err("readlink", err))?;
        EntryKind::Symlink(
            target
                .into_os_string()
                .into_string()
                .map_err(|_| ContextError::NonUtf8 { path: abs.clone() })?,
        )
    } else if metadata.is_dir() {
        EntryKind::Dir
    } else {
        EntryKind::File
    };
    Ok(Some(Entry {
        path: rel.to_string(),
        kind,
        metadata,
    }))
}

/// The names in a directory, sorted bytewise. A name that is not UTF-8 is a
/// read error: paths are strings everywhere downstream.
pub(super) fn read_names(abs: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for dirent in fs::read_dir(abs)? {
        let name = dirent?.file_name();
        names.push(name.into_string().map_err(|raw| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("file name {raw:?} is not valid UTF-8"),
            )
        })?);
    }
    names.sort_unstable();
    Ok(names)
}

pub(super) fn is_missing(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// How the walk continues after an entry was handed on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Flow {
    Continue,
    /// Do not enter this directory.
    SkipDir,
    /// Leave the rest of this ancestor directory unvisited.
    SkipRestOf(String),
    Stop,
}

/// A directory a filter has seen, kept while the walk is inside it.
struct DirRecord {
    entry: Entry,
    with_slash: String,
    include: MatchInfo,
    exclude: MatchInfo,
    /// Handed on to the next level (directly, or late as a parent).
    emitted: bool,
    /// The filter did not select it; it is read only for what is inside.
    hidden: bool,
}

/// One walk: the raw tree is read here and every entry is passed up the
/// filter levels; the callback sits above the last one.
struct Run<'a, F> {
    root: &'a Path,
    levels: Vec<(&'a Layer, Vec<DirRecord>)>,
    cb: F,
}

impl<F> Run<'_, F>
where
    F: FnMut(&Entry) -> Result<WalkAction, ContextError>,
{
    fn walk_dir(&mut self, dir: &str) -> Result<Flow, ContextError> {
        let names = match read_names(&self.root.join(dir)) {
            Ok(names) => names,
            Err(err) => {
                self.read_failed(dir, err)?;
                return Ok(Flow::Continue);
            }
        };
        for name in names {
            let path = join(dir, &name);
            let Some(entry) = lstat_entry(self.root, &path)? else {
                continue;
            };
            let mut flow = self.deliver(0, &entry)?;
            if flow == Flow::Continue && entry.is_dir() {
                flow = self.walk_dir(&path)?;
            }
            match flow {
                Flow::Continue | Flow::SkipDir => {}
                Flow::SkipRestOf(p) if p == dir => return Ok(Flow::Continue),
                Flow::SkipRestOf(p) if p == path => {}
                other => return Ok(other),
            }
        }
        Ok(Flow::Continue)
    }

    /// A directory could not be listed. Only the first filter may forgive it,
    /// and only for a permission error on a directory it was reading just in
    /// case (fsutil does the same).
    fn read_failed(&mut self, dir: &str, err: io::Error) -> Result<(), ContextError> {
        if !dir.is_empty() && is_missing(&err) {
            return Ok(());
        }
        if err.kind() == io::ErrorKind::PermissionDenied {
            let forgiven = self
                .levels
                .first()
                .and_then(|(_, stack)| stack.last())
                .is_some_and(|r| r.entry.path == dir && r.hidden && !r.emitted);
            if forgiven {
                return Ok(());
            }
        }
        Err(ContextError::Walk {
            op: "open",
            path: if dir.is_empty() { "." } else { dir }.to_string(),
            err,
        })
    }

    /// Hands `entry` to filter level `level` (or to the callback above the
    /// last level), emitting pending parents first when it is listed.
    fn deliver(&mut self, level: usize, entry: &Entry) -> Result<Flow, ContextError> {
        let Some((layer, stack)) = self.levels.get_mut(level) else {
            return Ok(match (self.cb)(entry)? {
                WalkAction::Continue => Flow::Continue,
                WalkAction::SkipDir => Flow::SkipDir,
                WalkAction::Stop => Flow::Stop,
            });
        };
        let layer = *layer;
        while stack
            .last()
            .is_some_and(|top| !entry.path.starts_with(&top.with_slash))
        {
            stack.pop();
        }
        let none = MatchInfo::default();
        let (parent_include, parent_exclude) = match stack.last() {
            Some(top) => (&top.include, &top.exclude),
            None => (&none, &none),
        };
        let decision = layer.decide(&entry.path, entry.is_dir(), parent_include, parent_exclude)?;
        let hidden = match decision.verdict {
            Verdict::Prune => return Ok(Flow::SkipDir),
            Verdict::Hide => true,
            Verdict::Show => false,
        };
        let record = entry.is_dir().then(|| DirRecord {
            entry: entry.clone(),
            with_slash: format!("{}/", entry.path),
            include: decision.include,
            exclude: decision.exclude,
            emitted: !hidden,
            hidden,
        });
        if hidden {
            stack.extend(record);
            return Ok(Flow::Continue);
        }
        if let Some(flow) = self.emit_parents(level)? {
            return Ok(flow);
        }
        if let Some((_, stack)) = self.levels.get_mut(level) {
            stack.extend(record);
        }
        self.deliver(level + 1, entry)
    }

    /// Lists the not yet listed directories above the current entry, outer
    /// first. If the callback skips one, the rest of it is skipped too.
    fn emit_parents(&mut self, level: usize) -> Result<Option<Flow>, ContextError> {
        let mut i = 0;
        loop {
            let parent = match self.levels.get_mut(level).and_then(|(_, s)| s.get_mut(i)) {
                None => return Ok(None),
                Some(record) if record.emitted => None,
                Some(record) => {
                    record.emitted = true;
                    Some(record.entry.clone())
                }
            };
            i += 1;
            let Some(parent) = parent else {
                continue;
            };
            match self.deliver(level + 1, &parent)? {
                Flow::Continue => {}
                Flow::SkipDir => return Ok(Some(Flow::SkipRestOf(parent.path))),
                other => return Ok(Some(other)),
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! The build context after `.dockerignore`, as a COPY source tree.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::tree::{Node, NodeKind, Tree};
use super::CopyError;
use crate::context::{Entry, EntryKind, FilterOpts, FilteredFs, WalkAction};

pub(super) struct ContextTree {
    fs: FilteredFs,
}

impl ContextTree {
    pub(super) fn new(dir: &Path, ignore: &[String]) -> Result<ContextTree, CopyError> {
        let filters = if ignore.is_empty() {
            Vec::new()
        } else {
            vec![FilterOpts {
                exclude: ignore.to_vec(),
                ..FilterOpts::default()
            }]
        };
        Ok(ContextTree {
            fs: FilteredFs::new(dir, filters)?,
        })
    }

    fn node(&self, rel: &str, kind: NodeKind, meta: &fs::Metadata) -> Node {
        let kind = match kind {
            NodeKind::File if !meta.is_file() => NodeKind::Other,
            k => k,
        };
        Node {
            rel: rel.to_string(),
            kind,
            mode: meta.permissions().mode() & 0o7777,
            // BuildKit's clients send the context with owner 0:0.
            uid: 0,
            gid: 0,
            mtime: (meta.mtime(), u32::try_from(meta.mtime_nsec()).unwrap_or(0)),
            host: self.fs.root().join(rel),
            link_key: (meta.is_file() && meta.nlink() > 1).then(|| (meta.dev(), meta.ino())),
        }
    }

    fn entry_node(&self, e: &Entry) -> Node {
        let kind = match &e.kind {
            EntryKind::File => NodeKind::File,
            EntryKind::Dir => NodeKind::Dir,
            EntryKind::Symlink(t) => NodeKind::Symlink(t.clone()),
        };
        self.node(&e.path, kind, &e.metadata)
    }
}

impl Tree for ContextTree {
    fn lstat(&self, rel: &str) -> Result<Option<Node>, CopyError> {
        if rel.is_empty() {
            let meta = fs::metadata(self.fs.root()).map_err(CopyError::read(
                "stat",
                self.fs.root().display().to_string(),
            ))?;
            return Ok(Some(self.node("", NodeKind::Dir, &meta)));
        }
        let mut found = None;
        self.fs.walk(rel, |e| {
            if e.path == rel {
                found = Some(self.entry_node(e));
                return Ok(WalkAction::Stop);
            }
            Ok(WalkAction::Continue)
        })?;
        Ok(found)
    }

    fn children(&self, rel: &str) -> Result<Vec<Node>, CopyError> {
        let mut out = Vec::new();
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        self.fs.walk(rel, |e| {
            if e.path == rel {
                return Ok(WalkAction::Continue);
            }
            let Some(name) = e.path.strip_prefix(&prefix) else {
                return Ok(WalkAction::Continue);
            };
            if name.contains('/') {
                // A pending parent was listed first; the entry itself is
                // below a child we already have.
                return Ok(WalkAction::SkipDir);
            }
            out.push(self.entry_node(e));
            Ok(if e.is_dir() {
                WalkAction::SkipDir
            } else {
                WalkAction::Continue
            })
        })?;
        Ok(out)
    }
}

//! A source tree as COPY reads it: the build context or an image's merged
//! lower dirs, seen through one small interface.

use std::fs::File;
use std::path::PathBuf;

use super::CopyError;

/// What a source path is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum NodeKind {
    File,
    Dir,
    Symlink(String),
    /// Fifos, sockets, devices: not copied.
    Other,
}

/// One path of a source tree with the metadata COPY carries over.
#[derive(Clone, Debug)]
pub(super) struct Node {
    /// Relative to the tree root, `/`-separated, `""` for the root.
    pub(super) rel: String,
    pub(super) kind: NodeKind,
    /// Permission bits incl. setuid/setgid/sticky.
    pub(super) mode: u32,
    /// Intended container owner (context nodes: 0:0, as BuildKit's
    /// clients send the context).
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: (i64, u32),
    /// Where the content is on this host.
    pub(super) host: PathBuf,
    /// `(dev, ino)` when the file has several names, for hardlinks.
    pub(super) link_key: Option<(u64, u64)>,
}

impl Node {
    pub(super) fn is_dir(&self) -> bool {
        self.kind == NodeKind::Dir
    }

    pub(super) fn name(&self) -> &str {
        self.rel.rsplit('/').next().unwrap_or(&self.rel)
    }
}

/// Read access to a source tree. Nothing here follows a symlink.
pub(super) trait Tree {
    /// The node at `rel`, `None` when absent (or excluded).
    fn lstat(&self, rel: &str) -> Result<Option<Node>, CopyError>;
    /// The children of the directory `rel`, sorted by name.
    fn children(&self, rel: &str) -> Result<Vec<Node>, CopyError>;
    /// Opens a regular file for reading.
    fn open(&self, node: &Node) -> Result<File, CopyError> {
        File::open(&node.host).map_err(CopyError::read("open", node.rel.clone()))
    }
}

pub(super) fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else if name.is_empty() {
        dir.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Lexically cleans a path into `/`-separated components relative to the
/// root; `..` never climbs above the root (what `fs.RootPath` does).
pub(super) fn clean_rel(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Symlinks followed on one resolution before giving up (Linux's limit).
const MAX_LINKS: usize = 40;

/// Resolves `rel` inside a tree, following symlinks scoped to its root (an
/// absolute target restarts at the root, `..` stops there), as BuildKit
/// resolves COPY sources and destinations. The last component is followed
/// only when `follow_last`. Missing components are kept as written.
pub(super) fn resolve(
    lstat: &dyn Fn(&str) -> Result<Option<NodeKind>, CopyError>,
    rel: &str,
    follow_last: bool,
) -> Result<String, CopyError> {
    let mut todo: Vec<String> = clean_rel(rel)
        .split('/')
        .filter(|p| !p.is_empty())
        .rev()
        .map(str::to_string)
        .collect();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        if part == "." || part.is_empty() {
            continue;
        }
        let here = join(&done.join("/"), &part);
        let last = todo.is_empty();
        match lstat(&here)? {
            Some(NodeKind::Symlink(target)) if !last || follow_last => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(CopyError::BadSource {
                        path: rel.to_string(),
                        reason: "too many levels of symbolic links".into(),
                    });
                }
                if target.starts_with('/') {
                    done.clear();
                }
                todo.extend(target.split('/').rev().map(str::to_string));
            }
            _ => done.push(part),
        }
    }
    Ok(done.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_links_inside_the_root() {
        let lstat = |p: &str| -> Result<Option<NodeKind>, CopyError> {
            Ok(match p {
                "a" => Some(NodeKind::Symlink("../../b/c".into())),
                "b/c" => Some(NodeKind::Symlink("/d".into())),
                "loop" => Some(NodeKind::Symlink("loop".into())),
                "d" => Some(NodeKind::Dir),
                _ => None,
            })
        };
        assert_eq!(resolve(&lstat, "a/x", false).unwrap(), "d/x");
        assert_eq!(resolve(&lstat, "/a", false).unwrap(), "a");
        assert_eq!(resolve(&lstat, "a", true).unwrap(), "d");
        assert_eq!(resolve(&lstat, "../../x/./y", true).unwrap(), "x/y");
        assert!(resolve(&lstat, "loop", true).is_err());
    }
}

//! An image's tree as a COPY source or destination: its overlay lower dirs
//! merged as overlayfs shows them (whiteouts and opaque directories
//! honoured), with the owners and modes its unpack sidecars recorded.

use std::collections::BTreeSet;
use std::path::PathBuf;

use rustix::fs::{FileType, Statx};

use super::tree::{join, Node, NodeKind, Tree};
use super::CopyError;
use crate::layer::{IdMapping, Kind, Metadata};
use crate::snapshot::fsutil::{file_type, is_dir, lstatx_opt, overlay_opaque, sorted_names};
use crate::snapshot::lower::lookup;
use crate::sys::fs::effective_ids;

pub(super) struct ImageTree<'a> {
    lowers: &'a [PathBuf],
    recorded: &'a [Metadata],
    /// This process's ids seen as container 0:0 (an unprivileged unpack
    /// leaves every path owned by the caller).
    ids: IdMapping,
}

impl<'a> ImageTree<'a> {
    pub(super) fn new(lowers: &'a [PathBuf], recorded: &'a [Metadata]) -> ImageTree<'a> {
        let (uid, gid) = effective_ids();
        ImageTree {
            lowers,
            recorded,
            ids: IdMapping::single(uid, gid),
        }
    }

    fn node(&self, rel: &str, host: PathBuf, st: &Statx) -> Result<Node, CopyError> {
        let ft = file_type(st);
        let (kind, rkind) = match ft {
            FileType::RegularFile => (NodeKind::File, Some(Kind::File)),
            FileType::Directory => (NodeKind::Dir, Some(Kind::Dir)),
            FileType::Symlink => {
                let target = std::fs::read_link(&host)
                    .map_err(CopyError::read("readlink", rel))?
                    .to_string_lossy()
                    .into_owned();
                (NodeKind::Symlink(target), Some(Kind::Symlink))
            }
            _ => (NodeKind::Other, None),
        };
        let mut uid = self
            .ids
            .uid(st.stx_uid)
            .map_or(u64::from(st.stx_uid), u64::from);
        let mut gid = self
            .ids
            .gid(st.stx_gid)
            .map_or(u64::from(st.stx_gid), u64::from);
        let mut mode = u32::from(st.stx_mode) & 0o7777;
        // The sidecar of the lower that supplies the path holds what the
        // unpack could not set on disk.
        let layer = self.lowers.iter().position(|l| host.starts_with(l));
        let record = layer
            .and_then(|i| self.recorded.get(i))
            .and_then(|m| m.get(rel))
            .filter(|r| Some(r.kind) == rkind);
        if let Some(r) = record {
            uid = r.uid;
            gid = r.gid;
            mode = r.mode;
        }
        Ok(Node {
            rel: rel.to_string(),
            kind,
            mode,
            uid,
            gid,
            mtime: (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec),
            link_key: (ft == FileType::RegularFile && st.stx_nlink > 1).then(|| {
                (
                    u64::from(st.stx_dev_major) << 32 | u64::from(st.stx_dev_minor),
                    st.stx_ino,
                )
            }),
            host,
        })
    }
}

impl Tree for ImageTree<'_> {
    fn lstat(&self, rel: &str) -> Result<Option<Node>, CopyError> {
        match lookup(self.lowers, rel).map_err(CopyError::read("lstat", rel))? {
            Some((host, st)) => Ok(Some(self.node(rel, host, &st)?)),
            // A stage with no layers (`FROM scratch` and nothing else) still
            // has a root, as BuildKit's empty snapshot does: copying it makes
            // the destination directory.
            None if rel.is_empty() && self.lowers.is_empty() => Ok(Some(Node {
                rel: String::new(),
                kind: NodeKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: (0, 0),
                link_key: None,
                host: PathBuf::new(),
            })),
            None => Ok(None),
        }
    }

    fn children(&self, rel: &str) -> Result<Vec<Node>, CopyError> {
        // Names from every lower down to the first one that hides the rest
        // (opaque, or not a directory there); `lookup` then settles each.
        let mut names = BTreeSet::new();
        for lower in self.lowers {
            let dir = lower.join(rel);
            let Some(st) = lstatx_opt(&dir).map_err(CopyError::read("lstat", rel))? else {
                continue;
            };
            if !is_dir(&st) {
                break;
            }
            for name in sorted_names(&dir).map_err(CopyError::read("list", rel))? {
                if let Ok(name) = name.into_string() {
                    names.insert(name);
                }
            }
            if overlay_opaque(&dir).map_err(CopyError::read("read xattrs of", rel))? {
                break;
            }
        }
        let mut out = Vec::new();
        for name in names {
            let child = join(rel, &name);
            if let Some(node) = self.lstat(&child)? {
                out.push(node);
            }
        }
        Ok(out)
    }
}

/// Reads a small file of the tree (`/etc/passwd`), `None` when absent.
pub(super) fn read_small(tree: &dyn Tree, rel: &str) -> Result<Option<String>, CopyError> {
    let Some(node) = tree.lstat(rel)? else {
        return Ok(None);
    };
    if node.kind != NodeKind::File {
        return Ok(None);
    }
    let bytes = std::fs::read(&node.host).map_err(CopyError::read("read", rel))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

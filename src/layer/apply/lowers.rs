//! `OverlayLower` mode: the earlier layers' directories, read the way
//! overlayfs merges them, so that a layer unpacked on its own still means
//! what it means when flattened: a parent that is a symlink in a lower layer
//! is refused (overlay would shadow it with a new directory instead of
//! writing through it), an implicit parent copies the lower directory's
//! attributes (as overlay's copy-up does), and a hardlink may target a file
//! of a lower layer.

use std::ffi::OsStr;
use std::io;
use std::os::fd::AsFd;

use super::*;

/// What the merged lower view holds at a path.
pub(super) enum Lower {
    Absent,
    /// The topmost visible entry: its layer index (into `lowers`) and stat.
    Found {
        layer: usize,
        st: sfs::Stat,
    },
    /// A proper prefix is not a directory (a symlink or a file).
    Blocked {
        at: RelPath,
        st: sfs::Stat,
    },
}

impl Unpacker<'_> {
    /// lstat of `path` in one lower dir, never following a symlink.
    fn lower_stat(&self, layer: usize, path: &RelPath) -> io::Result<Option<sfs::Stat>> {
        let Some((dir, name)) = path.split_last() else {
            return Ok(None);
        };
        let fd = match sfs::open_dir_no_symlinks(self.lowers[layer].as_fd(), &dir.to_path()) {
            Ok(fd) => fd,
            Err(e) if matches!(errno(&e), ENOENT | ENOTDIR) || sfs::is_escape(&e) => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        sfs::lstat_at(fd.as_fd(), name)
    }

    fn lower_opaque(&self, layer: usize, path: &RelPath) -> bool {
        let Mode::OverlayLower(ns) = self.mode else {
            return false;
        };
        let attr = format!("{}opaque", ns.prefix());
        sfs::open_dir_no_symlinks(self.lowers[layer].as_fd(), &path.to_path())
            .and_then(|fd| sfs::get_xattr_fd(fd.as_fd(), OsStr::new(&attr)))
            .is_ok_and(|v| v.as_deref() == Some(b"y".as_slice()))
    }

    /// Overlay's lookup of `path` through the lower dirs, topmost first:
    /// a whiteout hides what is below it, a non-directory ends the merge, an
    /// opaque directory hides the directories below it.
    pub(super) fn lower_lookup(&self, path: &RelPath) -> io::Result<Lower> {
        let mut active: Vec<usize> = (0..self.lowers.len()).collect();
        let mut prefix = RelPath::default();
        let comps: Vec<_> = path.to_path().iter().map(|c| c.to_os_string()).collect();
        for (i, comp) in comps.iter().enumerate() {
            prefix = prefix.join(comp);
            let mut top: Option<(usize, sfs::Stat)> = None;
            let mut merging = Vec::new();
            for &l in &active {
                let Some(st) = self.lower_stat(l, &prefix)? else {
                    continue;
                };
                if sfs::is_whiteout_device(&st) {
                    break;
                }
                let dir = sfs::is_dir(&st);
                if top.is_none() {
                    top = Some((l, st));
                }
                if !dir {
                    break;
                }
                merging.push(l);
                if self.lower_opaque(l, &prefix) {
                    break;
                }
            }
            let Some((layer, st)) = top else {
                return Ok(Lower::Absent);
            };
            if i + 1 == comps.len() {
                return Ok(Lower::Found { layer, st });
            }
            if !sfs::is_dir(&st) {
                return Ok(Lower::Blocked { at: prefix, st });
            }
            active = merging;
        }
        Ok(Lower::Absent)
    }

    /// Before creating the missing directory `prefix` in this layer: refuse
    /// if the lower view has a non-directory there or above, and return the
    /// lower directory's stat to copy attributes from.
    pub(super) fn check_lower_parent(
        &self,
        prefix: &RelPath,
        shown: &str,
    ) -> Result<Option<sfs::Stat>, LayerError> {
        if self.lowers.is_empty() {
            return Ok(None);
        }
        let found = self
            .lower_lookup(prefix)
            .map_err(|e| self.io_err(shown, "look up earlier layers", e))?;
        let (at, st) = match found {
            Lower::Absent => return Ok(None),
            Lower::Found { st, .. } if sfs::is_dir(&st) => return Ok(Some(st)),
            Lower::Found { st, .. } => (prefix.clone(), st),
            Lower::Blocked { at, st } => (at, st),
        };
        let what = if sfs::file_type(&st) == rustix::fs::FileType::Symlink {
            "a symlink"
        } else {
            "not a directory"
        };
        Err(self.refuse(
            shown,
            format!(
                "parent {:?} is {what} in an earlier layer: writing through it is refused",
                at.display()
            ),
        ))
    }
}

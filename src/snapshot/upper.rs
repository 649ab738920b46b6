//! The change list of an overlay from its upper dir alone (kernel overlayfs
//! or fuse-overlayfs). The lowers are consulted only for the directories and
//! whiteouts found in the upper dir, never walked.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::Statx;

use super::error::{io_err, SnapshotError};
use super::fsutil::{
    is_bookkeeping_xattr, is_dir, is_whiteout, join_rel, lstatx, overlay_opaque, sorted_names,
    xattr, xattrs,
};
use super::lower;
use super::{Change, ChangeKind};

/// Who wrote the upper dir.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Format {
    /// Kernel overlayfs: whiteouts are 0/0 character devices (or, Linux ≥
    /// 6.7, xattr-marked empty files), opaque directories carry
    /// `<ns>.overlay.opaque=y`.
    Kernel,
    /// fuse-overlayfs 1.x: whiteouts are 0/0 character devices or, when
    /// mknod is refused, `.wh.NAME` files; every directory it creates is
    /// marked opaque (`user.fuseoverlayfs.opaque=y`, a `.wh..wh..opq` file
    /// and a `.wh..opq` device), whether or not a lower had it.
    Fuse,
}

/// fuse-overlayfs's opaque-directory marker files.
const FUSE_OPAQUE_FILES: [&[u8]; 2] = [b".wh..wh..opq", b".wh..opq"];

pub fn changes(
    upper: &Path,
    lowers: &[PathBuf],
    format: Format,
) -> Result<Vec<Change>, SnapshotError> {
    let mut out = Vec::new();
    let mut diff = Diff {
        lowers,
        format,
        out: &mut out,
    };
    diff.dir(upper, "", true)?;
    Ok(out)
}

struct Diff<'a> {
    lowers: &'a [PathBuf],
    format: Format,
    out: &'a mut Vec<Change>,
}

impl Diff<'_> {
    /// Diffs the upper directory `host` (container path `rel`).
    /// `over_lower`: whether lowers may have entries below (false under a
    /// new or opaque directory: everything there is new, whiteouts are moot).
    /// Returns whether the directory's own entry list changed (a name added
    /// or removed), which is what moves a directory's mtime.
    fn dir(&mut self, host: &Path, rel: &str, over_lower: bool) -> Result<bool, SnapshotError> {
        let mut entries_changed = !over_lower;
        let names = sorted_names(host).map_err(io_err("read directory", host))?;
        for name in names {
            let bytes = name.as_bytes();
            if self.format == Format::Fuse && FUSE_OPAQUE_FILES.contains(&bytes) {
                continue;
            }
            let path = host.join(&name);
            let st = lstatx(&path).map_err(io_err("stat", &path))?;
            // fuse-overlayfs's fallback whiteout: `.wh.NAME`.
            if self.format == Format::Fuse && bytes.starts_with(b".wh.") {
                let target = OsStr::from_bytes(&bytes[4..]);
                self.delete(rel, target, &path, over_lower)?;
                entries_changed = true;
                continue;
            }
            if is_whiteout(&path, &st).map_err(io_err("read xattrs of", &path))? {
                self.delete(rel, &name, &path, over_lower)?;
                entries_changed = true;
                continue;
            }
            let child = join_rel(rel, &name)
                .ok_or_else(|| SnapshotError::NotUtf8 { path: path.clone() })?;
            if !is_dir(&st) {
                if self.format == Format::Fuse {
                    strip_fuse_xattrs(&path)?;
                    if !entries_changed
                        && !lower::exists(self.lowers, &child)
                            .map_err(io_err("look up in lowers", &path))?
                    {
                        entries_changed = true;
                    }
                }
                self.push(child, ChangeKind::Upsert);
                continue;
            }
            let below = if over_lower {
                lower::lookup(self.lowers, &child).map_err(io_err("look up in lowers", &path))?
            } else {
                None
            };
            let opaque = self.is_opaque(&path)?;
            if self.format == Format::Fuse {
                strip_fuse_xattrs(&path)?;
            }
            let (kind, recurse_over_lower) = match &below {
                None => (Some(ChangeKind::Upsert), false),
                Some((_, lst)) if !is_dir(lst) => (Some(ChangeKind::OpaqueDir), false),
                Some(_) if opaque => (Some(ChangeKind::OpaqueDir), false),
                Some((lpath, lst)) => {
                    let same = same_dir_meta(&path, &st, lpath, lst)
                        .map_err(io_err("read xattrs of", &path))?;
                    (if same { None } else { Some(ChangeKind::Upsert) }, true)
                }
            };
            if below.is_none() {
                entries_changed = true;
            }
            let listed = kind.is_some();
            if let Some(kind) = kind {
                self.push(child.clone(), kind);
            }
            let inner_changed = self.dir(&path, &child, recurse_over_lower)?;
            if let (Format::Fuse, false, false, Some((_, lst))) =
                (self.format, listed, inner_changed, &below)
            {
                // fuse-overlayfs stamps a copied-up directory with the
                // copy-up time where kernel overlayfs keeps the lower's
                // times; a directory the step only traversed gets the
                // lower's times back so every snapshotter writes the same
                // implied parent (and the same layer digest).
                restore_times(&path, lst)?;
            }
        }
        Ok(entries_changed)
    }

    /// A whiteout for `name` in `rel`: a `Delete` when the lowers have it
    /// (fuse-overlayfs may leave whiteouts for paths only it had made).
    fn delete(
        &mut self,
        rel: &str,
        name: &OsStr,
        host: &Path,
        over_lower: bool,
    ) -> Result<(), SnapshotError> {
        if !over_lower {
            return Ok(());
        }
        let child = join_rel(rel, name).ok_or_else(|| SnapshotError::NotUtf8 {
            path: host.to_path_buf(),
        })?;
        if lower::exists(self.lowers, &child).map_err(io_err("look up in lowers", host))? {
            self.push(child, ChangeKind::Delete);
        }
        Ok(())
    }

    fn is_opaque(&self, path: &Path) -> Result<bool, SnapshotError> {
        if overlay_opaque(path).map_err(io_err("read xattrs of", path))? {
            return Ok(true);
        }
        if self.format == Format::Fuse {
            let marked = xattr(path, b"user.fuseoverlayfs.opaque")
                .map_err(io_err("read xattrs of", path))?
                .as_deref()
                == Some(b"y");
            return Ok(marked || path.join(".wh..wh..opq").symlink_metadata().is_ok());
        }
        Ok(false)
    }

    fn push(&mut self, path: String, kind: ChangeKind) {
        self.out.push(Change { path, kind });
    }
}

/// Removes fuse-overlayfs's own xattrs (`user.fuseoverlayfs.origin` on
/// copied-up files, `.opaque` on directories) from an upper entry once the
/// daemon is gone, so the layer writer, which strips only `*.overlay.*`,
/// cannot leak them into a layer (the opaque marker has been read by then).
fn strip_fuse_xattrs(path: &Path) -> Result<(), SnapshotError> {
    for (name, _) in xattrs(path).map_err(io_err("read xattrs of", path))? {
        if name.starts_with(b"user.fuseoverlayfs.") {
            rustix::fs::lremovexattr(path, OsStr::from_bytes(&name))
                .map_err(|e| io_err("remove xattr of", path)(e.into()))?;
        }
    }
    Ok(())
}

/// Sets `path`'s atime and mtime to those of `st` (no symlink following).
fn restore_times(path: &Path, st: &Statx) -> Result<(), SnapshotError> {
    use rustix::fs::{utimensat, AtFlags, Timespec, Timestamps, CWD};
    let ts = |t: rustix::fs::StatxTimestamp| Timespec {
        tv_sec: t.tv_sec,
        tv_nsec: t.tv_nsec.into(),
    };
    let times = Timestamps {
        last_access: ts(st.stx_atime),
        last_modification: ts(st.stx_mtime),
    };
    utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_err("set times of", path)(e.into()))
}

/// Whether two directories have the same mode, owner and (non-bookkeeping)
/// xattrs: a copied-up parent that the step only traversed.
fn same_dir_meta(a: &Path, ast: &Statx, b: &Path, bst: &Statx) -> io::Result<bool> {
    if ast.stx_mode != bst.stx_mode || ast.stx_uid != bst.stx_uid || ast.stx_gid != bst.stx_gid {
        return Ok(false);
    }
    Ok(content_xattrs(a)? == content_xattrs(b)?)
}

/// The xattrs that belong to the content (bookkeeping left out).
pub fn content_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut all = xattrs(path)?;
    all.retain(|(n, _)| !is_bookkeeping_xattr(n));
    Ok(all)
}

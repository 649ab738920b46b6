//! Owners the lower layers hold only as records.
//!
//! An unprivileged unpack cannot chown, so every path of a lower layer is
//! the caller's on disk (container root in the step) and the owner the tar
//! asked for lives in the layer's sidecar (`layer::Metadata`). The layer
//! writer restores recorded owners, but a later RUN step would still see
//! those paths as root's: `RUN chown app /work` then `USER app` and
//! `RUN touch /work/x` fails, `useradd` copies /etc/shadow's group as 0.
//!
//! So before the command, the sandbox's root (which owns every id of the
//! step's map) gives such paths their recorded owner and mode
//! (`exec::OwnerFix`); an overlay copies each one up. Those copies are
//! kiln's, not the step's: a path whose change time is still the one the
//! sandbox reported after its chown was not touched by the command, and
//! is left out of the layer ([`drop_untouched`]).

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::exec::{AppliedFix, OwnerFix};
use crate::layer::{self, IdMapping, Kind, LayerError};
use crate::snapshot::{ChangeKind, ChangeList};
use crate::sys::fs as sfs;

/// Past this many paths, only directories (cheap to copy up, and what a
/// non-root USER needs to create files) get their owner before the step;
/// files beyond it keep their owner in the layer only. Bounds the copy-up
/// cost of an image whose whole tree belongs to one non-root user.
const MAX_FILE_FIXES: usize = 2048;

/// The fixes for a step over `lowers` (top-most first, as overlayfs stacks
/// them) with their sidecars in the same order. A record applies only when
/// no higher lower has the path (one that has it, or a whiteout of it,
/// shows its own object instead).
pub(super) fn fixes(lowers: &[PathBuf], sidecars: &[PathBuf]) -> Result<Vec<OwnerFix>, LayerError> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    // Opened once: a lower that cannot be opened shadows nothing.
    let roots: Vec<Option<OwnedFd>> = lowers.iter().map(|l| sfs::open_root(l).ok()).collect();
    for (i, sidecar) in sidecars.iter().enumerate() {
        let meta = layer::Metadata::load(sidecar)?;
        for rec in meta.records() {
            let mode = match rec.kind {
                Kind::Dir | Kind::File | Kind::Fifo => Some(rec.mode & 0o7777),
                Kind::Symlink => None,
                // Devices an unprivileged unpack could not make are absent.
                Kind::Char | Kind::Block => continue,
            };
            let (Ok(uid), Ok(gid)) = (u32::try_from(rec.uid), u32::try_from(rec.gid)) else {
                continue;
            };
            if seen.contains(&rec.path) || shadowed(&roots[..i.min(roots.len())], &rec.path) {
                continue;
            }
            seen.insert(rec.path.clone());
            let fix = OwnerFix {
                path: rec.path.clone(),
                uid,
                gid,
                mode,
            };
            if rec.kind == Kind::Dir {
                dirs.push(fix);
            } else {
                files.push(fix);
            }
        }
    }
    if files.len() + dirs.len() > MAX_FILE_FIXES {
        let dropped = files
            .len()
            .saturating_sub(MAX_FILE_FIXES.saturating_sub(dirs.len()));
        tracing::warn!(
            files = dropped,
            "the lower layers record non-root owners for many files; a RUN step sees {dropped} \
             of them as root's (the layer keeps their owners)"
        );
        files.truncate(files.len() - dropped);
    }
    // Parents first, so a directory's mode is set before its children are
    // reached through it.
    dirs.append(&mut files);
    dirs.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(dirs)
}

/// Whether one of `higher` (lowers above the record's) has `path` itself.
/// An opaque directory or a non-directory parent there hides the path too,
/// but then the merged tree has no such path and the fix finds nothing.
fn shadowed(higher: &[Option<OwnedFd>], path: &str) -> bool {
    let rel = Path::new(path);
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return false;
    };
    higher.iter().flatten().any(|root| {
        sfs::open_dir_beneath(root.as_fd(), parent)
            .ok()
            .and_then(|dir| sfs::lstat_at(dir.as_fd(), name).ok())
            .flatten()
            .is_some()
    })
}

/// Leaves out of `changes` the copies the fixes made that the command did
/// not touch: a non-directory whose change time is the one reported right
/// after its fix (or, failing that, whose size, modification time, owner
/// and mode are still those of right after it); a directory (whose change time moves with any entry made
/// inside it) whose owner and mode are still exactly the fix's. `ids`
/// reads the source tree's owners as container ids.
pub(super) fn drop_untouched(
    changes: &mut ChangeList,
    fixes: &[OwnerFix],
    applied: &[AppliedFix],
    ids: &IdMapping,
) {
    if applied.is_empty() {
        return;
    }
    let wanted: HashMap<&str, &OwnerFix> = fixes.iter().map(|f| (f.path.as_str(), f)).collect();
    let applied: HashMap<&str, &AppliedFix> =
        applied.iter().map(|a| (a.path.as_str(), a)).collect();
    let source = &changes.source;
    changes.changes.retain(|c| {
        if c.kind != ChangeKind::Upsert {
            return true;
        }
        let (Some(fix), Some(done)) = (wanted.get(c.path.as_str()), applied.get(c.path.as_str()))
        else {
            return true;
        };
        let Ok(st) = std::fs::symlink_metadata(source.join(&c.path)) else {
            return true;
        };
        let as_fixed = ids.uid(st.uid()) == Some(fix.uid)
            && ids.gid(st.gid()) == Some(fix.gid)
            && fix.mode.is_none_or(|m| st.mode() & 0o7777 == m);
        let untouched = if st.is_dir() {
            as_fixed
        } else {
            // fuse-overlayfs moves the upper files' change times after the
            // sandbox read them, so the same size and modification time
            // with the fixed owner and mode also count.
            (st.ctime(), st.ctime_nsec()) == done.ctime
                || (as_fixed
                    && st.len() == done.size
                    && (st.mtime(), st.mtime_nsec()) == done.mtime)
        };
        !untouched
    });
}

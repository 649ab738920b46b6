//! Applies a spec's `owner_fixes` in the sandbox (see `spec::OwnerFix`):
//! as the namespace's root, on the freshly mounted root filesystem, before
//! any other mount could cover a path. Lookups stay beneath the root
//! (`openat2`), and the leaf is never followed.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use crate::sys::fs as sfs;

use super::spec::{AppliedFix, OwnerFix};

/// Applies each fix the tree does not already satisfy; failures become one
/// note (the step then sees those paths as root's, as before).
pub(super) fn apply(root: &Path, fixes: &[OwnerFix], notes: &mut Vec<String>) -> Vec<AppliedFix> {
    let mut applied = Vec::new();
    if fixes.is_empty() {
        return applied;
    }
    let root_fd = match sfs::open_root(root) {
        Ok(fd) => fd,
        Err(e) => {
            notes.push(format!("open {} to restore owners: {e}", root.display()));
            return applied;
        }
    };
    let mut failed = 0usize;
    let mut first = None;
    for fix in fixes {
        match apply_one(root_fd.as_fd(), fix) {
            Ok(Some(mut done)) => {
                done.path.clone_from(&fix.path);
                applied.push(done);
            }
            Ok(None) => {}
            Err(e) => {
                failed += 1;
                first.get_or_insert_with(|| format!("/{}: {e}", fix.path));
            }
        }
    }
    if let Some(first) = first {
        notes.push(format!(
            "{failed} path(s) of the lower layers keep the caller as owner in the step instead of \
             their recorded owner (first: {first}); their layers keep the recorded owner"
        ));
    }
    applied
}

/// Chowns and chmods one path when it differs; returns its times and size
/// afterwards (path left empty), `None` when it was already right or is
/// not there.
fn apply_one(root: BorrowedFd<'_>, fix: &OwnerFix) -> io::Result<Option<AppliedFix>> {
    let rel = Path::new(&fix.path);
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Ok(None);
    };
    let dir = match sfs::open_dir_beneath(root, parent) {
        Ok(d) => d,
        // A later layer removed or replaced a parent.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    let Some(st) = sfs::lstat_at(dir.as_fd(), name)? else {
        return Ok(None);
    };
    let is_link = sfs::file_type(&st) == rustix::fs::FileType::Symlink;
    let mut changed = false;
    if (st.st_uid, st.st_gid) != (fix.uid, fix.gid) {
        sfs::chown_at(dir.as_fd(), name, fix.uid, fix.gid)?;
        changed = true;
    }
    if let Some(mode) = fix.mode.filter(|_| !is_link) {
        // A chown clears setuid/setgid, so the mode goes on after it.
        if changed || st.st_mode & 0o7777 != mode {
            sfs::chmod_special_at(dir.as_fd(), name, mode)?;
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    let after = sfs::lstat_at(dir.as_fd(), name)?
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
    // Nanoseconds are below 10⁹, so the conversions cannot fail.
    let nanos = |n: u64| i64::try_from(n).unwrap_or(-1);
    Ok(Some(AppliedFix {
        path: String::new(),
        ctime: (after.st_ctime, nanos(after.st_ctime_nsec)),
        mtime: (after.st_mtime, nanos(after.st_mtime_nsec)),
        size: u64::try_from(after.st_size).unwrap_or(u64::MAX),
    }))
}

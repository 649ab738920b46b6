//! What the stacked lower dirs show at one path, as overlayfs would merge
//! them: used by the upper-dir diff for the few directories it finds, so the
//! lowers are never walked.

use std::io;
use std::path::PathBuf;

use rustix::fs::Statx;

use super::fsutil::{is_dir, is_whiteout, lstatx_opt, overlay_opaque};

/// The object the merged lowers show at `rel` (`/`-separated, relative):
/// its host path in the top-most lower that has it, and its stat. `None`
/// when no lower has it or a whiteout, a non-directory parent or an opaque
/// parent directory hides it. `lowers` is top-most first.
pub fn lookup(lowers: &[PathBuf], rel: &str) -> io::Result<Option<(PathBuf, Statx)>> {
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    for lower in lowers {
        let mut path = lower.clone();
        // Whether an opaque directory on the way hides everything below.
        let mut stop = false;
        let mut missing = false;
        for (i, part) in parts.iter().enumerate() {
            path.push(part);
            let Some(st) = lstatx_opt(&path)? else {
                missing = true;
                break;
            };
            if is_whiteout(&path, &st)? {
                return Ok(None);
            }
            if i + 1 == parts.len() {
                return Ok(Some((path, st)));
            }
            if !is_dir(&st) {
                // A file over a directory hides the lower directory.
                return Ok(None);
            }
            if overlay_opaque(&path)? {
                stop = true;
            }
        }
        if parts.is_empty() {
            return Ok(lstatx_opt(lower)?.map(|st| (lower.clone(), st)));
        }
        if missing && stop {
            return Ok(None);
        }
    }
    Ok(None)
}

/// Whether `lowers` show anything at `rel`.
pub fn exists(lowers: &[PathBuf], rel: &str) -> io::Result<bool> {
    Ok(lookup(lowers, rel)?.is_some())
}

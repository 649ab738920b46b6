//! Unpacked trees published without `syncfs`, and how a crash is noticed.
//!
//! An unpacked tree is a cache: it can always be made again from its blob,
//! which is durable (fsynced before any name refers to it). So a tree need
//! not reach the disk before it is published; what must never happen is a
//! build using a tree that a crash left half-written (files present but
//! empty, entries missing). `syncfs` guaranteed that, but it flushes the
//! whole filesystem, every other process's dirty data included: seconds on
//! a busy machine, for every tree.
//!
//! Instead a tree published unsynced carries an empty marker file
//! `unsynced-<boot id>` beside `rootfs/` (named for the kernel's boot id,
//! `/proc/sys/kernel/random/boot_id`). During the same boot the page cache
//! is the truth, so the tree is complete however much of it reached the
//! disk. A marker of another boot means the machine went down since: the
//! tree is thrown away and unpacked again on its next use. The marker is
//! created (a metadata operation, journaled in order) before the rename that
//! publishes the tree, so a crash cannot leave the published tree without
//! it. A tree without any marker was synced (the fallback when the boot id
//! cannot be read) and is always trusted.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::OnceLock;

const PREFIX: &str = "unsynced-";

/// This boot's marker name, or `None` when the boot id cannot be read.
fn marker_name() -> Option<&'static str> {
    static NAME: OnceLock<Option<String>> = OnceLock::new();
    NAME.get_or_init(|| {
        let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let id = id.trim();
        let valid = !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        valid.then(|| format!("{PREFIX}{id}"))
    })
    .as_deref()
}

/// Marks the unpublished tree directory `dir` (the parent of its
/// `rootfs/`) as unsynced in this boot. `Ok(false)`: no boot id, the caller
/// must make the tree durable itself (`syncfs`).
pub(super) fn mark(dir: &Path) -> io::Result<bool> {
    let Some(name) = marker_name() else {
        return Ok(false);
    };
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join(name))?;
    Ok(true)
}

/// Whether `dir` carries this boot's marker.
pub(super) fn is_marked(dir: &Path) -> bool {
    marker_name().is_some_and(|name| dir.join(name).exists())
}

/// Whether the published tree directory `dir` can be used: it has no
/// marker (it was synced), or this boot's. An unreadable directory is
/// not trusted.
pub(super) fn trusted(dir: &Path) -> bool {
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    let mut marked = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(PREFIX) {
            if Some(name) == marker_name() {
                return true;
            }
            marked = true;
        }
    }
    !marked
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_of_this_boot_is_trusted_and_of_another_is_not() {
        let dir = tempfile::tempdir().unwrap();
        assert!(trusted(dir.path()), "no marker: synced");
        fs::write(
            dir.path()
                .join("unsynced-00000000-0000-0000-0000-000000000000"),
            "",
        )
        .unwrap();
        assert!(!trusted(dir.path()), "another boot's marker");
        let fresh = tempfile::tempdir().unwrap();
        assert!(mark(fresh.path()).unwrap(), "this machine has a boot id");
        assert!(trusted(fresh.path()));
        assert!(!trusted(&dir.path().join("missing")));
    }
}

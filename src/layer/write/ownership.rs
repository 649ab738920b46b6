//! Owner, mode and xattrs of an emitted path: what is on disk, read back
//! through the id mapping, with what unpacking recorded restored.

use std::ffi::OsString;

use super::super::capability;
use super::super::idmap::{IdMapping, OVERFLOW_ID};
use super::super::{Kind, Metadata, Record};

/// What goes into the entry's header and PAX records.
pub(super) struct Resolved {
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mode: u32,
    pub(super) xattrs: Vec<(String, Vec<u8>)>,
    /// The on-disk owner had no container id and no record replaced it.
    pub(super) unmapped: bool,
}

/// Whether an xattr belongs in an image. Dropped: the overlay snapshotters'
/// bookkeeping (`user.overlay.*`, `trusted.overlay.*`, fuse-overlayfs's
/// `user.fuseoverlayfs.*`/`trusted.fuseoverlayfs.*`), `security.selinux`
/// (a label of the build host's policy; the runtime labels containers
/// itself, as podman and BuildKit do), and `system.*` (POSIX ACLs, whose
/// entries name host ids). Kept: other `user.*`, `trusted.*`, `security.*`.
pub(super) fn keep_xattr(name: &str) -> bool {
    const DROP: [&str; 5] = [
        "user.overlay.",
        "trusted.overlay.",
        "user.fuseoverlayfs.",
        "trusted.fuseoverlayfs.",
        "system.",
    ];
    name != "security.selinux" && !DROP.iter().any(|p| name.starts_with(p))
}

fn xattr_value(name: &str, value: &[u8]) -> Vec<u8> {
    if name == "security.capability" {
        capability::to_v2(value)
    } else {
        value.to_vec()
    }
}

/// The record of `path` in the top-most lower layer that has one.
fn record<'a>(recorded: &'a [Metadata], path: &str) -> Option<&'a Record> {
    recorded.iter().find_map(|m| m.get(path))
}

/// Setuid and setgid: the bits a kernel strips on its own (chown clears
/// them; a non-member cannot set setgid) without the step asking.
const STRIPPABLE: u32 = 0o6000;

/// Applies the rule stated in `write.rs`'s module docs.
#[allow(clippy::too_many_arguments)]
pub(super) fn resolve(
    path: &str,
    kind: Kind,
    host_uid: u32,
    host_gid: u32,
    disk_mode: u32,
    disk_xattrs: Vec<(OsString, Vec<u8>)>,
    ids: &IdMapping,
    recorded: &[Metadata],
) -> Resolved {
    let uid = ids.uid(host_uid);
    let gid = ids.gid(host_gid);
    let mut out = Resolved {
        uid: u64::from(uid.unwrap_or(OVERFLOW_ID)),
        gid: u64::from(gid.unwrap_or(OVERFLOW_ID)),
        mode: disk_mode,
        xattrs: Vec::new(),
        unmapped: uid.is_none() || gid.is_none(),
    };
    for (k, v) in disk_xattrs {
        let Ok(k) = k.into_string() else { continue };
        if keep_xattr(&k) {
            let v = xattr_value(&k, &v);
            out.xattrs.push((k, v));
        }
    }
    if let Some(rec) = record(recorded, path).filter(|r| r.kind == kind) {
        // Owner: an unprivileged unpack leaves every path owned by the
        // caller (container 0:0); a path the step did not chown still is.
        let as_unpacked = uid == Some(0) && gid == Some(0);
        if as_unpacked || out.unmapped {
            out.uid = rec.uid;
            out.gid = rec.gid;
            out.unmapped = false;
            for (k, v) in rec.xattr_values() {
                if keep_xattr(&k) && !out.xattrs.iter().any(|(n, _)| *n == k) {
                    let v = xattr_value(&k, &v);
                    out.xattrs.push((k, v));
                }
            }
            out.xattrs.sort();
        }
        // Mode: restored only when the disk differs from the record by
        // bits the kernel strips by itself; any other difference is a
        // chmod by the step, which wins.
        let strippable_only = disk_mode & !STRIPPABLE == rec.mode & !STRIPPABLE
            && disk_mode & STRIPPABLE & !rec.mode == 0;
        if strippable_only {
            out.mode = rec.mode;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_xattrs() {
        assert!(keep_xattr("user.foo"));
        assert!(keep_xattr("security.capability"));
        assert!(keep_xattr("trusted.foo"));
        for k in [
            "user.overlay.opaque",
            "trusted.overlay.origin",
            "user.fuseoverlayfs.whiteout",
            "security.selinux",
            "system.posix_acl_access",
        ] {
            assert!(!keep_xattr(k), "{k}");
        }
    }
}

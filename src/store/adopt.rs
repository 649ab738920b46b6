//! Adopting a step's overlay upper dir as the unpacked tree of the layer
//! just written from it.
//!
//! The next step stacks that layer as an overlay lower. Extracting it again
//! writes every file a second time while the step directory's copy is
//! deleted: for a step that made 50,000 small files, 100,000 inode
//! operations on a filesystem whose allocator has to skip the inodes just
//! freed, the slowest part of such a build. The upper dir already holds
//! those files, so it is moved into place instead, but only when the result
//! is what extracting the layer in that mode would give; otherwise nothing
//! is adopted and the layer is extracted on first use, as before.
//!
//! The written layer is the reference: the writer's listing of its entries
//! (`layer::WrittenLayer::listing`, the headers as written) is what
//! extraction would make, and the upper dir is brought in line with it:
//! - entries the layer does not have (mount points the sandbox created,
//!   sockets, whiteouts of paths no lower has, copied-up directories with
//!   nothing listed below them, copies the sandbox gave recorded owners)
//!   are moved out, into the step directory, which is removed as before;
//! - every entry gets the header's mtime as atime and mtime (what extraction
//!   sets: whole seconds, `SOURCE_DATE_EPOCH`-clamped, as written);
//! - whiteouts are made again as extraction makes them (overlayfs shares
//!   one mode-0 inode among all of a mount's whiteouts);
//! - overlayfs bookkeeping (`origin`, `impure`, `uuid`) is removed, and
//!   `opaque=y` is where, and only where, the layer has `.wh..wh..opq`;
//! - the root gets the mode a fresh directory gets, as the unpacked root has.
//!
//! Only plain layers (every header 0:0, no xattrs, no devices) are listed:
//! an unprivileged extraction records other owners in the sidecar, which
//! must stay empty here. Declined, leaving the upper dir to be removed with
//! the step: an owner other than the caller on disk; xattrs on disk; a
//! kind, size, mode, link target or link count that
//! differs; other overlay xattrs (`redirect`, `metacopy`, …); anything
//! unreadable. File contents are not compared: the layer was just read
//! from these very files, after the step's processes were gone.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use super::unpacked::{chain_ids, LayerSource};
use super::{unsynced, Digest, Store, StoreError};
use crate::layer::{Listed, ListedKind, Mode, OverlayXattrs};
use crate::sys::{fs as sfs, tree};

/// What [`Store::adopt_upper`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// The upper dir is now the layer's unpacked tree (`entries` paths).
    Adopted { entries: usize },
    /// The layer was already unpacked; the upper dir was not touched.
    Present,
    /// Not the same as extracting the layer, for this reason; the upper dir
    /// may have been partly brought in line, and is left to be removed.
    Declined(String),
}

/// Environment switch: `KILN_ADOPT_UPPER=0` always extracts instead.
pub const ADOPT_ENV: &str = "KILN_ADOPT_UPPER";

impl Store {
    /// After a step: offers its overlay upper dir `upper` as the unpacked
    /// tree of `layer`, the layer written from it over `parents` (the
    /// step's image layers, bottom-most first), for `mode` (the mode those
    /// were unpacked with). Never fails the step: the outcome is logged, and
    /// whatever was not adopted is extracted when a later step needs it.
    pub fn offer_upper(
        &self,
        parents: &[LayerSource],
        layer: &LayerSource,
        listing: &[Listed],
        mode: Mode,
        upper: &Path,
    ) {
        if std::env::var_os(ADOPT_ENV).is_some_and(|v| v == "0") {
            return;
        }
        let t = Instant::now();
        let _s = tracing::debug_span!("adopt", layer = %layer.diff_id).entered();
        match self.adopt_upper(parents, layer, listing, mode, upper) {
            Ok(outcome) => {
                tracing::debug!(?outcome, took = ?t.elapsed(), "step upper dir offered as the layer's unpacked tree");
            }
            Err(e) => tracing::warn!(error = %e, "could not adopt the step's upper dir"),
        }
    }

    /// See [`Store::offer_upper`]. `Err` only when publishing failed
    /// (the store could not be written), not for a declined upper dir.
    pub fn adopt_upper(
        &self,
        parents: &[LayerSource],
        layer: &LayerSource,
        listing: &[Listed],
        mode: Mode,
        upper: &Path,
    ) -> Result<Adoption, StoreError> {
        let Mode::OverlayLower(ns) = mode else {
            return Ok(Adoption::Declined("not an overlay lower".into()));
        };
        let mut diff_ids: Vec<Digest> = parents.iter().map(|l| l.diff_id.clone()).collect();
        diff_ids.push(layer.diff_id.clone());
        let Some(chain) = chain_ids(&diff_ids).pop() else {
            return Ok(Adoption::Declined("no chain id".into()));
        };
        let dir = self.unpacked_dir(&chain, mode);
        if dir.is_dir() && unsynced::trusted(&dir) {
            return Ok(Adoption::Present);
        }
        let mut want = match expected(listing) {
            Ok(w) => w,
            Err(why) => return Ok(Adoption::Declined(why)),
        };
        let entries = want.len();
        let _lock = self.chain_lock(&chain, mode)?;
        if dir.is_dir() {
            if unsynced::trusted(&dir) {
                return Ok(Adoption::Present);
            }
            self.discard_tree(&dir)?;
        }
        if let Err(why) = reconcile(upper, &mut want, ns) {
            return Ok(Adoption::Declined(why));
        }
        let tmp = self.scratch_tree("adopt")?;
        let rootfs = tmp.path.join("rootfs");
        let io = |what: &str, e| self.io(format!("{what} {}", rootfs.display()), e);
        fs::rename(upper, &rootfs).map_err(|e| io("move the upper dir to", e))?;
        // The unpacked root is a fresh directory: the same mode as `tmp`.
        let fresh_mode = fs::metadata(&tmp.path)
            .map_err(|e| io("stat", e))?
            .permissions()
            .mode();
        fs::set_permissions(&rootfs, fs::Permissions::from_mode(fresh_mode & 0o7777))
            .map_err(|e| io("chmod", e))?;
        // An empty sidecar: every owner is the caller (container 0:0) and
        // nothing needed recording.
        let meta = tmp.path.join("meta.jsonl");
        fs::File::create(&meta).map_err(|e| self.io(format!("create {}", meta.display()), e))?;
        self.mark_or_sync(&tmp.path)?;
        if self.commit_tree(tmp, &dir)? {
            Ok(Adoption::Adopted { entries })
        } else {
            Ok(Adoption::Present)
        }
    }
}

/// One entry of the layer, as extraction would make it.
#[derive(Debug)]
struct Expect {
    want: Want,
    mode: u32,
    mtime: (i64, i64),
}

#[derive(Debug)]
enum Want {
    /// `links`: how many names the layer gives it (itself and its `Link`s).
    File {
        size: u64,
        links: u64,
    },
    Dir {
        opaque: bool,
    },
    Symlink(Vec<u8>),
    Fifo,
    /// Another name of the file at this path.
    Hardlink(String),
    Whiteout,
}

/// The layer's entries by relative path, or why it cannot be adopted.
fn expected(listing: &[Listed]) -> Result<HashMap<String, Expect>, String> {
    let mut out: HashMap<String, Expect> = HashMap::with_capacity(listing.len());
    for entry in listing {
        let path = rel_path(entry.path.as_bytes())?;
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", path.as_str()),
        };
        if name == ".wh..wh..opq" {
            match out.get_mut(parent) {
                Some(Expect {
                    want: Want::Dir { opaque },
                    ..
                }) => *opaque = true,
                _ => return Err(format!("{path}: opaque marker before its directory")),
            }
            continue;
        }
        if let Some(target) = name.strip_prefix(".wh.") {
            if target.is_empty() || target.starts_with(".wh.") {
                return Err(format!("{path}: an aufs marker"));
            }
            let at = if parent.is_empty() {
                target.to_string()
            } else {
                format!("{parent}/{target}")
            };
            let e = Expect {
                want: Want::Whiteout,
                mode: 0,
                mtime: (0, 0),
            };
            if out.insert(at, e).is_some() {
                return Err(format!("{path}: whiteout of a path the layer also has"));
            }
            continue;
        }
        let want = match &entry.kind {
            ListedKind::File { size } => Want::File {
                size: *size,
                links: 1,
            },
            ListedKind::Dir => Want::Dir { opaque: false },
            ListedKind::Symlink(target) => Want::Symlink(target.clone()),
            ListedKind::Link(target) => Want::Hardlink(rel_path(target.as_bytes())?),
            ListedKind::Fifo => Want::Fifo,
        };
        let e = Expect {
            want,
            mode: entry.mode & 0o7777,
            mtime: (i64::try_from(entry.mtime).unwrap_or(i64::MAX), 0),
        };
        if out.insert(path.clone(), e).is_some() {
            return Err(format!("{path}: twice in the layer"));
        }
    }
    let targets: Vec<String> = out
        .values()
        .filter_map(|e| match &e.want {
            Want::Hardlink(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    for t in targets {
        match out.get_mut(&t) {
            Some(Expect {
                want: Want::File { links, .. },
                ..
            }) => *links += 1,
            _ => return Err(format!("hardlink to {t}, not a file of the layer")),
        }
    }
    Ok(out)
}

/// A tar name as a relative path without `./` or a trailing `/`.
fn rel_path(raw: &[u8]) -> Result<String, String> {
    let s = std::str::from_utf8(raw).map_err(|_| "a name that is not UTF-8".to_string())?;
    let s = s.strip_prefix("./").unwrap_or(s).trim_end_matches('/');
    if s.is_empty()
        || s.starts_with('/')
        || s.split('/').any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!("entry {s:?}"));
    }
    Ok(s.to_string())
}

/// Brings `upper` in line with `want` (see the module docs), consuming it.
fn reconcile(
    upper: &Path,
    want: &mut HashMap<String, Expect>,
    ns: OverlayXattrs,
) -> Result<(), String> {
    let (Some(parent), Some(name)) = (upper.parent(), upper.file_name()) else {
        return Err("the upper dir has no parent".into());
    };
    let failed = |what: &str, e: io::Error| format!("{what} {}: {e}", upper.display());
    let parent = sfs::open_root(parent).map_err(|e| failed("open the parent of", e))?;
    let root = sfs::open_child_dir(parent.as_fd(), name).map_err(|e| failed("open", e))?;
    // Strays are moved beside the upper dir, into the step directory, whose
    // removal (in the user-namespace helper when needed) takes them: some
    // belong to subordinate ids (copies the sandbox gave recorded owners)
    // and cannot be removed by the caller.
    let strays_name = OsStr::new("adopt-strays");
    match sfs::mkdir_at(parent.as_fd(), strays_name, 0o700) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(failed("make a directory beside", e)),
    }
    let strays = sfs::open_child_dir(parent.as_fd(), strays_name)
        .map_err(|e| failed("open a directory beside", e))?;
    let mut walk = Walk {
        want,
        ids: sfs::effective_ids(),
        ns: ns.prefix(),
        inodes: Vec::new(),
        names: HashMap::new(),
        upper,
        strays: strays.as_fd(),
        moved: 0,
    };
    walk.xattrs(parent.as_fd(), name, "", false)?;
    walk.dir(root.as_fd(), "")?;
    if let Some(missing) = walk.want.keys().next() {
        return Err(format!(
            "{missing} (and {} more) in the layer, not in the upper dir",
            walk.want.len() - 1
        ));
    }
    for (path, ino, target) in &walk.inodes {
        if walk.names.get(target) != Some(ino) {
            return Err(format!("{path}: not the same file as {target}"));
        }
    }
    Ok(())
}

struct Walk<'a> {
    want: &'a mut HashMap<String, Expect>,
    ids: (u32, u32),
    /// `user.overlay.` or `trusted.overlay.`
    ns: &'static str,
    /// Hardlink entries: (path, inode, target path).
    inodes: Vec<(String, u64, String)>,
    /// Inodes of the files with more than one name.
    names: HashMap<String, u64>,
    /// The upper dir's own path (absolute, as the snapshotter made it).
    upper: &'a Path,
    /// Where entries the layer does not have go, and how many went.
    strays: BorrowedFd<'a>,
    moved: u64,
}

impl Walk<'_> {
    fn dir(&mut self, fd: BorrowedFd<'_>, rel: &str) -> Result<(), String> {
        let failed = |what: &str, e: io::Error| format!("{what} {rel:?} in the upper dir: {e}");
        for name in sfs::list_dir(fd).map_err(|e| failed("list", e))? {
            let Some(n) = name.to_str() else {
                return Err(format!("{rel:?}: a name that is not UTF-8"));
            };
            let path = if rel.is_empty() {
                n.to_string()
            } else {
                format!("{rel}/{n}")
            };
            let failed = |what: &str, e: io::Error| format!("{what} {path}: {e}");
            let Some(st) = sfs::lstat_at(fd, &name).map_err(|e| failed("stat", e))? else {
                continue;
            };
            let Some(e) = self.want.remove(&path) else {
                self.moved += 1;
                let to = format!("{}", self.moved);
                rustix::fs::renameat(fd, name.as_os_str(), self.strays, to.as_str())
                    .map_err(|e| failed("move away", e.into()))?;
                continue;
            };
            if (st.st_uid, st.st_gid) != self.ids {
                return Err(format!("{path}: owner {}:{}", st.st_uid, st.st_gid));
            }
            let ft = sfs::file_type(&st);
            let same_mode = st.st_mode & 0o7777 == e.mode;
            use rustix::fs::FileType as T;
            match (&e.want, ft) {
                (Want::Whiteout, T::CharacterDevice) if sfs::is_whiteout_device(&st) => {
                    sfs::remove_at(fd, &name).map_err(|e| failed("remove", e))?;
                    sfs::mknod_at(fd, &name, sfs::Special::Char, 0, 0)
                        .map_err(|e| failed("make whiteout", e))?;
                    continue;
                }
                (Want::Dir { opaque }, T::Directory) if same_mode => {
                    self.xattrs(fd, &name, &path, *opaque)?;
                    let sub = sfs::open_child_dir(fd, &name).map_err(|e| failed("open", e))?;
                    self.dir(sub.as_fd(), &path)?;
                    // After the children: removing one moves the mtime.
                    sfs::set_times_fd(sub.as_fd(), e.mtime.0, e.mtime.1)
                        .map_err(|e| failed("set times of", e))?;
                    continue;
                }
                (Want::File { size, links }, T::RegularFile)
                    if same_mode
                        && u64::try_from(st.st_size) == Ok(*size)
                        && st.st_nlink == *links =>
                {
                    if *links > 1 {
                        self.names.insert(path.clone(), st.st_ino);
                    }
                }
                (Want::Hardlink(target), T::RegularFile) => {
                    // Shares the target's inode, mode and times.
                    self.inodes.push((path, st.st_ino, target.clone()));
                    continue;
                }
                (Want::Symlink(target), T::Symlink) => {
                    let on_disk = tree::readlink_at(fd, &name).map_err(|e| failed("read", e))?;
                    if on_disk != *target {
                        return Err(format!("{path}: another link target"));
                    }
                }
                (Want::Fifo, T::Fifo) if same_mode => {}
                (want, _) => {
                    return Err(format!(
                    "{path}: {ft:?} mode {:o} size {} links {}, the layer has {want:?} mode {:o}",
                    st.st_mode & 0o7777,
                    st.st_size,
                    st.st_nlink,
                    e.mode
                ))
                }
            }
            self.xattrs(fd, &name, &path, false)?;
            sfs::set_times_at(fd, &name, e.mtime.0, e.mtime.1)
                .map_err(|e| failed("set times of", e))?;
        }
        Ok(())
    }

    /// Removes overlayfs bookkeeping from `name` in `parent` and sets or
    /// removes its opaque mark to match `opaque`; declines any other xattr.
    fn xattrs(
        &self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        path: &str,
        opaque: bool,
    ) -> Result<(), String> {
        let failed = |what: &str, e: io::Error| format!("{what} xattrs of {path:?}: {e}");
        // Nearly every entry has no xattr: one listing by path says so
        // without the `/proc/self/fd` lookup `xattrs_at` pays. Safe here:
        // the step's processes are gone, nothing else writes the upper dir,
        // and every parent on the path was seen to be a directory.
        if !path.is_empty() && self.upper.is_absolute() {
            let mut buf = [0u8; 256];
            match rustix::fs::llistxattr(self.upper.join(path), &mut buf[..]) {
                Ok(0) if !opaque => return Ok(()),
                Ok(_) | Err(rustix::io::Errno::RANGE) => {}
                Err(e) => return Err(failed("list", e.into())),
            }
        }
        let attrs = tree::xattrs_at(parent, name).map_err(|e| failed("read", e))?;
        let mut marked = false;
        for (attr, value) in attrs {
            let Some(key) = attr.as_bytes().strip_prefix(self.ns.as_bytes()) else {
                return Err(format!("{path:?}: xattr {}", attr.to_string_lossy()));
            };
            match key {
                b"opaque" if opaque && value == b"y" => marked = true,
                b"opaque" if !opaque && value == b"y" => {
                    remove_xattr(parent, name, &attr).map_err(|e| failed("remove", e))?
                }
                b"origin" | b"impure" | b"uuid" => {
                    remove_xattr(parent, name, &attr).map_err(|e| failed("remove", e))?
                }
                _ => {
                    return Err(format!(
                        "{path:?}: overlay xattr {}",
                        attr.to_string_lossy()
                    ))
                }
            }
        }
        if opaque && !marked {
            let attr = format!("{}opaque", self.ns);
            sfs::set_xattr_at(parent, name, OsStr::new(&attr), b"y")
                .map_err(|e| failed("set", e))?;
        }
        Ok(())
    }
}

/// `lremovexattr` of `name` in `parent` (the leaf is not followed).
fn remove_xattr(parent: BorrowedFd<'_>, name: &OsStr, attr: &OsStr) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.as_bytes());
    Ok(rustix::fs::lremovexattr(OsStr::from_bytes(&path), attr)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_and_unsafe_ones_refused() {
        assert_eq!(rel_path(b"./a/b/").unwrap(), "a/b");
        assert_eq!(rel_path(b"a").unwrap(), "a");
        for bad in [&b"/etc"[..], b"a/../b", b"./", b"a//b"] {
            assert!(rel_path(bad).is_err(), "{bad:?}");
        }
    }
}

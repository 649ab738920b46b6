//! The copy-and-walk snapshotter, for when no overlay can be mounted.
//!
//! `prepare` merges the lowers (bottom-up, honouring whiteouts and opaque
//! directories) into `WORK/rootfs`, copying file data with `FICLONE`
//! (reflink: instant, no extra space on btrfs/xfs) or, where the filesystem
//! cannot, a plain copy (`copy_file_range`). Hardlinking the lower files
//! would be cheaper but a step that writes a file in place would then change
//! the shared lower. Mode, times, xattrs and (as root) owners are kept;
//! as non-root the copy is the caller's, which is fine: the sidecar
//! metadata carries the intended owners, and changes are found against
//! the tree as copied, not against the lowers.
//!
//! It then records an [`Index`]: path → stat (type, size, mtime, ctime, mode,
//! owner, inode, link count, birth time; xattr hash for directories).
//! `changes` stats the tree again and compares, never reading file
//! contents; ctime catches writes and xattr changes of non-directories even
//! when the mtime is put back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{symlink, DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{FileType, Statx};
use sha2::{Digest, Sha256};

use super::error::{io_err, SnapshotError};
use super::fsutil::{
    btime, file_type, is_bookkeeping_xattr, is_dir, is_whiteout, join_rel, lstatx, lstatx_opt,
    overlay_opaque, sorted_names, xattrs,
};
use super::{Change, ChangeKind, Snapshot, SnapshotterKind, State};
use crate::exec::RootFs;

pub struct Walk;

impl super::Snapshotter for Walk {
    fn kind(&self) -> SnapshotterKind {
        SnapshotterKind::Walk
    }

    fn prepare(&self, lowers: &[PathBuf], work: &Path) -> Result<Snapshot, SnapshotError> {
        let work = std::path::absolute(work).map_err(io_err("resolve", work))?;
        let tree = work.join("rootfs");
        fs::create_dir(&tree).map_err(io_err("create directory", &tree))?;
        let mut copier = Copier {
            links: HashMap::new(),
            root: crate::sys::fs::effective_ids().0 == 0,
        };
        for lower in lowers.iter().rev() {
            copier.layer(lower, &tree)?;
        }
        let before = index(&tree)?;
        Ok(Snapshot {
            kind: SnapshotterKind::Walk,
            rootfs: RootFs::Dir(tree.clone()),
            state: State::Walk { tree, before },
        })
    }
}

/// Applies lower layers onto the tree.
struct Copier {
    /// Lower inode (dev, ino) → where its first copy went, so hardlinks
    /// stay hardlinks (among the copies).
    links: HashMap<(u64, u64), PathBuf>,
    /// Whether owners can be set.
    root: bool,
}

impl Copier {
    fn layer(&mut self, layer: &Path, tree: &Path) -> Result<(), SnapshotError> {
        // The layer root's own attributes are the root directory's.
        self.dir(layer, tree)?;
        let st = lstatx(layer).map_err(io_err("stat", layer))?;
        self.attrs(layer, tree, &st)
    }

    /// Merges the layer directory `src` into the tree directory `dst`.
    fn dir(&mut self, src: &Path, dst: &Path) -> Result<(), SnapshotError> {
        for name in sorted_names(src).map_err(io_err("read directory", src))? {
            let s = src.join(&name);
            let d = dst.join(&name);
            let st = lstatx(&s).map_err(io_err("stat", &s))?;
            let existing = lstatx_opt(&d).map_err(io_err("stat", &d))?;
            if is_whiteout(&s, &st).map_err(io_err("read xattrs of", &s))? {
                if existing.is_some() {
                    remove(&d)?;
                }
                continue;
            }
            if is_dir(&st) {
                let opaque = overlay_opaque(&s).map_err(io_err("read xattrs of", &s))?;
                match existing {
                    Some(e) if is_dir(&e) && !opaque => {
                        // A lower layer's read-only directory must take
                        // this layer's entries (its mode is set again after).
                        if u32::from(e.stx_mode) & 0o300 != 0o300 && !self.root {
                            let mode = u32::from(e.stx_mode) & 0o7777 | 0o700;
                            rustix::fs::chmod(&d, rustix::fs::Mode::from_raw_mode(mode))
                                .map_err(|err| io_err("chmod", &d)(err.into()))?;
                        }
                    }
                    Some(_) => {
                        remove(&d)?;
                        mkdir(&d)?;
                    }
                    None => mkdir(&d)?,
                }
                self.dir(&s, &d)?;
                self.attrs(&s, &d, &st)?;
                continue;
            }
            if existing.is_some() {
                remove(&d)?;
            }
            self.leaf(&s, &d, &st)?;
        }
        Ok(())
    }

    fn leaf(&mut self, s: &Path, d: &Path, st: &Statx) -> Result<(), SnapshotError> {
        let key = (
            u64::from(st.stx_dev_major) << 32 | u64::from(st.stx_dev_minor),
            st.stx_ino,
        );
        if st.stx_nlink > 1 && file_type(st) != FileType::Directory {
            if let Some(first) = self.links.get(&key) {
                if fs::hard_link(first, d).is_ok() {
                    return Ok(());
                }
            }
        }
        match file_type(st) {
            FileType::RegularFile => copy_file(s, d)?,
            FileType::Symlink => {
                let to = fs::read_link(s).map_err(io_err("read symlink", s))?;
                symlink(&to, d).map_err(io_err("create symlink", d))?;
            }
            FileType::Fifo => {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    d,
                    FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                )
                .map_err(|e| io_err("create fifo", d)(e.into()))?;
            }
            // Devices a non-root caller cannot make are in the sidecar
            // metadata, as when unpacking; sockets are not layer content.
            _ => {
                let dev = rustix::fs::makedev(st.stx_rdev_major, st.stx_rdev_minor);
                let made = rustix::fs::mknodat(
                    rustix::fs::CWD,
                    d,
                    file_type(st),
                    rustix::fs::Mode::from_raw_mode(0o600),
                    dev,
                );
                if made.is_err() {
                    tracing::debug!(path = %s.display(), "walk snapshotter: device not copied");
                    return Ok(());
                }
            }
        }
        self.attrs(s, d, st)?;
        if st.stx_nlink > 1 {
            self.links.insert(key, d.to_path_buf());
        }
        Ok(())
    }

    /// Owner (as root), mode, xattrs, then times of `d` from `s`.
    fn attrs(&self, s: &Path, d: &Path, st: &Statx) -> Result<(), SnapshotError> {
        let symlink = file_type(st) == FileType::Symlink;
        if self.root {
            let _ = rustix::fs::chownat(
                rustix::fs::CWD,
                d,
                Some(rustix::fs::Uid::from_raw(st.stx_uid)),
                Some(rustix::fs::Gid::from_raw(st.stx_gid)),
                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            );
        }
        if !symlink {
            let mode = rustix::fs::Mode::from_raw_mode(u32::from(st.stx_mode) & 0o7777);
            rustix::fs::chmod(d, mode).map_err(|e| io_err("chmod", d)(e.into()))?;
        }
        for (name, value) in xattrs(s).map_err(io_err("read xattrs of", s))? {
            if is_bookkeeping_xattr(&name) {
                continue;
            }
            let name = std::ffi::OsStr::from_bytes_compat(&name);
            // trusted.* and security.* may be refused as non-root; the
            // sidecar carries what the unpacker could not set either.
            let _ = rustix::fs::lsetxattr(d, name, &value, rustix::fs::XattrFlags::empty());
        }
        let ts = |sec: i64, nsec: u32| rustix::fs::Timespec {
            tv_sec: sec,
            tv_nsec: nsec.into(),
        };
        let times = rustix::fs::Timestamps {
            last_access: ts(st.stx_atime.tv_sec, st.stx_atime.tv_nsec),
            last_modification: ts(st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec),
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            d,
            &times,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_err("set times of", d)(e.into()))?;
        Ok(())
    }
}

trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}
impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

fn mkdir(d: &Path) -> Result<(), SnapshotError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(d)
        .map_err(io_err("create directory", d))
}

/// Removes a file or a whole directory (never following symlinks).
fn remove(d: &Path) -> Result<(), SnapshotError> {
    let st = fs::symlink_metadata(d).map_err(io_err("stat", d))?;
    if st.is_dir() {
        // A copied read-only directory must be writable to be emptied.
        make_writable(d)?;
        fs::remove_dir_all(d).map_err(io_err("remove", d))
    } else {
        fs::remove_file(d).map_err(io_err("remove", d))
    }
}

pub(super) fn make_writable(d: &Path) -> Result<(), SnapshotError> {
    let st = fs::symlink_metadata(d).map_err(io_err("stat", d))?;
    if !st.is_dir() {
        return Ok(());
    }
    let mode = rustix::fs::Mode::from_raw_mode(st.mode() & 0o7777 | 0o700);
    rustix::fs::chmod(d, mode).map_err(|e| io_err("chmod", d)(e.into()))?;
    for e in fs::read_dir(d).map_err(io_err("read directory", d))? {
        let e = e.map_err(io_err("read directory", d))?;
        make_writable(&e.path())?;
    }
    Ok(())
}

/// Copies file data: a reflink when the filesystem shares extents, else a
/// plain copy.
fn copy_file(s: &Path, d: &Path) -> Result<(), SnapshotError> {
    let src = File::open(s).map_err(io_err("open", s))?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(d)
        .map_err(io_err("create", d))?;
    // One failed FICLONE says the filesystem cannot reflink: stop trying.
    static NO_REFLINK: AtomicBool = AtomicBool::new(false);
    if !NO_REFLINK.load(Ordering::Relaxed) {
        match rustix::fs::ioctl_ficlone(&dst, &src) {
            Ok(()) => return Ok(()),
            Err(
                rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::XDEV | rustix::io::Errno::INVAL,
            ) => NO_REFLINK.store(true, Ordering::Relaxed),
            Err(_) => {}
        }
    }
    let mut src = src;
    io::copy(&mut src, &mut dst).map_err(io_err("copy to", d))?;
    Ok(())
}

/// The stat of one path of the tree, as recorded before the step.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    mode: u16,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, u32),
    ctime: (i64, u32),
    ino: u64,
    nlink: u32,
    btime: Option<(i64, u32)>,
    /// sha256 of a directory's content xattrs (non-directories: ctime
    /// covers xattr changes).
    xattrs: Option<[u8; 32]>,
}

impl Meta {
    fn is_dir(&self) -> bool {
        FileType::from_raw_mode(u32::from(self.mode)) == FileType::Directory
    }

    fn kind(&self) -> FileType {
        FileType::from_raw_mode(u32::from(self.mode))
    }

    /// Same inode (a directory removed and made again has a new one; the
    /// birth time tells a reused inode number apart).
    fn same_object(&self, o: &Meta) -> bool {
        self.ino == o.ino && self.btime == o.btime && self.kind() == o.kind()
    }
}

/// Path (relative, `/`-separated) → stat, of every entry of the tree.
pub type Index = BTreeMap<String, Meta>;

/// Rewrites the owners of `index` (see `Snapshot::map_owners`).
pub fn map_owners(index: &mut Index, uid: impl Fn(u32) -> u32, gid: impl Fn(u32) -> u32) {
    for m in index.values_mut() {
        m.uid = uid(m.uid);
        m.gid = gid(m.gid);
    }
}

fn meta(path: &Path, st: &Statx) -> Result<Meta, SnapshotError> {
    let xattrs = if is_dir(st) {
        let mut h = Sha256::new();
        for (n, v) in xattrs(path).map_err(io_err("read xattrs of", path))? {
            if is_bookkeeping_xattr(&n) {
                continue;
            }
            h.update((n.len() as u64).to_le_bytes());
            h.update(&n);
            h.update((v.len() as u64).to_le_bytes());
            h.update(&v);
        }
        Some(h.finalize().into())
    } else {
        None
    };
    Ok(Meta {
        mode: st.stx_mode,
        uid: st.stx_uid,
        gid: st.stx_gid,
        size: st.stx_size,
        mtime: (st.stx_mtime.tv_sec, st.stx_mtime.tv_nsec),
        ctime: (st.stx_ctime.tv_sec, st.stx_ctime.tv_nsec),
        ino: st.stx_ino,
        nlink: st.stx_nlink,
        btime: btime(st),
        xattrs,
    })
}

/// Stats every entry under `tree`.
fn index(tree: &Path) -> Result<Index, SnapshotError> {
    let mut out = Index::new();
    index_dir(tree, "", &mut out)?;
    Ok(out)
}

fn index_dir(dir: &Path, rel: &str, out: &mut Index) -> Result<(), SnapshotError> {
    for name in sorted_names(dir).map_err(io_err("read directory", dir))? {
        let path = dir.join(&name);
        let child =
            join_rel(rel, &name).ok_or_else(|| SnapshotError::NotUtf8 { path: path.clone() })?;
        let st = lstatx(&path).map_err(io_err("stat", &path))?;
        out.insert(child.clone(), meta(&path, &st)?);
        if is_dir(&st) {
            index_dir(&path, &child, out)?;
        }
    }
    Ok(())
}

/// Compares the tree now with `before`.
pub fn changes(tree: &Path, before: &Index) -> Result<Vec<Change>, SnapshotError> {
    let after = index(tree)?;
    let mut out = Vec::new();
    // Directories whose earlier content is gone as a whole (replaced,
    // removed and made again, or removed): nothing below them is a Delete.
    let mut replaced: HashSet<&str> = HashSet::new();
    // Directories under which everything is new.
    let mut fresh: HashSet<&str> = HashSet::new();
    for (path, now) in &after {
        let under_fresh = ancestors(path).any(|a| fresh.contains(a));
        let kind = match before.get(path) {
            _ if under_fresh => {
                if now.is_dir() {
                    fresh.insert(path);
                }
                Some(ChangeKind::Upsert)
            }
            None => {
                if now.is_dir() {
                    fresh.insert(path);
                }
                Some(ChangeKind::Upsert)
            }
            Some(was) if now.is_dir() => {
                if !was.same_object(now) {
                    // A file replaced by a directory, or a directory
                    // removed and made again: overlayfs marks it opaque.
                    fresh.insert(path);
                    replaced.insert(path);
                    Some(ChangeKind::OpaqueDir)
                } else if was.mode != now.mode
                    || was.uid != now.uid
                    || was.gid != now.gid
                    || was.xattrs != now.xattrs
                {
                    Some(ChangeKind::Upsert)
                } else {
                    None
                }
            }
            Some(was) => {
                if was.is_dir() {
                    replaced.insert(path);
                }
                file_changed(was, now).then_some(ChangeKind::Upsert)
            }
        };
        if let Some(kind) = kind {
            out.push(Change {
                path: path.clone(),
                kind,
            });
        }
    }
    for path in before.keys() {
        if after.contains_key(path) {
            continue;
        }
        if ancestors(path).any(|a| replaced.contains(a) || !after.contains_key(a)) {
            continue;
        }
        out.push(Change {
            path: path.clone(),
            kind: ChangeKind::Delete,
        });
    }
    Ok(out)
}

/// Whether a non-directory changed. A link count that went down (another
/// name of the inode was removed) also moves the ctime, but overlayfs
/// leaves such a file in the lower: then only the rest is compared. A link
/// count that went up is a change (overlayfs copies the file up to link it).
fn file_changed(was: &Meta, now: &Meta) -> bool {
    if now.nlink < was.nlink {
        let (mut a, mut b) = (was.clone(), now.clone());
        a.ctime = (0, 0);
        b.ctime = (0, 0);
        a.nlink = 0;
        b.nlink = 0;
        return a != b;
    }
    was != now
}

/// The proper ancestors of a relative path: `a/b/c` → `a/b`, `a`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = path;
    std::iter::from_fn(move || {
        let i = rest.rfind('/')?;
        rest = &rest[..i];
        Some(rest)
    })
}

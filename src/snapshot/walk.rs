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
//! For lowers from the store the merged tree is not copied per step: it is
//! kept per chain id and reverted after each step (`walk_cache`), so a step
//! costs two stat walks and work proportional to its change; a private
//! copy in `WORK/rootfs` remains for other lowers and for a second
//! concurrent step over the same base.
//!
//! It then records an [`Index`]: path → stat (type, size, mtime, ctime, mode,
//! owner, inode, link count, birth time; xattr hash for directories).
//! `changes` stats the tree again and compares, never reading file
//! contents; ctime catches writes and xattr changes of non-directories even
//! when the mtime is put back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{symlink, DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use rustix::fs::{FileType, OFlags, Statx, StatxFlags};
use sha2::{Digest, Sha256};

use super::error::{io_err, SnapshotError};
use super::fsutil::{
    btime, file_type, fxattrs, is_bookkeeping_xattr, is_dir, is_whiteout, lstatx, lstatx_opt,
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
        let root = crate::sys::fs::effective_ids().0 == 0;
        if let Some(cache) = super::walk_cache::Cache::locate(lowers) {
            if let Some((lease, before)) = cache.acquire(lowers, root)? {
                let tree = lease.tree().to_path_buf();
                return Ok(walk_snapshot(tree, before, Some(lease)));
            }
            tracing::debug!("walk snapshotter: the cached tree is in use; copying a private one");
        }
        let work = std::path::absolute(work).map_err(io_err("resolve", work))?;
        let tree = work.join("rootfs");
        fs::create_dir(&tree).map_err(io_err("create directory", &tree))?;
        let mut copier = Copier::new(root);
        for lower in lowers.iter().rev() {
            copier.layer(lower, &tree)?;
        }
        let before = index(&tree)?;
        Ok(walk_snapshot(tree, before, None))
    }
}

/// A walk snapshot of `tree` (the cached one when `lease` holds it).
fn walk_snapshot(
    tree: PathBuf,
    before: Index,
    lease: Option<super::walk_cache::Lease>,
) -> Snapshot {
    Snapshot {
        kind: SnapshotterKind::Walk,
        rootfs: RootFs::Dir(tree.clone()),
        state: State::Walk(WalkState {
            tree,
            before,
            after: Mutex::new(None),
            lease,
        }),
    }
}

/// A walk snapshot: the tree the step runs in, its index from before, and
/// (for a cached tree) the lease that gives it back, reverted, on drop.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct WalkState {
    pub(super) tree: PathBuf,
    pub(super) before: Index,
    /// The index `changes` took, kept for the revert.
    #[serde(skip)]
    after: Mutex<Option<Index>>,
    /// Not sent to another process: only the owner gives the tree back.
    #[serde(skip)]
    lease: Option<super::walk_cache::Lease>,
}

impl WalkState {
    /// What changed since `prepare` (see [`diff`]).
    pub(super) fn changes(&self) -> Result<Vec<Change>, SnapshotError> {
        let after = index(&self.tree)?;
        let out = diff(&self.before, &after);
        if self.lease.is_some() {
            if let Ok(mut slot) = self.after.lock() {
                *slot = Some(after);
            }
        }
        Ok(out)
    }
}

impl Drop for WalkState {
    /// Gives a cached tree back: reverts what the step changed (cost
    /// proportional to the change) or, failing that, discards the tree so
    /// that no later step trusts it. Runs after the layer was written (the
    /// snapshot outlives the writer's reads of the tree).
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let after = match self.after.lock().ok().and_then(|mut a| a.take()) {
            Some(a) => Ok(a),
            None => index(&self.tree),
        };
        if let Err(e) = after.and_then(|after| lease.give_back(&self.before, after)) {
            tracing::warn!(tree = %self.tree.display(), error = %e, "walk snapshotter: could not revert the cached tree; discarding it");
            lease.discard();
        }
    }
}

/// Copies the tree `src` into the existing directory `dst` (contents,
/// modes, times, xattrs, hardlinks; owners only as root), as `cp -a` would:
/// for `--output type=local` and read-write bind mounts, where kiln's own
/// image has no `cp`. Whiteout-shaped entries (0/0 character devices) are
/// left out, as in any layer the walk snapshotter applies.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), SnapshotError> {
    Copier::new(crate::sys::fs::effective_ids().0 == 0).layer(src, dst)
}

/// Applies lower layers onto the tree.
pub(super) struct Copier {
    /// Lower inode (dev, ino) → where its first copy went, so hardlinks
    /// stay hardlinks (among the copies).
    links: HashMap<(u64, u64), PathBuf>,
    /// Whether owners can be set.
    root: bool,
    /// Whether a copied non-directory had other names in its lower (a
    /// partial copy cannot keep such links with the rest of the tree).
    pub(super) saw_hardlink: bool,
}

impl Copier {
    pub(super) fn new(root: bool) -> Copier {
        Copier {
            links: HashMap::new(),
            root,
            saw_hardlink: false,
        }
    }

    pub(super) fn layer(&mut self, layer: &Path, tree: &Path) -> Result<(), SnapshotError> {
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
            if is_whiteout(&s, &st).map_err(io_err("read xattrs of", &s))? {
                remove_if_exists(&d)?;
                continue;
            }
            self.entry(&s, &d, &st, false)?;
        }
        Ok(())
    }

    /// Applies the layer entry `s` (not a whiteout) at `d`. `opaque`: an
    /// ancestor in the layer is opaque, so whatever `d` held goes first.
    fn entry(&mut self, s: &Path, d: &Path, st: &Statx, opaque: bool) -> Result<(), SnapshotError> {
        let existing = lstatx_opt(d).map_err(io_err("stat", d))?;
        if is_dir(st) {
            let opaque = opaque || overlay_opaque(s).map_err(io_err("read xattrs of", s))?;
            match existing {
                Some(e) if is_dir(&e) && !opaque => {
                    // A lower layer's read-only directory must take
                    // this layer's entries (its mode is set again after).
                    if u32::from(e.stx_mode) & 0o300 != 0o300 && !self.root {
                        let mode = u32::from(e.stx_mode) & 0o7777 | 0o700;
                        rustix::fs::chmod(d, rustix::fs::Mode::from_raw_mode(mode))
                            .map_err(|err| io_err("chmod", d)(err.into()))?;
                    }
                }
                Some(_) => {
                    remove(d)?;
                    mkdir(d)?;
                }
                None => mkdir(d)?,
            }
            self.dir(s, d)?;
            return self.attrs(s, d, st);
        }
        if existing.is_some() {
            remove(d)?;
        }
        self.leaf(s, d, st)
    }

    /// Makes `dst` what the merged `lowers` (top-most first) show at `rel`
    /// (a whole subtree for a directory; nothing when they show nothing),
    /// applying the layers bottom-up as `layer` does, but only at `rel`.
    pub(super) fn restore(
        &mut self,
        lowers: &[PathBuf],
        rel: &str,
        dst: &Path,
    ) -> Result<(), SnapshotError> {
        let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
        for lower in lowers.iter().rev() {
            let mut p = lower.clone();
            let mut opaque = false;
            // None: the layer leaves `rel` alone; Some(None): it removes
            // it; Some(Some(st)): it has an entry there.
            let mut effect = None;
            for (i, part) in parts.iter().enumerate() {
                p.push(part);
                let Some(st) = lstatx_opt(&p).map_err(io_err("stat", &p))? else {
                    if opaque {
                        effect = Some(None);
                    }
                    break;
                };
                if is_whiteout(&p, &st).map_err(io_err("read xattrs of", &p))? {
                    effect = Some(None);
                    break;
                }
                if i + 1 == parts.len() {
                    effect = Some(Some(st));
                    break;
                }
                if !is_dir(&st) {
                    effect = Some(None);
                    break;
                }
                if overlay_opaque(&p).map_err(io_err("read xattrs of", &p))? {
                    opaque = true;
                }
            }
            match effect {
                None => {}
                Some(None) => remove_if_exists(dst)?,
                Some(Some(st)) => self.entry(&p, dst, &st, opaque)?,
            }
        }
        Ok(())
    }

    /// Owner, mode, xattrs and times of the tree directory `d` as the
    /// merged lowers have them at `rel` (nothing when they do not).
    pub(super) fn reset_attrs(
        &mut self,
        lowers: &[PathBuf],
        rel: &str,
        d: &Path,
    ) -> Result<(), SnapshotError> {
        if let Some((s, st)) = super::lower::lookup(lowers, rel).map_err(io_err("look up", d))? {
            self.attrs(&s, d, &st)?;
        }
        Ok(())
    }

    fn leaf(&mut self, s: &Path, d: &Path, st: &Statx) -> Result<(), SnapshotError> {
        let key = (
            u64::from(st.stx_dev_major) << 32 | u64::from(st.stx_dev_minor),
            st.stx_ino,
        );
        if st.stx_nlink > 1 && file_type(st) != FileType::Directory {
            self.saw_hardlink = true;
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
    pub(super) fn attrs(&self, s: &Path, d: &Path, st: &Statx) -> Result<(), SnapshotError> {
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

/// [`remove`] when `d` exists.
pub(super) fn remove_if_exists(d: &Path) -> Result<(), SnapshotError> {
    if lstatx_opt(d).map_err(io_err("stat", d))?.is_some() {
        remove(d)?;
    }
    Ok(())
}

/// Removes a file or a whole directory (never following symlinks).
pub(super) fn remove(d: &Path) -> Result<(), SnapshotError> {
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
    pub(super) mode: u16,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) size: u64,
    pub(super) mtime: (i64, u32),
    pub(super) ctime: (i64, u32),
    pub(super) ino: u64,
    pub(super) nlink: u32,
    pub(super) btime: Option<(i64, u32)>,
    /// sha256 of a directory's content xattrs (non-directories: ctime
    /// covers xattr changes).
    pub(super) xattrs: Option<[u8; 32]>,
}

impl Meta {
    pub(super) fn is_dir(&self) -> bool {
        FileType::from_raw_mode(u32::from(self.mode)) == FileType::Directory
    }

    fn kind(&self) -> FileType {
        FileType::from_raw_mode(u32::from(self.mode))
    }

    /// Same inode (a directory removed and made again has a new one; the
    /// birth time tells a reused inode number apart).
    pub(super) fn same_object(&self, o: &Meta) -> bool {
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

fn meta(st: &Statx, xattrs: Option<[u8; 32]>) -> Meta {
    Meta {
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
    }
}

/// sha256 of a directory's content xattrs (bookkeeping left out).
fn xattr_hash(dir: &OwnedFd, path: impl Fn() -> PathBuf) -> Result<[u8; 32], SnapshotError> {
    let mut h = Sha256::new();
    for (n, v) in fxattrs(dir).map_err(|e| io_err("read xattrs of", path())(e))? {
        if is_bookkeeping_xattr(&n) {
            continue;
        }
        h.update((n.len() as u64).to_le_bytes());
        h.update(&n);
        h.update((v.len() as u64).to_le_bytes());
        h.update(&v);
    }
    Ok(h.finalize().into())
}

fn open_dir<Fd: AsFd>(at: Fd, name: impl rustix::path::Arg) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        at,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
}

/// Stats every entry under `tree`. Works on directory descriptors
/// (`statx` and `openat` relative to the parent, no path resolution per
/// entry, no allocation per entry but its key) and on several threads: the
/// top levels are read here until there are enough directories to share,
/// then each thread takes whole subtrees from a common list. The entries
/// are sorted once at the end and the map is built in bulk from them.
pub(super) fn index(tree: &Path) -> Result<Index, SnapshotError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let mut out: Vec<(String, Meta)> = Vec::new();
    // Directories are named here and opened when read: holding one
    // descriptor per directory of a wide level would run into RLIMIT_NOFILE.
    let mut frontier = vec![(tree.to_path_buf(), String::new())];
    // Breadth-first until the work splits well (or the tree is small).
    for _ in 0..3 {
        if threads == 1 || frontier.len() >= threads * 8 {
            break;
        }
        let mut next = Vec::new();
        for (path, rel) in &frontier {
            let fd = open_dir(rustix::fs::CWD, path).map_err(|e| io_err("open", path)(e.into()))?;
            read_dir_fd(&fd, path, rel, &mut out, &mut |path, rel| {
                next.push((path, rel))
            })?;
        }
        frontier = next;
    }
    let taken = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<Vec<(String, Meta)>, SnapshotError>> = std::thread::scope(|scope| {
        let work = || {
            let mut mine = Vec::new();
            loop {
                let i = taken.fetch_add(1, Ordering::Relaxed);
                let Some((path, rel)) = frontier.get(i) else {
                    return Ok(mine);
                };
                let fd =
                    open_dir(rustix::fs::CWD, path).map_err(|e| io_err("open", path)(e.into()))?;
                index_fd(&fd, path, rel, &mut mine)?;
            }
        };
        let handles: Vec<_> = (1..threads.min(frontier.len().max(1)))
            .map(|_| scope.spawn(work))
            .collect();
        let mut results = vec![work()];
        for h in handles {
            results.push(h.join().unwrap_or_else(|_| {
                Err(SnapshotError::Io {
                    action: "walk",
                    path: tree.to_path_buf(),
                    source: io::Error::other("a walker thread panicked"),
                })
            }));
        }
        results
    });
    for r in results {
        out.extend(r?);
    }
    out.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out.into_iter().collect())
}

/// Puts `rel` (relative to `tree`) and everything under it into `out`;
/// nothing when it does not exist.
pub(super) fn index_path(tree: &Path, rel: &str, out: &mut Index) -> Result<(), SnapshotError> {
    let path = tree.join(rel);
    let Some(st) = lstatx_opt(&path).map_err(io_err("stat", &path))? else {
        return Ok(());
    };
    if !is_dir(&st) {
        out.insert(rel.to_owned(), meta(&st, None));
        return Ok(());
    }
    let fd = open_dir(rustix::fs::CWD, &path).map_err(|e| io_err("open", &path)(e.into()))?;
    let x = xattr_hash(&fd, || path.clone())?;
    out.insert(rel.to_owned(), meta(&st, Some(x)));
    let mut entries = Vec::new();
    index_fd(&fd, &path, rel, &mut entries)?;
    out.extend(entries);
    Ok(())
}

/// Puts `rel` alone (not what is under it) into `out`, or drops it when it
/// no longer exists.
pub(super) fn index_entry(tree: &Path, rel: &str, out: &mut Index) -> Result<(), SnapshotError> {
    let path = tree.join(rel);
    let Some(st) = lstatx_opt(&path).map_err(io_err("stat", &path))? else {
        out.remove(rel);
        return Ok(());
    };
    let x = if is_dir(&st) {
        let fd = open_dir(rustix::fs::CWD, &path).map_err(|e| io_err("open", &path)(e.into()))?;
        Some(xattr_hash(&fd, || path.clone())?)
    } else {
        None
    };
    out.insert(rel.to_owned(), meta(&st, x));
    Ok(())
}

/// Everything under the open directory `dir` (at `rel`), depth first.
fn index_fd(
    dir: &OwnedFd,
    path: &Path,
    rel: &str,
    out: &mut Vec<(String, Meta)>,
) -> Result<(), SnapshotError> {
    let mut subdirs = Vec::new();
    read_dir_fd(dir, path, rel, out, &mut |path, rel| {
        subdirs.push((path, rel))
    })?;
    for (path, rel) in subdirs {
        let name = path.file_name().unwrap_or_default();
        let fd = open_dir(dir, name).map_err(|e| io_err("open", &path)(e.into()))?;
        index_fd(&fd, &path, &rel, out)?;
    }
    Ok(())
}

/// The entries of the open directory `dir` (at `rel`) into `out`; each
/// subdirectory's path and key also to `subdir`.
fn read_dir_fd(
    dir: &OwnedFd,
    path: &Path,
    rel: &str,
    out: &mut Vec<(String, Meta)>,
    subdir: &mut dyn FnMut(PathBuf, String),
) -> Result<(), SnapshotError> {
    let entries =
        rustix::fs::Dir::read_from(dir).map_err(|e| io_err("read directory", path)(e.into()))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err("read directory", path)(e.into()))?;
        let name = entry.file_name();
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        let child_path = || path.join(std::ffi::OsStr::from_bytes_compat(bytes));
        let Ok(name_str) = name.to_str() else {
            return Err(SnapshotError::NotUtf8 { path: child_path() });
        };
        let child = if rel.is_empty() {
            name_str.to_owned()
        } else {
            let mut c = String::with_capacity(rel.len() + 1 + name_str.len());
            c.push_str(rel);
            c.push('/');
            c.push_str(name_str);
            c
        };
        let st = rustix::fs::statx(
            dir,
            name,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
            StatxFlags::BASIC_STATS | StatxFlags::BTIME,
        )
        .map_err(|e| io_err("stat", child_path())(e.into()))?;
        if is_dir(&st) {
            let fd = open_dir(dir, name).map_err(|e| io_err("open", child_path())(e.into()))?;
            let x = xattr_hash(&fd, child_path)?;
            drop(fd);
            out.push((child.clone(), meta(&st, Some(x))));
            subdir(child_path(), child);
        } else {
            out.push((child, meta(&st, None)));
        }
    }
    Ok(())
}

/// What changed from `before` to `after` (see the module notes).
pub(super) fn diff(before: &Index, after: &Index) -> Vec<Change> {
    let mut out = Vec::new();
    // Directories whose earlier content is gone as a whole (replaced,
    // removed and made again, or removed): nothing below them is a Delete.
    let mut replaced: HashSet<&str> = HashSet::new();
    // Directories under which everything is new.
    let mut fresh: HashSet<&str> = HashSet::new();
    // Paths only `before` has, found while merging the two sorted indexes
    // (a lookup per path would cost a tree search each on 50,000 paths).
    let mut gone: Vec<&str> = Vec::new();
    let mut old = before.iter().peekable();
    for (path, now) in after {
        let mut previous = None;
        while let Some((p, m)) = old.peek() {
            match p.as_bytes().cmp(path.as_bytes()) {
                std::cmp::Ordering::Less => gone.push(p),
                std::cmp::Ordering::Equal => previous = Some(*m),
                std::cmp::Ordering::Greater => break,
            }
            old.next();
            if previous.is_some() {
                break;
            }
        }
        let under_fresh = !fresh.is_empty() && ancestors(path).any(|a| fresh.contains(a));
        let kind = match previous {
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
    gone.extend(old.map(|(p, _)| p.as_str()));
    for path in gone {
        if ancestors(path).any(|a| replaced.contains(a) || !after.contains_key(a)) {
            continue;
        }
        out.push(Change {
            path: path.to_owned(),
            kind: ChangeKind::Delete,
        });
    }
    out
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
pub(super) fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = path;
    std::iter::from_fn(move || {
        let i = rest.rfind('/')?;
        rest = &rest[..i];
        Some(rest)
    })
}

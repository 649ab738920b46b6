//! Applying tar entries under a root, one at a time, through `sys::fs`.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use tar::EntryType;

use super::entry_path::{marker, Marker, RelPath};
use super::metadata::{Kind, Record};
use super::unpack::{Mode, OverlayXattrs, UnpackOptions, WhiteoutFormat};
use super::{LayerError, Metadata};
use crate::sys::fs as sfs;

/// Attributes of one entry, from its header and PAX records.
struct Attrs {
    uid: u64,
    gid: u64,
    mode: u32,
    mtime: (i64, i64),
    xattrs: Vec<(OsString, Vec<u8>)>,
}

/// A directory whose mode and times are set after the layer's last entry
/// (earlier, a read-only mode would block its children, and every child
/// created would bump its mtime).
struct DeferredDir {
    path: RelPath,
    mode: u32,
    mtime: (i64, i64),
}

pub(crate) struct Stats {
    pub entries: u64,
    pub whiteouts: Option<WhiteoutFormat>,
}

pub(crate) struct Unpacker<'a> {
    layer: String,
    mode: Mode,
    root: OwnedFd,
    meta: &'a mut Metadata,
    ids: (u32, u32),
    /// uid 0 (in whatever user namespace): chown, mknod and trusted.* xattrs
    /// are worth trying.
    privileged: bool,
    /// Paths this layer created: whiteouts and opaque markers only hide
    /// lower content (OCI image spec, "Whiteouts").
    created: HashSet<RelPath>,
    deferred: Vec<DeferredDir>,
    /// Owned directories from earlier layers that were not writable and got
    /// `u+wx` for this layer (unprivileged only): put back at the end.
    restore: Vec<DeferredDir>,
    /// The last parent directory used; layers are sorted, so most entries
    /// share it. Dropped whenever anything is removed or a symlink appears.
    cache: Option<(RelPath, OwnedFd)>,
    stats: Stats,
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

const ENOENT: i32 = 2;
const ENOTDIR: i32 = 20;
const EEXIST: i32 = 17;
const EPERM: i32 = 1;
const EACCES: i32 = 13;

impl<'a> Unpacker<'a> {
    pub(crate) fn new(
        root: &Path,
        opts: &UnpackOptions,
        meta: &'a mut Metadata,
    ) -> Result<Unpacker<'a>, LayerError> {
        let root_fd = sfs::open_root(root).map_err(|source| LayerError::Root {
            layer: opts.layer.clone(),
            root: root.to_path_buf(),
            source,
        })?;
        let ids = sfs::effective_ids();
        Ok(Unpacker {
            layer: opts.layer.clone(),
            mode: opts.mode,
            root: root_fd,
            meta,
            ids,
            privileged: ids.0 == 0,
            created: HashSet::new(),
            deferred: Vec::new(),
            restore: Vec::new(),
            cache: None,
            stats: Stats {
                entries: 0,
                whiteouts: None,
            },
        })
    }

    fn refuse(&self, entry: &str, reason: impl Into<String>) -> LayerError {
        LayerError::Unsafe {
            layer: self.layer.clone(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn io_err(&self, entry: &str, what: impl Into<String>, source: io::Error) -> LayerError {
        if sfs::is_escape(&source) {
            return self.refuse(
                entry,
                format!(
                    "{}: resolves outside the root or through a symlink ({source})",
                    what.into()
                ),
            );
        }
        LayerError::Entry {
            layer: self.layer.clone(),
            entry: entry.to_string(),
            what: what.into(),
            source,
        }
    }

    /// Applies one tar entry.
    pub(crate) fn apply<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), LayerError> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let raw_name = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw_name).into_owned();
        let path = RelPath::parse(&raw_name).map_err(|r| self.refuse(&shown, r))?;
        self.stats.entries += 1;
        let Some((parent, name)) = path.split_last() else {
            // `./`: the root's own attributes.
            if kind == EntryType::Directory {
                let attrs = self.attrs(entry, &shown)?;
                self.deferred.push(DeferredDir {
                    path,
                    mode: attrs.mode,
                    mtime: attrs.mtime,
                });
            }
            return Ok(());
        };
        let name = name.to_os_string();
        match marker(&name).map_err(|r| self.refuse(&shown, r))? {
            Marker::AufsMeta => Ok(()),
            Marker::Opaque => self.opaque(&parent, &shown),
            Marker::Whiteout(target) => self.whiteout(&parent, target, &shown),
            Marker::None => self.create(entry, kind, &path, &parent, &name, &shown),
        }
    }

    /// Reads uid/gid/mode/mtime/xattrs, PAX records overriding the header.
    fn attrs<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<Attrs, LayerError> {
        let h = entry.header();
        let bad = |what: &str, e: io::Error| self.io_err(shown, format!("read header {what}"), e);
        let mut a = Attrs {
            uid: h.uid().map_err(|e| bad("uid", e))?,
            gid: h.gid().map_err(|e| bad("gid", e))?,
            mode: h.mode().map_err(|e| bad("mode", e))? & 0o7777,
            mtime: (
                i64::try_from(h.mtime().map_err(|e| bad("mtime", e))?).unwrap_or(i64::MAX),
                0,
            ),
            xattrs: Vec::new(),
        };
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let Ok(key) = ext.key() else { continue };
                let value = ext.value_bytes();
                let text = std::str::from_utf8(value).unwrap_or("");
                if let Some(x) = key.strip_prefix("SCHILY.xattr.") {
                    a.xattrs.push((OsString::from(x), value.to_vec()));
                } else if key == "uid" {
                    a.uid = text.parse().unwrap_or(a.uid);
                } else if key == "gid" {
                    a.gid = text.parse().unwrap_or(a.gid);
                } else if key == "mtime" {
                    a.mtime = parse_pax_time(text).unwrap_or(a.mtime);
                }
            }
        }
        Ok(a)
    }

    /// Opens (creating missing directories, mode 0755, when `create`) the
    /// directory `dir` under the root. `Ok(None)`: absent and not created.
    fn dir(
        &mut self,
        dir: &RelPath,
        create: bool,
        shown: &str,
    ) -> Result<Option<OwnedFd>, LayerError> {
        if let Some((p, fd)) = &self.cache {
            if p == dir {
                return fd
                    .try_clone()
                    .map(Some)
                    .map_err(|e| self.io_err(shown, "dup", e));
            }
        }
        let fd = match sfs::open_dir_beneath(self.root.as_fd(), &dir.to_path()) {
            Ok(fd) => fd,
            Err(e) if errno(&e) == ENOENT && create => self.make_dirs(dir, shown)?,
            Err(e) if matches!(errno(&e), ENOENT | ENOTDIR) => return Ok(None),
            Err(e) => {
                return Err(self.io_err(shown, format!("open directory {:?}", dir.display()), e))
            }
        };
        if !self.privileged {
            self.make_writable(fd.as_fd(), dir, shown)?;
        }
        let dup = fd.try_clone().map_err(|e| self.io_err(shown, "dup", e))?;
        self.cache = Some((dir.clone(), fd));
        Ok(Some(dup))
    }

    /// Without CAP_DAC_OVERRIDE, a directory that an earlier layer made
    /// read-only (0555 is common) cannot take new entries: give its owner
    /// write and search access for the rest of this layer.
    fn make_writable(
        &mut self,
        fd: BorrowedFd<'_>,
        dir: &RelPath,
        shown: &str,
    ) -> Result<(), LayerError> {
        let st = sfs::fstat(fd).map_err(|e| self.io_err(shown, "stat directory", e))?;
        if st.st_mode & 0o300 == 0o300 || st.st_uid != self.ids.0 {
            return Ok(());
        }
        let mode = st.st_mode & 0o7777;
        sfs::chmod_fd(fd, mode | 0o300)
            .map_err(|e| self.io_err(shown, "make directory writable", e))?;
        self.restore.push(DeferredDir {
            path: dir.clone(),
            mode,
            mtime: (st.st_mtime, st.st_mtime_nsec as i64),
        });
        Ok(())
    }

    /// [`Self::dir`], creating it; absent afterwards is an error.
    fn parent_dir(&mut self, dir: &RelPath, shown: &str) -> Result<OwnedFd, LayerError> {
        match self.dir(dir, true, shown)? {
            Some(fd) => Ok(fd),
            None => Err(self.io_err(
                shown,
                "open parent directory",
                io::Error::from_raw_os_error(ENOENT),
            )),
        }
    }

    /// Creates the missing directories of `dir`, each looked up again from
    /// the root under `RESOLVE_BENEATH`.
    fn make_dirs(&mut self, dir: &RelPath, shown: &str) -> Result<OwnedFd, LayerError> {
        let mut cur = sfs::open_dir_beneath(self.root.as_fd(), Path::new(""))
            .map_err(|e| self.io_err(shown, "open root", e))?;
        let mut prefix = RelPath::parse(b"").map_err(|r| self.refuse(shown, r))?;
        let Some((_, _)) = dir.split_last() else {
            return Ok(cur);
        };
        for comp in dir.to_path().iter() {
            prefix = prefix.join(comp);
            let what = || format!("create directory {:?}", prefix.display());
            match sfs::open_dir_beneath(self.root.as_fd(), &prefix.to_path()) {
                Ok(fd) => {
                    if !self.privileged {
                        self.make_writable(fd.as_fd(), &prefix, shown)?;
                    }
                    cur = fd
                }
                Err(e) if errno(&e) == ENOENT => {
                    match sfs::mkdir_at(cur.as_fd(), comp, 0o700) {
                        Ok(()) => {
                            let fd = sfs::open_child_dir(cur.as_fd(), comp)
                                .map_err(|e| self.io_err(shown, what(), e))?;
                            // Implicit parents: 0755 like Docker, set
                            // explicitly so the umask does not matter.
                            sfs::chmod_fd(fd.as_fd(), 0o755)
                                .map_err(|e| self.io_err(shown, what(), e))?;
                            cur = fd;
                        }
                        Err(e) if errno(&e) == EEXIST => {
                            cur = sfs::open_dir_beneath(self.root.as_fd(), &prefix.to_path())
                                .map_err(|e| self.io_err(shown, what(), e))?;
                        }
                        Err(e) => return Err(self.io_err(shown, what(), e)),
                    }
                }
                Err(e) => return Err(self.io_err(shown, what(), e)),
            }
        }
        Ok(cur)
    }

    /// Removes `name` (recursively) from the directory `dir` and forgets its
    /// records.
    fn remove(&mut self, dir: &RelPath, name: &OsStr, shown: &str) -> Result<(), LayerError> {
        let path = dir.join(name);
        let Some(parent) = self.dir(dir, false, shown)? else {
            return Ok(());
        };
        let res = sfs::remove_at(parent.as_fd(), name);
        self.cache = None;
        res.map_err(|e| self.io_err(shown, format!("remove {:?}", path.display()), e))?;
        self.meta.remove_tree(&path.display());
        Ok(())
    }

    fn whiteout(&mut self, dir: &RelPath, target: &OsStr, shown: &str) -> Result<(), LayerError> {
        let path = dir.join(target);
        match self.mode {
            Mode::Flatten => {
                if self.created.contains(&path) {
                    return Ok(());
                }
                if self.dir(dir, false, shown)?.is_none() {
                    return Ok(());
                }
                self.remove(dir, target, shown)
            }
            Mode::OverlayLower(ns) => {
                let parent = self.parent_dir(dir, shown)?;
                if let Some(st) = sfs::lstat_at(parent.as_fd(), target)
                    .map_err(|e| self.io_err(shown, "stat", e))?
                {
                    if self.created.contains(&path) {
                        // Same layer: a directory it made must also hide the
                        // lower one; anything else already does.
                        if sfs::is_dir(&st) {
                            let fd = sfs::open_child_dir(parent.as_fd(), target)
                                .map_err(|e| self.io_err(shown, "open directory", e))?;
                            self.set_opaque(fd.as_fd(), ns, shown)?;
                        }
                        return Ok(());
                    }
                    self.remove(dir, target, shown)?;
                }
                let parent = self.parent_dir(dir, shown)?;
                let parent = parent.as_fd();
                let format = match sfs::mknod_at(parent, target, sfs::Special::Char, 0, 0) {
                    Ok(()) => WhiteoutFormat::CharDevice,
                    Err(e) if matches!(errno(&e), EPERM | EACCES) => {
                        tracing::debug!(layer = %self.layer, error = %e, "mknod 0/0 refused; using an xattr whiteout");
                        xattr_whiteout(parent, target, ns)
                            .map_err(|e| self.io_err(shown, "create xattr whiteout", e))?;
                        WhiteoutFormat::Xattr
                    }
                    Err(e) => return Err(self.io_err(shown, "create whiteout device 0/0", e)),
                };
                self.stats.whiteouts.get_or_insert(format);
                Ok(())
            }
        }
    }

    fn set_opaque(
        &self,
        fd: BorrowedFd<'_>,
        ns: OverlayXattrs,
        shown: &str,
    ) -> Result<(), LayerError> {
        let attr = format!("{}opaque", ns.prefix());
        sfs::set_xattr_fd(fd, OsStr::new(&attr), b"y")
            .map_err(|e| self.io_err(shown, format!("set {attr}"), e))
    }

    fn opaque(&mut self, dir: &RelPath, shown: &str) -> Result<(), LayerError> {
        let fd = self.parent_dir(dir, shown)?;
        match self.mode {
            Mode::OverlayLower(ns) => self.set_opaque(fd.as_fd(), ns, shown),
            Mode::Flatten => {
                let st = sfs::fstat(fd.as_fd()).map_err(|e| self.io_err(shown, "stat", e))?;
                let names = sfs::list_dir(fd.as_fd())
                    .map_err(|e| self.io_err(shown, "list directory", e))?;
                for name in names {
                    if !self.created.contains(&dir.join(&name)) {
                        self.remove(dir, &name, shown)?;
                    }
                }
                // `remove` may have made an unwritable directory writable.
                sfs::chmod_fd(fd.as_fd(), st.st_mode & 0o7777)
                    .map_err(|e| self.io_err(shown, "chmod", e))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: EntryType,
        path: &RelPath,
        dir: &RelPath,
        name: &OsStr,
        shown: &str,
    ) -> Result<(), LayerError> {
        let attrs = self.attrs(entry, shown)?;
        let link_target = match kind {
            EntryType::Link | EntryType::Symlink => Some(
                entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .ok_or_else(|| self.refuse(shown, "link without a target"))?,
            ),
            _ => None,
        };
        // Hardlink targets are checked before anything is touched.
        let hard_target = match (kind, &link_target) {
            (EntryType::Link, Some(t)) => {
                let t = RelPath::parse(t)
                    .map_err(|r| self.refuse(shown, format!("hardlink target: {r}")))?;
                if t == *path {
                    return Ok(());
                }
                Some(t)
            }
            _ => None,
        };
        let parent = self.parent_dir(dir, shown)?;
        let existing =
            sfs::lstat_at(parent.as_fd(), name).map_err(|e| self.io_err(shown, "stat", e))?;
        let mut was_whiteout = false;
        // Merge into an existing directory; replace anything else.
        let merge_dir = kind == EntryType::Directory && existing.as_ref().is_some_and(sfs::is_dir);
        if let Some(st) = existing.filter(|_| !merge_dir) {
            was_whiteout = sfs::is_whiteout_device(&st);
            self.remove(dir, name, shown)?;
        }
        self.meta.remove_tree(&path.display());
        self.created.insert(path.clone());
        drop(parent);
        let parent = self.parent_dir(dir, shown)?;
        let parent = parent.as_fd();
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let mut f = sfs::create_file(parent, name)
                    .map_err(|e| self.io_err(shown, "create file", e))?;
                io::copy(entry, &mut f).map_err(|e| self.io_err(shown, "write file", e))?;
                self.finish_file(&f, path, &attrs, shown)
            }
            EntryType::Directory => {
                if !merge_dir {
                    sfs::mkdir_at(parent, name, 0o700)
                        .map_err(|e| self.io_err(shown, "create directory", e))?;
                }
                let fd = sfs::open_child_dir(parent, name)
                    .map_err(|e| self.io_err(shown, "open directory", e))?;
                if let (true, Mode::OverlayLower(ns)) = (was_whiteout, self.mode) {
                    // A directory recreated over a deleted one must not merge
                    // with the lower copy.
                    self.set_opaque(fd.as_fd(), ns, shown)?;
                }
                let mut rec = self.record(path, Kind::Dir, &attrs);
                let mut needed = self.set_xattrs_fd(fd.as_fd(), &attrs, &mut rec);
                needed |= self.set_owner(|u, g| sfs::chown_fd(fd.as_fd(), u, g), &attrs);
                if needed {
                    self.meta.insert(rec);
                }
                self.deferred.push(DeferredDir {
                    path: path.clone(),
                    mode: attrs.mode,
                    mtime: attrs.mtime,
                });
                Ok(())
            }
            EntryType::Symlink => {
                let target = link_target.unwrap_or_default();
                sfs::symlink_at(OsStr::from_bytes(&target), parent, name)
                    .map_err(|e| self.io_err(shown, "create symlink", e))?;
                self.cache = None;
                self.finish_at(parent, name, path, Kind::Symlink, &attrs, None, shown)
            }
            EntryType::Link => {
                let Some(t) = hard_target else { return Ok(()) };
                self.hardlink(parent, name, path, &t, shown)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (special, kind) = match kind {
                    EntryType::Char => (sfs::Special::Char, Kind::Char),
                    EntryType::Block => (sfs::Special::Block, Kind::Block),
                    _ => (sfs::Special::Fifo, Kind::Fifo),
                };
                let h = entry.header();
                let major = h.device_major().ok().flatten().unwrap_or(0);
                let minor = h.device_minor().ok().flatten().unwrap_or(0);
                let rdev = (special != sfs::Special::Fifo).then_some((major, minor));
                match sfs::mknod_at(parent, name, special, major, minor) {
                    Ok(()) => self.finish_at(parent, name, path, kind, &attrs, rdev, shown),
                    Err(e)
                        if special != sfs::Special::Fifo && matches!(errno(&e), EPERM | EACCES) =>
                    {
                        // Not created: kept as metadata only.
                        let mut rec = self.record(path, kind, &attrs);
                        rec.rdev = rdev;
                        for (k, v) in &attrs.xattrs {
                            rec.add_xattr(&k.to_string_lossy(), v);
                        }
                        self.meta.insert(rec);
                        Ok(())
                    }
                    Err(e) => Err(self.io_err(shown, "create device", e)),
                }
            }
            other => {
                tracing::warn!(layer = %self.layer, entry = shown, kind = ?other, "skipping tar entry of unsupported type");
                Ok(())
            }
        }
    }

    /// Links `parent/name` to the existing non-directory `target`, found
    /// under the root without following any symlink.
    fn hardlink(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        path: &RelPath,
        target: &RelPath,
        shown: &str,
    ) -> Result<(), LayerError> {
        let Some((tdir, tname)) = target.split_last() else {
            return Err(self.refuse(shown, "hardlink to the root directory"));
        };
        let tparent =
            sfs::open_dir_no_symlinks(self.root.as_fd(), &tdir.to_path()).map_err(|e| {
                if sfs::is_escape(&e) {
                    self.refuse(
                        shown,
                        format!(
                            "hardlink target {:?} is reached through a symlink",
                            target.display()
                        ),
                    )
                } else {
                    self.io_err(
                        shown,
                        format!("open hardlink target {:?}", target.display()),
                        e,
                    )
                }
            })?;
        match sfs::lstat_at(tparent.as_fd(), tname) {
            Ok(Some(st)) if sfs::is_dir(&st) => {
                return Err(self.refuse(shown, "hardlink to a directory"));
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(self.io_err(
                    shown,
                    format!(
                        "hardlink target {:?} (in this layer's tree)",
                        target.display()
                    ),
                    io::Error::from_raw_os_error(ENOENT),
                ))
            }
            Err(e) => return Err(self.io_err(shown, "stat hardlink target", e)),
        }
        sfs::hardlink_at(tparent.as_fd(), tname, parent, name)
            .map_err(|e| self.io_err(shown, format!("link to {:?}", target.display()), e))?;
        // The name shares the target's inode and so its metadata record.
        if let Some(rec) = self.meta.get(&target.display()).cloned() {
            self.meta.insert(Record {
                path: path.display(),
                ..rec
            });
        }
        Ok(())
    }

    fn record(&self, path: &RelPath, kind: Kind, a: &Attrs) -> Record {
        Record {
            path: path.display(),
            kind,
            uid: a.uid,
            gid: a.gid,
            mode: a.mode,
            rdev: None,
            xattrs: Default::default(),
        }
    }

    /// Sets the owner when this process may; returns whether a record is
    /// needed because it could not.
    fn set_owner(&self, chown: impl FnOnce(u32, u32) -> io::Result<()>, a: &Attrs) -> bool {
        let (Ok(uid), Ok(gid)) = (u32::try_from(a.uid), u32::try_from(a.gid)) else {
            return true;
        };
        if !self.privileged {
            return (uid, gid) != self.ids;
        }
        match chown(uid, gid) {
            Ok(()) => false,
            Err(e) => {
                tracing::debug!(layer = %self.layer, uid, gid, error = %e, "chown refused; kept as metadata");
                true
            }
        }
    }

    /// Sets xattrs; the ones that fail go into `rec`. Returns whether any failed.
    fn set_xattrs_fd(&self, fd: BorrowedFd<'_>, a: &Attrs, rec: &mut Record) -> bool {
        self.set_xattrs(|k, v| sfs::set_xattr_fd(fd, k, v), a, rec)
    }

    fn set_xattrs(
        &self,
        mut set: impl FnMut(&OsStr, &[u8]) -> io::Result<()>,
        a: &Attrs,
        rec: &mut Record,
    ) -> bool {
        let mut failed = false;
        for (k, v) in &a.xattrs {
            let key = k.to_string_lossy();
            if key.starts_with("trusted.overlay.") || key.starts_with("user.overlay.") {
                tracing::warn!(layer = %self.layer, path = %rec.path, xattr = %key, "dropping overlayfs xattr carried by the layer");
                continue;
            }
            if let Err(e) = set(k, v) {
                tracing::debug!(layer = %self.layer, path = %rec.path, xattr = %key, error = %e, "xattr not set; kept as metadata");
                rec.add_xattr(&key, v);
                failed = true;
            }
        }
        failed
    }

    /// xattrs, owner, mode (after chown, which clears setuid), times.
    fn finish_file(
        &mut self,
        f: &File,
        path: &RelPath,
        a: &Attrs,
        shown: &str,
    ) -> Result<(), LayerError> {
        let fd = f.as_fd();
        let mut rec = self.record(path, Kind::File, a);
        let mut needed = self.set_xattrs_fd(fd, a, &mut rec);
        needed |= self.set_owner(|u, g| sfs::chown_fd(fd, u, g), a);
        sfs::chmod_fd(fd, a.mode).map_err(|e| self.io_err(shown, "chmod", e))?;
        let st = sfs::fstat(fd).map_err(|e| self.io_err(shown, "stat", e))?;
        needed |= st.st_mode & 0o7777 != a.mode;
        sfs::set_times_fd(fd, a.mtime.0, a.mtime.1)
            .map_err(|e| self.io_err(shown, "set times", e))?;
        if needed {
            self.meta.insert(rec);
        }
        Ok(())
    }

    /// Same for a leaf that is not opened (symlink, device, fifo).
    #[allow(clippy::too_many_arguments)]
    fn finish_at(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        path: &RelPath,
        kind: Kind,
        a: &Attrs,
        rdev: Option<(u32, u32)>,
        shown: &str,
    ) -> Result<(), LayerError> {
        let mut rec = self.record(path, kind, a);
        rec.rdev = rdev;
        let mut needed = self.set_xattrs(|k, v| sfs::set_xattr_at(parent, name, k, v), a, &mut rec);
        needed |= self.set_owner(|u, g| sfs::chown_at(parent, name, u, g), a);
        if kind != Kind::Symlink {
            sfs::chmod_special_at(parent, name, a.mode)
                .map_err(|e| self.io_err(shown, "chmod", e))?;
        }
        sfs::set_times_at(parent, name, a.mtime.0, a.mtime.1)
            .map_err(|e| self.io_err(shown, "set times", e))?;
        if needed {
            self.meta.insert(rec);
        }
        Ok(())
    }

    /// Sets deferred directory modes and times, deepest first. A directory
    /// that a later entry replaced (or that is now reached through a symlink)
    /// is skipped.
    pub(crate) fn finish(mut self) -> Result<Stats, LayerError> {
        self.cache = None;
        let mut restore = std::mem::take(&mut self.restore);
        restore.sort_by_key(|d| std::cmp::Reverse(d.path.depth()));
        let mut dirs = std::mem::take(&mut self.deferred);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.path.depth()));
        // Modes set by this layer's own entries win over restored ones.
        for d in restore.into_iter().chain(dirs) {
            let shown = d.path.display();
            let fd = match sfs::open_dir_no_symlinks(self.root.as_fd(), &d.path.to_path()) {
                Ok(fd) => fd,
                Err(e) => {
                    tracing::debug!(layer = %self.layer, dir = %shown, error = %e, "directory gone before its mode was set");
                    continue;
                }
            };
            sfs::chmod_fd(fd.as_fd(), d.mode).map_err(|e| self.io_err(&shown, "chmod", e))?;
            let st = sfs::fstat(fd.as_fd()).map_err(|e| self.io_err(&shown, "stat", e))?;
            if st.st_mode & 0o7777 != d.mode {
                if let Some(rec) = self.meta.get(&shown).cloned() {
                    self.meta.insert(Record {
                        mode: d.mode,
                        ..rec
                    });
                } else {
                    self.meta.insert(Record {
                        path: shown.clone(),
                        kind: Kind::Dir,
                        uid: u64::from(self.ids.0),
                        gid: u64::from(self.ids.1),
                        mode: d.mode,
                        rdev: None,
                        xattrs: Default::default(),
                    });
                }
            }
            sfs::set_times_fd(fd.as_fd(), d.mtime.0, d.mtime.1)
                .map_err(|e| self.io_err(&shown, "set times", e))?;
        }
        Ok(self.stats)
    }
}

/// The Linux ≥ 6.7 whiteout form: a zero-size file carrying
/// `<ns>.overlay.whiteout`, in a directory marked `<ns>.overlay.opaque=x`
/// ("has xattr whiteouts"), unless it is already fully opaque (`y`).
fn xattr_whiteout(parent: BorrowedFd<'_>, target: &OsStr, ns: OverlayXattrs) -> io::Result<()> {
    let f = sfs::create_file(parent, target)?;
    let whiteout = format!("{}whiteout", ns.prefix());
    sfs::set_xattr_fd(f.as_fd(), OsStr::new(&whiteout), b"y")?;
    let opaque = format!("{}opaque", ns.prefix());
    if sfs::get_xattr_fd(parent, OsStr::new(&opaque))?.as_deref() != Some(b"y".as_slice()) {
        sfs::set_xattr_fd(parent, OsStr::new(&opaque), b"x")?;
    }
    Ok(())
}

/// PAX times are decimal seconds with an optional fraction.
fn parse_pax_time(s: &str) -> Option<(i64, i64)> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for (i, c) in frac.chars().take(9).enumerate() {
        let d = i64::from(c.to_digit(10)?);
        nanos += d * 10_i64.pow(8 - i as u32);
    }
    Some((secs, if secs < 0 { -nanos } else { nanos }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The fallback whiteout form, read by a real overlay mount (needs root
    /// for `mount`, which CI has; skipped, and said so, without it).
    #[test]
    fn xattr_whiteouts_hide_lower_files() {
        let tmp = tempfile::tempdir().unwrap();
        let (lower, upper, merged) = (
            tmp.path().join("l0"),
            tmp.path().join("l1"),
            tmp.path().join("m"),
        );
        for d in [&lower, &upper, &merged] {
            std::fs::create_dir_all(d.join("d")).unwrap();
        }
        std::fs::write(lower.join("d/gone"), "x").unwrap();
        std::fs::write(lower.join("d/kept"), "x").unwrap();
        let ns = OverlayXattrs::for_current_user();
        let dir = sfs::open_root(&upper.join("d")).unwrap();
        xattr_whiteout(dir.as_fd(), OsStr::new("gone"), ns).unwrap();
        let opaque = format!("{}opaque", ns.prefix());
        assert_eq!(
            sfs::get_xattr_fd(dir.as_fd(), OsStr::new(&opaque))
                .unwrap()
                .as_deref(),
            Some(&b"x"[..])
        );
        if ns != OverlayXattrs::Trusted {
            eprintln!("not root: overlay mount check skipped");
            return;
        }
        let opts = format!("lowerdir={}:{}", upper.display(), lower.display());
        let ok = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&merged)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount overlay {opts}");
        let mut names: Vec<_> = std::fs::read_dir(merged.join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        std::process::Command::new("umount")
            .arg(&merged)
            .status()
            .unwrap();
        assert_eq!(names, ["kept"]);
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time("12"), Some((12, 0)));
        assert_eq!(parse_pax_time("12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time("x"), None);
    }
}

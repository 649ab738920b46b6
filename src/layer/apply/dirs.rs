//! Directories under the root: lookups (cached), creation of missing
//! parents, write access for unprivileged runs, removal.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::*;

impl Unpacker<'_> {
    /// Opens (creating missing directories, mode 0755, when `create`) the
    /// directory `dir` under the root. `Ok(None)`: absent and not created.
    pub(super) fn dir(
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
    pub(super) fn make_writable(
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
    pub(super) fn parent_dir(&mut self, dir: &RelPath, shown: &str) -> Result<OwnedFd, LayerError> {
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
    pub(super) fn make_dirs(&mut self, dir: &RelPath, shown: &str) -> Result<OwnedFd, LayerError> {
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
                    let lower = self.check_lower_parent(&prefix, shown)?;
                    match sfs::mkdir_at(cur.as_fd(), comp, 0o700) {
                        Ok(()) => {
                            let fd = sfs::open_child_dir(cur.as_fd(), comp)
                                .map_err(|e| self.io_err(shown, what(), e))?;
                            // Implicit parents: 0755 like Docker, set
                            // explicitly so the umask does not matter; over
                            // a lower directory, that directory's attributes
                            // (an upper directory's win in the merged view).
                            let mode = lower.map_or(0o755, |st| st.st_mode & 0o7777);
                            // u+rwx until the deferred pass sets the exact mode.
                            sfs::chmod_fd(fd.as_fd(), mode | 0o700)
                                .map_err(|e| self.io_err(shown, what(), e))?;
                            if let Some(st) = lower {
                                if self.privileged {
                                    let _ = sfs::chown_fd(fd.as_fd(), st.st_uid, st.st_gid);
                                }
                                self.deferred.push(DeferredDir {
                                    path: prefix.clone(),
                                    mode,
                                    mtime: (st.st_mtime, st.st_mtime_nsec as i64),
                                });
                            }
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
    pub(super) fn remove(
        &mut self,
        dir: &RelPath,
        name: &OsStr,
        shown: &str,
    ) -> Result<(), LayerError> {
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
}

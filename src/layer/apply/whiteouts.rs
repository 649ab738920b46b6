//! Whiteouts and opaque directories, in both modes.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use super::*;

impl Unpacker<'_> {
    pub(super) fn whiteout(
        &mut self,
        dir: &RelPath,
        target: &OsStr,
        shown: &str,
    ) -> Result<(), LayerError> {
        let path = dir.join(target);
        match self.mode {
            Mode::Flatten => {
                if self.created.contains(&path.key()) {
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
                    if self.created.contains(&path.key()) {
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

    pub(super) fn set_opaque(
        &self,
        fd: BorrowedFd<'_>,
        ns: OverlayXattrs,
        shown: &str,
    ) -> Result<(), LayerError> {
        let attr = format!("{}opaque", ns.prefix());
        sfs::set_xattr_fd(fd, OsStr::new(&attr), b"y")
            .map_err(|e| self.io_err(shown, format!("set {attr}"), e))
    }

    pub(super) fn opaque(&mut self, dir: &RelPath, shown: &str) -> Result<(), LayerError> {
        let fd = self.parent_dir(dir, shown)?;
        match self.mode {
            Mode::OverlayLower(ns) => self.set_opaque(fd.as_fd(), ns, shown),
            Mode::Flatten => {
                let st = sfs::fstat(fd.as_fd()).map_err(|e| self.io_err(shown, "stat", e))?;
                let names = sfs::list_dir(fd.as_fd())
                    .map_err(|e| self.io_err(shown, "list directory", e))?;
                for name in names {
                    if !self.created.contains(&dir.join(&name).key()) {
                        self.remove(dir, &name, shown)?;
                    }
                }
                // `remove` may have made an unwritable directory writable.
                sfs::chmod_fd(fd.as_fd(), st.st_mode & 0o7777)
                    .map_err(|e| self.io_err(shown, "chmod", e))
            }
        }
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
}

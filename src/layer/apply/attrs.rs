//! Entry attributes: reading them from headers and PAX records, applying
//! them without following symlinks, recording what could not be applied.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use super::*;

/// Attributes of one entry, from its header and PAX records.
pub(super) struct Attrs {
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mode: u32,
    pub(super) mtime: (i64, i64),
    pub(super) xattrs: Vec<(OsString, Vec<u8>)>,
}

impl Unpacker<'_> {
    /// Reads uid/gid/mode/mtime/xattrs, PAX records overriding the header.
    pub(super) fn attrs<R: Read>(
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

    pub(super) fn record(&self, path: &RelPath, kind: Kind, a: &Attrs) -> Record {
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
    pub(super) fn set_owner(
        &self,
        chown: impl FnOnce(u32, u32) -> io::Result<()>,
        a: &Attrs,
    ) -> bool {
        let (Ok(uid), Ok(gid)) = (u32::try_from(a.uid), u32::try_from(a.gid)) else {
            return true;
        };
        if !self.privileged {
            // Unchowned files belong to the caller, which the layer writer
            // maps back to container 0:0; every other owner needs a record
            // (including the caller's own host ids, which mean 0:0 inside).
            return (uid, gid) != (0, 0);
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
    pub(super) fn set_xattrs_fd(&self, fd: BorrowedFd<'_>, a: &Attrs, rec: &mut Record) -> bool {
        self.set_xattrs(|k, v| sfs::set_xattr_fd(fd, k, v), a, rec)
    }

    pub(super) fn set_xattrs(
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
    pub(super) fn finish_file(
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
    pub(super) fn finish_at(
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
mod tests {
    use super::parse_pax_time;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time("12"), Some((12, 0)));
        assert_eq!(parse_pax_time("12.5"), Some((12, 500_000_000)));
        assert_eq!(parse_pax_time("x"), None);
    }
}

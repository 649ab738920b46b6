//! Read-only access to a tree another process wrote (a step's overlay upper
//! dir or working tree), for the layer writer. Parents are resolved with
//! [`super::fs::open_dir_no_symlinks`]; leaves are never followed.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use rustix::fs::{self as rfs, Mode, OFlags};

/// Opens the regular file `name` in `parent` for reading, refusing a
/// symlink (`O_NOFOLLOW`) and never blocking on a fifo (`O_NONBLOCK`; the
/// caller checked the type with `lstat` first).
pub fn open_file_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let fd = rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// The target of the symlink `name` in `parent`, as raw bytes.
pub fn readlink_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<u8>> {
    let target = rfs::readlinkat(parent, name, Vec::new())?;
    Ok(target.into_bytes())
}

/// `/proc/self/fd/<parent>/name`: reaches the leaf through our own resolved
/// parent fd, for the `l*xattr` calls (which do not follow the leaf).
fn proc_path(parent: BorrowedFd<'_>, name: &OsStr) -> OsString {
    let mut path = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.as_bytes());
    OsString::from_vec(path)
}

/// Runs `query` then `fetch` with a buffer of the queried size, asking
/// again (a bounded number of times) when the value grew in between.
/// `Ok(None)` when the attribute is absent.
fn sized(
    mut query: impl FnMut() -> rustix::io::Result<usize>,
    mut fetch: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> io::Result<Option<Vec<u8>>> {
    for _ in 0..8 {
        let size = match query() {
            Ok(n) => n,
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let mut buf = vec![0u8; size];
        match fetch(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other("extended attributes keep changing size"))
}

/// Every extended attribute of `name` in `parent` (not following a
/// symlink), sorted by name. Attributes that vanish between listing and
/// reading are skipped; a filesystem without xattrs gives an empty list.
pub fn xattrs_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let path = proc_path(parent, name);
    let names = match sized(
        || rfs::llistxattr_query(&path),
        |buf| rfs::llistxattr(&path, buf),
    ) {
        Ok(Some(names)) => names,
        Ok(None) => return Ok(Vec::new()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::OPNOTSUPP.raw_os_error()) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for attr in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let attr = OsStr::from_bytes(attr);
        let value = sized(
            || rfs::lgetxattr_query(&path, attr),
            |buf| rfs::lgetxattr(&path, attr, buf),
        )?;
        if let Some(v) = value {
            out.push((attr.to_os_string(), v));
        }
    }
    out.sort();
    Ok(out)
}

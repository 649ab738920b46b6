//! Small filesystem helpers shared by the snapshotters (safe `rustix`
//! wrappers; nothing here follows a symlink in the last component).

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Statx, StatxFlags, CWD};

/// `statx` without following a symlink, asking for birth time too.
pub fn lstatx(path: &Path) -> io::Result<Statx> {
    Ok(rustix::fs::statx(
        CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BASIC_STATS | StatxFlags::BTIME,
    )?)
}

/// `lstatx`, `None` when the path does not exist (or a parent is not a
/// directory).
pub fn lstatx_opt(path: &Path) -> io::Result<Option<Statx>> {
    match lstatx(path) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn file_type(st: &Statx) -> FileType {
    FileType::from_raw_mode(u32::from(st.stx_mode))
}

pub fn is_dir(st: &Statx) -> bool {
    file_type(st) == FileType::Directory
}

/// Birth time, when the filesystem reports one.
pub fn btime(st: &Statx) -> Option<(i64, u32)> {
    (st.stx_mask & StatxFlags::BTIME.bits() != 0)
        .then_some((st.stx_btime.tv_sec, st.stx_btime.tv_nsec))
}

/// Whether an xattr is a snapshotter's bookkeeping, never part of a layer
/// nor of a comparison.
pub fn is_bookkeeping_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.overlay.")
        || name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.fuseoverlayfs.")
}

/// Every xattr of `path` (not following a symlink), sorted by name.
/// Filesystems without xattr support give none.
pub fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    all_xattrs(
        |buf| rustix::fs::llistxattr(path, buf),
        |name, buf| rustix::fs::lgetxattr(path, name, buf),
    )
}

/// Every xattr of the open file `fd`, sorted by name (as [`xattrs`]).
pub fn fxattrs(fd: &std::os::fd::OwnedFd) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    all_xattrs(
        |buf| rustix::fs::flistxattr(fd, buf),
        |name, buf| rustix::fs::fgetxattr(fd, name, buf),
    )
}

/// One xattr of `path` (not following a symlink); `None` when absent.
pub fn xattr(path: &Path, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let name = std::ffi::OsStr::from_bytes(name);
    grow(|buf| rustix::fs::lgetxattr(path, name, buf))
}

type XattrResult = Result<usize, rustix::io::Errno>;

/// Lists names with `list`, reads each with `get`; sorted by name.
fn all_xattrs(
    list: impl Fn(&mut [u8]) -> XattrResult,
    get: impl Fn(&std::ffi::OsStr, &mut [u8]) -> XattrResult,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let Some(names) = grow(list)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if let Some(value) = grow(|buf| get(std::ffi::OsStr::from_bytes(name), buf))? {
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Calls `f` with a buffer that grows (up to 1 MiB) while the kernel says
/// ERANGE; `None` when there is no such xattr or no xattr support.
fn grow(f: impl Fn(&mut [u8]) -> XattrResult) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    loop {
        match f(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < (1 << 20) => buf.resize(buf.len() * 4, 0),
            Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether `path`'s overlay opaque marker (`user.` or `trusted.`) is `y`.
pub fn overlay_opaque(path: &Path) -> io::Result<bool> {
    for name in [&b"user.overlay.opaque"[..], b"trusted.overlay.opaque"] {
        if xattr(path, name)?.as_deref() == Some(b"y") {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `st` (of `path`) is an overlay whiteout: a 0/0 character device,
/// or a zero-size file carrying `<ns>.overlay.whiteout` (Linux ≥ 6.7's
/// format, which kiln's unpacker falls back to).
pub fn is_whiteout(path: &Path, st: &Statx) -> io::Result<bool> {
    match file_type(st) {
        FileType::CharacterDevice => Ok(st.stx_rdev_major == 0 && st.stx_rdev_minor == 0),
        FileType::RegularFile if st.stx_size == 0 => {
            for name in [&b"user.overlay.whiteout"[..], b"trusted.overlay.whiteout"] {
                if xattr(path, name)?.is_some() {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// The names in a directory, sorted bytewise.
pub fn sorted_names(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// `rel/name` as a change-list path (UTF-8, `/`-separated).
pub fn join_rel(rel: &str, name: &std::ffi::OsStr) -> Option<String> {
    let name = name.to_str()?;
    Some(if rel.is_empty() {
        name.to_owned()
    } else {
        format!("{rel}/{name}")
    })
}

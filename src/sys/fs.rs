//! Filesystem calls relative to directory fds, for writing untrusted trees.
//!
//! Every lookup of a directory inside an unpack root goes through
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)` on an
//! fd of the root, so the kernel, not string checks, refuses any resolution
//! that would leave the root (`..` above it, an absolute symlink, a relative
//! symlink climbing out, a `/proc` magic link, another mount). Leaves are then
//! created and changed with `*at` calls on that parent fd that never follow a
//! symlink in the last component (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`).
//!
//! Built on `rustix`: safe, maintained wrappers over the raw syscalls, so this
//! file needs no `unsafe` of its own (the module may hold it if ever needed).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{
    self as rfs, AtFlags, Dev, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps,
    XattrFlags,
};

pub use rustix::fs::Stat;

/// Resolution rules for every path looked up under a root.
fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV
}

/// Stricter rules: no symlink anywhere in the path (used for hardlink targets,
/// which a tar names literally and never through a symlink).
fn beneath_no_symlinks() -> ResolveFlags {
    beneath() | ResolveFlags::NO_SYMLINKS
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC
}

/// Whether an error from a lookup under a root means "that path leaves the
/// root" (EXDEV from RESOLVE_BENEATH/NO_XDEV, ELOOP from NO_SYMLINKS or a
/// NO_MAGICLINKS hit) rather than an ordinary I/O problem.
pub fn is_escape(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::XDEV.raw_os_error()
        || code == rustix::io::Errno::LOOP.raw_os_error())
}

/// Opens a directory to serve as an unpack root (it may itself be reached
/// through symlinks: the caller chose it).
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::open(path, dir_flags(), Mode::empty())?)
}

/// Opens the directory `rel` (relative, `""` for the root itself) beneath
/// `root`. Symlinks inside the root are followed only while they stay in it.
pub fn open_dir_beneath(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    open_dir_resolving(root, rel, beneath())
}

/// Like [`open_dir_beneath`] but refuses any symlink on the way.
pub fn open_dir_no_symlinks(root: BorrowedFd<'_>, rel: &Path) -> io::Result<OwnedFd> {
    open_dir_resolving(root, rel, beneath_no_symlinks())
}

fn open_dir_resolving(
    root: BorrowedFd<'_>,
    rel: &Path,
    how: rfs::ResolveFlags,
) -> io::Result<OwnedFd> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    Ok(rfs::openat2(root, rel, dir_flags(), Mode::empty(), how)?)
}

/// Opens the existing directory `name` in `parent`, never following a symlink.
pub fn open_child_dir(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rfs::openat(
        parent,
        name,
        dir_flags() | OFlags::NOFOLLOW,
        Mode::empty(),
    )?)
}

/// `lstat` of `name` in `parent`; `None` when it does not exist.
pub fn lstat_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Stat>> {
    match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `fstat`.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    Ok(rfs::fstat(fd)?)
}

/// The kind of inode a `Stat` describes.
pub fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// Whether `st` is a directory.
pub fn is_dir(st: &Stat) -> bool {
    file_type(st) == FileType::Directory
}

/// Creates a new regular file (mode 0600 until the caller sets the real one,
/// so the umask never matters); fails if `name` exists, even as a symlink.
pub fn create_file(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let fd = rfs::openat(
        parent,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(File::from(fd))
}

/// `mkdirat` with a provisional mode; the caller sets the real one later.
pub fn mkdir_at(parent: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    Ok(rfs::mkdirat(parent, name, Mode::from_raw_mode(mode))?)
}

/// `symlinkat`: the target is stored as given and never resolved here.
pub fn symlink_at(target: &OsStr, parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    Ok(rfs::symlinkat(target, parent, name)?)
}

/// `linkat` without `AT_SYMLINK_FOLLOW`: a symlink is linked, not followed.
pub fn hardlink_at(
    old_parent: BorrowedFd<'_>,
    old_name: &OsStr,
    new_parent: BorrowedFd<'_>,
    new_name: &OsStr,
) -> io::Result<()> {
    Ok(rfs::linkat(
        old_parent,
        old_name,
        new_parent,
        new_name,
        AtFlags::empty(),
    )?)
}

/// Kinds of special file [`mknod_at`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    Char,
    Block,
    Fifo,
}

/// `mknodat` of a device or fifo (mode 0600 until the caller sets it).
pub fn mknod_at(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    kind: Special,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    let ft = match kind {
        Special::Char => FileType::CharacterDevice,
        Special::Block => FileType::BlockDevice,
        Special::Fifo => FileType::Fifo,
    };
    let dev: Dev = rfs::makedev(major, minor);
    Ok(rfs::mknodat(
        parent,
        name,
        ft,
        Mode::from_raw_mode(0o600),
        dev,
    )?)
}

/// Removes `name` from `parent`: a directory with everything below it
/// (never following symlinks, making owned read-only directories writable on
/// the way), anything else with `unlinkat`. Missing is not an error.
pub fn remove_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let Some(st) = lstat_at(parent, name)? else {
        return Ok(());
    };
    if is_dir(&st) {
        let dir = open_child_dir(parent, name)?;
        empty_dir(dir.as_fd(), &|_| true)?;
        Ok(rfs::unlinkat(parent, name, AtFlags::REMOVEDIR)?)
    } else {
        Ok(rfs::unlinkat(parent, name, AtFlags::empty())?)
    }
}

/// Removes every entry of `dir` for which `keep_not` returns true (it gets the
/// entry name). Used for opaque whiteouts and recursive removal.
pub fn empty_dir(dir: BorrowedFd<'_>, remove: &dyn Fn(&OsStr) -> bool) -> io::Result<()> {
    // A directory we own but may not write (0555 from a layer) must become
    // writable before its entries can go; it is about to be removed or
    // emptied, so its old mode does not matter... except for opaque dirs,
    // whose mode the caller sets again afterwards.
    let st = fstat(dir)?;
    if st.st_mode & 0o300 != 0o300 {
        rfs::fchmod(dir, Mode::from_raw_mode((st.st_mode & 0o7777) | 0o700))?;
    }
    for name in list_dir(dir)? {
        if remove(&name) {
            remove_at(dir, &name)?;
        }
    }
    Ok(())
}

/// Names in a directory, without `.` and `..`.
pub fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut reader = rfs::Dir::read_from(dir)?;
    let mut names = Vec::new();
    while let Some(entry) = reader.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

/// `fchmod` (exact bits, umask-independent).
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(rfs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))?)
}

/// chmod of a leaf that is not a symlink (made for a fifo or device, which
/// cannot be opened for `fchmod` without side effects; works for any kind):
/// opened `O_PATH | O_NOFOLLOW`, checked not to be a symlink, then changed
/// through its `/proc/self/fd` entry, which names exactly that inode.
pub fn chmod_special_at(parent: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let fd = rfs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let st = fstat(fd.as_fd())?;
    if file_type(&st) == FileType::Symlink {
        return Err(io::Error::from_raw_os_error(
            rustix::io::Errno::LOOP.raw_os_error(),
        ));
    }
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(rfs::chmod(
        proc_path.as_str(),
        Mode::from_raw_mode(mode & 0o7777),
    )?)
}

/// `fchown`.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    Ok(rfs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    )?)
}

/// Whether `st` is an overlayfs whiteout (a character device 0/0).
pub fn is_whiteout_device(st: &Stat) -> bool {
    file_type(st) == FileType::CharacterDevice && st.st_rdev == 0
}

/// `fchownat(AT_SYMLINK_NOFOLLOW)`.
pub fn chown_at(parent: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    Ok(rfs::chownat(
        parent,
        name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

fn timestamps(secs: i64, nanos: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// `utimensat(AT_SYMLINK_NOFOLLOW)`: atime and mtime both set to `secs.nanos`.
pub fn set_times_at(parent: BorrowedFd<'_>, name: &OsStr, secs: i64, nanos: i64) -> io::Result<()> {
    Ok(rfs::utimensat(
        parent,
        name,
        &timestamps(secs, nanos),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// `futimens`.
pub fn set_times_fd(fd: BorrowedFd<'_>, secs: i64, nanos: i64) -> io::Result<()> {
    Ok(rfs::futimens(fd, &timestamps(secs, nanos))?)
}

/// `fsetxattr` on an open file or directory.
pub fn set_xattr_fd(fd: BorrowedFd<'_>, name: &OsStr, value: &[u8]) -> io::Result<()> {
    Ok(rfs::fsetxattr(fd, name, value, XattrFlags::empty())?)
}

/// `fgetxattr`; `None` when the attribute is absent.
pub fn get_xattr_fd(fd: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 4096];
    match rfs::fgetxattr(fd, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(rustix::io::Errno::NODATA) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `lsetxattr` on `name` in `parent`, through `/proc/self/fd/<parent>/name`:
/// the parent is our own resolved fd and the leaf is not followed.
pub fn set_xattr_at(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    attr: &OsStr,
    value: &[u8],
) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
    path.extend_from_slice(name.as_bytes());
    Ok(rfs::lsetxattr(
        OsStr::from_bytes(&path),
        attr,
        value,
        XattrFlags::empty(),
    )?)
}

/// The effective uid and gid of this process.
pub fn effective_ids() -> (u32, u32) {
    (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    )
}

/// `syncfs` on the filesystem holding `fd`: one call makes a whole unpacked
/// tree durable before it is renamed into place.
pub fn sync_filesystem(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rfs::syncfs(fd)?)
}

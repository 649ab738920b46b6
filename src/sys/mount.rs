//! mount(2), pivot_root(2), umount2(2) and chroot(2).

use std::io;
use std::path::Path;
use std::ptr;

use super::ffi::{check, cpath, cstr};

/// Mount flags (`MS_*`), as the kernel takes them.
pub type MountFlags = libc::c_ulong;

pub const BIND: MountFlags = libc::MS_BIND;
pub const REC: MountFlags = libc::MS_REC;
pub const PRIVATE: MountFlags = libc::MS_PRIVATE;
pub const SHARED: MountFlags = libc::MS_SHARED;
pub const NOSUID: MountFlags = libc::MS_NOSUID;
pub const NODEV: MountFlags = libc::MS_NODEV;
pub const NOEXEC: MountFlags = libc::MS_NOEXEC;
pub const RDONLY: MountFlags = libc::MS_RDONLY;
pub const REMOUNT: MountFlags = libc::MS_REMOUNT;

/// `mount(source, target, fstype, flags, data)`; `None` passes NULL.
pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MountFlags,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cpath).transpose()?;
    let target = cpath(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    // SAFETY: every pointer is either NULL (allowed by mount(2) for source,
    // fstype and data) or points to a NUL-terminated string that outlives
    // the call.
    let ret = unsafe {
        libc::mount(
            source.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(ptr::null(), |s| s.as_ptr().cast::<libc::c_void>()),
        )
    };
    check(ret)
}

/// `pivot_root(new_root, put_old)` (no libc wrapper, so the raw syscall).
pub fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    let new_root = cpath(new_root)?;
    let put_old = cpath(put_old)?;
    // SAFETY: SYS_pivot_root takes two NUL-terminated path strings, both
    // alive for the duration of the call.
    let ret = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `umount2(target, MNT_DETACH)`: lazily detach a mount and its children.
pub fn detach(target: &Path) -> io::Result<()> {
    let target = cpath(target)?;
    // SAFETY: a valid NUL-terminated path and a plain flag.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) })
}

/// `chroot(path)`.
pub fn chroot(path: &Path) -> io::Result<()> {
    let path = cpath(path)?;
    // SAFETY: a valid NUL-terminated path.
    check(unsafe { libc::chroot(path.as_ptr()) })
}

/// The flags of the mount holding `path` that a bind remount must repeat
/// (in a user namespace the kernel refuses to drop locked ones).
pub fn locked_flags(path: &Path) -> io::Result<MountFlags> {
    let path = cpath(path)?;
    // SAFETY: statvfs is plain old data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and an exclusively borrowed buffer.
    check(unsafe { libc::statvfs(path.as_ptr(), &mut st) })?;
    let pairs = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(pairs
        .iter()
        .filter(|(st_flag, _)| st.f_flag & st_flag != 0)
        .fold(0, |acc, (_, ms)| acc | ms))
}

/// Makes `cmd` chroot into `root` (and chdir to its `/`) in the child
/// before exec. Used to start a FUSE daemon whose root must not be the
/// mount namespace's root: pivot_root moves every process whose root is
/// the old root into the new one, and a daemon that then resolves its own
/// paths through its own mount deadlocks.
///
/// The child gets a mount namespace of its own: it
/// first unshares `CLONE_NEWNS` (a copy of the caller's mounts, in the same
/// peer groups where they are shared), then chroots. What the caller later
/// unmounts in its own namespace no longer reaches the child's view.
pub fn chroot_command_own_mounts(cmd: &mut std::process::Command, root: &Path) -> io::Result<()> {
    use std::os::unix::process::CommandExt;
    let root = cpath(root)?;
    // SAFETY: the closure runs in the forked child before exec and makes
    // only three raw system calls (async-signal-safe) on a NUL-terminated
    // string prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) < 0
                || libc::chroot(root.as_ptr()) < 0
                || libc::chdir(c"/".as_ptr()) < 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

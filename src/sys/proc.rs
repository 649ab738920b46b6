//! Processes: fork, wait, exec, credentials, parent-death signals, and
//! spawning a child with pipes placed on fixed descriptors.

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use super::ffi::check;

/// The result of [`fork`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    Child,
    Parent(libc::pid_t),
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    Exited(i32),
    Signaled(i32),
}

/// `fork()`. In a multi-threaded caller the child may only make raw
/// system calls until it execs or exits (kiln's sandbox processes are
/// single-threaded; [`super::ns::probe`] keeps to raw calls).
pub fn fork() -> io::Result<Fork> {
    // SAFETY: fork has no memory-safety preconditions of its own; the
    // callers' contract on what the child does afterwards is stated above.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// `_exit(code)`: ends the process at once, without running destructors or
/// flushing stdio (what a forked child must do).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// A pipe as raw descriptors (read, write), both close-on-exec.
pub fn pipe() -> io::Result<(RawFd, RawFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the live two-element array.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

/// Closes a raw descriptor this code owns (errors are of no use here).
pub fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and does not use it afterwards.
    unsafe { libc::close(fd) };
}

fn decode(status: libc::c_int) -> WaitStatus {
    if libc::WIFSIGNALED(status) {
        WaitStatus::Signaled(libc::WTERMSIG(status))
    } else {
        WaitStatus::Exited(libc::WEXITSTATUS(status))
    }
}

/// Waits for the child `pid` to end (retrying on EINTR).
pub fn wait_pid(pid: libc::pid_t) -> io::Result<WaitStatus> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a live local.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret >= 0 {
            return Ok(decode(status));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Waits for any child (retrying on EINTR); `Ok(None)` when none is left.
pub fn wait_any() -> io::Result<Option<(libc::pid_t, WaitStatus)>> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a live local.
        let ret = unsafe { libc::waitpid(-1, &mut status, 0) };
        if ret >= 0 {
            return Ok(Some((ret, decode(status))));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ECHILD) => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// Spawns `cmd` with each `(fd, target)` pair's descriptor placed on
/// `target` in the child (inherited there, close-on-exec cleared) and, when
/// `death_signal` is set, that signal delivered to the child if the
/// spawning thread dies. Targets must be below 10.
pub fn spawn_with_fds(
    cmd: &mut Command,
    fds: &[(RawFd, RawFd)],
    death_signal: Option<i32>,
) -> io::Result<Child> {
    let fds = fds.to_vec();
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and makes
    // only async-signal-safe system calls (fcntl, dup2, prctl, getppid) on
    // values copied into it; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(sig) = death_signal {
                check(libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    sig as libc::c_ulong,
                    0,
                    0,
                    0,
                ))?;
                // The parent may have died before the signal was armed.
                if u32::try_from(libc::getppid()) != Ok(parent) {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
            }
            // First move every source above the targets, so that a source
            // that happens to sit on another pair's target is not clobbered.
            let mut moved = [-1; 8];
            for (slot, (src, _)) in moved.iter_mut().zip(&fds) {
                let fd = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 10);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                *slot = fd;
            }
            for (tmp, (_, dst)) in moved.iter().zip(&fds) {
                check(libc::dup2(*tmp, *dst))?;
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Owns descriptor `fd`, inherited from the parent, if it is open.
pub fn inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: `fd` is open (checked above) and, by the sandbox protocol,
    // handed to this process for it alone to own.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Marks every descriptor from `first` up close-on-exec, so that a
/// command inherits only stdin, stdout and stderr (whatever its caller
/// leaked to kiln included).
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    let first =
        libc::c_uint::try_from(first).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on
    // descriptors; it touches no memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    // Kernels before 5.11: walk the descriptor table.
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first as RawFd)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on a descriptor number; one that was closed since
        // the listing (the directory's own) just fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// `prctl(PR_SET_PDEATHSIG, sig)`: get `sig` when the parent dies.
pub fn set_parent_death_signal(sig: i32) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) })
}

/// Restores SIGPIPE's default action (the Rust runtime ignores it), so a
/// CLI whose output goes to a closed pipe (`kiln images | head -1`) ends
/// quietly like other Unix tools instead of panicking in `println!`.
pub fn default_sigpipe() {
    // SAFETY: installs the kernel's default disposition; no handler code runs
    // and no Rust state is involved.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `getppid()`.
pub fn parent_pid() -> libc::pid_t {
    // SAFETY: getppid cannot fail.
    unsafe { libc::getppid() }
}

/// `kill(pid, sig)`.
pub fn kill(pid: libc::pid_t, sig: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers.
    check(unsafe { libc::kill(pid, sig) })
}

/// `setpgid(0, 0)`: a new process group led by this process.
pub fn new_process_group() -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::setpgid(0, 0) })
}

/// `setgroups(groups)`.
pub fn set_groups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `groups`, alive for the call;
    // gid_t is u32 on Linux.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) })
}

/// `setresgid(gid, gid, gid)` then `setresuid(uid, uid, uid)`.
pub fn set_ids(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresuid(uid, uid, uid) })
}

/// The effective uid and gid of this process.
pub fn effective_ids() -> (u32, u32) {
    // SAFETY: geteuid/getegid cannot fail.
    unsafe { (libc::geteuid(), libc::getegid()) }
}

/// `execve(path, argv, env)`; returns only on failure.
pub fn execve(path: &CString, argv: &[CString], env: &[CString]) -> io::Error {
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of pointers to NUL-terminated strings,
    // all alive for the call.
    unsafe { libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
    io::Error::last_os_error()
}

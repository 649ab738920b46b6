//! Namespaces: unshare(2), the UTS hostname, the loopback device of a new
//! network namespace, and a probe of what the kernel allows.

use std::ffi::CString;
use std::io;

use super::ffi::{check, cstr};
use super::proc;

/// `CLONE_NEW*` flags, as unshare(2) takes them.
pub type NsFlags = libc::c_int;

pub const USER: NsFlags = libc::CLONE_NEWUSER;
pub const MOUNT: NsFlags = libc::CLONE_NEWNS;
pub const PID: NsFlags = libc::CLONE_NEWPID;
pub const IPC: NsFlags = libc::CLONE_NEWIPC;
pub const UTS: NsFlags = libc::CLONE_NEWUTS;
pub const NET: NsFlags = libc::CLONE_NEWNET;

/// `unshare(flags)`. `CLONE_NEWUSER` needs a single-threaded caller.
pub fn unshare(flags: NsFlags) -> io::Result<()> {
    // SAFETY: unshare takes a flag word and touches no caller memory.
    check(unsafe { libc::unshare(flags) })
}

/// `sethostname(name)` in the current UTS namespace.
pub fn set_hostname(name: &str) -> io::Result<()> {
    // SAFETY: the pointer and length describe `name`'s bytes, alive for the call.
    check(unsafe { libc::sethostname(name.as_ptr().cast::<libc::c_char>(), name.len()) })
}

/// Sets `lo` up in the current network namespace (a new one has it down).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = (|| {
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of `req`,
        // which is a valid, exclusively borrowed ifreq.
        check(unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) })?;
        // SAFETY: the kernel just filled the flags member of the union.
        unsafe {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        }
        // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
        check(unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) })
    })();
    // SAFETY: `fd` is the socket opened above, closed exactly once.
    unsafe { libc::close(fd) };
    result
}

/// The step of [`probe`] the kernel refused, and its errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeFailure {
    pub step: ProbeStep,
    pub errno: i32,
}

/// What [`probe`] tries, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeStep {
    Fork,
    Unshare,
    Setgroups,
    UidMap,
    GidMap,
    MakePrivate,
    MountTmpfs,
    Chroot,
}

impl ProbeStep {
    const ALL: [ProbeStep; 8] = [
        ProbeStep::Fork,
        ProbeStep::Unshare,
        ProbeStep::Setgroups,
        ProbeStep::UidMap,
        ProbeStep::GidMap,
        ProbeStep::MakePrivate,
        ProbeStep::MountTmpfs,
        ProbeStep::Chroot,
    ];

    /// What the step does, as a message names it.
    pub fn describe(self) -> &'static str {
        match self {
            ProbeStep::Fork => "fork",
            ProbeStep::Unshare => "unshare",
            ProbeStep::Setgroups => "write /proc/self/setgroups",
            ProbeStep::UidMap => "write /proc/self/uid_map",
            ProbeStep::GidMap => "write /proc/self/gid_map",
            ProbeStep::MakePrivate => "mount --make-rprivate /",
            ProbeStep::MountTmpfs => "mount tmpfs",
            ProbeStep::Chroot => "chroot",
        }
    }
}

/// Tries, in a throwaway child process, `unshare(flags)`, then (when
/// `single_map` is given) a single-id map of the caller's uid and gid to 0,
/// then a private tmpfs mount. Safe to call from a multi-threaded process:
/// everything the child needs is prepared before fork, and the child makes
/// only raw system calls.
pub fn probe(flags: NsFlags, single_map: Option<(u32, u32)>) -> Result<(), ProbeFailure> {
    let prepared = (|| -> io::Result<_> {
        let maps = match single_map {
            Some((uid, gid)) => Some((
                cstr(&format!("0 {uid} 1\n"))?,
                cstr(&format!("0 {gid} 1\n"))?,
            )),
            None => None,
        };
        Ok(maps)
    })();
    let maps = prepared.map_err(|e| ProbeFailure {
        step: ProbeStep::Fork,
        errno: e.raw_os_error().unwrap_or(libc::EINVAL),
    })?;
    let paths: [CString; 4] = [
        c"/proc/self/setgroups".to_owned(),
        c"/proc/self/uid_map".to_owned(),
        c"/proc/self/gid_map".to_owned(),
        c"/".to_owned(),
    ];
    in_child(|| probe_child(flags, maps.as_ref(), &paths))
}

/// Tries chroot("/") in a throwaway child (needs CAP_SYS_CHROOT).
pub fn probe_chroot() -> Result<(), ProbeFailure> {
    in_child(|| {
        // SAFETY: a NUL-terminated literal path.
        if unsafe { libc::chroot(c"/".as_ptr()) } < 0 {
            let errno = io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL);
            return Err((ProbeStep::Chroot, errno));
        }
        Ok(())
    })
}

/// Runs `attempt` in a forked child and returns what it reported. The
/// child may have been forked from a multi-threaded process: `attempt` must
/// make only raw system calls and must not allocate.
fn in_child(attempt: impl FnOnce() -> Result<(), (ProbeStep, i32)>) -> Result<(), ProbeFailure> {
    let fail = |step, err: io::Error| ProbeFailure {
        step,
        errno: err.raw_os_error().unwrap_or(libc::EINVAL),
    };
    let (read_end, write_end) = proc::pipe().map_err(|e| fail(ProbeStep::Fork, e))?;
    match proc::fork().map_err(|e| fail(ProbeStep::Fork, e))? {
        proc::Fork::Child => {
            let result = attempt();
            if let Err((step, errno)) = result {
                let msg = [step as i32, errno];
                // SAFETY: writes 8 bytes from a live array to our pipe end.
                unsafe { libc::write(write_end, msg.as_ptr().cast(), 8) };
            }
            proc::exit_now(i32::from(result.is_err()))
        }
        proc::Fork::Parent(pid) => {
            proc::close(write_end);
            let mut msg = [0i32; 2];
            // SAFETY: reads at most 8 bytes into a live, exclusively borrowed array.
            let n = unsafe { libc::read(read_end, msg.as_mut_ptr().cast(), 8) };
            proc::close(read_end);
            let status = proc::wait_pid(pid).map_err(|e| fail(ProbeStep::Fork, e))?;
            if n == 8 {
                let step = usize::try_from(msg[0])
                    .ok()
                    .and_then(|i| ProbeStep::ALL.get(i).copied())
                    .unwrap_or(ProbeStep::Fork);
                return Err(ProbeFailure {
                    step,
                    errno: msg[1],
                });
            }
            if status != proc::WaitStatus::Exited(0) {
                return Err(ProbeFailure {
                    step: ProbeStep::Fork,
                    errno: libc::ECHILD,
                });
            }
            Ok(())
        }
    }
}

/// The child side of [`probe`]: raw system calls only.
fn probe_child(
    flags: NsFlags,
    maps: Option<&(CString, CString)>,
    paths: &[CString; 4],
) -> Result<(), (ProbeStep, i32)> {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL)
    };
    // SAFETY: see `unshare`.
    if unsafe { libc::unshare(flags) } < 0 {
        return Err((ProbeStep::Unshare, errno()));
    }
    if let Some((uid_map, gid_map)) = maps {
        let writes = [
            (ProbeStep::Setgroups, &paths[0], c"deny"),
            (ProbeStep::UidMap, &paths[1], uid_map.as_c_str()),
            (ProbeStep::GidMap, &paths[2], gid_map.as_c_str()),
        ];
        for (step, path, text) in writes {
            // SAFETY: open/write/close on NUL-terminated strings that outlive
            // the calls; the fd is checked and closed.
            let ok = unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    false
                } else {
                    let len = text.to_bytes().len();
                    let n = libc::write(fd, text.as_ptr().cast(), len);
                    libc::close(fd);
                    n == len as isize
                }
            };
            if !ok {
                return Err((step, errno()));
            }
        }
    }
    if flags & MOUNT != 0 {
        let root = paths[3].as_ptr();
        // SAFETY: NUL-terminated strings or NULL, as mount(2) allows.
        if unsafe {
            libc::mount(
                std::ptr::null(),
                root,
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        } < 0
        {
            return Err((ProbeStep::MakePrivate, errno()));
        }
        // Stacks a tmpfs over / of this child's private mount namespace;
        // it vanishes with the child.
        // SAFETY: as above.
        if unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                root,
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        } < 0
        {
            return Err((ProbeStep::MountTmpfs, errno()));
        }
    }
    Ok(())
}

//! The sandbox process (`kiln __sandbox`), single-threaded by construction:
//!
//! 1. reads the spec, unshares the namespaces, says `Unshared`, waits for
//!    `Mapped` (the parent wrote the id maps);
//! 2. forks the pid namespace's init, which mounts everything, switches
//!    the root, says `Ready`, forks the command, reaps every process until
//!    the command ends, says `Exited` and exits, which makes the kernel kill
//!    whatever is left in the namespace;
//! 3. the command's process switches to USER, enters the workdir and execs.
//!
//! Each process that reports over the pipe writes whole lines with one
//! write(2); the first process only relays the init's exit code.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::sys::{self, ns, proc};

use super::error::{SetupFailure, Stage};
use super::protocol::{self, StepFiles, Tier, ToChild, ToParent, FROM_PARENT_FD, TO_PARENT_FD};
use super::spec::{Network, ProcessSpec, DEFAULT_PATH};
use super::user::{self, Credentials};

/// Exit code of the sandbox process when setup failed (reported over the pipe).
const SETUP_FAILED: i32 = 125;

/// Entry point of `kiln __sandbox`; returns the process's exit code. Must
/// run before the process starts any thread.
pub fn sandbox_main() -> i32 {
    let (Some(from_parent), Some(to_parent)) = (
        proc::inherited_fd(FROM_PARENT_FD),
        proc::inherited_fd(TO_PARENT_FD),
    ) else {
        eprintln!(
            "kiln {}: internal command, started by kiln itself",
            protocol::SANDBOX_ARG
        );
        return SETUP_FAILED;
    };
    let mut input = BufReader::new(File::from(from_parent));
    let mut output = File::from(to_parent);
    match first_process(&mut input, &mut output) {
        Ok(code) => code,
        Err(failure) => {
            let _ = protocol::send(&mut output, &ToParent::Failed(failure));
            SETUP_FAILED
        }
    }
}

fn first_process(input: &mut BufReader<File>, output: &mut File) -> Result<i32, SetupFailure> {
    let io_fail =
        |action: &'static str| move |e: io::Error| SetupFailure::new(Stage::Spec, action, &e);
    let Some(ToChild::Start { spec, tier, files }) =
        protocol::receive(input).map_err(io_fail("read spec"))?
    else {
        return Err(SetupFailure::msg(Stage::Spec, "expected the spec first"));
    };
    let mut flags = ns::MOUNT | ns::PID | ns::IPC | ns::UTS;
    if tier == Tier::Rootless {
        flags |= ns::USER;
    }
    if spec.network == Network::None {
        flags |= ns::NET;
    }
    let bare = match ns::unshare(flags) {
        Ok(()) => false,
        // Root whose runtime forbids namespaces (no CAP_SYS_ADMIN): a plain
        // chroot still isolates the filesystem view.
        Err(e)
            if tier == Tier::Chroot
                && e.raw_os_error() == Some(libc::EPERM)
                && spec.network == Network::Host =>
        {
            true
        }
        Err(e) => {
            return Err(SetupFailure::new(
                Stage::Unshare,
                format!("unshare({})", flag_names(flags)),
                &e,
            ))
        }
    };
    protocol::send(output, &ToParent::Unshared { bare }).map_err(io_fail("report unshared"))?;
    let Some(ToChild::Mapped {
        setgroups,
        full_map,
    }) = protocol::receive(input)
        .map_err(|e| SetupFailure::new(Stage::IdMap, "wait for id maps", &e))?
    else {
        return Err(SetupFailure::msg(
            Stage::IdMap,
            "the parent did not confirm the id maps",
        ));
    };
    // Also denied when kiln itself runs in a user namespace that denies it
    // (the chroot tier inside `unshare --map-root-user`).
    let setgroups = setgroups
        && fs::read_to_string("/proc/self/setgroups").map_or(true, |s| s.trim() != "deny");
    match proc::fork().map_err(|e| SetupFailure::new(Stage::Init, "fork init", &e))? {
        proc::Fork::Child => {
            let how = How {
                tier,
                setgroups,
                full_map,
                bare,
            };
            let code = match init(&spec, &files, how, output) {
                Ok(code) => code,
                Err(failure) => {
                    let _ = protocol::send(output, &ToParent::Failed(failure));
                    SETUP_FAILED
                }
            };
            proc::exit_now(code)
        }
        proc::Fork::Parent(pid) => {
            // Only the init and the command report from here on; this
            // process keeps its end open until it exits, after the init.
            match proc::wait_pid(pid) {
                Ok(proc::WaitStatus::Exited(code)) => Ok(code),
                Ok(proc::WaitStatus::Signaled(sig)) => Ok(128 + sig),
                Err(e) => Err(SetupFailure::new(Stage::Init, "wait for init", &e)),
            }
        }
    }
}

fn flag_names(flags: ns::NsFlags) -> String {
    [
        (ns::USER, "CLONE_NEWUSER"),
        (ns::MOUNT, "CLONE_NEWNS"),
        (ns::PID, "CLONE_NEWPID"),
        (ns::IPC, "CLONE_NEWIPC"),
        (ns::UTS, "CLONE_NEWUTS"),
        (ns::NET, "CLONE_NEWNET"),
    ]
    .iter()
    .filter(|(f, _)| flags & f != 0)
    .map(|(_, n)| *n)
    .collect::<Vec<_>>()
    .join("|")
}

/// How the init sets the sandbox up.
#[derive(Clone, Copy)]
struct How {
    tier: Tier,
    /// setgroups(2) is allowed.
    setgroups: bool,
    /// Ids other than 0 are mapped.
    full_map: bool,
    /// No namespaces at all: chroot only.
    bare: bool,
}

/// Pid 1 of the sandbox: set up, start the command, reap until it ends.
fn init(
    spec: &ProcessSpec,
    files: &StepFiles,
    how: How,
    output: &mut File,
) -> Result<i32, SetupFailure> {
    // The first process only waits for us; if it dies (kiln killed it, or
    // kiln died), so do we, and with pid 1 the whole namespace.
    proc::set_parent_death_signal(libc::SIGKILL)
        .map_err(|e| SetupFailure::new(Stage::Init, "set parent-death signal", &e))?;
    let mut mounted = if how.bare {
        super::rootfs::chroot_only(&spec.rootfs)?
    } else {
        super::rootfs::setup(spec, how.tier, files, how.full_map)?
    };
    let net =
        |action: &'static str| move |e: io::Error| SetupFailure::new(Stage::Network, action, &e);
    if !how.bare {
        match ns::set_hostname(&spec.hostname) {
            Ok(()) => {}
            // A container runtime's seccomp profile may refuse sethostname
            // to callers without CAP_SYS_ADMIN in the *outer* namespace
            // (podman's default does), although the new UTS namespace is
            // ours: the step then keeps the container's hostname, which
            // only `hostname` itself would notice.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => mounted.notes.push(format!(
                "sethostname {:?}: {e}; steps see the container's hostname",
                spec.hostname
            )),
            Err(e) => return Err(net("sethostname")(e)),
        }
    }
    if spec.network == Network::None {
        ns::loopback_up().map_err(net("bring up lo"))?;
    }
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    let creds = user::resolve(&spec.user, &read("/etc/passwd"), &read("/etc/group"))
        .map_err(|e| SetupFailure::msg(Stage::User, format!("user {:?}: {e}", spec.user)))?;
    let cwd = if spec.cwd.is_empty() {
        "/"
    } else {
        spec.cwd.as_str()
    };
    fs::create_dir_all(cwd)
        .map_err(|e| SetupFailure::new(Stage::Workdir, format!("create {cwd}"), &e))?;
    let ready = ToParent::Ready {
        created: mounted.created,
        notes: mounted.notes,
        fixed: mounted.fixed,
    };
    protocol::send(output, &ready)
        .map_err(|e| SetupFailure::new(Stage::Init, "report ready", &e))?;

    let command =
        match proc::fork().map_err(|e| SetupFailure::new(Stage::Init, "fork command", &e))? {
            proc::Fork::Child => {
                // Without a pid namespace, the command's process group is
                // what the init kills when the command ends.
                if how.bare {
                    if let Err(e) = proc::new_process_group() {
                        let f = SetupFailure::new(Stage::Init, "setpgid", &e);
                        let _ = protocol::send(output, &ToParent::Failed(f));
                        proc::exit_now(SETUP_FAILED)
                    }
                }
                let chown = super::seccomp::wanted(spec, how.tier == Tier::Rootless, how.full_map);
                let failure = start_command(spec, &creds, cwd, how.setgroups, chown);
                let _ = protocol::send(output, &ToParent::Failed(failure));
                proc::exit_now(SETUP_FAILED)
            }
            proc::Fork::Parent(pid) => pid,
        };
    loop {
        match proc::wait_any() {
            Ok(Some((pid, status))) if pid == command => {
                if how.bare {
                    let _ = proc::kill(-command, libc::SIGKILL);
                }
                let (code, signal) = match status {
                    proc::WaitStatus::Exited(code) => (code, None),
                    proc::WaitStatus::Signaled(sig) => (128 + sig, Some(sig)),
                };
                // A command whose own start failed already reported it.
                if code != SETUP_FAILED || signal.is_some() {
                    let _ = protocol::send(output, &ToParent::Exited { code, signal });
                }
                return Ok(code);
            }
            Ok(Some(_)) => {} // an orphan reaped
            Ok(None) => return Err(SetupFailure::msg(Stage::Init, "the command vanished")),
            Err(e) => return Err(SetupFailure::new(Stage::Init, "wait", &e)),
        }
    }
}

/// In the command's process: credentials, workdir, exec. Returns only on failure.
fn start_command(
    spec: &ProcessSpec,
    creds: &Credentials,
    cwd: &str,
    setgroups: bool,
    emulate_chown: bool,
) -> SetupFailure {
    if let Err(e) = proc::set_parent_death_signal(libc::SIGKILL) {
        return SetupFailure::new(Stage::Init, "set parent-death signal", &e);
    }
    let user_fail = |action: String, e: io::Error| {
        SetupFailure::new(Stage::User, format!("{action} (user {:?})", spec.user), &e)
    };
    if setgroups {
        if let Err(e) = proc::set_groups(&creds.groups) {
            return user_fail(format!("setgroups {:?}", creds.groups), e);
        }
    }
    if let Err(e) = proc::set_ids(creds.uid, creds.gid) {
        let hint = if setgroups {
            ""
        } else {
            "; only root exists with a single-id map"
        };
        return user_fail(format!("set uid {} gid {}{hint}", creds.uid, creds.gid), e);
    }
    if let Err(e) = std::env::set_current_dir(cwd) {
        return SetupFailure::new(Stage::Workdir, format!("chdir {cwd}"), &e);
    }
    let mut env = spec.env.clone();
    let has = |k: &str| {
        spec.env
            .iter()
            .any(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k)
    };
    if !has("PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has("HOME") {
        env.push(format!("HOME={}", creds.home.as_deref().unwrap_or("/")));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_owned();
    let Some(argv0) = spec.argv.first() else {
        return SetupFailure::msg(Stage::Exec, "empty command");
    };
    let Some(program) = lookup(argv0, &path_var) else {
        return SetupFailure {
            stage: Stage::Exec,
            action: format!("{argv0}: executable file not found in $PATH ({path_var})"),
            errno: Some(libc::ENOENT),
        };
    };
    let to_c = |items: &[String]| {
        items
            .iter()
            .map(|s| sys::ffi::cstr(s))
            .collect::<io::Result<Vec<CString>>>()
    };
    let (argv, envp, path) = match (
        to_c(&spec.argv),
        to_c(&env),
        CString::new(program.as_os_str().as_bytes()),
    ) {
        (Ok(a), Ok(e), Ok(p)) => (a, e, p),
        _ => return SetupFailure::msg(Stage::Exec, "argv or env contains a NUL byte"),
    };
    // The report pipe, the pipe from kiln and anything kiln inherited.
    if let Err(e) = proc::cloexec_from(3) {
        return SetupFailure::new(Stage::Exec, "close descriptors above 2 on exec", &e);
    }
    // Last, so kiln's own setup above still sees real chown results.
    if emulate_chown {
        if let Err(e) = crate::sys::seccomp::emulate_chown() {
            return SetupFailure::new(
                Stage::Exec,
                "install the chown-emulation seccomp filter",
                &e,
            );
        }
    }
    let err = proc::execve(&path, &argv, &envp);
    SetupFailure::new(Stage::Exec, format!("exec {}", program.display()), &err)
}

/// `argv0` itself when it has a slash, else the first executable file
/// named `argv0` in `path_var`'s directories.
fn lookup(argv0: &str, path_var: &str) -> Option<PathBuf> {
    if argv0.contains('/') {
        return Some(PathBuf::from(argv0));
    }
    path_var
        .split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(argv0))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

//! Running a step's process in a sandbox.
//!
//! kiln re-executes itself (`/proc/self/exe __sandbox`, dispatched by
//! `main` before any thread starts, because unshare(CLONE_NEWUSER) refuses
//! multi-threaded callers) and talks to that process over two pipes:
//!
//! ```text
//! parent                              sandbox process (fd 3 in, fd 4 out)
//!   Start{spec, tier, files}   ──▶    unshare(user, mount, pid, ipc, uts[, net])
//!                              ◀──    Unshared
//!   write id maps (newuidmap…)
//!   Mapped                     ──▶    fork init (pid 1): mounts, pivot_root,
//!                                     hostname, lo, USER lookup, workdir
//!                              ◀──    Ready{created}
//!                                     fork command: setgroups/setuid, chdir, execve
//!                              ◀──    Exited{code, signal}   (or Failed{stage, errno} at any point)
//! ```
//!
//! The command's stdout and stderr are kiln's own, or (a build) the write
//! end of a pipe that an [`OutputStream`] drains and cuts into lines.
//!
//! When the command ends, the init exits and the kernel kills every other
//! process of the pid namespace. Each process of the sandbox gets SIGKILL
//! when its parent dies, so killing (or losing) kiln ends the whole step.
//!
//! ```no_run
//! use kiln::exec::{Executor, Isolation, ProcessSpec, Sandbox};
//! let mut spec = ProcessSpec::new(vec!["/bin/sh".into(), "-c".into(), "id".into()], "/tmp/rootfs");
//! spec.env.push("FOO=bar".into());
//! let outcome = Sandbox::new(Isolation::Auto).run(&spec)?;
//! assert!(outcome.status.success());
//! # Ok::<(), kiln::exec::ExecError>(())
//! ```

mod child;
mod error;
mod idmap;
mod isolation;
mod owner_fixes;
mod parent;
mod protocol;
mod rootfs;
mod seccomp;
mod spec;
mod stream;
mod user;
mod userns;

pub use child::sandbox_main;
pub use error::{Attempt, ExecError, SetupFailure, Stage};
pub use idmap::{plan as plan_idmap, IdMap, IdRange};
pub use isolation::Isolation;
pub use parent::{Executor, ExitStatus, Output, RunOutcome, Sandbox, Stdin};
pub use protocol::SANDBOX_ARG;
pub use spec::{
    AppliedFix, IdMapChoice, Mount, MountKind, Network, OwnerFix, ProcessSpec, RootFs, DEFAULT_PATH,
};
pub use stream::{OutputStream, Piece};
pub use user::{resolve as resolve_user, Credentials};
pub use userns::{helper_main as userns_helper_main, UsernsError, UsernsHelper, USERNS_ARG};

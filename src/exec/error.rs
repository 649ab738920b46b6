//! Errors of the sandbox, on both sides of the pipe.

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

/// The setup stage of the sandbox child that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading the spec from the parent.
    Spec,
    /// Creating the namespaces.
    Unshare,
    /// Waiting for the parent to write the id maps.
    IdMap,
    /// Mounting the root filesystem, /proc, /dev, /etc files, extra mounts.
    Mount,
    /// pivot_root (or chroot) into the root filesystem.
    Pivot,
    /// Hostname, loopback device.
    Network,
    /// Resolving and switching to USER.
    User,
    /// Creating or entering the working directory.
    Workdir,
    /// Starting the command (PATH lookup, execve).
    Exec,
    /// The sandbox's init (fork, wait).
    Init,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Spec => "read spec",
            Stage::Unshare => "unshare namespaces",
            Stage::IdMap => "id maps",
            Stage::Mount => "mount",
            Stage::Pivot => "pivot_root",
            Stage::Network => "network/hostname",
            Stage::User => "switch user",
            Stage::Workdir => "workdir",
            Stage::Exec => "exec",
            Stage::Init => "init",
        })
    }
}

/// A setup failure inside the sandbox child, sent to the parent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupFailure {
    pub stage: Stage,
    /// What was being done, with its path (`mount proc on /x/proc`).
    pub action: String,
    /// The kernel's errno, when a system call failed.
    pub errno: Option<i32>,
}

impl SetupFailure {
    pub(crate) fn new(stage: Stage, action: impl Into<String>, err: &io::Error) -> SetupFailure {
        SetupFailure {
            stage,
            action: format!("{}: {err}", action.into()),
            errno: err.raw_os_error(),
        }
    }

    pub(crate) fn msg(stage: Stage, action: impl Into<String>) -> SetupFailure {
        SetupFailure {
            stage,
            action: action.into(),
            errno: None,
        }
    }
}

impl fmt::Display for SetupFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stage, self.action)
    }
}

/// One isolation tier the probe tried, and the kernel's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub tier: &'static str,
    /// What was refused (`unshare(CLONE_NEWUSER|CLONE_NEWNS)`), with the errno text.
    pub refused: String,
    /// The call the kernel refused and its errno, when one was (not for
    /// "needs root").
    pub refusal: Option<Refusal>,
}

/// A system call of the probe that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// unshare(CLONE_NEWUSER…) itself.
    UnshareUser(i32),
    /// Writing the id maps or mounting inside a new user namespace.
    MapsOrMounts(i32),
    /// unshare(CLONE_NEWNS) as root.
    MountAndChroot(i32),
}

/// Errors of `exec`.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("start sandbox process {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("sandbox setup failed at {0}")]
    Setup(SetupFailure),
    #[error("sandbox protocol: {0}")]
    Protocol(String),
    #[error("talk to the sandbox process")]
    Pipe(#[source] io::Error),
    #[error("write id maps of sandbox process {pid}: {what}")]
    IdMap { pid: u32, what: String },
    #[error("resolve {path}")]
    Path {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("wait for the sandbox process")]
    Wait(#[source] io::Error),
    #[error("{}", no_isolation_message(.0))]
    NoIsolation(Vec<Attempt>),
    #[error("isolation {0} needs root (run kiln as root, or use --isolation rootless)")]
    NeedsRoot(&'static str),
    #[error("the command is empty")]
    EmptyCommand,
}

fn no_isolation_message(attempts: &[Attempt]) -> String {
    let mut out = String::from("no isolation tier works here; tried:");
    for a in attempts {
        out.push_str(&format!("\n  - {}: {}", a.tier, a.refused));
    }
    let refusal = attempts.iter().find_map(|a| a.refusal);
    let why = match refusal {
        Some(Refusal::UnshareUser(errno)) => match errno {
            libc::EPERM => format!(
                "user namespaces refused (unshare CLONE_NEWUSER: {}): a seccomp profile, \
                 AppArmor or SELinux refuses them to a process without CAP_SYS_ADMIN \
                 (Docker's and containerd's default seccomp profiles do; podman's does not)",
                errno_name(errno)
            ),
            libc::ENOSPC => format!(
                "user namespaces refused (unshare CLONE_NEWUSER: {}): the limit \
                 user.max_user_namespaces is 0 (or used up) in this container or on the node",
                errno_name(errno)
            ),
            _ => format!(
                "user namespaces refused (unshare CLONE_NEWUSER: {})",
                errno_name(errno)
            ),
        },
        Some(Refusal::MapsOrMounts(errno)) => format!(
            "a user namespace was created but id maps or mounts inside it were refused ({}): \
             AppArmor (Ubuntu's kernel.apparmor_restrict_unprivileged_userns) or a seccomp \
             profile that refuses mount",
            errno_name(errno)
        ),
        Some(Refusal::MountAndChroot(errno)) => format!(
            "mount namespaces and chroot refused ({})",
            errno_name(errno)
        ),
        None => "user namespaces refused".to_owned(),
    };
    out.push('\n');
    out.push_str(&why);
    out.push_str(
        "\nto allow the rootless tier: on Kubernetes set `hostUsers: false` in the pod spec, \
         or give the container a seccompProfile that permits unshare and clone with \
         CLONE_NEWUSER and mount (type Localhost, or Unconfined) and an AppArmor profile \
         that allows them; with docker or podman: `--security-opt seccomp=unconfined` (or a \
         profile that permits unshare and mount), or podman's default profile; \
         check that user.max_user_namespaces is not 0; \
         or run kiln as root in the container (runAsUser: 0) for the chroot tier, which \
         needs no user namespace",
    );
    out
}

/// `EPERM` for 1, and so on for the errnos a namespace probe meets.
pub(crate) fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOSPC => "ENOSPC",
        libc::ENOSYS => "ENOSYS",
        libc::EINVAL => "EINVAL",
        libc::EUSERS => "EUSERS",
        _ => return format!("errno {errno}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootless(refusal: Refusal, refused: &str) -> Attempt {
        Attempt {
            tier: "rootless",
            refused: refused.into(),
            refusal: Some(refusal),
        }
    }

    #[test]
    fn no_tier_message_names_the_refusal_and_the_settings() {
        let msg = no_isolation_message(&[
            rootless(
                Refusal::UnshareUser(libc::EPERM),
                "unshare(CLONE_NEWUSER|CLONE_NEWNS): Operation not permitted (os error 1)",
            ),
            Attempt {
                tier: "chroot",
                refused: "needs root (kiln runs as uid 1000)".into(),
                refusal: None,
            },
        ]);
        for needle in [
            "no isolation tier works here; tried:\n  - rootless: unshare(CLONE_NEWUSER|CLONE_NEWNS)",
            "\n  - chroot: needs root",
            "user namespaces refused (unshare CLONE_NEWUSER: EPERM): a seccomp profile",
            "hostUsers: false",
            "seccompProfile",
            "runAsUser: 0",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing:\n{msg}");
        }
        let msg = no_isolation_message(&[rootless(Refusal::UnshareUser(libc::ENOSPC), "x")]);
        assert!(
            msg.contains("ENOSPC") && msg.contains("user.max_user_namespaces is 0"),
            "{msg}"
        );
        let msg = no_isolation_message(&[rootless(Refusal::MapsOrMounts(libc::EACCES), "x")]);
        assert!(msg.contains("(EACCES): AppArmor"), "{msg}");
        assert_eq!(errno_name(12345), "errno 12345");
    }
}

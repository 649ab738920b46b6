//! Isolation tiers and the probe that picks one.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::layer::OverlayXattrs;
use crate::sys::{ns, proc};

use super::error::{errno_name, Attempt, ExecError, Refusal};
use super::protocol::Tier;

/// How a step is isolated (`--isolation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// Rootless when the kernel allows it, else chroot when running as
    /// root, else an error naming what was refused.
    #[default]
    Auto,
    /// User, mount, pid, ipc and uts namespaces (network when `none`).
    Rootless,
    /// Root without a user namespace (containers that forbid them): mount,
    /// pid, ipc and uts namespaces, no id maps.
    Chroot,
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isolation::Auto => "auto",
            Isolation::Rootless => "rootless",
            Isolation::Chroot => "chroot",
        })
    }
}

impl FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Isolation, String> {
        match s {
            "auto" => Ok(Isolation::Auto),
            "rootless" => Ok(Isolation::Rootless),
            "chroot" => Ok(Isolation::Chroot),
            other => Err(format!(
                "unknown isolation {other:?} (auto, rootless, chroot)"
            )),
        }
    }
}

impl Isolation {
    /// The tier this choice runs with. `Auto` probes the kernel once per
    /// process (in a throwaway child, so safe with threads) and caches the
    /// answer; an explicit tier is taken as given (`Chroot` needs root).
    pub(crate) fn resolve(self) -> Result<Tier, ExecError> {
        match self {
            Isolation::Rootless => Ok(Tier::Rootless),
            Isolation::Chroot => {
                if proc::effective_ids().0 != 0 {
                    return Err(ExecError::NeedsRoot("chroot"));
                }
                Ok(Tier::Chroot)
            }
            Isolation::Auto => {
                static PROBED: OnceLock<Result<Tier, Vec<Attempt>>> = OnceLock::new();
                PROBED
                    .get_or_init(probe)
                    .clone()
                    .map_err(ExecError::NoIsolation)
            }
        }
    }

    /// Which xattrs the unpacked lower layers of a step in this (resolved)
    /// tier carry their overlay whiteouts in: `trusted.*` only for a chroot
    /// that can mount overlay as real root. A chroot without a mount
    /// namespace (root without CAP_SYS_ADMIN, kaniko's situation) never
    /// mounts overlay and may not even write `trusted.*` xattrs, so it gets
    /// `user.*`, which the walk snapshotter reads as well.
    pub fn overlay_xattrs(self) -> OverlayXattrs {
        match self {
            Isolation::Chroot if mount_namespaces_work() => OverlayXattrs::Trusted,
            _ => OverlayXattrs::User,
        }
    }

    /// What `Auto` would pick here, without running anything else.
    pub fn probe() -> Result<Isolation, ExecError> {
        Ok(match Isolation::Auto.resolve()? {
            Tier::Rootless => Isolation::Rootless,
            Tier::Chroot => Isolation::Chroot,
        })
    }
}

/// Whether this process may create a mount namespace (probed once).
fn mount_namespaces_work() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| ns::probe(ns::MOUNT, None).is_ok())
}

fn probe() -> Result<Tier, Vec<Attempt>> {
    let (uid, gid) = proc::effective_ids();
    let describe = |flags: &str, f: ns::ProbeFailure| {
        let err = std::io::Error::from_raw_os_error(f.errno);
        match f.step {
            ns::ProbeStep::Unshare => format!("unshare({flags}): {err}"),
            step => format!("{} after unshare({flags}): {err}", step.describe()),
        }
    };
    let mut attempts = Vec::new();
    match ns::probe(ns::USER | ns::MOUNT, Some((uid, gid))) {
        Ok(()) => {
            tracing::debug!("isolation: rootless (user and mount namespaces work)");
            return Ok(Tier::Rootless);
        }
        Err(f) => attempts.push(Attempt {
            tier: "rootless",
            refused: describe("CLONE_NEWUSER|CLONE_NEWNS", f),
            refusal: Some(match f.step {
                ns::ProbeStep::Unshare | ns::ProbeStep::Fork => Refusal::UnshareUser(f.errno),
                _ => Refusal::MapsOrMounts(f.errno),
            }),
        }),
    }
    if uid != 0 {
        attempts.push(Attempt {
            tier: "chroot",
            refused: "needs root (kiln runs as uid ".to_owned() + &uid.to_string() + ")",
            refusal: None,
        });
        return Err(attempts);
    }
    // Root with user namespaces refused is kaniko's situation: say once
    // that steps run in the chroot tier, and why.
    let mount_ns = match ns::probe(ns::MOUNT, None) {
        Ok(()) => {
            tracing::warn!(
                "isolation: chroot tier, as root without a user namespace ({} refused)",
                attempts[0].refused
            );
            return Ok(Tier::Chroot);
        }
        Err(f) => (describe("CLONE_NEWNS", f), f.errno),
    };
    match ns::probe_chroot() {
        Ok(()) => {
            tracing::warn!(
                "isolation: chroot tier without namespaces, as root ({} refused; {} refused)",
                attempts[0].refused,
                mount_ns.0
            );
            Ok(Tier::Chroot)
        }
        Err(f) => {
            let err = std::io::Error::from_raw_os_error(f.errno);
            attempts.push(Attempt {
                tier: "chroot",
                refused: format!("{}; chroot: {err} ({})", mount_ns.0, errno_name(f.errno)),
                refusal: Some(Refusal::MountAndChroot(mount_ns.1)),
            });
            Err(attempts)
        }
    }
}

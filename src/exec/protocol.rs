//! The messages between kiln and its sandbox process: one JSON document per
//! line, each line written with a single write_all. The sandbox's processes
//! take turns (the first process until it forks the init, the init until it
//! forks the command, the command until it execs, the init after the
//! command ended), so their lines never interleave.

use std::io::{self, BufRead, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::error::SetupFailure;
use super::spec::{AppliedFix, ProcessSpec};

/// The hidden first argument that makes kiln a sandbox process.
pub const SANDBOX_ARG: &str = "__sandbox";
/// Descriptor, in the sandbox process, of the pipe from the parent.
pub const FROM_PARENT_FD: i32 = 3;
/// Descriptor, in the sandbox process, of the pipe to the parent.
pub const TO_PARENT_FD: i32 = 4;

/// The resolved isolation tier the sandbox process sets up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Rootless,
    Chroot,
}

/// The contents of the step's /etc/resolv.conf, /etc/hosts and
/// /etc/hostname, bind-mounted over the root filesystem's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFiles {
    pub resolv_conf: String,
    pub hosts: String,
    pub hostname: String,
}

/// Parent → sandbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToChild {
    /// First message: what to run.
    Start {
        spec: Box<ProcessSpec>,
        tier: Tier,
        files: StepFiles,
    },
    /// The id maps are written; `setgroups` says whether setgroups(2) is
    /// allowed (false with a single-id map).
    Mapped { setgroups: bool, full_map: bool },
}

/// Sandbox → parent.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToParent {
    /// The namespaces exist; the parent may write the id maps. `bare`: the
    /// chroot tier got no namespaces at all (the kernel refused a mount
    /// namespace), so the step runs with a plain chroot.
    Unshared { bare: bool },
    /// Everything is mounted and the root switched; the command is about to
    /// start. `created`: container paths of mount points that were missing
    /// and were created in the root filesystem; `notes`: fallbacks taken
    /// (the parent logs them as warnings).
    Ready {
        created: Vec<String>,
        notes: Vec<String>,
        /// The spec's `owner_fixes` that were applied.
        #[serde(default)]
        fixed: Vec<AppliedFix>,
    },
    /// A setup stage failed.
    Failed(SetupFailure),
    /// The command ended: exit code, or the signal that killed it.
    Exited { code: i32, signal: Option<i32> },
}

/// Writes `msg` as one line with a single write.
pub fn send(out: &mut impl Write, msg: &impl Serialize) -> io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

/// Reads one message; `Ok(None)` at end of stream.
pub fn receive<T: DeserializeOwned>(input: &mut impl BufRead) -> io::Result<Option<T>> {
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

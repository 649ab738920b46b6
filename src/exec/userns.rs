//! A helper process inside a user namespace with a step's id map, for work
//! the caller cannot do as itself: reading, then removing, what a rootless
//! step left owned by subordinate ids (apt's `_apt` makes 0700 directories
//! that the host user cannot list). In that namespace the helper is root
//! with `CAP_DAC_OVERRIDE`/`CAP_DAC_READ_SEARCH` over every mapped id, and
//! what it creates is the caller's on the host (`buildah unshare` does the
//! same).
//!
//! kiln re-executes itself (`/proc/self/exe __userns`, dispatched by `main`
//! before any thread starts: unshare(CLONE_NEWUSER) refuses multi-threaded
//! callers) and speaks JSON lines over the child's stdin and stdout:
//!
//! ```text
//! parent                          helper
//!                          ◀──    Unshared  (or Failed{action, errno})
//!   write id maps (newuidmap…)
//!   Mapped                 ──▶
//!   request                ──▶    serve(request)
//!                          ◀──    response
//!   …  (end of stdin)             exits 0
//! ```
//!
//! What the requests are is the caller's business (`build::finish`); this
//! module only starts, maps, relays and ends the process.

use std::io::{self, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::sys::{ns, proc};

use super::error::ExecError;
use super::idmap::{self, IdMap};
use super::protocol;

/// The hidden first argument that makes kiln a user-namespace helper.
pub const USERNS_ARG: &str = "__userns";

/// Exit code of a helper whose setup failed (reported on stdout first).
const SETUP_FAILED: i32 = 125;

/// Why the helper could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("user-namespace helper: start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("user-namespace helper: {action}: {}", io::Error::from_raw_os_error(*errno))]
    Setup { action: String, errno: i32 },
    #[error("user-namespace helper: id maps: {0}")]
    IdMap(#[source] ExecError),
    #[error("user-namespace helper: {what}: {source}")]
    Pipe {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("user-namespace helper: {0}")]
    Protocol(String),
}

/// Helper → parent, before the first request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Hello {
    Unshared,
    Failed { action: String, errno: i32 },
}

/// Parent → helper, once the maps are written.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mapped {
    Mapped,
}

/// A running helper. Dropping it closes its stdin (it exits) and waits.
#[derive(Debug)]
pub struct UsernsHelper {
    child: Child,
    to_child: Option<ChildStdin>,
    from_child: BufReader<ChildStdout>,
}

impl UsernsHelper {
    /// Starts `program __userns` (`program` must be kiln: its `main`
    /// dispatches the argument) and gives it `map` as the sandbox gets it
    /// for caller `uid`/`gid`. Blocks until the helper is ready for requests.
    pub fn start(
        program: &Path,
        map: &IdMap,
        uid: u32,
        gid: u32,
    ) -> Result<UsernsHelper, UsernsError> {
        let mut cmd = Command::new(program);
        cmd.arg(USERNS_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SIGKILL to the helper if this thread dies, so it never outlives kiln.
        let mut child =
            proc::spawn_with_fds(&mut cmd, &[], Some(libc::SIGKILL)).map_err(|source| {
                UsernsError::Spawn {
                    program: program.display().to_string(),
                    source,
                }
            })?;
        let (Some(to_child), Some(from_child)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(UsernsError::Protocol("no pipes to the helper".into()));
        };
        let mut helper = UsernsHelper {
            child,
            to_child: Some(to_child),
            from_child: BufReader::new(from_child),
        };
        match helper.receive::<Hello>("read the helper's greeting")? {
            Hello::Unshared => {}
            Hello::Failed { action, errno } => return Err(UsernsError::Setup { action, errno }),
        }
        idmap::apply(helper.child.id(), map, uid, gid).map_err(UsernsError::IdMap)?;
        helper.send(&Mapped::Mapped, "confirm the id maps")?;
        Ok(helper)
    }

    /// Sends one request and returns the helper's answer.
    pub fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        request: &Req,
    ) -> Result<Resp, UsernsError> {
        self.send(request, "send a request")?;
        self.receive("read the answer")
    }

    fn send(&mut self, msg: &impl Serialize, what: &'static str) -> Result<(), UsernsError> {
        let out = self
            .to_child
            .as_mut()
            .ok_or_else(|| UsernsError::Protocol("the helper was closed".into()))?;
        protocol::send(out, msg).map_err(|source| UsernsError::Pipe { what, source })
    }

    fn receive<T: DeserializeOwned>(&mut self, what: &'static str) -> Result<T, UsernsError> {
        match protocol::receive(&mut self.from_child) {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => {
                let status = self.end();
                Err(UsernsError::Protocol(format!(
                    "{what}: the helper exited ({status})"
                )))
            }
            Err(source) => Err(UsernsError::Pipe { what, source }),
        }
    }

    /// Closes the helper's stdin and waits for it; a description of how it ended.
    fn end(&mut self) -> String {
        drop(self.to_child.take());
        match self.child.wait() {
            Ok(status) => status.to_string(),
            Err(e) => format!("wait failed: {e}"),
        }
    }
}

impl Drop for UsernsHelper {
    fn drop(&mut self) {
        // End of stdin ends the helper's loop; it has nothing left to do.
        let status = self.end();
        tracing::trace!(%status, "user-namespace helper ended");
    }
}

/// Entry point of `kiln __userns`: unshares a user namespace, waits for its
/// id maps, then answers each request line with `serve`'s response until
/// stdin ends. Returns the exit code. Must run before any thread starts.
pub fn helper_main<Req, Resp>(mut serve: impl FnMut(Req) -> Resp) -> i32
where
    Req: DeserializeOwned,
    Resp: Serialize,
{
    let stdin = io::stdin();
    let mut input = stdin.lock();
    let mut output = io::stdout().lock();
    if let Err(e) = ns::unshare(ns::USER) {
        let failed = Hello::Failed {
            action: "unshare(CLONE_NEWUSER)".into(),
            errno: e.raw_os_error().unwrap_or(libc::EINVAL),
        };
        let _ = protocol::send(&mut output, &failed);
        return SETUP_FAILED;
    }
    if protocol::send(&mut output, &Hello::Unshared).is_err() {
        return SETUP_FAILED;
    }
    match protocol::receive::<Mapped>(&mut input) {
        Ok(Some(Mapped::Mapped)) => {}
        // The parent gave up (its own error says why).
        _ => return SETUP_FAILED,
    }
    loop {
        let request = match protocol::receive::<Req>(&mut input) {
            Ok(Some(r)) => r,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("kiln {USERNS_ARG}: bad request: {e}");
                return SETUP_FAILED;
            }
        };
        let response = serve(request);
        if protocol::send(&mut output, &response).is_err() {
            return SETUP_FAILED;
        }
        if output.flush().is_err() {
            return SETUP_FAILED;
        }
    }
}

//! kiln's side of a sandbox: start `kiln __sandbox`, hand it the spec,
//! write its id maps, follow its stages, return the exit status.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, BufReader};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, Once};

use crate::sys::proc;

use super::error::{ExecError, SetupFailure};
use super::idmap::{self, IdMap};
use super::isolation::Isolation;
use super::protocol::{
    self, StepFiles, Tier, ToChild, ToParent, FROM_PARENT_FD, SANDBOX_ARG, TO_PARENT_FD,
};
use super::spec::{AppliedFix, MountKind, Network, ProcessSpec, RootFs};

/// How the command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl ExitStatus {
    /// The exit code a shell would report: the code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }

    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
}

/// The result of a command that started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOutcome {
    pub status: ExitStatus,
    /// Container paths (`/proc`, `/etc/resolv.conf`, …) of mount points the
    /// sandbox created because the root filesystem lacked them, parents
    /// before children. They are empty files or directories that the step
    /// did not make: a layer writer should leave them out.
    pub created: Vec<String>,
    /// The spec's `owner_fixes` the sandbox applied, with the change time
    /// each path had right after.
    pub fixed: Vec<AppliedFix>,
    /// The id map the sandbox ran with.
    pub idmap: IdMap,
    /// The tier it ran in (`Rootless` or `Chroot`, never `Auto`).
    pub isolation: Isolation,
    /// Chroot tier without any namespace (the kernel refused them): no
    /// fresh /proc or /dev, the root's own /etc files, no pid namespace.
    pub bare_chroot: bool,
}

/// Runs one process spec to completion.
pub trait Executor {
    /// Runs `spec`, its stdout/stderr going where the executor's
    /// [`Output`] says, and returns how it ended. A command that starts and fails is `Ok` with a non-zero
    /// status; a sandbox that cannot be set up is `Err` naming the stage and
    /// errno. When it returns, no process of the step is left. Blocking;
    /// not idempotent (the command runs each time).
    fn run(&self, spec: &ProcessSpec) -> Result<RunOutcome, ExecError>;
}

/// Where the command's stdin comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stdin {
    /// /dev/null, as for a RUN step.
    #[default]
    Null,
    /// kiln's own stdin.
    Inherit,
}

/// Where the command's stdout and stderr go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    /// kiln's own stdout and stderr.
    #[default]
    Inherit,
    /// Both to kiln's stderr (a build keeps its stdout for the image id).
    Stderr,
    /// Discarded.
    Null,
    /// Both to this descriptor, for kiln to read (the write end of an
    /// [`super::OutputStream`]). The caller keeps it open until `run`
    /// returns; the sandbox gets its own copies.
    Fd(RawFd),
}

/// The namespace sandbox (see the module docs).
#[derive(Clone, Debug)]
pub struct Sandbox {
    isolation: Isolation,
    program: PathBuf,
    stdin: Stdin,
    output: Output,
}

impl Default for Sandbox {
    fn default() -> Sandbox {
        Sandbox::new(Isolation::Auto)
    }
}

impl Sandbox {
    /// A sandbox of the given isolation, re-executing `/proc/self/exe`
    /// (which must be the kiln binary: its `main` dispatches `__sandbox`).
    pub fn new(isolation: Isolation) -> Sandbox {
        Sandbox {
            isolation,
            program: PathBuf::from("/proc/self/exe"),
            stdin: Stdin::Null,
            output: Output::Inherit,
        }
    }

    /// Re-executes `program` instead of `/proc/self/exe` (for library users
    /// whose own binary is not kiln).
    pub fn program(mut self, program: impl Into<PathBuf>) -> Sandbox {
        self.program = program.into();
        self
    }

    pub fn stdin(mut self, stdin: Stdin) -> Sandbox {
        self.stdin = stdin;
        self
    }

    pub fn output(mut self, output: Output) -> Sandbox {
        self.output = output;
        self
    }
}

impl Executor for Sandbox {
    fn run(&self, spec: &ProcessSpec) -> Result<RunOutcome, ExecError> {
        if spec.argv.is_empty() {
            return Err(ExecError::EmptyCommand);
        }
        let tier = self.isolation.resolve()?;
        let span = tracing::info_span!("sandbox", ?tier, argv = ?spec.argv);
        let _guard = span.enter();
        let (uid, gid) = proc::effective_ids();
        let map = match tier {
            Tier::Rootless => idmap::plan(spec.idmap, uid),
            Tier::Chroot => IdMap::None,
        };
        tracing::debug!(?map, "id map");
        let spec = normalize(spec)?;
        let files = step_files(&spec);
        self.start_and_follow(&spec, tier, files, map, uid, gid)
    }
}

impl Sandbox {
    fn start_and_follow(
        &self,
        spec: &ProcessSpec,
        tier: Tier,
        files: StepFiles,
        map: IdMap,
        uid: u32,
        gid: u32,
    ) -> Result<RunOutcome, ExecError> {
        let (to_child_r, mut to_child_w) = io::pipe().map_err(ExecError::Pipe)?;
        let (from_child_r, from_child_w) = io::pipe().map_err(ExecError::Pipe)?;
        let mut cmd = Command::new(&self.program);
        cmd.arg(SANDBOX_ARG).stdin(match self.stdin {
            Stdin::Null => Stdio::null(),
            Stdin::Inherit => Stdio::inherit(),
        });
        match self.output {
            Output::Inherit => {}
            Output::Null => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
            Output::Stderr => {
                let err = io::stderr()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(ExecError::Pipe)?;
                cmd.stdout(Stdio::from(err));
            }
            // Placed on 1 and 2 with the protocol pipes below.
            Output::Fd(_) => {}
        }
        let mut fds = vec![
            (to_child_r.as_raw_fd(), FROM_PARENT_FD),
            (from_child_w.as_raw_fd(), TO_PARENT_FD),
        ];
        if let Output::Fd(fd) = self.output {
            fds.extend([(fd, 1), (fd, 2)]);
        }
        // SIGKILL to the sandbox if this thread dies: with it goes its init
        // and so the whole pid namespace.
        let mut child =
            proc::spawn_with_fds(&mut cmd, &fds, Some(libc::SIGKILL)).map_err(|source| {
                ExecError::Spawn {
                    program: self.program.display().to_string(),
                    source,
                }
            })?;
        drop(to_child_r);
        drop(from_child_w);
        let pid = child.id();
        let mapping = Mapping {
            map: &map,
            pid,
            uid,
            gid,
        };
        let result = follow(
            spec,
            tier,
            files,
            &mapping,
            &mut to_child_w,
            &mut BufReader::new(from_child_r),
        );
        if result.is_err() {
            // Whatever state it is in, end it (and its namespace) now.
            let _ = child.kill();
        }
        drop(to_child_w);
        let waited = child.wait().map_err(ExecError::Wait)?;
        let report = result?;
        let status = match (report.exited, waited.code(), waited.signal()) {
            (Some((_, Some(sig))), _, _) => ExitStatus::Signal(sig),
            (_, Some(code), _) => ExitStatus::Code(code),
            (_, None, Some(sig)) => {
                return Err(ExecError::Protocol(format!(
                    "the sandbox process was killed by signal {sig}"
                )))
            }
            _ => {
                return Err(ExecError::Protocol(format!(
                    "the sandbox process ended oddly: {waited}"
                )))
            }
        };
        tracing::debug!(?status, "sandbox ended");
        Ok(RunOutcome {
            status,
            created: report.created,
            fixed: report.fixed,
            idmap: report.map,
            isolation: match tier {
                Tier::Rootless => Isolation::Rootless,
                Tier::Chroot => Isolation::Chroot,
            },
            bare_chroot: report.bare,
        })
    }
}

/// What the sandbox reported.
struct Report {
    created: Vec<String>,
    fixed: Vec<AppliedFix>,
    bare: bool,
    exited: Option<(i32, Option<i32>)>,
    /// The id map written (a single-id map when the helpers failed).
    map: IdMap,
}

/// The id map to write for the sandbox process `pid` of caller `uid`/`gid`.
struct Mapping<'a> {
    map: &'a IdMap,
    pid: u32,
    uid: u32,
    gid: u32,
}

/// Sends the spec, answers `Unshared` with the id maps, and collects the
/// sandbox's reports until it closes its end.
fn follow(
    spec: &ProcessSpec,
    tier: Tier,
    files: StepFiles,
    mapping: &Mapping<'_>,
    out: &mut io::PipeWriter,
    input: &mut BufReader<io::PipeReader>,
) -> Result<Report, ExecError> {
    let start = ToChild::Start {
        spec: Box::new(spec.clone()),
        tier,
        files,
    };
    protocol::send(out, &start).map_err(ExecError::Pipe)?;
    let mut ready = None;
    let mut exited = None;
    let mut report_bare = false;
    let mut applied = None;
    let mut failure: Option<SetupFailure> = None;
    while let Some(msg) = protocol::receive::<ToParent>(input).map_err(ExecError::Pipe)? {
        match msg {
            ToParent::Unshared { bare } => {
                if bare {
                    static WARN: Once = Once::new();
                    WARN.call_once(|| {
                        tracing::warn!(
                            "the kernel refused a mount namespace (no CAP_SYS_ADMIN?): running \
                             steps with a plain chroot: no /proc, device nodes made in /dev \
                             instead of bound, the root's own /etc/resolv.conf and hosts, and no \
                             pid namespace"
                        )
                    });
                }
                report_bare = bare;
                let map =
                    idmap::apply_or_fall_back(mapping.pid, mapping.map, mapping.uid, mapping.gid)?;
                // Only a single-id map denies setgroups and lacks ids but 0.
                let full = map != IdMap::Single;
                applied = Some(map);
                let mapped = ToChild::Mapped {
                    setgroups: full,
                    full_map: full,
                };
                protocol::send(out, &mapped).map_err(ExecError::Pipe)?;
                tracing::debug!("namespaces created, id maps written");
            }
            ToParent::Ready {
                created,
                notes,
                fixed,
            } => {
                for note in notes {
                    warn_once(&note);
                }
                tracing::debug!(?created, fixed = fixed.len(), "sandbox ready");
                ready = Some((created, fixed));
            }
            ToParent::Failed(f) => failure = failure.or(Some(f)),
            ToParent::Exited { code, signal } => exited = Some((code, signal)),
        }
    }
    if let Some(f) = failure {
        return Err(ExecError::Setup(f));
    }
    let Some((created, fixed)) = ready else {
        return Err(ExecError::Protocol(
            "the sandbox process ended before it was ready".into(),
        ));
    };
    Ok(Report {
        created,
        fixed,
        exited,
        bare: report_bare,
        map: applied.unwrap_or_else(|| mapping.map.clone()),
    })
}

/// `spec` with its host paths made absolute (the sandbox changes directory
/// while it mounts), and hostname `kiln` and workdir `/` when empty.
fn normalize(spec: &ProcessSpec) -> Result<ProcessSpec, ExecError> {
    let abs = |p: &mut PathBuf| -> Result<(), ExecError> {
        *p = std::path::absolute(&*p).map_err(|source| ExecError::Path {
            path: p.display().to_string(),
            source,
        })?;
        Ok(())
    };
    let mut spec = spec.clone();
    if spec.hostname.is_empty() {
        spec.hostname = "kiln".to_owned();
    }
    if spec.cwd.is_empty() {
        spec.cwd = "/".to_owned();
    }
    match &mut spec.rootfs {
        RootFs::Dir(dir) => abs(dir)?,
        RootFs::Overlay {
            lower,
            upper,
            work,
            target,
        } => {
            for p in lower.iter_mut().chain([upper, work, target]) {
                abs(p)?;
            }
        }
        RootFs::FuseOverlay {
            lower,
            upper,
            work,
            target,
            daemon_root,
            ..
        } => {
            for p in lower.iter_mut().chain([upper, work, target, daemon_root]) {
                abs(p)?;
            }
        }
    }
    for m in &mut spec.mounts {
        if let MountKind::Bind { source, .. } = &mut m.kind {
            abs(source)?;
        }
    }
    Ok(spec)
}

/// The step's /etc/resolv.conf, /etc/hosts and /etc/hostname.
fn step_files(spec: &ProcessSpec) -> StepFiles {
    let resolv_conf = match spec.network {
        Network::None => String::new(),
        Network::Host => host_resolv_conf(),
    };
    let hostname = &spec.hostname;
    StepFiles {
        resolv_conf,
        hosts: format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        ),
        hostname: format!("{hostname}\n"),
    }
}

/// The host's resolv.conf; with systemd-resolved's stub (127.0.0.53, fine
/// on the host network) the upstream list is preferred when readable.
fn host_resolv_conf() -> String {
    let main = fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if main.contains("127.0.0.53") {
        if let Ok(upstream) = fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            return upstream;
        }
    }
    main
}

/// Warns about a sandbox fallback once per process: the same container
/// limitation applies to every step, and one line says it.
fn warn_once(note: &str) {
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let first = SEEN
        .lock()
        .map(|mut seen| seen.insert(note.to_owned()))
        .unwrap_or(true);
    if first {
        tracing::warn!("sandbox: {note}");
    }
}

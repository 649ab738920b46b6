//! BuildKit as the reference builder: Debian's `docker.io` daemon, started
//! here when it is not running, driven through `/usr/bin/docker` (Debian's
//! client; another `docker` earlier in `PATH` may need buildx), with images
//! exported to OCI layouts through `docker save` and `skopeo copy`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::tools;

/// Debian's docker client, whose built-in BuildKit session needs no buildx.
pub const DOCKER: &str = "/usr/bin/docker";
/// Where a dockerd started by the tests logs; it is left running for later
/// runs, so the log outlives the test.
pub const DOCKERD_LOG: &str = "/var/tmp/kiln-dockerd.log";
/// Upper bound on dockerd answering `docker info` after it was started.
const DOCKERD_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(250);

/// A `docker` command with BuildKit on.
pub fn docker() -> Command {
    if !Path::new(DOCKER).is_file() {
        panic!("{}", tools::install_hint("docker"));
    }
    let mut cmd = Command::new(DOCKER);
    cmd.env("DOCKER_BUILDKIT", "1").stdin(Stdio::null());
    cmd
}

fn docker_answers() -> bool {
    docker()
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Makes sure a docker daemon answers, once per process: when `docker info`
/// fails, starts `dockerd` (detached, in its own session, logging to
/// [`DOCKERD_LOG`]) and waits at most 60 s for it. The daemon is left
/// running. Its defaults work on this kind of VM (cgroup v1 hierarchy with
/// the cgroupfs driver, runc, overlay2), so no daemon options are passed.
pub fn ensure_dockerd() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(start_dockerd);
}

fn start_dockerd() {
    if docker_answers() {
        return;
    }
    let dockerd = tools::require("dockerd");
    let log = File::options()
        .create(true)
        .append(true)
        .open(DOCKERD_LOG)
        .unwrap_or_else(|err| panic!("open {DOCKERD_LOG}: {err}"));
    let mut cmd = Command::new(tools::require("setsid"));
    cmd.arg(&dockerd)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("duplicate the log file handle"))
        .stderr(log);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|err| panic!("start `{}`: {err}", tools::describe(&cmd)));
    let deadline = Instant::now() + DOCKERD_TIMEOUT;
    while !docker_answers() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "dockerd exited with {status} before answering\n--- {DOCKERD_LOG} ---\n{}",
                log_tail()
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "dockerd did not answer `docker info` within {DOCKERD_TIMEOUT:?}\n--- {DOCKERD_LOG} ---\n{}",
                log_tail()
            );
        }
        sleep(POLL);
    }
    // The daemon outlives this process on purpose; the handle is dropped
    // without waiting (the zombie, if any, is reaped when the tests exit).
    drop(child);
}

fn log_tail() -> String {
    let text = fs::read_to_string(DOCKERD_LOG).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// One `docker build`.
#[derive(Clone, Debug, Default)]
pub struct Build {
    pub context: PathBuf,
    pub dockerfile: Option<PathBuf>,
    pub tag: String,
    pub build_args: Vec<(String, String)>,
    /// `(id, source file)`.
    pub secrets: Vec<(String, PathBuf)>,
    /// `(id, variable, value)`: `--secret id=ID,env=VAR` with VAR set.
    pub secret_env: Vec<(String, String, String)>,
    pub target: Option<String>,
}

impl Build {
    /// The `docker build` command line, always without the layer cache so
    /// every run really builds.
    pub fn command(&self) -> Command {
        let mut cmd = docker();
        cmd.args(["build", "--no-cache", "--progress=plain", "-t", &self.tag]);
        if let Some(file) = &self.dockerfile {
            cmd.arg("-f").arg(file);
        }
        for (key, value) in &self.build_args {
            cmd.arg("--build-arg").arg(format!("{key}={value}"));
        }
        for (id, src) in &self.secrets {
            cmd.arg("--secret")
                .arg(format!("id={id},src={}", src.display()));
        }
        for (id, var, value) in &self.secret_env {
            cmd.env(var, value)
                .arg("--secret")
                .arg(format!("id={id},env={var}"));
        }
        if let Some(target) = &self.target {
            cmd.arg("--target").arg(target);
        }
        cmd.arg(&self.context);
        cmd
    }

    /// Builds; `Err` carries the command and its output.
    pub fn run(&self) -> Result<(), String> {
        ensure_dockerd();
        let mut cmd = self.command();
        let output = cmd
            .output()
            .unwrap_or_else(|err| panic!("run `{}`: {err}", tools::describe(&cmd)));
        check(&cmd, output)
    }
}

fn check(cmd: &Command, output: Output) -> Result<(), String> {
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "`{}` failed with {}\n{}{}",
        tools::describe(cmd),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// Exports the daemon's image `tag` into the OCI layout `layout` as
/// `oci_tag` (`docker save`, then `skopeo copy docker-archive:… oci:…`),
/// using `scratch` for the archive. Returns the image config exactly as
/// docker saved it: the OCI conversion drops docker-only fields (Shell,
/// OnBuild, Healthcheck), which the comparison needs.
pub fn save_oci(tag: &str, scratch: &Path, layout: &Path, oci_tag: &str) -> serde_json::Value {
    let archive = scratch.join(format!("{oci_tag}.docker.tar"));
    tools::run(docker().arg("save").arg("-o").arg(&archive).arg(tag));
    let member = |name: &str| -> serde_json::Value {
        let out = tools::run(Command::new("tar").arg("-xOf").arg(&archive).arg(name));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("parse {name} of {}: {e}", archive.display()))
    };
    let manifest = member("manifest.json");
    let config_name = manifest[0]["Config"]
        .as_str()
        .unwrap_or_else(|| panic!("no Config in the manifest.json of {}", archive.display()))
        .to_string();
    let config = member(&config_name);
    tools::run(
        Command::new(tools::require("skopeo"))
            .arg("copy")
            .arg("--quiet")
            .arg(format!("docker-archive:{}", archive.display()))
            .arg(format!("oci:{}:{oci_tag}", layout.display())),
    );
    let _ = fs::remove_file(&archive);
    config
}

/// Removes the daemon's image `tag` (its layers stay cached if shared).
pub fn remove_image(tag: &str) {
    let _ = docker()
        .args(["image", "rm", "--force", tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Loads the plain rootfs tarball `tar` as image `reference` and pushes it
/// (to a loopback registry, which dockerd treats as insecure by default).
pub fn import_and_push(tar: &Path, reference: &str) {
    ensure_dockerd();
    tools::run(
        docker()
            .arg("import")
            .arg("--change")
            .arg("CMD [\"bash\"]")
            .arg(tar)
            .arg(reference),
    );
    tools::run(docker().arg("push").arg(reference));
}

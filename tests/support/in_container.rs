//! Running kiln inside containers (issue 6, "builds inside containers"):
//! a small image for it and the two runtimes of this machine, Debian's
//! `podman` and `docker.io`.
//!
//! The image holds busybox-static, the C libraries the kiln binary under
//! test links (from `ldd`; none when it is static), `/etc/passwd` with root
//! and `builder` (uid 1000) whose home is writable, and `/etc/subuid` and
//! `/etc/subgid` ranges for `builder`, as a CI runner image has them. It
//! has no `newuidmap`, no fuse-overlayfs and no other helper, so kiln must
//! manage without them. kiln itself is bind-mounted read-only at
//! [`KILN_IN_CONTAINER`], so the image does not change with every build of
//! kiln's code.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::busybox::BUSYBOX;
use super::{buildkit, tools};

/// Where the containers see the kiln binary under test.
pub const KILN_IN_CONTAINER: &str = "/usr/local/bin/kiln";
/// The unprivileged user of the image.
pub const BUILDER_UID: u32 = 1000;

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
builder:x:1000:1000:builder:/home/builder:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";
const GROUP: &str = "\
root:x:0:
builder:x:1000:
nogroup:x:65534:
";
const SUBIDS: &str = "builder:100000:65536\n";

/// Whether `CI` is set to something true: a missing runtime then fails the
/// suite instead of skipping it.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Whether the test should skip because `available` is false (saying
/// `what` is missing); under CI that panics instead: every tier must run.
pub fn skip_unless(available: bool, what: &str) -> bool {
    if available {
        return false;
    }
    assert!(
        !under_ci(),
        "{what} (CI is set, so this fails instead of skipping)"
    );
    println!("container tiers: {what}; skipped");
    true
}

/// Writes the image's root filesystem as a tarball in `dir` and returns
/// its path. Needs root (the home of `builder` is chowned to 1000).
/// `with_uidmap`: also the host's setuid `newuidmap` and `newgidmap` (and
/// their libraries), as an image that installed Debian's `uidmap` has.
pub fn rootfs_tar(dir: &Path, with_uidmap: bool) -> PathBuf {
    let root = dir.join("rootfs");
    for d in [
        "bin",
        "etc",
        "tmp",
        "root",
        "proc",
        "sys",
        "dev",
        "home/builder",
        "usr/local/bin",
        "var/lib",
        "ctx",
        "out",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::set_permissions(root.join("root"), fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(
        root.join("home/builder"),
        Some(BUILDER_UID),
        Some(BUILDER_UID),
    )
    .unwrap();
    fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    let applets = tools::run_stdout(Command::new(BUSYBOX).arg("--list"));
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        if applet != "busybox" {
            symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    for (name, text) in [
        ("passwd", PASSWD),
        ("group", GROUP),
        ("subuid", SUBIDS),
        ("subgid", SUBIDS),
    ] {
        fs::write(root.join("etc").join(name), text).unwrap();
    }
    let mut binaries = vec![PathBuf::from(env!("CARGO_BIN_EXE_kiln"))];
    if with_uidmap {
        for tool in ["newuidmap", "newgidmap"] {
            let host = tools::require(tool);
            let inside = root.join("bin").join(tool);
            fs::copy(&host, &inside).unwrap();
            fs::set_permissions(&inside, fs::Permissions::from_mode(0o4755)).unwrap();
            binaries.push(host);
        }
    }
    let libs: std::collections::BTreeSet<PathBuf> =
        binaries.iter().flat_map(|b| linked_libraries(b)).collect();
    for lib in libs {
        let inside = root.join(lib.strip_prefix("/").unwrap());
        fs::create_dir_all(inside.parent().unwrap()).unwrap();
        // fs::copy follows the symlinks ldd names (libc.so.6 → libc-2.36.so).
        fs::copy(&lib, &inside).unwrap_or_else(|e| panic!("copy {}: {e}", lib.display()));
    }
    let tar = dir.join("rootfs.tar");
    tools::run(
        Command::new("tar")
            .arg("--numeric-owner")
            .arg("-C")
            .arg(&root)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    );
    tar
}

/// The shared libraries (absolute paths, the loader included) that `ldd`
/// lists for `binary`; empty for a static binary.
fn linked_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().unwrap();
    // ldd exits 1 for "not a dynamic executable".
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A container runtime driven from the tests, as root.
pub enum Runtime {
    /// Debian's dockerd (started when not running), its own image store.
    Docker,
    /// podman over a throwaway store (vfs: nothing mounted outlives it),
    /// runc (crun refuses this VM's hybrid cgroups), cgroupfs, file events.
    Podman { dir: tempfile::TempDir },
}

impl Runtime {
    pub fn docker() -> Runtime {
        buildkit::ensure_dockerd();
        Runtime::Docker
    }

    pub fn podman() -> Runtime {
        let dir = tempfile::Builder::new()
            .prefix("kiln-tiers-podman-")
            .tempdir()
            .unwrap();
        Runtime::Podman { dir }
    }

    /// Whether docker (Debian's client and daemon) is installed.
    pub fn docker_installed() -> bool {
        Path::new(buildkit::DOCKER).is_file() && tools::find("dockerd").is_some()
    }

    /// Whether podman and runc are installed.
    pub fn podman_installed() -> bool {
        tools::find("podman").is_some() && tools::find("runc").is_some()
    }

    pub fn name(&self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Podman { .. } => "podman",
        }
    }

    pub fn command(&self) -> Command {
        match self {
            Runtime::Docker => buildkit::docker(),
            Runtime::Podman { dir } => {
                let tmp = dir.path();
                let mut c = Command::new(tools::require("podman"));
                c.arg("--root")
                    .arg(tmp.join("root"))
                    .arg("--runroot")
                    .arg(tmp.join("run"))
                    .args(["--storage-driver", "vfs"])
                    .arg("--runtime")
                    .arg(tools::require("runc"))
                    .args(["--cgroup-manager", "cgroupfs"])
                    .args(["--events-backend", "file"])
                    .env("XDG_CONFIG_HOME", tmp.join("config"))
                    .stdin(Stdio::null());
                c
            }
        }
    }

    /// Imports the tarball `tar` as image `tag`.
    pub fn import(&self, tar: &Path, tag: &str) {
        tools::run(self.command().arg("import").arg(tar).arg(tag));
    }

    /// Removes image `tag` (docker's store outlives the test; podman's
    /// goes with its directory).
    pub fn remove_image(&self, tag: &str) {
        if let Runtime::Docker = self {
            buildkit::remove_image(tag);
        }
    }

    /// `run --rm` with host networking (the loopback registry), rlimits
    /// no higher than this process's own (podman asks for more than root
    /// without CAP_SYS_RESOURCE may set), `options`, then `image` and `argv`.
    /// Returns the output and the wall time.
    pub fn run(&self, options: &[String], image: &str, argv: &[&str]) -> (Output, Duration) {
        let mut cmd = self.command();
        cmd.args(["run", "--rm", "--network", "host"]);
        if let Runtime::Podman { .. } = self {
            let nofile = hard_limit("Max open files")
                .unwrap_or(1_048_576)
                .min(1_048_576);
            let nproc = hard_limit("Max processes").unwrap_or(32_768).min(32_768);
            cmd.arg("--ulimit")
                .arg(format!("nofile={nofile}:{nofile}"))
                .arg("--ulimit")
                .arg(format!("nproc={nproc}:{nproc}"));
        }
        cmd.args(options).arg(image).args(argv);
        let started = Instant::now();
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("run `{}`: {e}", tools::describe(&cmd)));
        (out, started.elapsed())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Runtime::Podman { .. } = self {
            // Containers that outlived `--rm` (a killed test) hold the store.
            let _ = self
                .command()
                .args(["rm", "--all", "--force", "--time", "0"])
                .output();
        }
    }
}

/// The hard limit `resource` (a row title of /proc/self/limits).
fn hard_limit(resource: &str) -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with(resource))?;
    let rest: Vec<&str> = line[resource.len()..].split_whitespace().collect();
    rest.get(1)?.parse().ok()
}

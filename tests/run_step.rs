//! RUN steps end to end (`kiln debug run-step`): the conformance table over
//! every snapshotter × isolation tier this machine allows, apt over Debian,
//! and what is left of a step's processes. Rootless tiers run as the
//! unprivileged test user; the chroot tier runs as root.

#[path = "run_step_adopt.rs"]
mod adopt;
#[path = "run_step_conformance.rs"]
mod conformance;
#[path = "run_step_debian.rs"]
mod debian;
#[path = "run_step_process.rs"]
mod process;
#[path = "run_step_userns.rs"]
mod userns;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::busybox::busybox_layout;
use crate::support::tools;
use crate::support::user::{running_as_root, TestUser};

/// How a step is isolated in a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Rootless as the test user with its subordinate ranges.
    Subuid,
    /// Rootless as the test user with `--idmap single`.
    Single,
    /// Root, `--isolation chroot`.
    Chroot,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Subuid => "rootless-subuid",
            Tier::Single => "rootless-single",
            Tier::Chroot => "chroot",
        }
    }

    /// Whether container ids other than 0 are real (chown works).
    pub fn full_ids(self) -> bool {
        self != Tier::Single
    }

    /// The tiers this machine allows: the rootless ones need the test user
    /// (with subordinate ids for `Subuid`), chroot needs root.
    pub fn available() -> Vec<Tier> {
        let mut tiers = Vec::new();
        let user = TestUser::get();
        if user.has_subids() {
            tiers.push(Tier::Subuid);
        }
        tiers.push(Tier::Single);
        if running_as_root() {
            tiers.push(Tier::Chroot);
        }
        tiers
    }
}

/// The snapshotters this machine supports: the kernel overlay needs Linux
/// ≥ 5.11 (userxattr), fuse-overlayfs its binary and /dev/fuse; walk always.
pub fn snapshotters() -> Vec<&'static str> {
    let mut out = Vec::new();
    if kernel_at_least(5, 11) {
        out.push("overlay");
    }
    if tools::find("fuse-overlayfs").is_some() && Path::new("/dev/fuse").exists() {
        if running_as_root() {
            // No udev on the test VMs: /dev/fuse may be 0600 (see issue 4).
            tools::run(Command::new("chmod").args(["0666", "/dev/fuse"]));
        }
        out.push("fuse-overlayfs");
    }
    out.push("walk");
    out
}

fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// A kiln store for one tier: a temp dir owned by whoever runs kiln.
pub struct Kiln {
    pub tier: Tier,
    pub user: TestUser,
    pub dir: tempfile::TempDir,
}

impl Kiln {
    pub fn new(tier: Tier) -> Kiln {
        let user = TestUser::get();
        let dir = match tier {
            Tier::Chroot => tempfile::Builder::new()
                .prefix("kiln-step-root-")
                .tempdir()
                .unwrap(),
            _ => user.tempdir(),
        };
        Kiln { tier, user, dir }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// `kiln --root STORE ARGS…` as the tier's user.
    pub fn command(&self, args: &[&str]) -> Command {
        let kiln = env!("CARGO_BIN_EXE_kiln");
        let mut c = match self.tier {
            Tier::Chroot => Command::new(kiln),
            _ => self.user.command(kiln),
        };
        c.arg("--root").arg(self.store()).args(args);
        c
    }

    /// A directory inside the tier's temp dir that its user owns.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).unwrap();
        if self.tier != Tier::Chroot {
            self.user.own(&p);
        }
        p
    }

    /// The busybox fixture image, imported as `name`.
    pub fn import_busybox(&self, name: &str) {
        let layout = self.subdir("busybox-layout");
        let img = busybox_layout(&layout, "base");
        if self.tier != Tier::Chroot {
            self.user.own(&layout);
        }
        let blob = img.blob(&img.layer);
        tools::run(&mut self.command(&["import", blob.to_str().unwrap(), name]));
    }

    /// `kiln debug run-step IMAGE --format json ARGS -- SCRIPT` in this tier.
    pub fn step_command(
        &self,
        image: &str,
        snapshotter: &str,
        args: &[&str],
        script: &str,
    ) -> Command {
        let mut c = self.command(&["debug", "run-step", image, "--format", "json"]);
        c.args(["--snapshotter", snapshotter]);
        match self.tier {
            Tier::Subuid => c.args(["--isolation", "rootless"]),
            Tier::Single => c.args(["--isolation", "rootless", "--idmap", "single"]),
            Tier::Chroot => c.args(["--isolation", "chroot"]),
        };
        c.args(args).arg("--").arg(script);
        c
    }

    /// Runs a step that must succeed; returns its JSON report.
    pub fn step(&self, image: &str, snapshotter: &str, args: &[&str], script: &str) -> Value {
        let mut c = self.step_command(image, snapshotter, args, script);
        let out = tools::run(&mut c);
        report(&out)
    }

    /// The blob `digest` (`sha256:…`) of the store.
    pub fn blob(&self, digest: &str) -> PathBuf {
        self.store()
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    }
}

/// The JSON line a `--format json` step printed.
pub fn report(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no JSON report in:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON report {line:?}: {e}"))
}

/// `tar -tvzf --numeric-owner` of a layer blob: one `(mode, uid/gid, path)`
/// per entry.
pub fn list_layer(blob: &Path) -> Vec<(String, String, String)> {
    let out = tools::run_stdout(
        Command::new("tar")
            .arg("--numeric-owner")
            .arg("-tvzf")
            .arg(blob),
    );
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // mode owner size date time path [-> target]
            let path = f[5..].join(" ");
            let path = path
                .split(" -> ")
                .next()
                .unwrap()
                .split(" link to ")
                .next()
                .unwrap()
                .to_string();
            (f[0].to_string(), f[1].to_string(), path)
        })
        .collect()
}

//! Builds inside containers (issue 6, item 3): the same Dockerfile, with
//! RUN steps, built by kiln running inside a container in each situation a
//! CI runner or a pod puts it in, and pushed to a loopback registry:
//!
//! - (a) user 1000 under podman's default seccomp profile: rootless tier,
//!   single-id map (the image has no newuidmap), kernel overlay;
//! - (b) root under a seccomp profile that refuses user namespaces
//!   (tests/container_tiers/seccomp-no-userns.json), without
//!   CAP_SYS_ADMIN, as kaniko runs: chroot tier, walk snapshotter;
//! - (c) root of a container that runs in its own user namespace (podman
//!   `--uidmap`, what `--userns=auto` and Kubernetes `hostUsers: false`
//!   do): rootless tier with the container's own map;
//! - (d) each pushes the same manifest digest as a build on the host (by
//!   the unprivileged test user), with SOURCE_DATE_EPOCH=0.
//!
//! And where no tier works (user 1000 under Docker's default seccomp
//! profile), the error says what was refused and which setting allows it.
//! The runtime decisions are in README.md, "Building inside containers".
//!
//! The tests need root (to drive dockerd and podman). They skip when that
//! or a runtime is missing, unless `CI` is set: then they fail.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::busybox::busybox_layout;
use crate::support::in_container::{
    rootfs_tar, skip_unless, Runtime, BUILDER_UID, KILN_IN_CONTAINER,
};
use crate::support::registry::Registry;
use crate::support::tools;
use crate::support::user::{running_as_root, TestUser};

const NO_USERNS_PROFILE: &str = "tests/container_tiers/seccomp-no-userns.json";

/// The build every tier runs: RUN steps that create, change, link and
/// delete root-owned files (a single-id map records them as a full map
/// does), a COPY between them, and a write to /dev/null (which the chroot
/// tier without mounts must still provide). No /proc: that tier has none.
const DOCKERFILE: &str = "\
FROM {BASE}
RUN mkdir -p /opt/app && echo hello > /opt/app/greeting && ln -s greeting /opt/app/link && rm /etc/group
COPY note.txt /opt/app/note.txt
RUN cat /opt/app/note.txt >> /opt/app/greeting && chmod 0600 /opt/app/greeting \\
    && echo discarded > /dev/null && id -u > /opt/app/uid
";

/// A loopback registry holding the busybox base, and the build context.
struct Setup {
    registry: Registry,
    dir: tempfile::TempDir,
    context: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let registry = Registry::start();
        let dir = tempfile::Builder::new()
            .prefix("kiln-tiers-")
            .tempdir()
            .unwrap();
        // Readable by the test user and by the containers' users.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let base = busybox_layout(&dir.path().join("base"), "base");
        let base_ref = format!("{}/tiers/base:1", registry.addr());
        tools::run(
            Command::new(tools::require("skopeo"))
                .args(["copy", "--quiet", "--dest-tls-verify=false"])
                .arg(format!("oci:{}", base.reference()))
                .arg(format!("docker://{base_ref}")),
        );
        let context = dir.path().join("context");
        fs::create_dir(&context).unwrap();
        fs::write(
            context.join("Dockerfile"),
            DOCKERFILE.replace("{BASE}", &base_ref),
        )
        .unwrap();
        fs::write(context.join("note.txt"), "from the context\n").unwrap();
        for p in [
            &context,
            &context.join("Dockerfile"),
            &context.join("note.txt"),
        ] {
            let mode = if p.is_dir() { 0o755 } else { 0o644 };
            fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
        }
        Setup {
            registry,
            dir,
            context,
        }
    }

    fn reference(&self, name: &str) -> String {
        format!("{}/tiers/{name}:1", self.registry.addr())
    }

    /// A directory every uid may write (the containers' users differ).
    fn out_dir(&self, name: &str) -> PathBuf {
        let out = self.dir.path().join(name);
        fs::create_dir(&out).unwrap();
        fs::set_permissions(&out, fs::Permissions::from_mode(0o777)).unwrap();
        out
    }

    /// Builds and pushes on the host as the unprivileged test user; the
    /// manifest digest.
    fn host_digest(&self) -> String {
        let user = TestUser::get();
        let home = user.tempdir();
        let digest = home.path().join("digest");
        let mut cmd = user.command(env!("CARGO_BIN_EXE_kiln"));
        cmd.env("KILN_ROOT", home.path().join("store"))
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["build", "--progress", "plain", "--push", "-t"])
            .arg(self.reference("host"))
            .arg("--digestfile")
            .arg(&digest)
            .arg(&self.context);
        let started = Instant::now();
        let out = tools::run(&mut cmd);
        println!(
            "container tiers: host build (user {}) took {:.2}s\n{}",
            user.name,
            started.elapsed().as_secs_f64(),
            text(&out.stderr)
        );
        read_digest(&digest)
    }

    /// Runs `kiln build --push` in a container of `runtime` from the
    /// image `image`, with the runtime options `options`; the output, the
    /// digest it pushed (when it succeeded) and the wall time.
    fn build_in(
        &self,
        runtime: &Runtime,
        image: &str,
        name: &str,
        options: &[String],
    ) -> (Output, Option<String>, Duration) {
        let out_dir = self.out_dir(name);
        let mut all = vec![
            "-v".to_string(),
            format!("{}:{KILN_IN_CONTAINER}:ro", env!("CARGO_BIN_EXE_kiln")),
            "-v".to_string(),
            format!("{}:/ctx:ro", self.context.display()),
            "-v".to_string(),
            format!("{}:/out", out_dir.display()),
            "-e".to_string(),
            "SOURCE_DATE_EPOCH=0".to_string(),
        ];
        all.extend(options.iter().cloned());
        let reference = self.reference(name);
        let argv = [
            KILN_IN_CONTAINER,
            "build",
            "--progress",
            "plain",
            "--push",
            "-t",
            &reference,
            "--digestfile",
            "/out/digest",
            "/ctx",
        ];
        let (out, took) = runtime.run(&all, image, &argv);
        println!(
            "container tiers: ({name}) {} run with {options:?}: {} in {:.2}s\n{}",
            runtime.name(),
            out.status,
            took.as_secs_f64(),
            text(&out.stderr)
        );
        let digest = out
            .status
            .success()
            .then(|| read_digest(&out_dir.join("digest")));
        (out, digest, took)
    }
}

/// The test image in `runtime`, under a tag unique to this test; removed
/// on drop.
struct Image<'a> {
    runtime: &'a Runtime,
    tag: String,
}

impl<'a> Image<'a> {
    fn import(runtime: &'a Runtime, setup: &Setup, name: &str) -> Image<'a> {
        Image::import_with(runtime, setup, name, false)
    }

    fn import_with(
        runtime: &'a Runtime,
        setup: &Setup,
        name: &str,
        with_uidmap: bool,
    ) -> Image<'a> {
        let dir = setup.dir.path().join(format!("image-{name}"));
        fs::create_dir(&dir).unwrap();
        let tar = rootfs_tar(&dir, with_uidmap);
        let tag = format!("localhost/kiln-tiers-{name}:{}", std::process::id());
        runtime.import(&tar, &tag);
        let _ = fs::remove_dir_all(&dir);
        Image { runtime, tag }
    }
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        self.runtime.remove_image(&self.tag);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read_digest(path: &Path) -> String {
    let digest = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read the digest file {}: {e}", path.display()));
    let digest = digest.trim().to_string();
    assert!(digest.starts_with("sha256:"), "{digest:?}");
    digest
}

/// Skips (or under CI fails) unless root and `runtime` are available.
fn unavailable(docker: bool, podman: bool) -> bool {
    if skip_unless(running_as_root(), "driving docker and podman needs root") {
        return true;
    }
    if docker
        && skip_unless(
            Runtime::docker_installed(),
            "docker (docker.io) is not installed",
        )
    {
        return true;
    }
    podman
        && skip_unless(
            Runtime::podman_installed(),
            "podman and runc are not installed",
        )
}

fn assert_built(out: &Output, digest: Option<String>, tier: &str) -> String {
    let err = text(&out.stderr);
    assert!(out.status.success(), "({tier}) build failed:\n{err}");
    let digest = digest.unwrap_or_else(|| panic!("({tier}) no digest"));
    // Every RUN step ran (no cache: a fresh store in a fresh container).
    assert!(err.contains("Built in"), "({tier}) {err}");
    assert!(err.contains("3 steps run"), "({tier}) {err}");
    digest
}

/// 3(a): user 1000, podman's default seccomp profile (it allows unshare
/// and mount; Docker's does not, see the test below), no newuidmap.
#[test]
fn tier_a_rootless_user_1000_under_the_default_seccomp_profile() {
    if unavailable(false, true) {
        return;
    }
    let setup = Setup::new();
    let podman = Runtime::podman();
    let image = Image::import(&podman, &setup, "a");
    let options = [
        "--user".to_string(),
        format!("{BUILDER_UID}:{BUILDER_UID}"),
        "-e".to_string(),
        "HOME=/home/builder".to_string(),
    ];
    let (out, digest, _) = setup.build_in(&podman, &image.tag, "a", &options);
    let digest = assert_built(&out, digest, "a");
    let err = text(&out.stderr);
    // No newuidmap in the image: kiln says it maps root only.
    assert!(
        err.contains("newuidmap/newgidmap are missing") && err.contains("single-id map"),
        "{err}"
    );
    assert!(!err.contains("chroot tier"), "{err}");
    // The store is on the container's own (vfs: plain) root filesystem,
    // so kernel overlay works; without helpers kiln names it.
    assert!(
        err.contains("RUN steps use the snapshotter overlay: the first choice"),
        "{err}"
    );
    assert_eq!(digest, setup.host_digest(), "3(d): tier a against the host");
}

/// 3(a) under docker, whose default profile refuses user namespaces (see
/// the last test): with `seccomp=unconfined` user 1000 gets the rootless
/// tier, and since the store sits on the container's overlayfs root,
/// where overlay cannot put an upper dir, the walk, which kiln announces.
#[test]
fn tier_a_under_docker_with_seccomp_unconfined_uses_the_walk_and_says_so() {
    if unavailable(true, false) {
        return;
    }
    let setup = Setup::new();
    let docker = Runtime::docker();
    let image = Image::import(&docker, &setup, "a-docker");
    let options = [
        "--user".to_string(),
        format!("{BUILDER_UID}:{BUILDER_UID}"),
        "-e".to_string(),
        "HOME=/home/builder".to_string(),
        "--security-opt".to_string(),
        "seccomp=unconfined".to_string(),
    ];
    let (out, digest, _) = setup.build_in(&docker, &image.tag, "a-docker", &options);
    let digest = assert_built(&out, digest, "a-docker");
    let err = text(&out.stderr);
    assert!(err.contains("single-id map"), "{err}");
    assert!(!err.contains("chroot tier"), "{err}");
    assert!(
        err.contains("RUN steps use the snapshotter walk: overlay refused"),
        "{err}"
    );
    assert_eq!(digest, setup.host_digest(), "3(d): tier a under docker");
}

/// 3(b): root without user namespaces (and without CAP_SYS_ADMIN, as
/// docker gives root by default): kaniko's situation.
#[test]
fn tier_b_chroot_as_root_where_user_namespaces_are_refused() {
    if unavailable(true, false) {
        return;
    }
    let setup = Setup::new();
    let docker = Runtime::docker();
    let image = Image::import(&docker, &setup, "b");
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join(NO_USERNS_PROFILE);
    let options = [
        "--security-opt".to_string(),
        format!("seccomp={}", profile.display()),
    ];
    let (out, digest, _) = setup.build_in(&docker, &image.tag, "b", &options);
    let digest = assert_built(&out, digest, "b");
    let err = text(&out.stderr);
    assert!(
        err.contains("isolation: chroot tier")
            && err.contains("unshare(CLONE_NEWUSER|CLONE_NEWNS): Operation not permitted"),
        "{err}"
    );
    // No mount namespace without CAP_SYS_ADMIN, so no overlay: the walk.
    assert!(err.contains("RUN steps use the snapshotter walk"), "{err}");
    let host = setup.host_digest();
    assert_eq!(digest, host, "3(d): tier b against the host");

    // With CAP_SYS_ADMIN (a privileged build pod that still refuses user
    // namespaces) the chroot tier gets mount and pid namespaces and /proc.
    let mut privileged = options.to_vec();
    privileged.extend(["--cap-add".to_string(), "SYS_ADMIN".to_string()]);
    let (out, digest, _) = setup.build_in(&docker, &image.tag, "b-sys-admin", &privileged);
    let digest = assert_built(&out, digest, "b-sys-admin");
    assert!(
        text(&out.stderr).contains("isolation: chroot tier, as root without a user namespace"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(digest, host, "3(d): tier b with CAP_SYS_ADMIN");

    // Docker's own default profile, as root, refuses user namespaces too
    // (unshare needs CAP_SYS_ADMIN there): the same tier, the same image.
    let (out, digest, _) = setup.build_in(&docker, &image.tag, "b-default", &[]);
    let digest = assert_built(&out, digest, "b-default");
    assert!(text(&out.stderr).contains("isolation: chroot tier"));
    assert_eq!(digest, host, "3(d): docker's default profile as root");
}

/// 3(c): root of a container in its own user namespace (container root is
/// host uid 200000), like `podman run --userns=auto` and Kubernetes
/// `hostUsers: false`.
#[test]
fn tier_c_rootless_inside_a_user_namespaced_container() {
    if unavailable(false, true) {
        return;
    }
    let setup = Setup::new();
    let podman = Runtime::podman();
    let image = Image::import(&podman, &setup, "c");
    let options: Vec<String> = ["--uidmap", "0:200000:65536", "--gidmap", "0:200000:65536"]
        .map(String::from)
        .to_vec();
    // The container really is user-namespaced.
    let (out, _) = podman.run(&options, &image.tag, &["cat", "/proc/self/uid_map"]);
    let map = text(&out.stdout);
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "200000", "65536"],
        "{map}{}",
        text(&out.stderr)
    );
    let (out, digest, _) = setup.build_in(&podman, &image.tag, "c", &options);
    let digest = assert_built(&out, digest, "c");
    let err = text(&out.stderr);
    assert!(!err.contains("chroot tier"), "{err}");
    assert!(!err.contains("single-id map"), "{err}");
    assert!(!err.contains("RUN steps use the snapshotter"), "{err}");
    assert_eq!(digest, setup.host_digest(), "3(d): tier c against the host");
}

/// 3(c) with a non-root user, as a pod with `hostUsers: false` and
/// `runAsUser: 1000` runs: the image has newuidmap, but the subordinate
/// range in its /etc/subuid is not mapped in the container's user
/// namespace, so the helper fails; kiln says so and maps root only.
#[test]
fn tier_c_user_1000_whose_newuidmap_cannot_map_falls_back_to_one_id() {
    if unavailable(false, true) {
        return;
    }
    let setup = Setup::new();
    let podman = Runtime::podman();
    let image = Image::import_with(&podman, &setup, "c-user", true);
    let options: Vec<String> = [
        "--uidmap",
        "0:200000:65536",
        "--gidmap",
        "0:200000:65536",
        "--user",
        "1000:1000",
        "-e",
        "HOME=/home/builder",
    ]
    .map(String::from)
    .to_vec();
    let (out, digest, _) = setup.build_in(&podman, &image.tag, "c-user", &options);
    let digest = assert_built(&out, digest, "c-user");
    let err = text(&out.stderr);
    assert!(
        err.contains("newuidmap failed") && err.contains("using a single-id map instead"),
        "{err}"
    );
    assert!(
        err.contains("RUN steps use the snapshotter overlay"),
        "{err}"
    );
    assert_eq!(
        digest,
        setup.host_digest(),
        "3(d): tier c (user 1000) against the host"
    );
}

/// Where no tier works (a non-root user under Docker's default seccomp
/// profile, which refuses unshare without CAP_SYS_ADMIN), the error names
/// the refused call and the settings that would allow a tier.
#[test]
fn no_tier_under_dockers_default_profile_says_what_would_allow_one() {
    if unavailable(true, false) {
        return;
    }
    let setup = Setup::new();
    let docker = Runtime::docker();
    let image = Image::import(&docker, &setup, "none");
    let options = [
        "--user".to_string(),
        format!("{BUILDER_UID}:{BUILDER_UID}"),
        "-e".to_string(),
        "HOME=/home/builder".to_string(),
    ];
    let (out, digest, _) = setup.build_in(&docker, &image.tag, "none", &options);
    let err = text(&out.stderr);
    assert!(!out.status.success() && digest.is_none(), "{err}");
    for needle in [
        "no isolation tier works here; tried:",
        "rootless: unshare(CLONE_NEWUSER|CLONE_NEWNS): Operation not permitted",
        "chroot: needs root (kiln runs as uid 1000)",
        "user namespaces refused (unshare CLONE_NEWUSER: EPERM)",
        "hostUsers: false",
        "seccompProfile",
        "--security-opt seccomp=unconfined",
        "run kiln as root in the container",
    ] {
        assert!(err.contains(needle), "{needle:?} missing:\n{err}");
    }
}

//! The seeds' Dockerfiles (tests/build_seeds/*) built rootless with `kiln
//! build` as the unprivileged test user, and their results checked with
//! tools kiln did not write: `kiln save` → `podman load` → `podman run` as
//! root over a private store (or `kiln run` when the tests are not root),
//! `umoci unpack` and `tar` for the trees.
//!
//! The flask seed's base is Python from Debian packages
//! (tests/support/python_base.rs) and its `pip install` reaches PyPI.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::run_step::{list_layer, Kiln, Tier};
use crate::support::tools;
use crate::support::user::running_as_root;
use crate::support::{debian, python_base};

/// The flask app's answer (tests/build_seeds/flask-app/app.py).
const FLASK_TEXT: &str = "Hello from the rootless builder test bed!\n";
/// Upper bound on the flask app starting to answer.
const HTTP_WAIT: Duration = Duration::from_secs(90);

/// The test user, with its subordinate ids when it has them. To check a
/// seed around a rootless gap, `KILN_SEEDS_TIER=chroot` builds as root with
/// `--isolation chroot` instead (`kiln build` has no single-id option).
fn rootless() -> Kiln {
    let available = Tier::available();
    let tier = match std::env::var("KILN_SEEDS_TIER").as_deref() {
        Ok("chroot") => {
            assert!(
                available.contains(&Tier::Chroot),
                "the chroot tier needs root"
            );
            Tier::Chroot
        }
        Ok(other) => panic!("KILN_SEEDS_TIER={other}: only `chroot` is known"),
        Err(_) if available.contains(&Tier::Subuid) => Tier::Subuid,
        Err(_) => Tier::Single,
    };
    Kiln::new(tier)
}

/// A copy of the seed `tests/build_seeds/NAME` that the tier's user owns.
fn seed(kiln: &Kiln, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/build_seeds")
        .join(name);
    let dst = kiln.subdir(name);
    for entry in fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    if kiln.tier != Tier::Chroot {
        kiln.user.own(&dst);
    }
    dst
}

/// `kiln build ARGS CONTEXT`, which must succeed; returns the image id.
fn build(kiln: &Kiln, args: &[&str], ctx: &Path) -> String {
    let mut c = kiln.command(&["build"]);
    if kiln.tier == Tier::Chroot {
        c.args(["--isolation", "chroot"]);
    }
    c.args(args).arg(ctx);
    let started = Instant::now();
    let id = tools::run_stdout(&mut c).trim().to_string();
    eprintln!(
        "kiln build {} ({}): {:.1}s",
        ctx.display(),
        kiln.tier.name(),
        started.elapsed().as_secs_f64()
    );
    id
}

/// The hard limit of `resource` (as /proc/self/limits names it) for this
/// process, `None` when unlimited or unknown.
fn hard_limit(resource: &str) -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with(resource))?;
    let rest = line[resource.len()..]
        .split_whitespace()
        .collect::<Vec<_>>();
    rest.get(1)?.parse().ok()
}

/// podman as root over a throwaway store, with the flags this kind of VM
/// needs: vfs storage (no overlay mounts to leak), runc with cgroupfs
/// (crun refuses hybrid cgroups; there is no systemd to manage them), file
/// events (no journald), and in `run`, rlimits no higher than this process's
/// own (podman asks for nofile 1048576 and nproc 32768 by default, and root
/// without CAP_SYS_RESOURCE cannot raise them).
struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("kiln-seeds-podman-")
            .tempdir()
            .unwrap();
        Podman { dir }
    }

    fn command(&self) -> Command {
        let tmp = self.dir.path();
        let mut c = Command::new(tools::require("podman"));
        c.arg("--root")
            .arg(tmp.join("root"))
            .arg("--runroot")
            .arg(tmp.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(["--runtime", tools::require("runc").to_str().unwrap()])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(["--events-backend", "file"])
            .env("XDG_CONFIG_HOME", tmp.join("config"));
        c
    }

    /// `podman run --rm` options: host network and lowered rlimits.
    fn run_options() -> Vec<String> {
        let nofile = hard_limit("Max open files")
            .unwrap_or(1_048_576)
            .min(1_048_576);
        let nproc = hard_limit("Max processes").unwrap_or(32_768).min(32_768);
        vec![
            "--network".into(),
            "host".into(),
            "--ulimit".into(),
            format!("nofile={nofile}:{nofile}"),
            "--ulimit".into(),
            format!("nproc={nproc}:{nproc}"),
        ]
    }

    /// Loads a docker archive; returns the name podman gave the image.
    fn load(&self, archive: &Path) -> String {
        let out = tools::run_stdout(self.command().arg("load").arg("-i").arg(archive));
        out.lines()
            .find_map(|l| l.split_once("Loaded image").map(|(_, rest)| rest))
            .and_then(|rest| rest.split_once(':').map(|(_, name)| name.trim()))
            .unwrap_or_else(|| panic!("no `Loaded image` in podman load's output: {out}"))
            .split(',')
            .next()
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers hold mounts and a conmon each; the store goes with the dir.
        let _ = self
            .command()
            .args(["rm", "--all", "--force", "--time", "0"])
            .output();
    }
}

/// Runs a built image the way a user would: podman when the tests are root,
/// else `kiln run` (podman with a private store needs root).
enum Runner {
    Podman { podman: Podman, image: String },
    Kiln,
}

impl Runner {
    /// Hands `name` from `kiln`'s store to the runner.
    fn new(kiln: &Kiln, name: &str) -> Runner {
        if !running_as_root() {
            eprintln!("not root: checking {name} with `kiln run` instead of podman");
            return Runner::Kiln;
        }
        let archive = kiln.subdir("save").join(format!("{name}.tar"));
        tools::run(kiln.command(&["save", "-o"]).arg(&archive).arg(name));
        let podman = Podman::new();
        let image = podman.load(&archive);
        Runner::Podman { podman, image }
    }

    /// Runs the image (its CMD, or `cmd`) to completion with `env`.
    fn command(&self, kiln: &Kiln, name: &str, env: &[&str], cmd: &[&str]) -> Command {
        match self {
            Runner::Podman { podman, image } => {
                let mut c = podman.command();
                c.args(["run", "--rm"]).args(Podman::run_options());
                for e in env {
                    c.args(["-e", e]);
                }
                c.arg(image).args(cmd);
                c
            }
            Runner::Kiln => {
                let mut c = kiln.command(&["run", "--rm"]);
                for e in env {
                    c.args(["-e", e]);
                }
                c.arg(name).args(cmd);
                c
            }
        }
    }

    fn run(&self, kiln: &Kiln, name: &str, cmd: &[&str]) -> Output {
        tools::run(&mut self.command(kiln, name, &[], cmd))
    }
}

/// A server container, killed on drop.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of `GET /` on 127.0.0.1:`port`, once something answers there,
/// waiting at most [`HTTP_WAIT`]; panics (with the server's output) if the
/// server exits or never answers.
fn get_when_up(port: u16, server: &mut Server) -> String {
    let deadline = Instant::now() + HTTP_WAIT;
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                .unwrap();
            let mut response = String::new();
            s.read_to_string(&mut response).unwrap();
            let (head, body) = response
                .split_once("\r\n\r\n")
                .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
            assert!(head.starts_with("HTTP/1."), "{head}");
            assert!(head.contains(" 200 "), "{head}");
            return body.to_string();
        }
        if let Some(status) = server.child.try_wait().unwrap() {
            let mut out = String::new();
            let _ = server
                .child
                .stdout
                .take()
                .map(|mut o| o.read_to_string(&mut out));
            let _ = server
                .child
                .stderr
                .take()
                .map(|mut e| e.read_to_string(&mut out));
            panic!("the server exited ({status}) before answering on {port}:\n{out}");
        }
        assert!(
            Instant::now() < deadline,
            "nothing answered on 127.0.0.1:{port} within {HTTP_WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Exports `names` from `kiln`'s store into one OCI layout (tag = name) and
/// returns it.
fn export(kiln: &Kiln, names: &[&str]) -> PathBuf {
    let layout = kiln.subdir("export");
    for name in names {
        let dest = format!("oci:{}:{name}", layout.display());
        tools::run(&mut kiln.command(&["push", name, &dest]));
    }
    layout
}

/// `umoci unpack` of `layout:tag` into `out/tag`; returns the rootfs.
fn unpack(layout: &Path, tag: &str, out: &Path) -> PathBuf {
    let bundle = out.join(tag);
    let mut umoci = Command::new(tools::require("umoci"));
    umoci
        .args(["unpack", "--image"])
        .arg(format!("{}:{tag}", layout.display()));
    if !running_as_root() {
        umoci.arg("--rootless");
    }
    tools::run(umoci.arg(&bundle));
    bundle.join("rootfs")
}

/// Every path under `root`, relative, without following symlinks.
fn tree(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.insert(path.strip_prefix(root).unwrap().display().to_string());
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out
}

/// The layer digests of `tag`'s manifest in `layout`.
fn layers(layout: &Path, tag: &str) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"));
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.strip_prefix("sha256:").unwrap())
    };
    let m: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(manifest["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob(l["digest"].as_str().unwrap()).display().to_string())
        .collect()
}

#[test]
fn slow_seed_flask_app_from_a_python_base_answers_http() {
    let kiln = rootless();
    python_base::import_into(kiln.command(&[]), python_base::NAME);
    let ctx = seed(&kiln, "flask-app");
    let base = format!("BASE={}", python_base::NAME);
    build(&kiln, &["-t", "seed-flask", "--build-arg", &base], &ctx);

    let runner = Runner::new(&kiln, "seed-flask");
    // The image's CMD as is; only the port moves off 5000, which the
    // testbed's registry may hold on this host.
    let port = tools::free_port();
    let env = format!("FLASK_RUN_PORT={port}");
    let mut cmd = runner.command(&kiln, "seed-flask", &[&env], &[]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut server = Server {
        child: cmd.spawn().unwrap(),
    };
    let started = Instant::now();
    let body = get_when_up(port, &mut server);
    eprintln!(
        "flask answered after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(body, FLASK_TEXT);
    // pip installed flask into the image, not just the app's own files.
    let out = runner.run(
        &kiln,
        "seed-flask",
        &[
            "python3",
            "-c",
            "import flask, importlib.metadata as m; print(m.version('flask'))",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3.1.3");
}

#[test]
fn slow_python_base_pip_installs_from_pypi_in_a_rootless_run() {
    let kiln = rootless();
    python_base::import_into(kiln.command(&[]), python_base::NAME);
    let df = format!(
        "FROM {}\nRUN pip install --no-cache-dir flask==3.1.3 && python3 -m venv /venv\n",
        python_base::NAME
    );
    let ctx = kiln.subdir("pip");
    fs::write(ctx.join("Dockerfile"), df).unwrap();
    if kiln.tier != Tier::Chroot {
        kiln.user.own(&ctx);
    }
    build(&kiln, &["-t", "seed-pip"], &ctx);
    let runner = Runner::new(&kiln, "seed-pip");
    let out = runner.run(
        &kiln,
        "seed-pip",
        &[
            "sh",
            "-c",
            "python3 -c 'import importlib.metadata as m; print(m.version(\"flask\"))' \
             && command -v flask && /venv/bin/python -c 'import sys; print(sys.prefix)'",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "3.1.3\n/usr/local/bin/flask\n/venv\n"
    );
}

#[test]
fn slow_seed_apt_get_image_runs_the_installed_package() {
    let kiln = rootless();
    debian::import_into(kiln.command(&[]), "debian");
    let ctx = seed(&kiln, "apt-hello");
    build(&kiln, &["-t", "seed-apt"], &ctx);
    let runner = Runner::new(&kiln, "seed-apt");
    let out = runner.run(&kiln, "seed-apt", &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello, world!\n");
    // The package lists were removed in the same RUN, so no layer has them.
    let layout = export(&kiln, &["seed-apt"]);
    let last = layers(&layout, "seed-apt").pop().unwrap();
    let entries = list_layer(Path::new(&last));
    assert!(
        entries
            .iter()
            .any(|(_, _, p)| p.trim_start_matches("./") == "usr/bin/hello"),
        "usr/bin/hello missing from the RUN layer"
    );
    let lists: Vec<_> = entries
        .iter()
        .filter(|(_, _, p)| p.contains("var/lib/apt/lists/") && p.ends_with("_Packages"))
        .collect();
    assert!(lists.is_empty(), "apt lists in the layer: {lists:?}");
}

#[test]
fn seed_multi_stage_final_image_has_only_the_copied_artifact() {
    let kiln = rootless();
    kiln.import_busybox("busybox");
    let ctx = seed(&kiln, "multi-stage");
    build(&kiln, &["-t", "seed-multi"], &ctx);

    let runner = Runner::new(&kiln, "seed-multi");
    let out = runner.run(&kiln, "seed-multi", &[]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "artifact built in stage builder\n"
    );

    let layout = export(&kiln, &["busybox", "seed-multi"]);
    let base_layers = layers(&layout, "busybox");
    let final_layers = layers(&layout, "seed-multi");
    assert_eq!(
        final_layers[..final_layers.len() - 1],
        base_layers[..],
        "the final image's layers are the base's plus one COPY layer"
    );
    let out = tempfile::tempdir().unwrap();
    let base = tree(&unpack(&layout, "busybox", out.path()));
    let rootfs = unpack(&layout, "seed-multi", out.path());
    let image = tree(&rootfs);
    let missing: Vec<_> = base.difference(&image).collect();
    assert!(missing.is_empty(), "base files gone: {missing:?}");
    let added: BTreeSet<&str> = image.difference(&base).map(String::as_str).collect();
    let allowed: BTreeSet<&str> = [
        "usr",
        "usr/local",
        "usr/local/bin",
        "usr/local/bin/artifact",
    ]
    .into_iter()
    .collect();
    assert!(
        added.contains("usr/local/bin/artifact") && added.is_subset(&allowed),
        "the final image adds {added:?}, not just the artifact (and its parents)"
    );
    let meta = fs::metadata(rootfs.join("usr/local/bin/artifact")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o755
    );
}

#[test]
fn seed_production_image_runs_as_its_non_root_user() {
    let kiln = rootless();
    kiln.import_busybox("busybox");
    let ctx = seed(&kiln, "nonroot");
    build(&kiln, &["-t", "seed-nonroot"], &ctx);

    let runner = Runner::new(&kiln, "seed-nonroot");
    let out = runner.run(&kiln, "seed-nonroot", &[]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1234\n");
    let out = runner.run(
        &kiln,
        "seed-nonroot",
        &[
            "stat",
            "-c",
            "%u:%g %a %n",
            "/home/app/app.conf",
            "/home/app",
        ],
    );
    let stat = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stat.lines().collect();
    assert_eq!(lines[0], "1234:1234 644 /home/app/app.conf", "{stat}");
    assert!(lines[1].starts_with("1234:"), "adduser's home: {stat}");

    // The layer itself records the owner (not just what a runtime shows).
    let layout = export(&kiln, &["seed-nonroot"]);
    let last = layers(&layout, "seed-nonroot").pop().unwrap();
    let entries = list_layer(Path::new(&last));
    let conf = entries
        .iter()
        .find(|(_, _, p)| p.trim_start_matches("./") == "home/app/app.conf")
        .unwrap_or_else(|| panic!("app.conf missing from the COPY layer: {entries:?}"));
    assert_eq!(conf.1, "1234/1234", "{conf:?}");
}

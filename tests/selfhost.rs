//! kiln in its own image (issue 6): the binary is statically linked, kiln
//! builds the top-level Containerfile (from the context
//! `packaging/context.sh` writes) as the unprivileged test user, and docker
//! runs the `FROM scratch` result: `kiln --version`, then a pull and a push
//! by the name `localhost:PORT` from inside the image (the static glibc
//! resolver, the CA-less plain-HTTP loopback path, a writable `$HOME`).
//! dockerd is started when it is not running (as for the BuildKit
//! differential suite), so these tests never skip.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::buildkit::{docker, ensure_dockerd};
use crate::support::registry::Registry;
use crate::support::tools;
use crate::support::user::TestUser;

const KILN: &str = env!("CARGO_BIN_EXE_kiln");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn selfhost_binary_is_statically_linked() {
    let what = tools::run_stdout(Command::new(tools::require("file")).arg("-b").arg(KILN));
    assert!(
        what.contains("statically linked") || what.contains("static-pie linked"),
        "`file {KILN}` says: {what}(.cargo/config.toml should link glibc statically)"
    );
    // The same from the ELF program headers: no PT_INTERP, so nothing but
    // the kernel is needed to start it.
    let elf = fs::read(KILN).unwrap();
    assert_eq!(&elf[..5], b"\x7fELF\x02", "{KILN} is not a 64-bit ELF file");
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([elf[at], elf[at + 1]]));
    let phoff = usize::try_from(u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap())).unwrap();
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let p_type = u32::from_le_bytes(elf[at..at + 4].try_into().unwrap());
        assert_ne!(p_type, PT_INTERP, "{KILN} asks for a program interpreter");
    }
}

/// One entry of an image layer: type, mode, owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    dir: bool,
    mode: u32,
    uid: u64,
    gid: u64,
}

/// The merged file list of a `docker save` archive (no whiteouts expected:
/// the image only adds).
fn archive_tree(extracted: &Path) -> (BTreeMap<String, Entry>, Value) {
    let manifest: Value =
        serde_json::from_slice(&fs::read(extracted.join("manifest.json")).unwrap()).unwrap();
    let image = &manifest[0];
    let config: Value = serde_json::from_slice(
        &fs::read(extracted.join(image["Config"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let mut tree = BTreeMap::new();
    for layer in image["Layers"].as_array().unwrap() {
        let file = File::open(extracted.join(layer.as_str().unwrap())).unwrap();
        let mut archive = tar::Archive::new(file);
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let path = path.trim_end_matches('/').to_owned();
            assert!(!path.contains(".wh."), "unexpected whiteout {path}");
            tree.insert(
                path,
                Entry {
                    dir: header.entry_type().is_dir(),
                    mode: header.mode().unwrap() & 0o7777,
                    uid: header.uid().unwrap(),
                    gid: header.gid().unwrap(),
                },
            );
        }
    }
    (tree, config)
}

/// Removes what a test put into dockerd, even when it fails half-way.
struct DockerCleanup {
    images: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        for volume in &self.volumes {
            let _ = docker().args(["volume", "rm", "-f", volume]).output();
        }
        for image in &self.images {
            let _ = docker().args(["rmi", "-f", image]).output();
        }
    }
}

#[test]
fn selfhost_kiln_builds_its_own_image_and_it_runs() {
    let user = TestUser::get();
    let work = user.tempdir();
    let context = work.path().join("context");
    // The documented way: packaging/context.sh, then kiln build -f Containerfile.
    tools::run(
        user.command("sh")
            .arg(repo().join("packaging/context.sh"))
            .arg(&context)
            .arg(KILN),
    );
    let tag = format!("kiln-selfhost:{}", std::process::id());
    let archive = work.path().join("image.tar");
    let store = work.path().join("store");
    let kiln = |args: &[&str]| {
        let mut cmd = user.command(KILN);
        cmd.env("KILN_ROOT", &store).args(args);
        cmd
    };
    let mut build = kiln(&["build", "-q", "-t", &tag, "-f"]);
    build
        .arg(repo().join("Containerfile"))
        .arg("--output")
        .arg(format!("docker-archive:{}", archive.display()))
        .arg(&context);
    tools::run(&mut build);

    // What the image holds, from the archive kiln wrote: exactly the static
    // binary, its /etc files, the CA bundle and the directories; no library.
    let extracted = work.path().join("extracted");
    fs::create_dir(&extracted).unwrap();
    tools::run(
        Command::new(tools::require("tar"))
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&extracted),
    );
    let (tree, config) = archive_tree(&extracted);
    let paths: Vec<&str> = tree.keys().map(String::as_str).collect();
    assert_eq!(
        paths,
        [
            "etc",
            "etc/group",
            "etc/nsswitch.conf",
            "etc/passwd",
            "etc/ssl",
            "etc/ssl/certs",
            "etc/ssl/certs/ca-certificates.crt",
            "etc/subgid",
            "etc/subuid",
            "home",
            "home/kiln",
            "tmp",
            "usr",
            "usr/local",
            "usr/local/bin",
            "usr/local/bin/kiln",
            "workspace",
        ],
        "files of the image"
    );
    let dir = |mode, uid, gid| Entry {
        dir: true,
        mode,
        uid,
        gid,
    };
    assert_eq!(tree["tmp"], dir(0o1777, 0, 0));
    assert_eq!(tree["home"], dir(0o755, 0, 0));
    assert_eq!(tree["home/kiln"], dir(0o755, 1000, 1000));
    assert_eq!(tree["workspace"], dir(0o755, 1000, 1000));
    let file = |mode| Entry {
        dir: false,
        mode,
        uid: 0,
        gid: 0,
    };
    assert_eq!(tree["usr/local/bin/kiln"], file(0o755));
    assert_eq!(tree["etc/passwd"], file(0o644));
    assert_eq!(tree["etc/ssl/certs/ca-certificates.crt"], file(0o644));
    let passwd = fs::read_to_string(repo().join("packaging/rootfs/etc/passwd")).unwrap();
    assert!(passwd.contains("kiln:x:1000:1000:"), "{passwd}");
    let subuid = fs::read_to_string(repo().join("packaging/rootfs/etc/subuid")).unwrap();
    assert!(subuid.lines().any(|l| l.starts_with("kiln:")), "{subuid}");
    let cfg = &config["config"];
    assert_eq!(cfg["User"], "1000:1000");
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["kiln"]));
    assert_eq!(cfg["WorkingDir"], "/workspace");
    assert!(
        cfg["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "HOME=/home/kiln"),
        "{cfg}"
    );
    // dirs.tar, /etc, the CA bundle, the binary, and WORKDIR's empty layer
    // (BuildKit commits one for a directory that exists, and so does kiln).
    assert!(
        config["rootfs"]["diff_ids"].as_array().unwrap().len() == 5,
        "a FROM scratch image of five layers: {config}"
    );

    // docker runs it: `kiln --version` as the binary says it.
    ensure_dockerd();
    let volume = format!("kiln-selfhost-{}", std::process::id());
    let _cleanup = DockerCleanup {
        images: vec![tag.clone()],
        volumes: vec![volume.clone()],
    };
    let loaded = stdout(&tools::run(docker().arg("load").arg("-i").arg(&archive)));
    assert!(loaded.contains(&tag), "docker load printed: {loaded}");
    let version = stdout(&tools::run(Command::new(KILN).arg("--version")));
    let in_image = stdout(&tools::run(docker().args([
        "run",
        "--rm",
        &tag,
        "--version",
    ])));
    assert_eq!(in_image, version, "`kiln --version` inside the image");
    assert!(version.starts_with("kiln "), "{version}");

    // Inside the image, as user 1000 with $HOME on a volume docker fills from
    // the image's /home/kiln (so its owner must be 1000): pull by the name
    // localhost:PORT, then push to another repository.
    let registry = Registry::start();
    let port = registry.addr().rsplit(':').next().unwrap().to_owned();
    let pushed = format!("localhost:{port}/kiln:selfhost");
    tools::run(&mut kiln(&[
        "push",
        "-q",
        &tag,
        &format!("docker://{pushed}"),
    ]));
    let in_container = |args: &[&str]| {
        let mut cmd = docker();
        cmd.args(["run", "--rm", "--network", "host", "-v"])
            .arg(format!("{volume}:/home/kiln"))
            .arg(&tag)
            .args(args);
        cmd
    };
    tools::run(&mut in_container(&["pull", "-q", &pushed]));
    let copy = format!("localhost:{port}/kiln-copy:selfhost");
    tools::run(&mut in_container(&["push", "-q", &pushed, &copy]));
    let digest = |reference: &str| {
        let out = tools::run(
            Command::new(tools::require("skopeo"))
                .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
                .arg(format!("docker://{reference}")),
        );
        stdout(&out).trim().to_owned()
    };
    let original = digest(&pushed);
    assert!(original.starts_with("sha256:"), "{original}");
    assert_eq!(
        digest(&copy),
        original,
        "the image pushed from inside the container differs from the one pulled"
    );
    let from_container: Vec<_> = registry
        .requests()
        .into_iter()
        .filter(|(method, uri)| method == "PUT" && uri.contains("/kiln-copy/manifests/"))
        .collect();
    assert_eq!(from_container.len(), 1, "{}", registry.log());
}

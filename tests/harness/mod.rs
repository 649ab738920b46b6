//! Proves the test helpers in `support` against the real tools. (A
//! directory module: a top-level `tests/harness.rs` would also be
//! auto-discovered by Cargo as a separate test target.)

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use flate2::read::GzDecoder;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::busybox::{busybox_layout, oci_arch, BusyboxImage};
use crate::support::registry::Registry;
use crate::support::tools;
use crate::support::user::{running_as_root, TestUser, SUBID_COUNT, TEST_USER};

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|err| panic!("parse {}: {err}", path.display()))
}

#[test]
fn registry_round_trip_with_skopeo() {
    let skopeo = tools::require("skopeo");
    let registry = Registry::start();
    let work = tempfile::tempdir().expect("temporary directory");
    let image = busybox_layout(&work.path().join("layout"), "1.0");
    let remote = format!("docker://{}/kiln/busybox:{}", registry.addr(), image.tag);

    tools::run(
        Command::new(&skopeo)
            .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}", image.reference()))
            .arg(&remote),
    );
    let inspect = tools::run_stdout(
        Command::new(&skopeo)
            .args(["inspect", "--tls-verify=false"])
            .arg(&remote),
    );
    let inspect: Value = serde_json::from_str(&inspect)
        .unwrap_or_else(|err| panic!("skopeo inspect printed no JSON ({err}):\n{inspect}"));
    assert_eq!(inspect["Digest"], image.manifest.as_str(), "{inspect:#}");
    assert_eq!(
        inspect["Layers"],
        serde_json::json!([image.layer]),
        "{inspect:#}"
    );
    assert_eq!(inspect["Architecture"], oci_arch(), "{inspect:#}");

    let raw = tools::run(
        Command::new(&skopeo)
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(&remote),
    )
    .stdout;
    assert_eq!(
        sha256(&raw),
        image.manifest,
        "the registry serves other manifest bytes:\n{}",
        String::from_utf8_lossy(&raw)
    );
    println!(
        "registry {}: pushed {remote}\n  manifest {} (skopeo inspect --raw hashes to it)\n  layer    {} (skopeo inspect Layers[0])",
        registry.addr(),
        image.manifest,
        image.layer
    );
}

#[test]
fn registry_stops_on_drop() {
    let registry = Registry::start();
    let (pid, addr) = (registry.pid(), registry.addr());
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert!(
        registry.log().contains(&format!("listening on {addr}")),
        "{}",
        registry.log()
    );
    drop(registry);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "docker-registry pid {pid} still exists (not killed or not reaped)"
    );
    assert!(
        TcpStream::connect(&addr).is_err(),
        "{addr} still accepts connections"
    );
    println!("registry {addr} (pid {pid}) killed and reaped on drop");
}

#[test]
fn umoci_unpacks_busybox_rootless_as_test_user() {
    let umoci = tools::require("umoci");
    let user = TestUser::get();
    let work = user.tempdir();
    let image = busybox_layout(&work.path().join("layout"), "latest");
    user.own(work.path());
    let bundle = work.path().join("bundle");

    tools::run(
        user.command(&umoci)
            .args(["unpack", "--rootless", "--image"])
            .arg(image.reference())
            .arg(&bundle),
    );

    let rootfs = bundle.join("rootfs");
    let meta = |path: &str| {
        fs::symlink_metadata(rootfs.join(path))
            .unwrap_or_else(|err| panic!("{path} in the unpacked rootfs: {err}"))
    };
    let busybox = meta("bin/busybox");
    assert!(busybox.is_file() && busybox.mode() & 0o111 != 0);
    assert!(meta("bin/sh").file_type().is_symlink());
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).expect("read bin/sh link"),
        Path::new("busybox")
    );
    let passwd = fs::read_to_string(rootfs.join("etc/passwd")).expect("read etc/passwd");
    assert!(passwd.contains("\nuser:x:1000:"), "{passwd}");
    assert_eq!(meta("tmp").permissions().mode() & 0o7777, 0o1777);
    // Rootless: everything belongs to the user who unpacked.
    assert_eq!(busybox.uid(), user.uid);
    println!(
        "umoci unpack --rootless as {} (uid {}): bin/busybox, bin/sh -> busybox, etc/passwd has user:x:1000, tmp {:o}",
        user.name,
        busybox.uid(),
        meta("tmp").permissions().mode() & 0o7777
    );
}

#[test]
fn test_user_is_unprivileged_with_subids() {
    let user = TestUser::get();
    let uid = tools::run_stdout(user.command("id").arg("-u"));
    let uid: u32 = uid
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("`id -u` printed {uid:?}"));
    assert_ne!(uid, 0, "TestUser::command ran as root");
    assert_eq!(uid, user.uid);
    let home = tools::run_stdout(user.command("sh").args(["-c", "echo $HOME; pwd"]));
    assert_eq!(
        home,
        format!("{0}\n{0}\n", user.home.display()),
        "HOME and working directory"
    );
    if !running_as_root() {
        println!(
            "not root: test user is the current user {} (uid {uid}); subid ranges: {}",
            user.name,
            if user.has_subids() { "yes" } else { "no" }
        );
        return;
    }
    assert_eq!(user.name, TEST_USER);
    for file in ["/etc/subuid", "/etc/subgid"] {
        let content = fs::read_to_string(file).expect("read subordinate id file");
        let ranges: Vec<(String, u64, u64)> = content
            .lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                Some((
                    f.first()?.to_string(),
                    f.get(1)?.parse().ok()?,
                    f.get(2)?.parse().ok()?,
                ))
            })
            .collect();
        let ours: Vec<_> = ranges
            .iter()
            .filter(|(owner, _, count)| owner == TEST_USER && *count == u64::from(SUBID_COUNT))
            .collect();
        assert_eq!(
            ours.len(),
            1,
            "one {SUBID_COUNT}-id range for {TEST_USER} in {file}:\n{content}"
        );
        let (_, start, count) = ours[0];
        for (owner, other_start, other_count) in &ranges {
            let same = owner == TEST_USER && other_start == start;
            let overlaps = other_start < &(start + count) && *start < other_start + other_count;
            assert!(
                same || !overlaps,
                "{file}: {TEST_USER} range overlaps {owner}'s:\n{content}"
            );
        }
        println!("{file}: {TEST_USER}:{start}:{count}");
    }
    println!(
        "test user {} uid {uid} gid {} home {}",
        user.name,
        user.gid,
        user.home.display()
    );
}

#[test]
fn test_user_provisioning_is_idempotent_under_concurrency() {
    let threads: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(TestUser::provision))
        .collect();
    let users: Vec<TestUser> = threads
        .into_iter()
        .map(|t| t.join().expect("provisioning thread"))
        .collect();
    let first = &users[0];
    for user in &users {
        assert_eq!(
            (user.uid, user.subuid, user.subgid),
            (first.uid, first.subuid, first.subgid)
        );
    }
    if running_as_root() {
        assert!(first.has_subids(), "{first:?}");
        let subuid = fs::read_to_string("/etc/subuid").expect("read /etc/subuid");
        let lines = subuid
            .lines()
            .filter(|l| l.starts_with(&format!("{TEST_USER}:")))
            .count();
        assert_eq!(lines, 1, "/etc/subuid:\n{subuid}");
    }
    println!("4 concurrent provisions agree: {first:?}");
}

#[test]
fn busybox_layout_is_deterministic() {
    let work = tempfile::tempdir().expect("temporary directory");
    let one = busybox_layout(&work.path().join("one"), "t");
    let two = busybox_layout(&work.path().join("two"), "t");
    let same_dir = BusyboxImage {
        layout: one.layout.clone(),
        ..two.clone()
    };
    assert_eq!(one, same_dir);
    for name in ["index.json", "oci-layout"] {
        assert_eq!(
            fs::read(one.layout.join(name)).expect("read"),
            fs::read(two.layout.join(name)).expect("read"),
            "{name} differs"
        );
    }
    println!(
        "busybox_layout twice: manifest {} config {} layer {} diff_id {}",
        one.manifest, one.config, one.layer, one.diff_id
    );
}

#[test]
fn busybox_layout_content() {
    let work = tempfile::tempdir().expect("temporary directory");
    let image = busybox_layout(&work.path().join("layout"), "content");

    // Every blob is stored under its digest.
    for digest in [&image.manifest, &image.config, &image.layer] {
        let bytes = fs::read(image.blob(digest)).expect("read blob");
        assert_eq!(&sha256(&bytes), digest);
    }
    let index = read_json(&image.layout.join("index.json"));
    assert_eq!(index["manifests"][0]["digest"], image.manifest.as_str());
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "content"
    );
    assert_eq!(
        read_json(&image.layout.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    let manifest = read_json(&image.blob(&image.manifest));
    assert_eq!(manifest["config"]["digest"], image.config.as_str());
    assert_eq!(manifest["layers"][0]["digest"], image.layer.as_str());
    assert_eq!(manifest["layers"][0]["size"], image.layer_size);
    let config = read_json(&image.blob(&image.config));
    assert_eq!(config["rootfs"]["diff_ids"][0], image.diff_id.as_str());
    assert_eq!(config["architecture"], oci_arch());
    assert_eq!(config["os"], "linux");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));

    // The layer: diff_id is the tar's digest; entries sorted, mtime 0, owners.
    let mut tar_bytes = Vec::new();
    GzDecoder::new(fs::File::open(image.blob(&image.layer)).expect("open layer"))
        .read_to_end(&mut tar_bytes)
        .expect("gunzip layer");
    assert_eq!(sha256(&tar_bytes), image.diff_id);
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut paths = Vec::new();
    let mut symlinks = 0;
    for entry in archive.entries().expect("read layer tar") {
        let entry = entry.expect("layer entry");
        let header = entry.header();
        let path = entry.path().expect("entry path").display().to_string();
        assert_eq!(header.mtime().expect("mtime"), 0, "{path}");
        let owner = (header.uid().expect("uid"), header.gid().expect("gid"));
        let mode = header.mode().expect("mode");
        match path.as_str() {
            "home/user" => assert_eq!(owner, (1000, 1000)),
            _ => assert_eq!(owner, (0, 0), "{path}"),
        }
        match path.as_str() {
            "tmp" => assert_eq!(mode, 0o1777),
            "root" => assert_eq!(mode, 0o700),
            "bin/busybox" => assert_eq!(mode, 0o755),
            _ => {}
        }
        if header.entry_type().is_symlink() {
            symlinks += 1;
        }
        paths.push(path);
    }
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "layer entries are not sorted");
    let names: BTreeSet<&str> = paths.iter().map(String::as_str).collect();
    for want in [
        "bin/busybox",
        "bin/sh",
        "etc/passwd",
        "etc/group",
        "tmp",
        "root",
        "home/user",
    ] {
        assert!(names.contains(want), "layer lacks {want}: {paths:?}");
    }
    println!(
        "layer: {} entries ({symlinks} applet symlinks), sorted, mtime 0, diff_id matches",
        paths.len()
    );
}

#[test]
#[should_panic(expected = "kiln-no-such-tool not found: run scripts/install-test-deps.sh as root")]
fn require_names_the_install_script() {
    tools::require("kiln-no-such-tool");
}

#[test]
fn run_failure_shows_command_status_and_output() {
    let failure = std::panic::catch_unwind(|| {
        tools::run(Command::new("sh").args(["-c", "echo to-stdout; echo to-stderr >&2; exit 3"]))
    })
    .expect_err("a failing command must panic");
    let message = failure
        .downcast_ref::<String>()
        .expect("panic message is a String");
    for want in [
        "sh -c 'echo to-stdout; echo to-stderr >&2; exit 3'",
        "exit status: 3",
        "to-stdout",
        "to-stderr",
    ] {
        assert!(message.contains(want), "{want:?} missing from:\n{message}");
    }
    let mut cmd = Command::new("prog");
    cmd.arg("a b")
        .env("K", "v")
        .env_remove("X")
        .current_dir("/d");
    assert_eq!(tools::describe(&cmd), "(cd /d && env -u X K=v prog 'a b')");
    let port = tools::free_port();
    assert_ne!(port, 0);
}

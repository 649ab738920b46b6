//! `kiln pull`/`push`/`login`/`logout` against real registries (Debian's
//! `docker-registry` on loopback), checked with skopeo and the registry's
//! own access log.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kiln::store::{Descriptor, Digest, Store};
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::support::busybox::{busybox_layout, oci_arch, BusyboxImage};
use crate::support::flaky_proxy::{Fault, FlakyProxy};
use crate::support::oci_schema::OciSchemas;
use crate::support::registry::{htpasswd, Registry, RegistryOptions, TestCa};
use crate::support::token_server::TokenServer;
use crate::support::tools;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// A kiln invocation with its own store and credentials file.
struct Kiln {
    root: PathBuf,
    docker_config: PathBuf,
}

impl Kiln {
    fn new(dir: &Path) -> Kiln {
        Kiln {
            root: dir.join("store"),
            docker_config: dir.join("docker"),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.arg("--root")
            .arg(&self.root)
            .args(args)
            .env("DOCKER_CONFIG", &self.docker_config)
            .env_remove("REGISTRY_AUTH_FILE")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run kiln")
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kiln {args:?} failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "kiln {args:?} should fail; printed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn store(&self) -> Store {
        Store::open(&self.root).expect("open the kiln store")
    }

    fn resolve(&self, name: &str) -> Descriptor {
        self.store()
            .resolve(name)
            .expect("read store names")
            .unwrap_or_else(|| panic!("no store name {name:?}"))
    }
}

/// Copies a layout image's manifest, config and layer into kiln's store under `name`.
fn import_busybox(kiln: &Kiln, image: &BusyboxImage, name: &str) {
    let store = kiln.store();
    for d in [&image.layer, &image.config, &image.manifest] {
        let bytes = fs::read(image.blob(d)).expect("read layout blob");
        let digest = Digest::parse(d).unwrap();
        store.put_reader(&bytes[..], Some(&digest)).unwrap();
    }
    let desc = Descriptor {
        media_type: OCI_MANIFEST.into(),
        digest: Digest::parse(&image.manifest).unwrap(),
        size: image.manifest_size,
        annotations: Default::default(),
        platform: None,
    };
    store.set_name(name, desc).unwrap();
}

fn skopeo() -> Command {
    Command::new(tools::require("skopeo"))
}

/// `skopeo copy` from an OCI layout into a plain-HTTP registry.
fn skopeo_push(layout_ref: &str, dest: &str, all: bool) {
    let mut c = skopeo();
    c.args(["copy", "--preserve-digests", "--dest-tls-verify=false"]);
    if all {
        c.arg("--all");
    }
    tools::run(
        c.arg(format!("oci:{layout_ref}"))
            .arg(format!("docker://{dest}")),
    );
}

fn skopeo_inspect_digest(reference: &str) -> String {
    let out = tools::run_stdout(skopeo().args([
        "inspect",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]));
    let v: Value = serde_json::from_str(&out).expect("skopeo inspect JSON");
    v["Digest"].as_str().expect("Digest").to_string()
}

fn sha256(bytes: &[u8]) -> String {
    let h = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[test]
fn pull_push_two_tags_by_digest_no_reupload_and_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let image = busybox_layout(&tmp.path().join("layout"), "1");
    let reg = Registry::start();
    let addr = reg.addr();
    skopeo_push(&image.reference(), &format!("{addr}/base/busybox:1"), false);

    // Pull what skopeo pushed: the name is the full normalized reference.
    let kiln = Kiln::new(tmp.path());
    let base = format!("{addr}/base/busybox:1");
    let out = kiln.ok(&["pull", &base]);
    assert!(out.contains(&image.manifest), "pull output: {out}");
    let desc = kiln.resolve(&base);
    assert_eq!(desc.digest.as_str(), image.manifest);
    for d in [&image.layer, &image.config] {
        assert!(
            kiln.store().has(&Digest::parse(d).unwrap()),
            "blob {d} not pulled"
        );
    }
    // A second pull downloads nothing.
    let o = kiln.run(&["pull", &base]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("already exists") && !err.contains(" done"),
        "{err}"
    );

    // Push to a second repository under two tags: the blobs are mounted
    // from base/busybox (kiln pulled them from there), no byte is uploaded.
    let uploads_before = reg.upload_requests().len();
    let out = kiln.ok(&[
        "push",
        &base,
        &format!("docker://{addr}/app/one:a"),
        "--tag",
        "b",
    ]);
    assert!(
        out.contains(&format!("{addr}/app/one:a: digest: {}", image.manifest)),
        "{out}"
    );
    assert!(
        out.contains(&format!("{addr}/app/one:b: digest: {}", image.manifest)),
        "{out}"
    );
    let mounts = reg.mount_requests();
    assert!(
        mounts
            .iter()
            .any(|(_, u)| u.starts_with("/v2/app/one/blobs/uploads/")
                && u.contains(&image.layer.replace(':', "%3A"))
                && u.contains("from=base%2Fbusybox")),
        "no cross-repo mount of the layer in the registry log: {mounts:?}"
    );
    assert_eq!(
        reg.upload_requests()[uploads_before..],
        [],
        "layers were uploaded instead of mounted"
    );

    // Pushing again (layers present): HEAD only, no upload, no mount.
    let mounts_before = reg.mount_requests().len();
    kiln.ok(&["push", &base, &format!("{addr}/app/one:c")]);
    assert_eq!(reg.upload_requests()[uploads_before..], []);
    assert_eq!(reg.mount_requests().len(), mounts_before);

    // Both tags resolve to the same digest for skopeo.
    for tag in ["a", "b", "c"] {
        assert_eq!(
            skopeo_inspect_digest(&format!("{addr}/app/one:{tag}")),
            image.manifest
        );
    }

    // Pull back by digest into a fresh store: identical digests.
    let other = Kiln::new(&tmp.path().join("other"));
    let by_digest = format!("{addr}/app/one@{}", image.manifest);
    other.ok(&["pull", "-q", &by_digest]);
    let desc = other.resolve(&by_digest);
    assert_eq!(desc.digest.as_str(), image.manifest);
    let manifest = other.store().read_blob(&desc.digest).unwrap();
    assert_eq!(sha256(&manifest), image.manifest);
    assert_eq!(manifest, fs::read(image.blob(&image.manifest)).unwrap());

    // A store without any record of the blobs uploads them (monolithic PUT).
    let fresh = Kiln::new(&tmp.path().join("fresh"));
    import_busybox(&fresh, &image, "docker.io/local/busybox:latest");
    let before = reg.upload_requests().len();
    fresh.ok(&["push", "local/busybox", &format!("{addr}/fresh/bb:1")]);
    let ups = reg.upload_requests()[before..].to_vec();
    assert!(
        ups.iter()
            .any(|(m, u)| m == "PUT" && u.starts_with("/v2/fresh/bb/blobs/uploads/")),
        "{ups:?}"
    );
    assert_eq!(
        skopeo_inspect_digest(&format!("{addr}/fresh/bb:1")),
        image.manifest
    );
    let check = kiln.ok(&["system", "check"]);
    assert!(check.contains("ok"), "{check}");
}

/// A layout holding one image whose single (uncompressed tar) layer is
/// `size` bytes of incompressible data: big enough for chunked upload.
fn big_layout(dir: &Path, size: usize) -> (String, String) {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let mut data = vec![0u8; size];
    // xorshift: deterministic, incompressible enough, fast.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(size as u64);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "big.bin", &data[..]).unwrap();
    let layer = tar.into_inner().unwrap();
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        fs::write(blobs.join(&d[7..]), bytes).unwrap();
        (d, bytes.len())
    };
    let (ld, ls) = put(&layer);
    let config = json!({
        "architecture": oci_arch(), "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [ld]},
    });
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}],
    });
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": md, "size": ms,
         "annotations": {"org.opencontainers.image.ref.name": "big"}}]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    (md, ld)
}

#[test]
fn interop_with_skopeo_and_oci_schemas() {
    let tmp = tempfile::tempdir().unwrap();
    let image = busybox_layout(&tmp.path().join("layout"), "1");
    let reg = Registry::start();
    let addr = reg.addr();

    // kiln pushes; skopeo reads and copies.
    let kiln = Kiln::new(tmp.path());
    import_busybox(&kiln, &image, "docker.io/local/busybox:latest");
    kiln.ok(&[
        "push",
        "-q",
        "local/busybox",
        &format!("{addr}/interop/bb:1"),
    ]);
    assert_eq!(
        skopeo_inspect_digest(&format!("{addr}/interop/bb:1")),
        image.manifest
    );
    let out = tmp.path().join("copied");
    tools::run(skopeo().args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{addr}/interop/bb:1"),
        &format!("oci:{}:x", out.display()),
    ]));
    assert!(out.join("blobs/sha256").join(&image.layer[7..]).is_file());

    // A large blob goes up in PATCH chunks and comes back intact.
    let big = tmp.path().join("big");
    let (big_manifest, big_layer) = big_layout(&big, 70 * 1024 * 1024);
    let bigkiln = Kiln::new(&tmp.path().join("bigk"));
    skopeo_push(
        &format!("{}:big", big.display()),
        &format!("{addr}/src/big:1"),
        false,
    );
    bigkiln.ok(&["pull", "-q", &format!("{addr}/src/big:1")]);
    let before = reg.upload_requests().len();
    // A store with no record of where the blob lives: a real upload.
    fs::remove_file(bigkiln.root.join("registry-blobs.json")).unwrap();
    bigkiln.ok(&[
        "push",
        "-q",
        &format!("{addr}/src/big:1"),
        &format!("{addr}/dst/big:1"),
    ]);
    let patches: Vec<_> = reg.upload_requests()[before..]
        .iter()
        .filter(|(m, u)| m == "PATCH" && u.starts_with("/v2/dst/big/"))
        .cloned()
        .collect();
    assert!(
        patches.len() >= 2,
        "expected chunked upload (several PATCH): {patches:?}"
    );
    let back = tmp.path().join("big-back");
    tools::run(skopeo().args([
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &format!("docker://{addr}/dst/big:1"),
        &format!("oci:{}:x", back.display()),
    ]));
    assert_eq!(
        sha256(&fs::read(back.join("blobs/sha256").join(&big_layer[7..])).unwrap()),
        big_layer
    );
    assert_eq!(
        skopeo_inspect_digest(&format!("{addr}/dst/big:1")),
        big_manifest
    );

    // skopeo pushes; kiln pulls; the documents are valid OCI.
    skopeo_push(&image.reference(), &format!("{addr}/bysk/bb:2"), false);
    let puller = Kiln::new(&tmp.path().join("puller"));
    puller.ok(&["pull", "-q", &format!("{addr}/bysk/bb:2")]);
    let desc = puller.resolve(&format!("{addr}/bysk/bb:2"));
    let store = puller.store();
    let manifest = store.read_blob(&desc.digest).unwrap();
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    let config_digest = Digest::parse(m["config"]["digest"].as_str().unwrap()).unwrap();
    let config = store.read_blob(&config_digest).unwrap();
    if let Some(dir) = crate::conformance::dir() {
        let schemas = OciSchemas::load(&dir);
        schemas
            .validate(&desc.media_type, &manifest)
            .expect("pulled manifest is valid OCI");
        schemas
            .validate(m["config"]["mediaType"].as_str().unwrap(), &config)
            .expect("pulled config is valid OCI");
    }
}

/// Adds to the busybox layout a second manifest whose config claims
/// `arch`, and an image index over both, named `multi` in `index.json`.
fn multi_platform_layout(image: &BusyboxImage, arch: &str) -> String {
    let blobs = image.layout.join("blobs/sha256");
    let put = |bytes: &[u8]| {
        let d = sha256(bytes);
        fs::write(blobs.join(&d[7..]), bytes).unwrap();
        (d, bytes.len())
    };
    let mut config: Value =
        serde_json::from_slice(&fs::read(image.blob(&image.config)).unwrap()).unwrap();
    config["architecture"] = json!(arch);
    let (cd, cs) = put(&serde_json::to_vec(&config).unwrap());
    let mut manifest: Value =
        serde_json::from_slice(&fs::read(image.blob(&image.manifest)).unwrap()).unwrap();
    manifest["config"]["digest"] = json!(cd);
    manifest["config"]["size"] = json!(cs);
    let (md, ms) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": image.manifest, "size": image.manifest_size,
         "platform": {"os": "linux", "architecture": oci_arch()}},
        {"mediaType": OCI_MANIFEST, "digest": md, "size": ms,
         "platform": {"os": "linux", "architecture": arch}},
    ]});
    let (id, is) = put(&serde_json::to_vec(&index).unwrap());
    let top = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_INDEX, "digest": id, "size": is,
         "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    fs::write(
        image.layout.join("index.json"),
        serde_json::to_vec(&top).unwrap(),
    )
    .unwrap();
    md
}

#[test]
fn pull_picks_platform_from_index_and_names_unknown_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let image = busybox_layout(&tmp.path().join("layout"), "1");
    let other_arch = if oci_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let other_manifest = multi_platform_layout(&image, other_arch);
    let reg = Registry::start();
    let addr = reg.addr();
    skopeo_push(
        &format!("{}:multi", image.layout.display()),
        &format!("{addr}/multi/bb:1"),
        true,
    );

    let kiln = Kiln::new(tmp.path());
    let name = format!("{addr}/multi/bb:1");
    kiln.ok(&[
        "pull",
        "-q",
        "--platform",
        &format!("linux/{other_arch}"),
        &name,
    ]);
    assert_eq!(kiln.resolve(&name).digest.as_str(), other_manifest);
    kiln.ok(&["pull", "-q", &name]);
    assert_eq!(kiln.resolve(&name).digest.as_str(), image.manifest);

    // The store now holds the index and both images: pushing the index
    // pushes both manifests by digest, then the index, byte for byte.
    let raw = tools::run(skopeo().args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{name}"),
    ]))
    .stdout;
    let index_digest = Digest::parse(&sha256(&raw)).unwrap();
    assert!(
        kiln.store().has(&index_digest),
        "index blob not stored by pull"
    );
    kiln.store()
        .set_name(
            "docker.io/local/multi:latest",
            Descriptor {
                media_type: OCI_INDEX.into(),
                digest: index_digest.clone(),
                size: raw.len() as u64,
                annotations: Default::default(),
                platform: None,
            },
        )
        .unwrap();
    let out = kiln.ok(&["push", "-q", "local/multi", &format!("{addr}/multi/copy:1")]);
    assert!(out.contains(index_digest.as_str()), "{out}");
    let copied = tools::run(skopeo().args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{addr}/multi/copy:1"),
    ]))
    .stdout;
    assert_eq!(copied, raw);
    assert_eq!(
        skopeo_inspect_digest(&format!("{addr}/multi/copy@{other_manifest}")),
        other_manifest
    );

    let err = kiln.fails(&["pull", "--platform", "linux/s390x", &name]);
    assert!(
        err.contains("no image for platform linux/s390x") && err.contains(other_arch),
        "{err}"
    );

    let err = kiln.fails(&["pull", &format!("{addr}/multi/bb:nope")]);
    assert!(
        err.contains("manifest unknown")
            && err.contains("\"nope\"")
            && err.contains(&format!("{addr}/multi/bb")),
        "{err}"
    );

    // A local transport goes to the layout, not to a registry.
    let err = kiln.fails(&["pull", "oci:/nonexistent-kiln-layout"]);
    assert!(err.contains("/nonexistent-kiln-layout/index.json"), "{err}");
}

/// Removes a directory tree when dropped (for the test's /etc/containers/certs.d entry).
struct RemoveOnDrop(PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn tls_registry_with_htpasswd_login_push_pull() {
    let tmp = tempfile::tempdir().unwrap();
    let image = busybox_layout(&tmp.path().join("layout"), "1");
    let ca = TestCa::generate();
    let pw = tmp.path().join("htpasswd");
    htpasswd(&pw, "kiln", "s3cret");
    let reg = Registry::start_with(&RegistryOptions {
        tls: Some(ca.server()),
        htpasswd: Some(pw),
        token: None,
    });
    let addr = reg.addr();
    let certs = tmp.path().join("certs");
    fs::create_dir_all(&certs).unwrap();
    fs::copy(ca.ca_cert(), certs.join("ca.crt")).unwrap();
    let cert_dir = certs.to_str().unwrap();

    let kiln = Kiln::new(tmp.path());
    import_busybox(&kiln, &image, "docker.io/local/busybox:latest");
    let dest = format!("{addr}/secure/bb:1");

    // Not logged in: the error says what to do.
    let err = kiln.fails(&["push", "--cert-dir", cert_dir, "local/busybox", &dest]);
    assert!(
        err.contains("unauthorized") && err.contains(&format!("kiln login {addr}")),
        "{err}"
    );

    // Wrong password: refused, nothing saved.
    let err = kiln.fails(&[
        "login",
        "--cert-dir",
        cert_dir,
        "-u",
        "kiln",
        "-p",
        "wrong",
        &addr,
    ]);
    assert!(
        err.contains(&format!("login to {addr} failed"))
            && err.contains("wrong username or password"),
        "{err}"
    );
    assert!(!kiln.docker_config.join("config.json").exists());

    // Right password through stdin.
    let mut child = kiln
        .cmd(&[
            "login",
            "--cert-dir",
            cert_dir,
            "-u",
            "kiln",
            "--password-stdin",
            &addr,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Login Succeeded"));
    let config: Value =
        serde_json::from_slice(&fs::read(kiln.docker_config.join("config.json")).unwrap()).unwrap();
    assert!(config["auths"][&addr]["auth"].is_string(), "{config}");

    kiln.ok(&["push", "-q", "--cert-dir", cert_dir, "local/busybox", &dest]);
    let puller = Kiln {
        root: tmp.path().join("store2"),
        docker_config: kiln.docker_config.clone(),
    };
    puller.ok(&["pull", "-q", "--cert-dir", cert_dir, &dest]);
    assert_eq!(puller.resolve(&dest).digest.as_str(), image.manifest);

    // Without the CA: the TLS error names the directories kiln looked in.
    let err = puller.fails(&["pull", &dest]);
    assert!(
        err.contains("TLS")
            && err.contains(&format!("/etc/containers/certs.d/{addr}"))
            && err.contains(&format!("/etc/docker/certs.d/{addr}")),
        "{err}"
    );
    // The CA in the system certs.d directory (tests run as root) is used.
    let sys_dir = PathBuf::from(format!("/etc/containers/certs.d/{addr}"));
    if fs::create_dir_all(&sys_dir).is_ok() {
        let _cleanup = RemoveOnDrop(sys_dir.clone());
        fs::copy(ca.ca_cert(), sys_dir.join("ca.crt")).unwrap();
        let third = Kiln {
            root: tmp.path().join("store3"),
            docker_config: kiln.docker_config.clone(),
        };
        third.ok(&["pull", "-q", &dest]);
        assert_eq!(third.resolve(&dest).digest.as_str(), image.manifest);
    }

    // Logout forgets the credential.
    let out = kiln.ok(&["logout", &addr]);
    assert!(out.contains("Removed login credentials"), "{out}");
    let err = kiln.fails(&["pull", "--cert-dir", cert_dir, &dest]);
    assert!(err.contains("unauthorized"), "{err}");
    let err = kiln.fails(&["logout", &addr]);
    assert!(err.contains("not logged in"), "{err}");
}

#[test]
fn bearer_token_auth_anonymous_pull_and_login_push() {
    let tmp = tempfile::tempdir().unwrap();
    let image = busybox_layout(&tmp.path().join("layout"), "1");
    let tokens = TokenServer::start("kiln", "t0ken");
    let reg = Registry::start_with(&RegistryOptions {
        token: Some(tokens.auth()),
        ..RegistryOptions::default()
    });
    let addr = reg.addr();
    tools::run(skopeo().args([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        "--dest-creds",
        "kiln:t0ken",
        &format!("oci:{}", image.reference()),
        &format!("docker://{addr}/tok/bb:1"),
    ]));

    // Anonymous pull: an anonymous token for the pull scope.
    let kiln = Kiln::new(tmp.path());
    let src = format!("{addr}/tok/bb:1");
    kiln.ok(&["pull", "-q", &src]);
    assert_eq!(kiln.resolve(&src).digest.as_str(), image.manifest);
    assert!(
        tokens
            .requests()
            .iter()
            .any(|r| r.user.is_none() && r.issued && r.scopes == ["repository:tok/bb:pull"]),
        "{:?}",
        tokens.requests()
    );

    // Pushing anonymously: the token lacks push, the error says to log in.
    let err = kiln.fails(&["push", &src, &format!("{addr}/tok/other:1")]);
    assert!(
        err.contains("unauthorized") && err.contains(&format!("kiln login {addr}")),
        "{err}"
    );

    let err = kiln.fails(&["login", "-u", "kiln", "-p", "nope", &addr]);
    assert!(err.contains("wrong username or password"), "{err}");
    kiln.ok(&["login", "-u", "kiln", "-p", "t0ken", &addr]);

    // Logged in: push mounts from tok/bb (a token for both repositories).
    let before = reg.mount_requests().len();
    kiln.ok(&["push", "-q", &src, &format!("{addr}/tok/other:1")]);
    assert!(reg.mount_requests().len() > before);
    assert!(
        tokens
            .requests()
            .iter()
            .any(|r| r.user.as_deref() == Some("kiln")
                && r.issued
                && r.scopes
                    .contains(&"repository:tok/other:pull,push".to_string())
                && r.scopes.contains(&"repository:tok/bb:pull".to_string())),
        "{:?}",
        tokens.requests()
    );
    let back = Kiln {
        root: tmp.path().join("back"),
        docker_config: kiln.docker_config.clone(),
    };
    back.ok(&["pull", "-q", &format!("{addr}/tok/other:1")]);
    assert_eq!(
        back.resolve(&format!("{addr}/tok/other:1")).digest.as_str(),
        image.manifest
    );
}

#[test]
fn retries_5xx_and_resets_then_gives_up() {
    let tmp = tempfile::tempdir().unwrap();
    let image = busybox_layout(&tmp.path().join("layout"), "1");
    let reg = Registry::start();
    skopeo_push(
        &image.reference(),
        &format!("{}/flaky/bb:1", reg.addr()),
        false,
    );

    // The first manifest request is reset, the first two layer downloads
    // get 503: the pull still succeeds.
    let layer = image.layer.clone();
    let proxy = FlakyProxy::start(&reg.addr(), move |line, n| {
        if line.starts_with("GET /v2/flaky/bb/manifests/") && n == 0 {
            Some(Fault::Reset)
        } else if line.starts_with(&format!("GET /v2/flaky/bb/blobs/{layer}")) && n < 2 {
            Some(Fault::Unavailable)
        } else {
            None
        }
    });
    let kiln = Kiln::new(tmp.path());
    let name = format!("{}/flaky/bb:1", proxy.addr());
    kiln.ok(&["pull", "-q", &name]);
    assert_eq!(kiln.resolve(&name).digest.as_str(), image.manifest);
    let seen = proxy.seen();
    let layer_gets = seen
        .iter()
        .filter(|(l, _)| l.contains(&image.layer))
        .count();
    assert_eq!(layer_gets, 3, "{seen:?}");

    // A registry that always fails: a bounded number of attempts, then the error.
    let down = FlakyProxy::start(&reg.addr(), |line, _| {
        line.contains("/manifests/").then_some(Fault::Unavailable)
    });
    let err = kiln.fails(&["pull", &format!("{}/flaky/bb:1", down.addr())]);
    assert!(
        err.contains("HTTP 503") && err.contains("UNAVAILABLE") && err.contains("flaky/bb"),
        "{err}"
    );
    let tries = down
        .seen()
        .iter()
        .filter(|(l, _)| l.contains("/manifests/"))
        .count();
    assert_eq!(tries, 4, "{:?}", down.seen());
}

/// Two kiln processes pulling (the same blobs under different names) and
/// tagging into one store at once leave it consistent.
#[test]
fn concurrent_pulls_and_tags_keep_the_store_consistent() {
    let tmp = tempfile::tempdir().unwrap();
    let image = busybox_layout(&tmp.path().join("layout"), "1");
    let reg = Registry::start();
    let addr = reg.addr();
    for repo in ["a", "b"] {
        skopeo_push(&image.reference(), &format!("{addr}/conc/{repo}:1"), false);
    }
    let kiln = Kiln::new(tmp.path());
    kiln.store();
    let workers: Vec<_> = ["a", "b"]
        .iter()
        .map(|repo| {
            let script = format!(
                "for i in 1 2 3 4 5 6; do \
                   \"$KILN\" --root \"$ROOT\" pull -q {addr}/conc/{repo}:1 >/dev/null || exit 1; \
                   \"$KILN\" --root \"$ROOT\" tag {addr}/conc/{repo}:1 local/{repo}:$i || exit 2; \
                   \"$KILN\" --root \"$ROOT\" rmi {addr}/conc/{repo}:1 >/dev/null || exit 3; \
                 done"
            );
            Command::new("sh")
                .args(["-c", &script])
                .env("KILN", env!("CARGO_BIN_EXE_kiln"))
                .env("ROOT", &kiln.root)
                .env("DOCKER_CONFIG", &kiln.docker_config)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let check = kiln.ok(&["system", "check"]);
    assert!(
        !check.contains("corrupt") && !check.contains("dangling"),
        "{check}"
    );
    let images = kiln.ok(&["images", "--format", "json"]);
    assert_eq!(images.lines().count(), 12, "{images}");
    for repo in ["a", "b"] {
        for i in 1..=6 {
            assert_eq!(
                kiln.resolve(&format!("docker.io/local/{repo}:{i}"))
                    .digest
                    .as_str(),
                image.manifest
            );
        }
    }
}

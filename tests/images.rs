//! Local images: `kiln import/images/tag/rmi/inspect/history/prune/save/load`
//! and the `oci:`, `oci-archive:`, `docker-archive:` transports, checked
//! against tools kiln did not write (podman, skopeo, umoci) and the OCI schemas.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use kiln::store::Store;
use kiln::transport;

use crate::support::busybox::{busybox_layout, BusyboxImage};
use crate::support::oci_schema::OciSchemas;
use crate::support::tools::{self, require};
use crate::support::user::{running_as_root, TestUser};

/// A store root with busybox loaded as `busybox:latest` (through the
/// `oci:DIR:TAG` import transport).
struct Fixture {
    dir: tempfile::TempDir,
    root: PathBuf,
    busybox: BusyboxImage,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let busybox = busybox_layout(&dir.path().join("layout"), "latest");
        let root = dir.path().join("store");
        let store = Store::open(&root).unwrap();
        let names = transport::import(
            &store,
            &format!("oci:{}:latest", busybox.layout.display()),
            Some("busybox"),
        )
        .unwrap();
        assert_eq!(names, ["docker.io/library/busybox:latest"]);
        Fixture { dir, root, busybox }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn store(&self) -> Store {
        Store::open(&self.root).unwrap()
    }

    fn kiln(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.env("KILN_ROOT", &self.root);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.kiln().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "kiln {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(!o.status.success(), "kiln {args:?} should fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn check_clean(&self) {
        let out = self.ok(&["system", "check"]);
        assert!(out.trim_end().ends_with("ok"), "{out}");
    }

    /// The busybox rootfs as a plain tar (the layout's layer, decompressed).
    fn rootfs_tar(&self) -> PathBuf {
        let out = self.path("rootfs.tar");
        if !out.exists() {
            let gz = fs::File::open(self.busybox.blob(&self.busybox.layer)).unwrap();
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(gz)
                .read_to_end(&mut plain)
                .unwrap();
            fs::write(&out, plain).unwrap();
        }
        out
    }
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Runs podman as root against a throwaway storage (vfs), never the host's.
fn podman(tmp: &Path) -> Command {
    let mut c = Command::new(require("podman"));
    c.arg("--root")
        .arg(tmp.join("root"))
        .arg("--runroot")
        .arg(tmp.join("run"))
        .args(["--storage-driver", "vfs"])
        .env("XDG_CONFIG_HOME", tmp.join("config"));
    c
}

fn schemas() -> Option<OciSchemas> {
    crate::conformance::dir().map(|d| OciSchemas::load(&d))
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap()
}

/// Validates index.json and every manifest and config it reaches.
fn validate_layout(schemas: &OciSchemas, layout: &Path) {
    let index = fs::read(layout.join("index.json")).unwrap();
    schemas
        .validate("application/vnd.oci.image.index.v1+json", &index)
        .unwrap_or_else(|e| panic!("index.json: {e}"));
    let header = "application/vnd.oci.image.layout.header.v1+json";
    if schemas.media_types().any(|m| m == header) {
        schemas
            .validate(header, &fs::read(layout.join("oci-layout")).unwrap())
            .unwrap_or_else(|e| panic!("oci-layout: {e}"));
    }
    for m in json(std::str::from_utf8(&index).unwrap())["manifests"]
        .as_array()
        .unwrap()
    {
        let digest = m["digest"].as_str().unwrap();
        let bytes = blob(layout, digest);
        schemas
            .validate("application/vnd.oci.image.manifest.v1+json", &bytes)
            .unwrap_or_else(|e| panic!("manifest {digest}: {e}"));
        let manifest = json(std::str::from_utf8(&bytes).unwrap());
        let config = manifest["config"]["digest"].as_str().unwrap();
        schemas
            .validate(
                "application/vnd.oci.image.config.v1+json",
                &blob(layout, config),
            )
            .unwrap_or_else(|e| panic!("config {config}: {e}"));
    }
}

#[test]
fn save_loads_in_podman_and_skopeo_reads_both_formats() {
    if !running_as_root() {
        println!("images: podman with a private root needs root; skipped");
        return;
    }
    let f = Fixture::new();
    let archive = f.path("busybox-docker.tar");
    f.ok(&["save", "-o", archive.to_str().unwrap(), "busybox"]);

    let inspect = tools::run_stdout(
        Command::new(require("skopeo"))
            .arg("inspect")
            .arg(format!("docker-archive:{}", archive.display())),
    );
    let inspect = json(&inspect);
    assert_eq!(inspect["Layers"], serde_json::json!([f.busybox.diff_id]));

    let tmp = f.path("podman");
    let out = tools::run_stdout(podman(&tmp).arg("load").arg("-i").arg(&archive));
    assert!(out.contains("docker.io/library/busybox:latest"), "{out}");
    let images =
        tools::run_stdout(podman(&tmp).args(["images", "--format", "{{.Repository}}:{{.Tag}}"]));
    assert!(
        images.contains("docker.io/library/busybox:latest"),
        "{images}"
    );
    let layers = tools::run_stdout(podman(&tmp).args([
        "inspect",
        "--format",
        "{{json .RootFS.Layers}}",
        "docker.io/library/busybox:latest",
    ]));
    assert_eq!(json(&layers), serde_json::json!([f.busybox.diff_id]));
    let id = tools::run_stdout(podman(&tmp).args([
        "inspect",
        "--format",
        "{{.Id}}",
        "docker.io/library/busybox:latest",
    ]));
    assert_eq!(format!("sha256:{}", id.trim()), f.busybox.config);

    let oci = f.path("busybox-oci.tar");
    f.ok(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        oci.to_str().unwrap(),
        "busybox",
    ]);
    let inspect = json(&tools::run_stdout(
        Command::new(require("skopeo"))
            .arg("inspect")
            .arg(format!("oci-archive:{}", oci.display())),
    ));
    assert_eq!(inspect["Digest"], f.busybox.manifest.as_str());
    assert_eq!(inspect["Layers"], serde_json::json!([f.busybox.layer]));
    let tmp = f.path("podman-oci");
    let out = tools::run_stdout(podman(&tmp).arg("load").arg("-i").arg(&oci));
    assert!(out.contains("docker.io/library/busybox:latest"), "{out}");
    let mode = std::os::unix::fs::PermissionsExt::mode(&fs::metadata(&oci).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o644);
}

#[test]
fn oci_export_passes_umoci_and_the_schemas() {
    let f = Fixture::new();
    let layout = f.path("out-layout");
    let digest = transport::export(
        &f.store(),
        "busybox",
        &format!("oci:{}:v1", layout.display()),
    )
    .unwrap();
    assert_eq!(digest.as_str(), f.busybox.manifest);
    // A second tag into the same layout keeps the first; this one through
    // the CLI (`kiln push NAME oci:DIR:TAG`), and back with `kiln pull`.
    let dest = format!("oci:{}:v2", layout.display());
    let out = f.run(&["push", "busybox", &dest]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&f.busybox.manifest),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = f.run(&["pull", &dest]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pulled = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(pulled, "localhost/out-layout:v2");
    let out = f.run(&["inspect", "-f", "{{.Id}}", "localhost/out-layout:v2"]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = f.run(&["inspect", "-f", "{{.Id}}", "busybox"]);
    assert_eq!(id, String::from_utf8_lossy(&out.stdout).trim());
    let ls = tools::run_stdout(
        Command::new(require("umoci"))
            .args(["ls", "--layout"])
            .arg(&layout),
    );
    let tags: Vec<&str> = ls.lines().collect();
    assert_eq!(tags, ["v1", "v2"], "{ls}");

    if let Some(s) = schemas() {
        validate_layout(&s, &layout);
    }
    match tools::find("oci-image-tool") {
        Some(tool) => {
            tools::run(
                Command::new(tool)
                    .args(["validate", "--type", "imageLayout"])
                    .arg(&layout),
            );
        }
        None => println!("images: oci-image-tool not installed; its validation skipped"),
    }

    // Rootless unpack as the unprivileged test user.
    let user = TestUser::get();
    let work = user.tempdir();
    let copy = work.path().join("layout");
    tools::run(Command::new("cp").arg("-a").arg(&layout).arg(&copy));
    user.own(work.path());
    let bundle = work.path().join("bundle");
    tools::run(
        user.command(require("umoci"))
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:v1", copy.display()))
            .arg(&bundle),
    );
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    assert!(fs::symlink_metadata(bundle.join("rootfs/bin/sh"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn archives_round_trip_and_skopeo_archives_load() {
    let f = Fixture::new();
    // save → load (into a fresh store) → save: same image ID and diff_ids.
    let first = f.path("first.tar");
    f.ok(&["save", "-o", first.to_str().unwrap(), "busybox"]);
    let other_root = f.path("store2");
    let kiln2 = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
            .env("KILN_ROOT", &other_root)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let out = kiln2(&["load", "-i", first.to_str().unwrap()]);
    assert_eq!(out, "Loaded image: busybox:latest\n");
    let id = kiln2(&[
        "inspect",
        "--format",
        "{{.Id}} {{json .RootFS.Layers}}",
        "busybox",
    ]);
    assert_eq!(
        id.trim(),
        format!("{} [\"{}\"]", f.busybox.config, f.busybox.diff_id)
    );
    let second = f.path("second.tar");
    kiln2(&["save", "-o", second.to_str().unwrap(), "busybox"]);
    assert_eq!(fs::read(&first).unwrap(), fs::read(&second).unwrap());

    // Hard-linked entries (a tar of a directory where two names share a
    // layer file) load like copies.
    let x = f.path("hl");
    fs::create_dir(&x).unwrap();
    tools::run(Command::new("tar").arg("-C").arg(&x).arg("-xf").arg(&first));
    let diff_hex = &f.busybox.diff_id["sha256:".len()..];
    fs::hard_link(x.join(format!("{diff_hex}.tar")), x.join("dup.tar")).unwrap();
    let mut manifest = json(&fs::read_to_string(x.join("manifest.json")).unwrap());
    let mut dup = manifest[0].clone();
    dup["RepoTags"] = serde_json::json!(["dup:1"]);
    dup["Layers"] = serde_json::json!(["dup.tar"]);
    manifest.as_array_mut().unwrap().push(dup);
    fs::write(x.join("manifest.json"), manifest.to_string()).unwrap();
    let hl = f.path("hl.tar");
    tools::run(
        Command::new("tar")
            .arg("-C")
            .arg(&x)
            .arg("-cf")
            .arg(&hl)
            .arg(format!("{diff_hex}.tar"))
            .arg("dup.tar")
            .arg(format!("{}.json", &f.busybox.config["sha256:".len()..]))
            .arg("manifest.json"),
    );
    let listing = tools::run_stdout(Command::new("tar").arg("-tvf").arg(&hl));
    assert!(listing.contains("link to"), "{listing}");
    assert_eq!(
        kiln2(&["load", "-i", hl.to_str().unwrap()]),
        "Loaded image: busybox:latest\nLoaded image: dup:1\n"
    );

    // Load from stdin, compressed.
    let gz = f.path("first.tar.gz");
    tools::run(Command::new("sh").arg("-c").arg(format!(
        "gzip -c {} > {}",
        first.display(),
        gz.display()
    )));
    let o = f
        .kiln()
        .args(["load"])
        .stdin(fs::File::open(&gz).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // An archive skopeo wrote (from the busybox OCI layout) loads in kiln.
    let skopeo_archive = f.path("skopeo.tar");
    tools::run(
        Command::new(require("skopeo"))
            .arg("copy")
            .arg(format!("oci:{}", f.busybox.reference()))
            .arg(format!(
                "docker-archive:{}:foo/bar:v1",
                skopeo_archive.display()
            )),
    );
    let out = f.ok(&["load", "-i", skopeo_archive.to_str().unwrap()]);
    assert_eq!(out, "Loaded image: foo/bar:v1\n");
    let layers = f.ok(&[
        "inspect",
        "--format",
        "{{json .RootFS.Layers}}",
        "foo/bar:v1",
    ]);
    assert_eq!(json(&layers), serde_json::json!([f.busybox.diff_id]));

    // oci-archive and docker-archive transports, both ways, by the library.
    let store = f.store();
    let oa = f.path("x.oci.tar");
    transport::export(
        &store,
        "busybox",
        &format!("oci-archive:{}:t1", oa.display()),
    )
    .unwrap();
    let names = transport::import(
        &store,
        &format!("oci-archive:{}:t1", oa.display()),
        Some("again:1"),
    )
    .unwrap();
    assert_eq!(names, ["docker.io/library/again:1"]);
    let da = f.path("x.docker.tar");
    transport::export(
        &store,
        "again:1",
        &format!("docker-archive:{}:named:2", da.display()),
    )
    .unwrap();
    let names =
        transport::import(&store, &format!("docker-archive:{}", da.display()), None).unwrap();
    assert_eq!(names, ["docker.io/library/named:2"]);
    let names = transport::import(
        &store,
        &format!("docker-archive:{}:@0", da.display()),
        Some("idx"),
    )
    .unwrap();
    assert_eq!(names, ["docker.io/library/idx:latest"]);
    // Without a name, an oci: tag becomes localhost/<dir>:<tag>.
    let names = transport::import(
        &store,
        &format!("oci:{}:latest", f.busybox.layout.display()),
        None,
    )
    .unwrap();
    assert_eq!(names, ["localhost/layout:latest"]);
    // An untagged export (no ref.name) imports under the directory's name.
    let untagged = f.path("Un_Tagged");
    transport::export(&store, "busybox", &format!("oci:{}", untagged.display())).unwrap();
    let names = transport::import(&store, &format!("oci:{}", untagged.display()), None).unwrap();
    assert_eq!(names, ["localhost/un-tagged:latest"]);
    assert!(f
        .ok(&["history", "-H=false", "busybox"])
        .contains("1970-01-01T00:00:00Z"));
    assert!(transport::import(
        &store,
        &format!("oci:{}:nope", f.busybox.layout.display()),
        None
    )
    .is_err());
    assert!(transport::export(&store, "busybox", "docker://x").is_err());
    assert!(transport::export(&store, "nope", &format!("oci:{}", f.path("n").display())).is_err());
    // A corrupt archive is refused and leaves no name behind.
    let mut bytes = fs::read(&first).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    let bad = f.path("bad.tar");
    fs::write(&bad, bytes).unwrap();
    let before = f.ok(&["images", "-q", "--no-trunc"]);
    let _ = f.run(&["load", "-i", bad.to_str().unwrap()]);
    assert_eq!(f.ok(&["images", "-q", "--no-trunc"]), before);
    f.check_clean();
}

/// Sets a blob's mtime two hours back, past prune's grace period.
fn age_blobs(root: &Path) {
    let old = SystemTime::now() - Duration::from_secs(2 * 3600);
    for e in fs::read_dir(root.join("blobs/sha256")).unwrap() {
        let f = fs::File::options()
            .append(true)
            .open(e.unwrap().path())
            .unwrap();
        f.set_modified(old).unwrap();
    }
}

#[test]
fn image_commands_print_like_docker() {
    let f = Fixture::new();
    let out = f.ok(&["images"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("REPOSITORY   TAG       IMAGE ID       CREATED")
            && lines[0].ends_with("SIZE"),
        "{out}"
    );
    let short = &f.busybox.config["sha256:".len().."sha256:".len() + 12];
    assert!(lines[1].starts_with("busybox      latest    "), "{out}");
    assert!(
        lines[1].contains(short) && lines[1].contains(" years ago"),
        "{out}"
    );

    f.ok(&["tag", "busybox", "127.0.0.1:5000/foo/bar:v1"]);
    f.ok(&["tag", short, "other"]);
    let out = f.ok(&["images", "--format", "json"]);
    let rows: Vec<Value> = out.lines().map(json).collect();
    assert_eq!(rows.len(), 3, "{out}");
    let repos: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["Repository"].as_str().unwrap(),
                r["Tag"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "127.0.0.1:5000/foo/bar:v1",
        "busybox:latest",
        "other:latest",
    ] {
        assert!(repos.contains(&want.to_string()), "{repos:?}");
    }
    assert!(rows
        .iter()
        .all(|r| r["ID"] == short && r["Digest"] == f.busybox.manifest.as_str()));
    assert_eq!(f.ok(&["images", "-q"]), format!("{short}\n"));
    let filtered = f.ok(&["images", "127.0.0.1:5000/foo/bar"]);
    assert_eq!(filtered.lines().count(), 2, "{filtered}");
    assert_eq!(f.ok(&["images", "busybox:nope"]).lines().count(), 1);
    assert!(f
        .ok(&["images", "--digests"])
        .lines()
        .next()
        .unwrap()
        .contains("DIGEST"));
    assert_eq!(
        f.ok(&["images", "--format", "{{.Repository}}/{{.Tag}}", "other"]),
        "other/latest\n"
    );

    let doc = json(&f.ok(&["inspect", "busybox"]));
    let d = &doc[0];
    assert_eq!(d["Id"], f.busybox.config.as_str());
    assert_eq!(d["RootFS"]["Type"], "layers");
    assert_eq!(
        d["RootFS"]["Layers"],
        serde_json::json!([f.busybox.diff_id])
    );
    assert_eq!(d["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(d["Os"], "linux");
    assert_eq!(d["Created"], "1970-01-01T00:00:00Z");
    assert_eq!(d["Parent"], "");
    let tags: Vec<&str> = d["RepoTags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(tags.len(), 3, "{tags:?}");
    assert!(d["RepoDigests"][0]
        .as_str()
        .unwrap()
        .ends_with(&f.busybox.manifest));
    assert_eq!(
        f.ok(&[
            "inspect",
            "-f",
            "{{.Id}} {{json .Config.Cmd}} {{.Architecture}}",
            "other"
        ]),
        format!(
            "{} [\"sh\"] {}\n",
            f.busybox.config,
            crate::support::busybox::oci_arch()
        )
    );
    assert!(f.fails(&["inspect", "nope"]).contains("nope"));

    let out = f.ok(&["history", "busybox"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("IMAGE          CREATED") && lines[0].contains("CREATED BY"),
        "{out}"
    );
    assert!(
        lines[1].starts_with(short)
            && lines[1].contains("kiln test harness: busybox_layout from /bin/…   1.06MB"),
        "{out}"
    );
    let h = json(
        f.ok(&["history", "--format", "json", "--no-trunc", "busybox"])
            .lines()
            .next()
            .unwrap(),
    );
    assert_eq!(h["ID"], f.busybox.config.as_str());
    assert_eq!(
        h["CreatedBy"],
        "kiln test harness: busybox_layout from /bin/busybox"
    );

    // rmi: by ID with several names is refused without -f.
    let err = f.fails(&["rmi", short]);
    assert!(
        err.contains("image is referenced in multiple repositories"),
        "{err}"
    );
    assert_eq!(f.ok(&["rmi", "other"]), "Untagged: other:latest\n");
    assert!(f.fails(&["rmi", "other"]).contains("no such image: other"));
    // A second image (imported) shares nothing with busybox.
    let rootfs = f.rootfs_tar();
    let id = f.ok(&["import", rootfs.to_str().unwrap(), "imported:1"]);
    let imported_id = id.trim().to_string();
    assert!(
        imported_id.starts_with("sha256:") && imported_id.len() == 71,
        "{id}"
    );
    let out = f.ok(&["rmi", "-f", short]);
    assert_eq!(
        out,
        format!(
            "Untagged: 127.0.0.1:5000/foo/bar:v1\nUntagged: busybox:latest\nDeleted: {}\n",
            f.busybox.config
        )
    );
    assert!(f.fails(&["inspect", "busybox"]).contains("no such image"));

    // prune: fresh unreferenced blobs survive the grace period; old ones go.
    // The imported image's layer may be byte-identical to busybox's (same
    // tar; whether the gzip bytes match depends on the encoder's chunking):
    // then it is still referenced and must stay, else it goes too.
    let layer_shared = {
        let store = f.store();
        let desc = store
            .resolve("docker.io/library/imported:1")
            .unwrap()
            .expect("imported:1 is named");
        let manifest: serde_json::Value =
            serde_json::from_slice(&store.read_blob(&desc.digest).unwrap()).unwrap();
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["digest"] == f.busybox.layer.as_str())
    };
    let out = f.ok(&["prune", "-f"]);
    assert!(out.ends_with("Total reclaimed space: 0B\n"), "{out}");
    age_blobs(&f.root);
    let out = f.ok(&["prune", "-f"]);
    assert!(out.starts_with("Deleted Images:\n"), "{out}");
    // rmi deleted the manifest at once (no dangling leftover); the config
    // waited for the grace period.
    assert!(!out.contains(&f.busybox.manifest), "{out}");
    assert!(
        out.contains(&format!("deleted: {}\n", f.busybox.config)),
        "{out}"
    );
    assert_eq!(out.contains(&f.busybox.layer), !layer_shared, "{out}");
    let config_size = fs::metadata(f.busybox.blob(&f.busybox.config))
        .unwrap()
        .len();
    if layer_shared {
        assert!(
            out.ends_with(&format!("Total reclaimed space: {config_size}B\n")),
            "{out}"
        );
    }
    let store = f.store();
    assert_eq!(
        store.has(&kiln::store::Digest::parse(&f.busybox.layer).unwrap()),
        layer_shared
    );
    assert_eq!(f.ok(&["prune", "-f"]), "Total reclaimed space: 0B\n");
    assert_eq!(
        f.ok(&["inspect", "-f", "{{.Id}}", "imported:1"]).trim(),
        imported_id
    );
    assert!(f
        .ok(&[
            "save",
            "-o",
            f.path("i.tar").to_str().unwrap(),
            "imported:1"
        ])
        .is_empty());
    // Removing the last name deletes the image, and with it its blobs that
    // are past the grace period (they were aged above) and unshared.
    let out = f.ok(&["rmi", "imported:1"]);
    assert_eq!(
        out,
        format!("Untagged: imported:1\nDeleted: {imported_id}\n")
    );
    assert_eq!(f.ok(&["images", "-q"]), "");
    assert_eq!(f.ok(&["prune", "--force"]), "Total reclaimed space: 0B\n");
    assert!(!f
        .store()
        .has(&kiln::store::Digest::parse(&f.busybox.layer).unwrap()));
    f.check_clean();
}

#[test]
fn import_makes_a_runnable_busybox() {
    let f = Fixture::new();
    let rootfs = f.rootfs_tar();
    // gzip on stdin, with config changes.
    let gz = f.path("rootfs.tar.gz");
    tools::run(Command::new("sh").arg("-c").arg(format!(
        "gzip -c {} > {}",
        rootfs.display(),
        gz.display()
    )));
    let o = f
        .kiln()
        .args([
            "import",
            "--change",
            r#"CMD ["sh"]"#,
            "-c",
            "ENV FOO=bar",
            "-c",
            "WORKDIR /tmp",
            "-m",
            "from a tarball",
            "-",
            "mine:1",
        ])
        .stdin(fs::File::open(&gz).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let id = String::from_utf8(o.stdout).unwrap();
    let doc = json(&f.ok(&["inspect", "mine:1"]));
    assert_eq!(doc[0]["Id"].as_str().unwrap(), id.trim());
    assert_eq!(doc[0]["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(doc[0]["Config"]["Env"], serde_json::json!(["FOO=bar"]));
    assert_eq!(doc[0]["Config"]["WorkingDir"], "/tmp");
    // The layer's diff_id is the plain tar's digest.
    assert_eq!(
        doc[0]["RootFS"]["Layers"],
        serde_json::json!([f.busybox.diff_id])
    );
    let h = json(f.ok(&["history", "--format", "json", "mine:1"]).trim());
    assert_eq!(h["Comment"], "from a tarball");
    assert!(f
        .fails(&["import", "--change", "RUN true", rootfs.to_str().unwrap()])
        .contains("RUN"));
    assert!(f
        .fails(&["import", f.path("layout/index.json").to_str().unwrap()])
        .contains("not a tar"));

    let layout = f.path("mine-layout");
    transport::export(&f.store(), "mine:1", &format!("oci:{}:1", layout.display())).unwrap();
    if let Some(s) = schemas() {
        validate_layout(&s, &layout);
    }
    let bundle = f.path("bundle");
    let mut umoci = Command::new(require("umoci"));
    umoci
        .args(["unpack", "--image"])
        .arg(format!("{}:1", layout.display()))
        .arg(&bundle);
    if !running_as_root() {
        umoci.arg("--rootless");
    }
    tools::run(&mut umoci);
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    let config = json(&fs::read_to_string(bundle.join("config.json")).unwrap());
    assert_eq!(config["process"]["args"], serde_json::json!(["sh"]));
    assert_eq!(config["process"]["cwd"], "/tmp");
    f.check_clean();
}

#[test]
fn concurrent_writers_leave_the_store_consistent() {
    let f = Fixture::new();
    let rootfs = f.rootfs_tar();
    let archive = f.path("bb.tar");
    f.ok(&["save", "-o", archive.to_str().unwrap(), "busybox"]);
    let script = |who: &str| {
        format!(
            "set -e; for i in 1 2 3 4; do \
               \"$KILN\" import {rootfs} {who}-imp:$i >/dev/null; \
               \"$KILN\" tag busybox {who}-tag:$i; \
               \"$KILN\" load -q -i {archive}; \
               \"$KILN\" tag {who}-imp:$i shared:latest; \
             done",
            rootfs = rootfs.display(),
            archive = archive.display()
        )
    };
    let spawn = |who: &str| {
        Command::new("sh")
            .arg("-c")
            .arg(script(who))
            .env("KILN", env!("CARGO_BIN_EXE_kiln"))
            .env("KILN_ROOT", &f.root)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("a"), spawn("b"));
    for child in [a, b] {
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let names = f.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    for who in ["a", "b"] {
        for i in 1..=4 {
            for kind in ["imp", "tag"] {
                let want = format!("{who}-{kind}:{i}");
                assert!(names.lines().any(|l| l == want), "{want} missing:\n{names}");
            }
        }
    }
    assert!(names.lines().any(|l| l == "shared:latest"));
    f.check_clean();
    // And a prune racing a writer never breaks a name.
    age_blobs(&f.root);
    let mut writer = spawn("c");
    for _ in 0..3 {
        f.ok(&["prune", "-f"]);
    }
    let o = writer.wait().unwrap();
    assert!(o.success());
    f.check_clean();
}

#[test]
fn docker_manifests_are_converted_for_oci_layouts() {
    let f = Fixture::new();
    let store = f.store();
    // The busybox image as a registry serving Docker v2.2 would have it.
    let config_size = fs::metadata(f.busybox.blob(&f.busybox.config))
        .unwrap()
        .len();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": f.busybox.config,
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "digest": f.busybox.layer,
            "size": f.busybox.layer_size,
        }],
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let (digest, size) = store.put_bytes(&bytes).unwrap();
    let desc = kiln::store::Descriptor {
        media_type: "application/vnd.docker.distribution.manifest.v2+json".into(),
        digest: digest.clone(),
        size,
        annotations: Default::default(),
        platform: None,
    };
    transport::set_name(&store, "docker.io/library/dockerish:1", &desc).unwrap();
    assert_eq!(
        f.ok(&["inspect", "-f", "{{.Id}}", "dockerish:1"]).trim(),
        f.busybox.config
    );

    let layout = f.path("converted");
    let written = transport::export(
        &store,
        "dockerish:1",
        &format!("oci:{}:c", layout.display()),
    )
    .unwrap();
    assert_ne!(
        written, digest,
        "the manifest must be rewritten with OCI media types"
    );
    if let Some(s) = schemas() {
        validate_layout(&s, &layout);
    }
    let m = json(&String::from_utf8(blob(&layout, written.as_str())).unwrap());
    assert_eq!(m["config"]["digest"], f.busybox.config.as_str());
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let ls = tools::run_stdout(
        Command::new(require("umoci"))
            .args(["ls", "--layout"])
            .arg(&layout),
    );
    assert_eq!(ls.trim(), "c");
    // The docker archive of it still carries the same config and diff_ids.
    let archive = f.path("dockerish.tar");
    f.ok(&["save", "-o", archive.to_str().unwrap(), "dockerish:1"]);
    let inspect = json(&tools::run_stdout(
        Command::new(require("skopeo"))
            .arg("inspect")
            .arg("--config")
            .arg(format!("docker-archive:{}", archive.display())),
    ));
    assert_eq!(
        inspect["rootfs"]["diff_ids"],
        serde_json::json!([f.busybox.diff_id])
    );
}

#[test]
fn dangling_images_show_as_none_and_prune_removes_them() {
    let f = Fixture::new();
    let rootfs = f.rootfs_tar();
    let first = f.ok(&["import", rootfs.to_str().unwrap(), "app:1"]);
    let second = f.ok(&[
        "import",
        "-c",
        "CMD [\"true\"]",
        rootfs.to_str().unwrap(),
        "app:1",
    ]);
    assert_ne!(first, second);
    let old = &first.trim()["sha256:".len().."sha256:".len() + 12];
    let out = f.ok(&["images"]);
    let last = out.lines().last().unwrap();
    assert!(
        last.starts_with("<none>       <none>    ") && last.contains(old),
        "{out}"
    );
    assert!(!f.ok(&["images", "app"]).contains("<none>"));
    assert_eq!(f.ok(&["inspect", "-f", "{{.RepoTags}}", old]), "[]\n");
    age_blobs(&f.root);
    let out = f.ok(&["prune", "-a", "-f"]);
    assert!(out.contains("deleted: "), "{out}");
    assert!(!f.ok(&["images"]).contains("<none>"));
    assert!(f.fails(&["inspect", old]).contains("no such image"));
    // Both named images survive with every blob.
    assert_eq!(f.ok(&["images", "-q"]).lines().count(), 2);
    f.check_clean();
}

#[test]
fn prune_removes_unpacked_trees_no_name_uses() {
    use kiln::layer::Mode;
    use kiln::store::LayerSource;
    let f = Fixture::new();
    let store = f.store();
    let (_, entry) = transport::find_image(&store, "busybox").unwrap();
    let layers: Vec<LayerSource> = entry
        .image
        .manifest
        .layers
        .iter()
        .zip(&entry.image.config.rootfs.diff_ids)
        .map(|(l, d)| LayerSource {
            blob: l.digest.clone(),
            diff_id: d.clone(),
        })
        .collect();
    let flat = store.ensure_unpacked(&layers, Mode::Flatten).unwrap();
    let tree = flat[0].rootfs.parent().unwrap().to_path_buf();
    assert!(tree.join("rootfs/bin/busybox").is_file());

    // Named: prune keeps the tree.
    let out = f.ok(&["prune", "-f"]);
    assert!(tree.is_dir(), "{out}");
    // A held per-chain lock (a build using it) keeps it even when unnamed.
    let lock_path = f
        .root
        .join("unpacked/locks")
        .join(format!("flat-{}.lock", flat[0].chain_id.hex()));
    let lock = fs::File::open(&lock_path).unwrap();
    lock.lock_shared().unwrap();
    f.ok(&["rmi", "busybox"]);
    age_blobs(&f.root);
    f.ok(&["prune", "-f"]);
    assert!(tree.is_dir(), "a tree in use must survive prune");
    drop(lock);
    // Unnamed and unused: gone, and its bytes are counted.
    let out = f.ok(&["prune", "-f"]);
    assert!(!tree.exists(), "{out}");
    let reclaimed = out
        .lines()
        .find_map(|l| l.strip_prefix("Total reclaimed space: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert_ne!(reclaimed, "0B", "{out}");
    f.check_clean();
}

#[test]
fn prune_keeps_the_build_cache_until_asked() {
    use kiln::store::{CacheRecord, Digest};
    let f = Fixture::new();
    let store = f.store();
    let (_, entry) = transport::find_image(&store, "busybox").unwrap();
    let mut image = entry.image.descriptor.clone();
    image.annotations.clear();
    let key = Digest::of_bytes(b"a step's key");
    let record = CacheRecord {
        image,
        inputs: [("instruction".to_string(), "RUN true".to_string())].into(),
        slot: "Dockerfile/0/1".to_string(),
    };
    store.cache_put(&key, &record).unwrap();
    // Only the cache keeps busybox now; it is no dangling image either.
    f.ok(&["rmi", "busybox"]);
    age_blobs(&f.root);
    let out = f.ok(&["prune", "-f"]);
    assert_eq!(out, "Total reclaimed space: 0B\n");
    assert_eq!(f.ok(&["images", "-q"]), "");
    let out = f.ok(&["system", "check"]);
    assert!(out.contains(", 1 build cache record(s)\n"), "{out}");
    f.check_clean();

    // A record whose layer went missing is a problem `system check` names.
    let layer = f
        .store()
        .blob_path(&Digest::parse(&f.busybox.layer).unwrap());
    let saved = fs::read(&layer).unwrap();
    fs::remove_file(&layer).unwrap();
    let o = f.run(&["system", "check"]);
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!(
            "build cache record {key} points at missing blob {}",
            f.busybox.layer
        )),
        "{out}"
    );
    fs::write(&layer, saved).unwrap();
    age_blobs(&f.root);

    let out = f.ok(&["prune", "-f", "--cache"]);
    assert!(
        out.starts_with(&format!(
            "Deleted build cache objects:\n{key}\n\nDeleted Images:\n"
        )),
        "{out}"
    );
    let img = &entry.image;
    for d in [
        &img.descriptor.digest,
        &img.manifest.config.digest,
        &img.manifest.layers[0].digest,
    ] {
        assert!(
            out.contains(&format!("deleted: {d}\n")),
            "{d} not deleted:\n{out}"
        );
    }
    assert_eq!(f.store().cache_get(&key).unwrap(), None);
    let out = f.ok(&["system", "check"]);
    assert!(out.contains(", 0 build cache record(s)\n"), "{out}");
    f.check_clean();
}

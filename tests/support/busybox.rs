//! A tiny, deterministic busybox base image, written as an OCI image layout
//! from the host's static `/bin/busybox` (Debian's busybox-static).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::tools;

/// The busybox binary the image is built from.
pub const BUSYBOX: &str = "/bin/busybox";
/// Modification time of every layer entry, and the image's creation time:
/// the epoch, so builds are reproducible.
const MTIME: u64 = 0;
const CREATED: &str = "1970-01-01T00:00:00Z";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";
const GROUP: &str = "\
root:x:0:
user:x:1000:
nogroup:x:65534:
";

const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const MEDIA_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What [`busybox_layout`] wrote. Digests are `sha256:<hex>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusyboxImage {
    /// The OCI image layout directory.
    pub layout: PathBuf,
    /// The tag (`org.opencontainers.image.ref.name`) in `index.json`.
    pub tag: String,
    pub manifest: String,
    pub manifest_size: u64,
    pub config: String,
    /// Digest of the compressed (gzip) layer blob.
    pub layer: String,
    pub layer_size: u64,
    /// Digest of the uncompressed layer tar (the config's `rootfs.diff_ids[0]`).
    pub diff_id: String,
}

impl BusyboxImage {
    /// `<layout>:<tag>`, as `skopeo` (after `oci:`) and `umoci --image` take it.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.layout.display(), self.tag)
    }

    /// The file holding the blob `digest` in the layout.
    pub fn blob(&self, digest: &str) -> PathBuf {
        let hex = digest
            .strip_prefix("sha256:")
            .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
        self.layout.join("blobs/sha256").join(hex)
    }
}

/// Writes a one-layer busybox image into the OCI image layout `dir`
/// (created if missing) under `tag`, and returns its digests.
///
/// The layer holds, sorted by path, all owned 0:0 with mtime 0 unless said:
/// `bin/busybox` (0755); every applet of `busybox --list-full` as a
/// relative symlink to it; `etc/passwd` (root 0, user 1000, nobody 65534)
/// and `etc/group` (root, user, nogroup); `tmp` (1777); `root` (0700);
/// `home/user` (1000:1000); the empty mount points `dev`, `proc`, `sys`;
/// and every parent directory (0755). The config is for this host's
/// architecture, os linux, with `Env` PATH and `Cmd ["sh"]`.
///
/// The same busybox binary and tag give byte-identical blobs and digests.
/// An `index.json` already in `dir` keeps its entries for other tags.
/// Not for concurrent calls on the same `dir`.
/// Panics when `/bin/busybox` is missing or not statically linked.
pub fn busybox_layout(dir: &Path, tag: &str) -> BusyboxImage {
    check_static(Path::new(BUSYBOX));
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap_or_else(|err| panic!("create {}: {err}", blobs.display()));

    let (layer, layer_size, diff_id) = write_layer(&blobs, &rootfs_entries());
    let arch = oci_arch();
    let config = json!({
        "created": CREATED,
        "architecture": arch,
        "os": "linux",
        "config": { "Env": [PATH_ENV], "Cmd": ["sh"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{
            "created": CREATED,
            "created_by": "kiln test harness: busybox_layout from /bin/busybox",
        }],
    });
    let (config, config_size) = write_json_blob(&blobs, &config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": { "mediaType": MEDIA_CONFIG, "digest": config, "size": config_size },
        "layers": [{ "mediaType": MEDIA_LAYER, "digest": layer, "size": layer_size }],
    });
    let (manifest, manifest_size) = write_json_blob(&blobs, &manifest);

    write_index(dir, tag, &manifest, manifest_size, arch);
    write_file(
        &dir.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    BusyboxImage {
        layout: dir.to_path_buf(),
        tag: tag.to_owned(),
        manifest,
        manifest_size,
        config,
        layer,
        layer_size,
        diff_id,
    }
}

/// One entry of the layer.
struct Entry {
    kind: Kind,
    mode: u32,
    owner: u64,
}

enum Kind {
    Dir,
    File(Content),
    Symlink(String),
}

enum Content {
    Text(&'static str),
    Host(&'static str),
}

/// The rootfs, keyed (and so sorted) by path without trailing slash.
fn rootfs_entries() -> BTreeMap<String, Entry> {
    let mut entries = BTreeMap::new();
    let mut add = |path: &str, kind: Kind, mode: u32, owner: u64| {
        // Parents first, so every path has its directories (0755, root-owned).
        let mut parent = Path::new(path).parent();
        while let Some(dir) = parent.filter(|p| !p.as_os_str().is_empty()) {
            entries
                .entry(dir.to_str().expect("UTF-8 path").to_owned())
                .or_insert(Entry {
                    kind: Kind::Dir,
                    mode: 0o755,
                    owner: 0,
                });
            parent = dir.parent();
        }
        entries.insert(path.to_owned(), Entry { kind, mode, owner });
    };
    add("bin/busybox", Kind::File(Content::Host(BUSYBOX)), 0o755, 0);
    for applet in applets() {
        if applet != "bin/busybox" {
            let target = symlink_target(&applet);
            add(&applet, Kind::Symlink(target), 0o777, 0);
        }
    }
    add("etc/passwd", Kind::File(Content::Text(PASSWD)), 0o644, 0);
    add("etc/group", Kind::File(Content::Text(GROUP)), 0o644, 0);
    add("tmp", Kind::Dir, 0o1777, 0);
    add("root", Kind::Dir, 0o700, 0);
    add("home/user", Kind::Dir, 0o755, 1000);
    for mount_point in ["dev", "proc", "sys"] {
        add(mount_point, Kind::Dir, 0o755, 0);
    }
    entries
}

/// Applet paths, relative to `/`, from `busybox --list-full`.
fn applets() -> Vec<String> {
    let list = tools::run_stdout(Command::new(BUSYBOX).arg("--list-full"));
    let applets: Vec<String> = list
        .lines()
        .map(|line| line.trim().trim_start_matches('/').to_owned())
        .filter(|line| !line.is_empty())
        .collect();
    assert!(
        applets.iter().any(|a| a == "bin/sh"),
        "`{BUSYBOX} --list-full` lists no bin/sh:\n{list}"
    );
    applets
}

/// The relative link from applet `path` to `bin/busybox`.
fn symlink_target(path: &str) -> String {
    match path.strip_prefix("bin/") {
        Some(name) if !name.contains('/') => "busybox".to_owned(),
        _ => "../".repeat(path.matches('/').count()) + "bin/busybox",
    }
}

/// Streams the layer tar through gzip into a blob, hashing both the tar and
/// the gzip bytes on the way. Returns (layer digest, layer size, diff_id).
fn write_layer(blobs: &Path, entries: &BTreeMap<String, Entry>) -> (String, u64, String) {
    let partial = blobs.join(".layer.partial");
    let file =
        File::create(&partial).unwrap_or_else(|err| panic!("create {}: {err}", partial.display()));
    let gzip = GzEncoder::new(Hashing::new(file), Compression::default());
    let mut tar = tar::Builder::new(Hashing::new(gzip));
    for (path, entry) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(entry.mode);
        header.set_uid(entry.owner);
        header.set_gid(entry.owner);
        header.set_mtime(MTIME);
        header.set_size(0);
        let written = match &entry.kind {
            Kind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                tar.append_data(&mut header, path, io::empty())
            }
            Kind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                tar.append_link(&mut header, path, target)
            }
            Kind::File(Content::Text(text)) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(text.len() as u64);
                tar.append_data(&mut header, path, text.as_bytes())
            }
            Kind::File(Content::Host(source)) => {
                let file = File::open(source).unwrap_or_else(|err| panic!("open {source}: {err}"));
                let len = file
                    .metadata()
                    .unwrap_or_else(|err| panic!("stat {source}: {err}"))
                    .len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(len);
                tar.append_data(&mut header, path, file)
            }
        };
        written.unwrap_or_else(|err| panic!("write {path} into {}: {err}", partial.display()));
    }
    let fail = |err: io::Error| -> ! { panic!("finish the layer {}: {err}", partial.display()) };
    let (gzip, diff_id, _) = tar.into_inner().unwrap_or_else(|e| fail(e)).finish();
    let (file, layer, size) = gzip.finish().unwrap_or_else(|e| fail(e)).finish();
    file.sync_all().unwrap_or_else(|e| fail(e));
    persist(&partial, blobs, &layer);
    (layer, size, diff_id)
}

/// Writes `value` as a JSON blob; returns (digest, size).
fn write_json_blob(blobs: &Path, value: &Value) -> (String, u64) {
    let bytes = serde_json::to_vec(value).expect("serialize JSON");
    let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
    let partial = blobs.join(".json.partial");
    write_file(&partial, &bytes);
    persist(&partial, blobs, &digest);
    (digest, bytes.len() as u64)
}

/// Points `index.json` at the manifest under `tag`, keeping other tags.
fn write_index(dir: &Path, tag: &str, manifest: &str, size: u64, arch: &str) {
    let path = dir.join("index.json");
    let mut manifests: Vec<Value> = match fs::read(&path) {
        Ok(bytes) => {
            let index: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|err| panic!("parse {}: {err}", path.display()));
            index["manifests"].as_array().cloned().unwrap_or_default()
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(err) => panic!("read {}: {err}", path.display()),
    };
    manifests.retain(|m| m["annotations"][REF_NAME] != tag);
    manifests.push(json!({
        "mediaType": MEDIA_MANIFEST,
        "digest": manifest,
        "size": size,
        "platform": { "architecture": arch, "os": "linux" },
        "annotations": { REF_NAME: tag },
    }));
    let index = json!({ "schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": manifests });
    write_file(&path, &serde_json::to_vec(&index).expect("serialize JSON"));
}

/// Renames a finished blob to its digest's file name.
fn persist(partial: &Path, blobs: &Path, digest: &str) {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    let target = blobs.join(hex);
    fs::rename(partial, &target).unwrap_or_else(|err| {
        panic!(
            "rename {} to {}: {err}",
            partial.display(),
            target.display()
        )
    });
}

fn write_file(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
}

/// The OCI (GOARCH-style) name of this host's architecture.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        other => panic!("no OCI architecture name known for {other}"),
    }
}

/// Panics unless `path` exists and, if it is a 64-bit little-endian ELF
/// file, has no program interpreter (is statically linked): a dynamically
/// linked busybox (Debian's `busybox` package) cannot run in the image.
fn check_static(path: &Path) {
    let mut head = Vec::with_capacity(4096);
    File::open(path)
        .and_then(|file| file.take(4096).read_to_end(&mut head))
        .unwrap_or_else(|err| {
            panic!(
                "{}: {err}\n{}",
                path.display(),
                tools::install_hint("busybox")
            )
        });
    let u16_at = |at: usize| {
        head.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |at: usize| {
        head.get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    // ELF magic, class 2 (64-bit), data 1 (little-endian).
    if head.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return;
    };
    const PT_INTERP: u32 = 3;
    let dynamic = (0..usize::from(phnum)).any(|i| {
        let at = phoff as usize + i * usize::from(phentsize);
        head.get(at..at + 4)
            .is_some_and(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) == PT_INTERP)
    });
    assert!(
        !dynamic,
        "{} is dynamically linked; the image needs a static one: {}",
        path.display(),
        tools::install_hint("busybox")
    );
}

/// A writer that hashes (sha256) and counts what passes through it.
struct Hashing<W> {
    inner: W,
    sha: Sha256,
    size: u64,
}

impl<W: Write> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            sha: Sha256::new(),
            size: 0,
        }
    }

    /// The inner writer, the `sha256:<hex>` digest and the byte count.
    fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{:x}", self.sha.finalize()),
            self.size,
        )
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

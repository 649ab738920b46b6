//! Layer writing (`kiln::layer::write_layer`/`write_tar`): trees built by
//! hand, written as layers, read back with GNU tar, the `tar` crate and
//! applied over the busybox base with `umoci unpack`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln::exec::IdRange;
use kiln::image::Compression;
use kiln::layer::{self, IdMapping, Metadata, WriteOptions, WrittenLayer};
use kiln::snapshot::changes::{Change, ChangeKind, ChangeList};
use kiln::store::Store;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::support::busybox::{self, BUSYBOX};
use crate::support::tools;
use crate::support::user::{running_as_root, TestUser};

fn change(path: &str, kind: ChangeKind) -> Change {
    Change {
        path: path.into(),
        kind,
    }
}

fn list(source: &Path, changes: &[(&str, ChangeKind)]) -> ChangeList {
    let mut changes: Vec<Change> = changes.iter().map(|(p, k)| change(p, *k)).collect();
    changes.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    ChangeList {
        source: source.to_path_buf(),
        changes,
    }
}

fn write_file(path: &Path, data: &[u8], mode: u32) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn set_mtime(path: &Path, secs: i64) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    let f = fs::File::options().write(true).open(path);
    match f {
        Ok(f) => f.set_modified(t).unwrap(),
        Err(_) => fs::File::open(path).unwrap().set_modified(t).unwrap(),
    }
}

fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

/// One entry as the `tar` crate reads it back.
#[derive(Debug, Clone)]
struct Seen {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    link: Option<String>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// Entries of an uncompressed tar, in order, by name.
fn read_tar(bytes: &[u8]) -> Vec<(String, Seen)> {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(bytes);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut xattrs = BTreeMap::new();
        if let Some(pax) = e.pax_extensions().unwrap() {
            for ext in pax {
                let ext = ext.unwrap();
                if let Some(k) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(k.to_string(), ext.value_bytes().to_vec());
                }
            }
        }
        let h = e.header();
        let seen = Seen {
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            uid: e.header().uid().unwrap(),
            gid: e.header().gid().unwrap(),
            mtime: h.mtime().unwrap(),
            size: e.size(),
            link: e
                .link_name_bytes()
                .map(|l| String::from_utf8(l.into_owned()).unwrap()),
            xattrs,
        };
        let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.push((name, seen));
    }
    out
}

fn tar_bytes(changes: &ChangeList, opts: &WriteOptions) -> (Vec<u8>, String) {
    let mut out = Vec::new();
    let diff_id = layer::write_tar(&mut out, changes, opts).unwrap();
    (out, diff_id.to_string())
}

fn find<'a>(entries: &'a [(String, Seen)], name: &str) -> &'a Seen {
    &entries
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| {
            let names: Vec<_> = entries.iter().map(|(n, _)| n.as_str()).collect();
            panic!("no entry {name:?} in {names:?}")
        })
        .1
}

fn sha256_hex(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Appends `layer` to the busybox image in the layout/store at `dir` and
/// tags the result `tag`.
fn tag_with_layer(dir: &Path, base: &busybox::BusyboxImage, layer: &WrittenLayer, tag: &str) {
    let store = Store::open(dir).unwrap();
    let mut config: Value =
        serde_json::from_slice(&fs::read(base.blob(&base.config)).unwrap()).unwrap();
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(json!(layer.diff_id.to_string()));
    config["history"]
        .as_array_mut()
        .unwrap()
        .push(json!({"created_by": "layer_write test"}));
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let (config_digest, config_size) = store.put_bytes(&config_bytes).unwrap();
    let mut manifest: Value =
        serde_json::from_slice(&fs::read(base.blob(&base.manifest)).unwrap()).unwrap();
    manifest["config"]["digest"] = json!(config_digest.to_string());
    manifest["config"]["size"] = json!(config_size);
    manifest["layers"].as_array_mut().unwrap().push(json!({
        "mediaType": layer.media_type,
        "digest": layer.digest.to_string(),
        "size": layer.size,
    }));
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let (manifest_digest, manifest_size) = store.put_bytes(&manifest_bytes).unwrap();
    let index_path = dir.join("index.json");
    let mut index: Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    index["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest.to_string(),
        "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }));
    fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A v3 (namespaced) `security.capability` for cap_net_raw+ep with `rootid`.
fn cap_v3(rootid: u32) -> Vec<u8> {
    let mut v = vec![0x01, 0, 0, 0x03];
    v.extend_from_slice(&(1u32 << 13).to_le_bytes()); // permitted lo: CAP_NET_RAW
    v.extend_from_slice(&[0; 12]);
    v.extend_from_slice(&rootid.to_le_bytes());
    v
}

/// The tree of the main scenario, in `src`: what a step's upper dir could
/// hold. Needs root (devices, foreign owners, trusted.* xattrs).
fn build_scenario(src: &Path) -> ChangeList {
    use ChangeKind::*;
    let long_dir = format!("long/{}", "d".repeat(60));
    let long_name = format!("{long_dir}/{}", "f".repeat(80));
    write_file(&src.join("etc/new.conf"), b"new\n", 0o644);
    write_file(&src.join("usr/bin/suid"), b"#!/bin/sh\n", 0o4755);
    write_file(&src.join("usr/bin/sgid"), b"#!/bin/sh\n", 0o2711);
    write_file(&src.join("usr/bin/ping"), b"ping\n", 0o755);
    fs::create_dir_all(src.join("shared")).unwrap();
    fs::set_permissions(src.join("shared"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir_all(src.join("grp")).unwrap();
    fs::set_permissions(src.join("grp"), fs::Permissions::from_mode(0o2775)).unwrap();
    write_file(&src.join(&long_name), b"long\n", 0o600);
    write_file(&src.join("ünï/çødé-名前.txt"), b"unicode\n", 0o644);
    fs::create_dir_all(src.join("links")).unwrap();
    symlink("../etc/new.conf", src.join("links/rel")).unwrap();
    symlink("/etc/passwd", src.join("links/abs")).unwrap();
    symlink("nowhere", src.join("links/dangling")).unwrap();
    write_file(&src.join("h/a"), b"same inode\n", 0o640);
    fs::hard_link(src.join("h/a"), src.join("h/b")).unwrap();
    fs::hard_link(src.join("h/a"), src.join("h/c-not-listed")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("null2"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    write_file(&src.join("owned"), b"owned\n", 0o644);
    fs::create_dir_all(src.join("tmp")).unwrap();
    lchown(&src.join("owned"), 1234, 5678);
    // Xattrs: kept, stripped, translated.
    set_xattr(&src.join("etc/new.conf"), "user.test", b"value");
    set_xattr(&src.join("etc/new.conf"), "trusted.kept", b"t");
    set_xattr(&src.join("etc/new.conf"), "user.overlay.origin", b"x");
    set_xattr(&src.join("etc/new.conf"), "trusted.overlay.origin", b"x");
    set_xattr(&src.join("etc/new.conf"), "user.fuseoverlayfs.x", b"x");
    set_xattr(
        &src.join("usr/bin/ping"),
        "security.capability",
        &cap_v3(1000),
    );
    // The opaque dir replacing the base's /home, with one new child.
    write_file(&src.join("home/newuser/.profile"), b"x\n", 0o644);
    set_xattr(&src.join("home"), "trusted.overlay.opaque", b"y");
    // The parent of the whiteout of etc/group is the copied-up /etc.
    list(
        src,
        &[
            ("etc/new.conf", Upsert),
            ("etc/group", Delete),
            ("usr/bin/suid", Upsert),
            ("usr/bin/sgid", Upsert),
            ("usr/bin/ping", Upsert),
            ("shared", Upsert),
            ("grp", Upsert),
            ("long", Upsert),
            (&long_dir, Upsert),
            (&long_name, Upsert),
            ("ünï", Upsert),
            ("ünï/çødé-名前.txt", Upsert),
            ("links", Upsert),
            ("links/rel", Upsert),
            ("links/abs", Upsert),
            ("links/dangling", Upsert),
            ("h", Upsert),
            ("h/a", Upsert),
            ("h/b", Upsert),
            ("fifo", Upsert),
            ("null2", Upsert),
            ("owned", Upsert),
            ("home", OpaqueDir),
            ("home/newuser", Upsert),
            ("home/newuser/.profile", Upsert),
            ("tmp/gone-dir", Delete),
        ],
    )
}

#[test]
fn writes_sorted_pax_tar_with_whiteouts_hardlinks_and_xattrs() {
    if !running_as_root() {
        eprintln!("skipped: needs root (devices, trusted.* xattrs, foreign owners)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("upper");
    let changes = build_scenario(&src);
    let stored = get_xattr(&src.join("usr/bin/ping"), "security.capability").unwrap();
    assert_eq!(stored.len(), 24, "the kernel kept the namespaced (v3) form");
    let opts = WriteOptions {
        source_date_epoch: Some(1_000_000),
        ..WriteOptions::default()
    };
    let (bytes, diff_id) = tar_bytes(&changes, &opts);
    assert_eq!(diff_id, sha256_hex(&bytes));
    let entries = read_tar(&bytes);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();

    // Sorted bytewise, except the opaque marker right after its directory.
    let mut sorted: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !n.ends_with(".wh..wh..opq"))
        .collect();
    let before = sorted.clone();
    sorted.sort_by(|a, b| a.trim_end_matches('/').cmp(b.trim_end_matches('/')));
    assert_eq!(before, sorted);
    let home = names.iter().position(|n| *n == "home/").unwrap();
    assert_eq!(names[home + 1], "home/.wh..wh..opq");
    // Ancestors that were not listed: etc/, usr/, usr/bin/, tmp/ (of the whiteout).
    for dir in ["etc/", "usr/", "usr/bin/", "tmp/"] {
        assert_eq!(find(&entries, dir).kind, tar::EntryType::Directory, "{dir}");
    }
    assert!(!names.contains(&"h/c-not-listed"));

    // Whiteouts: empty regular files, mode 0, owner 0:0, mtime = epoch.
    for wh in ["etc/.wh.group", "tmp/.wh.gone-dir", "home/.wh..wh..opq"] {
        let e = find(&entries, wh);
        assert_eq!(
            (e.kind, e.size, e.mode, e.uid, e.gid, e.mtime),
            (tar::EntryType::Regular, 0, 0, 0, 0, 1_000_000),
            "{wh}"
        );
    }
    // Modes with special bits.
    assert_eq!(find(&entries, "usr/bin/suid").mode, 0o4755);
    assert_eq!(find(&entries, "usr/bin/sgid").mode, 0o2711);
    assert_eq!(find(&entries, "shared/").mode, 0o1777);
    assert_eq!(find(&entries, "grp/").mode, 0o2775);
    // Hardlinks: first name is the file, the next a link to it.
    let a = find(&entries, "h/a");
    let b = find(&entries, "h/b");
    assert_eq!((a.kind, a.size), (tar::EntryType::Regular, 11));
    assert_eq!(b.kind, tar::EntryType::Link);
    assert_eq!(b.link.as_deref(), Some("h/a"));
    // Symlinks, devices, fifos, owners.
    assert_eq!(
        find(&entries, "links/rel").link.as_deref(),
        Some("../etc/new.conf")
    );
    assert_eq!(
        find(&entries, "links/dangling").link.as_deref(),
        Some("nowhere")
    );
    assert_eq!(find(&entries, "fifo").kind, tar::EntryType::Fifo);
    assert_eq!(find(&entries, "null2").kind, tar::EntryType::Char);
    let owned = find(&entries, "owned");
    assert_eq!((owned.uid, owned.gid), (1234, 5678));
    // Long and unicode names survive (PAX path).
    assert!(names
        .iter()
        .any(|n| n.len() > 100 && n.ends_with(&"f".repeat(80))));
    assert!(names.contains(&"ünï/çødé-名前.txt"));
    // Xattrs: user/trusted kept, overlay bookkeeping gone, capability v2.
    let conf = find(&entries, "etc/new.conf");
    assert_eq!(
        conf.xattrs.keys().collect::<Vec<_>>(),
        ["trusted.kept", "user.test"]
    );
    let cap = &find(&entries, "usr/bin/ping").xattrs["security.capability"];
    assert_eq!(cap.len(), 20);
    assert_eq!(&cap[..4], &[0x01, 0, 0, 0x02]);
    assert_eq!(&cap[4..], &cap_v3(1000)[4..20]);
    assert!(find(&entries, "home/").xattrs.is_empty());
    // mtimes clamped; no entry later than the epoch.
    assert!(entries.iter().all(|(_, e)| e.mtime <= 1_000_000));

    // GNU tar lists and extracts it (with xattrs) without complaint.
    let tarfile = dir.path().join("layer.tar");
    fs::write(&tarfile, &bytes).unwrap();
    let listing = tools::run_stdout(Command::new("tar").arg("-tvf").arg(&tarfile));
    assert!(listing.contains("h/b link to h/a"), "{listing}");
    let out = dir.path().join("gnu");
    fs::create_dir(&out).unwrap();
    tools::run(
        Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "-xpf"])
            .arg(&tarfile)
            .arg("-C")
            .arg(&out),
    );
    assert_eq!(
        fs::metadata(out.join("h/a")).unwrap().ino(),
        fs::metadata(out.join("h/b")).unwrap().ino()
    );
    assert_eq!(
        get_xattr(&out.join("etc/new.conf"), "user.test").as_deref(),
        Some(&b"value"[..])
    );
}

#[test]
fn umoci_applies_the_layer_over_busybox() {
    if !running_as_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let umoci = tools::require("umoci");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("upper");
    let changes = build_scenario(&src);
    let layout = dir.path().join("layout");
    let base = busybox::busybox_layout(&layout, "base");
    let store = Store::open(&layout).unwrap();
    let written = layer::write_layer(&store, &changes, &WriteOptions::default()).unwrap();
    assert_eq!(
        written.media_type,
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    tag_with_layer(&layout, &base, &written, "next");
    let bundle = dir.path().join("bundle");
    tools::run(
        Command::new(&umoci)
            .args(["unpack", "--image"])
            .arg(format!("{}:next", layout.display()))
            .arg(&bundle),
    );
    let root = bundle.join("rootfs");
    // Whiteouts and the opaque dir applied.
    assert!(root.join("etc/passwd").exists());
    assert!(!root.join("etc/group").exists());
    assert!(
        !root.join("home/user").exists(),
        "opaque /home hides home/user"
    );
    assert!(root.join("home/newuser/.profile").is_file());
    assert!(root.join("bin/busybox").is_file());
    // Kinds, modes, owners, links, xattrs.
    let meta = |p: &str| fs::symlink_metadata(root.join(p)).unwrap();
    assert_eq!(meta("usr/bin/suid").mode() & 0o7777, 0o4755);
    assert_eq!(meta("shared").mode() & 0o7777, 0o1777);
    assert_eq!(meta("grp").mode() & 0o7777, 0o2775);
    assert_eq!((meta("owned").uid(), meta("owned").gid()), (1234, 5678));
    assert_eq!(meta("h/a").ino(), meta("h/b").ino());
    assert_eq!(meta("h/a").nlink(), 2);
    assert_eq!(
        fs::read_link(root.join("links/abs")).unwrap(),
        PathBuf::from("/etc/passwd")
    );
    assert!(meta("fifo").file_type().is_fifo());
    assert_eq!(meta("null2").rdev(), rustix::fs::makedev(1, 3));
    assert_eq!(
        get_xattr(&root.join("etc/new.conf"), "user.test").as_deref(),
        Some(&b"value"[..])
    );
    assert_eq!(
        get_xattr(&root.join("etc/new.conf"), "user.overlay.origin"),
        None
    );
    let cap = get_xattr(&root.join("usr/bin/ping"), "security.capability").unwrap();
    assert_eq!(&cap[4..20], &cap_v3(1000)[4..20]);
    let long: Vec<_> = fs::read_dir(root.join("long")).unwrap().collect();
    assert_eq!(long.len(), 1);
    assert_eq!(
        fs::read(root.join("ünï/çødé-名前.txt")).unwrap(),
        b"unicode\n"
    );
}

#[test]
fn diff_id_is_the_sha256_of_the_decompressed_blob() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write_file(&src.join("a/b"), &vec![7u8; 100_000], 0o644);
    write_file(&src.join("a/c"), b"c", 0o644);
    let changes = list(
        &src,
        &[
            ("a", ChangeKind::Upsert),
            ("a/b", ChangeKind::Upsert),
            ("a/c", ChangeKind::Upsert),
        ],
    );
    let store = Store::open(&dir.path().join("store")).unwrap();
    let (tar, tar_diff_id) = tar_bytes(&changes, &WriteOptions::default());
    for (compression, tool) in [(Compression::Gzip, "gzip"), (Compression::Zstd, "zstd")] {
        let opts = WriteOptions {
            compression,
            ..WriteOptions::default()
        };
        let written = layer::write_layer(&store, &changes, &opts).unwrap();
        let blob = store.blob_path(&written.digest);
        assert_eq!(written.size, fs::metadata(&blob).unwrap().len());
        assert_eq!(
            written.digest.to_string(),
            sha256_hex(&fs::read(&blob).unwrap())
        );
        let out = tools::run(Command::new(tools::require(tool)).arg("-dc").arg(&blob));
        assert_eq!(out.stdout, tar, "{tool}");
        let sum = tools::run_stdout(
            Command::new("sh")
                .arg("-c")
                .arg(format!("{tool} -dc {} | sha256sum", blob.display())),
        );
        assert_eq!(
            format!("sha256:{}", &sum[..64]),
            written.diff_id.to_string()
        );
        assert_eq!(written.diff_id.to_string(), tar_diff_id);
    }
    let plain = layer::write_layer(
        &store,
        &changes,
        &WriteOptions {
            compression: Compression::None,
            ..WriteOptions::default()
        },
    )
    .unwrap();
    assert_eq!(plain.digest, plain.diff_id);
    assert_eq!(plain.media_type, "application/vnd.oci.image.layer.v1.tar");
}

#[test]
fn source_date_epoch_makes_digests_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let epoch = 1_600_000_000;
    let mut digests = Vec::new();
    for (i, mtime) in [(0, epoch + 10), (1, epoch + 99_999)] {
        let src = dir.path().join(format!("src{i}"));
        write_file(&src.join("d/f"), b"same\n", 0o644);
        symlink("f", src.join("d/l")).unwrap();
        for p in ["d/f", "d"] {
            set_mtime(&src.join(p), mtime);
        }
        let changes = list(
            &src,
            &[
                ("d", ChangeKind::Upsert),
                ("d/f", ChangeKind::Upsert),
                ("d/l", ChangeKind::Upsert),
                ("gone", ChangeKind::Delete),
            ],
        );
        let store = Store::open(&dir.path().join("store")).unwrap();
        let clamped = WriteOptions {
            source_date_epoch: Some(epoch),
            ..WriteOptions::default()
        };
        let unclamped = WriteOptions::default();
        digests.push((
            layer::write_layer(&store, &changes, &clamped).unwrap(),
            tar_bytes(&changes, &unclamped).1,
        ));
        let (bytes, _) = tar_bytes(&changes, &clamped);
        // Older mtimes are kept: BuildKit's min(mtime, epoch).
        let older = WriteOptions {
            source_date_epoch: Some(mtime + 5),
            ..WriteOptions::default()
        };
        let (b2, _) = tar_bytes(&changes, &older);
        assert_eq!(find(&read_tar(&b2), "d/f").mtime, mtime as u64);
        assert!(read_tar(&bytes)
            .iter()
            .all(|(_, e)| e.mtime == epoch as u64));
    }
    assert_eq!(digests[0].0.digest, digests[1].0.digest);
    assert_eq!(digests[0].0.diff_id, digests[1].0.diff_id);
    assert_ne!(
        digests[0].1, digests[1].1,
        "without the epoch the mtimes differ"
    );
}

/// Runs in a child test process (see below): writes the 200 MB layer of
/// `$KILN_TEST_BIG_DIR` and prints the process's peak RSS.
#[test]
#[ignore = "helper of big_file_is_streamed_with_bounded_memory"]
fn child_write_big_layer() {
    let Some(dir) = std::env::var_os("KILN_TEST_BIG_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let changes = list(&dir.join("src"), &[("big", ChangeKind::Upsert)]);
    let store = Store::open(&dir.join("store")).unwrap();
    let written = layer::write_layer(&store, &changes, &WriteOptions::default()).unwrap();
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    println!("RESULT {} {}", written.diff_id, hwm);
}

#[test]
fn big_file_is_streamed_with_bounded_memory() {
    const SIZE: u64 = 200 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    // Varied content (not a sparse run of zeros) so every stage of the
    // chain works: one pseudo-random block, each copy stamped with its index.
    let mut f = fs::File::create(src.join("big")).unwrap();
    let mut block = vec![0u8; 1 << 20];
    let mut x: u32 = 1;
    for chunk in block.chunks_mut(4) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    for i in 0..(SIZE >> 20) {
        block[..8].copy_from_slice(&i.to_le_bytes());
        f.write_all(&block).unwrap();
    }
    drop(f);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "layer_write::child_write_big_layer",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("KILN_TEST_BIG_DIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, r)| r))
        .unwrap_or_else(|| panic!("no result in {stdout}"));
    let mut fields = line.split_whitespace();
    let diff_id = fields.next().unwrap();
    let kb: u64 = fields.nth(1).unwrap().parse().unwrap();
    eprintln!(
        "writing a {} MB layer peaked at {} MB RSS",
        SIZE >> 20,
        kb / 1024
    );
    assert!(
        kb < 64 * 1024,
        "peak RSS {kb} kB: the layer was not streamed"
    );
    // The blob decompresses to a tar whose hash is the diff_id.
    let store = Store::open(&dir.path().join("store")).unwrap();
    let blobs: Vec<_> = fs::read_dir(dir.path().join("store/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(blobs.len(), 1);
    let sum = tools::run_stdout(
        Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -dc {} | sha256sum", blobs[0].display())),
    );
    assert_eq!(format!("sha256:{}", &sum[..64]), diff_id);
    drop(store);
}

/// A sidecar file with `lines`, loaded as `Metadata`.
fn sidecar(dir: &Path, name: &str, lines: &[Value]) -> Metadata {
    let path = dir.join(name);
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(&path, text).unwrap();
    Metadata::load(&path).unwrap()
}

#[test]
fn recorded_ownership_is_restored_under_a_single_id_map() {
    if !running_as_root() {
        eprintln!("skipped: needs root to give files foreign host owners");
        return;
    }
    let caller = (1000, 1000);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("upper");
    // What a step over an unprivileged unpack leaves: everything the caller's.
    write_file(&src.join("etc/shadow"), b"root:*::\n", 0o640);
    write_file(&src.join("usr/bin/ping"), b"ping\n", 0o755); // setuid stripped on disk
    write_file(&src.join("etc/chmodded"), b"x\n", 0o600); // the step's chmod
    write_file(&src.join("etc/new"), b"x\n", 0o644);
    write_file(&src.join("etc/foreign"), b"x\n", 0o644);
    write_file(&src.join("etc/foreign-recorded"), b"x\n", 0o644);
    write_file(&src.join("etc/kind-changed"), b"x\n", 0o644);
    for p in [
        "etc",
        "usr",
        "usr/bin",
        "etc/shadow",
        "usr/bin/ping",
        "etc/chmodded",
        "etc/new",
    ] {
        lchown(&src.join(p), caller.0, caller.1);
    }
    lchown(&src.join("etc/kind-changed"), caller.0, caller.1);
    lchown(&src.join("etc/foreign"), 4242, 4242);
    lchown(&src.join("etc/foreign-recorded"), 4242, 4242);
    let cap = cap_v3(0)[..20].to_vec();
    let top = sidecar(
        dir.path(),
        "top.jsonl",
        &[json!({"path": "etc/shadow", "kind": "file", "uid": 0, "gid": 42, "mode": 0o640})],
    );
    let bottom = sidecar(
        dir.path(),
        "bottom.jsonl",
        &[
            json!({"path": "etc", "kind": "dir", "uid": 0, "gid": 0, "mode": 0o755}),
            json!({"path": "etc/shadow", "kind": "file", "uid": 7, "gid": 7, "mode": 0o600}),
            json!({"path": "usr/bin/ping", "kind": "file", "uid": 0, "gid": 0, "mode": 0o4755,
                   "xattrs": {"security.capability": base64(&cap)}}),
            json!({"path": "etc/chmodded", "kind": "file", "uid": 0, "gid": 3, "mode": 0o644}),
            json!({"path": "etc/foreign-recorded", "kind": "file", "uid": 5, "gid": 6, "mode": 0o644}),
            json!({"path": "etc/kind-changed", "kind": "dir", "uid": 9, "gid": 9, "mode": 0o755}),
        ],
    );
    let changes = list(
        &src,
        &[
            ("etc/shadow", ChangeKind::Upsert),
            ("usr/bin/ping", ChangeKind::Upsert),
            ("etc/chmodded", ChangeKind::Upsert),
            ("etc/new", ChangeKind::Upsert),
            ("etc/foreign", ChangeKind::Upsert),
            ("etc/foreign-recorded", ChangeKind::Upsert),
            ("etc/kind-changed", ChangeKind::Upsert),
        ],
    );
    let opts = WriteOptions {
        ids: IdMapping::single(caller.0, caller.1),
        recorded: vec![top, bottom],
        ..WriteOptions::default()
    };
    let entries = read_tar(&tar_bytes(&changes, &opts).0);
    let owner = |n: &str| {
        let e = find(&entries, n);
        (e.uid, e.gid, e.mode)
    };
    assert_eq!(owner("etc/shadow"), (0, 42, 0o640), "top-most record wins");
    assert_eq!(
        owner("usr/bin/ping"),
        (0, 0, 0o4755),
        "stripped setuid restored"
    );
    assert_eq!(
        find(&entries, "usr/bin/ping").xattrs["security.capability"],
        cap
    );
    assert_eq!(
        owner("etc/chmodded"),
        (0, 3, 0o600),
        "the step's chmod wins"
    );
    assert_eq!(owner("etc/new"), (0, 0, 0o644));
    assert_eq!(owner("etc/foreign"), (65534, 65534, 0o644));
    assert_eq!(owner("etc/foreign-recorded"), (5, 6, 0o644));
    assert_eq!(
        owner("etc/kind-changed"),
        (0, 0, 0o644),
        "a record of another kind is ignored"
    );
    assert_eq!(owner("etc/"), (0, 0, 0o755));
}

fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn subordinate_ids_map_back_to_container_ids() {
    if !running_as_root() {
        eprintln!("skipped: needs root to give files subordinate host owners");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("upper");
    write_file(&src.join("var/apt"), b"x\n", 0o644);
    write_file(&src.join("var/root"), b"x\n", 0o644);
    lchown(&src.join("var"), 1000, 1000);
    lchown(&src.join("var/apt"), 100_000 + 99, 200_000 + 64);
    lchown(&src.join("var/root"), 1000, 1000);
    let range = |start| IdRange {
        start,
        count: 65536,
    };
    let opts = WriteOptions {
        ids: IdMapping::subordinate(1000, 1000, range(100_000), range(200_000)),
        ..WriteOptions::default()
    };
    let changes = list(
        &src,
        &[
            ("var", ChangeKind::Upsert),
            ("var/apt", ChangeKind::Upsert),
            ("var/root", ChangeKind::Upsert),
        ],
    );
    let entries = read_tar(&tar_bytes(&changes, &opts).0);
    let ids = |n: &str| (find(&entries, n).uid, find(&entries, n).gid);
    assert_eq!(ids("var/apt"), (100, 65));
    assert_eq!(ids("var/root"), (0, 0));
    assert_eq!(ids("var/"), (0, 0));
}

#[test]
fn refuses_listed_paths_missing_or_behind_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(&src).unwrap();
    symlink("/etc", src.join("escape")).unwrap();
    for path in ["missing", "escape/passwd"] {
        let changes = list(&src, &[(path, ChangeKind::Upsert)]);
        let err =
            layer::write_tar(std::io::sink(), &changes, &WriteOptions::default()).expect_err(path);
        assert!(err.to_string().contains("refused"), "{path}: {err}");
    }
}

/// A busybox root filesystem with the applets the chown test uses.
fn chown_rootfs(dir: &Path) {
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::create_dir_all(dir.join("tmp")).unwrap();
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::copy(BUSYBOX, dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "chown", "touch", "echo", "stat"] {
        symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\n").unwrap();
}

#[test]
fn chown_is_emulated_with_a_single_id_map() {
    let user = TestUser::get();
    let dir = user.tempdir();
    let root = dir.path().join("root");
    chown_rootfs(&root);
    user.own(dir.path());
    let run = |flag: &str| {
        user.command(env!("CARGO_BIN_EXE_kiln"))
            .args(["debug", "run", "--idmap", "single", "--emulate-chown", flag])
            .arg("--rootfs")
            .arg(&root)
            .args([
                "--",
                "/bin/sh",
                "-c",
                "touch /tmp/f && chown 1:1 /tmp/f && chown -h 2:2 /tmp/f && echo ok && stat -c %u:%g /tmp/f",
            ])
            .output()
            .unwrap()
    };
    for flag in ["auto", "on"] {
        let out = run(flag);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "--emulate-chown {flag}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Succeeded, and changed nothing (documented limit).
        assert_eq!(stdout, "ok\n0:0\n", "--emulate-chown {flag}");
    }
    let out = run("off");
    assert!(
        !out.status.success(),
        "chown to an unmapped id must fail without emulation"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ok"));
}

/// An image in the store/layout `store` made of `layers`, named `name`.
fn image_of(store: &Store, layers: &[WrittenLayer], name: &str) {
    let config = json!({
        "architecture": busybox::oci_arch(),
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers",
                   "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
    });
    let (config_digest, config_size) = store
        .put_bytes(&serde_json::to_vec(&config).unwrap())
        .unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest.to_string(), "size": config_size},
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.media_type, "digest": l.digest.to_string(), "size": l.size,
        })).collect::<Vec<_>>(),
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let (digest, size) = store.put_bytes(&bytes).unwrap();
    store
        .set_name(
            name,
            kiln::store::Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                digest,
                size,
                annotations: BTreeMap::new(),
                platform: None,
            },
        )
        .unwrap();
}

/// Every path under `root`, sorted, relative.
fn all_paths(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(root).unwrap().to_str().unwrap().to_string());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// A real rootless step over kernel overlay with subordinate ids: the upper
/// dir it leaves (overlay xattrs, copy-ups, a hardlink to a lower file, a
/// whiteout device, an opaque dir) written as a layer over a base layer
/// (itself written from the lower dir), then applied by umoci, as root and
/// `--rootless` as the test user.
#[test]
fn a_rootless_overlay_step_becomes_a_layer_umoci_applies() {
    let user = TestUser::get();
    if !running_as_root() || !user.has_subids() {
        eprintln!("skipped: needs root to provision the test user with subordinate ids");
        return;
    }
    let (subuid, subgid) = (user.subuid.unwrap(), user.subgid.unwrap());
    let dir = user.tempdir();
    let [lower, upper, work, target, store_dir] =
        ["lower", "upper", "work", "target", "store"].map(|n| dir.path().join(n));
    chown_rootfs(&lower);
    for applet in ["rm", "mkdir", "ln", "chmod", "cat"] {
        symlink("busybox", lower.join("bin").join(applet)).unwrap();
    }
    write_file(&lower.join("etc/shadow"), b"root:*::\n", 0o640);
    write_file(&lower.join("home/user/old"), b"old\n", 0o644);
    for d in [&upper, &work, &target, &store_dir] {
        fs::create_dir_all(d).unwrap();
    }
    user.own(dir.path());
    // What an unprivileged unpack would have recorded for the lower dir.
    let recorded = sidecar(
        dir.path(),
        "lower.jsonl",
        &[json!({"path": "etc/shadow", "kind": "file", "uid": 0, "gid": 42, "mode": 0o640})],
    );
    let script = "echo more >> /etc/shadow && touch /newfile && chown 100:65 /newfile \
                  && chmod 4750 /newfile && ln /bin/busybox /bin/bb2 && rm /etc/group \
                  && rm -r /home/user && mkdir /home/user && echo hi > /home/user/new \
                  && mkdir -p /deep/a && echo y > /deep/a/c";
    let out = user
        .command(env!("CARGO_BIN_EXE_kiln"))
        .args(["debug", "run", "--overlay-lower"])
        .arg(&lower)
        .arg("--overlay-upper")
        .arg(&upper)
        .arg("--overlay-work")
        .arg(&work)
        .arg("--overlay-target")
        .arg(&target)
        .args(["--", "/bin/sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = IdMapping::subordinate(user.uid, user.gid, convert(subuid), convert(subgid));
    let opts = WriteOptions {
        ids: ids.clone(),
        recorded: vec![recorded.clone()],
        source_date_epoch: Some(0),
        ..WriteOptions::default()
    };
    // The step's change list, as a snapshotter would give it.
    use ChangeKind::*;
    let step = list(
        &upper,
        &[
            ("etc/shadow", Upsert),
            ("etc/group", Delete),
            ("newfile", Upsert),
            ("bin/busybox", Upsert),
            ("bin/bb2", Upsert),
            ("home/user", OpaqueDir),
            ("home/user/new", Upsert),
            ("deep", Upsert),
            ("deep/a", Upsert),
            ("deep/a/c", Upsert),
        ],
    );
    let entries = read_tar(&tar_bytes(&step, &opts).0);
    let e = |n: &str| find(&entries, n).clone();
    assert_eq!(
        (
            e("etc/shadow").uid,
            e("etc/shadow").gid,
            e("etc/shadow").mode
        ),
        (0, 42, 0o640)
    );
    assert_eq!(
        (e("newfile").uid, e("newfile").gid, e("newfile").mode),
        (100, 65, 0o4750)
    );
    // The first name in order carries the content, the other links to it.
    assert_eq!(e("bin/bb2").kind, tar::EntryType::Regular);
    assert_eq!(e("bin/busybox").kind, tar::EntryType::Link);
    assert_eq!(e("bin/busybox").link.as_deref(), Some("bin/bb2"));
    assert_eq!(e("etc/.wh.group").size, 0);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    let at = names.iter().position(|n| *n == "home/user/").unwrap();
    assert_eq!(names[at + 1], "home/user/.wh..wh..opq");
    // The upper dir carries overlay bookkeeping; the layer does not.
    assert!(
        get_xattr(&upper.join("home/user"), "user.overlay.opaque").is_some(),
        "overlay marked the recreated dir opaque"
    );
    for (name, seen) in &entries {
        assert!(
            seen.xattrs.keys().all(|k| !k.contains("overlay")),
            "{name}: {:?}",
            seen.xattrs
        );
        assert!(seen.mtime == 0, "{name} clamped");
    }

    // Base layer = the lower dir, then the step's layer; umoci applies both.
    let store = Store::open(&store_dir).unwrap();
    let base_paths = all_paths(&lower);
    let base_list = ChangeList {
        source: lower.clone(),
        changes: {
            let mut v: Vec<Change> = base_paths.iter().map(|p| change(p, Upsert)).collect();
            v.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
            v
        },
    };
    let base_opts = WriteOptions {
        ids,
        recorded: vec![recorded],
        ..WriteOptions::default()
    };
    let base = layer::write_layer(&store, &base_list, &base_opts).unwrap();
    let top = layer::write_layer(&store, &step, &opts).unwrap();
    image_of(&store, &[base, top], "step");
    let umoci = tools::require("umoci");
    let bundle = dir.path().join("bundle-root");
    tools::run(
        Command::new(&umoci)
            .args(["unpack", "--image"])
            .arg(format!("{}:step", store_dir.display()))
            .arg(&bundle),
    );
    let check = |root: &Path, owners: bool| {
        assert!(!root.join("etc/group").exists());
        assert!(root.join("etc/passwd").exists());
        assert!(!root.join("home/user/old").exists());
        assert_eq!(fs::read(root.join("home/user/new")).unwrap(), b"hi\n");
        assert_eq!(
            fs::read(root.join("etc/shadow")).unwrap(),
            b"root:*::\nmore\n"
        );
        assert_eq!(fs::read(root.join("deep/a/c")).unwrap(), b"y\n");
        let ino = |p: &str| fs::symlink_metadata(root.join(p)).unwrap().ino();
        assert_eq!(ino("bin/busybox"), ino("bin/bb2"), "hardlink kept");
        if owners {
            let m = fs::symlink_metadata(root.join("newfile")).unwrap();
            assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (100, 65, 0o4750));
            let m = fs::symlink_metadata(root.join("etc/shadow")).unwrap();
            assert_eq!((m.uid(), m.gid()), (0, 42));
        }
    };
    check(&bundle.join("rootfs"), true);
    // Rootless: the test user applies the same image (whiteouts, opaque dir,
    // hardlinks) without privileges.
    let rootless = dir.path().join("bundle-rootless");
    let out = user
        .command(&umoci)
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:step", store_dir.display()))
        .arg(&rootless)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(&rootless.join("rootfs"), false);
}

fn convert(r: crate::support::user::IdRange) -> IdRange {
    IdRange {
        start: r.start,
        count: r.count,
    }
}

#[test]
fn a_layer_is_plain_only_without_owners_xattrs_or_devices() {
    if !running_as_root() {
        eprintln!("skipped: needs root (owners 0:0 under the identity map)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("upper");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::set_permissions(src.join("d"), fs::Permissions::from_mode(0o755)).unwrap();
    write_file(&src.join("d/f"), b"x", 0o644);
    let changes = list(
        &src,
        &[("d", ChangeKind::Upsert), ("d/f", ChangeKind::Upsert)],
    );
    let store = Store::open(&dir.path().join("store")).unwrap();
    let written = || layer::write_layer(&store, &changes, &WriteOptions::default()).unwrap();
    let write = || written().is_plain();
    // The listing is the headers as written, for adopting the upper dir.
    let listing = written().listing.expect("root-owned file and directory");
    let got: Vec<(String, layer::ListedKind, u32)> = listing
        .iter()
        .map(|e| (e.path.clone(), e.kind.clone(), e.mode))
        .collect();
    assert_eq!(
        got,
        [
            ("d".to_string(), layer::ListedKind::Dir, 0o755),
            (
                "d/f".to_string(),
                layer::ListedKind::File { size: 1 },
                0o644
            )
        ]
    );
    set_xattr(&src.join("d/f"), "user.k", b"v");
    assert!(!write(), "an xattr");
    fs::remove_file(src.join("d/f")).unwrap();
    write_file(&src.join("d/f"), b"x", 0o644);
    lchown(&src.join("d"), 0, 4);
    assert!(!write(), "a group other than 0");
}

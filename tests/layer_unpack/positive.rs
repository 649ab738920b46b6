//! What unpacking must produce: whiteouts in both modes (checked against a
//! real overlay mount), links, modes, times, xattrs, ownership as root and as
//! an unprivileged user, compressions, diff_id checks, busybox vs `tar -x`.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use kiln::layer::{
    self, unpack, Compression, Kind, LayerError, Metadata, Mode, OverlayXattrs, UnpackOptions,
};
use kiln::store::Digest;

use super::build::*;
use super::tree::shape;
use crate::support::{busybox, tools, user::TestUser};

fn opts(data: &[u8], mode: Mode) -> UnpackOptions {
    UnpackOptions {
        layer: sha256(data),
        mode,
        expected_diff_id: None,
        lowers: Vec::new(),
    }
}

fn apply(root: &Path, layers: &[Vec<Ent>], mode: Mode) -> Metadata {
    let mut meta = Metadata::default();
    for (i, l) in layers.iter().enumerate() {
        let data = tar(l);
        let dest = match mode {
            Mode::Flatten => root.to_path_buf(),
            Mode::OverlayLower(_) => root.join(i.to_string()),
        };
        fs::create_dir_all(&dest).unwrap();
        let mut o = opts(&data, mode);
        o.lowers = (0..i).rev().map(|j| root.join(j.to_string())).collect();
        unpack(data.as_slice(), &dest, &o, &mut meta).unwrap();
    }
    meta
}

fn getxattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    let n = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// Two layers exercising every whiteout rule.
fn whiteout_layers() -> Vec<Vec<Ent>> {
    vec![
        vec![
            dir("a"),
            file("a/x", "x"),
            file("a/y", "y"),
            dir("b"),
            file("b/z", "z"),
            dir("d"),
            file("d/old", "old"),
            dir("d/olddir"),
            file("d/olddir/f", "f"),
            file("c", "c"),
            dir("e"),
            file("e/lower", "lower"),
        ],
        vec![
            file("a/.wh.x", ""),
            file(".wh.b", ""),
            // Added before the opaque marker in the same layer: kept.
            file("d/new", "new"),
            file("d/.wh..wh..opq", ""),
            file("d/later", "later"),
            // Same-layer content is not hidden by a same-layer whiteout.
            file("e/same", "same"),
            file("e/.wh.same", ""),
            // Whiteout of something that never existed: harmless.
            file(".wh.nothing", ""),
            // Delete a directory and recreate it: the new one must not
            // show the old content.
            file(".wh.a", ""),
            dir("a"),
            file("a/fresh", "fresh"),
        ],
    ]
}

fn expected_whiteout_tree() -> Vec<&'static str> {
    vec![
        "a", "a/fresh", "c", "d", "d/later", "d/new", "e", "e/lower", "e/same",
    ]
}

fn names(root: &Path) -> Vec<String> {
    shape(root).into_keys().collect()
}

#[test]
fn flatten_applies_whiteouts_and_opaque_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    apply(tmp.path(), &whiteout_layers(), Mode::Flatten);
    assert_eq!(names(tmp.path()), expected_whiteout_tree());
}

#[test]
fn overlay_lower_whiteouts_read_by_a_real_overlay_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let ns = OverlayXattrs::for_current_user();
    apply(tmp.path(), &whiteout_layers(), Mode::OverlayLower(ns));
    let l1 = tmp.path().join("1");
    // The representation itself.
    let wh = fs::symlink_metadata(l1.join("b")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "b is a 0/0 whiteout"
    );
    assert!(
        fs::symlink_metadata(l1.join("a/x")).is_err(),
        "a was recreated: no whiteout inside"
    );
    let prefix = match ns {
        OverlayXattrs::User => "user",
        OverlayXattrs::Trusted => "trusted",
    };
    assert_eq!(
        getxattr(&l1.join("d"), &format!("{prefix}.overlay.opaque")).as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        getxattr(&l1.join("a"), &format!("{prefix}.overlay.opaque")).as_deref(),
        Some(&b"y"[..])
    );
    assert!(l1.join("e/same").exists());

    // The kernel's reading of it: mount lower dirs 1:0 and compare with flatten.
    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let lower = format!(
        "lowerdir={}:{}",
        l1.display(),
        tmp.path().join("0").display()
    );
    let status = if crate::support::user::running_as_root() {
        Command::new(tools::require("mount"))
            .args(["-t", "overlay", "overlay", "-o", &lower])
            .arg(&merged)
            .status()
            .unwrap()
    } else {
        panic!("needs root (CI runs as root) to mount overlay");
    };
    assert!(status.success(), "mount overlay {lower}");
    let seen = names(&merged);
    Command::new(tools::require("umount"))
        .arg(&merged)
        .status()
        .unwrap();
    assert_eq!(seen, expected_whiteout_tree());
}

/// Overlay lower dirs see the layers below them: a hardlink to a lower
/// file shares its inode, an implicit parent takes the lower directory's
/// mode (the merged view shows the upper one's), and the merged mount of
/// the lot equals the flattened tree.
#[test]
fn overlay_lower_reads_the_layers_below() {
    let tmp = tempfile::tempdir().unwrap();
    let ns = OverlayXattrs::for_current_user();
    let layers = vec![
        vec![
            dir("tmp").mode(0o1777),
            file("bin/tool", "t").mode(0o755),
            dir("usr/lib"),
            symlink("lib", "usr/lib"),
        ],
        vec![
            file("tmp/new", "n"),
            hardlink("bin/tool2", "bin/tool"),
            file("usr/lib/libx", "x"),
        ],
    ];
    apply(tmp.path(), &layers, Mode::OverlayLower(ns));
    let (l0, l1) = (tmp.path().join("0"), tmp.path().join("1"));
    let md = |p: &Path| fs::symlink_metadata(p).unwrap();
    assert_eq!(
        md(&l1.join("tmp")).mode() & 0o7777,
        0o1777,
        "implicit parent copies the lower dir"
    );
    assert_eq!(
        md(&l1.join("bin/tool2")).ino(),
        md(&l0.join("bin/tool")).ino()
    );
    // Writing through the lower symlink `lib` is refused, as in flatten mode.
    let bad = tar(&[file("lib/liby", "y")]);
    fs::create_dir(tmp.path().join("2")).unwrap();
    let mut o = opts(&bad, Mode::OverlayLower(ns));
    o.lowers = vec![l1.clone(), l0.clone()];
    let err = unpack(
        bad.as_slice(),
        &tmp.path().join("2"),
        &o,
        &mut Metadata::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, LayerError::Unsafe { .. }) && err.to_string().contains("lib/liby"),
        "{err}"
    );

    let flat = tmp.path().join("flat");
    fs::create_dir(&flat).unwrap();
    apply(&flat, &layers, Mode::Flatten);
    let merged = tmp.path().join("merged");
    fs::create_dir(&merged).unwrap();
    let lower = format!("lowerdir={}:{}", l1.display(), l0.display());
    assert!(Command::new(tools::require("mount"))
        .args(["-t", "overlay", "overlay", "-o", &lower])
        .arg(&merged)
        .status()
        .unwrap()
        .success());
    let seen = shape(&merged);
    Command::new(tools::require("umount"))
        .arg(&merged)
        .status()
        .unwrap();
    assert_eq!(seen, shape(&flat));
}

#[test]
fn hardlinks_within_a_layer_and_to_earlier_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    apply(
        r,
        &[
            vec![file("f", "one"), dir("d")],
            vec![
                file("d/g", "two"),
                hardlink("d/h", "d/g"),
                hardlink("f2", "f"),
                symlink("s", "f"),
                hardlink("s2", "s"),
            ],
        ],
        Mode::Flatten,
    );
    let ino = |p: &str| fs::symlink_metadata(r.join(p)).unwrap().ino();
    assert_eq!(ino("d/g"), ino("d/h"));
    assert_eq!(ino("f"), ino("f2"));
    assert_eq!(
        ino("s"),
        ino("s2"),
        "a hardlink to a symlink links the symlink"
    );
    assert_eq!(fs::read_to_string(r.join("f2")).unwrap(), "one");
    // A hardlink to a missing target is an error naming the entry.
    let data = tar(&[hardlink("x", "missing")]);
    let err = unpack(
        data.as_slice(),
        r,
        &opts(&data, Mode::Flatten),
        &mut Metadata::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("\"x\""), "{err}");
}

#[test]
fn modes_times_xattrs_and_owners_as_root() {
    assert!(
        crate::support::user::running_as_root(),
        "CI runs these tests as root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    let meta = apply(
        r,
        &[vec![
            file("suid", "x")
                .mode(0o4755)
                .owner(1234, 5678)
                .mtime(1_234_567_890),
            file("none", "x").mode(0o000),
            dir("sgid").mode(0o2775),
            dir("tmp").mode(0o1777),
            dir("ro").mode(0o555).mtime(42),
            file("ro/inside", "x").mode(0o444),
            symlink("link", "suid").owner(42, 43).mtime(7),
            file("xa", "x")
                .xattr("user.kiln", b"v1")
                .xattr("trusted.kiln", b"v2")
                .xattr("user.overlay.opaque", b"y"),
            chardev("null", 1, 3).mode(0o666),
            fifo("fifo").mode(0o640),
        ]],
        Mode::Flatten,
    );
    let m = |p: &str| fs::symlink_metadata(r.join(p)).unwrap();
    assert_eq!(m("suid").mode() & 0o7777, 0o4755);
    assert_eq!((m("suid").uid(), m("suid").gid()), (1234, 5678));
    assert_eq!(m("suid").mtime(), 1_234_567_890);
    assert_eq!(m("none").mode() & 0o7777, 0);
    assert_eq!(m("sgid").mode() & 0o7777, 0o2775);
    assert_eq!(m("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(m("ro").mode() & 0o7777, 0o555);
    assert_eq!(
        m("ro").mtime(),
        42,
        "directory times are set after its children"
    );
    assert_eq!(
        (m("link").uid(), m("link").gid(), m("link").mtime()),
        (42, 43, 7)
    );
    assert_eq!(
        getxattr(&r.join("xa"), "user.kiln").as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(
        getxattr(&r.join("xa"), "trusted.kiln").as_deref(),
        Some(&b"v2"[..])
    );
    assert_eq!(
        getxattr(&r.join("xa"), "user.overlay.opaque"),
        None,
        "overlay xattrs from a layer are dropped"
    );
    assert!(
        m("null").file_type().is_char_device() && m("null").rdev() == rustix::fs::makedev(1, 3)
    );
    assert!(m("fifo").file_type().is_fifo() && m("fifo").mode() & 0o7777 == 0o640);
    assert!(meta.is_empty(), "root applies everything: {meta:?}");
}

#[test]
fn compressions_are_detected_and_diff_id_is_the_plain_tar() {
    let entries = [dir("etc"), file("etc/os-release", "ID=kiln\n")];
    let plain = tar(&entries);
    let diff_id = Digest::parse(&sha256(&plain)).unwrap();
    for (data, want) in [
        (plain.clone(), Compression::None),
        (gzip(&plain), Compression::Gzip),
        (zstd(&plain), Compression::Zstd),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut o = opts(&data, Mode::Flatten);
        o.expected_diff_id = Some(diff_id.clone());
        let report = unpack(data.as_slice(), tmp.path(), &o, &mut Metadata::default()).unwrap();
        assert_eq!(report.compression, want);
        assert_eq!(report.diff_id, diff_id);
        assert_eq!(
            fs::read_to_string(tmp.path().join("etc/os-release")).unwrap(),
            "ID=kiln\n"
        );
    }
    // A wrong diff_id is refused.
    let tmp = tempfile::tempdir().unwrap();
    let mut o = opts(&plain, Mode::Flatten);
    o.expected_diff_id = Some(Digest::of_bytes(b"other"));
    let err = unpack(
        gzip(&plain).as_slice(),
        tmp.path(),
        &o,
        &mut Metadata::default(),
    )
    .unwrap_err();
    assert!(matches!(err, LayerError::DiffIdMismatch { .. }), "{err}");
    // A truncated stream is an error, not a silent partial success.
    let gz = gzip(&plain);
    let err = unpack(
        &gz[..gz.len() / 2],
        tmp.path(),
        &o,
        &mut Metadata::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, LayerError::Read { .. } | LayerError::Entry { .. }),
        "{err}"
    );
}

/// As the unprivileged test user, through `kiln debug unpack`: owners other
/// than 0:0 (which is what the caller's own files mean inside), a device and
/// xattrs that cannot be set end up in the sidecar; a root-owned setuid file
/// needs no record; a 0/0 whiteout can still be made.
#[test]
fn unprivileged_unpack_keeps_ownership_as_metadata() {
    let user = TestUser::get();
    let work = user.tempdir();
    let uid = u64::from(user.uid);
    let gid = u64::from(user.gid);
    let l0 = tar(&[
        dir("etc").owner(0, 0),
        file("etc/shadow", "s").mode(0o640).owner(0, 42),
        file("bin/su", "su").mode(0o4755).owner(0, 0),
        file("mine", "m").owner(uid, gid).xattr("user.kiln", b"ok"),
        symlink("link", "mine")
            .owner(uid, gid)
            .xattr("user.kiln", b"no"),
        chardev("dev/null", 1, 3).owner(0, 0),
        fifo("fifo").owner(uid, gid),
        dir("gone").owner(uid, gid),
        dir("ro").owner(uid, gid).mode(0o555),
        file("ro/old", "old").owner(uid, gid),
    ]);
    let l1 = tar(&[
        file(".wh.gone", ""),
        dir("opq").owner(uid, gid),
        file("opq/.wh..wh..opq", ""),
        // Into a directory the first layer made read-only.
        file("ro/.wh.old", ""),
        file("ro/new", "new").owner(uid, gid),
        file("ro/sub/deep", "deep").owner(uid, gid),
    ]);
    let (p0, p1) = (work.path().join("l0.tar"), work.path().join("l1.tar.gz"));
    fs::write(&p0, &l0).unwrap();
    fs::write(&p1, gzip(&l1)).unwrap();
    user.own(work.path());
    let kiln = env!("CARGO_BIN_EXE_kiln");
    for mode in ["flatten", "overlay"] {
        let dest = work.path().join(mode);
        // A hostile umask: modes must come from the layer, not from it.
        tools::run(
            user.command("sh")
                .args(["-c", "umask 077 && exec \"$0\" \"$@\"", kiln])
                .args(["debug", "unpack", "--mode", mode])
                .arg(&p0)
                .arg(&p1)
                .arg(&dest),
        );
    }
    let flat = work.path().join("flatten");
    let meta = Metadata::load(&layer::sidecar_path(&flat)).unwrap();
    let rec = |p: &str| {
        meta.get(p)
            .unwrap_or_else(|| panic!("no record for {p}: {meta:?}"))
            .clone()
    };
    assert_eq!(
        (
            rec("etc/shadow").uid,
            rec("etc/shadow").gid,
            rec("etc/shadow").mode
        ),
        (0, 42, 0o640)
    );
    assert!(
        meta.get("bin/su").is_none() && meta.get("etc").is_none(),
        "0:0 entries whose modes apply need no record: {meta:?}"
    );
    let dev = rec("dev/null");
    assert_eq!((dev.kind, dev.rdev), (Kind::Char, Some((1, 3))));
    assert!(
        fs::symlink_metadata(flat.join("dev/null")).is_err(),
        "no device node as non-root"
    );
    assert_eq!(
        rec("link").xattr_values()["user.kiln"],
        b"no",
        "user xattrs on symlinks are refused by Linux"
    );
    // The caller's host ids are a real owner inside the image (not 0:0).
    assert_eq!((rec("mine").uid, rec("mine").gid), (uid, gid));
    assert_eq!(
        getxattr(&flat.join("mine"), "user.kiln").as_deref(),
        Some(&b"ok"[..])
    );
    let su = fs::metadata(flat.join("bin/su")).unwrap();
    assert_eq!(
        (su.uid(), su.mode() & 0o7777),
        (user.uid, 0o4755),
        "own file keeps setuid bits"
    );
    assert!(fs::symlink_metadata(flat.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(!flat.join("gone").exists());
    let mode_of = |p: &str| fs::symlink_metadata(flat.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(
        mode_of("bin"),
        0o755,
        "implicit parents are 0755 whatever the umask"
    );
    assert_eq!(mode_of("mine"), 0o644);
    assert_eq!(mode_of("ro/sub"), 0o755);
    assert!(!flat.join("ro/old").exists());
    assert_eq!(
        fs::read_to_string(flat.join("ro/sub/deep")).unwrap(),
        "deep"
    );
    assert_eq!(
        fs::metadata(flat.join("ro")).unwrap().mode() & 0o7777,
        0o555,
        "mode put back"
    );

    // Overlay mode as the unprivileged user: mknod 0/0 is allowed (≥ 5.8),
    // opaque goes into user.overlay.opaque.
    let ov = work.path().join("overlay/1");
    let wh = fs::symlink_metadata(ov.join("gone")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "0/0 whiteout as non-root"
    );
    assert_eq!(
        getxattr(&ov.join("opq"), "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
}

/// Root of a user namespace that maps only the test user: chown to the
/// mapped id is real, to others it is refused and recorded; overlay
/// markers use `user.overlay.*` (trusted.* is not settable there).
#[test]
fn root_in_a_user_namespace_chowns_what_is_mapped() {
    let user = TestUser::get();
    let work = user.tempdir();
    let layer = tar(&[
        file("mapped", "m").owner(0, 0).mode(0o4755),
        file("unmapped", "u").owner(42, 42),
        dir("opq").owner(0, 0),
        file("opq/.wh..wh..opq", "").owner(0, 0),
    ]);
    let path = work.path().join("l.tar");
    fs::write(&path, &layer).unwrap();
    user.own(work.path());
    for mode in ["flatten", "overlay"] {
        tools::run(
            user.command(tools::require("unshare"))
                .args(["--user", "--map-root-user", "--"])
                .arg(env!("CARGO_BIN_EXE_kiln"))
                .args(["debug", "unpack", "--mode", mode])
                .arg(&path)
                .arg(work.path().join(mode)),
        );
    }
    let flat = work.path().join("flatten");
    let meta = Metadata::load(&layer::sidecar_path(&flat)).unwrap();
    assert!(meta.get("mapped").is_none(), "{meta:?}");
    let m = fs::metadata(flat.join("mapped")).unwrap();
    assert_eq!(
        (m.uid(), m.mode() & 0o7777),
        (user.uid, 0o4755),
        "container root is the test user on the host"
    );
    let rec = meta.get("unmapped").expect("unmapped owner recorded");
    assert_eq!((rec.uid, rec.gid), (42, 42));
    let opq = work.path().join("overlay/0/opq");
    assert_eq!(
        getxattr(&opq, "user.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(getxattr(&opq, "trusted.overlay.opaque"), None);
}

/// The busybox fixture flattened by kiln equals GNU tar's extraction of the
/// same layer (names, kinds, modes, owners, link targets, contents).
#[test]
fn busybox_matches_tar_extraction() {
    let tmp = tempfile::tempdir().unwrap();
    let image = busybox::busybox_layout(&tmp.path().join("layout"), "latest");
    let blob = image.blob(&image.layer);
    let ours = tmp.path().join("kiln");
    let theirs = tmp.path().join("tar");
    fs::create_dir(&ours).unwrap();
    fs::create_dir(&theirs).unwrap();
    let o = UnpackOptions {
        layer: image.layer.clone(),
        mode: Mode::Flatten,
        expected_diff_id: Some(Digest::parse(&image.diff_id).unwrap()),
        lowers: Vec::new(),
    };
    let report = unpack(
        fs::File::open(&blob).unwrap(),
        &ours,
        &o,
        &mut Metadata::default(),
    )
    .unwrap();
    assert_eq!(report.compression, Compression::Gzip);
    tools::run(
        Command::new(tools::require("tar"))
            .args(["--same-owner", "--same-permissions", "-xzf"])
            .arg(&blob)
            .arg("-C")
            .arg(&theirs),
    );
    let (a, b) = (shape(&ours), shape(&theirs));
    assert!(a.len() > 100, "busybox has its applets: {}", a.len());
    if a != b {
        let diff: Vec<_> = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: kiln {v} / tar {:?}", b.get(k)))
            .chain(
                b.keys()
                    .filter(|k| !a.contains_key(*k))
                    .map(|k| format!("{k}: only in tar")),
            )
            .collect();
        panic!("kiln and tar disagree:\n{}", diff.join("\n"));
    }
}

//! The snapshotters (`kiln debug snapshot`) as the unprivileged test user:
//! the same steps over the same busybox-based lowers must give the same
//! change list with every snapshotter the machine supports (which is what
//! makes their layers identical), and that list must be exactly the
//! expected one. Plus 200 lower layers, xattrs seen by the walk, and a
//! clear error when /dev/fuse is not accessible.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::Value;

use crate::support::busybox::busybox_layout;
use crate::support::tools;
use crate::support::user::{running_as_root, TestUser};

/// Serializes the tests that use or change /dev/fuse's mode.
static FUSE_LOCK: Mutex<()> = Mutex::new(());
static WORK_COUNTER: AtomicUsize = AtomicUsize::new(0);

const KINDS: [&str; 3] = ["overlay", "fuse-overlayfs", "walk"];

/// Busybox (bottom) and a second layer, unpacked as overlay lowers by the
/// test user.
struct Base {
    user: TestUser,
    dir: tempfile::TempDir,
    /// Top-most first.
    lowers: Vec<PathBuf>,
}

/// The second layer: directories to delete/recreate, a file to turn into a
/// directory and back, a lower hardlink pair, a file to modify.
fn second_layer(path: &Path) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    let mut add = |name: &str, kind: tar::EntryType, mode: u32, data: &[u8], link: Option<&str>| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h.set_size(data.len() as u64);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_path(name).unwrap();
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    use tar::EntryType::{Directory as D, Link as L, Regular as R};
    add("data/", D, 0o755, b"", None);
    add("data/a", R, 0o644, b"a\n", None);
    add("data/b", L, 0o644, b"", Some("data/a"));
    add("data/sub/", D, 0o755, b"", None);
    add("data/sub/x", R, 0o644, b"x\n", None);
    add("dir2file/", D, 0o755, b"", None);
    add("dir2file/child", R, 0o644, b"c\n", None);
    add("etc/motd", R, 0o644, b"hello\n", None);
    add("file2dir", R, 0o644, b"f\n", None);
    add("opt/", D, 0o755, b"", None);
    add("opt/o", R, 0o644, b"o\n", None);
    add("gone/g", R, 0o644, b"g\n", None);
    add("opaq/old", R, 0o644, b"old\n", None);
    b.finish().unwrap();
}

/// The third layer: a whiteout and an opaque directory, so every
/// snapshotter must read kiln's overlay-lower format (0/0 character
/// devices, `user.overlay.opaque`).
fn third_layer(path: &Path) {
    let mut b = tar::Builder::new(fs::File::create(path).unwrap());
    for (name, data) in [
        (".wh.gone", &b""[..]),
        ("opaq/.wh..wh..opq", b""),
        ("opaq/new", b"new\n"),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h.set_size(data.len() as u64);
        h.set_path(name).unwrap();
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.finish().unwrap();
}

impl Base {
    fn new() -> Base {
        let user = TestUser::get();
        let dir = user.tempdir();
        let image = busybox_layout(&dir.path().join("layout"), "base");
        let l2 = dir.path().join("l2.tar");
        second_layer(&l2);
        let l3 = dir.path().join("l3.tar");
        third_layer(&l3);
        user.own(dir.path());
        let lowers = dir.path().join("lowers");
        tools::run(
            user.command(env!("CARGO_BIN_EXE_kiln"))
                .args(["debug", "unpack", "--mode", "overlay"])
                .arg(image.blob(&image.layer))
                .arg(&l2)
                .arg(&l3)
                .arg(&lowers),
        );
        Base {
            user,
            dir,
            lowers: vec![lowers.join("2"), lowers.join("1"), lowers.join("0")],
        }
    }

    fn work(&self) -> PathBuf {
        let n = WORK_COUNTER.fetch_add(1, Ordering::Relaxed);
        self.dir.path().join(format!("work-{n}"))
    }

    fn command(&self, lowers: &[PathBuf], kind: &str, extra: &[&str]) -> Command {
        let mut c = self.user.command(env!("CARGO_BIN_EXE_kiln"));
        c.args(["debug", "snapshot", "--snapshotter", kind]);
        for l in lowers {
            c.arg("--lower").arg(l);
        }
        c.arg("--work").arg(self.work()).args(extra);
        c
    }

    /// Runs `script` over `lowers` with snapshotter `kind`; the JSON report.
    /// Without `keep`, the command also removes the work directory (as the
    /// test user, so overlayfs's mode-0 `work/work` must be handled).
    fn run_on(&self, lowers: &[PathBuf], kind: &str, script: &str, keep: bool) -> Value {
        let keep: &[&str] = if keep { &["--keep"] } else { &[] };
        let mut c = self.command(lowers, kind, keep);
        c.args(["--", "/bin/sh", "-c", script]);
        let out = tools::run(&mut c);
        let text = String::from_utf8_lossy(&out.stdout);
        let json = text.lines().last().unwrap_or_default();
        let v: Value =
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{kind}: report {text:?}: {e}"));
        assert_eq!(v["snapshotter"], kind);
        assert_eq!(v["status"], 0, "{kind}: `{script}` failed: {v}");
        v
    }

    /// The change list as `kind path` lines.
    fn changes(&self, kind: &str, script: &str) -> Vec<String> {
        let v = self.run_on(&self.lowers, kind, script, false);
        let source = PathBuf::from(v["source"].as_str().unwrap());
        assert!(!source.exists(), "{kind}: work directory left behind");
        list(&v)
    }

    /// The snapshotters that work here (walk always must).
    fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        for kind in KINDS {
            let mut c = self.user.command(env!("CARGO_BIN_EXE_kiln"));
            let out = c
                .args(["debug", "snapshot", "--probe", "--snapshotter", kind])
                .output()
                .unwrap();
            if out.status.success() {
                kinds.push(kind);
            } else {
                eprintln!(
                    "snapshotter {kind} not tested here: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        assert!(
            kinds.contains(&"walk"),
            "the walk snapshotter must always work"
        );
        kinds
    }
}

fn list(v: &Value) -> Vec<String> {
    v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c["kind"].as_str().unwrap(),
                c["path"].as_str().unwrap()
            )
        })
        .collect()
}

/// As root, let the test user open /dev/fuse (no udev here: it may be 0600).
fn open_dev_fuse() {
    if running_as_root() && Path::new("/dev/fuse").exists() {
        fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).unwrap();
    }
}

/// (script, expected change list) pairs.
fn scenarios() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("echo x > /data/new", vec!["upsert data/new"]),
        ("echo more >> /etc/motd", vec!["upsert etc/motd"]),
        ("rm /etc/motd", vec!["delete etc/motd"]),
        ("rm -r /opt", vec!["delete opt"]),
        (
            "rm -r /data/sub && mkdir /data/sub && echo n > /data/sub/y",
            vec!["opaque data/sub", "upsert data/sub/y"],
        ),
        (
            "rm /file2dir && mkdir /file2dir && touch /file2dir/in",
            vec!["opaque file2dir", "upsert file2dir/in"],
        ),
        ("rm -r /dir2file && echo f > /dir2file", vec!["upsert dir2file"]),
        (
            "rm -r /dir2file && echo f > /dir2file && rm /dir2file && mkdir /dir2file",
            vec!["opaque dir2file"],
        ),
        (
            "ln /etc/motd /etc/motd2 && echo h > /h1 && ln /h1 /h2",
            vec!["upsert etc/motd", "upsert etc/motd2", "upsert h1", "upsert h2"],
        ),
        (
            "ln -s /etc/passwd /abs && ln -s ../etc/passwd /data/rel && ln -s /nowhere /dangling",
            vec!["upsert abs", "upsert dangling", "upsert data/rel"],
        ),
        (
            "chmod 4755 /etc/motd && chmod 1777 /opt",
            vec!["upsert etc/motd", "upsert opt"],
        ),
        ("touch -d '2001-02-03 04:05:06' /opt/o", vec!["upsert opt/o"]),
        ("mkdir -p /empty/deeper", vec!["upsert empty", "upsert empty/deeper"]),
        (
            "touch /data/ünïcødé-名前 && mkdir -p /l/oooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooo/ng && touch /l/oooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooo/ng/name",
            vec![
                "upsert data/ünïcødé-名前",
                "upsert l",
                "upsert l/oooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooo",
                "upsert l/oooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooo/ng",
                "upsert l/oooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooooo/ng/name",
            ],
        ),
        // Reading and a no-op step change nothing (no copy-up noise, no
        // mount points, no bookkeeping).
        ("cat /etc/motd /data/a > /dev/null && ls -lR /etc /data /opt /bin > /dev/null", vec![]),
        // The lowers' whiteout and opaque directory are honoured.
        (
            "test ! -e /gone && test ! -e /opaq/old && test -e /opaq/new && echo ok > /ok",
            vec!["upsert ok"],
        ),
        ("rm -r /opaq && mkdir /opaq", vec!["opaque opaq"]),
        ("rm /opaq/new", vec!["delete opaq/new"]),
        // A file made and removed again leaves no trace.
        ("touch /tmp/t && rm /tmp/t", vec![]),
    ]
}

#[test]
fn every_snapshotter_gives_the_expected_change_lists() {
    let _fuse = FUSE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    open_dev_fuse();
    let base = Base::new();
    let kinds = base.kinds();
    eprintln!("snapshotters under test: {kinds:?}");
    for (script, expected) in scenarios() {
        for kind in &kinds {
            let got = base.changes(kind, script);
            assert_eq!(got, expected, "snapshotter {kind}, step `{script}`");
        }
    }
}

#[test]
fn five_thousand_files_same_list_everywhere() {
    let _fuse = FUSE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    open_dev_fuse();
    let base = Base::new();
    let script = "mkdir /many && cd /many && seq 1 5000 | xargs touch && rm -r /data";
    let mut lists = Vec::new();
    for kind in base.kinds() {
        let got = base.changes(kind, script);
        assert_eq!(got.len(), 5002, "{kind}: {:?}", &got[..got.len().min(5)]);
        assert_eq!(got[0], "delete data");
        assert_eq!(got[1], "upsert many");
        assert!(got.contains(&"upsert many/4999".to_owned()));
        lists.push((kind, got));
    }
    for (kind, l) in &lists[1..] {
        assert_eq!(l, &lists[0].1, "{kind} differs from {}", lists[0].0);
    }
}

#[test]
fn two_hundred_lower_layers_mount() {
    let _fuse = FUSE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    open_dev_fuse();
    let base = Base::new();
    let layers = base.dir.path().join("many-layers");
    let mut lowers = Vec::new();
    for i in (0..200).rev() {
        let l = layers.join(format!("layer-number-{i:03}"));
        fs::create_dir_all(l.join("layers")).unwrap();
        fs::write(l.join("layers").join(format!("f{i:03}")), format!("{i}\n")).unwrap();
        // Each layer also overrides one shared file: the top-most must win.
        fs::write(l.join("layers/top"), format!("{i}\n")).unwrap();
        lowers.push(l);
    }
    base.user.own(&layers);
    lowers.extend(base.lowers.iter().cloned());
    for kind in base.kinds() {
        let v = base.run_on(
            &lowers,
            kind,
            "ls /layers | wc -l > /count && cat /layers/top >> /count && cat /bin/busybox > /dev/null",
            true,
        );
        assert_eq!(list(&v), ["upsert count"], "{kind}");
        let source = PathBuf::from(v["source"].as_str().unwrap());
        let count = fs::read_to_string(source.join("count")).unwrap();
        let words: Vec<&str> = count.split_whitespace().collect();
        assert_eq!(
            words,
            ["201", "199"],
            "{kind}: 200 files and `top`, top-most layer wins"
        );
    }
}

#[test]
fn walk_sees_xattr_changes_and_ignores_bookkeeping() {
    use kiln::snapshot::{snapshotter, ChangeKind, SnapshotterKind};
    use std::os::fd::AsFd;
    let base = Base::new();
    let work = base.work();
    fs::create_dir(&work).unwrap();
    let snap = snapshotter(SnapshotterKind::Walk)
        .prepare(&base.lowers, &work)
        .unwrap();
    let tree = snap.source().to_path_buf();
    assert_eq!(snap.changes(&[]).unwrap().changes, vec![]);
    let set = |p: &Path, name: &str| {
        let fd = kiln::sys::fs::open_root(p.parent().unwrap()).unwrap();
        kiln::sys::fs::set_xattr_at(fd.as_fd(), p.file_name().unwrap(), name.as_ref(), b"1")
            .unwrap();
    };
    set(&tree.join("opt"), "user.test");
    set(&tree.join("data/sub/x"), "user.test");
    set(&tree.join("etc"), "user.overlay.opaque");
    let got: Vec<(String, ChangeKind)> = snap
        .changes(&[])
        .unwrap()
        .changes
        .into_iter()
        .map(|c| (c.path, c.kind))
        .collect();
    assert_eq!(
        got,
        [
            ("data/sub/x".to_owned(), ChangeKind::Upsert),
            ("opt".to_owned(), ChangeKind::Upsert)
        ]
    );
}

#[test]
fn dev_fuse_permission_error_is_explained() {
    if !running_as_root() {
        eprintln!("skipped: needs root to change /dev/fuse's mode");
        return;
    }
    let _fuse = FUSE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let base = Base::new();
    fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o600)).unwrap();
    let out = base
        .command(&base.lowers, "fuse-overlayfs", &["--", "/bin/true"])
        .output()
        .unwrap();
    open_dev_fuse();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("/dev/fuse") && stderr.contains("chmod 0666 /dev/fuse"),
        "{stderr}"
    );
}

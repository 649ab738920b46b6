//! COPY and ADD layers (`kiln::build::copy`): each case writes one layer
//! into a temp store over a small base image and reads the tar back. The
//! `buildkit_*` test builds the same steps with real BuildKit (dockerd) when
//! it runs on this machine and compares the layers.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kiln::build::copy::{copy_layer, source_digest, AddOptions, CopyFrom, CopySpec, Target};
use kiln::frontend::instructions::InlineFile;
use kiln::layer::{Metadata, Mode, OverlayXattrs, WrittenLayer};
use kiln::store::{Digest, LayerSource, Store};

use crate::support::tools;

const T2020: u64 = 1_577_836_800;
const T2021: i64 = 1_612_325_106; // 2021-02-03T04:05:06Z
const T2019: i64 = 1_546_300_800;

/// One tar entry of a built layer.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ent {
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    /// File content or link target.
    data: String,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn list(store: &Store, layer: &WrittenLayer) -> BTreeMap<String, Ent> {
    let blob = store.read_blob(&layer.digest).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
    let mut out = BTreeMap::new();
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8(e.path_bytes().to_vec()).unwrap();
        let h = e.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Regular => 'f',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            other => panic!("unexpected {other:?} for {name}"),
        };
        let mut data = String::new();
        if kind == 'f' {
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            data = String::from_utf8_lossy(&bytes).into_owned();
        } else if kind == 'l' || kind == 'h' {
            data = String::from_utf8(e.link_name_bytes().unwrap().to_vec()).unwrap();
        }
        assert!(!name.contains(".wh."), "whiteout {name} in a COPY layer");
        let ent = Ent {
            kind,
            mode: h.mode().unwrap() & 0o7777,
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            data,
        };
        assert!(
            out.insert(name.trim_end_matches('/').to_string(), ent)
                .is_none(),
            "{name} twice"
        );
    }
    out
}

// ---- building small tars -------------------------------------------------

enum K {
    F(&'static str),
    D,
    L(&'static str),
}

fn tar_of(entries: &[(&str, K, u32, u64, u64, u64)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, mode, uid, gid, mtime) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(*mode);
        h.set_uid(*uid);
        h.set_gid(*gid);
        h.set_mtime(*mtime);
        h.set_size(0);
        let data: &[u8] = match kind {
            K::F(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                d.as_bytes()
            }
            K::D => {
                h.set_entry_type(tar::EntryType::Directory);
                &[]
            }
            K::L(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name(t).unwrap();
                &[]
            }
        };
        h.set_path(path).unwrap();
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1001:u:/home/user:/bin/sh\napp:x:2000:2001::/:/bin/sh\n";
const GROUP: &str = "root:x:0:\nuser:x:1001:\nappg:x:3000:\n";

/// The base image's one layer: passwd/group, `usr/local` 0750 1000:1001,
/// `tmp` 1777, `var/run` → `../run`, a file `bin/busybox`.
fn base_tar() -> Vec<u8> {
    tar_of(&[
        ("bin/", K::D, 0o755, 0, 0, T2020),
        ("bin/busybox", K::F("not really"), 0o755, 0, 0, T2020),
        ("etc/", K::D, 0o755, 0, 0, T2020),
        ("etc/group", K::F(GROUP), 0o644, 0, 0, T2020),
        ("etc/passwd", K::F(PASSWD), 0o644, 0, 0, T2020),
        ("home/", K::D, 0o755, 0, 0, T2020),
        ("home/user/", K::D, 0o750, 1000, 1001, T2020),
        ("run/", K::D, 0o755, 0, 0, T2020),
        ("tmp/", K::D, 0o1777, 0, 0, T2020),
        ("usr/", K::D, 0o755, 0, 0, T2020),
        ("usr/local/", K::D, 0o750, 1000, 1001, T2020),
        ("var/", K::D, 0o755, 0, 0, T2020),
        ("var/run", K::L("../run"), 0o777, 0, 0, T2020),
    ])
}

/// Puts layer tars into the store and unpacks them as overlay lowers.
fn image(store: &Store, tars: &[Vec<u8>]) -> (Vec<PathBuf>, Vec<Metadata>, Digest) {
    let layers: Vec<LayerSource> = tars
        .iter()
        .map(|t| LayerSource {
            blob: store.put_bytes(&gzip(t)).unwrap().0,
            diff_id: Digest::of_bytes(t),
        })
        .collect();
    let unpacked = store
        .ensure_unpacked(&layers, Mode::OverlayLower(OverlayXattrs::User))
        .unwrap();
    let chain = unpacked.last().unwrap().chain_id.clone();
    let lowers = unpacked.iter().rev().map(|u| u.rootfs.clone()).collect();
    let recorded = unpacked
        .iter()
        .rev()
        .map(|u| Metadata::load(&u.metadata).unwrap())
        .collect();
    (lowers, recorded, chain)
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    ctx: PathBuf,
    target: Target,
}

fn set_mtime(path: &Path, secs: i64) {
    let st = Command::new("touch")
        .args(["-h", "-d", &format!("@{secs}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let (lowers, recorded, _) = image(&store, &[base_tar()]);
    let ctx = dir.path().join("ctx");
    fs::create_dir_all(ctx.join("dir/sub")).unwrap();
    fs::write(ctx.join("f1"), "f1\n").unwrap();
    fs::write(ctx.join("f2"), "f2\n").unwrap();
    fs::write(ctx.join("notes.txt"), "n\n").unwrap();
    fs::write(ctx.join("dir/x"), "x\n").unwrap();
    fs::write(ctx.join("dir/skip.txt"), "s\n").unwrap();
    fs::write(ctx.join("dir/sub/y"), "y\n").unwrap();
    symlink("x", ctx.join("dir/lnk")).unwrap();
    symlink("f1", ctx.join("toplink")).unwrap();
    for p in [
        "f1",
        "dir/x",
        "dir/sub/y",
        "dir/skip.txt",
        "f2",
        "notes.txt",
    ] {
        set_mtime(&ctx.join(p), T2021);
    }
    set_mtime(&ctx.join("dir/lnk"), T2021);
    fs::set_permissions(ctx.join("dir/sub"), fs::Permissions::from_mode(0o700)).unwrap();
    fs::set_permissions(ctx.join("dir"), fs::Permissions::from_mode(0o751)).unwrap();
    set_mtime(&ctx.join("dir/sub"), T2019);
    set_mtime(&ctx.join("dir"), T2019);
    if crate::support::user::running_as_root() {
        std::os::unix::fs::chown(ctx.join("f2"), Some(1234), Some(1234)).unwrap();
    }
    Fixture {
        store,
        ctx,
        target: Target { lowers, recorded },
        _dir: dir,
    }
}

fn spec(sources: &[&str], dest: &str) -> CopySpec {
    CopySpec {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.into(),
        workdir: "/".into(),
        ..CopySpec::default()
    }
}

impl Fixture {
    fn copy(&self, spec: &CopySpec) -> Result<BTreeMap<String, Ent>, String> {
        self.copy_ignoring(spec, &[])
    }

    fn copy_ignoring(
        &self,
        spec: &CopySpec,
        ignore: &[String],
    ) -> Result<BTreeMap<String, Ent>, String> {
        let from = CopyFrom::Context {
            dir: &self.ctx,
            ignore,
        };
        copy_layer(&self.store, spec, &from, &self.target)
            .map(|l| list(&self.store, &l))
            .map_err(|e| e.to_string())
    }
}

fn names(l: &BTreeMap<String, Ent>) -> Vec<&str> {
    l.keys().map(String::as_str).collect()
}

fn assert_recent(e: &Ent, start: u64) {
    assert!(
        e.mtime >= start && e.mtime <= now() + 1,
        "{e:?} not the copy's time"
    );
}

#[test]
fn copy_files_into_new_and_existing_directories() {
    let f = fixture();
    let start = now();
    // New parents: 0755, 0:0, the copy's time; the file keeps its mtime.
    let l = f.copy(&spec(&["f1"], "/a/b/c/")).unwrap();
    assert_eq!(names(&l), ["a", "a/b", "a/b/c", "a/b/c/f1"]);
    for d in ["a", "a/b", "a/b/c"] {
        assert_eq!(
            (l[d].kind, l[d].mode, l[d].uid, l[d].gid),
            ('d', 0o755, 0, 0)
        );
        assert_recent(&l[d], start);
    }
    let f1 = &l["a/b/c/f1"];
    assert_eq!(
        (f1.kind, f1.mode, f1.uid, f1.gid, f1.mtime),
        ('f', 0o644, 0, 0, T2021 as u64)
    );
    assert_eq!(f1.data, "f1\n");
    // Context owners are 0:0 whatever they are on disk.
    let l = f.copy(&spec(&["f2"], "/ctxowner")).unwrap();
    assert_eq!(names(&l), ["ctxowner"]);
    assert_eq!((l["ctxowner"].uid, l["ctxowner"].gid), (0, 0));
    // An existing directory: kept as the base has it, except its mtime
    // (it receives a new entry); its parent is carried unchanged.
    let l = f.copy(&spec(&["f1"], "/usr/local/")).unwrap();
    assert_eq!(names(&l), ["usr", "usr/local", "usr/local/f1"]);
    assert_eq!((l["usr"].mode, l["usr"].mtime), (0o755, T2020));
    let local = &l["usr/local"];
    assert_eq!((local.mode, local.uid, local.gid), (0o750, 1000, 1001));
    assert_recent(local, start);
    // Replacing a file of the base moves its directory's time too.
    let l = f.copy(&spec(&["f1"], "/etc/passwd")).unwrap();
    assert_eq!(names(&l), ["etc", "etc/passwd"]);
    assert_recent(&l["etc"], start);
    // A destination naming an existing directory without a slash.
    let l = f.copy(&spec(&["f1"], "/tmp")).unwrap();
    assert_eq!(names(&l), ["tmp", "tmp/f1"]);
    assert_eq!(l["tmp"].mode, 0o1777);
    // WORKDIR-relative, and through the base's symlink var/run → ../run.
    let mut s = spec(&["f1"], "sub/");
    s.workdir = "/usr/local".into();
    let l = f.copy(&s).unwrap();
    assert_eq!(
        names(&l),
        ["usr", "usr/local", "usr/local/sub", "usr/local/sub/f1"]
    );
    let l = f.copy(&spec(&["f1"], "/var/run/")).unwrap();
    assert_eq!(names(&l), ["run", "run/f1"]);
    let mut s = spec(&["f1"], ".");
    s.workdir = "/tmp".into();
    assert_eq!(names(&f.copy(&s).unwrap()), ["tmp", "tmp/f1"]);
    // A symlink named as the source is followed; a renamed file.
    let l = f.copy(&spec(&["toplink"], "/tl")).unwrap();
    assert_eq!((l["tl"].kind, l["tl"].data.as_str()), ('f', "f1\n"));
    let l = f.copy(&spec(&["/dir/../f1"], "/renamed")).unwrap();
    assert_eq!(names(&l), ["renamed"]);
}

#[test]
fn copy_directory_contents() {
    let f = fixture();
    let start = now();
    let l = f.copy(&spec(&["dir"], "/newdir")).unwrap();
    assert_eq!(
        names(&l),
        [
            "newdir",
            "newdir/lnk",
            "newdir/skip.txt",
            "newdir/sub",
            "newdir/sub/y",
            "newdir/x"
        ]
    );
    // The destination is created (not the source directory's metadata);
    // subdirectories, files and symlinks keep theirs.
    assert_eq!((l["newdir"].mode, l["newdir"].uid), (0o755, 0));
    assert_recent(&l["newdir"], start);
    assert_eq!(
        (l["newdir/sub"].mode, l["newdir/sub"].mtime),
        (0o700, T2019 as u64)
    );
    assert_eq!(
        (l["newdir/lnk"].kind, l["newdir/lnk"].data.as_str()),
        ('l', "x")
    );
    assert_eq!(l["newdir/lnk"].mtime, T2021 as u64);
    // Into an existing directory: its metadata stays.
    let l = f.copy(&spec(&["dir"], "/tmp/")).unwrap();
    assert_eq!(l["tmp"].mode, 0o1777);
    assert!(l.contains_key("tmp/sub/y"));
    // .dockerignore applies.
    let l = f
        .copy_ignoring(&spec(&["dir"], "/ig/"), &["dir/sub".to_string()])
        .unwrap();
    assert_eq!(names(&l), ["ig", "ig/lnk", "ig/skip.txt", "ig/x"]);
    let err = f
        .copy_ignoring(&spec(&["f1"], "/ig/"), &["f1".to_string()])
        .unwrap_err();
    assert!(err.contains("\"f1\": not found"), "{err}");
}

#[test]
fn chown_and_chmod() {
    let f = fixture();
    let mut s = spec(&["f1"], "/own/num");
    s.chown = Some("1000".into());
    let l = f.copy(&s).unwrap();
    assert_eq!(
        (l["own"].uid, l["own"].gid),
        (1000, 1000),
        "created parents get the user"
    );
    assert_eq!((l["own/num"].uid, l["own/num"].gid), (1000, 1000));
    s.chown = Some("user".into());
    let l = f.copy(&s).unwrap();
    assert_eq!((l["own/num"].uid, l["own/num"].gid), (1000, 1001));
    s.chown = Some("app:appg".into());
    let l = f.copy(&s).unwrap();
    assert_eq!((l["own/num"].uid, l["own/num"].gid), (2000, 3000));
    s.chown = Some("ghost".into());
    let err = f.copy(&s).unwrap_err();
    assert!(
        err.contains("--chown=ghost: unable to find user ghost"),
        "{err}"
    );
    s.chown = Some("user:nogroup".into());
    let err = f.copy(&s).unwrap_err();
    assert!(err.contains("unable to find group nogroup"), "{err}");
    // --chmod: every copied file and directory, not the created destination.
    let mut s = spec(&["dir"], "/chm/");
    s.chmod = Some("640".into());
    let l = f.copy(&s).unwrap();
    assert_eq!(l["chm"].mode, 0o755);
    assert_eq!(l["chm/sub"].mode, 0o640);
    assert_eq!(l["chm/x"].mode, 0o640);
    assert_eq!(l["chm/lnk"].mode, 0o777);
    s.chmod = Some("u+x,go-r".into());
    let l = f.copy(&s).unwrap();
    assert_eq!(l["chm/x"].mode, 0o700);
    assert_eq!(l["chm/sub"].mode, 0o700);
    s.chmod = Some("u+q".into());
    let err = f.copy(&s).unwrap_err();
    assert!(err.contains("--chmod=u+q"), "{err}");
}

#[test]
fn sources_globs_and_destination_rules() {
    let f = fixture();
    let l = f.copy(&spec(&["f1", "f2"], "/multi/")).unwrap();
    assert_eq!(names(&l), ["multi", "multi/f1", "multi/f2"]);
    let err = f.copy(&spec(&["f1", "f2"], "/multi")).unwrap_err();
    assert!(
        err.contains("must be a directory and end with a /"),
        "{err}"
    );
    let l = f.copy(&spec(&["f*"], "/glob/")).unwrap();
    assert_eq!(names(&l), ["glob", "glob/f1", "glob/f2"]);
    // One match into a path without a slash is that file.
    let l = f.copy(&spec(&["d*/x"], "/globone")).unwrap();
    assert_eq!(names(&l), ["globone"]);
    // Several matches make it a directory.
    let l = f.copy(&spec(&["f[12]"], "/two")).unwrap();
    assert_eq!(names(&l), ["two", "two/f1", "two/f2"]);
    let err = f.copy(&spec(&["nomatch*"], "/d/")).unwrap_err();
    assert!(err.contains("\"nomatch*\": not found"), "{err}");
    let err = f.copy(&spec(&["missing"], "/d/")).unwrap_err();
    assert!(err.contains("\"missing\": not found"), "{err}");
    let err = f.copy(&spec(&["dir"], "/bin/busybox")).unwrap_err();
    assert!(
        err.contains("/bin/busybox") && err.contains("non-directory"),
        "{err}"
    );
    let err = f.copy(&spec(&["f1"], "/bin/busybox/x")).unwrap_err();
    assert!(err.contains("not a directory"), "{err}");
    let l = f.copy(&spec(&["f1"], "/usr")).unwrap();
    assert_eq!(names(&l), ["usr", "usr/f1"]);
}

#[test]
fn exclude_parents_and_heredocs() {
    let f = fixture();
    let mut s = spec(&["dir"], "/ex/");
    s.exclude = vec!["*.txt".into(), "sub".into()];
    let l = f.copy(&s).unwrap();
    assert_eq!(names(&l), ["ex", "ex/lnk", "ex/x"]);
    let mut s = spec(&["*"], "/top/");
    s.exclude = vec!["*.txt".into(), "dir".into(), "toplink".into()];
    let l = f.copy(&s).unwrap();
    assert_eq!(names(&l), ["top", "top/f1", "top/f2"]);
    // --parents keeps the source path; `/./` cuts it.
    let mut s = spec(&["dir/sub/y", "f1"], "/p/");
    s.parents = true;
    let l = f.copy(&s).unwrap();
    assert_eq!(
        names(&l),
        ["p", "p/dir", "p/dir/sub", "p/dir/sub/y", "p/f1"]
    );
    let mut s = spec(&["dir/./sub"], "/q/");
    s.parents = true;
    let l = f.copy(&s).unwrap();
    assert_eq!(names(&l), ["q", "q/sub", "q/sub/y"]);
    assert_eq!(l["q/sub"].mode, 0o700);
    // --link: as over an empty image, the base's directories are not carried.
    let start = now();
    let mut s = spec(&["f1"], "/usr/local/");
    s.link = true;
    s.chown = Some("user".into());
    let l = f.copy(&s).unwrap();
    assert_eq!(names(&l), ["usr", "usr/local", "usr/local/f1"]);
    assert_eq!(
        (l["usr/local"].mode, l["usr/local"].uid, l["usr/local"].gid),
        (0o755, 1000, 1001)
    );
    assert_recent(&l["usr"], start);
    assert_eq!((l["usr/local/f1"].uid, l["usr/local/f1"].gid), (1000, 1001));
    // Heredocs.
    let mut s = spec(&[], "/h/");
    s.inline = vec![InlineFile {
        name: "hello.txt".into(),
        data: "hi\n".into(),
        expand: false,
        chomp: false,
    }];
    let l = f.copy(&s).unwrap();
    let h = &l["h/hello.txt"];
    assert_eq!(
        (h.kind, h.mode, h.uid, h.data.as_str()),
        ('f', 0o644, 0, "hi\n")
    );
    assert_recent(h, start);
    // SOURCE_DATE_EPOCH clamps every time.
    let mut s = spec(&["dir"], "/clamped/");
    s.source_date_epoch = Some(T2020 as i64);
    let l = f.copy(&s).unwrap();
    assert!(l.values().all(|e| e.mtime <= T2020), "{l:?}");
}

#[test]
fn copy_from_an_image_keeps_its_owners() {
    let f = fixture();
    let t1 = tar_of(&[
        ("srcdir/", K::D, 0o750, 1000, 1001, T2020),
        ("srcdir/a", K::F("a"), 0o640, 1000, 1001, T2020),
        ("srcdir/gone", K::F("g"), 0o644, 0, 0, T2020),
        ("srcdir/o/", K::D, 0o755, 0, 0, T2020),
        ("srcdir/o/old", K::F("old"), 0o644, 0, 0, T2020),
        ("srcdir/rec", K::F("r"), 0o644, 0, 0, T2020),
    ]);
    let t2 = tar_of(&[
        ("srcdir/", K::D, 0o750, 1000, 1001, T2020),
        ("srcdir/.wh.gone", K::F(""), 0, 0, 0, T2020),
        ("srcdir/o/", K::D, 0o755, 0, 0, T2020),
        ("srcdir/o/.wh..wh..opq", K::F(""), 0, 0, 0, T2020),
        ("srcdir/o/new", K::F("new"), 0o600, 7, 8, T2020),
    ]);
    let (lowers, mut recorded, chain_id) = image(&f.store, &[t1, t2]);
    // What an unprivileged unpack would have recorded for a path it could
    // not chown: the record wins over the disk.
    let side = f.store.root().join("extra.jsonl");
    fs::write(
        &side,
        "{\"path\":\"srcdir/rec\",\"kind\":\"file\",\"uid\":4242,\"gid\":4343,\"mode\":420}\n",
    )
    .unwrap();
    recorded[1] = Metadata::load(&side).unwrap();
    let from = CopyFrom::Image {
        lowers,
        recorded,
        chain_id,
    };
    let l = list(
        &f.store,
        &copy_layer(&f.store, &spec(&["/srcdir"], "/fromdir"), &from, &f.target).unwrap(),
    );
    assert_eq!(
        names(&l),
        [
            "fromdir",
            "fromdir/a",
            "fromdir/o",
            "fromdir/o/new",
            "fromdir/rec"
        ]
    );
    assert_eq!((l["fromdir"].uid, l["fromdir"].mode), (0, 0o755));
    assert_eq!(
        (l["fromdir/a"].uid, l["fromdir/a"].gid, l["fromdir/a"].mode),
        (1000, 1001, 0o640)
    );
    assert_eq!((l["fromdir/o/new"].uid, l["fromdir/o/new"].gid), (7, 8));
    assert_eq!((l["fromdir/rec"].uid, l["fromdir/rec"].gid), (4242, 4343));
    let mut s = spec(&["/srcdir/a"], "/x");
    s.chown = Some("app".into());
    let l = list(
        &f.store,
        &copy_layer(&f.store, &s, &from, &f.target).unwrap(),
    );
    assert_eq!((l["x"].uid, l["x"].gid), (2000, 2001));
    let err = copy_layer(&f.store, &spec(&["/srcdir/gone"], "/x"), &from, &f.target).unwrap_err();
    assert!(
        err.to_string().contains("\"/srcdir/gone\": not found"),
        "{err}"
    );
}

fn write_archives(ctx: &Path) {
    let t = tar_of(&[
        ("t/", K::D, 0o755, 1500, 1600, 1_525_478_400),
        ("t/d/", K::D, 0o750, 1500, 1600, 1_525_478_400),
        ("t/d/in", K::F("in\n"), 0o640, 1500, 1600, 1_525_478_400),
        ("t/l", K::L("d/in"), 0o777, 1500, 1600, 1_525_478_400),
    ]);
    fs::write(ctx.join("arch.tar"), &t).unwrap();
    fs::write(ctx.join("arch.tar.gz"), gzip(&t)).unwrap();
    fs::write(
        ctx.join("arch.tar.zst"),
        zstd::encode_all(&t[..], 3).unwrap(),
    )
    .unwrap();
    for (tool, ext) in [("bzip2", "bz2"), ("xz", "xz")] {
        let out = Command::new(tools::require(tool))
            .args(["-c", "-k"])
            .arg(ctx.join("arch.tar"))
            .output()
            .unwrap();
        assert!(out.status.success());
        fs::write(ctx.join(format!("arch.tar.{ext}")), out.stdout).unwrap();
    }
    fs::write(ctx.join("plain.gz"), gzip(b"plain\n")).unwrap();
}

fn add_spec(sources: &[&str], dest: &str) -> CopySpec {
    let mut s = spec(sources, dest);
    s.add = Some(AddOptions::default());
    s
}

#[test]
fn add_extracts_local_archives() {
    let f = fixture();
    write_archives(&f.ctx);
    for ext in ["tar", "tar.gz", "tar.bz2", "tar.xz", "tar.zst"] {
        let l = f
            .copy(&add_spec(&[&format!("arch.{ext}")], "/x"))
            .unwrap_or_else(|e| panic!("{ext}: {e}"));
        assert_eq!(
            names(&l),
            ["x", "x/t", "x/t/d", "x/t/d/in", "x/t/l"],
            "{ext}"
        );
        let e = &l["x/t/d/in"];
        assert_eq!(
            (e.mode, e.uid, e.gid, e.mtime),
            (0o640, 1500, 1600, 1_525_478_400),
            "{ext}"
        );
        assert_eq!(e.data, "in\n");
        assert_eq!((l["x/t/d"].mode, l["x/t/d"].uid), (0o750, 1500));
        assert_eq!(l["x/t/l"].data, "d/in");
    }
    // --chown owns the created destination only; entries keep the archive's.
    let mut s = add_spec(&["arch.tar.gz"], "/y/");
    s.chown = Some("user".into());
    let l = f.copy(&s).unwrap();
    assert_eq!((l["y"].uid, l["y"].gid), (1000, 1001));
    assert_eq!((l["y/t/d/in"].uid, l["y/t/d/in"].gid), (1500, 1600));
    // Not a tar inside: copied as it is. COPY and --unpack=false never extract.
    let l = f.copy(&add_spec(&["plain.gz"], "/pl/")).unwrap();
    assert_eq!(names(&l), ["pl", "pl/plain.gz"]);
    let l = f.copy(&spec(&["arch.tar.gz"], "/nox/")).unwrap();
    assert_eq!(names(&l), ["nox", "nox/arch.tar.gz"]);
    let mut s = add_spec(&["arch.tar.gz"], "/nox/");
    s.add = Some(AddOptions {
        unpack: Some(false),
        ..AddOptions::default()
    });
    assert_eq!(names(&f.copy(&s).unwrap()), ["nox", "nox/arch.tar.gz"]);
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_server(dir: &Path) -> (Server, u16) {
    let port = tools::free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "http.server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

#[test]
fn add_fetches_urls() {
    let f = fixture();
    let www = f.store.root().join("www");
    fs::create_dir(&www).unwrap();
    fs::write(www.join("file.txt"), "served\n").unwrap();
    fs::write(
        www.join("a.tar.gz"),
        gzip(&tar_of(&[("in", K::F("x"), 0o644, 0, 0, 0)])),
    )
    .unwrap();
    set_mtime(&www.join("file.txt"), 1_488_603_967);
    let (_server, port) = http_server(&www);
    let url = format!("http://127.0.0.1:{port}/file.txt");
    let l = f.copy(&add_spec(&[&url], "/u/")).unwrap();
    assert_eq!(names(&l), ["u", "u/file.txt"]);
    let e = &l["u/file.txt"];
    assert_eq!(
        (e.mode, e.uid, e.mtime, e.data.as_str()),
        (0o600, 0, 1_488_603_967, "served\n")
    );
    let l = f.copy(&add_spec(&[&url], "/u2")).unwrap();
    assert_eq!(names(&l), ["u2"]);
    // A remote archive is not extracted.
    let l = f
        .copy(&add_spec(
            &[&format!("http://127.0.0.1:{port}/a.tar.gz")],
            "/r/",
        ))
        .unwrap();
    assert_eq!(names(&l), ["r", "r/a.tar.gz"]);
    let good = format!("sha256:{}", Digest::of_bytes(b"served\n").hex());
    let mut s = add_spec(&[&url], "/c");
    s.add = Some(AddOptions {
        checksum: Some(good),
        ..AddOptions::default()
    });
    assert_eq!(names(&f.copy(&s).unwrap()), ["c"]);
    s.add = Some(AddOptions {
        checksum: Some(format!("sha256:{}", "0".repeat(64))),
        ..AddOptions::default()
    });
    let err = f.copy(&s).unwrap_err();
    assert!(
        err.contains(&url) && err.contains("checksum mismatch"),
        "{err}"
    );
    let err = f
        .copy(&add_spec(&[&format!("http://127.0.0.1:{port}/none")], "/n"))
        .unwrap_err();
    assert!(err.contains("/none") && err.contains("404"), "{err}");
}

fn sha_file(path: &Path, _: &fs::Metadata) -> std::io::Result<Digest> {
    Ok(Digest::of_bytes(&fs::read(path)?))
}

#[test]
fn source_digest_follows_what_is_read() {
    let f = fixture();
    let from = CopyFrom::Context {
        dir: &f.ctx,
        ignore: &[],
    };
    let s = spec(&["dir"], "/d/");
    let a = source_digest(&s, &from, &sha_file).unwrap();
    assert_eq!(a, source_digest(&s, &from, &sha_file).unwrap());
    // Unread files do not count; read ones do, and so does the spec.
    fs::write(f.ctx.join("f1"), "changed").unwrap();
    assert_eq!(a, source_digest(&s, &from, &sha_file).unwrap());
    fs::write(f.ctx.join("dir/sub/y"), "changed").unwrap();
    let b = source_digest(&s, &from, &sha_file).unwrap();
    assert_ne!(a, b);
    let mut s2 = s.clone();
    s2.chmod = Some("600".into());
    assert_ne!(b, source_digest(&s2, &from, &sha_file).unwrap());
    fs::set_permissions(f.ctx.join("dir/x"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_ne!(b, source_digest(&s, &from, &sha_file).unwrap());
    let mut ex = s.clone();
    ex.exclude = vec!["x".into()];
    let c = source_digest(&ex, &from, &sha_file).unwrap();
    fs::write(f.ctx.join("dir/x"), "again").unwrap();
    assert_eq!(c, source_digest(&ex, &from, &sha_file).unwrap());
    let err = source_digest(&spec(&["nope"], "/"), &from, &sha_file).unwrap_err();
    assert!(err.to_string().contains("\"nope\": not found"), "{err}");
}

/// `docker` of the docker.io package, when its daemon answers.
fn docker() -> Option<PathBuf> {
    let bin = PathBuf::from("/usr/bin/docker");
    if !bin.exists() {
        return None;
    }
    let mut child = Command::new(&bin)
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().ok()? {
            return st.success().then_some(bin);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The layers BuildKit wrote for `dockerfile` (all but the base's), listed.
fn buildkit_layers(
    docker: &Path,
    dir: &Path,
    ctx: &Path,
    dockerfile: &str,
) -> Vec<BTreeMap<String, Ent>> {
    let tag = format!("kiln-copy-test:{}", std::process::id());
    let df = dir.join("Dockerfile");
    fs::write(&df, dockerfile).unwrap();
    tools::run(
        Command::new(docker)
            .env("DOCKER_BUILDKIT", "1")
            .args(["build", "--no-cache", "-q", "-t", &tag, "-f"])
            .arg(&df)
            .arg(ctx),
    );
    let saved = dir.join("saved");
    fs::create_dir_all(&saved).unwrap();
    let tarball = dir.join("saved.tar");
    tools::run(
        Command::new(docker)
            .args(["save", "-o"])
            .arg(&tarball)
            .arg(&tag),
    );
    tools::run(Command::new(docker).args(["rmi", &tag]));
    tar::Archive::new(fs::File::open(&tarball).unwrap())
        .unpack(&saved)
        .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(saved.join("manifest.json")).unwrap()).unwrap();
    manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .map(|l| {
            let bytes = fs::read(saved.join(l.as_str().unwrap())).unwrap();
            let mut out = BTreeMap::new();
            for e in tar::Archive::new(&bytes[..]).entries().unwrap() {
                let mut e = e.unwrap();
                let name = String::from_utf8(e.path_bytes().to_vec()).unwrap();
                let h = e.header().clone();
                let kind = match h.entry_type() {
                    tar::EntryType::Regular => 'f',
                    tar::EntryType::Directory => 'd',
                    tar::EntryType::Symlink => 'l',
                    tar::EntryType::Link => 'h',
                    other => panic!("{other:?}"),
                };
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                if kind == 'l' || kind == 'h' {
                    data = e.link_name_bytes().unwrap().to_vec();
                }
                out.insert(
                    name.trim_end_matches('/').to_string(),
                    Ent {
                        kind,
                        mode: h.mode().unwrap() & 0o7777,
                        uid: h.uid().unwrap(),
                        gid: h.gid().unwrap(),
                        mtime: h.mtime().unwrap(),
                        data: String::from_utf8_lossy(&data).into_owned(),
                    },
                );
            }
            out
        })
        .collect()
}

/// The same steps through kiln and through BuildKit (dockerd's, when it
/// runs here) give the same entries: names, kinds, modes, owners, contents,
/// and mtimes, except directory times BuildKit takes from the build's clock
/// or loses in its context transfer.
#[test]
fn buildkit_writes_the_same_layers() {
    let Some(docker) = docker() else {
        eprintln!("note: no dockerd answering /usr/bin/docker; BuildKit comparison skipped");
        return;
    };
    let f = fixture();
    write_archives(&f.ctx);
    // Hardlinks stay hardlinks; a directory copied over an existing one
    // brings its mode and mtime (an empty one: BuildKit's context transfer
    // keeps only those directory times).
    fs::create_dir_all(f.ctx.join("hl")).unwrap();
    fs::write(f.ctx.join("hl/a"), "h\n").unwrap();
    fs::hard_link(f.ctx.join("hl/a"), f.ctx.join("hl/b")).unwrap();
    fs::create_dir_all(f.ctx.join("over/usr")).unwrap();
    fs::set_permissions(f.ctx.join("over/usr"), fs::Permissions::from_mode(0o700)).unwrap();
    set_mtime(&f.ctx.join("over/usr"), T2019);
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base.tar");
    fs::write(&base, base_tar()).unwrap();
    let base_tag = format!("kiln-copy-base:{}", std::process::id());
    tools::run(
        Command::new(&docker)
            .arg("import")
            .arg(&base)
            .arg(&base_tag),
    );
    let steps: Vec<(&str, CopySpec)> = vec![
        ("COPY f1 /a/b/c/", spec(&["f1"], "/a/b/c/")),
        ("COPY f2 /ctxowner", spec(&["f2"], "/ctxowner")),
        ("COPY --chown=user dir /newdir/", {
            let mut s = spec(&["dir"], "/newdir/");
            s.chown = Some("user".into());
            s
        }),
        ("COPY --chown=1000 f1 /own/num", {
            let mut s = spec(&["f1"], "/own/num");
            s.chown = Some("1000".into());
            s
        }),
        ("COPY f1 /usr/local/", spec(&["f1"], "/usr/local/")),
        ("COPY dir /tmp/", spec(&["dir"], "/tmp/")),
        ("COPY toplink /var/run/", spec(&["toplink"], "/var/run/")),
        ("COPY --chmod=640 dir /chm/", {
            let mut s = spec(&["dir"], "/chm/");
            s.chmod = Some("640".into());
            s
        }),
        ("COPY f* /glob/", spec(&["f*"], "/glob/")),
        ("ADD arch.tar.gz /x/", add_spec(&["arch.tar.gz"], "/x/")),
        ("ADD arch.tar.xz /xx", add_spec(&["arch.tar.xz"], "/xx")),
        ("ADD plain.gz /pl/", add_spec(&["plain.gz"], "/pl/")),
        ("COPY f1 /etc/passwd", spec(&["f1"], "/etc/passwd")),
        ("COPY hl /hl/", spec(&["hl"], "/hl/")),
        ("COPY over /", spec(&["over"], "/")),
        ("ADD --chown=1000 arch.tar.gz /y/", {
            let mut s = add_spec(&["arch.tar.gz"], "/y/");
            s.chown = Some("1000".into());
            s
        }),
        ("COPY --chown=1000 dir /home/user/", {
            let mut s = spec(&["dir"], "/home/user/");
            s.chown = Some("1000".into());
            s
        }),
    ];
    let dockerfile = std::iter::once(format!("FROM {base_tag}"))
        .chain(steps.iter().map(|(line, _)| line.to_string()))
        .collect::<Vec<_>>()
        .join("\n");
    let start = now();
    let theirs = buildkit_layers(&docker, work.path(), &f.ctx, &dockerfile);
    tools::run(Command::new(&docker).args(["rmi", &base_tag]));
    assert_eq!(theirs.len(), steps.len());
    for ((line, s), theirs) in steps.iter().zip(&theirs) {
        // Each step over the base alone: BuildKit's steps do not touch the
        // same paths, so the earlier ones change nothing here.
        let ours = f.copy(s).unwrap();
        assert_eq!(names(&ours), names(theirs), "{line}");
        for (name, o) in &ours {
            let t = &theirs[name];
            assert_eq!(
                (o.kind, o.mode, o.uid, o.gid, &o.data),
                (t.kind, t.mode, t.uid, t.gid, &t.data),
                "{line}: {name}"
            );
            if o.kind != 'd' || (o.mtime < start && t.mtime < start) {
                assert_eq!(o.mtime, t.mtime, "{line}: {name}");
            } else if o.mtime >= start {
                assert!(t.mtime >= start, "{line}: {name}: BuildKit kept {t:?}");
            }
        }
    }
}

/// The unprivileged half of [`rootless_copies_keep_intended_owners`]: run
/// as the test user, where nothing can be chowned and every owner comes
/// from records.
#[test]
#[ignore = "run as the unprivileged test user by rootless_copies_keep_intended_owners"]
fn rootless_inner() {
    assert!(
        !crate::support::user::running_as_root(),
        "meant to run unprivileged"
    );
    let f = fixture();
    // The base was unpacked without chown: usr/local's owner is a record.
    let l = f.copy(&spec(&["f1"], "/usr/local/")).unwrap();
    let local = &l["usr/local"];
    assert_eq!((local.mode, local.uid, local.gid), (0o750, 1000, 1001));
    let mut s = spec(&["dir"], "/newdir/");
    s.chown = Some("user".into());
    let l = f.copy(&s).unwrap();
    assert!(l.values().all(|e| (e.uid, e.gid) == (1000, 1001)), "{l:?}");
    assert_eq!(l["newdir/sub"].mode, 0o700);
    write_archives(&f.ctx);
    let l = f.copy(&add_spec(&["arch.tar.gz"], "/x/")).unwrap();
    assert_eq!(
        (l["x/t/d/in"].uid, l["x/t/d/in"].gid, l["x/t/d/in"].mode),
        (1500, 1600, 0o640)
    );
    let (lowers, recorded, chain_id) = image(
        &f.store,
        &[tar_of(&[
            ("s/", K::D, 0o755, 7, 8, T2020),
            ("s/suid", K::F("x"), 0o4755, 7, 8, T2020),
        ])],
    );
    let from = CopyFrom::Image {
        lowers,
        recorded,
        chain_id,
    };
    let l = list(
        &f.store,
        &copy_layer(&f.store, &spec(&["/s/suid"], "/bin/"), &from, &f.target).unwrap(),
    );
    let e = &l["bin/suid"];
    assert_eq!((e.uid, e.gid, e.mode), (7, 8, 0o4755));
    let mut s = spec(&["dir"], "/chm/");
    s.chmod = Some("640".into());
    // Known limit: a mode its owner cannot read is refused up front.
    let err = f.copy(&s).unwrap_err();
    assert!(
        err.contains("/chm/sub: mode 0640 leaves its owner unable to read it"),
        "{err}"
    );
    // Read-only directories are written, and the staging tree still goes.
    s.chmod = Some("555".into());
    let l = f.copy(&s).unwrap();
    assert_eq!((l["chm/sub"].mode, l["chm/x"].mode), (0o555, 0o555));
    let left: Vec<_> = fs::read_dir(f.store.root().join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");
    println!("rootless copies checked");
}

#[test]
fn rootless_copies_keep_intended_owners() {
    if !crate::support::user::running_as_root() {
        eprintln!("note: not root, so no test user to switch to; rootless_inner covers this run only when invoked directly");
        return;
    }
    let user = crate::support::user::TestUser::get();
    let exe = std::env::current_exe().unwrap();
    let work = user.tempdir();
    let out = user
        .command(&exe)
        .args([
            "--exact",
            "build_copy::rootless_inner",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TMPDIR", work.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("rootless copies checked"),
        "{text}"
    );
}

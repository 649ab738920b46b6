//! The conformance table: the same chain of RUN steps over the busybox image
//! with every snapshotter × isolation tier this machine allows. Each step's
//! layer digest (SOURCE_DATE_EPOCH set) must be the same across snapshotters,
//! and across tiers for steps whose result does not depend on real
//! subordinate ids; the final image, unpacked by `umoci`, must hold the
//! expected tree; no layer may carry overlay bookkeeping or the sandbox's
//! mount points.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use super::{snapshotters, Kiln, Tier};
use crate::support::tools;
use crate::support::user::running_as_root;

const EPOCH: &str = "1700000000";
const LONG: &str = "llllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllllll";
const UNICODE: &str = "ünïcødé-日本語-ñ";

/// The chain: (name, shell script). Each step runs over the previous one's
/// image; "setup" makes the content later steps change (so it sits in a
/// lower layer).
fn scenarios() -> Vec<(&'static str, String)> {
    vec![
        (
            "setup",
            "mkdir -p /data/dir/sub && echo a > /data/file && echo b > /data/todelete \
             && mkdir /data/deldir && echo c > /data/deldir/f && echo target > /data/linktarget \
             && echo x > /data/swap && mkdir /data/swapdir && echo y > /data/swapdir/f"
                .into(),
        ),
        ("create", "echo new > /data/created && mkdir -p /data/newdir/deep".into()),
        ("modify", "echo changed >> /data/file && chmod 0600 /data/file".into()),
        ("delete-file", "rm /data/todelete".into()),
        (
            "delete-dir-recreate",
            "rm -rf /data/deldir && mkdir /data/deldir && echo d > /data/deldir/g".into(),
        ),
        (
            "file-to-dir",
            "rm /data/swap && mkdir /data/swap && echo z > /data/swap/inner \
             && rm -rf /data/swapdir && echo file > /data/swapdir"
                .into(),
        ),
        (
            "dir-to-file",
            "rm -rf /data/swap && echo back > /data/swap && rm /data/swapdir && mkdir /data/swapdir"
                .into(),
        ),
        (
            "hardlinks",
            "ln /data/linktarget /data/hl-across && echo w > /data/within && ln /data/within /data/hl-within"
                .into(),
        ),
        (
            "symlinks",
            "ln -s /data/file /data/abs && ln -s file /data/rel && ln -s /nonexistent /data/dangling"
                .into(),
        ),
        (
            "modes",
            "touch /data/suid /data/sgid && chmod 4755 /data/suid && chmod 2755 /data/sgid \
             && mkdir /data/sticky && chmod 1777 /data/sticky"
                .into(),
        ),
        (
            "names",
            format!(
                "mkdir -p /data/deep/deeper/deepest && echo long > /data/deep/deeper/deepest/{LONG} \
                 && echo uni > '/data/{UNICODE}'"
            ),
        ),
        ("empty-dirs", "mkdir -p /data/empty/a/b".into()),
        ("base-owned-dir", "touch /home/user/x".into()),
        (
            "5000-files",
            "mkdir /data/many && i=0 && while [ $i -lt 5000 ]; do : > /data/many/f$i; i=$((i+1)); done"
                .into(),
        ),
        // Last: its layer differs with a single-id map (chown is a no-op there).
        ("chown", "touch /data/owned && chown 1000:1000 /data/owned".into()),
    ]
}

/// One configuration's result: the layer digest of each step, in order.
type Digests = Vec<String>;

#[test]
fn conformance_table_across_snapshotters_and_tiers() {
    let snaps = snapshotters();
    let tiers = Tier::available();
    eprintln!("conformance: snapshotters {snaps:?}, tiers {tiers:?}");
    let mut results: BTreeMap<(&str, &str), Digests> = BTreeMap::new();
    for &tier in &tiers {
        for &snap in &snaps {
            let digests = run_chain(tier, snap);
            results.insert((tier.name(), snap), digests);
        }
    }
    // Same tier: identical digests across snapshotters, step by step.
    let names: Vec<&str> = scenarios().iter().map(|(n, _)| *n).collect();
    let mut mismatches = Vec::new();
    let reference = results.iter().next().map(|(k, v)| (*k, v.clone())).unwrap();
    for (key, digests) in &results {
        for (i, name) in names.iter().enumerate() {
            let (rkey, rdig) = &reference;
            // Across tiers only for steps independent of real subordinate ids.
            let comparable = key.0 == rkey.0 || *name != "chown";
            if comparable && digests[i] != rdig[i] {
                mismatches.push(format!(
                    "step {name}: {key:?} {} != {rkey:?} {}",
                    digests[i], rdig[i]
                ));
            }
        }
    }
    // The chown layer: one digest per id-semantics class.
    let chown = names.len() - 1;
    for class in [true, false] {
        let set: BTreeMap<&String, Vec<_>> = results
            .iter()
            .filter(|(k, _)| {
                tiers
                    .iter()
                    .any(|t| t.name() == k.0 && t.full_ids() == class)
            })
            .fold(BTreeMap::new(), |mut m, (k, v)| {
                m.entry(&v[chown]).or_default().push(*k);
                m
            });
        if set.len() > 1 {
            mismatches.push(format!("step chown (full ids: {class}): {set:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "layer digests differ:\n{}",
        mismatches.join("\n")
    );
}

/// Runs the whole chain in a fresh store; checks every layer and the final tree.
fn run_chain(tier: Tier, snap: &str) -> Digests {
    let kiln = Kiln::new(tier);
    kiln.import_busybox("base");
    let mut image = "base".to_string();
    let mut digests = Vec::new();
    for (i, (name, script)) in scenarios().iter().enumerate() {
        let tag = format!("step{i}");
        let mut cmd = kiln.step_command(&image, snap, &["--tag", &tag], script);
        cmd.env("SOURCE_DATE_EPOCH", EPOCH);
        let out = tools::run(&mut cmd);
        let report = super::report(&out);
        let ctx = format!("{} / {snap} / step {name}", tier.name());
        assert_eq!(report["status"], 0, "{ctx}: {report}");
        assert_eq!(report["snapshotter"], snap, "{ctx}: {report}");
        let digest = report["digest"]
            .as_str()
            .unwrap_or_else(|| panic!("{ctx}: no digest: {report}"));
        check_layer(&kiln.blob(digest), name, &ctx);
        eprintln!(
            "{ctx}: {digest} ({} paths) {}",
            report["changed_paths"], report["timings_ms"]
        );
        digests.push(digest.to_string());
        image = tag;
    }
    // The independent check: umoci applies every layer over the base.
    let layout = kiln.subdir("oci");
    let dest = format!("oci:{}:final", layout.display());
    tools::run(&mut kiln.command(&["push", &image, &dest]));
    let bundle = tempfile::tempdir().unwrap();
    let bundle = bundle.path().join("bundle");
    let mut umoci = Command::new(tools::require("umoci"));
    umoci.arg("unpack");
    if !running_as_root() {
        umoci.arg("--rootless");
    }
    umoci
        .arg("--image")
        .arg(format!("{}:final", layout.display()))
        .arg(&bundle);
    tools::run(&mut umoci);
    check_tree(
        &bundle.join("rootfs"),
        tier,
        &format!("{} / {snap}", tier.name()),
    );
    digests
}

/// No overlay xattrs, no mount points the sandbox made, no whiteouts of
/// bookkeeping; `etc/` only if the step changed it (none does).
fn check_layer(blob: &Path, step: &str, ctx: &str) {
    let file = fs::File::open(blob).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut paths = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mtime = entry.header().mtime().unwrap();
        assert!(
            mtime <= EPOCH.parse::<u64>().unwrap(),
            "{ctx}: {path} has mtime {mtime} after SOURCE_DATE_EPOCH"
        );
        if let Some(exts) = entry.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                let key = ext.key().unwrap_or("");
                assert!(
                    !key.contains("overlay."),
                    "{ctx}: {path} carries the snapshotter's xattr {key}"
                );
            }
        }
        let mut sink = Vec::new();
        entry.read_to_end(&mut sink).unwrap();
        paths.push(path.trim_start_matches("./").to_string());
    }
    for p in &paths {
        for banned in ["proc/", "dev/", "sys/", "etc/"] {
            assert!(
                !p.starts_with(banned) && p != banned.trim_end_matches('/'),
                "{ctx}: step {step}'s layer holds {p} (sandbox bookkeeping): {paths:?}"
            );
        }
    }
    assert!(
        !paths.is_empty(),
        "{ctx}: step {step} produced an empty layer"
    );
}

fn check_tree(root: &Path, tier: Tier, ctx: &str) {
    let read = |p: &str| {
        fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{ctx}: read {p}: {e}"))
    };
    let meta = |p: &str| {
        fs::symlink_metadata(root.join(p)).unwrap_or_else(|e| panic!("{ctx}: stat {p}: {e}"))
    };
    let absent = |p: &str| {
        assert!(
            fs::symlink_metadata(root.join(p)).is_err(),
            "{ctx}: {p} should be gone"
        )
    };
    let children = |p: &str| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(root.join(p))
            .unwrap_or_else(|e| panic!("{ctx}: list {p}: {e}"))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let mode = |p: &str| meta(p).permissions().mode() & 0o7777;

    assert_eq!(read("data/file"), "a\nchanged\n", "{ctx}");
    assert_eq!(mode("data/file"), 0o600, "{ctx}");
    assert_eq!(read("data/created"), "new\n", "{ctx}");
    assert!(meta("data/newdir/deep").is_dir(), "{ctx}");
    absent("data/todelete");
    assert_eq!(children("data/deldir"), ["g"], "{ctx}");
    assert_eq!(read("data/deldir/g"), "d\n", "{ctx}");
    assert_eq!(read("data/swap"), "back\n", "{ctx}");
    assert!(meta("data/swapdir").is_dir(), "{ctx}");
    assert!(children("data/swapdir").is_empty(), "{ctx}");
    assert_eq!(
        meta("data/hl-across").ino(),
        meta("data/linktarget").ino(),
        "{ctx}: hardlink across layers"
    );
    assert_eq!(
        meta("data/hl-within").ino(),
        meta("data/within").ino(),
        "{ctx}: hardlink within a layer"
    );
    assert_eq!(read("data/hl-across"), "target\n", "{ctx}");
    for (link, target) in [
        ("data/abs", "/data/file"),
        ("data/rel", "file"),
        ("data/dangling", "/nonexistent"),
    ] {
        assert_eq!(
            fs::read_link(root.join(link))
                .unwrap_or_else(|e| panic!("{ctx}: readlink {link}: {e}")),
            Path::new(target),
            "{ctx}"
        );
    }
    assert_eq!(mode("data/suid"), 0o4755, "{ctx}");
    assert_eq!(mode("data/sgid"), 0o2755, "{ctx}");
    assert_eq!(mode("data/sticky"), 0o1777, "{ctx}");
    assert_eq!(
        read(&format!("data/deep/deeper/deepest/{LONG}")),
        "long\n",
        "{ctx}"
    );
    assert_eq!(read(&format!("data/{UNICODE}")), "uni\n", "{ctx}");
    assert!(children("data/empty/a/b").is_empty(), "{ctx}");
    assert!(meta("home/user/x").is_file(), "{ctx}");
    if running_as_root() {
        let home = meta("home/user");
        assert_eq!(
            (home.uid(), home.gid()),
            (1000, 1000),
            "{ctx}: base owner of home/user"
        );
        let owned = meta("data/owned");
        if tier.full_ids() {
            assert_eq!(
                (owned.uid(), owned.gid()),
                (1000, 1000),
                "{ctx}: chown in RUN"
            );
        } else {
            eprintln!(
                "{ctx}: with a single-id map data/owned is {}:{}",
                owned.uid(),
                owned.gid()
            );
        }
    }
    assert_eq!(children("data/many").len(), 5000, "{ctx}");
    // No whiteout or bookkeeping leaked into the tree.
    for dir in ["data", "data/deldir", "data/swapdir", "etc", "home/user"] {
        for c in children(dir) {
            assert!(
                !c.starts_with(".wh."),
                "{ctx}: whiteout {dir}/{c} left in the tree"
            );
        }
    }
}

/// The walk snapshotter keeps the merged tree of a base in the store and
/// reverts each step's changes: steps over one base must each see the base
/// (a repeated step gives the same layer, the same as another snapshotter
/// gives), also after a failed step and after a step killed mid-run (its
/// tree is dirty and built again); `prune` skips a tree in use and removes
/// it otherwise.
#[test]
fn walk_cached_tree_is_reverted_between_steps() {
    let reference = snapshotters().into_iter().find(|s| *s != "walk");
    for tier in Tier::available() {
        let kiln = Kiln::new(tier);
        kiln.import_busybox("base");
        let ctx = tier.name();
        let run = |image: &str, snap: &str, args: &[&str], script: &str| {
            let mut cmd = kiln.step_command(image, snap, args, script);
            cmd.env("SOURCE_DATE_EPOCH", EPOCH);
            super::report(&tools::run(&mut cmd))
        };
        let digest = |snap: &str, script: &str| {
            let report = run("s0", snap, &[], script);
            assert_eq!(report["status"], 0, "{ctx} / {snap}: {script}: {report}");
            report["digest"].as_str().unwrap().to_string()
        };
        run("base", "walk", &["--tag", "s0"], &scenarios()[0].1);
        let mut modify = String::new();
        // Each over the same base; "dir-to-file" undoes "file-to-dir" and
        // only makes sense after it.
        for (name, script) in scenarios().iter().skip(1) {
            if *name == "dir-to-file" {
                continue;
            }
            let first = digest("walk", script);
            let again = digest("walk", script);
            assert_eq!(
                first, again,
                "{ctx}: step {name} repeated over the same base gives another layer \
                 (the cached tree kept the first run's changes)"
            );
            if let Some(r) = reference {
                assert_eq!(first, digest(r, script), "{ctx}: step {name}: walk vs {r}");
            }
            if *name == "modify" {
                modify = first;
            }
        }
        let modify_script = &scenarios()[2].1;

        // A failed step is reverted too.
        let mut cmd = kiln.step_command(
            "s0",
            "walk",
            &[],
            "echo junk > /data/file && rm -rf /data/dir && exit 3",
        );
        let failed = super::report(&cmd.output().unwrap());
        assert_eq!(failed["status"], 3, "{ctx}: {failed}");
        assert_eq!(
            digest("walk", modify_script),
            modify,
            "{ctx}: after a failed step"
        );

        // A step killed mid-run leaves its tree marked dirty; the next step
        // must not trust it.
        let mut cmd = kiln.step_command(
            "s0",
            "walk",
            &[],
            "echo junk > /data/file && touch /data/started && sleep 60",
        );
        cmd.stdout(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        let merged = kiln.store().join("unpacked/walk-merged");
        let started = || {
            fs::read_dir(&merged).ok().and_then(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .find(|p| p.join("rootfs/data/started").exists())
            })
        };
        let mut cached = None;
        for _ in 0..600 {
            cached = started();
            if cached.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let cached = cached.unwrap_or_else(|| panic!("{ctx}: the killed step never started"));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(cached.join("dirty").exists(), "{ctx}: no dirty mark");
        assert_eq!(
            digest("walk", modify_script),
            modify,
            "{ctx}: after a killed step"
        );
        assert!(!cached.join("dirty").exists(), "{ctx}: dirty mark left");
        assert!(
            !cached.join("rootfs/data/started").exists(),
            "{ctx}: killed step's file kept"
        );
        assert_eq!(
            fs::read_to_string(cached.join("rootfs/data/file")).unwrap(),
            "a\n",
            "{ctx}: the cached tree was not rebuilt"
        );

        // prune: a tree in use stays, an unused one goes.
        let trees: Vec<_> = fs::read_dir(&merged)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(trees.len(), 2, "{ctx}: one cached tree per base: {trees:?}");
        let locks: Vec<fs::File> = trees
            .iter()
            .map(|t| {
                let name = t.file_name().unwrap().to_str().unwrap();
                let lock = kiln
                    .store()
                    .join(format!("unpacked/locks/walk-{name}.lock"));
                let f = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&lock)
                    .unwrap();
                f.try_lock().unwrap();
                f
            })
            .collect();
        tools::run(&mut kiln.command(&["prune", "--all", "--force"]));
        assert!(
            trees.iter().all(|t| t.is_dir()),
            "{ctx}: prune removed a tree in use"
        );
        drop(locks);
        tools::run(&mut kiln.command(&["prune", "--all", "--force"]));
        assert!(
            trees.iter().all(|t| !t.exists()),
            "{ctx}: prune left an unused walk tree"
        );
    }
}

//! Steps whose files the caller cannot read as itself, and kiln as root of
//! a user namespace that does not map every id.
//!
//! With subordinate ids, a step can leave 0700 directories owned by a
//! container user (apt's `_apt` does): on the host they belong to a
//! subordinate uid, so listing the changes, writing the layer and removing
//! the step directory must happen inside a user namespace with the step's
//! map. Busybox stands in for apt here so every snapshotter is covered
//! quickly; `run_step_debian.rs` has apt itself.

use std::fs;

use super::{list_layer, report, snapshotters, Kiln, Tier};
use crate::support::tools;

/// A private tree of container user 42, as `_apt`'s partial/ dir is, and
/// a private file of that user in a directory anyone can list (only
/// reading its content is refused, which happens while writing the layer).
const PRIVATE_TREE: &str = "mkdir -p /private/sub && echo x > /private/sub/file \
     && chown -R 42:43 /private && chmod 700 /private /private/sub \
     && chmod 600 /private/sub/file \
     && echo y > /secret && chown 42:43 /secret && chmod 600 /secret";

/// Step directories left in the store's `tmp/`.
fn leftover_step_dirs(kiln: &Kiln) -> Vec<String> {
    let tmp = kiln.store().join("tmp");
    fs::read_dir(&tmp)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("step-"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn run_step_subuid_private_dirs_of_another_user_are_in_the_layer() {
    let kiln = Kiln::new(Tier::Subuid);
    if !kiln.user.has_subids() {
        eprintln!("skipped: the test user has no subordinate ids (run as root)");
        return;
    }
    kiln.import_busybox("base");
    for snap in snapshotters() {
        let report = kiln.step("base", snap, &[], PRIVATE_TREE);
        assert_eq!(report["status"], 0, "{snap}: {report}");
        assert_eq!(report["idmap"], "subordinate", "{snap}: {report}");
        let layer = list_layer(&kiln.blob(report["digest"].as_str().unwrap()));
        for (want, mode) in [
            ("private", "drwx------"),
            ("private/sub", "drwx------"),
            ("private/sub/file", "-rw-------"),
            ("secret", "-rw-------"),
        ] {
            let found = layer
                .iter()
                .find(|(_, _, p)| p.trim_start_matches("./").trim_end_matches('/') == want)
                .unwrap_or_else(|| panic!("{snap}: {want} missing from the layer: {layer:?}"));
            assert_eq!(
                (found.0.as_str(), found.1.as_str()),
                (mode, "42/43"),
                "{snap}: {want}"
            );
        }
        assert_eq!(
            leftover_step_dirs(&kiln),
            Vec::<String>::new(),
            "{snap}: the step directory was not removed"
        );
    }
}

#[test]
fn run_step_subuid_failed_step_with_private_dirs_leaves_no_step_dir() {
    let kiln = Kiln::new(Tier::Subuid);
    if !kiln.user.has_subids() {
        eprintln!("skipped: the test user has no subordinate ids (run as root)");
        return;
    }
    kiln.import_busybox("base");
    let snap = snapshotters()[0];
    let out = kiln
        .step_command("base", snap, &[], &format!("{PRIVATE_TREE} && exit 3"))
        .output()
        .unwrap();
    let report = report(&out);
    assert_eq!(report["status"], 3, "{report}");
    assert_eq!(
        leftover_step_dirs(&kiln),
        Vec::<String>::new(),
        "the step directory was not removed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// kiln as root of `unshare --user --map-root-user` (only id 0 exists
/// there): the sandbox's identity map copies that namespace's own extent
/// instead of claiming all 2^32 ids, which the kernel would refuse.
#[test]
fn run_step_as_root_of_a_single_id_user_namespace() {
    let kiln = Kiln::new(Tier::Single);
    kiln.import_busybox("base");
    let unshare = tools::require("unshare");
    for snap in snapshotters() {
        let mut cmd = kiln.user.command(&unshare);
        cmd.args(["--user", "--map-root-user", "--"])
            .arg(env!("CARGO_BIN_EXE_kiln"))
            .arg("--root")
            .arg(kiln.store())
            .args(["debug", "run-step", "base", "--format", "json"])
            .args(["--isolation", "rootless", "--snapshotter", snap, "--"])
            .arg("echo hi > /hello && id -u > /uid");
        let report = report(&tools::run(&mut cmd));
        assert_eq!(report["status"], 0, "{snap}: {report}");
        assert_eq!(report["idmap"], "identity", "{snap}: {report}");
        let layer = list_layer(&kiln.blob(report["digest"].as_str().unwrap()));
        assert!(
            layer
                .iter()
                .any(|(_, _, p)| p.trim_start_matches("./") == "hello"),
            "{snap}: /hello missing from the layer: {layer:?}"
        );
    }
    // The namespace really holds one id: the map kiln copied is that one.
    let mut cmd = kiln.user.command(&unshare);
    cmd.args(["--user", "--map-root-user", "cat", "/proc/self/uid_map"]);
    let map = tools::run_stdout(&mut cmd);
    assert_eq!(
        map.split_whitespace().nth(2),
        Some("1"),
        "unexpected map {map:?}"
    );
}

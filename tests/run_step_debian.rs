//! apt in a RUN over a real Debian rootfs, with subordinate ids: `_apt`'s
//! files keep their uid in the layer. Slow (builds the rootfs once per
//! machine, then downloads package lists) but run in CI.

use std::process::Command;

use super::{list_layer, snapshotters, Kiln, Tier};
use crate::support::debian;
use crate::support::tools;

/// The change listing, the layer writing and the removal of the step
/// directory run in kiln's user-namespace helper here (`build::finish`):
/// as the host user they could not read apt's 0700 `_apt` directories.
#[test]
fn slow_run_step_apt_get_install_over_debian_keeps_apt_uid() {
    let tar = debian::rootfs_tar();
    let kiln = Kiln::new(Tier::Subuid);
    assert!(
        kiln.user.has_subids(),
        "the test user needs subordinate ids (run as root)"
    );
    tools::run(&mut kiln.command(&["import", tar.to_str().unwrap(), "debian"]));
    // _apt's uid as the image's own passwd says (42 in bookworm).
    let passwd = tools::run_stdout(
        Command::new("tar")
            .arg("-xOf")
            .arg(&tar)
            .arg("./etc/passwd"),
    );
    let apt_uid = passwd
        .lines()
        .find_map(|l| l.strip_prefix("_apt:x:"))
        .and_then(|rest| rest.split(':').next())
        .expect("_apt in the image's passwd")
        .to_string();
    let snap = snapshotters()[0];
    let report = kiln.step(
        "debian",
        snap,
        &["--tag", "with-hello"],
        // apt drops to _apt for downloads (so setuid works in the sandbox);
        // its partial/ dirs are _apt's. A file _apt writes there is listed,
        // so the layer carries it and its parent with _apt's uid.
        "apt-get update -qq && apt-get install -y -qq --no-install-recommends hello && hello \
         && setpriv --reuid=_apt --regid=nogroup --clear-groups \
            sh -c 'echo x > /var/lib/apt/lists/partial/kiln-probe'",
    );
    assert_eq!(report["status"], 0, "{report}");
    assert_eq!(report["idmap"], "subordinate", "{report}");
    eprintln!("apt step: {report}");
    let layer = list_layer(&kiln.blob(report["digest"].as_str().unwrap()));
    assert!(
        layer
            .iter()
            .any(|(_, _, p)| p.trim_start_matches("./") == "usr/bin/hello"),
        "usr/bin/hello missing from the layer"
    );
    for want in [
        "var/lib/apt/lists/partial",
        "var/lib/apt/lists/partial/kiln-probe",
    ] {
        let found: Vec<_> = layer
            .iter()
            .filter(|(_, _, p)| p.trim_start_matches("./").trim_end_matches('/') == want)
            .collect();
        assert!(
            !found.is_empty(),
            "{want} missing from the layer: {layer:?}"
        );
        for (mode, owner, path) in found {
            assert_eq!(
                owner.split('/').next().unwrap(),
                apt_uid,
                "{path} ({mode} {owner}) lost _apt's uid {apt_uid}"
            );
        }
    }
}

/// xattrs (busybox has no setfattr, so over the Debian image, which has
/// `attr`): a `user.*` xattr set in a RUN is in the layer, with the same
/// digest from every snapshotter; the overlay's own xattrs are not.
#[test]
fn slow_run_step_xattrs_over_debian_across_snapshotters() {
    let tar = debian::rootfs_tar();
    let kiln = Kiln::new(Tier::available()[0]);
    tools::run(&mut kiln.command(&["import", tar.to_str().unwrap(), "debian"]));
    let script = "echo v > /xattr-file && setfattr -n user.kiln -v hello /xattr-file \
                  && mkdir /xattr-dir && setfattr -n user.dir -v d /xattr-dir \
                  && rm -rf /var/lib/apt/lists && mkdir /var/lib/apt/lists";
    let mut digests = Vec::new();
    for snap in snapshotters() {
        let mut cmd = kiln.step_command("debian", snap, &[], script);
        cmd.env("SOURCE_DATE_EPOCH", "1700000000");
        let report = super::report(&tools::run(&mut cmd));
        assert_eq!(report["status"], 0, "{snap}: {report}");
        let digest = report["digest"].as_str().unwrap().to_string();
        let xattrs = layer_xattrs(&kiln.blob(&digest));
        assert_eq!(
            xattrs.get("xattr-file").map(Vec::as_slice),
            Some(&["user.kiln=hello".to_string()][..]),
            "{snap}: {xattrs:?}"
        );
        assert_eq!(
            xattrs.get("xattr-dir/").map(Vec::as_slice),
            Some(&["user.dir=d".to_string()][..]),
            "{snap}: {xattrs:?}"
        );
        for (path, names) in &xattrs {
            assert!(
                names.iter().all(|n| !n.contains("overlay")),
                "{snap}: {path} carries overlay bookkeeping: {names:?}"
            );
        }
        digests.push((snap, digest));
    }
    assert!(
        digests.windows(2).all(|w| w[0].1 == w[1].1),
        "layer digests differ across snapshotters: {digests:?}"
    );
}

/// path → `NAME=VALUE` of every `SCHILY.xattr.*` PAX record in a layer.
fn layer_xattrs(blob: &std::path::Path) -> std::collections::BTreeMap<String, Vec<String>> {
    let file = std::fs::File::open(blob).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut out = std::collections::BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut names = Vec::new();
        if let Some(exts) = entry.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    names.push(format!(
                        "{name}={}",
                        String::from_utf8_lossy(ext.value_bytes())
                    ));
                }
            }
        }
        if !names.is_empty() {
            out.insert(path, names);
        }
    }
    out
}

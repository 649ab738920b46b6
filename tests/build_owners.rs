//! Owners a rootless build keeps only as records in the lower layers (an
//! unprivileged unpack cannot chown) hold for later RUN steps too: a
//! directory an earlier step gave to `user` is writable by `USER user`, and
//! the copies kiln makes to show those owners never reach a layer.

use std::fs;
use std::path::Path;
use std::process::Command;

use super::{context, pull_busybox};
use crate::run_step::{snapshotters, Kiln, Tier};
use crate::support::tools;

const DOCKERFILE: &str = "FROM base
RUN mkdir /work && echo x > /work/f && chown -R 1000:1000 /work && chmod 0640 /work/f
USER user
RUN touch /work/made && cat /work/f > /work/copy && id -u > /work/uid
USER root
RUN true
";

/// `(owner, path)` of every entry of each layer of `name`, bottom first,
/// as GNU tar lists them (`uid/gid` and the path, directories with `/`).
fn layer_entries(kiln: &Kiln, name: &str) -> Vec<Vec<(String, String)>> {
    let layout = kiln.subdir("owners-export");
    let dest = format!("oci:{}:t", layout.display());
    tools::run(&mut kiln.command(&["push", name, &dest]));
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| list(&blob(l["digest"].as_str().unwrap())))
        .collect()
}

fn list(blob: &Path) -> Vec<(String, String)> {
    let out = tools::run_stdout(
        Command::new(tools::require("tar"))
            .args(["--numeric-owner", "-tvzf"])
            .arg(blob),
    );
    out.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].to_string(), f[5..].join(" "))
        })
        .collect()
}

#[test]
fn build_run_as_user_writes_where_an_earlier_step_gave_it_ownership() {
    for snapshotter in snapshotters().into_iter().filter(|s| *s != "walk") {
        let kiln = Kiln::new(Tier::Subuid);
        pull_busybox(&kiln, "base");
        let ctx = context(&kiln, "ctx", &[("Dockerfile", DOCKERFILE)]);
        let mut c = kiln.command(&["build", "-t", "owned:1", "--snapshotter", snapshotter]);
        c.arg(&ctx).env("SOURCE_DATE_EPOCH", "0");
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{snapshotter}: {err}");

        let layers = layer_entries(&kiln, "owned:1");
        assert_eq!(layers.len(), 4, "{snapshotter}: {layers:?}");
        // The step as `user` changed /work (new entries) and made files
        // there; /work/f, which it only read, stays out even though kiln
        // gave it its owner before the step.
        let mut step = layers[2].clone();
        step.sort();
        let want: Vec<(String, String)> = ["work/", "work/copy", "work/made", "work/uid"]
            .iter()
            .map(|p| ("1000/1000".to_string(), p.to_string()))
            .collect();
        assert_eq!(step, want, "{snapshotter}");
        // `RUN true` over lowers whose owners were fixed: an empty layer.
        assert_eq!(layers[3], Vec::<(String, String)>::new(), "{snapshotter}");
        assert!(
            !err.contains("keep the caller as owner"),
            "{snapshotter}: {err}"
        );
    }
}

//! `--cache-to` / `--cache-from`: a build in one empty store exports its
//! layer cache; a build in a second empty store imports it, executes no
//! step, and pushes an image with the same layers to the same registry
//! without downloading a single layer (mounts and HEADs only), as the
//! unprivileged test user.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run_step::{Kiln, Tier};
use crate::support::registry::Registry;
use crate::support::tools;

fn rootless() -> Kiln {
    let tier = if Tier::available().contains(&Tier::Subuid) {
        Tier::Subuid
    } else {
        Tier::Single
    };
    Kiln::new(tier)
}

/// The busybox fixture at `REG/base:1` (pushed by skopeo, not by kiln, so
/// no store knows where its blobs are).
fn push_base(kiln: &Kiln, registry: &Registry) -> String {
    let layout = kiln.subdir("busybox-oci");
    crate::support::busybox::busybox_layout(&layout, "base");
    let reference = format!("{}/base:1", registry.addr());
    tools::run(
        Command::new(tools::require("skopeo"))
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:base", layout.display()))
            .arg(format!("docker://{reference}")),
    );
    reference
}

fn context(kiln: &Kiln, dockerfile: &str) -> PathBuf {
    let dir = kiln.subdir("ctx");
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    fs::write(dir.join("hello.txt"), "hello from the context\n").unwrap();
    fs::create_dir_all(dir.join("app")).unwrap();
    fs::write(dir.join("app/main.sh"), "echo main\n").unwrap();
    if kiln.tier != Tier::Chroot {
        kiln.user.own(&dir);
    }
    dir
}

/// `kiln build --progress=plain ARGS CTX`; returns (stdout, stderr).
fn build(kiln: &Kiln, args: &[&str], ctx: &Path) -> (String, String) {
    let mut c = kiln.command(&["build", "--progress=plain"]);
    c.args(args).arg(ctx).env("SOURCE_DATE_EPOCH", "0");
    let out = tools::run(&mut c);
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `(step text, cached?)` of each step a plain-progress build printed.
fn step_results(stderr: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in stderr.lines() {
        if let Some((_, text)) = line.split_once(": ").filter(|_| line.starts_with('[')) {
            current = Some(text.to_string());
        } else if let Some(rest) = line.strip_prefix("--> ") {
            if let Some(t) = current.take() {
                out.push((t, rest.trim() == "CACHED"));
            }
        }
    }
    out
}

/// The manifest at `reference`, read by skopeo.
fn remote_manifest(reference: &str) -> serde_json::Value {
    let raw = tools::run_stdout(
        Command::new(tools::require("skopeo"))
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{reference}")),
    );
    serde_json::from_str(&raw).unwrap()
}

fn layer_digests(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

const DOCKERFILE: &str = "FROM {BASE}
ENV GREETING=hi
RUN echo \"$GREETING\" > /greeting && cat /proc/sys/kernel/random/uuid > /ran-once
COPY hello.txt /hello.txt
COPY app/ /app/
RUN sh /app/main.sh > /app/out
";

#[test]
fn registry_cache_rebuild_in_fresh_store_runs_nothing_and_downloads_no_layer() {
    let registry = Registry::start();
    let first = rootless();
    let base = push_base(&first, &registry);
    let ctx = context(&first, &DOCKERFILE.replace("{BASE}", &base));
    let cache = format!("{}/cache:main", registry.addr());
    let app1 = format!("{}/app:1", registry.addr());
    let (_, err1) = build(
        &first,
        &[
            "--cache-to",
            &format!("type=registry,ref={cache}"),
            "--push",
            "-t",
            &app1,
        ],
        &ctx,
    );
    let ran: Vec<_> = step_results(&err1);
    assert!(
        ran.iter().any(|(t, c)| t.starts_with("RUN") && !c),
        "{err1}"
    );
    assert!(err1.contains("cache: exported"), "{err1}");

    // A second runner: nothing on disk, the same registry.
    let second = rootless();
    let ctx2 = context(&second, &DOCKERFILE.replace("{BASE}", &base));
    // Another repository, so the layers must be mounted (from the cache or
    // the base repository), not merely found.
    let app2 = format!("{}/other/app:2", registry.addr());
    let before = registry.requests().len();
    let (_, err2) = build(
        &second,
        &[
            "--cache-from",
            &format!("type=registry,ref={cache}"),
            "--push",
            "-t",
            &app2,
        ],
        &ctx2,
    );
    let during: Vec<(String, String)> = registry.requests()[before..].to_vec();
    let steps = step_results(&err2);
    assert!(steps.len() >= 5, "{err2}");
    for (text, cached) in &steps {
        if !text.starts_with("FROM") {
            assert!(cached, "{text} executed in the second build:\n{err2}");
        }
    }

    let m1 = remote_manifest(&app1);
    let m2 = remote_manifest(&app2);
    let layers = layer_digests(&m2);
    assert_eq!(
        layer_digests(&m1),
        layers,
        "the pushed image has other layers"
    );
    assert_eq!(m1["config"]["digest"], m2["config"]["digest"]);
    // skopeo reads the pushed image (manifest, config) without complaint.
    let inspect = tools::run_stdout(
        Command::new(tools::require("skopeo"))
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{app2}")),
    );
    assert!(inspect.contains("\"Layers\""), "{inspect}");

    for layer in &layers {
        let fetched: Vec<_> = during
            .iter()
            .filter(|(m, u)| m == "GET" && u.ends_with(&format!("/blobs/{layer}")))
            .collect();
        assert!(
            fetched.is_empty(),
            "layer {layer} was downloaded during the cached rebuild: {fetched:?}"
        );
    }
    // No layer bytes went up either: every layer was mounted.
    let uploads: Vec<_> = during
        .iter()
        .filter(|(m, u)| m == "PUT" && u.contains("/blobs/uploads/"))
        .filter(|(_, u)| layers.iter().any(|l| u.contains(&l.replace(':', "%3A"))))
        .collect();
    assert!(uploads.is_empty(), "layers uploaded: {uploads:?}");
    let mounts: Vec<_> = during
        .iter()
        .filter(|(m, u)| m == "POST" && u.starts_with("/v2/other/app/") && u.contains("mount="))
        .collect();
    assert_eq!(mounts.len(), layers.len(), "{during:?}");

    // Exporting the cache again from the second store (layers known only by
    // location, all already in the cache repository): one HEAD per layer,
    // no upload, no mount, no download.
    let before = registry.requests().len();
    let (_, err3) = build(
        &second,
        &["--cache-to", &format!("type=registry,ref={cache}")],
        &ctx2,
    );
    assert!(err3.contains(", 0 mounted"), "{err3}");
    let during: Vec<(String, String)> = registry.requests()[before..].to_vec();
    for layer in &layers {
        let touching: Vec<&(String, String)> = during
            .iter()
            .filter(|(_, u)| u.contains(layer.as_str()))
            .collect();
        assert_eq!(
            touching,
            [&("HEAD".to_string(), format!("/v2/cache/blobs/{layer}"))],
            "{during:?}"
        );
    }

    // The store with remote-only layers is consistent, and an output that
    // needs bytes fetches them (then the store holds them).
    let check = tools::run_stdout(&mut second.command(&["system", "check"]));
    assert!(check.contains("known by registry location only"), "{check}");
    let out = second.subdir("out");
    let dest = format!("oci:{}:t", out.display());
    tools::run(&mut second.command(&["push", &app2, &dest]));
    let exported: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(exported["manifests"].as_array().unwrap().len(), 1);
    for layer in &layers {
        let hex = layer.strip_prefix("sha256:").unwrap();
        assert!(out.join("blobs/sha256").join(hex).is_file(), "{layer}");
    }
    tools::run(&mut second.command(&["system", "check"]));
}

#[test]
fn local_cache_dir_round_trips_and_mode_max_carries_every_stage() {
    let registry = Registry::start();
    let first = rootless();
    let base = push_base(&first, &registry);
    let df = format!(
        "FROM {base} AS builder\nRUN echo built > /artifact\n\
         FROM {base}\nCOPY --from=builder /artifact /artifact\nRUN cat /artifact > /copy\n"
    );
    let ctx = context(&first, &df);
    let dir = first.subdir("cache-dir");
    let max = format!("type=local,dest={},mode=max", dir.display());
    let (id1, _) = build(&first, &["--cache-to", &max], &ctx);

    // A restored CI cache may be read-only: importing must not write to it.
    tools::run(Command::new("chmod").args(["-R", "a-w"]).arg(&dir));
    let second = rootless();
    let ctx2 = context(&second, &df);
    let from = format!("type=local,src={}", dir.display());
    let (id2, err2) = build(&second, &["--cache-from", &from], &ctx2);
    assert_eq!(id1, id2, "{err2}");
    for (text, cached) in step_results(&err2) {
        if !text.starts_with("FROM") {
            assert!(cached, "{text} executed:\n{err2}");
        }
    }

    // mode=min (the default) carries only the target stage: the builder's
    // RUN executes again, the target's steps then hit (same content).
    let dir_min = first.subdir("cache-min");
    let min = format!("type=local,dest={}", dir_min.display());
    build(&first, &["--cache-to", &min], &ctx);
    let third = rootless();
    let ctx3 = context(&third, &df);
    let from_min = format!("type=local,src={}", dir_min.display());
    let (id3, err3) = build(&third, &["--cache-from", &from_min], &ctx3);
    assert_eq!(id1, id3, "{err3}");
    let steps = step_results(&err3);
    let builder_run = steps
        .iter()
        .find(|(t, _)| t.contains("built > /artifact"))
        .unwrap();
    assert!(
        !builder_run.1,
        "mode=min exported the builder stage:\n{err3}"
    );
    let copy_run = steps.iter().find(|(t, _)| t.contains("/copy")).unwrap();
    assert!(copy_run.1, "{err3}");
}

#[test]
fn cache_mount_contents_travel_with_mode_max_and_arrive_only_when_a_run_executes() {
    let registry = Registry::start();
    let first = rootless();
    let base = push_base(&first, &registry);
    let df = format!(
        "FROM {base}\nARG V=1\n\
         RUN --mount=type=cache,id=pkgs,target=/cache echo \"$V\" >> /cache/log && cat /cache/log > /seen\n"
    );
    let ctx = context(&first, &df);
    let cache = format!("{}/cache:mounts", registry.addr());
    let to = format!("type=registry,ref={cache},mode=max");
    let (_, err1) = build(&first, &["--cache-to", &to, "--build-arg", "V=1"], &ctx);
    assert!(err1.contains("cache: exported"), "{err1}");
    let doc = remote_manifest(&cache);
    let mount_layers = doc["layers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["mediaType"] == "application/vnd.kiln.cache.mount.v1.tar+gzip")
        .count();
    assert_eq!(mount_layers, 1, "{doc}");
    assert_eq!(doc["artifactType"], "application/vnd.kiln.cache.v1+json");

    // A fresh store whose RUN must execute (another V) sees the old contents.
    let second = rootless();
    let ctx2 = context(&second, &df);
    let from = format!("type=registry,ref={cache}");
    let out = second.subdir("files");
    let dest = format!("type=local,dest={}", out.display());
    let (_, err2) = build(
        &second,
        &["--cache-from", &from, "--build-arg", "V=2", "-o", &dest],
        &ctx2,
    );
    assert!(err2.contains("contents from the imported cache"), "{err2}");
    assert_eq!(fs::read_to_string(out.join("seen")).unwrap(), "1\n2\n");

    // With the same V everything hits, and the mount is never unpacked.
    let third = rootless();
    let ctx3 = context(&third, &df);
    let (_, err3) = build(
        &third,
        &["--cache-from", &from, "--build-arg", "V=1"],
        &ctx3,
    );
    assert!(!err3.contains("contents from the imported cache"), "{err3}");
    assert!(err3.contains("0 steps run"), "{err3}");
}

#[test]
fn multi_stage_rebuild_with_mode_max_reads_no_stage_layer() {
    let registry = Registry::start();
    let first = rootless();
    let base = push_base(&first, &registry);
    let df = format!(
        "FROM {base} AS builder\nRUN echo built > /artifact\n\
         FROM {base}\nCOPY --from=builder /artifact /artifact\nRUN cat /artifact > /copy\n"
    );
    let ctx = context(&first, &df);
    let cache = format!("{}/cache:multi", registry.addr());
    let (id1, _) = build(
        &first,
        &["--cache-to", &format!("type=registry,ref={cache},mode=max")],
        &ctx,
    );
    let second = rootless();
    let ctx2 = context(&second, &df);
    let before = registry.requests().len();
    let (id2, err2) = build(
        &second,
        &["--cache-from", &format!("type=registry,ref={cache}")],
        &ctx2,
    );
    assert_eq!(id1, id2, "{err2}");
    assert!(err2.contains("0 steps run"), "{err2}");
    // Every layer of the cache (both stages') stayed in the registry.
    let layers = layer_digests(&remote_manifest(&cache));
    let gets: Vec<(String, String)> = registry.requests()[before..]
        .iter()
        .filter(|(m, u)| m == "GET" && layers.iter().any(|l| u.ends_with(l.as_str())))
        .cloned()
        .collect();
    assert!(gets.is_empty(), "{gets:?}");
}

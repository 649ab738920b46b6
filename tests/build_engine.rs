//! `kiln build` end to end, rootless as the unprivileged test user over the
//! busybox fixture: instructions land in the tree and the config, secrets
//! land nowhere, SOURCE_DATE_EPOCH makes digests reproducible, and a failing
//! RUN names its Dockerfile line.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run_step::{Kiln, Tier};
use crate::support::tools;
use crate::support::user::running_as_root;

#[path = "build_owners.rs"]
mod owners;

fn rootless() -> Kiln {
    let tier = if Tier::available().contains(&Tier::Subuid) {
        Tier::Subuid
    } else {
        Tier::Single
    };
    Kiln::new(tier)
}

/// A context directory holding `files` (name → content), readable by the tier's user.
fn context(kiln: &Kiln, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = kiln.subdir(name);
    for (f, text) in files {
        let p = dir.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
    }
    if kiln.tier != Tier::Chroot {
        kiln.user.own(&dir);
    }
    dir
}

/// `kiln build ARGS CONTEXT` that must succeed; returns stdout (the image id).
fn build(kiln: &Kiln, args: &[&str], ctx: &Path) -> String {
    let mut c = kiln.command(&["build"]);
    c.args(args).arg(ctx);
    tools::run_stdout(&mut c).trim().to_string()
}

/// Exports `name` to an OCI layout and unpacks it with umoci (as root, so
/// owners are kept); returns the rootfs.
fn unpack(kiln: &Kiln, name: &str) -> (tempfile::TempDir, PathBuf) {
    let out = tempfile::tempdir().unwrap();
    let layout = kiln.subdir("export");
    let dest = format!("oci:{}:t", layout.display());
    tools::run(&mut kiln.command(&["push", name, &dest]));
    let bundle = out.path().join("bundle");
    let mut umoci = Command::new(tools::require("umoci"));
    umoci
        .args(["unpack", "--image"])
        .arg(format!("{}:t", layout.display()));
    if !running_as_root() {
        umoci.arg("--rootless");
    }
    umoci.arg(&bundle);
    tools::run(&mut umoci);
    let rootfs = bundle.join("rootfs");
    (out, rootfs)
}

/// The busybox fixture as its deterministic OCI layout made it (same
/// digests on every run, unlike `import`, which dates the config now).
fn pull_busybox(kiln: &Kiln, name: &str) {
    let layout = kiln.subdir("busybox-oci");
    crate::support::busybox::busybox_layout(&layout, "base");
    if kiln.tier != Tier::Chroot {
        kiln.user.own(&layout);
    }
    let src = format!("oci:{}:base", layout.display());
    let pulled = tools::run_stdout(&mut kiln.command(&["pull", &src]));
    let stored = pulled.lines().last().unwrap().trim().to_string();
    tools::run(&mut kiln.command(&["tag", &stored, name]));
}

fn config(kiln: &Kiln, name: &str) -> serde_json::Value {
    let out = tools::run_stdout(&mut kiln.command(&["inspect", name]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

const APP: &str = r#"FROM base
ARG GREETING=hello
ENV APP=/app
WORKDIR /app/sub
RUN echo "$GREETING $APP" > greeting && id -u > who
RUN --mount=type=cache,target=/cache echo x >> /cache/log && wc -l < /cache/log > count
RUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > secret-len
RUN --mount=type=tmpfs,target=/scratch touch /scratch/gone && ls /scratch > tmpfs-list
RUN <<EOF
echo from-heredoc > heredoc
EOF
EXPOSE 8080 9000/udp
LABEL org.example.k=v
USER nobody
ENTRYPOINT ["sh", "-c"]
CMD ["cat greeting"]
"#;

#[test]
fn build_rootless_lands_instructions_in_tree_and_config_and_no_secret_anywhere() {
    let kiln = rootless();
    kiln.import_busybox("base");
    let secret = "kiln-secret-7f3a9c1e";
    let ctx = context(&kiln, "ctx", &[("Dockerfile", APP)]);
    let secret_file = kiln.subdir("secrets").join("tok");
    fs::write(&secret_file, secret).unwrap();
    if kiln.tier != Tier::Chroot {
        kiln.user.own(&secret_file);
    }
    let src = format!("id=tok,src={}", secret_file.display());
    let id = build(&kiln, &["-t", "app:1", "--secret", &src], &ctx);
    // stdout is the image id alone: RUN output goes to stderr.
    assert!(id.starts_with("sha256:") && !id.contains('\n'), "{id}");
    // The cache mount persists: a second build (no layer cache yet) sees 2 lines.
    build(
        &kiln,
        &["-t", "app:2", "--no-cache", "--secret", &src],
        &ctx,
    );

    let (_keep, rootfs) = unpack(&kiln, "app:2");
    let read = |p: &str| fs::read_to_string(rootfs.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("app/sub/greeting"), "hello /app\n");
    assert_eq!(read("app/sub/who"), "0\n");
    assert_eq!(read("app/sub/count").trim(), "2");
    assert_eq!(read("app/sub/secret-len").trim(), secret.len().to_string());
    assert_eq!(read("app/sub/tmpfs-list"), "gone\n");
    assert_eq!(read("app/sub/heredoc"), "from-heredoc\n");
    // Mount targets stay as empty directories (as BuildKit leaves them);
    // what was in the mounts does not.
    for gone in ["cache/log", "run/secrets/tok", "scratch/gone"] {
        assert!(!rootfs.join(gone).exists(), "{gone} leaked into the image");
    }
    for empty in ["cache", "scratch", "run/secrets"] {
        let n = fs::read_dir(rootfs.join(empty)).unwrap().count();
        assert_eq!(n, 0, "/{empty} is not an empty directory");
    }

    let c = config(&kiln, "app:2");
    let cfg = &c["Config"];
    assert_eq!(cfg["User"], "nobody");
    assert_eq!(cfg["WorkingDir"], "/app/sub");
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["sh", "-c"]));
    assert_eq!(cfg["Cmd"], serde_json::json!(["cat greeting"]));
    assert_eq!(cfg["Labels"]["org.example.k"], "v");
    assert!(cfg["ExposedPorts"]["9000/udp"].is_object(), "{cfg}");
    assert!(cfg["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "APP=/app"));
    let history = tools::run_stdout(&mut kiln.command(&["history", "--no-trunc", "app:2"]));
    assert!(
        history.contains("RUN |1 GREETING=hello /bin/sh -c echo \"$GREETING $APP\""),
        "{history}"
    );

    // The secret is in no blob, compressed or not.
    for entry in fs::read_dir(kiln.store().join("blobs/sha256")).unwrap() {
        let path = entry.unwrap().path();
        let raw = fs::read(&path).unwrap();
        let mut plain = Vec::new();
        let mut gz = flate2::read::GzDecoder::new(&raw[..]);
        let text = if std::io::Read::read_to_end(&mut gz, &mut plain).is_ok() {
            plain
        } else {
            raw
        };
        assert!(
            !text.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret is in blob {}",
            path.display()
        );
    }
    // `kiln run` runs ENTRYPOINT + CMD as USER, and a given command replaces CMD.
    let ran = tools::run_stdout(&mut kiln.command(&["run", "--rm", "app:2"]));
    assert_eq!(ran, "hello /app\n");
    let out = kiln
        .command(&["run", "app:2", "id -u; pwd; exit 4"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "65534\n/app/sub\n");
    tools::run(&mut kiln.command(&["system", "check"]));
}

#[test]
fn build_with_source_date_epoch_is_reproducible_across_stores() {
    let df = "FROM base\nRUN mkdir -p /out && echo one > /out/a && ln -s a /out/b\nWORKDIR /w\nENV X=1\nCMD [\"sh\"]\n";
    let mut digests = Vec::new();
    for _ in 0..2 {
        let kiln = rootless();
        pull_busybox(&kiln, "base");
        let ctx = context(&kiln, "ctx", &[("Dockerfile", df)]);
        let digest_file = kiln.subdir("out").join("digest");
        let mut c = kiln.command(&["build", "-t", "r:1", "--digestfile"]);
        c.arg(&digest_file).arg(&ctx).env("SOURCE_DATE_EPOCH", "0");
        tools::run(&mut c);
        digests.push(fs::read_to_string(&digest_file).unwrap());
    }
    assert_eq!(digests[0], digests[1]);
    assert!(digests[0].starts_with("sha256:"));
}

#[test]
fn build_failing_run_names_the_line_and_exit_code_and_keeps_the_store_consistent() {
    let kiln = rootless();
    kiln.import_busybox("base");
    let ctx = context(
        &kiln,
        "ctx",
        &[("Dockerfile", "FROM base\nRUN true\nRUN exit 3\n")],
    );
    let out = kiln
        .command(&["build", "-t", "bad:1"])
        .arg(&ctx)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Dockerfile:3:1"), "{err}");
    assert!(err.contains("exit 3"), "{err}");
    assert!(err.contains("code 3"), "{err}");
    tools::run(&mut kiln.command(&["system", "check"]));
    let images = tools::run_stdout(&mut kiln.command(&["images"]));
    assert!(!images.contains("bad"), "{images}");
}

/// `(step text, cached?)` of each step line a plain-progress build printed.
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

fn build_stderr(kiln: &Kiln, args: &[&str], ctx: &Path) -> (String, String) {
    let mut c = kiln.command(&["build"]);
    c.args(args).arg(ctx).env("SOURCE_DATE_EPOCH", "0");
    let out = tools::run(&mut c);
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn build_cache_hits_run_nothing_and_content_keys_hit_again_after_a_miss() {
    let kiln = rootless();
    pull_busybox(&kiln, "base");
    let df = "FROM base\nARG V=1\nRUN --mount=type=cache,target=/c,id=runs echo run >> /c/count\nRUN echo fixed > /fixed\nRUN echo after > /after\nENV DONE=1\n";
    let ctx = context(&kiln, "ctx", &[("Dockerfile", df)]);
    let runs = || -> usize {
        let dir = kiln.store().join("cache/mounts");
        let mut n = 0;
        for e in fs::read_dir(&dir).unwrap() {
            let f = e.unwrap().path().join("count");
            if f.is_file() {
                n += fs::read_to_string(f).unwrap().lines().count();
            }
        }
        n
    };
    let (id1, _) = build_stderr(&kiln, &["-t", "c:1"], &ctx);
    assert_eq!(runs(), 1);
    // Fully cached: every step CACHED, the RUN did not run, the same image ID.
    let (id2, err) = build_stderr(&kiln, &["-t", "c:2"], &ctx);
    let steps = step_results(&err);
    assert_eq!(steps.len(), 6, "{err}");
    assert!(steps[1..].iter().all(|(_, c)| *c), "{err}");
    assert_eq!(runs(), 1, "a cached RUN ran");
    assert_eq!(id1, id2);
    // V changes: the RUNs miss (they see V; the first says why) but rebuild
    // the same layers (SOURCE_DATE_EPOCH), so the ENV after them hits.
    let (_, err) = build_stderr(&kiln, &["-t", "c:3", "--build-arg", "V=2"], &ctx);
    let steps = step_results(&err);
    let cached: Vec<bool> = steps.iter().map(|(_, c)| *c).collect();
    assert_eq!(cached, [false, false, false, false, false, true], "{err}");
    assert!(err.contains("args: V changed"), "{err}");
    assert_eq!(runs(), 2);
    // --no-cache runs everything again.
    build_stderr(&kiln, &["-t", "c:4", "--no-cache"], &ctx);
    assert_eq!(runs(), 3);
    tools::run(&mut kiln.command(&["system", "check"]));
}

/// Pushes the busybox fixture with `triggers` as its config's `OnBuild` to
/// `registry` as `repo:1` and returns the reference. The config is written
/// here, not by a build, so that a trigger no Dockerfile would accept (as
/// other tools may record) can be served too.
fn push_busybox_with_triggers(
    kiln: &Kiln,
    registry: &crate::support::registry::Registry,
    repo: &str,
    triggers: &[&str],
) -> String {
    use sha2::{Digest as _, Sha256};
    let layout = kiln.subdir(&format!("layout-{repo}"));
    let img = crate::support::busybox::busybox_layout(&layout, "base");
    let put = |value: &serde_json::Value| -> (String, usize) {
        let bytes = serde_json::to_vec(value).unwrap();
        let digest = format!("sha256:{:x}", Sha256::digest(&bytes));
        fs::write(img.blob(&digest), &bytes).unwrap();
        (digest, bytes.len())
    };
    let read = |digest: &str| -> serde_json::Value {
        serde_json::from_slice(&fs::read(img.blob(digest)).unwrap()).unwrap()
    };
    let mut config = read(&img.config);
    config["config"]["OnBuild"] = serde_json::json!(triggers);
    let (config_digest, config_size) = put(&config);
    let mut manifest = read(&img.manifest);
    manifest["config"]["digest"] = config_digest.into();
    manifest["config"]["size"] = config_size.into();
    let (manifest_digest, manifest_size) = put(&manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": { "org.opencontainers.image.ref.name": "base" },
        }],
    });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let reference = format!("{}/{repo}:1", registry.addr());
    tools::run(
        Command::new(tools::require("skopeo"))
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:base", layout.display()))
            .arg(format!("docker://{reference}")),
    );
    reference
}

#[test]
fn build_runs_the_onbuild_triggers_of_a_pulled_base_and_names_a_bad_one() {
    let kiln = rootless();
    let registry = crate::support::registry::Registry::start();
    let base = push_busybox_with_triggers(
        &kiln,
        &registry,
        "onbuild/base",
        &["RUN echo hi > /onbuild", "ENV FROM_TRIGGER=1"],
    );
    let df = format!("FROM {base}\nRUN cat /onbuild > /seen && echo $FROM_TRIGGER >> /seen\n");
    let ctx = context(&kiln, "ctx", &[("Dockerfile", &df)]);
    let (_, err) = build_stderr(&kiln, &["-t", "child:1"], &ctx);
    let steps: Vec<String> = step_results(&err).into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        steps,
        [
            format!("FROM {base}"),
            "RUN echo hi > /onbuild".to_string(),
            "ENV FROM_TRIGGER=1".to_string(),
            "RUN cat /onbuild > /seen && echo $FROM_TRIGGER >> /seen".to_string(),
        ],
        "{err}"
    );
    let (_keep, rootfs) = unpack(&kiln, "child:1");
    assert_eq!(fs::read_to_string(rootfs.join("onbuild")).unwrap(), "hi\n");
    assert_eq!(fs::read_to_string(rootfs.join("seen")).unwrap(), "hi\n1\n");
    let c = config(&kiln, "child:1");
    assert!(c["Config"]["OnBuild"].is_null(), "{c}");
    let history = tools::run_stdout(&mut kiln.command(&["history", "--no-trunc", "child:1"]));
    let trigger = history
        .find("RUN /bin/sh -c echo hi > /onbuild # buildkit")
        .unwrap_or_else(|| panic!("no trigger step in the history:\n{history}"));
    let own = history.find("RUN /bin/sh -c cat /onbuild").unwrap();
    assert!(own < trigger, "history is newest first:\n{history}");
    // The trigger steps are cached like any other.
    let (_, err) = build_stderr(&kiln, &["-t", "child:2"], &ctx);
    let cached: Vec<bool> = step_results(&err).into_iter().map(|(_, c)| c).collect();
    assert_eq!(cached, [false, true, true, true], "{err}");

    // A trigger that does not parse: the error names the Dockerfile's FROM,
    // the trigger and why.
    let bad = push_busybox_with_triggers(&kiln, &registry, "onbuild/bad", &["COPY onlyone"]);
    let ctx = context(
        &kiln,
        "bad",
        &[("Dockerfile", &format!("FROM {bad}\nRUN true\n"))],
    );
    let out = kiln.command(&["build"]).arg(&ctx).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Dockerfile:1:1"), "{err}");
    assert!(err.contains(&format!("FROM {bad}")), "{err}");
    assert!(err.contains("ONBUILD trigger \"COPY onlyone\""), "{err}");
    assert!(
        err.contains("COPY requires at least two arguments"),
        "{err}"
    );
    // Triggers docker refuses to record are refused when run.
    let from = push_busybox_with_triggers(&kiln, &registry, "onbuild/from", &["FROM busybox"]);
    let ctx = context(&kiln, "from", &[("Dockerfile", &format!("FROM {from}\n"))]);
    let out = kiln.command(&["build"]).arg(&ctx).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("FROM isn't allowed as an ONBUILD trigger"),
        "{err}"
    );
    // A trigger that fails when run says it is one, and whose.
    let fails = push_busybox_with_triggers(&kiln, &registry, "onbuild/fails", &["RUN exit 7"]);
    let ctx = context(
        &kiln,
        "fails",
        &[("Dockerfile", &format!("FROM {fails}\n"))],
    );
    let out = kiln.command(&["build"]).arg(&ctx).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "ONBUILD RUN exit 7 (trigger of base image {fails})"
        )),
        "{err}"
    );
    assert!(err.contains("code 7"), "{err}");
    tools::run(&mut kiln.command(&["system", "check"]));
}

//! The differential suite: every case under `tests/build_diff/cases/` is
//! built by BuildKit (Debian's docker.io) and by `kiln build`, and the two
//! images are compared file by file (type, mode, owner, content, link
//! target, hardlinks, xattrs) and config field by config field. Known,
//! deliberate differences are listed per case (`case.json` → `allowed`)
//! with their reasons, which README.md repeats.
//!
//! A second test checks the harness: BuildKit against itself must show no
//! difference, buildah (another real builder) must agree on the trees, and
//! a file changed on purpose must be reported.

#[path = "build_diff/case.rs"]
mod case;
#[path = "build_diff/http.rs"]
mod http;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use case::{Base, Case, Staged};
use http::FileServer;

use crate::support::busybox::busybox_layout;
use crate::support::image_tree::{self, diff, unexpected, Allowed, Snapshot};
use crate::support::registry::Registry;
use crate::support::user::{running_as_root, TestUser};
use crate::support::{buildkit, debian, tools};

/// The fewest cases the suite may have (issue 5).
const MIN_CASES: usize = 30;

/// What every case shares: a registry holding the base images, a file
/// server for `ADD <url>`, and a scratch directory the test user owns.
struct Env {
    _registry: Registry,
    http: FileServer,
    busybox: String,
    debian: Option<String>,
    work: tempfile::TempDir,
}

impl Env {
    /// Pushes the busybox base (and the Debian one when `debian`) to a new
    /// loopback registry that both dockerd and kiln pull from.
    fn new(debian: bool) -> Env {
        buildkit::ensure_dockerd();
        let user = TestUser::get();
        let work = user.tempdir();
        let registry = Registry::start();
        let layout = work.path().join("busybox-layout");
        let image = busybox_layout(&layout, "base");
        let busybox = format!("{}/kiln-diff/busybox:1", registry.addr());
        tools::run(
            Command::new(tools::require("skopeo"))
                .args(["copy", "--quiet", "--dest-tls-verify=false"])
                .arg(format!("oci:{}", image.reference()))
                .arg(format!("docker://{busybox}")),
        );
        let debian = debian.then(|| {
            let reference = format!("{}/kiln-diff/debian:12", registry.addr());
            buildkit::import_and_push(&debian::rootfs_tar(), &reference);
            reference
        });
        let http =
            FileServer::start(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/build_diff/http"));
        Env {
            _registry: registry,
            http,
            busybox,
            debian,
            work,
        }
    }

    fn base(&self, case: &Case) -> String {
        match case.spec.base {
            Base::Busybox => self.busybox.clone(),
            Base::Debian => self
                .debian
                .clone()
                .expect("the Debian base was pushed for Debian cases"),
        }
    }

    fn build_args(&self, case: &Case) -> Vec<(String, String)> {
        let mut args = vec![
            ("BASE".to_owned(), self.base(case)),
            ("HTTP".to_owned(), self.http.addr().to_owned()),
        ];
        args.extend(case.spec.build_args.clone());
        args
    }

    fn stage(&self, case: &Case, side: &str) -> Staged {
        let dir = self.work.path().join(&case.name).join(side);
        let staged = case.stage(&dir.join("case"), &self.base(case));
        // Layouts and unpacked trees go beside the staged case.
        fs::create_dir_all(dir.join("out")).expect("create the output directory");
        TestUser::get().own(&dir);
        staged
    }
}

impl Drop for Env {
    /// The daemon keeps pulled and imported bases under this run's registry
    /// port; untag them so runs do not pile up names (layers are shared).
    fn drop(&mut self) {
        buildkit::remove_image(&self.busybox);
        if let Some(debian) = &self.debian {
            buildkit::remove_image(debian);
        }
    }
}

/// Builds `case` with BuildKit and returns its snapshot.
fn buildkit_snapshot(env: &Env, case: &Case, side: &str) -> Result<Snapshot, String> {
    let staged = env.stage(case, side);
    let dockerfile = match &case.spec.buildkit_dockerfile {
        Some(file) => staged.dir.join(file),
        None => staged.dockerfile(),
    };
    let tag = format!("kiln-diff/{}:{side}", case.name);
    let mut build_args = env.build_args(case);
    let parent = match &case.spec.parent {
        Some(dir) => {
            let parent_tag = parent_tag(case, side);
            buildkit::Build {
                context: staged.dir.join(dir),
                tag: parent_tag.clone(),
                build_args: build_args.clone(),
                ..buildkit::Build::default()
            }
            .run()?;
            build_args.push(("PARENT".to_owned(), parent_tag.clone()));
            Some(parent_tag)
        }
        None => None,
    };
    let build = buildkit::Build {
        context: staged.context.clone(),
        dockerfile: Some(dockerfile),
        tag: tag.clone(),
        build_args,
        secrets: secrets(case, &staged),
        secret_env: secret_env(case),
        target: case.spec.target.clone(),
    };
    let built = build.run();
    if let Some(parent) = &parent {
        buildkit::remove_image(parent);
    }
    built?;
    let out = staged.dir.with_file_name("out");
    let layout = out.join("layout");
    let config = buildkit::save_oci(&tag, &out, &layout, side);
    buildkit::remove_image(&tag);
    let mut snap = Snapshot::of_layout(&layout, side, &out.join("unpacked"));
    snap.config = image_tree::normalize_config(&config);
    Ok(snap)
}

/// The tag a case's parent image gets from the builder `side`.
fn parent_tag(case: &Case, side: &str) -> String {
    format!("kiln-diff/{}-parent:{side}", case.name)
}

fn secrets(case: &Case, staged: &Staged) -> Vec<(String, PathBuf)> {
    case.spec
        .secrets
        .iter()
        .map(|(id, file)| (id.clone(), staged.secret(file)))
        .collect()
}

/// `(id, variable, value)` of the case's environment secrets.
fn secret_env(case: &Case) -> Vec<(String, String, String)> {
    case.spec
        .secret_env
        .iter()
        .map(|(id, value)| {
            let var: String = id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_uppercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            (id.clone(), format!("KILN_DIFF_SECRET_{var}"), value.clone())
        })
        .collect()
}

/// What became of the kiln side of one case.
enum KilnSide {
    Built(Snapshot),
}

fn kiln_snapshot(env: &Env, case: &Case) -> Result<KilnSide, String> {
    let user = TestUser::get();
    let staged = env.stage(case, "kiln");
    let out = staged.dir.with_file_name("out");
    let store = out.join("store");
    let name = format!("kiln-diff/{}:kiln", case.name);
    let mut build_args = env.build_args(case);
    if let Some(dir) = &case.spec.parent {
        // Into the same store, where the case's FROM finds it.
        let parent_tag = parent_tag(case, "kiln");
        let mut cmd = user.command(env!("CARGO_BIN_EXE_kiln"));
        cmd.env("KILN_ROOT", &store)
            .args(["build", "-q", "-t", &parent_tag]);
        for (key, value) in &build_args {
            cmd.arg("--build-arg").arg(format!("{key}={value}"));
        }
        cmd.arg(staged.dir.join(dir));
        let output = cmd
            .output()
            .unwrap_or_else(|err| panic!("run `{}`: {err}", tools::describe(&cmd)));
        if !output.status.success() {
            return Err(format!(
                "`{}` (the parent image) failed with {}\n{}",
                tools::describe(&cmd),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        build_args.push(("PARENT".to_owned(), parent_tag));
    }
    let mut cmd = user.command(env!("CARGO_BIN_EXE_kiln"));
    cmd.env("KILN_ROOT", &store)
        .args(["build", "-t", &name, "-f"])
        .arg(staged.dockerfile());
    for (key, value) in build_args {
        cmd.arg("--build-arg").arg(format!("{key}={value}"));
    }
    for (id, src) in secrets(case, &staged) {
        cmd.arg("--secret")
            .arg(format!("id={id},src={}", src.display()));
    }
    for (id, var, value) in secret_env(case) {
        cmd.env(&var, value)
            .arg("--secret")
            .arg(format!("id={id},env={var}"));
    }
    if let Some(target) = &case.spec.target {
        cmd.arg("--target").arg(target);
    }
    cmd.arg(&staged.context);
    let output = cmd
        .output()
        .unwrap_or_else(|err| panic!("run `{}`: {err}", tools::describe(&cmd)));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "`{}` failed with {}\n{}{stderr}",
            tools::describe(&cmd),
            output.status,
            String::from_utf8_lossy(&output.stdout)
        ));
    }
    let layout = out.join("layout");
    let mut push = user.command(env!("CARGO_BIN_EXE_kiln"));
    push.env("KILN_ROOT", &store)
        .arg("push")
        .arg(&name)
        .arg(format!("oci:{}:kiln", layout.display()));
    tools::run(&mut push);
    Ok(KilnSide::Built(Snapshot::of_layout(
        &layout,
        "kiln",
        &out.join("unpacked"),
    )))
}

/// One line of the result table.
struct Row {
    case: String,
    buildkit: Duration,
    kiln: Duration,
    result: String,
    failure: Option<String>,
}

fn print_table(rows: &[Row]) {
    let mut table = format!("{:<28} {:>9} {:>9}  result\n", "case", "buildkit", "kiln");
    for row in rows {
        let _ = writeln!(
            table,
            "{:<28} {:>8.1}s {:>8.1}s  {}",
            row.case,
            row.buildkit.as_secs_f64(),
            row.kiln.as_secs_f64(),
            row.result
        );
    }
    println!("{table}");
}

fn report(diffs: &[&crate::support::image_tree::Difference]) -> String {
    diffs
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn kiln_matches_buildkit_on_every_case() {
    if !running_as_root() {
        println!("build_diff: dockerd and umoci's owner-keeping unpack need root; skipped");
        return;
    }
    let started = Instant::now();
    let all = Case::all();
    assert!(
        all.len() >= MIN_CASES,
        "only {} cases under tests/build_diff/cases, want at least {MIN_CASES}",
        all.len()
    );
    // KILN_DIFF_CASES=name,name runs only those cases (while working on one).
    let only = std::env::var("KILN_DIFF_CASES").ok();
    let cases: Vec<Case> = match &only {
        Some(names) => {
            let names: Vec<&str> = names.split(',').map(str::trim).collect();
            let chosen: Vec<Case> = all
                .into_iter()
                .filter(|c| names.contains(&c.name.as_str()))
                .collect();
            assert_eq!(
                chosen.len(),
                names.len(),
                "KILN_DIFF_CASES names an unknown case"
            );
            println!("build_diff: KILN_DIFF_CASES: only {names:?}");
            chosen
        }
        None => all,
    };
    let env = Env::new(cases.iter().any(|c| c.spec.base == Base::Debian));
    println!(
        "build_diff: setup (dockerd, registry, base images) took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let mut rows = Vec::new();
    for case in &cases {
        let t = Instant::now();
        let reference = buildkit_snapshot(&env, case, "buildkit");
        let buildkit_time = t.elapsed();
        let t = Instant::now();
        let kiln = kiln_snapshot(&env, case);
        let kiln_time = t.elapsed();
        let (result, failure) = match (reference, kiln) {
            (Err(err), _) => ("FAIL buildkit".to_owned(), Some(err)),
            (_, Err(err)) => ("FAIL kiln build".to_owned(), Some(err)),
            (Ok(reference), Ok(KilnSide::Built(kiln))) => {
                let diffs = diff(&reference, &kiln);
                let bad = unexpected(&diffs, &case.spec.allowed);
                if bad.is_empty() {
                    (format!("same ({} allowed differences)", diffs.len()), None)
                } else {
                    (
                        format!("DIFFERENT ({} unexpected)", bad.len()),
                        Some(format!("- BuildKit, + kiln\n{}", report(&bad))),
                    )
                }
            }
        };
        let (result, failure) = match (&case.spec.known_gap, failure) {
            (Some(gap), Some(_)) => (format!("KNOWN GAP ({gap}): {result}"), None),
            (_, failure) => (result, failure),
        };
        rows.push(Row {
            case: case.name.clone(),
            buildkit: buildkit_time,
            kiln: kiln_time,
            result,
            failure,
        });
    }
    print_table(&rows);
    for case in &cases {
        if let (Some(file), Some(reason)) =
            (&case.spec.buildkit_dockerfile, &case.spec.buildkit_reason)
        {
            println!("build_diff: {}: BuildKit built {file}: {reason}", case.name);
        }
    }
    println!(
        "build_diff: {} cases in {:.1}s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );
    let failures: Vec<String> = rows
        .iter()
        .filter_map(|r| r.failure.as_ref().map(|f| format!("=== {}\n{f}", r.case)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The cases the harness self-test builds (busybox-based, quick).
const SELF_TEST_CASES: [&str; 2] = ["05-run-forms", "12-copy-context"];

/// Differences buildah is allowed to show against BuildKit on
/// [`SELF_TEST_CASES`]: it records history its own way.
fn buildah_allowed() -> Vec<Allowed> {
    let allowed = |pattern: &str, reason: &str| Allowed {
        pattern: pattern.to_owned(),
        reason: reason.to_owned(),
    };
    vec![
        allowed(
            "history",
            "buildah writes its own created_by text and empty_layer flags",
        ),
        allowed(
            "/etc/*",
            "buildah leaves the empty mount points of /etc/hostname, /etc/hosts and \
             /etc/resolv.conf in RUN layers; BuildKit does not",
        ),
        allowed("/run", "buildah leaves the /run mount point in RUN layers"),
        allowed("config:Labels", "buildah adds io.buildah.version"),
    ]
}

fn buildah_snapshot(env: &Env, case: &Case) -> Snapshot {
    let staged = env.stage(case, "buildah");
    let out = staged.dir.with_file_name("out");
    let storage = out.join("storage");
    let buildah = |args: &[&str]| {
        let mut cmd = Command::new(tools::require("buildah"));
        cmd.arg("--root")
            .arg(storage.join("root"))
            .arg("--runroot")
            .arg(storage.join("run"))
            .arg("--storage-driver=vfs")
            .args(args);
        cmd
    };
    let name = format!("localhost/kiln-diff-{}:buildah", case.name);
    let mut bud = buildah(&[
        "bud",
        "--isolation",
        "chroot",
        "--tls-verify=false",
        "--quiet",
    ]);
    bud.args(["--no-cache", "-t", &name, "-f"])
        .arg(staged.dockerfile());
    for (key, value) in env.build_args(case) {
        bud.arg("--build-arg").arg(format!("{key}={value}"));
    }
    bud.arg(&staged.context);
    tools::run(&mut bud);
    let layout = out.join("layout");
    let mut push = buildah(&["push", "--quiet", &name]);
    push.arg(format!("oci:{}:buildah", layout.display()));
    tools::run(&mut push);
    let snapshot = Snapshot::of_layout(&layout, "buildah", &out.join("unpacked"));
    // vfs layers are plain directories owned by many ids; remove them now.
    let _ = fs::remove_dir_all(&storage);
    snapshot
}

#[test]
fn harness_sees_buildkit_agree_with_itself_and_catches_a_change() {
    if !running_as_root() {
        println!("build_diff: dockerd, buildah and umoci need root; skipped");
        return;
    }
    let env = Env::new(false);
    for name in SELF_TEST_CASES {
        let case = Case::all()
            .into_iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no case {name}"));
        let t = Instant::now();
        let first = buildkit_snapshot(&env, &case, "bk1").unwrap_or_else(|e| panic!("{e}"));
        let second = buildkit_snapshot(&env, &case, "bk2").unwrap_or_else(|e| panic!("{e}"));
        println!(
            "{name}: two BuildKit builds in {:.1}s, {} paths",
            t.elapsed().as_secs_f64(),
            first.files.len()
        );
        assert!(
            first.files.len() > 100,
            "{name}: the busybox tree is missing"
        );
        let same = diff(&first, &second);
        assert!(
            same.is_empty(),
            "{name}: BuildKit differs from itself:\n{}",
            report(&same.iter().collect::<Vec<_>>())
        );

        let t = Instant::now();
        let buildah = buildah_snapshot(&env, &case);
        let diffs = diff(&first, &buildah);
        println!(
            "{name}: buildah in {:.1}s; {} differences from BuildKit:\n{}",
            t.elapsed().as_secs_f64(),
            diffs.len(),
            report(&diffs.iter().collect::<Vec<_>>())
        );
        let bad = unexpected(&diffs, &buildah_allowed());
        assert!(
            bad.is_empty(),
            "{name}: buildah and BuildKit disagree:\n{}",
            report(&bad)
        );

        // Change the second tree on purpose: one file's content, one
        // file's mode, one new file, one config field.
        let rootfs = env
            .work
            .path()
            .join(&case.name)
            .join("bk2/out/unpacked/rootfs");
        fs::write(rootfs.join("etc/passwd"), "changed\n").expect("change etc/passwd");
        tools::run(
            Command::new("chmod")
                .arg("4755")
                .arg(rootfs.join("bin/busybox")),
        );
        fs::write(rootfs.join("new-file"), "new\n").expect("add a file");
        let mut changed = Snapshot {
            files: crate::support::image_tree::capture_tree(&rootfs),
            config: second.config.clone(),
        };
        changed
            .config
            .insert("config:User".to_owned(), "\"nobody\"".to_owned());
        let changes = diff(&first, &changed);
        let found: Vec<&str> = changes.iter().map(|d| d.subject.as_str()).collect();
        assert_eq!(
            found,
            ["/bin/busybox", "/etc/passwd", "/new-file", "config:User"],
            "{name}: the comparator missed or invented a change"
        );
        let allowed = [Allowed {
            pattern: "/etc/*".to_owned(),
            reason: "self-test".to_owned(),
        }];
        let left: Vec<&str> = unexpected(&changes, &allowed)
            .into_iter()
            .map(|d| d.subject.as_str())
            .collect();
        assert_eq!(left, ["/bin/busybox", "/new-file", "config:User"]);
    }
}

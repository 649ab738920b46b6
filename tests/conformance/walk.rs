//! Context walking against tonistiigi/fsutil's filter scenarios (README
//! section 11).

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use kiln::context::{Entry, EntryKind, FilterOpts, FilteredFs, WalkAction};
use serde_json::Value;

const PERMISSION_SCENARIO: &str = "walk-permission-denied";
/// Set in the unprivileged child; holds the scenario JSON.
const CHILD_ENV: &str = "KILN_WALK_PERMISSION_CHILD";
const NOBODY: &str = "65534";

fn scenarios() -> Option<Vec<Value>> {
    let path = super::dir()?.join("dockerignore/fsutil-walk-scenarios.json");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_json::from_str(&text).unwrap();
    Some(doc["scenarios"].as_array().unwrap().clone())
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Files 0644 and directories 0700, as upstream creates them.
fn build_tree(root: &Path, tree: &Value) {
    for entry in tree.as_array().unwrap() {
        let path = root.join(entry["path"].as_str().unwrap());
        match entry["type"].as_str().unwrap() {
            "file" => {
                fs::write(&path, entry["data"].as_str().unwrap_or("")).unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            }
            "dir" => {
                fs::create_dir(&path).unwrap();
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
            }
            "symlink" => {
                std::os::unix::fs::symlink(entry["target"].as_str().unwrap(), &path).unwrap()
            }
            other => panic!("unknown entry type {other}"),
        }
    }
}

fn filters(step: &Value) -> Vec<FilterOpts> {
    step["filters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| FilterOpts {
            include: strings(&f["include"]),
            exclude: strings(&f["exclude"]),
            follow_paths: strings(&f["follow_paths"]),
        })
        .collect()
}

fn describe(e: &Entry) -> String {
    match &e.kind {
        EntryKind::File => format!("file {}", e.path),
        EntryKind::Dir => format!("dir {}", e.path),
        EntryKind::Symlink(target) => format!("symlink:{target} {}", e.path),
    }
}

fn run_step(root: &Path, id: &str, n: usize, step: &Value) {
    let op = step["op"].as_str().unwrap();
    let what = format!("{id} step {n} ({op})");
    let built = FilteredFs::new(root, filters(step));
    if op == "new_filter" {
        assert_eq!(step["expect_error"], true, "{what}");
        assert!(built.is_err(), "{what}: filter was accepted");
        return;
    }
    let view = built.unwrap_or_else(|e| panic!("{what}: {e}"));
    match op {
        "walk" | "walk_from" => {
            let start = step["start"].as_str().unwrap_or("");
            let mut seen = Vec::new();
            let result = view.walk(start, |e| {
                seen.push(describe(e));
                Ok(WalkAction::Continue)
            });
            match step["expect_error_contains"].as_str() {
                Some(text) => {
                    let err = result.expect_err(&what).to_string();
                    assert!(err.contains(text), "{what}: error {err:?} lacks {text:?}");
                }
                None => {
                    result.unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!(seen, strings(&step["expect"]), "{what}");
                }
            }
        }
        "open" => {
            let path = step["path"].as_str().unwrap();
            match step["expect"].as_str().unwrap() {
                "ok" => {
                    let mut file = view.open(path).unwrap_or_else(|e| panic!("{what}: {e}"));
                    let mut contents = String::new();
                    file.read_to_string(&mut contents).unwrap();
                    if let Some(want) = step["expect_content"].as_str() {
                        assert_eq!(contents, want, "{what}");
                    }
                }
                "not_exist" => {
                    let err = view.open(path).expect_err(&what);
                    assert!(err.is_not_found(), "{what}: {err}");
                }
                other => panic!("{what}: unknown expectation {other}"),
            }
        }
        "walk_callback_returns_skipdir" => {
            let mut seen = Vec::new();
            view.walk("", |e| {
                seen.push(e.path.clone());
                Ok(WalkAction::SkipDir)
            })
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(seen, strings(&step["expect_visited"]), "{what}");
        }
        other => panic!("{what}: unknown op {other}"),
    }
}

fn run_scenario(scenario: &Value) -> usize {
    let id = scenario["id"].as_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    build_tree(tmp.path(), &scenario["tree"]);
    let steps = scenario["steps"].as_array().unwrap();
    for (n, step) in steps.iter().enumerate() {
        run_step(tmp.path(), id, n + 1, step);
    }
    steps.len()
}

#[test]
fn fsutil_walk() {
    let Some(scenarios) = scenarios() else {
        return;
    };
    let (mut ran, mut elsewhere) = (0, 0);
    for scenario in &scenarios {
        let steps = scenario["steps"].as_array().unwrap().len();
        if scenario["id"] == PERMISSION_SCENARIO {
            // Needs a non-root user: see fsutil_walk_permission_denied.
            elsewhere += steps;
            continue;
        }
        ran += run_scenario(scenario);
    }
    assert_eq!(scenarios.len(), 12);
    assert_eq!(ran + elsewhere, 36);
    println!("conformance: dockerignore/fsutil-walk: {elsewhere} steps of {PERMISSION_SCENARIO} run by fsutil_walk_permission_denied");
    super::report("dockerignore/fsutil-walk", ran, 0);
}

/// The scenario makes `foo/bar` mode 0000, which root reads anyway; as root
/// the test runs itself again as uid 65534 (a copy of the test binary and the
/// scenario data are handed over, so the checkout need not be readable).
#[test]
fn fsutil_walk_permission_denied() {
    if let Ok(json) = std::env::var(CHILD_ENV) {
        assert_ne!(effective_uid(), 0, "child still runs as root");
        let steps = run_permission_scenario(&serde_json::from_str(&json).unwrap());
        super::report(
            "dockerignore/fsutil-walk-permission-denied (child)",
            steps,
            0,
        );
        return;
    }
    let Some(scenarios) = scenarios() else {
        return;
    };
    let scenario = scenarios
        .into_iter()
        .find(|s| s["id"] == PERMISSION_SCENARIO)
        .expect("permission scenario present");
    let steps = if effective_uid() == 0 {
        run_as_nobody(&scenario)
    } else {
        run_permission_scenario(&scenario)
    };
    super::report("dockerignore/fsutil-walk-permission-denied", steps, 0);
}

fn run_permission_scenario(scenario: &Value) -> usize {
    let tmp = tempfile::tempdir().unwrap();
    build_tree(tmp.path(), &scenario["tree"]);
    let locked = tmp.path().join("foo/bar");
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
    let steps = scenario["steps"].as_array().unwrap();
    let result = std::panic::catch_unwind(|| {
        for (n, step) in steps.iter().enumerate() {
            run_step(tmp.path(), PERMISSION_SCENARIO, n + 1, step);
        }
    });
    // Restored so the temporary directory can be removed.
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    steps.len()
}

fn run_as_nobody(scenario: &Value) -> usize {
    let stage = tempfile::tempdir().unwrap();
    fs::set_permissions(stage.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let exe = stage.path().join("integration-test");
    fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let test_name = "conformance::walk::fsutil_walk_permission_denied";
    let output = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ])
        .arg(&exe)
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, scenario.to_string())
        .env("TMPDIR", "/tmp")
        .current_dir("/")
        .output()
        .expect("setpriv (util-linux) is needed to run this test as root");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--- child (uid {NOBODY}) ---\n{stdout}{stderr}--- end of child ---");
    assert!(output.status.success(), "child failed: {}", output.status);
    assert!(
        stdout.contains("1 passed"),
        "the child did not run the test"
    );
    scenario["steps"].as_array().unwrap().len()
}

/// From `/proc/self/status` (`Uid: real effective saved fs`).
fn effective_uid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

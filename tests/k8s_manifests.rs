//! `k8s/` and `docs/ci/` as their platforms read them, offline: every
//! Kubernetes manifest against the API's JSON schemas (strict: unknown fields
//! fail) for two pinned versions, and each CI recipe against its platform's
//! schema, with the validators `scripts/install-test-deps.sh` puts in
//! `/opt/kiln-venv`. Then what no schema sees: each Job is the tier it says,
//! and wires credentials, store, HOME, context and the registry cache the
//! way the README describes.
//!
//! Outside CI a missing validator skips these tests (saying so); under CI
//! (`CI` set) it fails them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::tools;

/// The oldest Kubernetes the manifests target (the first with the
/// `appArmorProfile` field) and the newest the validator bundles.
const K8S_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// The Secret, the PersistentVolumeClaim and the three Jobs: fewer means a
/// manifest went missing or was not read.
const MIN_K8S_DOCUMENTS: usize = 5;

/// Capabilities the runtime grants by default, which the "baseline" Pod
/// Security Standard allows a pod to add back.
const BASELINE_CAPS: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn venv() -> PathBuf {
    std::env::var_os("KILN_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/kiln-venv"))
}

/// The venv's `tool`; `None` (after saying why) when it is missing outside
/// CI. Under CI a missing tool fails the test.
fn venv_tool(tool: &str) -> Option<PathBuf> {
    let path = venv().join("bin").join(tool);
    if path.is_file() {
        return Some(path);
    }
    let why = format!(
        "{} not found: run scripts/install-test-deps.sh as root",
        path.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("skipping: {why}");
    None
}

/// Every `.yaml`/`.yml` file under `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read {}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The non-empty YAML documents of `file`, as JSON, read by the venv's
/// PyYAML (the loader kubernetes-validate itself uses).
fn yaml_documents(python: &Path, file: &Path) -> Vec<Value> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        with open(sys.argv[1]) as f:\n    docs = [d for d in yaml.safe_load_all(f) if d is not None]\n\
        json.dump(docs, sys.stdout)\n";
    let text = tools::run_stdout(Command::new(python).args(["-c", SCRIPT]).arg(file));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("YAML of {} as JSON: {e}\n{text}", file.display()))
}

/// `kubernetes-validate --strict` over `files` for each pinned version.
/// `Ok(n)`: it exited 0 and printed only passes, `n` of them (one per
/// document and version). `Err(output)` otherwise: a warning (such as a kind
/// it has no schema for) fails too, so nothing passes unchecked.
fn k8s_validate(validator: &Path, files: &[PathBuf]) -> Result<usize, String> {
    let mut cmd = Command::new(validator);
    cmd.arg("--strict");
    for version in K8S_VERSIONS {
        cmd.args(["-k", version]);
    }
    cmd.args(files);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("start `{}`: {e}", tools::describe(&cmd)));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let is_pass = |l: &str| l.starts_with("INFO ") && l.contains(" passed for resource ");
    let passed = text.lines().filter(|l| is_pass(l)).count();
    let other = text.lines().any(|l| !l.trim().is_empty() && !is_pass(l));
    if out.status.success() && !other {
        Ok(passed)
    } else {
        Err(format!(
            "`{}` exited with {}:\n{text}",
            tools::describe(&cmd),
            out.status
        ))
    }
}

/// `check-jsonschema` with one of its vendored schemas
/// (`vendor.github-workflows`, `vendor.gitlab-ci`) over `file`.
fn ci_validate(checker: &Path, schema: &str, file: &Path) -> Result<(), String> {
    let mut cmd = Command::new(checker);
    cmd.args(["--builtin-schema", schema]).arg(file);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("start `{}`: {e}", tools::describe(&cmd)));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{}` exited with {}:\n{}{}",
            tools::describe(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn k8s_manifests_pass_strict_schema_validation() {
    let Some(validator) = venv_tool("kubernetes-validate") else {
        return;
    };
    let python = venv().join("bin/python3");
    let version = tools::run_stdout(Command::new(&validator).arg("--version"));
    let files = yaml_files(&repo_root().join("k8s"));
    let documents: usize = files.iter().map(|f| yaml_documents(&python, f).len()).sum();
    assert!(
        documents >= MIN_K8S_DOCUMENTS,
        "k8s/ holds {documents} YAML documents in {files:?}, expected at least {MIN_K8S_DOCUMENTS}"
    );
    let passed = k8s_validate(&validator, &files).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        passed,
        documents * K8S_VERSIONS.len(),
        "every document must pass once per version {K8S_VERSIONS:?}"
    );
    eprintln!(
        "kubernetes-validate {}: {documents} documents in {} files passed strict validation against {K8S_VERSIONS:?}",
        version.trim(),
        files.len()
    );
}

#[test]
fn k8s_validator_rejects_broken_manifests() {
    let Some(validator) = venv_tool("kubernetes-validate") else {
        return;
    };
    let original = std::fs::read_to_string(repo_root().join("k8s/job-userns.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    // The untouched copy passes, so each failure below comes from its edit.
    let intact = write("intact.yaml", &original);
    assert_eq!(k8s_validate(&validator, &[intact]), Ok(K8S_VERSIONS.len()));

    // Each edit is anchored on a line start, so it changes a key, not a comment.
    let cases = [
        // An unknown field: only strict validation notices it.
        (
            "\n      hostUsers: false",
            "\n      hostUser: false",
            "hostUser",
        ),
        // A wrong type.
        (
            "\n  backoffLimit: 0",
            "\n  backoffLimit: none",
            "backoffLimit",
        ),
        // A kind with no schema: the validator only warns, which must fail.
        ("\nkind: Job", "\nkind: Jobb", "Jobb"),
        // A field in the wrong object.
        (
            "\n            procMount: Unmasked",
            "\n            procMount: Unmasked\n            fooMount: x",
            "fooMount",
        ),
    ];
    for (from, to, named) in cases {
        assert!(
            original.contains(from),
            "job-userns.yaml no longer has {from:?}"
        );
        let broken = write("broken.yaml", &original.replacen(from, to, 1));
        match k8s_validate(&validator, &[broken]) {
            Ok(n) => panic!("{to:?} passed validation ({n} passes)"),
            Err(output) => assert!(
                output.contains(named),
                "the failure for {to:?} does not name {named:?}:\n{output}"
            ),
        }
    }
}

/// A pod's container, its effective security settings (the container's
/// over the pod's) and the volumes it mounts.
struct Container<'a> {
    spec: &'a Value,
    pod: &'a Value,
}

impl<'a> Container<'a> {
    fn security(&self, key: &str) -> Option<&'a Value> {
        self.spec["securityContext"]
            .get(key)
            .or_else(|| self.pod["securityContext"].get(key))
    }

    fn env(&self) -> BTreeMap<&'a str, &'a str> {
        self.spec["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["name"].as_str().unwrap(),
                    e["value"].as_str().unwrap_or(""),
                )
            })
            .collect()
    }

    /// The volume mounted at `path`, and whether the mount is read-only.
    fn volume_at(&self, path: &str) -> Option<(&'a Value, bool)> {
        let mount = self.spec["volumeMounts"]
            .as_array()?
            .iter()
            .find(|m| m["mountPath"] == path)?;
        let volume = self.pod["volumes"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == mount["name"])?;
        Some((volume, mount["readOnly"] == true))
    }

    /// The volume mounted at the closest ancestor of `path`.
    fn volume_under(&self, path: &str) -> Option<(&'a Value, bool)> {
        let mut at = Path::new(path);
        loop {
            if let Some(found) = self.volume_at(at.to_str()?) {
                return Some(found);
            }
            at = at.parent()?;
        }
    }
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// The value after `flag` in `args`, either `flag VALUE` or `flag=VALUE`.
fn flag<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, a)| {
        if *a == flag {
            args.get(i + 1).copied()
        } else {
            a.strip_prefix(flag)?.strip_prefix('=')
        }
    })
}

#[test]
fn k8s_jobs_wire_tier_credentials_store_context_and_cache() {
    let Some(_) = venv_tool("kubernetes-validate") else {
        return;
    };
    let python = venv().join("bin/python3");
    let documents: Vec<Value> = yaml_files(&repo_root().join("k8s"))
        .iter()
        .flat_map(|f| yaml_documents(&python, f))
        .collect();
    let named = |kind: &str| -> BTreeMap<String, &Value> {
        documents
            .iter()
            .filter(|d| d["kind"] == kind)
            .map(|d| (d["metadata"]["name"].as_str().unwrap().to_owned(), d))
            .collect()
    };
    let secrets = named("Secret");
    let claims = named("PersistentVolumeClaim");
    let jobs = named("Job");

    let mut tiers = BTreeSet::new();
    let mut contexts = BTreeSet::new();
    for (name, job) in &jobs {
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never", "{name}");
        let all: Vec<&Value> = ["initContainers", "containers"]
            .iter()
            .flat_map(|k| pod[*k].as_array().into_iter().flatten())
            .collect();
        for c in &all {
            for bound in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(
                        c["resources"][bound][resource].is_string(),
                        "{name}/{}: no resources.{bound}.{resource}",
                        c["name"]
                    );
                }
            }
        }
        let kiln = pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "kiln")
            .unwrap_or_else(|| panic!("{name}: no container named kiln"));
        let kiln = Container { spec: kiln, pod };
        let args = strings(&kiln.spec["args"]);
        assert_eq!(args.first(), Some(&"build"), "{name}: {args:?}");
        assert!(args.contains(&"--push"), "{name}: {args:?}");

        // The registry cache sits beside the image it speeds up.
        let tag = flag(&args, "-t").unwrap_or_else(|| panic!("{name}: no -t in {args:?}"));
        let repo = tag.rsplit_once(':').map_or(tag, |(repo, _)| repo);
        assert_eq!(
            flag(&args, "--cache-from"),
            Some(format!("type=registry,ref={repo}:buildcache").as_str()),
            "{name}"
        );
        assert_eq!(
            flag(&args, "--cache-to"),
            Some(format!("type=registry,ref={repo}:buildcache,mode=max").as_str()),
            "{name}"
        );

        let env = kiln.env();
        let epoch = env.get("SOURCE_DATE_EPOCH").copied().unwrap_or_default();
        assert!(
            epoch.parse::<u64>().is_ok(),
            "{name}: SOURCE_DATE_EPOCH {epoch:?}"
        );
        for var in ["KILN_ROOT", "HOME"] {
            let path = env.get(var).unwrap_or_else(|| panic!("{name}: no {var}"));
            let (volume, read_only) = kiln
                .volume_at(path)
                .unwrap_or_else(|| panic!("{name}: nothing mounted at {var}={path}"));
            assert!(
                volume["emptyDir"].is_object() && !read_only,
                "{name}: {var} must be a writable emptyDir, is {volume}"
            );
        }

        // Credentials: $DOCKER_CONFIG/config.json from a dockerconfigjson Secret.
        let docker_config = env
            .get("DOCKER_CONFIG")
            .unwrap_or_else(|| panic!("{name}: no DOCKER_CONFIG"));
        let (auth, _) = kiln
            .volume_at(docker_config)
            .unwrap_or_else(|| panic!("{name}: nothing mounted at {docker_config}"));
        let secret_name = auth["secret"]["secretName"].as_str().unwrap_or_default();
        let secret = secrets
            .get(secret_name)
            .unwrap_or_else(|| panic!("{name}: Secret {secret_name:?} is not in k8s/"));
        assert_eq!(
            secret["type"], "kubernetes.io/dockerconfigjson",
            "{secret_name}"
        );
        let config = secret["stringData"][".dockerconfigjson"]
            .as_str()
            .unwrap_or_default();
        let config: Value = serde_json::from_str(config)
            .unwrap_or_else(|e| panic!("{secret_name}: .dockerconfigjson is not JSON: {e}"));
        assert!(config["auths"].is_object(), "{secret_name}: {config}");
        let items = auth["secret"]["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            items
                .iter()
                .any(|i| i["key"] == ".dockerconfigjson" && i["path"] == "config.json"),
            "{name}: the Secret must appear as config.json, items {items:?}"
        );

        // The context: the last argument, on a claim or on a volume an init
        // container cloned into.
        let context = args.last().unwrap();
        let (volume, _) = kiln
            .volume_under(context)
            .unwrap_or_else(|| panic!("{name}: no volume holds the context {context}"));
        if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
            assert!(
                claims.contains_key(claim),
                "{name}: claim {claim} is not in k8s/"
            );
            contexts.insert("volume");
        } else {
            let cloned = pod["initContainers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    let script = strings(&c["args"]).join(" ") + &strings(&c["command"]).join(" ");
                    let writes = c["volumeMounts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|m| m["name"] == volume["name"] && m["readOnly"] != true);
                    writes && script.contains("git clone")
                });
            assert!(
                cloned,
                "{name}: nothing clones into the context volume {volume}"
            );
            contexts.insert("git clone");
        }

        let tier = job["metadata"]["labels"]["kiln.dev/tier"]
            .as_str()
            .unwrap_or_default();
        let isolation = flag(&args, "--isolation");
        let host_users = pod["hostUsers"] != false;
        let run_as = kiln.security("runAsUser").and_then(Value::as_u64);
        let profile = |key: &str| {
            kiln.security(key)
                .and_then(|p| p["type"].as_str())
                .unwrap_or("RuntimeDefault")
        };
        let added = strings(&kiln.spec["securityContext"]["capabilities"]["add"]);
        let dropped = strings(&kiln.spec["securityContext"]["capabilities"]["drop"]);
        match tier {
            "userns" => {
                assert!(!host_users, "{name}: hostUsers must be false");
                assert_eq!(isolation, Some("rootless"), "{name}");
            }
            "rootless" => {
                assert!(host_users, "{name}");
                assert_eq!(isolation, Some("rootless"), "{name}");
                assert_eq!(run_as, Some(1000), "{name}");
                assert_eq!(
                    kiln.security("runAsNonRoot"),
                    Some(&Value::Bool(true)),
                    "{name}"
                );
                assert_eq!(
                    kiln.security("allowPrivilegeEscalation"),
                    Some(&Value::Bool(false)),
                    "{name}"
                );
                assert!(
                    ["Unconfined", "Localhost"].contains(&profile("seccompProfile")),
                    "{name}"
                );
                assert!(
                    ["Unconfined", "Localhost"].contains(&profile("appArmorProfile")),
                    "{name}"
                );
                assert!(
                    dropped.contains(&"ALL") && added.is_empty(),
                    "{name}: {added:?}"
                );
            }
            "chroot" => {
                assert!(host_users, "{name}");
                assert_eq!(isolation, Some("chroot"), "{name}");
                assert_eq!(run_as, Some(0), "{name}");
                // What keeps this pod within the "baseline" standard.
                assert_eq!(profile("seccompProfile"), "RuntimeDefault", "{name}");
                assert_eq!(profile("appArmorProfile"), "RuntimeDefault", "{name}");
                assert!(
                    added.iter().all(|c| BASELINE_CAPS.contains(c)),
                    "{name}: {added:?} goes beyond baseline"
                );
            }
            other => panic!("{name}: unknown tier label {other:?}"),
        }
        assert!(tiers.insert(tier), "{name}: a second {tier} Job");
    }
    assert_eq!(
        tiers,
        BTreeSet::from(["chroot", "rootless", "userns"]),
        "one Job per tier"
    );
    assert_eq!(
        contexts,
        BTreeSet::from(["git clone", "volume"]),
        "the Jobs show both ways to bring the context"
    );
}

/// What both recipes must do: `kiln build --push` with the commit time as
/// SOURCE_DATE_EPOCH, the registry cache beside `repo`, credentials written
/// to `$DOCKER_CONFIG/config.json`, and no Docker daemon.
fn check_recipe(name: &str, text: &str, repo: &str) {
    for needle in [
        "kiln build --push".to_owned(),
        "SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)".to_owned(),
        format!("--cache-from \"type=registry,ref={repo}:buildcache\""),
        format!("--cache-to \"type=registry,ref={repo}:buildcache,mode=max\""),
        "$DOCKER_CONFIG/config.json".to_owned(),
    ] {
        assert!(text.contains(&needle), "{name} does not contain {needle:?}");
    }
    for banned in ["docker build", "docker login", "docker.sock", "dind"] {
        assert!(!text.contains(banned), "{name} uses Docker: {banned:?}");
    }
}

#[test]
fn ci_recipes_pass_their_platform_schemas() {
    let Some(checker) = venv_tool("check-jsonschema") else {
        return;
    };
    let python = venv().join("bin/python3");
    let dir = repo_root().join("docs/ci");

    let github = dir.join("github-actions.yml");
    ci_validate(&checker, "vendor.github-workflows", &github).unwrap_or_else(|e| panic!("{e}"));
    let workflow = yaml_documents(&python, &github);
    let steps = workflow[0]["jobs"]["build"]["steps"]
        .as_array()
        .expect("github-actions.yml: jobs.build.steps");
    let script: String = steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    check_recipe("github-actions.yml", &script.replace("\\\n", ""), "$IMAGE");
    let flattened = script.replace("\\\n", " ");
    assert!(
        flattened
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .contains("kiln build --push --progress=plain -t \"$IMAGE:$GITHUB_SHA\""),
        "github-actions.yml: the build step\n{script}"
    );

    let gitlab = dir.join("gitlab-ci.yml");
    ci_validate(&checker, "vendor.gitlab-ci", &gitlab).unwrap_or_else(|e| panic!("{e}"));
    let pipeline = yaml_documents(&python, &gitlab);
    let job = &pipeline[0]["build-image"];
    assert!(job["image"].is_string(), "gitlab-ci.yml: build-image.image");
    assert!(
        job.get("services").is_none(),
        "gitlab-ci.yml: no services (no dind)"
    );
    let lines: Vec<&str> = ["before_script", "script"]
        .iter()
        .flat_map(|k| strings(&job[*k]))
        .collect();
    let joined = lines.join("\n");
    check_recipe("gitlab-ci.yml", &joined, "$IMAGE");
    assert!(
        joined.contains("$CI_REGISTRY_USER") && joined.contains("$CI_REGISTRY_PASSWORD"),
        "gitlab-ci.yml: credentials from GitLab's CI_REGISTRY_* variables"
    );
}

#[test]
fn ci_validator_rejects_broken_recipes() {
    let Some(checker) = venv_tool("check-jsonschema") else {
        return;
    };
    let dir = repo_root().join("docs/ci");
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "github-actions.yml",
            "vendor.github-workflows",
            "runs-on:",
            "runs_on:",
        ),
        (
            "gitlab-ci.yml",
            "vendor.gitlab-ci",
            "  script:",
            "  scrpit:",
        ),
    ];
    for (file, schema, from, to) in cases {
        let original = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(original.contains(from), "{file} no longer has {from:?}");
        let broken = tmp.path().join(file);
        std::fs::write(&broken, original.replacen(from, to, 1)).unwrap();
        assert!(
            ci_validate(&checker, schema, &broken).is_err(),
            "{file} with {to:?} passed {schema}"
        );
        std::fs::write(&broken, &original).unwrap();
        ci_validate(&checker, schema, &broken).unwrap_or_else(|e| panic!("{e}"));
    }
}

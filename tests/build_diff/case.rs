//! One differential case: a directory under `tests/build_diff/cases/` with a
//! `Dockerfile`, an optional `context/` (the build context; empty when
//! missing), optional `secrets/` and an optional `case.json`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::support::image_tree::Allowed;

/// Which base image `ARG BASE` names.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    /// The busybox image of `support::busybox`.
    #[default]
    Busybox,
    /// The mmdebstrap Debian 12 image of `support::debian` (slow to make).
    Debian,
}

/// `case.json`; every field is optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    pub base: Base,
    /// `--build-arg`s besides the `BASE` and `HTTP` every case gets.
    #[serde(default)]
    pub build_args: BTreeMap<String, String>,
    /// `--secret id=ID,src=secrets/FILE`.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// `--secret id=ID,env=VAR` with VAR set to this value.
    #[serde(default)]
    pub secret_env: BTreeMap<String, String>,
    #[serde(default)]
    pub target: Option<String>,
    /// A subdirectory (its own Dockerfile and context) that each builder
    /// builds first; the case's Dockerfile gets its tag as `ARG PARENT`.
    /// For what only an image, not a stage, can carry (ONBUILD triggers
    /// of a FROM image).
    #[serde(default)]
    pub parent: Option<String>,
    /// A Dockerfile for BuildKit alone, for cases whose syntax the BuildKit
    /// of Debian's docker.io (20.10, built-in Dockerfile frontend without
    /// labs) does not parse: it spells the same result in older syntax.
    #[serde(default)]
    pub buildkit_dockerfile: Option<String>,
    /// Why the case needs `buildkit_dockerfile`.
    #[serde(default)]
    pub buildkit_reason: Option<String>,
    /// Known, deliberate differences between kiln and BuildKit.
    #[serde(default)]
    pub allowed: Vec<Allowed>,
    /// A kiln bug this case shows, not yet fixed: the case is built and its
    /// result printed, but a failure or difference does not fail the test
    /// (README lists these under known gaps).
    #[serde(default)]
    pub known_gap: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub spec: Spec,
}

impl Case {
    /// Every case, sorted by name.
    pub fn all() -> Vec<Case> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/build_diff/cases");
        let mut cases: Vec<Case> = fs::read_dir(&root)
            .unwrap_or_else(|err| panic!("read {}: {err}", root.display()))
            .map(|entry| entry.expect("read a case directory entry").path())
            .filter(|path| path.join("Dockerfile").is_file())
            .map(|dir| Case::load(&dir))
            .collect();
        cases.sort_by(|a, b| a.name.cmp(&b.name));
        cases
    }

    pub fn load(dir: &Path) -> Case {
        let name = dir
            .file_name()
            .expect("a case directory has a name")
            .to_string_lossy()
            .into_owned();
        let json = dir.join("case.json");
        let spec = match fs::read(&json) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .unwrap_or_else(|err| panic!("parse {}: {err}", json.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Spec::default(),
            Err(err) => panic!("read {}: {err}", json.display()),
        };
        Case {
            name,
            dir: dir.to_path_buf(),
            spec,
        }
    }

    /// Copies the case into `to` (created) with modes fixed (0644 files,
    /// 0755 executables and directories), so what is built does not depend
    /// on the checkout's umask, and `{{BASE}}` in its Dockerfiles replaced
    /// by `base`: `COPY --from` takes no ARG, and the registry's port
    /// changes from run to run. Returns the staged case.
    pub fn stage(&self, to: &Path, base: &str) -> Staged {
        copy_tree(&self.dir, to);
        for name in ["Dockerfile"]
            .into_iter()
            .chain(self.spec.buildkit_dockerfile.as_deref())
        {
            let file = to.join(name);
            let text = fs::read_to_string(&file)
                .unwrap_or_else(|err| panic!("read {}: {err}", file.display()));
            fs::write(&file, text.replace("{{BASE}}", base))
                .unwrap_or_else(|err| panic!("write {}: {err}", file.display()));
        }
        let context = to.join("context");
        if !context.exists() {
            fs::create_dir(&context)
                .unwrap_or_else(|err| panic!("create {}: {err}", context.display()));
        }
        Staged {
            dir: to.to_path_buf(),
            context,
        }
    }
}

/// A case copied to where both builders (and the test user) can read it.
pub struct Staged {
    pub dir: PathBuf,
    pub context: PathBuf,
}

impl Staged {
    pub fn dockerfile(&self) -> PathBuf {
        self.dir.join("Dockerfile")
    }

    pub fn secret(&self, file: &str) -> PathBuf {
        self.dir.join("secrets").join(file)
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap_or_else(|err| panic!("create {}: {err}", to.display()));
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|err| panic!("chmod {}: {err}", to.display()));
    let mut entries: Vec<_> = fs::read_dir(from)
        .unwrap_or_else(|err| panic!("read {}: {err}", from.display()))
        .map(|entry| entry.expect("read a directory entry"))
        .collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let meta = fs::symlink_metadata(&src)
            .unwrap_or_else(|err| panic!("stat {}: {err}", src.display()));
        if meta.is_dir() {
            copy_tree(&src, &dst);
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&src)
                .unwrap_or_else(|err| panic!("readlink {}: {err}", src.display()));
            symlink(&target, &dst).unwrap_or_else(|err| panic!("symlink {}: {err}", dst.display()));
        } else {
            fs::copy(&src, &dst).unwrap_or_else(|err| panic!("copy {}: {err}", src.display()));
            let mode = if meta.permissions().mode() & 0o100 != 0 {
                0o755
            } else {
                0o644
            };
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode))
                .unwrap_or_else(|err| panic!("chmod {}: {err}", dst.display()));
        }
    }
}

//! RUN: the command line (SHELL, heredocs), its environment, its
//! `--mount`s (cache, secret, bind, tmpfs) and `--network`, run through
//! [`crate::build::step::run_layer`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::build::step::{self, StepInput};
use crate::exec::{self, MountKind, Network};
use crate::frontend::instructions::{
    parse_mount, CommandLine, Mount as MountFlag, MountType, Network as NetFlag, Run, Sharing,
};
use crate::layer::Mode;
use crate::plan::Step;
use crate::store::{Descriptor, Digest};

use super::error::{EngineError, StepRef};
use super::metadata::shell_of;
use super::state::{layer_entry, ImageState};
use super::Engine;

/// How long the rest of a command's output may take to arrive after the
/// sandbox ended (its processes die with it, asynchronously).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// Where a secret comes from (`--secret id=ID,src=FILE|env=VAR`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    File(PathBuf),
    Env(String),
}

/// What a RUN needs besides its command, kept alive for the step.
struct Prepared {
    mounts: Vec<exec::Mount>,
    extra_env: Vec<String>,
    /// Held for the step: `sharing=locked` cache locks.
    _locks: Vec<File>,
    /// Removed after the step: env-sourced secret files.
    _temp: Vec<tempfile::TempDir>,
}

/// The argv of a RUN: exec form as is; shell form through SHELL; a shell
/// form with heredocs gets their bodies appended as the shell would read them
/// (a lone `<<EOF` runs the body as the script).
pub fn argv(state: &ImageState, r: &Run) -> Vec<String> {
    let shell = shell_of(state);
    match &r.cmd {
        CommandLine::Exec(v) => v.clone(),
        CommandLine::Shell(cmd) => {
            let mut v = shell;
            if r.files.len() == 1 && is_lone_heredoc(cmd) {
                let body = &r.files[0].data;
                v.push(body.trim_end_matches('\n').to_string());
                return v;
            }
            let mut script = cmd.clone();
            for f in &r.files {
                script.push('\n');
                script.push_str(&f.data);
                if !f.data.ends_with('\n') {
                    script.push('\n');
                }
                script.push_str(&f.name);
            }
            v.push(script);
            v
        }
    }
}

fn is_lone_heredoc(cmd: &str) -> bool {
    let t = cmd.trim();
    t.starts_with("<<") && !t.contains(char::is_whitespace)
}

/// `created_by` of a RUN as BuildKit writes it (`|N K=V … ` when the stage
/// has ARGs).
pub fn created_by(argv: &[String], build_args: &[(String, String)]) -> String {
    let cmd = argv.join(" ");
    if build_args.is_empty() {
        format!("RUN {cmd} # buildkit")
    } else {
        let args: Vec<String> = build_args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("RUN |{} {} {cmd} # buildkit", args.len(), args.join(" "))
    }
}

/// The parsed `--mount` flags of `r` (canonical values from the plan).
pub fn mounts(r: &Run) -> Result<Vec<MountFlag>, String> {
    r.mounts
        .iter()
        .map(|m| parse_mount(m, &|w| Ok(w.to_string())))
        .collect()
}

/// Runs `r` over `state`; returns the layer it made, or an error naming the
/// step (a non-zero exit is [`EngineError::RunFailed`]).
pub fn run(
    eng: &Engine,
    state: &ImageState,
    step: &Step,
    r: &Run,
    sref: &StepRef,
) -> Result<(Descriptor, Digest), EngineError> {
    let argv = argv(state, r);
    eng.fetch_layers(state, sref)?;
    let prepared = prepare(eng, r, sref)?;
    let cfg = state.config.config.clone().unwrap_or_default();
    let mut env = cfg.env.clone().unwrap_or_default();
    let has = |env: &[String], k: &str| env.iter().any(|e| e.split('=').next() == Some(k));
    // ARG values are the step's environment unless ENV set the name.
    for (k, v) in step.build_args.iter().chain(&eng.plan.proxy_env) {
        if !has(&env, k) {
            env.push(format!("{k}={v}"));
        }
    }
    env.extend(prepared.extra_env.iter().cloned());
    let mut input = StepInput::new(sref.text.clone(), argv);
    input.env = env;
    input.user = cfg.user.clone().unwrap_or_default();
    input.cwd = cfg.working_dir.clone().unwrap_or_default();
    input.network = match r.network {
        Some(NetFlag::None) => Network::None,
        _ => Network::Host,
    };
    input.snapshotter = eng.req.snapshotter;
    input.isolation = eng.req.isolation;
    input.source_date_epoch = eng.req.source_date_epoch;
    input.mounts = prepared.mounts.clone();
    // Through kiln in every mode: shown as the mode says, and its end kept
    // to show again if the command fails.
    let reporter = eng.reporter.clone();
    let stream = exec::OutputStream::start(move |piece| reporter.output(piece))
        .map_err(sref.wrap("make a pipe for the command's output"))?;
    input.output = stream.output();
    let ran = step::run_layer(eng.store, &state.layer_sources(), &state.config, &input);
    if !stream.finish(OUTPUT_GRACE) {
        tracing::warn!(
            "{}: a process of the step still holds its output open",
            sref.at
        );
    }
    let out = ran.map_err(sref.wrap("run"))?;
    drop(prepared);
    if !out.status.success() {
        eng.reporter
            .command_failed(&sref.at, &sref.text, out.status.code());
        return Err(EngineError::RunFailed {
            at: sref.at.clone(),
            step: sref.text.clone(),
            code: out.status.code(),
        });
    }
    let layer = out
        .layer
        .ok_or_else(|| sref.fail("the step wrote no layer"))?;
    Ok(layer_entry(layer, state.docker))
}

fn prepare(eng: &Engine, r: &Run, sref: &StepRef) -> Result<Prepared, EngineError> {
    let mut p = Prepared {
        mounts: Vec::new(),
        extra_env: Vec::new(),
        _locks: Vec::new(),
        _temp: Vec::new(),
    };
    for m in mounts(r).map_err(|e| sref.fail(format!("--mount: {e}")))? {
        match m.kind {
            MountType::Cache => cache_mount(eng, &m, &mut p, sref)?,
            MountType::Secret => secret_mount(eng, &m, &mut p, sref)?,
            MountType::Bind => bind_mount(eng, &m, &mut p, sref)?,
            MountType::Tmpfs => p
                .mounts
                .push(exec::Mount::new(target(&m, sref)?, MountKind::Tmpfs)),
            MountType::Ssh => {
                return Err(sref.fail("--mount=type=ssh: SSH agent forwarding is not supported"))
            }
        }
    }
    Ok(p)
}

/// A mount's `uid=`/`gid=` (either alone means the other is 0).
fn owner(m: &MountFlag) -> Option<(u32, u32)> {
    (m.uid.is_some() || m.gid.is_some()).then(|| (m.uid.unwrap_or(0), m.gid.unwrap_or(0)))
}

fn target(m: &MountFlag, sref: &StepRef) -> Result<String, EngineError> {
    m.target
        .clone()
        .ok_or_else(|| sref.fail(format!("--mount=type={}: no target", m.kind.as_str())))
}

/// A persistent directory in the store, per id (default: the target).
fn cache_mount(
    eng: &Engine,
    m: &MountFlag,
    p: &mut Prepared,
    sref: &StepRef,
) -> Result<(), EngineError> {
    use std::os::unix::fs::PermissionsExt;
    let dest = target(m, sref)?;
    let id = m.id.clone().unwrap_or_else(|| dest.clone());
    let hex = crate::image::digest_of(id.as_bytes()).hex().to_string();
    let root = eng.store.root().join("cache").join("mounts");
    let dir = root.join(&hex);
    let io = |what: &str| sref.wrap::<std::io::Error>(format!("cache mount {id:?}: {what}"));
    if !dir.is_dir() {
        std::fs::create_dir_all(&root).map_err(io("create the cache directory"))?;
        let tmp = tempfile::Builder::new()
            .prefix(".new-")
            .tempdir_in(&root)
            .map_err(io("create the cache directory"))?;
        let mode = m.mode.unwrap_or(0o755);
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
            .map_err(io("set its mode"))?;
        // Contents a --cache-from brought for this id, fetched only now
        // that a RUN with the mount executes.
        match super::remote_cache::seed_mount(eng, &dir, tmp.path()) {
            Ok(true) => eng.reporter.note(&format!(
                "cache mount {id:?}: contents from the imported cache"
            )),
            Ok(false) => {}
            Err(e) => eng.reporter.note(&format!(
                "warning: cache mount {id:?}: imported contents not used: {e}"
            )),
        }
        // Another build may have made it meanwhile: theirs wins.
        let _ = std::fs::rename(tmp.keep(), &dir);
    }
    if m.sharing == Sharing::Locked {
        let lock = File::create(root.join(format!("{hex}.lock"))).map_err(io("lock"))?;
        lock.lock().map_err(io("lock"))?;
        p._locks.push(lock);
    }
    let mut mount = exec::Mount::new(
        dest,
        MountKind::Bind {
            source: dir,
            readonly: m.read_only,
        },
    );
    mount.owner = owner(m);
    mount.mode = m.mode;
    p.mounts.push(mount);
    Ok(())
}

/// A `--secret` as a read-only file (default `/run/secrets/ID`) and/or an
/// environment variable of the step; never part of the layer or the config.
fn secret_mount(
    eng: &Engine,
    m: &MountFlag,
    p: &mut Prepared,
    sref: &StepRef,
) -> Result<(), EngineError> {
    let id =
        m.id.clone()
            .or_else(|| {
                m.target
                    .as_deref()
                    .and_then(|t| Path::new(t).file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .ok_or_else(|| sref.fail("--mount=type=secret: no id"))?;
    let Some(source) = eng.req.secrets.get(&id) else {
        if m.required {
            return Err(sref.fail(format!(
                "secret {id:?} is required but was not given (--secret id={id},src=FILE)"
            )));
        }
        return Ok(());
    };
    // Always a private copy: the mount's mode and owner must not touch the
    // user's own file.
    let value: Vec<u8> = match source {
        SecretSource::File(f) => {
            std::fs::read(f).map_err(sref.wrap(format!("secret {id:?}: read {}", f.display())))?
        }
        SecretSource::Env(var) => {
            let v = std::env::var_os(var).ok_or_else(|| {
                sref.fail(format!(
                    "secret {id:?}: environment variable {var} is not set"
                ))
            })?;
            std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec()
        }
    };
    let dir = tempfile::Builder::new()
        .prefix("secret-")
        .tempdir_in(eng.store.root().join("tmp"))
        .map_err(sref.wrap(format!("secret {id:?}: make a temporary file")))?;
    let value_file = dir.path().join("value");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&value_file)
            .map_err(sref.wrap(format!("secret {id:?}: write a temporary file")))?;
        f.write_all(&value)
            .map_err(sref.wrap(format!("secret {id:?}: write a temporary file")))?;
    }
    p._temp.push(dir);
    if let Some(var) = &m.env {
        p.extra_env
            .push(format!("{var}={}", String::from_utf8_lossy(&value)));
        if m.target.is_none() {
            return Ok(());
        }
    }
    let dest = m
        .target
        .clone()
        .unwrap_or_else(|| format!("/run/secrets/{id}"));
    let mut mount = exec::Mount::new(
        dest,
        MountKind::Bind {
            source: value_file,
            readonly: true,
        },
    );
    mount.owner = owner(m);
    // BuildKit's default for secrets: read-only for the owner.
    mount.mode = Some(m.mode.unwrap_or(0o400));
    p.mounts.push(mount);
    Ok(())
}

/// A bind of the context, or of another stage's or image's tree (read-only
/// unless `rw`; writes then go to a private copy that is thrown away).
fn bind_mount(
    eng: &Engine,
    m: &MountFlag,
    p: &mut Prepared,
    sref: &StepRef,
) -> Result<(), EngineError> {
    let dest = target(m, sref)?;
    let root: PathBuf = match &m.from {
        None => eng
            .req
            .context
            .clone()
            .ok_or_else(|| sref.fail("--mount=type=bind: there is no build context"))?,
        Some(from) => {
            let src = eng.source_state(from, sref)?;
            eng.fetch_layers(&src, sref)?;
            let unpacked = eng
                .store
                .ensure_unpacked(&src.layer_sources(), Mode::Flatten)
                .map_err(sref.wrap(format!("--mount from={from}: unpack")))?;
            match unpacked.last() {
                Some(u) => u.rootfs.clone(),
                None => {
                    let empty = tempfile::Builder::new()
                        .prefix("empty-")
                        .tempdir_in(eng.store.root().join("tmp"))
                        .map_err(sref.wrap("--mount: make an empty directory"))?;
                    let path = empty.path().to_path_buf();
                    p._temp.push(empty);
                    path
                }
            }
        }
    };
    let rel = m.source.clone().unwrap_or_default();
    let source = resolve_in(&root, &rel)
        .ok_or_else(|| sref.fail(format!("--mount source {rel:?} escapes its root")))?;
    if !source.exists() {
        return Err(sref.fail(format!("--mount source {rel:?} not found")));
    }
    let source = if m.read_only {
        source
    } else {
        // rw: a private copy, so the step cannot change the context or a
        // shared tree.
        let tmp = tempfile::Builder::new()
            .prefix("bind-")
            .tempdir_in(eng.store.root().join("tmp"))
            .map_err(sref.wrap("--mount rw: make a copy"))?;
        let copy = tmp.path().join("src");
        if source.is_dir() {
            std::fs::create_dir(&copy).map_err(sref.wrap("--mount rw: make a copy"))?;
            crate::snapshot::copy_tree(&source, &copy)
                .map_err(sref.wrap(format!("--mount rw: copy {rel:?}")))?;
        } else {
            std::fs::copy(&source, &copy)
                .map_err(sref.wrap(format!("--mount rw: copy {rel:?}")))?;
        }
        p._temp.push(tmp);
        copy
    };
    p.mounts.push(exec::Mount::new(
        dest,
        MountKind::Bind {
            source,
            readonly: m.read_only,
        },
    ));
    Ok(())
}

/// `rel` inside `root`, lexically (no `..` above the root).
fn resolve_in(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    let mut depth = 0usize;
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth = depth.checked_sub(1)?;
                out.pop();
            }
            c => {
                depth += 1;
                out.push(c);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_by_like_buildkit() {
        let argv = vec!["/bin/sh".to_string(), "-c".into(), "echo hi".into()];
        assert_eq!(created_by(&argv, &[]), "RUN /bin/sh -c echo hi # buildkit");
        assert_eq!(
            created_by(&argv, &[("A".into(), "1".into()), ("B".into(), "2".into())]),
            "RUN |2 A=1 B=2 /bin/sh -c echo hi # buildkit"
        );
    }

    #[test]
    fn bind_sources_stay_inside() {
        assert!(resolve_in(Path::new("/c"), "../x").is_none());
        assert_eq!(
            resolve_in(Path::new("/c"), "a/../b"),
            Some(PathBuf::from("/c/b"))
        );
    }
}

//! Which snapshotter works here: each overlay is probed once per process by
//! mounting it for real in a throwaway sandbox (same code path, same
//! namespaces as a step), so the answer is the kernel's, not a guess from
//! version numbers.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use super::{snapshotter, SnapshotError, SnapshotterKind};
use crate::exec::{ExecError, Executor, IdMapChoice, Isolation, ProcessSpec, Sandbox, Stage};

/// Probe answers of this process: (kind, isolation) → Ok or the refusal.
type Cache = Mutex<HashMap<(SnapshotterKind, String), Result<(), String>>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Picks the snapshotter: `requested` when it works here (else
/// [`SnapshotError::Unavailable`] with the kernel's answer), otherwise the
/// first that works of kernel overlay, fuse-overlayfs, walk. Returns the
/// kind and why it was chosen (also logged at debug level). Probes are
/// cached per process.
pub fn choose(
    requested: Option<SnapshotterKind>,
) -> Result<(SnapshotterKind, String), SnapshotError> {
    choose_for(requested, Isolation::Auto)
}

/// [`choose`] for a step that will run with `isolation` (the probe mounts
/// in a sandbox of that isolation).
pub fn choose_for(
    requested: Option<SnapshotterKind>,
    isolation: Isolation,
) -> Result<(SnapshotterKind, String), SnapshotError> {
    if let Some(kind) = requested {
        return match probe(kind, isolation) {
            Ok(()) => {
                let why = format!("{kind} requested, and it works here");
                tracing::debug!(snapshotter = %kind, "{why}");
                Ok((kind, why))
            }
            Err(why) => Err(SnapshotError::Unavailable { kind, why }),
        };
    }
    let mut refused = Vec::new();
    for kind in SnapshotterKind::ALL {
        match probe(kind, isolation) {
            Ok(()) => {
                let why = if refused.is_empty() {
                    format!("{kind}: the first choice, and it works here")
                } else {
                    format!("{kind}: {}", refused.join("; "))
                };
                tracing::debug!(snapshotter = %kind, "chose snapshotter {why}");
                return Ok((kind, why));
            }
            Err(why) => refused.push(format!("{kind} refused ({why})")),
        }
    }
    // Unreachable in practice: the walk needs nothing from the kernel.
    Err(SnapshotError::Unavailable {
        kind: SnapshotterKind::Walk,
        why: refused.join("; "),
    })
}

/// Whether `kind` works here under `isolation` (cached per process).
pub fn probe(kind: SnapshotterKind, isolation: Isolation) -> Result<(), String> {
    if let Ok(map) = cache().lock() {
        if let Some(answer) = map.get(&(kind, isolation.to_string())) {
            return answer.clone();
        }
    }
    let answer = match kind {
        SnapshotterKind::Walk => Ok(()),
        _ => probe_mount(kind, isolation),
    };
    if let Ok(mut map) = cache().lock() {
        map.insert((kind, isolation.to_string()), answer.clone());
    }
    answer
}

/// Mounts a one-layer snapshot of `kind` in a sandbox that then tries to
/// run a program that does not exist: a failure at the mount stage is the
/// refusal; getting as far as exec means the mount worked.
fn probe_mount(kind: SnapshotterKind, isolation: Isolation) -> Result<(), String> {
    if kind == SnapshotterKind::FuseOverlay {
        let program = super::overlay::FuseOverlay::default().program();
        if !program.is_file() {
            return Err(format!(
                "{} not found (Debian package fuse-overlayfs)",
                program.display()
            ));
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("kiln-snapshot-probe-")
        .tempdir()
        .map_err(|e| format!("create a probe directory: {e}"))?;
    let lower = dir.path().join("lower");
    let work = dir.path().join("step");
    for d in [&lower, &work] {
        std::fs::create_dir(d).map_err(|e| format!("create {}: {e}", d.display()))?;
    }
    let snap = snapshotter(kind)
        .prepare(&[lower], &work)
        .map_err(|e| e.to_string())?;
    let mut spec = ProcessSpec::new(vec!["/kiln-snapshot-probe".into()], PathBuf::new());
    spec.rootfs = snap.rootfs();
    spec.idmap = IdMapChoice::Single;
    let result = Sandbox::new(isolation).run(&spec);
    let answer = match result {
        Ok(_) => Ok(()),
        Err(ExecError::Setup(f)) if !matches!(f.stage, Stage::Mount | Stage::Pivot) => Ok(()),
        Err(e) => Err(error_chain(&e)),
    };
    // overlayfs leaves a mode-0 `work/work` that TempDir's drop cannot remove.
    if let Err(e) = super::remove_work(dir.path()) {
        tracing::debug!("remove snapshotter probe directory: {e}");
    }
    if let Err(why) = &answer {
        tracing::debug!(snapshotter = %kind, "snapshotter probe refused: {why}");
    }
    answer
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

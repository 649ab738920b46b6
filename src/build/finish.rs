//! After a step's command: list what it changed, write that as a layer,
//! remove the step directory.
//!
//! A rootless step with subordinate ids leaves files the caller cannot
//! read as itself: apt's `_apt` (a subordinate uid on the host) makes 0700
//! directories in the upper dir or the walked tree. Each part is tried in
//! process first; what is refused (EACCES) after such a step is redone in
//! kiln's user-namespace helper (`exec::UsernsHelper`), with the step's own
//! id map, where kiln is root over every id the step could use and `stat`
//! shows container ids directly (so the layer writer's id mapping is the
//! identity there). The helper starts only then: ordinary steps pay nothing.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::exec::{self, IdMap, UsernsError, UsernsHelper};
use crate::layer::{self, Compression, IdMapping, WriteOptions, WrittenLayer};
use crate::snapshot::{self, Snapshot};
use crate::store::{Digest, Store};

/// The layer a step wrote, and what it took.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Committed {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    pub media_type: String,
    /// See `WrittenLayer::listing`; not sent from the helper (its layers
    /// have owners other than root, so they are never plain).
    #[serde(skip)]
    pub listing: Option<std::sync::Arc<[layer::Listed]>>,
    pub changed_paths: usize,
    pub changes: Duration,
    pub write: Duration,
}

impl Committed {
    pub fn layer(&self) -> WrittenLayer {
        WrittenLayer {
            digest: self.digest.clone(),
            diff_id: self.diff_id.clone(),
            size: self.size,
            media_type: self.media_type.clone(),
            listing: self.listing.clone(),
        }
    }
}

/// What failed, where, with which errno: readable on either side of the
/// helper's pipe.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error(
    "{what}{}: {message}",
    if *in_namespace { " (in a user namespace with the step's id map)" } else { "" }
)]
pub struct Failure {
    /// The phase (`list the changes`, `write the layer`, …).
    pub what: String,
    /// The error and its causes, `: `-joined (they name the path).
    pub message: String,
    /// The kernel's errno, when a system call failed.
    pub errno: Option<i32>,
    /// Whether it happened in the user-namespace helper.
    pub in_namespace: bool,
}

impl Failure {
    fn new(what: &str, err: &(dyn std::error::Error + 'static)) -> Failure {
        let mut parts = Vec::new();
        let mut errno = None;
        let mut cause = Some(err);
        while let Some(c) = cause {
            parts.push(c.to_string());
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                errno = errno.or(io.raw_os_error());
            }
            cause = c.source();
        }
        let message = parts.join(": ");
        Failure {
            what: what.to_string(),
            message,
            errno,
            in_namespace: false,
        }
    }
}

/// Parent → helper.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op")]
enum Request {
    /// List `snapshot`'s changes and write them as a layer into the store.
    CommitLayer(Box<CommitTask>),
    /// Remove a step directory.
    Remove { path: PathBuf },
}

/// What kiln itself made in the step's tree, which stays out of the layer.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct KilnMade {
    /// Mount points the sandbox created (`RunOutcome::created`, filtered).
    pub exclude: Vec<String>,
    /// The owner fixes asked for (see `lower_owners`)…
    pub fixes: Vec<exec::OwnerFix>,
    /// …and those the sandbox applied (`RunOutcome::fixed`).
    pub applied: Vec<exec::AppliedFix>,
}

#[derive(Debug, Serialize, Deserialize)]
struct CommitTask {
    store: PathBuf,
    snapshot: Snapshot,
    made: KilnMade,
    /// The lowers' ownership sidecars, top-most first.
    sidecars: Vec<PathBuf>,
    source_date_epoch: Option<i64>,
}

/// Helper → parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
enum Response {
    Committed(Committed),
    Removed { failed: Vec<(PathBuf, String)> },
    Failed(Failure),
}

/// Entry point of `kiln __userns` (see `exec::UsernsHelper`); returns the
/// exit code. Must run before any thread starts.
pub fn helper_main() -> i32 {
    exec::userns_helper_main(|request: Request| match request {
        Request::CommitLayer(task) => {
            let task = *task;
            let store = match Store::open(&task.store) {
                Ok(s) => s,
                Err(e) => return Response::Failed(Failure::new("open the store", &e)),
            };
            // stat shows container ids here: nothing to translate.
            match commit_layer(
                &store,
                &task.snapshot,
                &task.made,
                &task.sidecars,
                task.source_date_epoch,
                IdMapping::identity(),
            ) {
                Ok(c) => Response::Committed(c),
                Err(f) => Response::Failed(f),
            }
        }
        Request::Remove { path } => {
            let mut failed = Vec::new();
            remove_tree(&path, &mut failed);
            Response::Removed {
                failed: failed
                    .into_iter()
                    .map(|(p, e)| (p, e.to_string()))
                    .collect(),
            }
        }
    })
}

/// Whether the helper can help: only a rootless step with subordinate ids
/// can leave files that the caller cannot read but root of a namespace
/// with the step's map can.
fn needs_helper(map: &IdMap) -> bool {
    matches!(map, IdMap::Subordinate { .. }) && crate::sys::proc::effective_ids().0 != 0
}

/// Lists the changes of `snap` and writes them as a layer: in this
/// process, and again in the user-namespace helper if that was refused
/// (EACCES) after a step with subordinate ids. Trying here first keeps the
/// helper's cost (~10 ms, mostly newuidmap and newgidmap) off the steps
/// that do not need it; a refused attempt wrote nothing (temp files go).
pub(super) fn layer(
    store: &Store,
    work: &mut WorkDir,
    mut snap: Snapshot,
    made: KilnMade,
    sidecars: &[PathBuf],
    source_date_epoch: Option<i64>,
    map: &IdMap,
) -> Result<Committed, Failure> {
    let t = Instant::now();
    let ids = IdMapping::from_exec(map);
    let refused = match commit_layer(
        store,
        &snap,
        &made,
        sidecars,
        source_date_epoch,
        ids.clone(),
    ) {
        Ok(c) => return Ok(c),
        Err(f) if f.errno == Some(libc::EACCES) => f,
        Err(f) => return Err(f),
    };
    work.ran_with(map);
    let helper = match work.helper() {
        Some(h) => h?,
        None => return Err(refused),
    };
    tracing::debug!(error = %refused, "listing or writing refused; again in the user-namespace helper");
    // The walk's before-index holds owners as the caller saw them; the
    // helper sees the same files through the step's map.
    snap.map_owners(
        |u| ids.uid(u).unwrap_or(layer::OVERFLOW_ID),
        |g| ids.gid(g).unwrap_or(layer::OVERFLOW_ID),
    );
    let store_root = std::path::absolute(store.root())
        .map_err(|e| Failure::new("resolve the store path", &e))?;
    let task = CommitTask {
        store: store_root,
        snapshot: snap,
        made,
        sidecars: sidecars.to_vec(),
        source_date_epoch,
    };
    let helper_failed = |e: UsernsError| {
        let mut f = Failure::new("list the changes and write the layer", &e);
        f.in_namespace = true;
        f
    };
    let wasted = t.elapsed();
    match helper
        .call::<_, Response>(&Request::CommitLayer(Box::new(task)))
        .map_err(helper_failed)?
    {
        Response::Committed(mut c) => {
            // The refused attempt and the helper's start count as listing.
            c.changes += wasted;
            Ok(c)
        }
        Response::Failed(mut f) => {
            f.in_namespace = true;
            Err(f)
        }
        Response::Removed { .. } => Err(Failure {
            what: "list the changes and write the layer".into(),
            message: "the helper answered another request".into(),
            errno: None,
            in_namespace: true,
        }),
    }
}

/// The change listing and the layer, in this process: `ids` reads the
/// tree's owners as container ids.
fn commit_layer(
    store: &Store,
    snap: &Snapshot,
    made: &KilnMade,
    sidecars: &[PathBuf],
    source_date_epoch: Option<i64>,
    ids: IdMapping,
) -> Result<Committed, Failure> {
    let t = Instant::now();
    let changes = {
        let _s = tracing::debug_span!("changes").entered();
        let mut list = snap
            .changes(&made.exclude)
            .map_err(|e| Failure::new("list the changes", &e))?;
        super::lower_owners::drop_untouched(&mut list, &made.fixes, &made.applied, &ids);
        list
    };
    let changes_took = t.elapsed();
    let t = Instant::now();
    let _s = tracing::debug_span!("write", paths = changes.changes.len()).entered();
    let recorded =
        load_recorded(sidecars, &changes).map_err(|e| Failure::new("write the layer", &e))?;
    let opts = WriteOptions {
        compression: Compression::Gzip,
        source_date_epoch,
        ids,
        recorded,
    };
    let written = layer::write_layer(store, &changes, &opts)
        .map_err(|e| Failure::new("write the layer", &e))?;
    Ok(Committed {
        digest: written.digest,
        diff_id: written.diff_id,
        size: written.size,
        media_type: written.media_type,
        listing: written.listing,
        changed_paths: changes.changes.len(),
        changes: changes_took,
        write: t.elapsed(),
    })
}

/// The lower layers' ownership records (top-most first) that the writer
/// can consult: those of the listed paths and their ancestors (the only
/// paths a layer emits). A sidecar of an unprivileged unpack holds a record
/// for nearly every path (tens of thousands of lines for a big base); parsing
/// them all cost more than the rest of a small step, so each line's path is
/// read first and only the wanted lines are parsed.
fn load_recorded(
    sidecars: &[PathBuf],
    changes: &snapshot::ChangeList,
) -> Result<Vec<layer::Metadata>, layer::LayerError> {
    use std::io::BufRead;
    let mut wanted: HashSet<&str> = HashSet::new();
    for c in &changes.changes {
        if c.kind == snapshot::ChangeKind::Delete {
            continue;
        }
        let mut p = c.path.as_str();
        while wanted.insert(p) {
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => break,
            }
        }
    }
    let mut out = Vec::with_capacity(sidecars.len());
    for path in sidecars {
        let err = |what: &str, source: std::io::Error| layer::LayerError::Metadata {
            path: path.clone(),
            what: what.to_string(),
            source,
        };
        let mut meta = layer::Metadata::default();
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                out.push(meta);
                continue;
            }
            Err(e) => return Err(err("open", e)),
        };
        for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| err("read", e))?;
            // `{"path":"P",…}` (serde writes `path` first); a path with
            // escapes, or any other shape, is parsed in full.
            let quick = line
                .strip_prefix("{\"path\":\"")
                .and_then(|rest| rest.split_once('"'))
                .map(|(p, _)| p)
                .filter(|p| !p.contains('\\'));
            if quick.is_some_and(|p| !wanted.contains(p)) || line.trim().is_empty() {
                continue;
            }
            let rec: layer::Record = serde_json::from_str(&line)
                .map_err(|e| err(&format!("parse line {}", n + 1), std::io::Error::other(e)))?;
            if wanted.contains(rec.path.as_str()) {
                meta.insert(rec);
            }
        }
        out.push(meta);
    }
    Ok(out)
}

/// The step's private directory under the store's `tmp/` (same filesystem
/// as the unpacked layers, as overlayfs wants), removed on drop (by the
/// user-namespace helper when the caller cannot).
pub(super) struct WorkDir {
    path: PathBuf,
    /// The id map the step's command ran with, once it ran.
    map: Option<IdMap>,
    helper: Option<UsernsHelper>,
}

impl WorkDir {
    pub fn new(store: &Store) -> std::io::Result<WorkDir> {
        let parent = store.root().join("tmp");
        std::fs::create_dir_all(&parent)?;
        let dir = tempfile::Builder::new()
            .prefix("step-")
            .tempdir_in(parent)?;
        Ok(WorkDir {
            path: dir.keep(),
            map: None,
            helper: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the id map the step's command ran with: it decides whether
    /// the user-namespace helper can be used.
    pub fn ran_with(&mut self, map: &IdMap) {
        self.map = Some(map.clone());
    }

    /// The user-namespace helper for the step's map, started on first use;
    /// `None` when the map gives no reason for one.
    fn helper(&mut self) -> Option<Result<&mut UsernsHelper, Failure>> {
        if self.helper.is_none() {
            let map = self.map.as_ref().filter(|m| needs_helper(m))?;
            let t = Instant::now();
            let (uid, gid) = crate::sys::proc::effective_ids();
            match UsernsHelper::start(Path::new("/proc/self/exe"), map, uid, gid) {
                Ok(h) => {
                    tracing::debug!(took = ?t.elapsed(), "user-namespace helper started");
                    self.helper = Some(h);
                }
                Err(e) => return Some(Err(Failure::new("start the user-namespace helper", &e))),
            }
        }
        self.helper.as_mut().map(Ok)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let t = Instant::now();
        // Once there is a helper, the step left files only it can read.
        let mut failed: Vec<(PathBuf, String)> = Vec::new();
        if self.helper.is_none() {
            let mut errs = Vec::new();
            remove_tree(&self.path, &mut errs);
            failed = errs.into_iter().map(|(p, e)| (p, e.to_string())).collect();
        }
        // Typically files a step made as another user of a subordinate
        // range, in a directory that user did not let us write.
        if self.helper.is_some() || !failed.is_empty() {
            let path = self.path.clone();
            match self.helper() {
                Some(Ok(helper)) => match helper.call::<_, Response>(&Request::Remove { path }) {
                    Ok(Response::Removed { failed: f }) => failed = f,
                    answer => tracing::warn!(
                        ?answer, dir = %self.path.display(),
                        "the user-namespace helper did not remove the step directory"
                    ),
                },
                Some(Err(e)) => tracing::warn!(error = %e, "no user-namespace helper"),
                None => {}
            }
        }
        tracing::debug!(took = ?t.elapsed(), helper = self.helper.is_some(), "step directory removed");
        if let Some((path, e)) = failed.first() {
            tracing::warn!(
                dir = %self.path.display(), path = %path.display(), error = %e, more = failed.len() - 1,
                "could not remove all of the step directory"
            );
        }
    }
}

/// Removes `path` without following symlinks, making our own directories
/// writable and searchable first (overlayfs leaves its `work/work` at mode
/// 0, a step may leave 0500 directories). Keeps going past failures.
fn remove_tree(path: &Path, failed: &mut Vec<(PathBuf, std::io::Error)>) {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => return failed.push((path.to_path_buf(), e)),
    };
    if !meta.is_dir() {
        if let Err(e) = std::fs::remove_file(path) {
            failed.push((path.to_path_buf(), e));
        }
        return;
    }
    if meta.permissions().mode() & 0o700 != 0o700 {
        // Fails for a directory we do not own; read_dir then reports it.
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
    }
    match std::fs::read_dir(path) {
        Ok(entries) => {
            for entry in entries.flatten() {
                remove_tree(&entry.path(), failed);
            }
        }
        Err(e) => return failed.push((path.to_path_buf(), e)),
    }
    if let Err(e) = std::fs::remove_dir(path) {
        failed.push((path.to_path_buf(), e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_names_the_path_and_the_errno() {
        let err = snapshot::SnapshotError::Io {
            action: "read directory",
            path: PathBuf::from("/s/upper/var/lib/apt/lists/partial"),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        };
        let mut f = Failure::new("list the changes", &err);
        assert_eq!(f.errno, Some(libc::EACCES));
        assert!(
            f.message.contains("/s/upper/var/lib/apt/lists/partial"),
            "{f}"
        );
        f.in_namespace = true;
        let back: Failure = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        let text = back.to_string();
        assert!(
            text.starts_with("list the changes (in a user namespace"),
            "{text}"
        );
        assert!(text.contains("Permission denied"), "{text}");
    }
}

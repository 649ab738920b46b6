//! One RUN step, start to finish: unpack the image's layers (once per chain
//! id, shared), prepare a snapshot over them, run the command in the
//! sandbox, list what it changed, write that as a layer into the store, and
//! (when asked) commit an image with that layer on top.
//!
//! Each phase is timed and traced (`step` span with `prepare`, `run`,
//! `changes`, `write` children) so the per-step overhead is measurable.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::finish::{self, WorkDir};
use crate::exec::{
    self, Executor, IdMap, IdMapChoice, Isolation, Network, ProcessSpec, Sandbox, Stdin,
};
use crate::image::{self, media_types, History, ImageConfig, Manifest};
use crate::layer::{self, WrittenLayer};
use crate::snapshot::{self, SnapshotterKind};
use crate::store::{Descriptor, Digest, LayerSource, Store};
use crate::transport;

/// What to run, over which image, and how.
#[derive(Debug, Clone)]
pub struct StepInput {
    /// A store name or image ID (prefix).
    pub image: String,
    /// The command, exactly (a shell form RUN is `["/bin/sh", "-c", CMD]`).
    pub argv: Vec<String>,
    /// `K=V` entries added to (and overriding) the image's `Env`.
    pub env: Vec<String>,
    /// USER for the step; empty means the image's `User` (else root).
    pub user: String,
    /// Working directory; empty means the image's `WorkingDir` (else `/`).
    pub cwd: String,
    pub network: Network,
    /// UTS hostname; empty means `kiln`.
    pub hostname: String,
    /// `None`: the automatic choice (see `snapshot::choose`).
    pub snapshotter: Option<SnapshotterKind>,
    pub isolation: Isolation,
    pub idmap: IdMapChoice,
    /// Clamp layer times to this and date the new config with it, so the
    /// same inputs give the same digests.
    pub source_date_epoch: Option<i64>,
    /// Name the committed image this (it is committed, unnamed, anyway).
    pub tag: Option<String>,
    /// More mounts for the command (RUN --mount): never in the layer.
    pub mounts: Vec<exec::Mount>,
    /// Run without keeping anything (`kiln run`): no layer is written and
    /// the command gets kiln's stdin.
    pub discard: bool,
    /// Where the command's output goes.
    pub output: exec::Output,
}

impl StepInput {
    /// A step running `argv` over `image` with every other choice automatic.
    pub fn new(image: impl Into<String>, argv: Vec<String>) -> StepInput {
        StepInput {
            image: image.into(),
            argv,
            env: Vec::new(),
            user: String::new(),
            cwd: String::new(),
            network: Network::Host,
            hostname: String::new(),
            snapshotter: None,
            isolation: Isolation::Auto,
            idmap: IdMapChoice::Auto,
            source_date_epoch: None,
            tag: None,
            mounts: Vec::new(),
            discard: false,
            output: exec::Output::Inherit,
        }
    }
}

/// How long each phase took.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepTimings {
    /// Finding the image, unpacking missing layers, preparing the snapshot.
    pub prepare: Duration,
    /// The sandboxed command, setup and teardown included.
    pub run: Duration,
    /// Listing what the step changed.
    pub changes: Duration,
    /// Writing the layer, the config and the manifest, naming the image.
    pub write: Duration,
    /// The whole step.
    pub total: Duration,
}

/// What a step did.
#[derive(Debug, Clone)]
pub struct StepOutput {
    pub status: exec::ExitStatus,
    /// The layer, when the command succeeded.
    pub layer: Option<WrittenLayer>,
    /// The new image's manifest digest, when the command succeeded.
    pub image: Option<Digest>,
    pub snapshotter: SnapshotterKind,
    /// Why that snapshotter was chosen (for a debug line).
    pub snapshotter_reason: String,
    /// The tier the step ran in.
    pub isolation: Isolation,
    pub idmap: IdMap,
    /// How many paths the change list held.
    pub changed_paths: usize,
    pub timings: StepTimings,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("step {argv:?}: image {image}: {source}")]
    Image {
        image: String,
        argv: Vec<String>,
        #[source]
        source: Box<transport::TransportError>,
    },
    #[error("step {argv:?}: unpack the layers of {image}: {source}")]
    Unpack {
        image: String,
        argv: Vec<String>,
        #[source]
        source: Box<crate::store::UnpackError>,
    },
    #[error("step {argv:?}: {what}: {source}")]
    Snapshot {
        argv: Vec<String>,
        what: &'static str,
        #[source]
        source: snapshot::SnapshotError,
    },
    #[error("step {argv:?}: {source}")]
    Exec {
        argv: Vec<String>,
        #[source]
        source: exec::ExecError,
    },
    #[error("step {argv:?}: write the layer: {source}")]
    Layer {
        argv: Vec<String>,
        #[source]
        source: layer::LayerError,
    },
    #[error("step {argv:?}: {what}: {reason}")]
    Commit {
        argv: Vec<String>,
        what: String,
        reason: String,
    },
    /// Listing the changes or writing the layer failed (`source` says
    /// whether in the user-namespace helper, what, where, errno).
    #[error("step {argv:?}: {source}")]
    Finish {
        argv: Vec<String>,
        #[source]
        source: finish::Failure,
    },
    #[error("step {argv:?}: {what}: {source}")]
    Io {
        argv: Vec<String>,
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs one step over `input.image` in `store`. A command that runs and
/// fails is `Ok` with its status and no layer; an error means the step could
/// not be carried out (the message names the step's command). Not
/// idempotent (the command runs each time); the layer and image blobs are
/// content-addressed, so a repeated deterministic step stores nothing new.
pub fn run_step(store: &Store, input: &StepInput) -> Result<StepOutput, BuildError> {
    let argv = &input.argv;
    let started = Instant::now();
    let (_, entry) =
        transport::find_image(store, &input.image).map_err(|source| BuildError::Image {
            image: input.image.clone(),
            argv: argv.clone(),
            source: Box::new(source),
        })?;
    let base = entry.image;
    tracing::debug!(elapsed = ?started.elapsed(), "image found");
    let layers = layer_sources(&base).map_err(|reason| BuildError::Commit {
        argv: argv.clone(),
        what: format!("read image {}", input.image),
        reason,
    })?;
    let mut out = run_layer(store, &layers, &base.config, input)?;
    if let Some(written) = &out.layer {
        let t = Instant::now();
        let _s = tracing::debug_span!("commit").entered();
        let manifest =
            commit(store, &base, written, input).map_err(|reason| BuildError::Commit {
                argv: argv.clone(),
                what: "commit the image".into(),
                reason,
            })?;
        out.image = Some(manifest);
        out.timings.write += t.elapsed();
    }
    out.timings.total = started.elapsed();
    Ok(out)
}

/// The work of [`run_step`] without the commit: runs `input.argv` over the
/// image whose layers are `layers` (bottom-most first) and whose config is
/// `config` (for its Env, User and WorkingDir), and writes the layer of what
/// it changed (`out.image` stays `None`). `input.image` only names the image
/// in messages.
pub fn run_layer(
    store: &Store,
    layers: &[LayerSource],
    config: &ImageConfig,
    input: &StepInput,
) -> Result<StepOutput, BuildError> {
    let argv = &input.argv;
    let span = tracing::info_span!("step", ?argv, image = %input.image);
    let _guard = span.enter();
    let started = Instant::now();
    let mut timings = StepTimings::default();

    // Prepare: unpacked lowers → snapshot.
    let t = Instant::now();
    let prepare_span = tracing::debug_span!("prepare").entered();
    // The lowers' whiteout xattrs must be the namespace the sandbox mounts
    // overlay with: `userxattr` in a user namespace, `trusted.*` in chroot.
    let tier = match input.isolation {
        Isolation::Auto => Isolation::probe().map_err(|source| BuildError::Exec {
            argv: argv.clone(),
            source,
        })?,
        explicit => explicit,
    };
    let mode = layer::Mode::OverlayLower(tier.overlay_xattrs());
    let unpacked = store
        .ensure_unpacked(layers, mode)
        .map_err(|source| BuildError::Unpack {
            image: input.image.clone(),
            argv: argv.clone(),
            source: Box::new(source),
        })?;
    // Top-most first, as overlayfs stacks them.
    let lowers: Vec<PathBuf> = unpacked.iter().rev().map(|u| u.rootfs.clone()).collect();
    let sidecars: Vec<PathBuf> = unpacked.iter().rev().map(|u| u.metadata.clone()).collect();
    tracing::debug!(layers = unpacked.len(), elapsed = ?t.elapsed(), "layers unpacked");
    // An explicit choice is not probed (a probe is a whole sandbox start,
    // ~100 ms): if the kernel refuses it, the step's own mount says so.
    let (kind, why) = match input.snapshotter {
        Some(kind) => (kind, format!("{kind} requested (not probed)")),
        None => snapshot::choose_for(None, tier).map_err(|source| BuildError::Snapshot {
            argv: argv.clone(),
            what: "choose a snapshotter",
            source,
        })?,
    };
    tracing::debug!(snapshotter = %kind, why = %why, "snapshotter chosen");
    // Say which snapshotter once per process when it is a fallback, or when
    // the id map is single (no newuidmap: a bare container), so that a run
    // without helper programs names both of its choices.
    let single_map = tier != Isolation::Chroot
        && exec::plan_idmap(input.idmap, crate::sys::proc::effective_ids().0)
            == exec::IdMap::Single;
    if input.snapshotter.is_none() && (kind != SnapshotterKind::ALL[0] || single_map) {
        static NOTED: std::sync::Once = std::sync::Once::new();
        NOTED.call_once(|| tracing::warn!("RUN steps use the snapshotter {why}"));
    }
    let mut work = WorkDir::new(store).map_err(|source| BuildError::Io {
        argv: argv.clone(),
        what: format!(
            "create a step directory in {}",
            store.root().join("tmp").display()
        ),
        source,
    })?;
    let snap = snapshot::snapshotter(kind)
        .prepare(&lowers, work.path())
        .map_err(|source| BuildError::Snapshot {
            argv: argv.clone(),
            what: "prepare the snapshot",
            source,
        })?;
    // The walk's cached tree is reverted by the caller, who could not
    // undo a chown to another id: its steps see recorded owners as root's.
    let fixes = if kind == SnapshotterKind::Walk {
        Vec::new()
    } else {
        super::lower_owners::fixes(&lowers, &sidecars).map_err(|source| BuildError::Io {
            argv: argv.clone(),
            what: "read the owners the lower layers record".into(),
            source: std::io::Error::other(source),
        })?
    };
    drop(prepare_span);
    timings.prepare = t.elapsed();

    // Run.
    let t = Instant::now();
    let mut spec = process_spec(input, config, snap.rootfs());
    spec.owner_fixes = fixes;
    let outcome = {
        let _s = tracing::debug_span!("run").entered();
        Sandbox::new(input.isolation)
            .stdin(if input.discard {
                Stdin::Inherit
            } else {
                Stdin::Null
            })
            .output(input.output)
            .run(&spec)
            .map_err(|source| {
                // A setup that failed after the owner fixes may have left
                // copies owned by other ids: removing them needs the map.
                let uid = crate::sys::proc::effective_ids().0;
                work.ran_with(&exec::plan_idmap(input.idmap, uid));
                BuildError::Exec {
                    argv: argv.clone(),
                    source,
                }
            })?
    };
    timings.run = t.elapsed();
    let mut out = StepOutput {
        status: outcome.status,
        layer: None,
        image: None,
        snapshotter: kind,
        snapshotter_reason: why,
        isolation: outcome.isolation,
        idmap: outcome.idmap.clone(),
        changed_paths: 0,
        timings,
    };
    if input.discard || !outcome.status.success() {
        tracing::info!(status = outcome.status.code(), "step command ended");
        work.ran_with(&outcome.idmap);
        out.timings.total = started.elapsed();
        return Ok(out);
    }

    // Changes and the layer (in a user namespace when the step's files are
    // unreadable to us, see `finish`), then config, manifest and name.
    work.ran_with(&outcome.idmap);
    let finish_failed = |f: finish::Failure| BuildError::Finish {
        argv: argv.clone(),
        source: f,
    };
    // Kernel overlay: the upper dir may become the new layer's lower (store::adopt).
    let upper = (snap.kind() == SnapshotterKind::Overlay).then(|| snap.source().to_path_buf());
    let committed = finish::layer(
        store,
        &mut work,
        snap,
        finish::KilnMade {
            exclude: excluded_mount_points(&outcome.created, &input.mounts),
            fixes: spec.owner_fixes,
            applied: outcome.fixed,
        },
        &sidecars,
        input.source_date_epoch,
        &outcome.idmap,
    )
    .map_err(finish_failed)?;
    out.changed_paths = committed.changed_paths;
    out.timings.changes = committed.changes;
    out.layer = Some(committed.layer());
    // Only a plain layer's upper dir can equal its extraction; the writer's
    // listing of it saves reading the layer back.
    if let (Some(upper), Some(listing)) = (upper, &committed.listing) {
        let layer = LayerSource {
            blob: committed.digest.clone(),
            diff_id: committed.diff_id.clone(),
        };
        store.offer_upper(layers, &layer, listing, mode, &upper);
    }
    out.timings.write = committed.write;
    // `work` is removed on return (by the helper when there is one).
    out.timings.total = started.elapsed();
    tracing::debug!(timings = ?out.timings, "step done");
    Ok(out)
}

/// The mount points the sandbox created that stay out of the layer: all of
/// them except, as BuildKit keeps them, the directories a `RUN --mount`
/// needed (its target when it is a directory, and the parents it made).
fn excluded_mount_points(created: &[String], mounts: &[exec::Mount]) -> Vec<String> {
    let norm = |p: &str| p.trim_matches('/').to_string();
    let mut keep: std::collections::HashSet<String> = std::collections::HashSet::new();
    for m in mounts {
        let dest = norm(&m.destination);
        let is_dir = match &m.kind {
            exec::MountKind::Tmpfs => true,
            exec::MountKind::Bind { source, .. } => source.is_dir(),
        };
        if is_dir {
            keep.insert(dest.clone());
        }
        let mut p = dest.as_str();
        while let Some(i) = p.rfind('/') {
            p = &p[..i];
            keep.insert(p.to_string());
        }
    }
    // runc leaves a /dev it had to create in BuildKit's layers.
    keep.insert("dev".into());
    created
        .iter()
        .filter(|c| !keep.contains(&norm(c)))
        .cloned()
        .collect()
}

/// The image's layers as the store's unpacker takes them.
fn layer_sources(img: &transport::StoredImage) -> Result<Vec<LayerSource>, String> {
    let diff_ids = &img.config.rootfs.diff_ids;
    if diff_ids.len() != img.manifest.layers.len() {
        return Err(format!(
            "the manifest has {} layers but the config {} diff_ids",
            img.manifest.layers.len(),
            diff_ids.len()
        ));
    }
    Ok(img
        .manifest
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(l, d)| LayerSource {
            blob: l.digest.clone(),
            diff_id: d.clone(),
        })
        .collect())
}

/// The sandbox spec: the image's Env, User and WorkingDir, overridden by
/// the step's.
fn process_spec(input: &StepInput, config: &ImageConfig, rootfs: exec::RootFs) -> ProcessSpec {
    let cc = config.config.clone().unwrap_or_default();
    let mut env: Vec<String> = cc.env.unwrap_or_default();
    for kv in &input.env {
        let key = kv.split('=').next().unwrap_or(kv);
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    let mut spec = ProcessSpec::new(input.argv.clone(), "/");
    spec.rootfs = rootfs;
    spec.env = env;
    spec.user = if input.user.is_empty() {
        cc.user.unwrap_or_default()
    } else {
        input.user.clone()
    };
    spec.cwd = if input.cwd.is_empty() {
        cc.working_dir
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    } else {
        input.cwd.clone()
    };
    spec.network = input.network;
    if !input.hostname.is_empty() {
        spec.hostname = input.hostname.clone();
    }
    spec.idmap = input.idmap;
    spec.mounts = input.mounts.clone();
    spec
}

/// Stores the config and manifest of `base` plus `layer`, names it
/// `input.tag` if given, and returns the manifest digest.
fn commit(
    store: &Store,
    base: &transport::StoredImage,
    layer: &WrittenLayer,
    input: &StepInput,
) -> Result<Digest, String> {
    let created = match input.source_date_epoch {
        Some(epoch) => rfc3339(epoch)?,
        None => rfc3339(time::OffsetDateTime::now_utc().unix_timestamp())?,
    };
    let mut config = base.config.clone();
    config.created = Some(created.clone());
    config.rootfs.diff_ids.push(layer.diff_id.clone());
    config.history.push(History {
        created: Some(created),
        created_by: Some(input.argv.join(" ")),
        comment: Some("kiln".into()),
        ..History::default()
    });
    let config_bytes = image::to_canonical_json(&config).map_err(|e| e.to_string())?;
    let (config_digest, config_size) = store.put_bytes(&config_bytes).map_err(|e| e.to_string())?;

    let docker = base.manifest.media_type.as_deref() == Some(media_types::DOCKER_MANIFEST);
    let layer_media_type = if docker && layer.media_type == media_types::OCI_LAYER_TAR_GZIP {
        media_types::DOCKER_LAYER_TAR_GZIP.to_string()
    } else {
        layer.media_type.clone()
    };
    let mut manifest: Manifest = base.manifest.clone();
    manifest.config = Descriptor {
        media_type: base.manifest.config.media_type.clone(),
        digest: config_digest,
        size: config_size,
        annotations: BTreeMap::new(),
        platform: None,
    };
    manifest.layers.push(Descriptor {
        media_type: layer_media_type,
        digest: layer.digest.clone(),
        size: layer.size,
        annotations: BTreeMap::new(),
        platform: None,
    });
    let manifest_bytes = image::to_canonical_json(&manifest).map_err(|e| e.to_string())?;
    let (digest, size) = store
        .put_bytes(&manifest_bytes)
        .map_err(|e| e.to_string())?;
    if let Some(name) = &input.tag {
        let name = transport::normalize_name(name).map_err(|e| e.to_string())?;
        let desc = Descriptor {
            media_type: manifest
                .media_type
                .clone()
                .unwrap_or_else(|| media_types::OCI_MANIFEST.into()),
            digest: digest.clone(),
            size,
            annotations: BTreeMap::new(),
            platform: None,
        };
        transport::set_name(store, &name, &desc).map_err(|e| e.to_string())?;
    }
    Ok(digest)
}

fn rfc3339(epoch: i64) -> Result<String, String> {
    time::OffsetDateTime::from_unix_timestamp(epoch)
        .map_err(|e| format!("SOURCE_DATE_EPOCH {epoch}: {e}"))?
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| e.to_string())
}

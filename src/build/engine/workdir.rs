//! WORKDIR creates its directory (and missing parents) as a layer when the
//! image lacks it, as BuildKit does; when it exists, BuildKit still commits
//! a layer, an empty one (diff_id `sha256:5f70bf18…`, the tar of two zero
//! blocks), and so does kiln (checked against docker 20.10). Under a USER the
//! directories it makes are that user's (BuildKit's mkdir with the stage's
//! user; checked against docker 20.10 in diff case 40).

use std::os::unix::fs::PermissionsExt;

use crate::layer::{self, Compression, IdMapping, WriteOptions};
use crate::snapshot::{lower, Change, ChangeKind, ChangeList};
use crate::store::{Descriptor, Digest};

use super::error::StepRef;
use super::state::{layer_entry, ImageState};
use super::{Engine, EngineError};

pub fn make_dir(
    eng: &Engine,
    state: &ImageState,
    wd: &str,
    sref: &StepRef,
) -> Result<(Descriptor, Digest), EngineError> {
    eng.fetch_layers(state, sref)?;
    let unpacked = eng
        .store
        .ensure_unpacked(&state.layer_sources(), eng.lower_mode)
        .map_err(sref.wrap("unpack the image"))?;
    let lowers: Vec<std::path::PathBuf> = unpacked.iter().rev().map(|u| u.rootfs.clone()).collect();
    let parts: Vec<&str> = wd.split('/').filter(|p| !p.is_empty()).collect();
    let mut missing = Vec::new();
    for i in 0..parts.len() {
        let rel = parts[..=i].join("/");
        if !missing.is_empty()
            || !lower::exists(&lowers, &rel).map_err(sref.wrap(format!("look up /{rel}")))?
        {
            missing.push(rel);
        }
    }
    let stage = tempfile::Builder::new()
        .prefix("workdir-")
        .tempdir_in(eng.store.root().join("tmp"))
        .map_err(sref.wrap("make a staging directory"))?;
    let full = stage.path().join(parts.join("/"));
    std::fs::create_dir_all(&full).map_err(sref.wrap("make the directory"))?;
    for i in 0..parts.len() {
        let p = stage.path().join(parts[..=i].join("/"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
            .map_err(sref.wrap("set the directory's mode"))?;
    }
    let changes = ChangeList {
        source: stage.path().to_path_buf(),
        changes: missing
            .into_iter()
            .map(|path| Change {
                path,
                kind: ChangeKind::Upsert,
            })
            .collect(),
    };
    let user = state
        .config
        .config
        .as_ref()
        .and_then(|c| c.user.as_deref())
        .filter(|u| !u.is_empty());
    let mut owners = layer::Metadata::default();
    if let Some(user) = user {
        let (uid, gid) = crate::build::copy::user_ids(&lowers, user)
            .map_err(sref.wrap(format!("resolve USER {user}")))?;
        // Recorded owners replace the staging directory's (the caller's).
        for c in &changes.changes {
            owners.insert(layer::Record {
                path: c.path.clone(),
                kind: layer::Kind::Dir,
                uid,
                gid,
                mode: 0o755,
                rdev: None,
                xattrs: Default::default(),
            });
        }
    }
    let (uid, gid) = crate::sys::fs::effective_ids();
    let opts = WriteOptions {
        compression: Compression::Gzip,
        source_date_epoch: eng.req.source_date_epoch,
        // Whoever runs kiln, the directory is root's in the image unless
        // recorded otherwise.
        ids: IdMapping::single(uid, gid),
        recorded: vec![owners],
    };
    let written =
        layer::write_layer(eng.store, &changes, &opts).map_err(sref.wrap("write the layer"))?;
    Ok(layer_entry(written, state.docker))
}

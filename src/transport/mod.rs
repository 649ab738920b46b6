//! Moving images between the store and the local transports: OCI layout
//! directories (`oci:DIR[:TAG]`), OCI archives (`oci-archive:FILE[:TAG]`) and
//! `docker save` archives (`docker-archive:FILE[:REF]`), plus the archive
//! halves of `kiln save`/`load` and `kiln import` (rootfs tarballs).
//!
//! One implementation per format: `save`/`load` and `export`/`import` share
//! the writers and readers below. Registries (`docker://`) are the registry
//! client's business; [`is_local`] tells the CLI which one to call.
//!
//! Ordering rule (as everywhere in kiln): blobs are stored before the name
//! that refers to them, so an interrupted import leaves at worst unreferenced
//! blobs for `kiln prune`, never a name pointing at a missing blob.

mod archive_in;
mod docker_archive;
mod local;
mod location;
mod oci;
mod rootfs;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use crate::image::ImageError;
use crate::registry::reference::ReferenceError;
use crate::store::{Digest, Store, StoreError, REF_NAME_ANNOTATION};

pub use local::{
    dangling_images, familiar_name, find_image, list_images, normalize_name, set_name, ImageEntry,
    Matched, StoredImage,
};
pub use location::{is_local, ArchiveSelector, Location};
pub use rootfs::{import_rootfs, Imported, RootfsImport};

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("invalid image location {input:?}: {reason}")]
    InvalidLocation { input: String, reason: String },
    #[error(
        "{location}: registries are reached through the registry client, not a local transport"
    )]
    NotLocal { location: String },
    #[error("no such image: {name}")]
    NotFound { name: String },
    #[error("image ID prefix {prefix:?} matches more than one image; give more characters")]
    Ambiguous { prefix: String },
    #[error("{what}: {reason}")]
    Format { what: String, reason: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

/// Archive formats `kiln save` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// `docker save`'s format (default).
    Docker,
    /// An OCI image layout in a tar.
    Oci,
}

/// Copies the stored image `name` (a name in any docker spelling, or an ID
/// prefix) to the local transport `dest`. Returns the manifest digest of the
/// image that was copied. Refuses `docker://` (the registry client's job).
///
/// Archives are written to a temp file beside `dest` and renamed into place,
/// so `dest` is never left half-written. `oci:` adds to an existing layout.
pub fn export(store: &Store, name: &str, dest: &str) -> Result<Digest, TransportError> {
    let location = Location::parse(dest)?;
    let (matched, entry) = find_image(store, name)?;
    let full_name = match &matched {
        Matched::Name(n) => Some(n.clone()),
        Matched::Id => None,
    };
    // OCI layouts get OCI manifests (Docker v2.2 ones are converted).
    let img = &match &location {
        Location::OciDir { .. } | Location::OciArchive { .. } => oci::as_oci(&entry.image)?,
        _ => entry.image.clone(),
    };
    match &location {
        Location::Docker(_) => {
            return Err(TransportError::NotLocal {
                location: dest.to_string(),
            })
        }
        Location::OciDir { path, reference } => {
            oci::write_dir(store, img, path, reference.as_deref())?;
        }
        Location::OciArchive { path, reference } => {
            let mut ann = BTreeMap::new();
            if let Some(r) = reference.as_ref().or(full_name.as_ref()) {
                ann.insert(REF_NAME_ANNOTATION.to_string(), r.clone());
            }
            if let Some(n) = &full_name {
                ann.insert(oci::CONTAINERD_NAME.to_string(), n.clone());
            }
            write_file_via_temp(path, |w| {
                oci::write_tar(store, &[(img.clone(), ann.clone())], w)
            })?;
        }
        Location::DockerArchive { path, reference } => {
            let tags = match reference {
                Some(ArchiveSelector::Name(n)) => vec![n.clone()],
                Some(ArchiveSelector::Index(_)) => {
                    return Err(TransportError::InvalidLocation {
                        input: dest.to_string(),
                        reason: "@N selects an image when reading an archive, not when writing"
                            .into(),
                    })
                }
                None => full_name.into_iter().collect(),
            };
            write_file_via_temp(path, |w| {
                docker_archive::write_archive(store, &[(img.clone(), tags.clone())], w)
            })?;
        }
    }
    Ok(img.descriptor.digest.clone())
}

/// Copies the image at the local transport `src` into the store and names it
/// `name` (normalized) or, without one, as the source names it (the tag of
/// `oci:DIR:TAG` becomes `localhost/DIR:TAG`; full names in ref.name or
/// RepoTags are kept). The source must hold exactly one image unless `src`
/// selects one. Returns the store names set.
pub fn import(store: &Store, src: &str, name: Option<&str>) -> Result<Vec<String>, TransportError> {
    let location = Location::parse(src)?;
    match &location {
        Location::Docker(_) => Err(TransportError::NotLocal {
            location: src.to_string(),
        }),
        Location::OciDir { path, reference } => {
            let index_path = path.join("index.json");
            let index = fs::read(&index_path).map_err(|e| TransportError::Io {
                what: format!("read {}", index_path.display()),
                source: e,
            })?;
            oci::import_index(
                store,
                &index,
                &oci::DirBlobs(path),
                &oci::OciImport {
                    ref_name: reference.as_deref(),
                    name,
                    fallback_repo: oci::fallback_repo(path),
                    all: false,
                },
            )
        }
        Location::OciArchive { path, reference } => {
            let contents = archive_in::read_archive(store, open(path)?)?;
            let index = contents
                .json
                .get("index.json")
                .ok_or_else(|| TransportError::Format {
                    what: path.display().to_string(),
                    reason: "not an OCI archive (no index.json)".into(),
                })?;
            oci::import_index(
                store,
                index,
                &oci::StoredBlobs,
                &oci::OciImport {
                    ref_name: reference.as_deref(),
                    name,
                    fallback_repo: oci::fallback_repo(path),
                    all: false,
                },
            )
        }
        Location::DockerArchive { path, reference } => {
            let contents = archive_in::read_archive(store, open(path)?)?;
            let imported =
                docker_archive::import(store, &contents, reference.as_ref(), name, false)?;
            Ok(imported.into_iter().flat_map(|(_, n)| n).collect())
        }
    }
}

/// Writes the images `names` (each a name or ID prefix) as one archive to `w`.
pub fn save(
    store: &Store,
    names: &[String],
    format: ArchiveFormat,
    w: impl Write,
) -> Result<(), TransportError> {
    let mut images = Vec::new();
    for n in names {
        let (matched, entry) = find_image(store, n)?;
        let name = match matched {
            Matched::Name(n) => Some(n),
            Matched::Id => None,
        };
        images.push((entry.image, name));
    }
    let mut w = BufWriter::with_capacity(256 * 1024, w);
    match format {
        ArchiveFormat::Docker => {
            // One entry per image ID, listing every requested name of it.
            let mut merged: Vec<(StoredImage, Vec<String>)> = Vec::new();
            for (img, name) in images {
                match merged.iter_mut().find(|(i, _)| i.id() == img.id()) {
                    Some((_, tags)) => tags.extend(name),
                    None => merged.push((img, name.into_iter().collect())),
                }
            }
            docker_archive::write_archive(store, &merged, &mut w)?;
        }
        ArchiveFormat::Oci => {
            let mut entries = Vec::new();
            for (img, name) in images {
                let mut ann = BTreeMap::new();
                if let Some(n) = name {
                    ann.insert(REF_NAME_ANNOTATION.to_string(), n.clone());
                    ann.insert(oci::CONTAINERD_NAME.to_string(), n);
                }
                entries.push((oci::as_oci(&img)?, ann));
            }
            oci::write_tar(store, &entries, &mut w)?;
        }
    }
    w.flush().map_err(|e| TransportError::Io {
        what: "write the archive".into(),
        source: e,
    })
}

/// An image `load` stored.
#[derive(Debug, Clone)]
pub struct LoadedImage {
    pub id: Digest,
    /// Store names set (empty for an untagged image, which only `kiln prune` will see).
    pub names: Vec<String>,
}

/// Reads a docker or OCI archive (auto-detected; plain or compressed) from
/// `r` in one pass and stores every image in it under its names.
pub fn load(store: &Store, r: impl Read) -> Result<Vec<LoadedImage>, TransportError> {
    let contents = archive_in::read_archive(store, r)?;
    if contents.is_docker_archive() {
        let imported = docker_archive::import(store, &contents, None, None, true)?;
        return Ok(imported
            .into_iter()
            .map(|(id, names)| LoadedImage { id, names })
            .collect());
    }
    let index = contents
        .json
        .get("index.json")
        .filter(|_| contents.is_oci_archive())
        .ok_or_else(|| TransportError::Format {
            what: "load".into(),
            reason: "neither a docker archive (manifest.json) nor an OCI archive (index.json)"
                .into(),
        })?;
    let names = oci::import_index(
        store,
        index,
        &oci::StoredBlobs,
        &oci::OciImport {
            ref_name: None,
            name: None,
            fallback_repo: "localhost/image".into(),
            all: true,
        },
    )?;
    let mut out: Vec<LoadedImage> = Vec::new();
    for n in names {
        let (_, entry) = find_image(store, &n)?;
        match out.iter_mut().find(|l| &l.id == entry.image.id()) {
            Some(l) => l.names.push(n),
            None => out.push(LoadedImage {
                id: entry.image.id().clone(),
                names: vec![n],
            }),
        }
    }
    Ok(out)
}

fn open(path: &Path) -> Result<File, TransportError> {
    File::open(path).map_err(|e| TransportError::Io {
        what: format!("open {}", path.display()),
        source: e,
    })
}

/// Writes `path` through a temp file in the same directory and renames it,
/// so readers never see a half-written archive and a failure leaves nothing.
pub fn write_file_via_temp(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), TransportError>,
) -> Result<(), TransportError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let io_err = |what: String| move |source| TransportError::Io { what, source };
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .map_err(io_err(format!("create a temp file in {}", dir.display())))?;
    let mut w = BufWriter::with_capacity(256 * 1024, tmp);
    write(&mut w)?;
    let tmp = w
        .into_inner()
        .map_err(|e| io_err(format!("write {}", path.display()))(e.into_error()))?;
    // NamedTempFile creates 0600; an archive is meant to be shared like any
    // file `docker save -o` writes.
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io_err(format!("chmod {}", path.display())))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(io_err(format!("write {}", path.display())))?;
    tmp.persist(path)
        .map_err(|e| io_err(format!("write {}", path.display()))(e.error))?;
    Ok(())
}

//! The image a stage is building, held in memory between steps: its config
//! (with history) and its layers; committed to the store as a config blob
//! and a manifest when a step is cached, a stage is used by another, or the
//! build ends.

use std::collections::BTreeMap;

use super::error::{store_err, EngineError};
use crate::image::{self, media_types, ContainerConfig, History, ImageConfig, Manifest};
use crate::store::{Descriptor, Digest, LayerSource, Store};
use crate::transport::StoredImage;

/// The state of a stage after some steps.
#[derive(Debug, Clone)]
pub struct ImageState {
    pub config: ImageConfig,
    /// Manifest layer descriptors, bottom-most first (one per `diff_id`).
    pub layers: Vec<Descriptor>,
    /// Docker (v2 schema 2) media types instead of OCI.
    pub docker: bool,
    /// Whether CMD was set in this stage (an ENTRYPOINT then keeps it).
    pub cmd_set: bool,
}

impl ImageState {
    /// `FROM scratch`.
    pub fn scratch(platform: &crate::plan::Platform, docker: bool) -> ImageState {
        ImageState {
            config: ImageConfig {
                architecture: platform.arch.clone(),
                os: platform.os.clone(),
                variant: platform.variant.clone(),
                config: Some(ContainerConfig {
                    env: Some(vec![format!("PATH={}", crate::exec::DEFAULT_PATH)]),
                    working_dir: Some("/".into()),
                    ..ContainerConfig::default()
                }),
                rootfs: image::RootFs {
                    kind: "layers".into(),
                    ..image::RootFs::default()
                },
                ..ImageConfig::default()
            },
            layers: Vec::new(),
            docker,
            cmd_set: false,
        }
    }

    /// `FROM image`: its config and layers (its history is kept).
    pub fn from_image(img: &StoredImage, docker: bool) -> ImageState {
        let mut layers = img.manifest.layers.clone();
        for l in &mut layers {
            l.media_type = layer_media_type(&l.media_type, docker);
        }
        let mut state = ImageState {
            config: img.config.clone(),
            layers,
            docker,
            cmd_set: false,
        };
        // BuildKit gives an image without PATH the default one.
        let env = state.env();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            let mut env = env;
            env.insert(0, format!("PATH={}", crate::exec::DEFAULT_PATH));
            state.container().env = Some(env);
        }
        state
    }

    /// The layers as the unpacker takes them.
    pub fn layer_sources(&self) -> Vec<LayerSource> {
        self.layers
            .iter()
            .zip(&self.config.rootfs.diff_ids)
            .map(|(l, d)| LayerSource {
                blob: l.digest.clone(),
                diff_id: d.clone(),
            })
            .collect()
    }

    pub fn container(&mut self) -> &mut ContainerConfig {
        self.config
            .config
            .get_or_insert_with(ContainerConfig::default)
    }

    pub fn env(&self) -> Vec<String> {
        self.config
            .config
            .as_ref()
            .and_then(|c| c.env.clone())
            .unwrap_or_default()
    }

    /// Appends a history entry (and the layer, when there is one).
    pub fn add(&mut self, created: &str, created_by: String, layer: Option<(Descriptor, Digest)>) {
        let empty = layer.is_none();
        if let Some((desc, diff_id)) = layer {
            self.layers.push(desc);
            self.config.rootfs.diff_ids.push(diff_id);
        }
        self.config.history.push(History {
            created: Some(created.to_string()),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: empty,
            ..History::default()
        });
    }

    /// Stores the config and manifest; returns the manifest's descriptor.
    /// Idempotent (content-addressed).
    pub fn commit(&self, store: &Store) -> Result<Descriptor, EngineError> {
        let config_bytes = image::to_canonical_json(&self.config)
            .map_err(|e| EngineError::Other(format!("encode the image config: {e}")))?;
        let (config_digest, config_size) = store
            .put_bytes(&config_bytes)
            .map_err(store_err("store the image config"))?;
        let (manifest_mt, config_mt) = if self.docker {
            (media_types::DOCKER_MANIFEST, media_types::DOCKER_CONFIG)
        } else {
            (media_types::OCI_MANIFEST, media_types::OCI_CONFIG)
        };
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(manifest_mt.to_string()),
            config: Descriptor {
                media_type: config_mt.to_string(),
                digest: config_digest,
                size: config_size,
                annotations: BTreeMap::new(),
                platform: None,
            },
            layers: self.layers.clone(),
            annotations: BTreeMap::new(),
            extra: serde_json::Map::new(),
        };
        let bytes = image::to_canonical_json(&manifest)
            .map_err(|e| EngineError::Other(format!("encode the manifest: {e}")))?;
        let (digest, size) = store
            .put_bytes(&bytes)
            .map_err(store_err("store the manifest"))?;
        Ok(Descriptor {
            media_type: manifest_mt.to_string(),
            digest,
            size,
            annotations: BTreeMap::new(),
            platform: None,
        })
    }
}

/// `K=V` entries as pairs (an entry without `=` is a name with an empty value).
pub fn split_env(list: &[String]) -> Vec<(String, String)> {
    list.iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect()
}

/// A written layer as the manifest lists it (media type of the chosen
/// family) and its diff_id.
pub fn layer_entry(written: crate::layer::WrittenLayer, docker: bool) -> (Descriptor, Digest) {
    (
        Descriptor {
            media_type: layer_media_type(&written.media_type, docker),
            digest: written.digest,
            size: written.size,
            annotations: BTreeMap::new(),
            platform: None,
        },
        written.diff_id,
    )
}

/// A layer's media type in the chosen family (gzip/zstd/plain kept).
pub fn layer_media_type(mt: &str, docker: bool) -> String {
    use media_types as m;
    let c = m::layer_compression(mt).unwrap_or(crate::image::Compression::Gzip);
    match (docker, c) {
        (true, crate::image::Compression::Gzip) => m::DOCKER_LAYER_TAR_GZIP.into(),
        (_, c) => crate::layer::layer_media_type(c).into(),
    }
}

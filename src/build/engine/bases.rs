//! FROM images: found in the store, else pulled once per build (buildah's
//! "missing" pull policy; `--pull` always asks the registry).

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::plan::{BaseImageEnv, Platform};
use crate::registry::credentials::{AuthConfig, AuthEnv};
use crate::registry::reference::Reference;
use crate::registry::{self, ClientOptions, Progress, PullOptions};
use crate::store::Store;
use crate::transport::StoredImage;

use super::error::EngineError;

/// When to ask the registry for a FROM image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Only when the store has no image of that name.
    #[default]
    Missing,
    /// Always (the store's copy is refreshed).
    Always,
    /// Never: a missing image is an error.
    Never,
}

/// The images FROM lines name, resolved at most once each.
pub struct Bases<'a> {
    store: &'a Store,
    policy: PullPolicy,
    client: ClientOptions,
    progress: Progress,
    resolved: RefCell<BTreeMap<String, Result<StoredImage, String>>>,
}

impl<'a> Bases<'a> {
    pub fn new(
        store: &'a Store,
        policy: PullPolicy,
        client: ClientOptions,
        progress: Progress,
    ) -> Self {
        Bases {
            store,
            policy,
            client,
            progress,
            resolved: RefCell::new(BTreeMap::new()),
        }
    }

    /// The image `reference` for `platform`, pulling it if needed.
    pub fn get(&self, reference: &str, platform: &Platform) -> Result<StoredImage, EngineError> {
        if let Some(r) = self.resolved.borrow().get(reference) {
            return r.clone().map_err(|message| EngineError::Base {
                reference: reference.to_string(),
                message,
                source: None,
            });
        }
        let r = self.resolve(reference, platform);
        self.resolved
            .borrow_mut()
            .insert(reference.to_string(), r.clone());
        r.map_err(|message| EngineError::Base {
            reference: reference.to_string(),
            message,
            source: None,
        })
    }

    fn resolve(&self, reference: &str, platform: &Platform) -> Result<StoredImage, String> {
        let parsed = Reference::parse(reference).map_err(|e| e.to_string())?;
        let name = parsed.to_string();
        let local = self.store.resolve(&name).map_err(|e| e.to_string())?;
        if let (Some(desc), PullPolicy::Missing | PullPolicy::Never) = (&local, self.policy) {
            return StoredImage::load(self.store, desc).map_err(|e| e.to_string());
        }
        if self.policy == PullPolicy::Never {
            return Err(format!(
                "not in the store at {} and pulling is off",
                self.store.root().display()
            ));
        }
        let env = AuthEnv::from_process();
        let credential = AuthConfig::open(&env)
            .and_then(|c| c.get(parsed.registry()))
            .map_err(|e| e.to_string())?;
        // Layers stay in the registry until a step needs their bytes
        // (`Engine::fetch_layers`): a fully cached build never reads them.
        let opts = PullOptions {
            platform: platform.clone(),
            client: self.client.clone(),
            lazy_layers: true,
            ..PullOptions::default()
        };
        let pulled = registry::pull(self.store, &parsed, credential, &opts, &self.progress)
            .map_err(|e| format!("pull: {e}"))?;
        StoredImage::load(self.store, &pulled.manifest).map_err(|e| e.to_string())
    }
}

impl BaseImageEnv for Bases<'_> {
    /// The image's ENV; an image that cannot be had contributes nothing here
    /// (the stage's FROM reports the error).
    fn env(&self, image: &str, platform: &Platform) -> Vec<(String, String)> {
        let Ok(img) = self.get(image, platform) else {
            return Vec::new();
        };
        super::state::split_env(&img.config.config.and_then(|c| c.env).unwrap_or_default())
    }
}

impl super::Engine<'_> {
    /// Fetches the layers of `state` that the store knows only by their
    /// registry location: called right before anything reads the tree
    /// (RUN, COPY/ADD, WORKDIR, a `--mount from=`), never on a cache hit.
    pub(super) fn fetch_layers(
        &self,
        state: &super::ImageState,
        sref: &super::error::StepRef,
    ) -> Result<(), EngineError> {
        let digests: Vec<crate::store::Digest> =
            state.layers.iter().map(|l| l.digest.clone()).collect();
        registry::lazy::ensure_blobs(
            self.store,
            &digests,
            &self.req.client,
            &self.reporter.transfer_progress(),
        )
        .map_err(sref.wrap("fetch the image's layers"))?;
        Ok(())
    }
}

//! The engine's side of the layer cache: which inputs make up each step's
//! key (`plan::cache_key`), the key a stage starts from, and the store's
//! index (`Store::cache_get`/`cache_put`). Keys are content-based: a
//! parent's key, never an image's creation time, so the same inputs hit
//! again in any build, after any earlier miss.

use crate::frontend::instructions::{Instruction, MountType};
use crate::plan::cache_key::{canonical_map, KeyInputs};
use crate::plan::Step;
use crate::store::Digest;

use super::error::{EngineError, StepRef};
use super::state::ImageState;
use super::{run, Engine};

/// What a state is, for the next step's key: its layers (diff_ids), its
/// runtime config, platform and media type family — not its history or
/// times. So a step whose output is identical to an earlier build's (same
/// layer content) lets the steps after it hit the cache again.
pub(super) fn state_key(state: &ImageState) -> Digest {
    let c = &state.config;
    let runtime = serde_json::to_string(&c.config).unwrap_or_default();
    let diff_ids: Vec<String> = c.rootfs.diff_ids.iter().map(|d| d.to_string()).collect();
    KeyInputs::new()
        .with("layers", diff_ids.join(","))
        .with("config", runtime)
        .with(
            "platform",
            format!(
                "{}/{}/{}",
                c.os,
                c.architecture,
                c.variant.clone().unwrap_or_default()
            ),
        )
        .with("format", if state.docker { "docker" } else { "oci" })
        .key()
}

impl Engine<'_> {
    /// The named inputs of `step` over `parent`.
    pub(super) fn key_inputs(
        &self,
        state: &ImageState,
        step: &Step,
        parent: &Digest,
        sref: &StepRef,
    ) -> Result<KeyInputs, EngineError> {
        let mut k = KeyInputs::new()
            .with("parent", parent.to_string())
            .with("instruction", step.text.clone());
        if let Some(e) = self.req.source_date_epoch {
            k = k.with("source-date-epoch", e.to_string());
        }
        match &step.instruction {
            Instruction::Run(r) => {
                k = k
                    .with("args", canonical_map(step.build_args.iter().cloned()))
                    .with("env", canonical_map(super::state::split_env(&state.env())))
                    .with("proxy", canonical_map(self.plan.proxy_env.iter().cloned()));
                for m in run::mounts(r).map_err(|e| sref.fail(format!("--mount: {e}")))? {
                    match (m.kind, &m.from) {
                        (MountType::Bind, Some(from)) => {
                            k = k.with(&format!("mount-from {from}"), self.source_key(from, sref)?);
                        }
                        (MountType::Bind, None) => {
                            let src = m.source.clone().unwrap_or_default();
                            let digest = self.context_digest(&src, sref)?;
                            k = k.with(&format!("mount-context {src}"), digest);
                        }
                        // Secrets by id only (never their value); caches
                        // and tmpfs do not change what the step means.
                        _ => {}
                    }
                }
            }
            Instruction::Copy(c) => match &c.from {
                // The source state's key already stands for its whole
                // tree (its layers' diff_ids); reading the tree for a
                // sources digest would fetch a remote stage's or image's
                // layers on every cache hit (see `remote_cache`).
                Some(from) => k = k.with("from", self.source_key(from, sref)?),
                None => k = k.with("sources", self.copy_sources_digest(state, step, sref)?),
            },
            Instruction::Add(_) => {
                k = k.with("sources", self.copy_sources_digest(state, step, sref)?);
            }
            _ => {}
        }
        Ok(k)
    }

    /// The key standing for a `--from` source (a stage or an image): its content.
    fn source_key(&self, from: &str, sref: &StepRef) -> Result<String, EngineError> {
        let state = self.source_state(from, sref)?;
        Ok(state_key(&state).to_string())
    }

    /// Where a step's record lives for `--explain-cache`.
    pub(super) fn slot(&self, stage: usize, step: usize) -> String {
        format!("{}#{stage}#{step}", self.dockerfile_id)
    }
}

//! COPY and ADD in a build: the engine's side (what the instruction means
//! here: sources from the context or a stage/image, the stage's WORKDIR,
//! the target image's lowers) over [`crate::build::copy`].

use std::path::{Path, PathBuf};

use crate::build::copy::{self, AddOptions, CopyFrom, CopySpec, Target};
use crate::frontend::instructions::Instruction;
use crate::layer::Metadata;
use crate::plan::Step;
use crate::store::{chain_ids, Descriptor, Digest};

use super::error::{EngineError, StepRef};
use super::state::{layer_entry, ImageState};
use super::Engine;

/// An image state's tree as the copy code reads it: overlay lowers
/// (top-most first), their ownership records, its chain id.
struct Tree {
    lowers: Vec<PathBuf>,
    recorded: Vec<Metadata>,
    chain_id: Digest,
}

/// The chain id of a state's layers (of nothing, for scratch).
fn chain_id(state: &ImageState) -> Digest {
    let diff_ids: Vec<Digest> = state
        .layer_sources()
        .into_iter()
        .map(|l| l.diff_id)
        .collect();
    chain_ids(&diff_ids)
        .last()
        .cloned()
        .unwrap_or_else(|| crate::image::digest_of(b""))
}

impl Engine<'_> {
    fn tree(&self, state: &ImageState, sref: &StepRef) -> Result<Tree, EngineError> {
        self.fetch_layers(state, sref)?;
        let sources = state.layer_sources();
        let unpacked = self
            .store
            .ensure_unpacked(&sources, self.lower_mode)
            .map_err(sref.wrap("unpack the image"))?;
        let mut recorded = Vec::with_capacity(unpacked.len());
        for u in unpacked.iter().rev() {
            recorded.push(
                Metadata::load(&u.metadata)
                    .map_err(sref.wrap(format!("read {}", u.metadata.display())))?,
            );
        }
        Ok(Tree {
            lowers: unpacked.iter().rev().map(|u| u.rootfs.clone()).collect(),
            recorded,
            chain_id: chain_id(state),
        })
    }

    /// The copy's spec, and the `--from` it reads (None: the context).
    fn copy_spec(&self, state: &ImageState, step: &Step) -> Option<(CopySpec, Option<String>)> {
        let workdir = state
            .config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        let epoch = self.req.source_date_epoch;
        Some(match &step.instruction {
            Instruction::Copy(c) => (
                CopySpec {
                    sources: c.src.paths.clone(),
                    inline: c.src.contents.clone(),
                    dest: c.src.dest.clone(),
                    workdir,
                    chown: c.chown.clone(),
                    chmod: c.chmod.clone(),
                    exclude: c.exclude.clone(),
                    parents: c.parents,
                    link: c.link,
                    add: None,
                    source_date_epoch: epoch,
                },
                c.from.clone(),
            ),
            Instruction::Add(a) => (
                CopySpec {
                    sources: a.src.paths.clone(),
                    inline: a.src.contents.clone(),
                    dest: a.src.dest.clone(),
                    workdir,
                    chown: a.chown.clone(),
                    chmod: a.chmod.clone(),
                    exclude: a.exclude.clone(),
                    parents: false,
                    link: a.link,
                    add: Some(AddOptions {
                        checksum: a.checksum.clone(),
                        unpack: a.unpack,
                        keep_git_dir: a.keep_git_dir,
                    }),
                    source_date_epoch: epoch,
                },
                None,
            ),
            _ => return None,
        })
    }

    /// The content digest of what a COPY/ADD reads (its cache input).
    pub(super) fn copy_sources_digest(
        &self,
        state: &ImageState,
        step: &Step,
        sref: &StepRef,
    ) -> Result<String, EngineError> {
        let Some((spec, from)) = self.copy_spec(state, step) else {
            return Ok(String::new());
        };
        let hash_file = |p: &std::path::Path, m: &std::fs::Metadata| match &self.hashcache {
            Some(h) => h.file_digest(p, m),
            None => Err(std::io::Error::other("no build context")),
        };
        let cf = self.copy_from(&from, sref)?;
        let digest =
            copy::source_digest(&spec, &cf, &hash_file).map_err(sref.wrap("read the sources"))?;
        Ok(digest.to_string())
    }

    /// Runs a COPY/ADD over `state`; returns its layer.
    pub(super) fn copy(
        &self,
        state: &ImageState,
        step: &Step,
        sref: &StepRef,
    ) -> Result<(Descriptor, Digest), EngineError> {
        let (spec, from) = self
            .copy_spec(state, step)
            .ok_or_else(|| sref.fail("not a COPY or ADD"))?;
        let target_tree = self.tree(state, sref)?;
        let target = Target {
            lowers: target_tree.lowers,
            recorded: target_tree.recorded,
        };
        let cf = self.copy_from(&from, sref)?;
        let written =
            copy::copy_layer(self.store, &spec, &cf, &target).map_err(sref.wrap("copy"))?;
        Ok(layer_entry(written, state.docker))
    }

    /// Where a COPY/ADD reads: the stage or image `from` names, else the
    /// context (an empty one for a Dockerfile from stdin: only heredoc
    /// sources can be copied then).
    fn copy_from(
        &self,
        from: &Option<String>,
        sref: &StepRef,
    ) -> Result<CopyFrom<'_>, EngineError> {
        Ok(match from {
            Some(f) => {
                let src = self.source_state(f, sref)?;
                let tree = self.tree(&src, sref)?;
                CopyFrom::Image {
                    lowers: tree.lowers,
                    recorded: tree.recorded,
                    chain_id: tree.chain_id,
                }
            }
            None => CopyFrom::Context {
                dir: self.req.context.as_deref().unwrap_or(Path::new("")),
                ignore: &self.req.ignore,
            },
        })
    }
}

//! `kiln build`: runs a Dockerfile's plan stage by stage (dependencies
//! first, stages the target does not need never run), each step turning an
//! [`ImageState`] into the next, and commits the target stage's image.
//!
//! Orchestration only: RUN goes through [`crate::build::step`], COPY/ADD
//! through [`crate::build::copy`], config-only instructions through
//! [`metadata`]; bases come from the store or a registry ([`bases`]).

mod bases;
mod cache;
mod context_hash;
mod copy_step;
mod error;
mod metadata;
mod onbuild;
mod progress;
mod remote_cache;
mod run;
mod state;
mod workdir;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

pub use bases::PullPolicy;
pub use error::EngineError;
pub use progress::{ProgressMode, Reporter, Summary};
pub use remote_cache::{CacheLocation, CacheMode, CacheSpec, CACHE_MEDIA_TYPE};
pub use run::SecretSource;
pub use state::ImageState;

use crate::context::HashCache;
use crate::exec::Isolation;
use crate::frontend::instructions::Instruction;
use crate::frontend::stages::Dockerfile;
use crate::layer::Mode;
use crate::plan::cache_key::{explain, KeyInputs};
use crate::plan::{self, Base, Plan, PlanOptions, PlannedStage, Step};
use crate::registry::ClientOptions;
use crate::snapshot::SnapshotterKind;
use crate::store::CacheRecord;
use crate::store::{Descriptor, Digest, Store};
use bases::Bases;
use error::StepRef;

/// Everything a build needs besides the store.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    pub plan: PlanOptions,
    /// The build context directory (`None`: Dockerfile from stdin, no context).
    pub context: Option<PathBuf>,
    /// `.dockerignore` patterns of the context.
    pub ignore: Vec<String>,
    pub no_cache: bool,
    /// Stages (by name or index) whose steps are always rebuilt.
    pub no_cache_filter: Vec<String>,
    pub isolation: Isolation,
    pub snapshotter: Option<SnapshotterKind>,
    /// Clamp file times and date the image (reproducible builds).
    pub source_date_epoch: Option<i64>,
    pub secrets: BTreeMap<String, SecretSource>,
    /// `--label`s added to the final image.
    pub labels: BTreeMap<String, String>,
    pub pull: PullPolicy,
    pub client: ClientOptions,
    /// Docker media types instead of OCI.
    pub docker_format: bool,
    pub progress: ProgressMode,
    /// The display to report to (`None`: one for `progress`); a caller
    /// that reports after the build (names, pushes) passes its own.
    pub reporter: Option<Reporter>,
    /// Print why each cache miss missed.
    pub explain_cache: bool,
    /// Caches imported into the store's layer cache before the first step.
    pub cache_from: Vec<CacheSpec>,
    /// Caches written after the build (see `remote_cache`).
    pub cache_to: Vec<CacheSpec>,
}

/// The built image.
#[derive(Debug, Clone)]
pub struct Built {
    /// The manifest in the store.
    pub manifest: Descriptor,
    /// The image ID (config digest).
    pub id: Digest,
    /// Compressed layers + config, bytes.
    pub size: u64,
    pub steps: usize,
    pub cached_steps: usize,
}

/// One build in progress.
pub struct Engine<'a> {
    pub store: &'a Store,
    pub req: &'a BuildRequest,
    pub plan: Plan,
    df: &'a Dockerfile,
    bases: Bases<'a>,
    /// Final state of each stage built so far, by stage index.
    stages: BTreeMap<usize, ImageState>,
    /// How lowers are unpacked for the isolation tier in use.
    lower_mode: Mode,
    /// `created` of every history entry and of the image.
    created: String,
    reporter: Reporter,
    cached_steps: usize,
    steps_run: usize,
    /// Stat-keyed file digests of the context (cache keys of COPY/ADD).
    hashcache: Option<HashCache>,
    /// Names this Dockerfile in cache slots (`--explain-cache`).
    dockerfile_id: String,
    /// Every step's cache record (hit or run), for `--cache-to`.
    records: Vec<remote_cache::StepRecord>,
}

/// Plans `df` (pulling FROM images as the plan needs their ENV) and builds
/// the target stage; the image is in the store, unnamed (the caller names
/// and exports it).
pub fn build(store: &Store, df: &Dockerfile, req: &BuildRequest) -> Result<Built, EngineError> {
    let reporter = req
        .reporter
        .clone()
        .unwrap_or_else(|| Reporter::new(req.progress));
    let bases = Bases::new(
        store,
        req.pull,
        req.client.clone(),
        reporter.transfer_progress(),
    );
    // The triggers of FROM images become steps of their stages.
    let (df, plan) = onbuild::plan_with_triggers(df, &req.plan, &bases)?;
    let df: &Dockerfile = &df;
    for arg in &plan.unused_build_args {
        reporter.note(&format!(
            "warning: build-arg {arg} was not consumed by any ARG"
        ));
    }
    // A Dockerfile without RUN needs no isolation: where no tier works, the
    // first RUN step fails with the full explanation instead.
    let tier = match req.isolation {
        Isolation::Auto => Isolation::probe().unwrap_or_else(|e| {
            tracing::debug!(error = %e, "no isolation tier works here; only RUN steps need one");
            Isolation::Auto
        }),
        t => t,
    };
    let lower_mode = Mode::OverlayLower(tier.overlay_xattrs());
    let created = created_time(req.source_date_epoch)?;
    let hashcache = match &req.context {
        Some(ctx) => Some(HashCache::open(
            &HashCache::file_for(store.root(), ctx)
                .map_err(|e| EngineError::Other(format!("context {}: {e}", ctx.display())))?,
        )),
        None => None,
    };
    let dockerfile_id = crate::image::digest_of(
        format!(
            "{}\n{}",
            req.context
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            df.file
        )
        .as_bytes(),
    )
    .hex()
    .to_string();
    let mut eng = Engine {
        store,
        req,
        plan,
        df,
        bases,
        stages: BTreeMap::new(),
        lower_mode,
        created,
        reporter,
        cached_steps: 0,
        steps_run: 0,
        hashcache,
        dockerfile_id,
        records: Vec::new(),
    };
    eng.import_caches();
    let stages = eng.plan.stages.clone();
    let total = stages.len();
    for (n, stage) in stages.iter().enumerate() {
        let state = eng.build_stage(stage, (n + 1, total))?;
        eng.stages.insert(stage.index, state);
    }
    if let Some(h) = &eng.hashcache {
        if let Err(e) = h.save() {
            tracing::warn!("could not save the context hash cache: {e}");
        }
    }
    let target = eng.plan.target;
    let mut state = eng
        .stages
        .remove(&target)
        .ok_or_else(|| EngineError::Other("the target stage was not built".into()))?;
    if !req.labels.is_empty() {
        let labels = state.container().labels.get_or_insert_with(BTreeMap::new);
        labels.extend(req.labels.clone());
    }
    // The time of the last step that ran: a fully cached rebuild gives the
    // same image ID, as with docker.
    let last = state.config.history.last().and_then(|h| h.created.clone());
    state.config.created = Some(last.unwrap_or_else(|| eng.created.clone()));
    let manifest = state.commit(store)?;
    eng.export_caches(&eng.records)?;
    let id = manifest_config_digest(store, &manifest)?;
    let size = state.layers.iter().map(|l| l.size).sum::<u64>();
    Ok(Built {
        manifest,
        id,
        size,
        steps: eng.steps_run,
        cached_steps: eng.cached_steps,
    })
}

/// `COPY SRC… DEST # buildkit` as BuildKit records it: sources and
/// destination only, without the flags.
fn copy_created_by(ins: &Instruction) -> String {
    let (name, src) = match ins {
        Instruction::Copy(c) => ("COPY", &c.src),
        Instruction::Add(a) => ("ADD", &a.src),
        _ => return String::new(),
    };
    let mut words = vec![name.to_string()];
    words.extend(src.paths.iter().cloned());
    words.extend(src.contents.iter().map(|f| format!("<<{}", f.name)));
    words.push(src.dest.clone());
    format!("{} # buildkit", words.join(" "))
}

fn manifest_config_digest(store: &Store, desc: &Descriptor) -> Result<Digest, EngineError> {
    let img = crate::transport::StoredImage::load(store, desc)
        .map_err(|e| EngineError::Other(format!("read back the image: {e}")))?;
    Ok(img.id().clone())
}

fn created_time(epoch: Option<i64>) -> Result<String, EngineError> {
    let t = match epoch {
        Some(e) => time::OffsetDateTime::from_unix_timestamp(e)
            .map_err(|e| EngineError::Other(format!("SOURCE_DATE_EPOCH: {e}")))?,
        None => time::OffsetDateTime::now_utc(),
    };
    t.format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| EngineError::Other(format!("format the build time: {e}")))
}

impl<'a> Engine<'a> {
    /// The Dockerfile text of `step` as written (continuations joined).
    fn source_line(&self, step: &Step) -> Option<String> {
        // A trigger was not written in this file.
        if self.trigger_base(step).is_some() {
            return None;
        }
        let mut out = String::new();
        for line in self.df.source.lines().skip(step.pos.line.checked_sub(1)?) {
            let t = line.trim();
            match t.strip_suffix(self.df.escape) {
                Some(head) => {
                    out.push_str(head.trim());
                    out.push(' ');
                }
                None => {
                    out.push_str(t);
                    break;
                }
            }
        }
        Some(out.split_whitespace().collect::<Vec<_>>().join(" "))
    }

    fn step_ref(&self, step: &Step) -> StepRef {
        match self.trigger_base(step) {
            Some(base) => StepRef::new(
                &self.df.file,
                step.pos,
                &format!("ONBUILD {} (trigger of base image {base})", step.text),
            ),
            None => StepRef::new(&self.df.file, step.pos, &step.text),
        }
    }

    /// The starting state of `stage`.
    fn base_state(&self, stage: &PlannedStage) -> Result<ImageState, EngineError> {
        let docker = self.req.docker_format;
        Ok(match &stage.base {
            Base::Scratch => ImageState::scratch(&stage.platform, docker),
            Base::Image(r) => {
                let img = self.bases.get(r, &stage.platform)?;
                let mut s = ImageState::from_image(&img, docker);
                // Its triggers run in this stage (onbuild put them first):
                // the child does not inherit them.
                if let Some(c) = s.config.config.as_mut() {
                    c.on_build = None;
                }
                s
            }
            Base::Stage(i) => {
                let mut s = self.stages.get(i).cloned().ok_or_else(|| {
                    EngineError::Other(format!("stage {i} was not built before its use"))
                })?;
                s.cmd_set = false;
                // The triggers run in this stage (the plan put them first);
                // docker drops them from the child's config.
                if let Some(c) = s.config.config.as_mut() {
                    c.on_build = None;
                }
                s
            }
        })
    }

    /// The index of the stage `from` names (name, case-insensitive, or index).
    fn stage_index(&self, from: &str) -> Option<usize> {
        self.df
            .stages
            .iter()
            .position(|s| {
                s.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(from))
            })
            .or_else(|| {
                from.parse::<usize>()
                    .ok()
                    .filter(|i| *i < self.df.stages.len())
            })
    }

    /// The state a `COPY --from` / `--mount from=` names: a stage of this
    /// build (name or index) or an image.
    pub fn source_state(&self, from: &str, sref: &StepRef) -> Result<ImageState, EngineError> {
        if let Some(i) = self.stage_index(from) {
            return self
                .stages
                .get(&i)
                .cloned()
                .ok_or_else(|| sref.fail(format!("stage {from:?} has not been built")));
        }
        let platform = self
            .plan
            .stages
            .iter()
            .find(|s| s.index == self.plan.target)
            .map(|s| s.platform.clone())
            .unwrap_or_else(plan::Platform::host);
        let img = self.bases.get(from, &platform)?;
        Ok(ImageState::from_image(&img, self.req.docker_format))
    }

    fn build_stage(
        &mut self,
        stage: &PlannedStage,
        pos: (usize, usize),
    ) -> Result<ImageState, EngineError> {
        let label = stage.label();
        let _span = tracing::info_span!("stage", index = stage.index, name = %label).entered();
        let total = stage.steps.len() + 1;
        let from_text = match &stage.base {
            Base::Scratch => "FROM scratch".to_string(),
            Base::Image(r) => format!("FROM {r}"),
            Base::Stage(i) => format!("FROM stage {i}"),
        };
        self.reporter
            .step((pos.0, pos.1, &label), (1, total), &from_text);
        let t = Instant::now();
        let mut state = self.base_state(stage)?;
        self.reporter.done(false, t.elapsed());
        let use_cache = !self.req.no_cache
            && !self.req.no_cache_filter.iter().any(|f| {
                stage
                    .name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(f))
                    || f == &stage.index.to_string()
            });
        for (i, step) in stage.steps.iter().enumerate() {
            self.reporter
                .step((pos.0, pos.1, &label), (i + 2, total), &step.text);
            let t = Instant::now();
            let _s = tracing::info_span!("step", n = i + 1, text = %step.text).entered();
            let sref = self.step_ref(step);
            let parent = cache::state_key(&state);
            let inputs = self.key_inputs(&state, step, &parent, &sref)?;
            let step_key = inputs.key();
            let slot = self.slot(stage.index, i);
            let hit = if use_cache {
                self.store
                    .cache_get(&step_key)
                    .map_err(error::store_err("look up the layer cache"))?
            } else {
                None
            };
            match hit {
                Some(rec) => {
                    let img = crate::transport::StoredImage::load(self.store, &rec.image)
                        .map_err(sref.wrap("read the cached image"))?;
                    self.records.push(remote_cache::StepRecord {
                        stage: stage.index,
                        key: step_key.clone(),
                        record: rec.clone(),
                    });
                    let cmd_set = state.cmd_set || matches!(step.instruction, Instruction::Cmd(_));
                    state = ImageState::from_image(&img, state.docker);
                    state.cmd_set = cmd_set;
                    self.cached_steps += 1;
                    self.reporter.done(true, t.elapsed());
                }
                None => {
                    if use_cache
                        && (self.req.explain_cache || self.reporter.mode() == ProgressMode::Plain)
                    {
                        self.explain_miss(&slot, &inputs);
                    }
                    self.apply_step(&mut state, stage, step)?;
                    let desc = state.commit(self.store)?;
                    let rec = CacheRecord {
                        image: desc,
                        inputs: inputs.parts.clone(),
                        slot,
                    };
                    self.store
                        .cache_put(&step_key, &rec)
                        .map_err(error::store_err("record the step in the layer cache"))?;
                    self.records.push(remote_cache::StepRecord {
                        stage: stage.index,
                        key: step_key.clone(),
                        record: rec,
                    });
                    self.steps_run += 1;
                    self.reporter.done(false, t.elapsed());
                }
            }
        }
        Ok(state)
    }

    /// Says which input of the step changed since the last build recorded
    /// at this position (nothing when there was none).
    fn explain_miss(&self, slot: &str, inputs: &KeyInputs) {
        match self.store.cache_last_for_slot(slot) {
            Ok(Some(old)) => {
                let reasons: Vec<String> = explain(&KeyInputs::from(old.inputs), inputs)
                    .into_iter()
                    .map(|r| {
                        if r.starts_with("parent changed") {
                            "an earlier step changed".to_string()
                        } else {
                            r
                        }
                    })
                    .collect();
                self.reporter.explain(&reasons);
            }
            Ok(None) => {
                if self.req.explain_cache {
                    self.reporter
                        .explain(&["no earlier build of this step".into()]);
                }
            }
            Err(e) => tracing::debug!("explain: {e}"),
        }
    }

    fn apply_step(
        &mut self,
        state: &mut ImageState,
        _stage: &PlannedStage,
        step: &Step,
    ) -> Result<(), EngineError> {
        let sref = self.step_ref(step);
        let created = self.created.clone();
        match &step.instruction {
            Instruction::Run(r) => {
                let argv = run::argv(state, r);
                let layer = run::run(self, state, step, r, &sref)?;
                state.add(
                    &created,
                    run::created_by(&argv, &step.build_args),
                    Some(layer),
                );
            }
            Instruction::Workdir(dir) => {
                let current = state
                    .config
                    .config
                    .as_ref()
                    .and_then(|c| c.working_dir.clone())
                    .unwrap_or_default();
                let wd = metadata::resolve_workdir(&current, dir);
                state.container().working_dir = Some(wd.clone());
                let layer = workdir::make_dir(self, state, &wd, &sref)?;
                state.add(&created, format!("WORKDIR {wd}"), Some(layer));
            }
            Instruction::Copy(_) | Instruction::Add(_) => {
                let layer = self.copy(state, step, &sref)?;
                state.add(&created, copy_created_by(&step.instruction), Some(layer));
            }
            Instruction::From(_) => {}
            Instruction::Arg(_) => {
                // History shows the ARG line as written (BuildKit), not the
                // value it resolved to.
                let text = self.source_line(step).unwrap_or_else(|| step.text.clone());
                state.add(&created, text, None);
            }
            other => {
                if let Some(text) = metadata::apply(state, other) {
                    if !text.is_empty() {
                        state.add(&created, text, None);
                    }
                }
            }
        }
        Ok(())
    }
}

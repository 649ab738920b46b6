//! The build plan: stages resolved (bases, `COPY --from` and `RUN --mount
//! from=` edges), pruned to what the target needs, ordered so that every
//! stage comes after the stages it uses, with each step expanded.

pub mod cache_key;
mod expand;
pub mod platform;
pub mod render;
pub mod scope;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::frontend::error::{DockerfileError, Pos};
use crate::frontend::instructions::Instruction;
use crate::frontend::shell::Lexer;
use crate::frontend::stages::Dockerfile;

pub use expand::Expanded;
use expand::StageExpander;
pub use platform::{Platform, PlatformError};
use scope::{from_pairs, is_predefined, pairs, platform_args, Vars};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Dockerfile(#[from] DockerfileError),
    #[error("target stage {target:?} could not be found (stages: {available})")]
    TargetNotFound { target: String, available: String },
}

/// What the build asks for.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub target_platform: Platform,
    pub build_platform: Platform,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: Platform::host(),
            build_platform: Platform::host(),
        }
    }
}

/// The ENV of an external base image, which expansion inside its stage sees.
pub trait BaseImageEnv {
    fn env(&self, image: &str, platform: &Platform) -> Vec<(String, String)>;
}

/// For planning without images (`--dry-run`): bases contribute no variables.
pub struct NoBaseEnv;

impl BaseImageEnv for NoBaseEnv {
    fn env(&self, _image: &str, _platform: &Platform) -> Vec<(String, String)> {
        Vec::new()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "ref", rename_all = "lowercase")]
pub enum Base {
    Scratch,
    Image(String),
    Stage(usize),
}

/// Where a `COPY --from` or `RUN --mount from=` reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "ref", rename_all = "lowercase")]
pub enum Source {
    Stage(usize),
    Image(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub pos: Pos,
    /// The instruction after expansion, as Dockerfile text.
    pub text: String,
    #[serde(skip)]
    pub instruction: Instruction,
    /// Stage ARGs in scope with their values (RUN sees them; history records them).
    pub build_args: Vec<(String, String)>,
    /// Variables used but never set (they may come from the base image).
    pub undefined: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedStage {
    pub index: usize,
    pub name: Option<String>,
    pub base: Base,
    pub platform: Platform,
    /// Stages and images this stage reads from besides its base.
    pub sources: Vec<Source>,
    pub steps: Vec<Step>,
    /// The image ENV at the end of the stage.
    pub env: Vec<(String, String)>,
    /// ARG values at the end of the stage (a child stage inherits them).
    pub args: Vec<(String, String)>,
    pub pos: Pos,
}

impl PlannedStage {
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{n:?}"),
            None => format!("#{}", self.index),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SkippedStage {
    pub index: usize,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub target: usize,
    /// Stages the target needs, each after the stages it uses.
    pub stages: Vec<PlannedStage>,
    pub skipped: Vec<SkippedStage>,
    pub global_args: Vec<(String, String)>,
    pub unused_build_args: Vec<String>,
    /// Proxy build args: every RUN sees them without an ARG line, history never records them.
    pub proxy_env: Vec<(String, String)>,
}

struct Planner<'a> {
    df: &'a Dockerfile,
    opts: &'a PlanOptions,
    base_env: &'a dyn BaseImageEnv,
    lexer: Lexer,
    global: Vars,
    bases: Vec<Base>,
    platforms: Vec<Platform>,
    done: BTreeMap<usize, Result<PlannedStage, DockerfileError>>,
    consumed: BTreeSet<String>,
}

/// Builds the plan for `df`.
pub fn plan(
    df: &Dockerfile,
    opts: &PlanOptions,
    base_env: &dyn BaseImageEnv,
) -> Result<Plan, PlanError> {
    let target = match &opts.target {
        Some(t) => df
            .stage_by_name(t)
            .ok_or_else(|| PlanError::TargetNotFound {
                target: t.clone(),
                available: stage_names(df),
            })?,
        None => df.stages.len() - 1,
    };
    let mut p = Planner {
        df,
        opts,
        base_env,
        lexer: Lexer::new(df.escape),
        global: platform_args(&opts.target_platform, &opts.build_platform),
        bases: Vec::new(),
        platforms: Vec::new(),
        done: BTreeMap::new(),
        consumed: BTreeSet::new(),
    };
    let global_args = p.global_args()?;
    p.resolve_bases()?;
    let mut order = Vec::new();
    let mut state = vec![Visit::New; df.stages.len()];
    p.visit(target, &mut state, &mut order)?;
    let mut stages = Vec::new();
    for i in &order {
        match p.done.remove(i) {
            Some(Ok(s)) => stages.push(s),
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    let skipped = df
        .stages
        .iter()
        .filter(|s| !order.contains(&s.index))
        .map(|s| SkippedStage {
            index: s.index,
            name: s.name.clone(),
        })
        .collect();
    let unused_build_args = opts
        .build_args
        .keys()
        .filter(|k| !p.consumed.contains(*k) && !is_predefined(k))
        .cloned()
        .collect();
    let proxy_env = opts
        .build_args
        .iter()
        .filter(|(k, _)| scope::PROXY_ARGS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(Plan {
        target,
        stages,
        skipped,
        global_args,
        unused_build_args,
        proxy_env,
    })
}

fn stage_names(df: &Dockerfile) -> String {
    let names: Vec<String> = df.stages.iter().filter_map(|s| s.name.clone()).collect();
    if names.is_empty() {
        "none named".into()
    } else {
        names.join(", ")
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Visit {
    New,
    Active,
    Done,
}

impl Planner<'_> {
    fn src_error(&self, pos: Pos, msg: String) -> DockerfileError {
        DockerfileError::new(&self.df.file, &self.df.source, pos, msg)
    }

    /// ARGs before the first FROM: build args override defaults; defaults see earlier ones.
    fn global_args(&mut self) -> Result<Vec<(String, String)>, DockerfileError> {
        let src = self.df.source_ref();
        let mut out = Vec::new();
        for cmd in &self.df.global_arg_commands {
            let Instruction::Arg(defs) = &cmd.instruction else {
                continue;
            };
            for def in defs {
                self.consumed.insert(def.key.clone());
                let value = match (self.opts.build_args.get(&def.key), &def.value) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(d)) => Some(
                        self.lexer
                            .process_word(d, &self.global)
                            .map_err(|e| src.error(&cmd.node, d, format!("ARG: {e}")))?,
                    ),
                    (None, None) => None,
                };
                if let Some(v) = value {
                    self.global.set(&def.key, &v);
                    out.push((def.key.clone(), v));
                }
            }
        }
        Ok(out)
    }

    /// Expands every FROM with the global scope and decides image, stage or scratch.
    fn resolve_bases(&mut self) -> Result<(), DockerfileError> {
        let src = self.df.source_ref();
        for stage in &self.df.stages {
            let from_cmd = &stage.from_node;
            let word = |w: &str| {
                self.lexer
                    .process_word(w, &self.global)
                    .map_err(|e| src.error(from_cmd, w, format!("FROM: {e}")))
            };
            let base_text = word(&stage.base)?;
            if base_text.is_empty() {
                return Err(src.error(
                    from_cmd,
                    &stage.base,
                    format!("FROM: base name ({}) should not be blank", stage.base),
                ));
            }
            // Only an earlier stage can be a base; any other name is an image.
            let base = if base_text == "scratch" {
                Base::Scratch
            } else {
                match self.df.stage_by_name(&base_text) {
                    Some(i) if i < stage.index => Base::Stage(i),
                    _ => Base::Image(base_text),
                }
            };
            // A stage built on another stage inherits its platform unless it names one.
            let platform = match (&stage.platform, &base) {
                (Some(p), _) => {
                    let t = word(p)?;
                    Platform::parse(&t)
                        .map_err(|e| src.error(from_cmd, "--platform", e.to_string()))?
                }
                (None, Base::Stage(b)) => self.platforms[*b].clone(),
                (None, _) => self.opts.target_platform.clone(),
            };
            self.bases.push(base);
            self.platforms.push(platform);
        }
        Ok(())
    }

    /// Depth-first from the target: dependencies first, cycles rejected.
    fn visit(
        &mut self,
        i: usize,
        state: &mut [Visit],
        order: &mut Vec<usize>,
    ) -> Result<(), DockerfileError> {
        match state[i] {
            Visit::Done => return Ok(()),
            Visit::Active => {
                let s = &self.df.stages[i];
                return Err(self.src_error(
                    s.pos,
                    format!(
                        "circular dependency detected on stage: {}",
                        s.name.clone().unwrap_or_else(|| i.to_string())
                    ),
                ));
            }
            Visit::New => {}
        }
        state[i] = Visit::Active;
        if let Base::Stage(b) = self.bases[i] {
            self.visit(b, state, order)?;
        }
        self.expand_stage(i);
        let deps: Vec<usize> = match self.done.get(&i) {
            Some(Ok(s)) => s
                .sources
                .iter()
                .filter_map(|d| match d {
                    Source::Stage(j) => Some(*j),
                    Source::Image(_) => None,
                })
                .collect(),
            Some(Err(e)) => return Err(e.clone()),
            None => Vec::new(),
        };
        for d in deps {
            self.visit(d, state, order)?;
        }
        state[i] = Visit::Done;
        order.push(i);
        Ok(())
    }

    /// Resolves a `--from` value: a stage name, a stage index, or an image.
    fn source_of(&self, stage: usize, from: &str) -> Result<Source, String> {
        if let Some(j) = self.df.stage_by_name(from) {
            if j >= stage {
                return Err(format!(
                    "cannot copy from stage {from:?}, it needs to be defined before the current stage (stage {stage})"
                ));
            }
            return Ok(Source::Stage(j));
        }
        if let Ok(n) = from.parse::<usize>() {
            if n >= stage {
                return Err(format!(
                    "invalid stage index {n}: --from can only use a stage defined before the current one (this is stage {stage})"
                ));
            }
            return Ok(Source::Stage(n));
        }
        Ok(Source::Image(from.to_string()))
    }

    fn expand_stage(&mut self, i: usize) {
        if self.done.contains_key(&i) {
            return;
        }
        let result = self.expand_stage_inner(i);
        self.done.insert(i, result);
    }

    fn expand_stage_inner(&mut self, i: usize) -> Result<PlannedStage, DockerfileError> {
        let stage = &self.df.stages[i];
        let base = self.bases[i].clone();
        let platform = self.platforms[i].clone();
        // A stage built on another stage starts from its ENV and its ARG
        // values (BuildKit copies the base state's env and build args).
        let (inherited, inherited_args) = match &base {
            Base::Scratch => (Vec::new(), Vec::new()),
            Base::Image(r) => (self.base_env.env(r, &platform), Vec::new()),
            Base::Stage(b) => match self.done.get(b) {
                Some(Ok(s)) => (s.env.clone(), s.args.clone()),
                _ => (Vec::new(), Vec::new()),
            },
        };
        let env = from_pairs(&inherited);
        let args = from_pairs(&inherited_args);
        let mut scope = env.clone();
        for (k, v) in &inherited_args {
            scope.set(k, v);
        }
        let mut x = StageExpander {
            src: self.df.source_ref(),
            lexer: self.lexer,
            scope,
            env,
            args,
            build_args: &self.opts.build_args,
            global: &self.global,
            consumed: BTreeSet::new(),
        };
        let mut steps = Vec::new();
        let mut sources = Vec::new();
        // ONBUILD triggers of a base stage run first, as if written right after FROM.
        let triggers: Vec<&crate::frontend::instructions::Command> = match &base {
            Base::Stage(b) => self.df.stages[*b]
                .commands
                .iter()
                .filter_map(|c| match &c.instruction {
                    Instruction::Onbuild { inner, .. } => Some(inner.as_ref()),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        for cmd in triggers.into_iter().chain(stage.commands.iter()) {
            let e = x.step(cmd)?;
            for from in &e.froms {
                // source_of only accepts earlier stages, so a stage never uses itself.
                let s = self
                    .source_of(i, from)
                    .map_err(|msg| x.src.error(&cmd.node, from, msg))?;
                if !sources.contains(&s) {
                    sources.push(s);
                }
            }
            steps.push(Step {
                pos: cmd.pos(),
                text: render::render(&e.instruction),
                instruction: e.instruction,
                build_args: pairs(&x.args),
                undefined: e.undefined.into_iter().collect(),
            });
        }
        self.consumed.extend(x.consumed);
        Ok(PlannedStage {
            index: i,
            name: stage.name.clone(),
            base,
            platform,
            sources,
            steps,
            env: pairs(&x.env),
            args: pairs(&x.args),
            pos: stage.pos,
        })
    }
}

#[cfg(test)]
mod tests;

//! ONBUILD triggers of FROM images. As BuildKit does, each trigger stored in
//! the base image's config (`OnBuild`) is parsed as one Dockerfile
//! instruction and run in order right after FROM, before the stage's own
//! instructions, in the child's context; the child's config then starts
//! with no triggers. Triggers of a base *stage* are already put first by the
//! plan; this handles images.
//!
//! The triggers become ordinary commands of their stage (placed at the FROM
//! line, which is where BuildKit locates their errors too) and the
//! Dockerfile is planned again: expansion, build args, `COPY --from` edges
//! and the layer cache treat them as if written after FROM.

use std::borrow::Cow;

use crate::frontend::instructions::{parse_command, Command, Instruction, SourceRef};
use crate::frontend::parser;
use crate::frontend::stages::Dockerfile;
use crate::plan::{self, Base, Plan, PlanOptions, Step};

use super::bases::Bases;
use super::error::{EngineError, StepRef};
use super::Engine;

/// What error messages call a trigger's origin in place of a file name.
const TRIGGER_SOURCE: &str = "ONBUILD trigger";

/// Plans `df`, with the triggers of the images its needed stages start
/// from put first in those stages. Returns the Dockerfile that was planned
/// (borrowed when no base image has triggers).
pub(super) fn plan_with_triggers<'d>(
    df: &'d Dockerfile,
    opts: &PlanOptions,
    bases: &Bases<'_>,
) -> Result<(Cow<'d, Dockerfile>, Plan), EngineError> {
    let first = plan::plan(df, opts, bases);
    // Which stages start from an image comes from the plan; when it fails
    // (a value a trigger would have set, say), a plan of the bare stages
    // still tells.
    let stages = match &first {
        Ok(p) => p.stages.clone(),
        Err(_) => match plan::plan(&bare(df), opts, bases) {
            Ok(p) => p.stages,
            Err(_) => Vec::new(),
        },
    };
    let mut out: Option<Dockerfile> = None;
    for stage in &stages {
        let Base::Image(reference) = &stage.base else {
            continue;
        };
        let img = bases.get(reference, &stage.platform)?;
        let triggers = img
            .config
            .config
            .as_ref()
            .and_then(|c| c.on_build.clone())
            .unwrap_or_default();
        if triggers.is_empty() {
            continue;
        }
        let target = out.get_or_insert_with(|| df.clone());
        let Some(st) = target.stages.get_mut(stage.index) else {
            continue;
        };
        let from = StepRef::new(&df.file, st.pos, &format!("FROM {reference}"));
        let mut commands = Vec::with_capacity(triggers.len() + st.commands.len());
        for trigger in &triggers {
            let mut cmd = parse_trigger(trigger).map_err(|message| {
                from.fail(format!(
                    "ONBUILD trigger {trigger:?} of the base image: {message}"
                ))
            })?;
            cmd.node.pos = st.pos;
            cmd.node.end_line = st.pos.line;
            commands.push(cmd);
        }
        commands.append(&mut st.commands);
        st.commands = commands;
    }
    match out {
        None => {
            let plan = first.map_err(|e| EngineError::Other(e.to_string()))?;
            Ok((Cow::Borrowed(df), plan))
        }
        Some(expanded) => {
            let plan = plan::plan(&expanded, opts, bases)
                .map_err(|e| EngineError::Other(e.to_string()))?;
            Ok((Cow::Owned(expanded), plan))
        }
    }
}

/// `df` with every stage's instructions dropped (FROM lines and global ARGs kept).
fn bare(df: &Dockerfile) -> Dockerfile {
    let mut d = df.clone();
    for s in &mut d.stages {
        s.commands.clear();
    }
    d
}

/// One trigger as a command, refused as BuildKit and docker refuse it when
/// written: `ONBUILD ONBUILD`, `ONBUILD FROM`, `ONBUILD MAINTAINER`.
fn parse_trigger(trigger: &str) -> Result<Command, String> {
    // Parsed as the ONBUILD line that recorded it, which applies the same
    // checks to the instruction inside.
    let text = format!("ONBUILD {trigger}");
    let parsed = parser::parse(TRIGGER_SOURCE, &text).map_err(|e| e.message)?;
    let [node] = parsed.nodes.as_slice() else {
        return Err("a trigger must be exactly one instruction".into());
    };
    let src = SourceRef {
        file: TRIGGER_SOURCE,
        text: &text,
    };
    match parse_command(src, node).map_err(|e| e.message)?.instruction {
        Instruction::Onbuild { inner, .. } => Ok(*inner),
        _ => Err("not an instruction".into()),
    }
}

impl Engine<'_> {
    /// The base image whose trigger `step` is: trigger steps sit at their
    /// stage's FROM, where no written instruction can be.
    pub(super) fn trigger_base(&self, step: &Step) -> Option<&str> {
        self.plan
            .stages
            .iter()
            .find(|s| s.pos == step.pos)
            .and_then(|s| match &s.base {
                Base::Image(r) => Some(r.as_str()),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(trigger: &str) -> String {
        match parse_trigger(trigger) {
            Ok(c) => panic!("{trigger:?} parsed as {:?}", c.instruction),
            Err(e) => e,
        }
    }

    #[test]
    fn triggers_parse_as_one_instruction() {
        let c = parse_trigger("RUN echo hi > /onbuild").unwrap();
        assert!(matches!(c.instruction, Instruction::Run(_)), "{c:?}");
        let c = parse_trigger("COPY --chown=1:1 a b/").unwrap();
        assert!(matches!(c.instruction, Instruction::Copy(_)), "{c:?}");
        let c = parse_trigger("env A=1 B=2").unwrap();
        assert!(matches!(c.instruction, Instruction::Env(ref v) if v.len() == 2));
    }

    #[test]
    fn bad_triggers_are_refused_with_the_reason() {
        assert!(err("ONBUILD RUN x").contains("ONBUILD ONBUILD"));
        assert!(err("FROM busybox").contains("FROM isn't allowed as an ONBUILD trigger"));
        assert!(err("MAINTAINER me").contains("MAINTAINER isn't allowed"));
        assert!(err("COPY onlyone").contains("COPY requires at least two arguments"));
        assert!(err("BOGUS x")
            .to_lowercase()
            .contains("unknown instruction"));
        assert!(err("RUN a\nRUN b").contains("exactly one instruction"));
        assert!(err("").contains("ONBUILD requires at least one argument"));
    }
}

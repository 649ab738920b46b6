//! Groups typed commands into build stages: the global ARGs before the first
//! FROM, then one [`Stage`] per FROM. Stage names are unique and lower-cased.

use serde::Serialize;

use super::ast::Node;
use super::error::{DockerfileError, Pos};
use super::instructions::{
    doc_comment_for, parse_command, ArgDef, Command, Instruction, SourceRef,
};
use super::parser::Parsed;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// Position in the file, from 0 (what `COPY --from=N` refers to).
    pub index: usize,
    /// Lower-cased `AS` name.
    pub name: Option<String>,
    /// The FROM image or stage, as written (expanded by the plan).
    pub base: String,
    pub platform: Option<String>,
    pub commands: Vec<Command>,
    pub pos: Pos,
    pub doc_comment: String,
    /// The FROM line itself, to locate errors in its words.
    #[serde(skip)]
    pub from_node: Node,
}

impl Stage {
    /// How messages name the stage: `"builder"` or `#1`.
    pub fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("{n:?}"),
            None => format!("#{}", self.index),
        }
    }
}

/// A Dockerfile as stages.
#[derive(Debug, Clone, Serialize)]
pub struct Dockerfile {
    pub file: String,
    #[serde(skip)]
    pub source: String,
    pub escape: char,
    /// ARGs before the first FROM, usable in FROM lines.
    pub global_args: Vec<ArgDef>,
    #[serde(skip)]
    pub global_arg_commands: Vec<Command>,
    pub stages: Vec<Stage>,
}

impl Dockerfile {
    pub fn source_ref(&self) -> SourceRef<'_> {
        SourceRef {
            file: &self.file,
            text: &self.source,
        }
    }

    /// The index of the stage with this (case-insensitive) name.
    pub fn stage_by_name(&self, name: &str) -> Option<usize> {
        let lower = name.to_lowercase();
        self.stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
    }
}

/// Turns parsed nodes into stages, validating every instruction.
pub fn build_stages(parsed: &Parsed) -> Result<Dockerfile, DockerfileError> {
    let src = SourceRef {
        file: &parsed.file,
        text: &parsed.source,
    };
    let mut df = Dockerfile {
        file: parsed.file.clone(),
        source: parsed.source.clone(),
        escape: parsed.escape,
        global_args: Vec::new(),
        global_arg_commands: Vec::new(),
        stages: Vec::new(),
    };
    for node in &parsed.nodes {
        let cmd = parse_command(src, node)?;
        match &cmd.instruction {
            Instruction::From(from) => {
                if let Some(name) = &from.name {
                    if df.stage_by_name(name).is_some() {
                        return Err(src.error(
                            node,
                            &node.args[2],
                            format!("duplicate stage name {name:?}"),
                        ));
                    }
                }
                let doc_comment = from
                    .name
                    .as_deref()
                    .map(|n| doc_comment_for(&node.comments, n))
                    .unwrap_or_default();
                df.stages.push(Stage {
                    index: df.stages.len(),
                    name: from.name.clone(),
                    base: from.base.clone(),
                    platform: from.platform.clone(),
                    commands: Vec::new(),
                    pos: node.pos,
                    doc_comment,
                    from_node: node.clone(),
                });
            }
            Instruction::Arg(args) if df.stages.is_empty() => {
                df.global_args.extend(args.iter().cloned());
                df.global_arg_commands.push(cmd.clone());
            }
            _ => match df.stages.last_mut() {
                Some(stage) => stage.commands.push(cmd),
                None => {
                    return Err(src.error(
                        node,
                        "",
                        format!(
                            "no build stage in current context: {} must come after a FROM (only ARG may come before the first FROM)",
                            node.name()
                        ),
                    ))
                }
            },
        }
    }
    if df.stages.is_empty() {
        let pos = parsed.nodes.last().map_or(Pos::new(1, 1), |n| n.pos);
        return Err(DockerfileError::new(
            &parsed.file,
            &parsed.source,
            pos,
            "no build stage in the Dockerfile: it needs at least one FROM",
        ));
    }
    Ok(df)
}

/// Parses a whole Dockerfile text into stages.
pub fn parse_dockerfile(file: &str, text: &str) -> Result<Dockerfile, DockerfileError> {
    let parsed = super::parser::parse(file, text)?;
    build_stages(&parsed)
}

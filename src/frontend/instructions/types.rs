//! The typed form of each instruction, values as written (not expanded).

use serde::Serialize;

use super::Command;

/// A command line in shell form (run through SHELL) or exec form (JSON array).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum CommandLine {
    Shell(String),
    Exec(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDef {
    pub key: String,
    /// The default as written (quotes kept; expanded by the plan).
    pub value: Option<String>,
    pub doc_comment: String,
}

/// A heredoc body used as a file: a COPY/ADD source or a RUN inline file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InlineFile {
    pub name: String,
    /// COPY/ADD: leading tabs already removed for `<<-`; RUN: raw, see `chomp`.
    pub data: String,
    pub expand: bool,
    pub chomp: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourcesAndDest {
    pub dest: String,
    pub paths: Vec<String>,
    pub contents: Vec<InlineFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    pub base: String,
    pub name: Option<String>,
    pub platform: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    Default,
    None,
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub name: String,
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    pub cmd: CommandLine,
    pub files: Vec<InlineFile>,
    /// `--mount` values as written; parsed again after expansion by the plan.
    pub mounts: Vec<String>,
    pub network: Option<Network>,
    pub insecure: bool,
    pub devices: Vec<Device>,
    pub flags_used: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    pub src: SourcesAndDest,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Add {
    pub src: SourcesAndDest,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub keep_git_dir: bool,
    pub checksum: Option<String>,
    pub unpack: Option<bool>,
    pub exclude: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Healthcheck {
    /// `None` for `HEALTHCHECK NONE` (stored as `["NONE"]` in the config).
    pub test: Option<Vec<String>>,
    pub interval_ns: i64,
    pub timeout_ns: i64,
    pub start_period_ns: i64,
    pub start_interval_ns: i64,
    pub retries: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Instruction {
    From(From),
    Run(Run),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Shell(Vec<String>),
    Label(Vec<KeyValue>),
    Env(Vec<KeyValue>),
    Maintainer(String),
    Expose(Vec<String>),
    Add(Add),
    Copy(Copy),
    Volume(Vec<String>),
    User(String),
    Workdir(String),
    Arg(Vec<ArgDef>),
    Onbuild {
        /// The trigger text as written after ONBUILD (what the image config stores).
        expression: String,
        inner: Box<Command>,
    },
    Stopsignal(String),
    Healthcheck(Healthcheck),
}

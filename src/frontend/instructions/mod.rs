//! Typed instructions: each parsed [`Node`] becomes one [`Instruction`] with its
//! flags validated and its arguments checked, as BuildKit's `instructions`
//! package does. Nothing is expanded here: values stay as written so the plan
//! can expand them with the variables in scope.

use serde::Serialize;

mod duration;
pub mod mount;
mod types;
mod values;

use super::ast::Node;
use super::error::{DockerfileError, Pos};
use super::flags::{FlagError, Flags};
use super::heredoc::parse_heredoc_word;
pub use duration::parse_go_duration;
pub use mount::{parse_mount, Mount, MountType, Sharing};
pub use types::*;
use values::strip_keyword;
pub use values::{
    check_interval, doc_comment_for, handle_json_args, parse_device, valid_checksum, valid_chmod,
    valid_port_spec, valid_signal, valid_stage_name,
};

/// A typed instruction with the node it came from (position, original text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Command {
    pub instruction: Instruction,
    #[serde(skip)]
    pub node: Node,
}

impl Command {
    pub fn pos(&self) -> Pos {
        self.node.pos
    }
}

/// The file a node came from, for locating errors.
#[derive(Debug, Clone, Copy)]
pub struct SourceRef<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

impl SourceRef<'_> {
    /// An error at the first occurrence of `needle` within the node's lines,
    /// or at the instruction keyword when it cannot be found.
    pub fn error(&self, node: &Node, needle: &str, message: impl Into<String>) -> DockerfileError {
        DockerfileError::new(self.file, self.text, self.locate(node, needle), message)
    }

    pub fn locate(&self, node: &Node, needle: &str) -> Pos {
        if needle.is_empty() {
            return node.pos;
        }
        let last = node.end_line.max(node.pos.line);
        for (i, line) in self.text.split('\n').enumerate() {
            let no = i + 1;
            if no < node.pos.line {
                continue;
            }
            if no > last {
                break;
            }
            let from_col = if no == node.pos.line {
                node.pos.column.saturating_sub(1)
            } else {
                0
            };
            let start_byte = line
                .char_indices()
                .nth(from_col)
                .map_or(line.len(), |(b, _)| b);
            if let Some(b) = line[start_byte..].find(needle) {
                let col = line[..start_byte + b].chars().count() + 1;
                return Pos::new(no, col);
            }
        }
        node.pos
    }
}

/// Converts one parsed node into a typed command.
pub fn parse_command(src: SourceRef<'_>, node: &Node) -> Result<Command, DockerfileError> {
    let p = Parser { src, node };
    let instruction = p.instruction()?;
    Ok(Command {
        instruction,
        node: node.clone(),
    })
}

struct Parser<'a> {
    src: SourceRef<'a>,
    node: &'a Node,
}

impl Parser<'_> {
    fn err(&self, needle: &str, message: impl Into<String>) -> DockerfileError {
        self.src.error(self.node, needle, message)
    }

    fn flags(&self, declared: Flags) -> Result<Flags, DockerfileError> {
        declared
            .parse(&self.node.flags)
            .map_err(|FlagError { message, word }| self.err(&word, message))
    }

    fn name(&self) -> String {
        self.node.name()
    }

    fn exactly_one(&self) -> Result<String, DockerfileError> {
        match self.node.args.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(self.err("", format!("{} requires exactly one argument", self.name()))),
        }
    }

    fn at_least_one(&self) -> Result<(), DockerfileError> {
        if self.node.args.is_empty() {
            return Err(self.err(
                "",
                format!("{} requires at least one argument", self.name()),
            ));
        }
        Ok(())
    }

    fn command_line(&self) -> CommandLine {
        if self.node.json {
            CommandLine::Exec(self.node.args.clone())
        } else {
            CommandLine::Shell(handle_json_args(&self.node.args, false).concat())
        }
    }

    fn instruction(&self) -> Result<Instruction, DockerfileError> {
        let n = self.node;
        Ok(match n.keyword.as_str() {
            "from" => self.from()?,
            "run" => self.run()?,
            "cmd" => {
                self.flags(Flags::new())?;
                Instruction::Cmd(self.command_line())
            }
            "entrypoint" => {
                self.flags(Flags::new())?;
                Instruction::Entrypoint(self.command_line())
            }
            "shell" => {
                self.flags(Flags::new())?;
                if !n.json {
                    return Err(self.err("", "SHELL requires the arguments to be in JSON form"));
                }
                self.at_least_one()?;
                Instruction::Shell(n.args.clone())
            }
            "label" => Instruction::Label(self.key_values()?),
            "env" => Instruction::Env(self.key_values()?),
            "maintainer" => {
                self.flags(Flags::new())?;
                Instruction::Maintainer(self.exactly_one()?)
            }
            "expose" => {
                self.flags(Flags::new())?;
                self.at_least_one()?;
                Instruction::Expose(n.args.clone())
            }
            "add" => self.add()?,
            "copy" => self.copy()?,
            "volume" => {
                self.flags(Flags::new())?;
                self.at_least_one()?;
                if n.args.iter().any(|v| v.trim().is_empty()) {
                    return Err(self.err("", "VOLUME specified can not be an empty string"));
                }
                Instruction::Volume(n.args.clone())
            }
            "user" => {
                self.flags(Flags::new())?;
                Instruction::User(self.exactly_one()?)
            }
            "workdir" => {
                self.flags(Flags::new())?;
                Instruction::Workdir(self.exactly_one()?)
            }
            "stopsignal" => {
                self.flags(Flags::new())?;
                Instruction::Stopsignal(self.exactly_one()?)
            }
            "arg" => self.arg()?,
            "onbuild" => self.onbuild()?,
            "healthcheck" => self.healthcheck()?,
            _ => {
                let word = n.original.split_whitespace().next().unwrap_or(&n.keyword);
                return Err(self.err(word, format!("unknown instruction: {word}")));
            }
        })
    }

    fn from(&self) -> Result<Instruction, DockerfileError> {
        let f = self.flags(Flags::new().string("platform", ""))?;
        let args = &self.node.args;
        let name = match args.len() {
            1 => None,
            3 if args[1].eq_ignore_ascii_case("as") => {
                let name = args[2].to_lowercase();
                if !valid_stage_name(&name) {
                    return Err(self.err(
                        &args[2],
                        format!(
                            "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                            args[2]
                        ),
                    ));
                }
                Some(name)
            }
            _ => {
                return Err(self.err(
                    "",
                    "FROM requires either one or three arguments (FROM <image> [AS <name>])",
                ))
            }
        };
        Ok(Instruction::From(From {
            base: args[0].clone(),
            name,
            platform: f.get_opt_string("platform"),
        }))
    }

    fn run(&self) -> Result<Instruction, DockerfileError> {
        let f = self.flags(
            Flags::new()
                .strings("mount")
                .string("network", "default")
                .string("security", "sandbox")
                .strings("device"),
        )?;
        let network = match f.get_opt_string("network").as_deref() {
            None => None,
            Some("default") => Some(Network::Default),
            Some("none") => Some(Network::None),
            Some("host") => Some(Network::Host),
            Some(other) => {
                return Err(self.err("--network", format!("unsupported network mode {other:?}")))
            }
        };
        let insecure = match f.get_string("security").as_str() {
            "sandbox" => false,
            "insecure" => true,
            other => return Err(self.err("--security", format!("security {other:?} is not valid"))),
        };
        let mounts = f.get_strings("mount");
        for m in &mounts {
            parse_mount(m, &|s| Ok(s.to_string()))
                .map_err(|e| self.err(m, format!("invalid --mount={m}: {e}")))?;
        }
        let mut devices = Vec::new();
        for d in f.get_strings("device") {
            devices.push(parse_device(&d).map_err(|e| self.err(&d, e))?);
        }
        let files = self
            .node
            .heredocs
            .iter()
            .map(|h| InlineFile {
                name: h.name.clone(),
                data: h.content.clone(),
                expand: h.expand,
                chomp: h.chomp,
            })
            .collect();
        Ok(Instruction::Run(Run {
            cmd: self.command_line(),
            files,
            mounts,
            network,
            insecure,
            devices,
            flags_used: f.used().to_vec(),
        }))
    }

    fn key_values(&self) -> Result<Vec<KeyValue>, DockerfileError> {
        self.flags(Flags::new())?;
        let name = self.name();
        let args = &self.node.args;
        if args.is_empty() {
            return Err(self.err("", format!("{name} requires at least one argument")));
        }
        if !args.len().is_multiple_of(3) {
            return Err(self.err("", format!("Bad input to {name}, too many arguments")));
        }
        let mut out = Vec::new();
        for t in args.chunks(3) {
            if t[0].is_empty() {
                return Err(self.err("=", format!("{name} names can not be blank")));
            }
            out.push(KeyValue {
                key: t[0].clone(),
                value: t[1].clone(),
            });
        }
        Ok(out)
    }

    fn sources_and_dest(&self) -> Result<SourcesAndDest, DockerfileError> {
        let name = self.name();
        let args = &self.node.args;
        let Some((dest, srcs)) = args.split_last().filter(|(_, s)| !s.is_empty()) else {
            return Err(self.err(
                "",
                format!("{name} requires at least two arguments, but only one was provided. Destination could not be determined"),
            ));
        };
        let heredoc = |w: &str| parse_heredoc_word(w).map_err(|e| self.err(w, e.to_string()));
        if !self.node.json && heredoc(dest)?.is_some() {
            return Err(self.err(
                dest,
                format!("{name} cannot accept a heredoc as a destination"),
            ));
        }
        let mut paths = Vec::new();
        let mut contents = Vec::new();
        for s in srcs {
            match (self.node.json, heredoc(s)?) {
                (false, Some(h)) => {
                    let body = self
                        .node
                        .heredocs
                        .iter()
                        .find(|d| d.name == h.name)
                        .map(|d| d.content.clone())
                        .unwrap_or_default();
                    let data = if h.chomp {
                        super::heredoc::chomp(&body)
                    } else {
                        body
                    };
                    contents.push(InlineFile {
                        name: h.name,
                        data,
                        expand: h.expand,
                        chomp: h.chomp,
                    });
                }
                _ => paths.push(s.clone()),
            }
        }
        Ok(SourcesAndDest {
            dest: dest.clone(),
            paths,
            contents,
        })
    }

    fn copy(&self) -> Result<Instruction, DockerfileError> {
        let f = self.flags(
            Flags::new()
                .string("from", "")
                .string("chown", "")
                .string("chmod", "")
                .bool("link", false)
                .bool("parents", false)
                .strings("exclude"),
        )?;
        let src = self.sources_and_dest()?;
        let chmod = f.get_opt_string("chmod").filter(|s| !s.is_empty());
        self.check_chmod(chmod.as_deref())?;
        Ok(Instruction::Copy(Copy {
            src,
            from: f.get_opt_string("from").filter(|s| !s.is_empty()),
            chown: f.get_opt_string("chown").filter(|s| !s.is_empty()),
            chmod,
            link: f.get_bool("link"),
            parents: f.get_bool("parents"),
            exclude: f.get_strings("exclude"),
        }))
    }

    fn add(&self) -> Result<Instruction, DockerfileError> {
        let f = self.flags(
            Flags::new()
                .string("chown", "")
                .string("chmod", "")
                .bool("link", false)
                .bool("keep-git-dir", false)
                .string("checksum", "")
                .bool("unpack", false)
                .strings("exclude"),
        )?;
        let src = self.sources_and_dest()?;
        let chmod = f.get_opt_string("chmod").filter(|s| !s.is_empty());
        self.check_chmod(chmod.as_deref())?;
        let checksum = f.get_opt_string("checksum").filter(|s| !s.is_empty());
        if let Some(c) = &checksum {
            if !c.contains('$') && !valid_checksum(c) {
                return Err(self.err(
                    "--checksum",
                    format!(
                        "invalid checksum {c:?}: expected sha256:<64 hex digits> or a git commit"
                    ),
                ));
            }
        }
        Ok(Instruction::Add(Add {
            src,
            chown: f.get_opt_string("chown").filter(|s| !s.is_empty()),
            chmod,
            link: f.get_bool("link"),
            keep_git_dir: f.get_bool("keep-git-dir"),
            checksum,
            unpack: f.get_opt_bool("unpack"),
            exclude: f.get_strings("exclude"),
        }))
    }

    fn check_chmod(&self, chmod: Option<&str>) -> Result<(), DockerfileError> {
        match chmod {
            Some(c) if !c.contains('$') && !valid_chmod(c) => Err(self.err(
                "--chmod",
                format!("invalid chmod parameter {c:?}: expected an octal mode (755) or symbolic modes (u+x,go=rX)"),
            )),
            _ => Ok(()),
        }
    }

    fn arg(&self) -> Result<Instruction, DockerfileError> {
        self.flags(Flags::new())?;
        self.at_least_one()?;
        let mut out = Vec::new();
        for word in &self.node.args {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (word.clone(), None),
            };
            if key.is_empty() {
                return Err(self.err(word, "ARG names can not be blank"));
            }
            let doc_comment = doc_comment_for(&self.node.comments, &key);
            out.push(ArgDef {
                key,
                value,
                doc_comment,
            });
        }
        Ok(Instruction::Arg(out))
    }

    fn onbuild(&self) -> Result<Instruction, DockerfileError> {
        self.flags(Flags::new())?;
        let Some(inner) = &self.node.onbuild else {
            return Err(self.err("", "ONBUILD requires at least one argument"));
        };
        match inner.keyword.as_str() {
            "onbuild" => {
                return Err(self.err("", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"))
            }
            "from" | "maintainer" => {
                return Err(self.err(
                    "",
                    format!("{} isn't allowed as an ONBUILD trigger", inner.name()),
                ))
            }
            _ => {}
        }
        let cmd = parse_command(self.src, inner)?;
        let expression = strip_keyword(&self.node.original);
        Ok(Instruction::Onbuild {
            expression,
            inner: Box::new(cmd),
        })
    }

    fn healthcheck(&self) -> Result<Instruction, DockerfileError> {
        let f = self.flags(
            Flags::new()
                .string("interval", "")
                .string("timeout", "")
                .string("start-period", "")
                .string("start-interval", "")
                .string("retries", ""),
        )?;
        self.at_least_one()?;
        let args = &self.node.args;
        let kind = args[0].to_uppercase();
        let test = match kind.as_str() {
            "NONE" => {
                if args.len() > 1 {
                    return Err(self.err("", "HEALTHCHECK NONE takes no arguments"));
                }
                None
            }
            "CMD" => {
                let rest = &args[1..];
                if rest.is_empty() || (!self.node.json && rest.join("").trim().is_empty()) {
                    return Err(self.err("", "Missing command after HEALTHCHECK CMD"));
                }
                let mut t = Vec::new();
                if self.node.json {
                    t.push("CMD".to_string());
                    t.extend(rest.iter().cloned());
                } else {
                    t.push("CMD-SHELL".to_string());
                    t.push(rest.join(" "));
                }
                Some(t)
            }
            _ => {
                return Err(self.err(
                    &args[0],
                    format!("Unknown type {:?} in HEALTHCHECK (try CMD)", args[0]),
                ))
            }
        };
        let dur = |name: &str| -> Result<i64, DockerfileError> {
            let v = f.get_string(name);
            if v.is_empty() {
                return Ok(0);
            }
            let flag = format!("--{name}");
            let d = parse_go_duration(&v).map_err(|e| self.err(&flag, e))?;
            check_interval(name, d).map_err(|e| self.err(&flag, e))?;
            Ok(d)
        };
        let retries = match f.get_string("retries") {
            s if s.is_empty() => 0,
            s => {
                let r: i64 = s.parse().map_err(|_| {
                    self.err("--retries", format!("invalid value for --retries: {s:?}"))
                })?;
                if r < 0 {
                    return Err(
                        self.err("--retries", format!("--retries cannot be negative ({r})"))
                    );
                }
                r
            }
        };
        Ok(Instruction::Healthcheck(Healthcheck {
            test,
            interval_ns: dur("interval")?,
            timeout_ns: dur("timeout")?,
            start_period_ns: dur("start-period")?,
            start_interval_ns: dur("start-interval")?,
            retries,
        }))
    }
}

#[cfg(test)]
mod tests;

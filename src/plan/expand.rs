//! Expansion of one stage's instructions with BuildKit's rules: which
//! instructions expand, with which variables (ENV and ARG values in scope,
//! the values before the instruction), and how ARGs pick their values.

use std::collections::{BTreeMap, BTreeSet};

use crate::frontend::error::DockerfileError;
use crate::frontend::instructions::{
    parse_mount, valid_checksum, valid_chmod, valid_port_spec, valid_signal, Add, ArgDef, Command,
    Copy, Instruction, KeyValue, Run, SourceRef, SourcesAndDest,
};
use crate::frontend::shell::Lexer;

use super::scope::Vars;

/// What one expanded step carries forward.
#[derive(Debug, Clone)]
pub struct Expanded {
    pub instruction: Instruction,
    /// Names looked up during expansion that were not set.
    pub undefined: BTreeSet<String>,
    /// `COPY --from` and `RUN --mount from=` values: the step's edges in the stage graph.
    pub froms: Vec<String>,
}

/// Walks a stage's commands in order, keeping the variables in scope.
pub struct StageExpander<'a> {
    pub src: SourceRef<'a>,
    pub lexer: Lexer,
    /// ENV values as the image config will hold them.
    pub env: Vars,
    /// ENV and ARG values: what expansion and RUN see.
    pub scope: Vars,
    /// ARGs declared in this stage with their values, in declaration order.
    pub args: Vars,
    pub build_args: &'a BTreeMap<String, String>,
    pub global: &'a Vars,
    /// Every ARG name declared (for the unused-build-arg warning).
    pub consumed: BTreeSet<String>,
}

impl StageExpander<'_> {
    fn word(
        &self,
        cmd: &Command,
        word: &str,
        undefined: &mut BTreeSet<String>,
    ) -> Result<String, DockerfileError> {
        match self.lexer.process_word_with_matches(word, &self.scope) {
            Ok(x) => {
                undefined.extend(x.unmatched);
                Ok(x.value)
            }
            Err(e) => {
                let mut pos = self.src.locate(&cmd.node, word);
                if pos != cmd.node.pos {
                    pos.column += e.offset();
                }
                Err(DockerfileError::new(
                    self.src.file,
                    self.src.text,
                    pos,
                    format!("{}: {e}", cmd.node.name()),
                ))
            }
        }
    }

    fn opt(
        &self,
        cmd: &Command,
        w: &Option<String>,
        u: &mut BTreeSet<String>,
    ) -> Result<Option<String>, DockerfileError> {
        w.as_ref().map(|w| self.word(cmd, w, u)).transpose()
    }

    fn all(
        &self,
        cmd: &Command,
        words: &[String],
        u: &mut BTreeSet<String>,
    ) -> Result<Vec<String>, DockerfileError> {
        words.iter().map(|w| self.word(cmd, w, u)).collect()
    }

    fn sources(
        &self,
        cmd: &Command,
        s: &SourcesAndDest,
        u: &mut BTreeSet<String>,
    ) -> Result<SourcesAndDest, DockerfileError> {
        Ok(SourcesAndDest {
            dest: self.word(cmd, &s.dest, u)?,
            paths: self.all(cmd, &s.paths, u)?,
            // Heredoc bodies are expanded when the file is written, not here.
            contents: s.contents.clone(),
        })
    }

    /// Expands one command and applies its effect on the variables in scope.
    pub fn step(&mut self, cmd: &Command) -> Result<Expanded, DockerfileError> {
        let mut u = BTreeSet::new();
        let mut froms = Vec::new();
        let instruction = match &cmd.instruction {
            Instruction::Env(kvs) => {
                let kvs = self.key_values(cmd, kvs, &mut u)?;
                for kv in &kvs {
                    self.env.set(&kv.key, &kv.value);
                    self.scope.set(&kv.key, &kv.value);
                }
                Instruction::Env(kvs)
            }
            Instruction::Label(kvs) => Instruction::Label(self.key_values(cmd, kvs, &mut u)?),
            Instruction::Arg(defs) => Instruction::Arg(self.arg(cmd, defs, &mut u)?),
            Instruction::Copy(c) => Instruction::Copy(Copy {
                src: self.sources(cmd, &c.src, &mut u)?,
                from: self.copy_from(cmd, &c.from)?,
                chown: self.opt(cmd, &c.chown, &mut u)?,
                chmod: self.opt(cmd, &c.chmod, &mut u)?,
                exclude: self.all(cmd, &c.exclude, &mut u)?,
                ..c.clone()
            }),
            Instruction::Add(a) => Instruction::Add(Add {
                src: self.sources(cmd, &a.src, &mut u)?,
                chown: self.opt(cmd, &a.chown, &mut u)?,
                chmod: self.opt(cmd, &a.chmod, &mut u)?,
                checksum: self.opt(cmd, &a.checksum, &mut u)?,
                exclude: self.all(cmd, &a.exclude, &mut u)?,
                ..a.clone()
            }),
            Instruction::Expose(ports) => {
                let mut out = Vec::new();
                for p in ports {
                    let words = self
                        .lexer
                        .process_words(p, &self.scope)
                        .map_err(|e| self.src.error(&cmd.node, p, format!("EXPOSE: {e}")))?;
                    out.extend(words);
                }
                if let Some(bad) = out.iter().find(|p| !valid_port_spec(p)) {
                    return Err(self.src.error(
                        &cmd.node,
                        "",
                        format!(
                            "EXPOSE: invalid port {bad:?}: expected PORT[-PORT][/tcp|/udp|/sctp]"
                        ),
                    ));
                }
                Instruction::Expose(out)
            }
            Instruction::Volume(v) => {
                let v = self.all(cmd, v, &mut u)?;
                if v.iter().any(|p| p.trim().is_empty()) {
                    return Err(self.src.error(
                        &cmd.node,
                        "",
                        "VOLUME specified can not be an empty string",
                    ));
                }
                Instruction::Volume(v)
            }
            Instruction::User(s) => Instruction::User(self.word(cmd, s, &mut u)?),
            Instruction::Workdir(s) => Instruction::Workdir(self.word(cmd, s, &mut u)?),
            Instruction::Stopsignal(s) => {
                let sig = self.word(cmd, s, &mut u)?;
                if !valid_signal(&sig) {
                    return Err(self.src.error(
                        &cmd.node,
                        s,
                        format!("invalid signal: {sig:?} (a number or a name like SIGTERM)"),
                    ));
                }
                Instruction::Stopsignal(sig)
            }
            Instruction::Run(r) => Instruction::Run(self.run(cmd, r, &mut u, &mut froms)?),
            other => other.clone(),
        };
        self.check_values(cmd, &instruction)?;
        if let Instruction::Copy(c) = &instruction {
            froms.extend(c.from.iter().cloned());
        }
        Ok(Expanded {
            instruction,
            undefined: u,
            froms,
        })
    }

    /// `--from` is never expanded (BuildKit refuses it), so the graph is known before any stage runs.
    fn copy_from(
        &self,
        cmd: &Command,
        from: &Option<String>,
    ) -> Result<Option<String>, DockerfileError> {
        match from {
            Some(f) if f.contains('$') => Err(self.src.error(
                &cmd.node,
                f,
                "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround",
            )),
            other => Ok(other.clone()),
        }
    }

    /// Values that could only be checked once their variables were expanded.
    fn check_values(&self, cmd: &Command, i: &Instruction) -> Result<(), DockerfileError> {
        let (chmod, checksum) = match i {
            Instruction::Copy(c) => (c.chmod.as_deref(), None),
            Instruction::Add(a) => (a.chmod.as_deref(), a.checksum.as_deref()),
            _ => return Ok(()),
        };
        if let Some(m) = chmod.filter(|m| !valid_chmod(m)) {
            return Err(self.src.error(
                &cmd.node,
                "--chmod",
                format!("invalid chmod parameter {m:?}: expected an octal mode (755) or symbolic modes (u+x,go=rX)"),
            ));
        }
        if let Some(c) = checksum.filter(|c| !valid_checksum(c)) {
            return Err(self.src.error(
                &cmd.node,
                "--checksum",
                format!("invalid checksum {c:?}: expected sha256:<64 hex digits> or a git commit"),
            ));
        }
        Ok(())
    }

    fn key_values(
        &self,
        cmd: &Command,
        kvs: &[KeyValue],
        u: &mut BTreeSet<String>,
    ) -> Result<Vec<KeyValue>, DockerfileError> {
        // Every substitution in one instruction sees the values from before it.
        kvs.iter()
            .map(|kv| {
                Ok(KeyValue {
                    key: self.word(cmd, &kv.key, u)?,
                    value: self.word(cmd, &kv.value, u)?,
                })
            })
            .collect()
    }

    fn arg(
        &mut self,
        cmd: &Command,
        defs: &[ArgDef],
        u: &mut BTreeSet<String>,
    ) -> Result<Vec<ArgDef>, DockerfileError> {
        let mut out = Vec::new();
        for def in defs {
            self.consumed.insert(def.key.clone());
            let value = if let Some(v) = self.build_args.get(&def.key) {
                Some(v.clone())
            } else if let Some(d) = &def.value {
                Some(self.word(cmd, d, u)?)
            } else {
                // `ARG NAME` alone inherits the global value (platform ARGs included).
                self.global.get(&def.key).map(str::to_string)
            };
            if let Some(v) = &value {
                self.scope.set(&def.key, v);
                self.args.set(&def.key, v);
            }
            out.push(ArgDef {
                value,
                ..def.clone()
            });
        }
        Ok(out)
    }

    fn run(
        &self,
        cmd: &Command,
        r: &Run,
        u: &mut BTreeSet<String>,
        froms: &mut Vec<String>,
    ) -> Result<Run, DockerfileError> {
        let mut mounts = Vec::new();
        for m in &r.mounts {
            // One expansion per field: it yields the value and the names it missed.
            let missed = std::cell::RefCell::new(BTreeSet::new());
            let expand = |w: &str| -> Result<String, String> {
                let x = self
                    .lexer
                    .process_word_with_matches(w, &self.scope)
                    .map_err(|e| e.to_string())?;
                missed.borrow_mut().extend(x.unmatched);
                Ok(x.value)
            };
            let parsed = parse_mount(m, &expand).map_err(|e| {
                self.src
                    .error(&cmd.node, m, format!("invalid --mount={m}: {e}"))
            })?;
            u.extend(missed.into_inner());
            froms.extend(parsed.from.iter().cloned());
            mounts.push(mount_value(&parsed));
        }
        Ok(Run {
            mounts,
            ..r.clone()
        })
    }
}

/// Writes a parsed mount back as a canonical `--mount` value.
fn mount_value(m: &crate::frontend::instructions::Mount) -> String {
    let mut f = vec![format!("type={}", m.kind.as_str())];
    let mut push = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            f.push(format!("{k}={v}"));
        }
    };
    // An id that only repeats its default (a cache's target) is left out.
    let default_id = m.kind == crate::frontend::instructions::MountType::Cache && m.id == m.target;
    if !default_id {
        push("id", &m.id);
    }
    push("from", &m.from);
    push("source", &m.source);
    push("target", &m.target);
    push("env", &m.env);
    if m.kind == crate::frontend::instructions::MountType::Cache
        && m.sharing != crate::frontend::instructions::Sharing::Shared
    {
        f.push(format!(
            "sharing={}",
            format!("{:?}", m.sharing).to_lowercase()
        ));
    }
    if let Some(mode) = m.mode {
        f.push(format!("mode={mode:04o}"));
    }
    if let Some(uid) = m.uid {
        f.push(format!("uid={uid}"));
    }
    if let Some(gid) = m.gid {
        f.push(format!("gid={gid}"));
    }
    if let Some(size) = m.size {
        f.push(format!("size={size}"));
    }
    if m.required {
        f.push("required".into());
    }
    let default_ro = !matches!(
        m.kind,
        crate::frontend::instructions::MountType::Cache
            | crate::frontend::instructions::MountType::Tmpfs
    );
    if m.read_only != default_ro {
        f.push(if m.read_only {
            "ro".into()
        } else {
            "rw".into()
        });
    }
    f.join(",")
}

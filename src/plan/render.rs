//! Expanded instructions written back as Dockerfile text, for `--dry-run`
//! and for history entries.

use crate::frontend::instructions::{CommandLine, Instruction, KeyValue, Network, SourcesAndDest};

fn json(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn cmdline(c: &CommandLine) -> String {
    match c {
        CommandLine::Shell(s) => s.clone(),
        CommandLine::Exec(v) => json(v),
    }
}

/// Quotes a value only when it would not survive word splitting as it is.
fn quote(v: &str) -> String {
    if !v.is_empty()
        && !v
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | '$'))
    {
        v.to_string()
    } else {
        format!("{v:?}")
    }
}

fn kvs(list: &[KeyValue]) -> String {
    list.iter()
        .map(|kv| format!("{}={}", quote(&kv.key), quote(&kv.value)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn sources(s: &SourcesAndDest) -> String {
    let mut parts: Vec<String> = s.paths.clone();
    parts.extend(s.contents.iter().map(|c| format!("<<{}", c.name)));
    parts.push(s.dest.clone());
    parts.join(" ")
}

fn flag(out: &mut Vec<String>, name: &str, v: &Option<String>) {
    if let Some(v) = v {
        out.push(format!("--{name}={v}"));
    }
}

/// One line of Dockerfile text for an (expanded) instruction.
pub fn render(i: &Instruction) -> String {
    let mut f: Vec<String> = Vec::new();
    let (kw, rest) = match i {
        Instruction::From(x) => {
            flag(&mut f, "platform", &x.platform);
            let mut r = x.base.clone();
            if let Some(n) = &x.name {
                r.push_str(" AS ");
                r.push_str(n);
            }
            ("FROM", r)
        }
        Instruction::Run(r) => {
            for m in &r.mounts {
                f.push(format!("--mount={m}"));
            }
            match r.network {
                Some(Network::None) => f.push("--network=none".into()),
                Some(Network::Host) => f.push("--network=host".into()),
                Some(Network::Default) | None => {}
            }
            if r.insecure {
                f.push("--security=insecure".into());
            }
            for d in &r.devices {
                f.push(format!(
                    "--device={}{}",
                    d.name,
                    if d.required { ",required" } else { "" }
                ));
            }
            ("RUN", cmdline(&r.cmd))
        }
        Instruction::Cmd(c) => ("CMD", cmdline(c)),
        Instruction::Entrypoint(c) => ("ENTRYPOINT", cmdline(c)),
        Instruction::Shell(v) => ("SHELL", json(v)),
        Instruction::Label(l) => ("LABEL", kvs(l)),
        Instruction::Env(l) => ("ENV", kvs(l)),
        Instruction::Maintainer(m) => ("MAINTAINER", m.clone()),
        Instruction::Expose(p) => ("EXPOSE", p.join(" ")),
        Instruction::Add(a) => {
            flag(&mut f, "chown", &a.chown);
            flag(&mut f, "chmod", &a.chmod);
            flag(&mut f, "checksum", &a.checksum);
            if a.link {
                f.push("--link".into());
            }
            if a.keep_git_dir {
                f.push("--keep-git-dir".into());
            }
            if let Some(u) = a.unpack {
                f.push(format!("--unpack={u}"));
            }
            f.extend(a.exclude.iter().map(|e| format!("--exclude={e}")));
            ("ADD", sources(&a.src))
        }
        Instruction::Copy(c) => {
            flag(&mut f, "from", &c.from);
            flag(&mut f, "chown", &c.chown);
            flag(&mut f, "chmod", &c.chmod);
            if c.link {
                f.push("--link".into());
            }
            if c.parents {
                f.push("--parents".into());
            }
            f.extend(c.exclude.iter().map(|e| format!("--exclude={e}")));
            ("COPY", sources(&c.src))
        }
        Instruction::Volume(v) => ("VOLUME", json(v)),
        Instruction::User(u) => ("USER", u.clone()),
        Instruction::Workdir(w) => ("WORKDIR", w.clone()),
        Instruction::Arg(defs) => (
            "ARG",
            defs.iter()
                .map(|d| match &d.value {
                    Some(v) => format!("{}={}", d.key, quote(v)),
                    None => d.key.clone(),
                })
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Instruction::Onbuild { expression, .. } => ("ONBUILD", expression.clone()),
        Instruction::Stopsignal(s) => ("STOPSIGNAL", s.clone()),
        Instruction::Healthcheck(h) => {
            for (name, ns) in [
                ("interval", h.interval_ns),
                ("timeout", h.timeout_ns),
                ("start-period", h.start_period_ns),
                ("start-interval", h.start_interval_ns),
            ] {
                if ns != 0 {
                    f.push(format!("--{name}={}", fmt_duration(ns)));
                }
            }
            if h.retries != 0 {
                f.push(format!("--retries={}", h.retries));
            }
            let rest = match &h.test {
                None => "NONE".to_string(),
                Some(t) if t.first().map(String::as_str) == Some("CMD-SHELL") => {
                    format!("CMD {}", t[1..].join(" "))
                }
                Some(t) => format!("CMD {}", json(&t[1..])),
            };
            ("HEALTHCHECK", rest)
        }
    };
    let mut out = kw.to_string();
    for flag in f {
        out.push(' ');
        out.push_str(&flag);
    }
    if !rest.is_empty() {
        out.push(' ');
        out.push_str(&rest);
    }
    out
}

/// Go-style duration text (`30s`, `1m30s`, `500ms`).
pub fn fmt_duration(ns: i64) -> String {
    if ns % 1_000_000_000 != 0 {
        return if ns % 1_000_000 == 0 {
            format!("{}ms", ns / 1_000_000)
        } else {
            format!("{ns}ns")
        };
    }
    let mut s = ns / 1_000_000_000;
    let mut out = String::new();
    if s >= 3600 {
        out.push_str(&format!("{}h", s / 3600));
        s %= 3600;
    }
    if s >= 60 {
        out.push_str(&format!("{}m", s / 60));
        s %= 60;
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

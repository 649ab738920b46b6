//! `--change 'CMD ["sh"]'` (docker import/commit): Dockerfile instructions
//! applied to an image config. Parsed by kiln's own Dockerfile frontend, so
//! quoting, JSON forms and variable expansion behave as in a Dockerfile.

use std::collections::BTreeMap;

use crate::frontend::instructions::{parse_command, CommandLine, Instruction, SourceRef};
use crate::frontend::parser::parse;
use crate::frontend::shell::{EnvList, Lexer};

use super::ContainerConfig;

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("--change {change:?}: {message}")]
    Invalid { change: String, message: String },
}

/// The instructions `--change` accepts (docker's list for import/commit).
const ALLOWED: &str =
    "CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR";

/// Applies each change, in order, to `cfg`. Values are expanded with the
/// config's `Env` as it is at that point, as a Dockerfile would.
pub fn apply_changes(cfg: &mut ContainerConfig, changes: &[String]) -> Result<(), ChangeError> {
    for change in changes {
        let err = |message: String| ChangeError::Invalid {
            change: change.clone(),
            message,
        };
        let parsed = parse("--change", change).map_err(|e| err(e.to_string()))?;
        let src = SourceRef {
            file: "--change",
            text: change,
        };
        for node in &parsed.nodes {
            let cmd = parse_command(src, node).map_err(|e| err(e.to_string()))?;
            apply(cfg, cmd.instruction).map_err(err)?;
        }
    }
    Ok(())
}

fn exec_form(c: CommandLine) -> Vec<String> {
    match c {
        CommandLine::Exec(v) => v,
        CommandLine::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s],
    }
}

fn apply(cfg: &mut ContainerConfig, ins: Instruction) -> Result<(), String> {
    let env = EnvList::from_list(cfg.env.as_deref().unwrap_or_default());
    let lexer = Lexer::new('\\');
    let expand = |w: &str| lexer.process_word(w, &env).map_err(|e| e.to_string());
    match ins {
        Instruction::Cmd(c) => cfg.cmd = Some(Some(exec_form(c))),
        Instruction::Entrypoint(c) => cfg.entrypoint = Some(Some(exec_form(c))),
        Instruction::Env(kvs) => {
            let mut list = env.clone();
            for kv in kvs {
                let v = expand(&kv.value)?;
                list.set(&kv.key, &v);
            }
            cfg.env = Some(list.iter().map(|(k, v)| format!("{k}={v}")).collect());
        }
        Instruction::Label(kvs) => {
            let labels = cfg.labels.get_or_insert_with(BTreeMap::new);
            for kv in kvs {
                labels.insert(expand(&kv.key)?, expand(&kv.value)?);
            }
        }
        Instruction::Expose(ports) => {
            let set = cfg.exposed_ports.get_or_insert_with(BTreeMap::new);
            for p in ports {
                let p = expand(&p)?;
                let p = if p.contains('/') {
                    p
                } else {
                    format!("{p}/tcp")
                };
                set.insert(p, serde_json::Map::new());
            }
        }
        Instruction::Volume(vols) => {
            let set = cfg.volumes.get_or_insert_with(BTreeMap::new);
            for v in vols {
                set.insert(expand(&v)?, serde_json::Map::new());
            }
        }
        Instruction::User(u) => cfg.user = Some(expand(&u)?),
        Instruction::Workdir(w) => {
            let w = expand(&w)?;
            // A relative WORKDIR is relative to the previous one, as in a Dockerfile.
            cfg.working_dir = Some(if w.starts_with('/') {
                w
            } else {
                let base = cfg.working_dir.clone().unwrap_or_else(|| "/".into());
                format!("{}/{w}", base.trim_end_matches('/'))
            });
        }
        Instruction::Stopsignal(s) => cfg.stop_signal = Some(expand(&s)?),
        Instruction::Onbuild { expression, .. } => {
            cfg.on_build.get_or_insert_with(Vec::new).push(expression)
        }
        other => {
            let name = format!("{other:?}");
            let name = name
                .split(['(', ' ', '{'])
                .next()
                .unwrap_or("")
                .to_uppercase();
            return Err(format!("{name} is not allowed here (allowed: {ALLOWED})"));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_like_a_dockerfile() {
        let mut cfg = ContainerConfig::default();
        let changes: Vec<String> = [
            r#"CMD ["sh"]"#,
            "ENTRYPOINT /bin/init --x",
            "ENV A=1 B=\"two words\"",
            "ENV C=${A}-x",
            "EXPOSE 80 53/udp",
            "LABEL a=b \"c d\"=e",
            "USER 1000:1000",
            "WORKDIR /app",
            "WORKDIR sub",
            "VOLUME /data",
            "STOPSIGNAL SIGTERM",
            "ONBUILD RUN echo hi",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        apply_changes(&mut cfg, &changes).unwrap();
        assert_eq!(cfg.cmd, Some(Some(vec!["sh".to_string()])));
        assert_eq!(
            cfg.entrypoint,
            Some(Some(vec![
                "/bin/sh".into(),
                "-c".into(),
                "/bin/init --x".into()
            ]))
        );
        assert_eq!(
            cfg.env,
            Some(vec!["A=1".into(), "B=two words".into(), "C=1-x".into()])
        );
        let ports: Vec<_> = cfg.exposed_ports.unwrap().into_keys().collect();
        assert_eq!(ports, ["53/udp", "80/tcp"]);
        assert_eq!(cfg.labels.unwrap()["c d"], "e");
        assert_eq!(cfg.user.as_deref(), Some("1000:1000"));
        assert_eq!(cfg.working_dir.as_deref(), Some("/app/sub"));
        assert!(cfg.volumes.unwrap().contains_key("/data"));
        assert_eq!(cfg.stop_signal.as_deref(), Some("SIGTERM"));
        assert_eq!(cfg.on_build, Some(vec!["RUN echo hi".to_string()]));

        let mut cfg = ContainerConfig::default();
        for bad in ["RUN true", "FROM x", "NOPE x", "ENV"] {
            let e = apply_changes(&mut cfg, &[bad.to_string()])
                .err()
                .unwrap_or_else(|| panic!("{bad} accepted"));
            assert!(
                e.to_string().contains(bad.split(' ').next().unwrap()),
                "{e}"
            );
        }
    }
}

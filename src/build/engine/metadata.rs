//! Instructions that only change the image config (ENV, LABEL, CMD, …), and
//! the `created_by` text BuildKit records for each instruction in history.

use std::collections::BTreeMap;

use crate::frontend::instructions::{CommandLine, Healthcheck, Instruction, KeyValue};
use crate::image;

use super::state::ImageState;

/// The exec form of a CMD/ENTRYPOINT/HEALTHCHECK line: shell form goes
/// through the image's SHELL (default `/bin/sh -c`), as BuildKit does.
pub fn exec_form(c: &CommandLine, shell: &[String]) -> Vec<String> {
    match c {
        CommandLine::Exec(v) => v.clone(),
        CommandLine::Shell(s) => {
            let mut v = shell.to_vec();
            v.push(s.clone());
            v
        }
    }
}

/// The image's SHELL, or `/bin/sh -c`.
pub fn shell_of(state: &ImageState) -> Vec<String> {
    state
        .config
        .config
        .as_ref()
        .and_then(|c| c.shell.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
}

/// Go's `%q` of a string slice (`["a" "b"]`), which BuildKit's history uses.
pub fn go_quoted(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", items.join(" "))
}

fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn kv_text(kvs: &[KeyValue]) -> String {
    kvs.iter()
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sets `K=V` in an env list (replacing an earlier `K`).
pub fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map(|(k, _)| k) == Some(key) || e.as_str() == key)
    {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

/// WORKDIR `dir` relative to the current one.
pub fn resolve_workdir(current: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') {
        dir.to_string()
    } else {
        let base = if current.is_empty() { "/" } else { current };
        format!("{}/{dir}", base.trim_end_matches('/'))
    };
    clean_path(&joined)
}

/// Lexically cleans an absolute path (`/a/./b/../c` → `/a/c`).
pub fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Applies a config-only instruction to `state`; returns the history text,
/// or `None` when `ins` is not config-only.
pub fn apply(state: &mut ImageState, ins: &Instruction) -> Option<String> {
    let shell = shell_of(state);
    let text = match ins {
        Instruction::Env(kvs) => {
            let mut env = state.env();
            for kv in kvs {
                set_env(&mut env, &kv.key, &kv.value);
            }
            state.container().env = Some(env);
            format!("ENV {}", kv_text(kvs))
        }
        Instruction::Label(kvs) => {
            let labels = state.container().labels.get_or_insert_with(BTreeMap::new);
            for kv in kvs {
                labels.insert(kv.key.clone(), kv.value.clone());
            }
            format!("LABEL {}", kv_text(kvs))
        }
        Instruction::Arg(defs) => {
            let list: Vec<String> = defs
                .iter()
                .map(|d| match &d.value {
                    Some(v) => format!("{}={v}", d.key),
                    None => d.key.clone(),
                })
                .collect();
            format!("ARG {}", list.join(" "))
        }
        Instruction::Cmd(c) => {
            let v = exec_form(c, &shell);
            state.cmd_set = true;
            state.container().cmd = Some(Some(v.clone()));
            format!("CMD {}", go_quoted(&v))
        }
        Instruction::Entrypoint(c) => {
            let v = exec_form(c, &shell);
            // A CMD inherited from the base is dropped (docker's rule); one
            // set earlier in this stage is kept.
            if !state.cmd_set {
                state.container().cmd = None;
            }
            state.container().entrypoint = Some(Some(v.clone()));
            format!("ENTRYPOINT {}", go_quoted(&v))
        }
        Instruction::Expose(ports) => {
            let set = state
                .container()
                .exposed_ports
                .get_or_insert_with(BTreeMap::new);
            let mut shown = Vec::new();
            for p in ports {
                for p in expand_port_range(p) {
                    set.insert(p.clone(), serde_json::Map::new());
                    shown.push(p);
                }
            }
            shown.sort();
            shown.dedup();
            let items: Vec<String> = shown.iter().map(|p| format!("{p}:{{}}")).collect();
            format!("EXPOSE map[{}]", items.join(" "))
        }
        Instruction::Volume(vols) => {
            let set = state.container().volumes.get_or_insert_with(BTreeMap::new);
            for v in vols {
                set.insert(v.clone(), serde_json::Map::new());
            }
            format!("VOLUME [{}]", vols.join(" "))
        }
        Instruction::User(u) => {
            state.container().user = Some(u.clone());
            format!("USER {u}")
        }
        Instruction::Stopsignal(s) => {
            state.container().stop_signal = Some(s.clone());
            format!("STOPSIGNAL {s}")
        }
        Instruction::Healthcheck(h) => {
            state.container().healthcheck = Some(healthcheck(h));
            format!("HEALTHCHECK {}", healthcheck_text(h))
        }
        Instruction::Shell(v) => {
            state.container().shell = Some(v.clone());
            format!("SHELL [{}]", v.join(" "))
        }
        Instruction::Onbuild { expression, .. } => {
            state
                .container()
                .on_build
                .get_or_insert_with(Vec::new)
                .push(expression.clone());
            // BuildKit records triggers in the config only, not in history.
            return Some(String::new());
        }
        Instruction::Maintainer(m) => {
            state.config.author = Some(m.clone());
            format!("MAINTAINER {m}")
        }
        _ => return None,
    };
    Some(text)
}

/// `8000-8002/tcp` → each port (docker expands ranges in the config).
fn expand_port_range(spec: &str) -> Vec<String> {
    let (ports, proto) = match spec.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if let Some((a, b)) = ports.split_once('-') {
        if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
            if a <= b && b - a < 65536 {
                return (a..=b).map(|p| format!("{p}/{proto}")).collect();
            }
        }
    }
    vec![format!("{ports}/{proto}")]
}

fn healthcheck(h: &Healthcheck) -> image::Healthcheck {
    let nz = |v: i64| (v != 0).then_some(v);
    image::Healthcheck {
        test: Some(h.test.clone().unwrap_or_else(|| vec!["NONE".into()])),
        interval: nz(h.interval_ns),
        timeout: nz(h.timeout_ns),
        start_period: nz(h.start_period_ns),
        start_interval: nz(h.start_interval_ns),
        retries: nz(h.retries),
        ..image::Healthcheck::default()
    }
}

/// Close to Go's `%q` of BuildKit's `*HealthConfig` (durations in Go's form).
fn healthcheck_text(h: &Healthcheck) -> String {
    let test = h.test.clone().unwrap_or_else(|| vec!["NONE".into()]);
    let mut durations = vec![h.interval_ns, h.timeout_ns, h.start_period_ns];
    // BuildKit before StartInterval existed printed three durations.
    if h.start_interval_ns != 0 {
        durations.push(h.start_interval_ns);
    }
    let durations: Vec<String> = durations
        .into_iter()
        .map(|d| format!("{:?}", go_duration(d)))
        .collect();
    format!(
        "&{{{} {} '\\x{:02x}'}}",
        go_quoted(&test),
        durations.join(" "),
        h.retries
    )
}

/// Go's `time.Duration.String()` for whole-second and sub-second values.
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    if ns % 1_000_000_000 == 0 {
        let s = ns / 1_000_000_000;
        let (h, m, s) = (s / 3600, (s % 3600) / 60, s % 60);
        let mut out = String::new();
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&format!("{s}s"));
        return out;
    }
    if ns < 1_000_000_000 && ns % 1_000_000 == 0 {
        return format!("{}ms", ns / 1_000_000);
    }
    format!("{}s", ns as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdirs_resolve_like_docker() {
        assert_eq!(resolve_workdir("/", "app"), "/app");
        assert_eq!(resolve_workdir("/app", "src/../lib"), "/app/lib");
        assert_eq!(resolve_workdir("/app", "/x/"), "/x");
        assert_eq!(resolve_workdir("", "a"), "/a");
    }

    #[test]
    fn go_forms() {
        assert_eq!(
            go_quoted(&["python".into(), "app.py".into()]),
            r#"["python" "app.py"]"#
        );
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(expand_port_range("80"), vec!["80/tcp"]);
        assert_eq!(expand_port_range("5-6/udp"), vec!["5/udp", "6/udp"]);
    }

    #[test]
    fn entrypoint_drops_inherited_cmd_only() {
        let p = crate::plan::Platform::host();
        let mut s = ImageState::scratch(&p, false);
        s.container().cmd = Some(Some(vec!["sh".into()]));
        apply(
            &mut s,
            &Instruction::Entrypoint(CommandLine::Exec(vec!["e".into()])),
        );
        assert_eq!(s.container().cmd, None);
        apply(
            &mut s,
            &Instruction::Cmd(CommandLine::Exec(vec!["c".into()])),
        );
        apply(
            &mut s,
            &Instruction::Entrypoint(CommandLine::Exec(vec!["f".into()])),
        );
        assert_eq!(s.container().cmd, Some(Some(vec!["c".into()])));
    }
}

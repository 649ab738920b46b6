//! Checks and conversions of single instruction values (flags, modes, durations' limits).

use super::Device;

/// BuildKit's `handleJSONArgs`: exec-form arguments stay a list; shell-form
/// arguments are joined with single spaces into one string (none stay none).
pub fn handle_json_args(args: &[String], json: bool) -> Vec<String> {
    if args.is_empty() || json {
        args.to_vec()
    } else {
        vec![args.join(" ")]
    }
}

/// BuildKit's rule for HEALTHCHECK durations: 0 means "inherit"; anything
/// else must be at least a millisecond.
pub fn check_interval(name: &str, ns: i64) -> Result<(), String> {
    if ns < 0 {
        return Err(format!("Interval {name:?} cannot be negative"));
    }
    if ns != 0 && ns < 1_000_000 {
        return Err(format!("Interval {name:?} cannot be less than 1ms"));
    }
    Ok(())
}

/// Stage names: lower-case letter first, then letters, digits, `-`, `_`, `.`.
pub fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// `--chmod`: octal (`755`, `0644`) or comma-separated symbolic clauses
/// (`u+x`, `go=rX`, `g=u`), the forms BuildKit accepts.
pub fn valid_chmod(s: &str) -> bool {
    if !s.is_empty() && s.len() <= 4 && s.chars().all(|c| ('0'..='7').contains(&c)) {
        return true;
    }
    !s.is_empty()
        && s.split(',').all(|clause| {
            let who_end = clause
                .find(|c: char| !matches!(c, 'u' | 'g' | 'o' | 'a'))
                .unwrap_or(clause.len());
            let mut rest = &clause[who_end..];
            if rest.is_empty() {
                return false;
            }
            while !rest.is_empty() {
                let Some(op) = rest.chars().next().filter(|c| matches!(c, '+' | '-' | '=')) else {
                    return false;
                };
                rest = &rest[op.len_utf8()..];
                let perm_end = rest.find(['+', '-', '=']).unwrap_or(rest.len());
                let perms = &rest[..perm_end];
                let ok = perms
                    .chars()
                    .all(|c| matches!(c, 'r' | 'w' | 'x' | 'X' | 's' | 't'))
                    || matches!(perms, "u" | "g" | "o");
                if !ok {
                    return false;
                }
                rest = &rest[perm_end..];
            }
            true
        })
}

pub fn valid_checksum(c: &str) -> bool {
    if let Some(hex) = c.strip_prefix("sha256:") {
        return hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit());
    }
    // A git commit (full or prefix) for git sources.
    (4..=64).contains(&c.len()) && c.chars().all(|c| c.is_ascii_hexdigit())
}

/// `RUN --device=name[,required[=bool]]` (also `name=<dev>`), BuildKit labs syntax.
pub fn parse_device(value: &str) -> Result<Device, String> {
    let mut name: Option<String> = None;
    let mut required = false;
    for (i, field) in value.split(',').enumerate() {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        match (k, v) {
            ("required", None) => required = true,
            ("required", Some(v)) => {
                required = match v.to_ascii_lowercase().as_str() {
                    "1" | "t" | "true" => true,
                    "0" | "f" | "false" => false,
                    _ => return Err(format!("invalid value for required: {v}")),
                }
            }
            ("name", Some(v)) => {
                if let Some(n) = &name {
                    return Err(format!("device name already set to {n}"));
                }
                name = Some(v.to_string());
            }
            _ if i == 0 => name = Some(field.to_string()),
            _ => return Err(format!("unexpected key '{k}' in '{field}'")),
        }
    }
    match name.filter(|n| !n.is_empty()) {
        Some(name) => Ok(Device { name, required }),
        None => Err(format!("device name is required in {value:?}")),
    }
}

/// BuildKit's doc-comment rule: the rest of the first attached comment line
/// that starts with `NAME ` (the name, then a space).
pub fn doc_comment_for(comments: &[String], name: &str) -> String {
    let prefix = format!("{name} ");
    comments
        .iter()
        .find_map(|c| c.strip_prefix(&prefix))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub(super) fn strip_keyword(original: &str) -> String {
    let t = original.trim_start();
    let end = t.find(char::is_whitespace).unwrap_or(t.len());
    t[end..].trim().to_string()
}

/// EXPOSE entries as docker's `nat.ParsePortSpecs` accepts them:
/// `[ip:][hostport:]port[-port][/proto]`.
pub fn valid_port_spec(p: &str) -> bool {
    let (spec, proto) = match p.rsplit_once('/') {
        Some((s, proto)) => (s, proto.to_ascii_lowercase()),
        None => (p, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return false;
    }
    let range = |r: &str| -> bool {
        let (lo, hi) = r.split_once('-').unwrap_or((r, r));
        match (lo.parse::<u16>(), hi.parse::<u16>()) {
            (Ok(a), Ok(b)) => a <= b,
            _ => false,
        }
    };
    // The container port is the last `:` field; anything before it is an address and host port.
    let container = spec.rsplit(':').next().unwrap_or(spec);
    range(container)
}

/// Signal names Linux knows (with or without `SIG`, any case), `RTMIN+n`/`RTMAX-n`, or a number.
pub fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return n > 0;
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    const NAMES: [&str; 35] = [
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
        "UNUSED",
    ];
    if NAMES.contains(&name) || name == "RTMIN" || name == "RTMAX" {
        return true;
    }
    let rt = |prefix: &str, sep: char| {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix(sep))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=15).contains(&n))
    };
    rt("RTMIN", '+') || rt("RTMAX", '-')
}

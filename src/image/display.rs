//! Docker-style presentation helpers: human sizes and ages as the docker CLI
//! prints them (go-units `HumanSizeWithPrecision(n, 3)` and `HumanDuration`),
//! and a small subset of Go templates for `--format`.
//!
//! The template subset is hand-written because no maintained Rust crate
//! implements Go's text/template; it covers what people type for images:
//! `{{.Field.Sub}}`, `{{json .Field}}`, literal text, `\t`/`\n` escapes.

use std::time::Duration;

/// Decimal units with three significant digits: `4.27MB`, `512B`, `1.2GB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", three_significant(v), UNITS[i])
}

/// `%.3g` for 0 <= v < 1000 (trailing zeros dropped, as %g does).
fn three_significant(v: f64) -> String {
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Docker's `HumanDuration`: "Less than a second", "About a minute", "3 hours", "2 weeks".
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let hours = ((d.as_secs_f64() / 3600.0) + 0.5) as u64;
    if d.as_secs_f64() < 1.0 {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if secs / 60 == 1 {
        "About a minute".into()
    } else if secs / 60 < 60 {
        format!("{} minutes", secs / 60)
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    }
}

/// "3 hours ago" for an RFC 3339 timestamp; "N/A" when absent or unparsable.
pub fn since(created: Option<&str>) -> String {
    let Some(ts) = created.and_then(parse_rfc3339) else {
        return "N/A".into();
    };
    let now = time::OffsetDateTime::now_utc();
    let d = now - ts;
    let d = Duration::from_secs_f64(d.as_seconds_f64().max(0.0));
    format!("{} ago", human_duration(d))
}

pub fn parse_rfc3339(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// Renders a Go-template subset against `data` (see the module notes).
pub fn render_template(template: &str, data: &serde_json::Value) -> Result<String, String> {
    let template = template.replace("\\t", "\t").replace("\\n", "\n");
    let mut out = String::new();
    let mut rest = template.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed action in template {template:?}"))?;
        let action = after[..end]
            .trim()
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim();
        out.push_str(&eval(action, data)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn eval(action: &str, data: &serde_json::Value) -> Result<String, String> {
    let words: Vec<&str> = action.split_whitespace().collect();
    match words.as_slice() {
        [path] => Ok(go_print(lookup(path, data)?)),
        ["json", path] => serde_json::to_string(lookup(path, data)?).map_err(|e| e.to_string()),
        _ => Err(format!(
            "unsupported template action {{{{{action}}}}}: kiln supports {{{{.Field.Path}}}} and {{{{json .Field}}}}"
        )),
    }
}

fn lookup<'a>(path: &str, data: &'a serde_json::Value) -> Result<&'a serde_json::Value, String> {
    let Some(rest) = path.strip_prefix('.') else {
        return Err(format!("unsupported template expression {path:?}"));
    };
    let mut v = data;
    for key in rest.split('.').filter(|k| !k.is_empty()) {
        v = v
            .get(key)
            .ok_or_else(|| format!("template: can't evaluate field {key} in {path}"))?;
    }
    Ok(v)
}

/// Go's default formatting of a value: strings bare, lists `[a b]`, maps `map[k:v]`.
fn go_print(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "<no value>".into(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(a) => {
            format!("[{}]", a.iter().map(go_print).collect::<Vec<_>>().join(" "))
        }
        serde_json::Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_print(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1234), "1.23kB");
        assert_eq!(human_size(4_270_000), "4.27MB");
        assert_eq!(human_size(12_300_000), "12.3MB");
        assert_eq!(human_size(123_456_789), "123MB");
        assert_eq!(human_size(2_000_000_000), "2GB");
        assert_eq!(
            human_duration(Duration::from_millis(10)),
            "Less than a second"
        );
        assert_eq!(human_duration(Duration::from_secs(70)), "About a minute");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2 hours");
        assert_eq!(human_duration(Duration::from_secs(3 * 86400)), "3 days");
        assert_eq!(human_duration(Duration::from_secs(20 * 86400)), "2 weeks");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 365 * 86400)),
            "3 years"
        );
    }

    #[test]
    fn templates_cover_fields_and_json() {
        let v = serde_json::json!({"Id": "sha256:x", "Config": {"Cmd": ["sh", "-c"], "Env": null}});
        assert_eq!(render_template("{{.Id}}", &v).unwrap(), "sha256:x");
        assert_eq!(
            render_template("id={{ .Id }}\\t{{.Config.Cmd}}", &v).unwrap(),
            "id=sha256:x\t[sh -c]"
        );
        assert_eq!(
            render_template("{{json .Config.Cmd}}", &v).unwrap(),
            r#"["sh","-c"]"#
        );
        assert!(render_template("{{.Nope}}", &v).is_err());
        assert!(render_template("{{range .X}}", &v).is_err());
        assert!(render_template("{{.Id", &v).is_err());
    }
}

//! `RUN --mount=…` values: comma-separated `key=value` fields (CSV quoting
//! allowed), validated per mount type as BuildKit does.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

impl MountType {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "bind" => MountType::Bind,
            "cache" => MountType::Cache,
            "tmpfs" => MountType::Tmpfs,
            "secret" => MountType::Secret,
            "ssh" => MountType::Ssh,
            _ => return Err(format!("unsupported mount type {s:?}")),
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// One parsed mount, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub kind: MountType,
    /// Stage, image or build context providing the source (bind, cache).
    pub from: Option<String>,
    pub source: Option<String>,
    /// Mount point; for secrets without `env` it defaults to `/run/secrets/<id>`.
    pub target: Option<String>,
    pub read_only: bool,
    pub id: Option<String>,
    pub sharing: Sharing,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub required: bool,
    /// tmpfs size limit in bytes.
    pub size: Option<u64>,
    /// Secret exposed as this environment variable.
    pub env: Option<String>,
}

/// Splits one CSV record (Go `encoding/csv` rules: `"…"` quotes, `""` inside quotes).
fn split_csv(value: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars().peekable();
    let mut at_field_start = true;
    let mut quoted = false;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                    if !matches!(chars.peek(), None | Some(',')) {
                        return Err(format!("extraneous \" in field of {value:?}"));
                    }
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                quoted = true;
                at_field_start = false;
            }
            '"' => return Err(format!("bare \" in non-quoted field of {value:?}")),
            ',' => {
                fields.push(std::mem::take(&mut cur));
                at_field_start = true;
            }
            c => {
                cur.push(c);
                at_field_start = false;
            }
        }
    }
    if quoted {
        return Err(format!("extraneous or missing \" in {value:?}"));
    }
    fields.push(cur);
    Ok(fields)
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(format!("invalid value for {key}: {v}")),
    }
}

/// Docker's `RAMInBytes`: a number with an optional binary unit (`64m`, `1GiB`).
pub fn parse_ram_bytes(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size: {s:?}");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return Err(bad()),
    };
    Ok((n * mult) as u64)
}

/// Parses a `--mount` value. `expand` is applied to every value (identity at
/// parse time, the stage's variables at plan time); values that still hold a
/// `$` after an identity expansion are not checked until they are expanded.
pub fn parse_mount(
    value: &str,
    expand: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Mount, String> {
    let fields = split_csv(value)?;
    // The type decides which keys are allowed, wherever it is written.
    let mut kind = MountType::Bind;
    for f in &fields {
        if let Some((k, v)) = f.split_once('=') {
            if k.trim().eq_ignore_ascii_case("type") {
                kind = MountType::parse(&expand(v)?)?;
            }
        }
    }
    let mut m = Mount {
        kind,
        from: None,
        source: None,
        target: None,
        read_only: false,
        id: None,
        sharing: Sharing::Shared,
        mode: None,
        uid: None,
        gid: None,
        required: false,
        size: None,
        env: None,
    };
    let mut ro_explicit = None;
    let mut sharing_set = false;
    let file_info_allowed = matches!(kind, MountType::Secret | MountType::Ssh | MountType::Cache);
    for field in &fields {
        let (key, raw) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v)),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let unexpected = || format!("unexpected key '{key}' for mount type '{}'", kind.as_str());
        let Some(raw) = raw else {
            match key.as_str() {
                "readonly" | "ro" => ro_explicit = Some(true),
                "readwrite" | "rw" => ro_explicit = Some(false),
                "required" if matches!(kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true
                }
                "required" => return Err(unexpected()),
                "" => {}
                _ => return Err(format!("unexpected key '{key}' in '{field}'")),
            }
            continue;
        };
        let v = expand(raw)?;
        let deferred = v.contains('$');
        match key.as_str() {
            "type" => {}
            "from" => m.from = Some(v),
            "source" | "src" => m.source = Some(v),
            "target" | "dst" | "destination" => m.target = Some(v),
            "readonly" | "ro" if !deferred => ro_explicit = Some(parse_bool(&key, &v)?),
            "readwrite" | "rw" if !deferred => ro_explicit = Some(!parse_bool(&key, &v)?),
            "required" if !matches!(kind, MountType::Secret | MountType::Ssh) => {
                return Err(unexpected())
            }
            "required" if !deferred => m.required = parse_bool(&key, &v)?,
            "id" => m.id = Some(v),
            "sharing" => {
                sharing_set = true;
                m.sharing = match v.to_ascii_lowercase().as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    _ if deferred => Sharing::Shared,
                    _ => return Err(format!("unsupported sharing value {v:?}")),
                }
            }
            "mode" | "uid" | "gid" if !file_info_allowed => {
                return Err(format!(
                    "{key} not allowed for {:?} type mounts",
                    kind.as_str()
                ))
            }
            "mode" if !deferred => {
                m.mode = Some(
                    u32::from_str_radix(&v, 8)
                        .map_err(|_| format!("invalid value for mode: {v}"))?,
                )
            }
            "uid" | "gid" if !deferred => {
                let n: u32 = v
                    .parse()
                    .map_err(|_| format!("invalid value for {key}: {v}"))?;
                if key == "uid" {
                    m.uid = Some(n)
                } else {
                    m.gid = Some(n)
                }
            }
            "size" if kind != MountType::Tmpfs => return Err(unexpected()),
            "size" if !deferred => m.size = Some(parse_ram_bytes(&v)?),
            "env" if kind != MountType::Secret => return Err(unexpected()),
            "env" => m.env = Some(v),
            "readonly" | "ro" | "readwrite" | "rw" | "required" | "mode" | "uid" | "gid"
            | "size" => {}
            _ => return Err(format!("unexpected key '{key}' in '{field}'")),
        }
    }
    // Bind and secret/ssh mounts are read-only unless asked otherwise; caches and tmpfs are writable.
    m.read_only = ro_explicit.unwrap_or(!matches!(kind, MountType::Cache | MountType::Tmpfs));
    if sharing_set && kind != MountType::Cache {
        return Err(format!(
            "invalid cache sharing set for {} mount",
            kind.as_str()
        ));
    }
    match kind {
        MountType::Secret | MountType::Ssh => {
            if m.from.is_some() {
                return Err(format!("{} mount should not have a from", kind.as_str()));
            }
            if kind == MountType::Secret {
                if m.id.is_none() {
                    let base = m
                        .target
                        .as_deref()
                        .and_then(|t| t.trim_end_matches('/').rsplit('/').next())
                        .filter(|b| !b.is_empty());
                    match base {
                        Some(b) => m.id = Some(b.to_string()),
                        None => {
                            return Err("secret mount requires an id, a target or an env".into())
                        }
                    }
                }
                if m.target.is_none() && m.env.is_none() {
                    m.target = Some(format!("/run/secrets/{}", m.id.as_deref().unwrap_or("")));
                }
            } else if m.id.is_none() {
                m.id = Some("default".into());
            }
        }
        MountType::Tmpfs => {
            if m.from.is_some() || m.source.is_some() {
                return Err("tmpfs mounts take no from or source".into());
            }
        }
        MountType::Bind | MountType::Cache => {}
    }
    match m.target.as_deref() {
        Some("") => return Err(format!("mount type={} has an empty target", kind.as_str())),
        None if !matches!(kind, MountType::Secret | MountType::Ssh) => {
            return Err(format!(
                "mount type={} requires a target (target=, dst= or destination=)",
                kind.as_str()
            ))
        }
        _ => {}
    }
    if kind == MountType::Cache && m.id.is_none() {
        m.id = m.target.clone();
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &str) -> Result<Mount, String> {
        parse_mount(v, &|s| Ok(s.to_string()))
    }

    #[test]
    fn defaults_per_type() {
        let b = p("target=/src,from=builder").unwrap();
        assert_eq!(b.kind, MountType::Bind);
        assert!(b.read_only);
        let c = p("type=cache,target=/root/.cache").unwrap();
        assert!(!c.read_only);
        assert_eq!(c.id.as_deref(), Some("/root/.cache"));
        let s = p("type=secret,id=tok").unwrap();
        assert_eq!(s.target.as_deref(), Some("/run/secrets/tok"));
        let s = p("type=secret,id=tok,env=TOKEN").unwrap();
        assert_eq!(s.target, None);
        let s = p("type=secret,target=/a/b/key").unwrap();
        assert_eq!(s.id.as_deref(), Some("key"));
        let t = p("type=tmpfs,target=/foo/,size=64m").unwrap();
        assert_eq!(t.size, Some(64 << 20));
        let q = p("\"type=cache\",\"target=/a,b\"").unwrap();
        assert_eq!(q.target.as_deref(), Some("/a,b"));
        let o = p("target=/x,type=cache,sharing=locked,mode=0700,uid=1000").unwrap();
        assert_eq!(o.sharing, Sharing::Locked);
        assert_eq!(o.mode, Some(0o700));
        assert_eq!(o.uid, Some(1000));
    }

    #[test]
    fn rejects_bad_mounts() {
        for bad in [
            "type=nfs,target=/a",
            "type=bind",
            "type=bind,target=/a,mode=0700",
            "type=bind,target=/a,sharing=shared",
            "type=cache,target=/a,sharing=sometimes",
            "type=cache,target=/a,mode=999",
            "type=bind,target=/a,size=1m",
            "type=bind,target=/a,required",
            "type=secret,id=a,from=x",
            "type=bind,target=/a,bogus=1",
            "type=bind,target=/a,ro=maybe",
        ] {
            assert!(p(bad).is_err(), "{bad} should be rejected");
        }
    }
}

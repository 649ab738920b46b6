//! `--output` destinations, in docker's `type=…,dest=…` form or as
//! buildah/skopeo transports.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    /// The image in the local store (docker's `type=image`/`type=docker`).
    Image { name: Option<String>, push: bool },
    /// The final stage's files in a directory.
    Local(PathBuf),
    /// The final stage's files as a tar file.
    Tar(PathBuf),
    /// An OCI layout directory (`oci:DIR[:TAG]`).
    OciDir { dir: PathBuf, tag: Option<String> },
    /// An OCI layout in a tar archive (`oci-archive:FILE`, `type=oci,dest=FILE`).
    OciArchive(PathBuf),
    /// A `docker save`-style archive (`docker-archive:FILE`, `type=docker,dest=FILE`).
    DockerArchive(PathBuf),
    /// A registry (`docker://REF`, `type=registry,name=REF`).
    Registry(String),
}

impl OutputSpec {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty --output".into());
        }
        if let Some(r) = s.strip_prefix("docker://") {
            return nonempty(r, s).map(|r| OutputSpec::Registry(r.into()));
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            // The tag follows the last ':' unless that ':' is part of the path.
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((d, t)) if !t.contains('/') && !d.is_empty() => (d, Some(t.to_string())),
                _ => (rest, None),
            };
            return nonempty(dir, s).map(|d| OutputSpec::OciDir { dir: d.into(), tag });
        }
        if let Some(f) = s.strip_prefix("oci-archive:") {
            return nonempty(f, s).map(|f| OutputSpec::OciArchive(f.into()));
        }
        if let Some(f) = s.strip_prefix("docker-archive:") {
            return nonempty(f, s).map(|f| OutputSpec::DockerArchive(f.into()));
        }
        if !s.contains('=') {
            // docker: a bare path means type=local, and `-` a tar on stdout.
            return Ok(if s == "-" {
                OutputSpec::Tar("-".into())
            } else {
                OutputSpec::Local(s.into())
            });
        }
        let mut kind = None;
        let mut dest = None;
        let mut name = None;
        let mut push = false;
        for field in s.split(',') {
            let (k, v) = field.split_once('=').ok_or_else(|| {
                format!("invalid --output field {field:?} in {s:?}: expected key=value")
            })?;
            match k {
                "type" => kind = Some(v.to_string()),
                "dest" => dest = Some(v.to_string()),
                "name" => name = Some(v.to_string()),
                "push" => {
                    push = v
                        .parse()
                        .map_err(|_| format!("invalid push={v:?} in --output {s:?}"))?
                }
                // Exporter tuning options are accepted and ignored, as BuildKit's unknown ones are not fatal.
                _ => {}
            }
        }
        let need_dest = |d: Option<String>| {
            d.filter(|d| !d.is_empty())
                .ok_or_else(|| format!("--output {s:?} needs dest=…"))
        };
        match kind.as_deref() {
            Some("local") => Ok(OutputSpec::Local(need_dest(dest)?.into())),
            Some("tar") => Ok(OutputSpec::Tar(need_dest(dest)?.into())),
            Some("oci") => Ok(OutputSpec::OciArchive(need_dest(dest)?.into())),
            Some("docker") if dest.is_some() => {
                Ok(OutputSpec::DockerArchive(need_dest(dest)?.into()))
            }
            Some("docker") | Some("image") => Ok(OutputSpec::Image { name, push }),
            Some("registry") => name
                .map(OutputSpec::Registry)
                .ok_or_else(|| format!("--output {s:?} needs name=…")),
            Some(other) => Err(format!(
                "unsupported --output type {other:?} (local, tar, oci, docker, image, registry)"
            )),
            None => Err(format!("--output {s:?} needs type=…")),
        }
    }
}

fn nonempty<'a>(v: &'a str, whole: &str) -> Result<&'a str, String> {
    if v.is_empty() {
        Err(format!("--output {whole:?} names no destination"))
    } else {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_and_transport_forms() {
        assert_eq!(
            OutputSpec::parse("out").unwrap(),
            OutputSpec::Local("out".into())
        );
        assert_eq!(
            OutputSpec::parse("type=local,dest=o").unwrap(),
            OutputSpec::Local("o".into())
        );
        assert_eq!(
            OutputSpec::parse("oci:/tmp/l:v1").unwrap(),
            OutputSpec::OciDir {
                dir: "/tmp/l".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            OutputSpec::parse("docker-archive:a.tar").unwrap(),
            OutputSpec::DockerArchive("a.tar".into())
        );
        assert_eq!(
            OutputSpec::parse("docker://127.0.0.1:5000/a:b").unwrap(),
            OutputSpec::Registry("127.0.0.1:5000/a:b".into())
        );
        assert!(OutputSpec::parse("type=bogus,dest=x").is_err());
        assert!(OutputSpec::parse("type=local").is_err());
        assert!(OutputSpec::parse("oci:").is_err());
    }
}

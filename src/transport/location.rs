//! Parsing of transport strings (`oci:DIR[:TAG]`, `docker-archive:FILE[:REF]`, ...).
//!
//! The split follows containers/image (skopeo, podman, buildah) on Linux:
//! the path ends at the FIRST ':' after the transport prefix, so a path can
//! never contain ':' and everything after it is the tag or reference
//! (`oci:/tmp/l:v1` is tag `v1`; `docker-archive:f.tar:busybox:1` is
//! reference `busybox:1`). Doing the same as those tools means a string that
//! works with `skopeo copy` means the same thing to kiln.

use std::fmt;
use std::path::PathBuf;

use super::TransportError;

/// Where an image lives outside the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A registry (`docker://REF`); handled by the registry client, not here.
    Docker(String),
    /// An OCI image layout directory; `reference` is the ref.name to use.
    OciDir {
        path: PathBuf,
        reference: Option<String>,
    },
    /// An OCI image layout in a tar file.
    OciArchive {
        path: PathBuf,
        reference: Option<String>,
    },
    /// A `docker save` archive.
    DockerArchive {
        path: PathBuf,
        reference: Option<ArchiveSelector>,
    },
}

/// Which image of a docker archive: a name, or (reading only) `@N`, the
/// zero-based position in `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveSelector {
    Name(String),
    Index(usize),
}

const DOCKER: &str = "docker://";
const OCI: &str = "oci:";
const OCI_ARCHIVE: &str = "oci-archive:";
const DOCKER_ARCHIVE: &str = "docker-archive:";

/// Whether `s` names a local transport this module implements (`oci:`,
/// `oci-archive:`, `docker-archive:`), as opposed to a registry or a store name.
pub fn is_local(s: &str) -> bool {
    [OCI, OCI_ARCHIVE, DOCKER_ARCHIVE]
        .iter()
        .any(|p| s.starts_with(p))
}

impl Location {
    /// Parses a transport string. A string with none of the known prefixes
    /// is refused: callers decide whether a bare name means the store or a registry.
    pub fn parse(s: &str) -> Result<Location, TransportError> {
        let invalid = |reason: &str| TransportError::InvalidLocation {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        if let Some(r) = s.strip_prefix(DOCKER) {
            if r.is_empty() {
                return Err(invalid("missing image reference after docker://"));
            }
            return Ok(Location::Docker(r.to_string()));
        }
        // Longest prefix first: "oci-archive:" also starts with "oci".
        let (kind, rest) = if let Some(r) = s.strip_prefix(OCI_ARCHIVE) {
            (OCI_ARCHIVE, r)
        } else if let Some(r) = s.strip_prefix(DOCKER_ARCHIVE) {
            (DOCKER_ARCHIVE, r)
        } else if let Some(r) = s.strip_prefix(OCI) {
            (OCI, r)
        } else {
            return Err(invalid(
                "unknown transport (want docker://, oci:, oci-archive: or docker-archive:)",
            ));
        };
        let (path, reference) = match rest.split_once(':') {
            Some((p, r)) => (p, Some(r)),
            None => (rest, None),
        };
        if path.is_empty() {
            return Err(invalid("missing path"));
        }
        let reference = match reference {
            Some("") => return Err(invalid("empty reference after ':'")),
            r => r.map(str::to_string),
        };
        let path = PathBuf::from(path);
        Ok(match kind {
            OCI => Location::OciDir {
                path,
                reference: checked_ref_name(s, reference)?,
            },
            OCI_ARCHIVE => Location::OciArchive {
                path,
                reference: checked_ref_name(s, reference)?,
            },
            _ => Location::DockerArchive {
                path,
                reference: match reference {
                    None => None,
                    Some(r) => Some(match r.strip_prefix('@') {
                        Some(n) => ArchiveSelector::Index(
                            n.parse()
                                .map_err(|_| invalid("@N must be a non-negative number"))?,
                        ),
                        None => {
                            let parsed = crate::registry::reference::Reference::parse(&r)?;
                            if parsed.digest().is_some() {
                                return Err(invalid(
                                    "a docker-archive reference must not contain a digest",
                                ));
                            }
                            ArchiveSelector::Name(parsed.to_string())
                        }
                    }),
                },
            },
        })
    }
}

/// An OCI ref.name must follow the image-spec grammar: components of
/// alphanumerics joined by `-._:@/+`. Checked here so a bad tag fails before
/// anything is written.
fn checked_ref_name(input: &str, r: Option<String>) -> Result<Option<String>, TransportError> {
    if let Some(r) = &r {
        let ok = r
            .split(|c| "-._:@/+".contains(c))
            .all(|c| !c.is_empty() && c.chars().all(|c| c.is_ascii_alphanumeric()));
        if !ok {
            return Err(TransportError::InvalidLocation {
                input: input.to_string(),
                reason: format!("invalid OCI reference name {r:?}"),
            });
        }
    }
    Ok(r)
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, path, r) = match self {
            Location::Docker(r) => return write!(f, "{DOCKER}{r}"),
            Location::OciDir { path, reference } => (OCI, path, reference.clone()),
            Location::OciArchive { path, reference } => (OCI_ARCHIVE, path, reference.clone()),
            Location::DockerArchive { path, reference } => (
                DOCKER_ARCHIVE,
                path,
                reference.as_ref().map(|r| match r {
                    ArchiveSelector::Name(n) => n.clone(),
                    ArchiveSelector::Index(i) => format!("@{i}"),
                }),
            ),
        };
        write!(f, "{prefix}{}", path.display())?;
        if let Some(r) = r {
            write!(f, ":{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_first_colon_like_containers_image() {
        assert_eq!(
            Location::parse("oci:/tmp/l:v1").unwrap(),
            Location::OciDir {
                path: "/tmp/l".into(),
                reference: Some("v1".into())
            }
        );
        assert_eq!(
            Location::parse("oci-archive:x.tar").unwrap(),
            Location::OciArchive {
                path: "x.tar".into(),
                reference: None
            }
        );
        assert_eq!(
            Location::parse("docker-archive:f.tar:busybox:1").unwrap(),
            Location::DockerArchive {
                path: "f.tar".into(),
                reference: Some(ArchiveSelector::Name("docker.io/library/busybox:1".into()))
            }
        );
        assert_eq!(
            Location::parse("docker-archive:f.tar:@2").unwrap(),
            Location::DockerArchive {
                path: "f.tar".into(),
                reference: Some(ArchiveSelector::Index(2))
            }
        );
        assert_eq!(
            Location::parse("docker://busybox").unwrap(),
            Location::Docker("busybox".into())
        );
        for bad in [
            "oci:",
            "oci::t",
            "oci:d:",
            "oci:d:bad tag",
            "docker-archive:f:x@sha256:abc",
            "docker-archive:f:@x",
            "dir:/x",
            "busybox",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
        assert!(is_local("oci:x") && is_local("docker-archive:x") && !is_local("docker://x"));
        assert_eq!(
            Location::parse("oci-archive:a.tar:t").unwrap().to_string(),
            "oci-archive:a.tar:t"
        );
    }
}

//! Docker image references (`[registry/]repository[:tag][@digest]`).
//!
//! Parsing follows the grammar and normalization the docker CLI applies, so
//! that a name written in a Dockerfile or on the command line resolves to the
//! same image it would under `docker pull`:
//!
//! * the first path component is a registry only when it looks like a host:
//!   it contains `.` or `:`, or is exactly `localhost`. Otherwise the image
//!   lives on Docker Hub (`docker.io`);
//! * `index.docker.io` is the legacy spelling of `docker.io`;
//! * single-component Docker Hub names are official images under `library/`;
//! * a bare name with neither tag nor digest means `:latest`.
//!
//! The parser is hand written (no regex) so that every failure can say
//! precisely which part of the input is wrong, and so that no input can make
//! it panic.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Registry that unqualified names resolve to.
const DOCKER_HUB: &str = "docker.io";
/// Legacy alias of [`DOCKER_HUB`] still found in old Dockerfiles and configs.
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// Docker Hub serves its v2 API from a different host than its name.
const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Namespace of official images on Docker Hub.
const OFFICIAL_NAMESPACE: &str = "library/";
/// Tag implied when the user gives neither a tag nor a digest.
const DEFAULT_TAG: &str = "latest";
/// Longest repository path (without registry) the registry API accepts.
const MAX_REPOSITORY_LEN: usize = 255;
/// Longest tag allowed by the distribution spec.
const MAX_TAG_LEN: usize = 128;

/// Why a string is not a valid image reference.
///
/// Every message names the offending input so that errors surfacing from
/// deep inside a build (e.g. a `FROM` line) can be traced back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference {input:?}: empty")]
    Empty { input: String },
    #[error("invalid reference {input:?}: repository name must be lowercase")]
    Uppercase { input: String },
    #[error("invalid reference {input:?}: too long (name > 255 chars)")]
    TooLong { input: String },
    #[error("invalid reference {input:?}: invalid registry {registry:?}")]
    InvalidRegistry { input: String, registry: String },
    #[error("invalid reference {input:?}: invalid repository path component {component:?}")]
    InvalidComponent { input: String, component: String },
    #[error("invalid reference {input:?}: invalid tag {tag:?}")]
    InvalidTag { input: String, tag: String },
    #[error("invalid reference {input:?}: invalid digest: {reason}")]
    InvalidDigest { input: String, reason: String },
}

/// A fully normalized image reference.
///
/// Invariants (upheld by [`Reference::parse`] and [`Reference::with_tag`]):
/// `registry` is a valid `host[:port]`, `repository` is a valid lower-case
/// path that already carries `library/` where Docker Hub needs it, and at
/// least one of `tag` / `digest` is set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// Parses and normalizes `s` the way the docker CLI does.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        let err_input = || s.to_string();
        if s.is_empty() {
            return Err(ReferenceError::Empty { input: err_input() });
        }

        // The digest is split off first: it is the only part that may
        // contain ':' after the last '/', which would confuse the tag split.
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest {
            validate_digest(d).map_err(|reason| ReferenceError::InvalidDigest {
                input: err_input(),
                reason,
            })?;
        }

        // A tag is a ':' after the last '/'; a ':' before it belongs to the
        // registry's port (`localhost:5000/x`).
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_tag[..at], Some(&name_tag[at + 1..]))
            }
            None => (name_tag, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::Empty { input: err_input() });
        }
        if let Some(t) = tag {
            if !is_valid_tag(t) {
                return Err(ReferenceError::InvalidTag {
                    input: err_input(),
                    tag: t.to_string(),
                });
            }
        }

        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if looks_like_registry(first) => (first, rest),
            _ => (DOCKER_HUB, name),
        };
        if !is_valid_registry(registry) {
            return Err(ReferenceError::InvalidRegistry {
                input: err_input(),
                registry: registry.to_string(),
            });
        }
        let registry = if registry == DOCKER_HUB_LEGACY {
            DOCKER_HUB
        } else {
            registry
        };

        // Upper case is checked over the whole path before the per-component
        // grammar so the user gets the specific, actionable message.
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase { input: err_input() });
        }
        for component in path.split('/') {
            if !is_valid_component(component) {
                return Err(ReferenceError::InvalidComponent {
                    input: err_input(),
                    component: component.to_string(),
                });
            }
        }

        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL_NAMESPACE}{path}")
        } else {
            path.to_string()
        };
        if repository.len() > MAX_REPOSITORY_LEN {
            return Err(ReferenceError::TooLong { input: err_input() });
        }

        let tag = match (tag, digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag,
            digest: digest.map(str::to_string),
        })
    }

    /// Registry as `host[:port]`, e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository path inside the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// Same image name with `tag` instead of the current tag.
    ///
    /// A digest, if any, is kept, matching docker: `name:tag@digest` still
    /// pins the content, the tag is informational.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !is_valid_tag(tag) {
            return Err(ReferenceError::InvalidTag {
                input: format!("{}:{tag}", self.name()),
                tag: tag.to_string(),
            });
        }
        Ok(Reference {
            tag: Some(tag.to_string()),
            ..self.clone()
        })
    }

    /// The short form docker prints: Docker Hub's registry and the
    /// `library/` namespace are dropped (`busybox:latest`, `user/app:1`).
    pub fn familiar(&self) -> String {
        let name = if self.registry == DOCKER_HUB {
            match self.repository.strip_prefix(OFFICIAL_NAMESPACE) {
                // `library/a/b` is not an official image, keep the prefix so
                // re-parsing gives back the same reference.
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.repository.clone(),
            }
        } else {
            self.name()
        };
        format!("{name}{}", self.suffix())
    }

    /// Host serving the registry's v2 API.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// Whether the registry is on this machine, where plain HTTP is allowed
    /// (as docker does for `localhost` and loopback addresses).
    pub fn is_loopback(&self) -> bool {
        let host = registry_host(&self.registry);
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            return inner.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
        }
        host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// `registry/repository` without tag or digest.
    fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `[:tag][@digest]`.
    fn suffix(&self) -> String {
        let mut out = String::new();
        if let Some(t) = &self.tag {
            out.push(':');
            out.push_str(t);
        }
        if let Some(d) = &self.digest {
            out.push('@');
            out.push_str(d);
        }
        out
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.name(), self.suffix())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

/// Docker's rule for telling `host/repo` from `user/repo`: hosts have a dot
/// or a port, except `localhost`, which has neither.
fn looks_like_registry(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

/// Host part of `host[:port]` (brackets kept for IPv6).
fn registry_host(registry: &str) -> &str {
    if registry.starts_with('[') {
        match registry.find(']') {
            Some(i) => &registry[..=i],
            None => registry,
        }
    } else {
        registry.split(':').next().unwrap_or(registry)
    }
}

/// `host[:port]` where host is a DNS name / IPv4 address or a bracketed IPv6
/// address.
fn is_valid_registry(registry: &str) -> bool {
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return false;
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (registry, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    // Empty host here means it was an already-validated IPv6 address.
    host.is_empty() && registry.starts_with('[')
        || (!host.is_empty() && host.split('.').all(is_valid_host_label))
}

/// DNS label: alphanumerics with inner hyphens.
fn is_valid_host_label(label: &str) -> bool {
    let b = label.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        }
        _ => false,
    }
}

/// One repository path component:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
///
/// Separators may not lead, trail or touch each other, except that `-` may
/// repeat and `_` may be doubled.
fn is_valid_component(component: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes = component.as_bytes();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < bytes.len() {
        let c = bytes[i];
        if alnum(c) {
            expect_alnum = false;
            i += 1;
            continue;
        }
        if expect_alnum {
            // Separator at the start or right after another separator run.
            return false;
        }
        let run_start = i;
        while i < bytes.len() && bytes[i] == c {
            i += 1;
        }
        let run = i - run_start;
        let ok = match c {
            b'.' => run == 1,
            b'_' => run <= 2,
            b'-' => true,
            _ => false,
        };
        if !ok {
            return false;
        }
        expect_alnum = true;
    }
    // Non-empty and not ending in a separator.
    !expect_alnum
}

/// `[\w][\w.-]{0,127}` with ASCII `\w`.
fn is_valid_tag(tag: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = tag.as_bytes();
    match b.split_first() {
        Some((first, rest)) => {
            b.len() <= MAX_TAG_LEN
                && word(*first)
                && rest.iter().all(|c| word(*c) || *c == b'.' || *c == b'-')
        }
        None => false,
    }
}

/// Accepts only the algorithms registries actually serve, with the exact
/// lower-case hex length each produces, so a typo'd digest fails here rather
/// than as a confusing 404 from the registry.
fn validate_digest(digest: &str) -> Result<(), String> {
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err("expected sha256:<64 hex>".to_string());
    };
    let expected_len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        other => {
            return Err(format!(
                "unsupported algorithm {other:?}, expected sha256:<64 hex>"
            ))
        }
    };
    let ok = hex.len() == expected_len
        && hex
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c));
    if ok {
        Ok(())
    } else {
        Err(format!("expected {algorithm}:<{expected_len} hex>"))
    }
}

#[cfg(test)]
mod tests;

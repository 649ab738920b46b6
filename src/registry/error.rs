//! Errors of the registry client. Every message names the registry, the
//! repository and the tag or digest involved, the HTTP status and the
//! registry's own error code and message, so the user can act on it.

use std::path::PathBuf;

use crate::store::StoreError;

use super::credentials::CredentialError;

/// The tag or digest a request was about, for messages (`tag "v1"` / `sha256:…`).
pub(crate) fn describe_target(target: &str) -> String {
    if target.starts_with("sha256:") {
        target.to_string()
    } else {
        format!("tag {target:?}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered with an error status.
    #[error("{action} {registry}/{repository}: HTTP {status}{}", registry_detail(.code, .message))]
    Http {
        action: String,
        registry: String,
        repository: String,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },

    /// 401/403: the registry wants (other) credentials.
    #[error(
        "{action} {registry}/{repository}: unauthorized (HTTP {status}){}; run `kiln login {registry}`",
        registry_detail(.code, .message)
    )]
    Unauthorized {
        action: String,
        registry: String,
        repository: String,
        status: u16,
        code: Option<String>,
        message: Option<String>,
    },

    /// MANIFEST_UNKNOWN (or a 404 on a manifest).
    #[error("manifest unknown: {registry}/{repository} has no manifest for {}", describe_target(.target))]
    ManifestUnknown {
        registry: String,
        repository: String,
        target: String,
    },

    /// `kiln login` was refused.
    #[error("login to {registry} failed: {detail}")]
    LoginFailed { registry: String, detail: String },

    /// TLS handshake failed; names the CA directories that were consulted.
    #[error(
        "TLS connection to {registry} failed: {detail}\n  CA certificates were looked for in: {}\n  (put the registry's CA as a *.crt file there, use --cert-dir DIR, or --tls-verify=false)",
        dirs_list(.dirs)
    )]
    Tls {
        registry: String,
        detail: String,
        dirs: Vec<PathBuf>,
    },

    /// Network failure after the bounded retries.
    #[error("{action} {registry}: {detail}")]
    Network {
        action: String,
        registry: String,
        detail: String,
    },

    /// A certificate or key file in a certs.d directory could not be used.
    #[error("registry {registry}: certificate file {path}: {reason}")]
    CertFile {
        registry: String,
        path: PathBuf,
        reason: String,
    },

    /// The registry served content that does not hash to the digest asked for.
    #[error("{registry}/{repository}: {what}: digest mismatch: expected {expected}, got {got}")]
    DigestMismatch {
        registry: String,
        repository: String,
        what: String,
        expected: String,
        got: String,
    },

    /// The registry served something kiln cannot use.
    #[error("{registry}/{repository}: {reason}")]
    Protocol {
        registry: String,
        repository: String,
        reason: String,
    },

    /// An index has no manifest for the requested platform.
    #[error("{reference}: no image for platform {want} (the index has: {available})")]
    NoPlatform {
        reference: String,
        want: String,
        available: String,
    },

    #[error("{what}: {source}")]
    Store {
        what: String,
        #[source]
        source: StoreError,
    },

    #[error(transparent)]
    Credentials(#[from] CredentialError),

    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn registry_detail(code: &Option<String>, message: &Option<String>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(": {c}: {m}"),
        (Some(c), None) => format!(": {c}"),
        (None, Some(m)) => format!(": {m}"),
        (None, None) => String::new(),
    }
}

fn dirs_list(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "(none)".to_string();
    }
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

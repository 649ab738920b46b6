//! Per-registry TLS material from `certs.d` directories, the layout docker and
//! podman share: `DIR/HOST[:PORT]/*.crt` are extra CA certificates, and a
//! `NAME.cert` with its `NAME.key` is a client certificate.

use std::fs;
use std::path::{Path, PathBuf};

use super::error::RegistryError;

/// System-wide directories, podman's first (as podman and skopeo read them).
const SYSTEM_CERT_DIRS: [&str; 2] = ["/etc/containers/certs.d", "/etc/docker/certs.d"];

/// What was found for one registry.
#[derive(Default)]
pub struct TlsMaterial {
    pub roots: Vec<reqwest::Certificate>,
    pub identity: Option<reqwest::Identity>,
    /// Every directory consulted (whether or not it existed), for error messages.
    pub dirs: Vec<PathBuf>,
}

/// The directories consulted for `registry` (`host[:port]`): `cert_dir`
/// alone when given (like podman's `--cert-dir`), else the system ones.
pub fn cert_dirs(registry: &str, cert_dir: Option<&Path>) -> Vec<PathBuf> {
    match cert_dir {
        Some(dir) => vec![dir.to_path_buf()],
        None => SYSTEM_CERT_DIRS
            .iter()
            .map(|d| Path::new(d).join(registry))
            .collect(),
    }
}

/// Loads the CA certificates and client identity for `registry`.
pub fn load(registry: &str, cert_dir: Option<&Path>) -> Result<TlsMaterial, RegistryError> {
    let mut material = TlsMaterial {
        dirs: cert_dirs(registry, cert_dir),
        ..TlsMaterial::default()
    };
    let cert_err = |path: &Path, reason: String| RegistryError::CertFile {
        registry: registry.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    for dir in material.dirs.clone() {
        let mut entries: Vec<PathBuf> = match fs::read_dir(&dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => continue,
        };
        entries.sort();
        for path in entries {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            match ext {
                "crt" => {
                    let pem = fs::read(&path).map_err(|e| cert_err(&path, e.to_string()))?;
                    let certs = reqwest::Certificate::from_pem_bundle(&pem)
                        .map_err(|e| cert_err(&path, e.to_string()))?;
                    if certs.is_empty() {
                        return Err(cert_err(&path, "no PEM certificate in file".into()));
                    }
                    tracing::debug!(path = %path.display(), "registry CA certificate");
                    material.roots.extend(certs);
                }
                "cert" if material.identity.is_none() => {
                    let key_path = path.with_extension("key");
                    let mut pem = fs::read(&path).map_err(|e| cert_err(&path, e.to_string()))?;
                    let key = fs::read(&key_path).map_err(|e| {
                        cert_err(&key_path, format!("key for client certificate: {e}"))
                    })?;
                    pem.push(b'\n');
                    pem.extend_from_slice(&key);
                    let id = reqwest::Identity::from_pem(&pem)
                        .map_err(|e| cert_err(&path, e.to_string()))?;
                    material.identity = Some(id);
                }
                _ => {}
            }
        }
    }
    Ok(material)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn system_dirs_or_cert_dir() {
        assert_eq!(
            cert_dirs("127.0.0.1:5000", None),
            [
                PathBuf::from("/etc/containers/certs.d/127.0.0.1:5000"),
                PathBuf::from("/etc/docker/certs.d/127.0.0.1:5000")
            ]
        );
        assert_eq!(cert_dirs("h", Some(Path::new("/x"))), [PathBuf::from("/x")]);
    }

    #[test]
    fn bad_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), b"not a certificate").unwrap();
        let err = load("h", Some(dir.path())).err().unwrap().to_string();
        assert!(err.contains("ca.crt"), "{err}");
        // A missing directory is simply nothing to add.
        let m = load("h", Some(&dir.path().join("absent"))).unwrap();
        assert!(m.roots.is_empty() && m.identity.is_none());
    }
}

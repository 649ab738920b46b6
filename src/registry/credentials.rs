//! Registry credentials, read and written the way `docker login` / `podman
//! login` do, so a user who already logged in with either tool needs no extra
//! step for kiln.
//!
//! One `config.json` holds three kinds of information:
//! - `credHelpers`: per-registry external helper (`docker-credential-<name>`),
//! - `credsStore`: the default helper for every other registry,
//! - `auths`: inline credentials (base64 `user:pass`, split fields or an
//!   identity token).
//!
//! Helpers win over `auths` because that is docker's precedence; a stale
//! inline entry must not shadow what the keychain holds.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

use super::reference::Reference;

/// Username docker uses to mark the secret as an identity (refresh) token.
const IDENTITY_TOKEN_USER: &str = "<token>";

/// Key docker has always used for Docker Hub in `auths` and with helpers;
/// writing anything else would make `docker` itself miss our entry.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// One username/secret pair for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub secret: String,
}

impl Credential {
    /// True when `secret` is an OAuth identity token rather than a password.
    pub fn is_identity_token(&self) -> bool {
        self.username == IDENTITY_TOKEN_USER
    }

    /// Credential carrying an identity token, in docker's encoding.
    pub fn identity_token(token: impl Into<String>) -> Credential {
        Credential {
            username: IDENTITY_TOKEN_USER.to_string(),
            secret: token.into(),
        }
    }
}

// Hand-written so secrets never reach logs or panic messages.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Errors name the file or helper and the registry, so the user knows what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("read credentials {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("parse credentials {path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("write credentials {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("credentials {path}: invalid entry for {registry}: {reason}")]
    InvalidEntry {
        path: PathBuf,
        registry: String,
        reason: String,
    },
    #[error("credential helper {helper} {action} for {registry} failed: {reason}")]
    Helper {
        helper: String,
        action: &'static str,
        registry: String,
        reason: String,
    },
}

/// The environment variables that decide where credentials live. Passed in
/// explicitly so tests never read or mutate the process environment.
#[derive(Debug, Clone, Default)]
pub struct AuthEnv {
    pub registry_auth_file: Option<PathBuf>,
    pub docker_config: Option<PathBuf>,
    pub home: Option<PathBuf>,
    /// Search path for `docker-credential-*` helpers.
    pub path: Option<OsString>,
}

impl AuthEnv {
    pub fn from_process() -> AuthEnv {
        // An empty variable counts as unset, as in the shell idiom `${X:-…}`.
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        AuthEnv {
            registry_auth_file: var("REGISTRY_AUTH_FILE").map(PathBuf::from),
            docker_config: var("DOCKER_CONFIG").map(PathBuf::from),
            home: var("HOME").map(PathBuf::from),
            path: var("PATH"),
        }
    }
}

/// One credentials file (`config.json` / `auth.json`).
pub struct AuthConfig {
    path: PathBuf,
    /// Whole document, so fields we do not understand survive a save.
    doc: Map<String, Value>,
    search_path: Option<OsString>,
}

// Hand-written: the document holds secrets.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

enum HelperResult {
    Output(Vec<u8>),
    NotFound,
}

impl AuthConfig {
    /// Which file to use: `$REGISTRY_AUTH_FILE`, else
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub fn locate(env: &AuthEnv) -> PathBuf {
        if let Some(file) = &env.registry_auth_file {
            return file.clone();
        }
        if let Some(dir) = &env.docker_config {
            return dir.join("config.json");
        }
        env.home
            .clone()
            .unwrap_or_default()
            .join(".docker")
            .join("config.json")
    }

    /// Locate and load the file for `env`, finding helpers on `env.path`.
    pub fn open(env: &AuthEnv) -> Result<AuthConfig, CredentialError> {
        let mut config = AuthConfig::load(&AuthConfig::locate(env))?;
        config.search_path = env.path.clone();
        Ok(config)
    }

    /// Load `path`; a missing file is an empty config (nobody logged in yet).
    /// Helpers are searched on the process `PATH`; see [`Self::with_search_path`].
    pub fn load(path: &Path) -> Result<AuthConfig, CredentialError> {
        let doc = match fs::read(path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => Map::new(),
            Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(map)) => map,
                Ok(_) => {
                    return Err(CredentialError::Parse {
                        path: path.to_path_buf(),
                        reason: "top level is not a JSON object".to_string(),
                    })
                }
                Err(e) => {
                    return Err(CredentialError::Parse {
                        path: path.to_path_buf(),
                        reason: e.to_string(),
                    })
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Map::new(),
            Err(source) => {
                return Err(CredentialError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Ok(AuthConfig {
            path: path.to_path_buf(),
            doc,
            search_path: std::env::var_os("PATH"),
        })
    }

    /// Search `path` (a `PATH`-style list) for credential helpers.
    pub fn with_search_path(mut self, path: Option<OsString>) -> AuthConfig {
        self.search_path = path;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Credential for the registry of `reference`.
    pub fn get_for(&self, reference: &Reference) -> Result<Option<Credential>, CredentialError> {
        self.get(reference.registry())
    }

    /// Credential for `registry` (`host[:port]`, `docker.io` for Docker Hub).
    pub fn get(&self, registry: &str) -> Result<Option<Credential>, CredentialError> {
        if let Some(helper) = self.helper_for(registry) {
            return self.helper_get(&helper, registry);
        }
        let Some(auths) = self.doc.get("auths").and_then(Value::as_object) else {
            return Ok(None);
        };
        // An exact key beats a normalized match (e.g. both `host` and
        // `https://host/v2/` present).
        let entry = auths.get(registry).or_else(|| {
            auths
                .iter()
                .find(|(key, _)| normalize_key(key) == registry)
                .map(|(_, v)| v)
        });
        match entry {
            Some(entry) => self.parse_entry(registry, entry),
            None => Ok(None),
        }
    }

    /// Store `cred` for `registry`: through the helper when one is configured,
    /// else as a base64 `auths` entry like `docker login`. Call [`Self::save`]
    /// afterwards to persist file changes.
    pub fn store(&mut self, registry: &str, cred: &Credential) -> Result<(), CredentialError> {
        if let Some(helper) = self.helper_for(registry) {
            let body = serde_json::json!({
                "ServerURL": server_key(registry),
                "Username": cred.username,
                "Secret": cred.secret,
            });
            self.run_helper(&helper, "store", registry, body.to_string().as_bytes())?;
            // The keychain now owns the secret; a plaintext copy would linger
            // on disk and could go stale.
            self.remove_auths(registry);
            return Ok(());
        }
        self.remove_auths(registry);
        let entry = if cred.is_identity_token() {
            serde_json::json!({ "identitytoken": cred.secret })
        } else {
            let pair = format!("{}:{}", cred.username, cred.secret);
            serde_json::json!({ "auth": b64_encode(pair.as_bytes()) })
        };
        let auths = self
            .doc
            .entry("auths")
            .or_insert_with(|| Value::Object(Map::new()));
        if !auths.is_object() {
            *auths = Value::Object(Map::new());
        }
        if let Value::Object(map) = auths {
            map.insert(server_key(registry), entry);
        }
        Ok(())
    }

    /// Forget `registry`'s credential. Returns whether anything was removed.
    pub fn erase(&mut self, registry: &str) -> Result<bool, CredentialError> {
        let mut removed = false;
        if let Some(helper) = self.helper_for(registry) {
            let server = server_key(registry);
            removed = matches!(
                self.run_helper(&helper, "erase", registry, server.as_bytes())?,
                HelperResult::Output(_)
            );
        }
        Ok(self.remove_auths(registry) || removed)
    }

    /// Write the file atomically (temp file in the same directory, then
    /// rename) with mode 0600, creating the parent directory with mode 0700.
    pub fn save(&self) -> Result<(), CredentialError> {
        let werr = |source| CredentialError::Write {
            path: self.path.clone(),
            source,
        };
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(werr)?;
        let mut body = serde_json::to_vec_pretty(&self.doc)
            .map_err(|e| werr(io::Error::new(io::ErrorKind::InvalidData, e)))?;
        body.push(b'\n');

        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "config.json".to_string());
        let tmp = dir.join(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            // Created 0600 from the start so the secret is never world-readable,
            // not even between create and chmod.
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            // The umask could not widen 0600, but make it explicit.
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
            fs::rename(&tmp, &self.path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(werr)
    }

    /// Helper name for `registry`: `credHelpers` first, then `credsStore`.
    fn helper_for(&self, registry: &str) -> Option<String> {
        let non_empty = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_string);
        if let Some(helpers) = self.doc.get("credHelpers").and_then(Value::as_object) {
            let hit = helpers.get(registry).or_else(|| {
                helpers
                    .iter()
                    .find(|(k, _)| normalize_key(k) == registry)
                    .map(|(_, v)| v)
            });
            if let Some(name) = hit.and_then(non_empty) {
                return Some(name);
            }
        }
        self.doc.get("credsStore").and_then(non_empty)
    }

    fn helper_get(
        &self,
        helper: &str,
        registry: &str,
    ) -> Result<Option<Credential>, CredentialError> {
        let server = server_key(registry);
        let out = match self.run_helper(helper, "get", registry, server.as_bytes())? {
            HelperResult::Output(out) => out,
            HelperResult::NotFound => return Ok(None),
        };
        let herr = |reason: String| CredentialError::Helper {
            helper: format!("docker-credential-{helper}"),
            action: "get",
            registry: registry.to_string(),
            reason,
        };
        let v: Value = serde_json::from_slice(&out)
            .map_err(|e| herr(format!("invalid JSON on stdout: {e}")))?;
        let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (username, secret) = (field("Username"), field("Secret"));
        if username.is_empty() && secret.is_empty() {
            return Ok(None);
        }
        Ok(Some(Credential { username, secret }))
    }

    /// Run `docker-credential-<helper> <action>` with `input` on stdin.
    /// A "credentials not found" failure is a normal answer, not an error.
    fn run_helper(
        &self,
        helper: &str,
        action: &'static str,
        registry: &str,
        input: &[u8],
    ) -> Result<HelperResult, CredentialError> {
        let program = format!("docker-credential-{helper}");
        let herr = |reason: String| CredentialError::Helper {
            helper: program.clone(),
            action,
            registry: registry.to_string(),
            reason,
        };
        let exe = find_on_path(&program, self.search_path.as_deref())
            .ok_or_else(|| herr("not found on PATH".to_string()))?;
        let mut child = Command::new(&exe)
            .arg(action)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| herr(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A helper may exit without reading stdin; that surfaces through
            // its exit status, so a broken pipe here is not itself fatal.
            if let Err(e) = stdin.write_all(input) {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    return Err(herr(e.to_string()));
                }
            }
        }
        let out = child.wait_with_output().map_err(|e| herr(e.to_string()))?;
        if out.status.success() {
            return Ok(HelperResult::Output(out.stdout));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stdout.contains("credentials not found") || stderr.contains("credentials not found") {
            return Ok(HelperResult::NotFound);
        }
        let status = match out.status.code() {
            Some(code) => format!("exit status {code}"),
            None => "killed by signal".to_string(),
        };
        // Helpers print their diagnostics on either stream; prefer stderr.
        // Only failed runs get here, so no secret is echoed.
        let detail = if stderr.trim().is_empty() {
            stdout.trim()
        } else {
            stderr.trim()
        };
        Err(herr(format!("{status}: {detail}")))
    }

    fn parse_entry(
        &self,
        registry: &str,
        entry: &Value,
    ) -> Result<Option<Credential>, CredentialError> {
        let invalid = |reason: &str| CredentialError::InvalidEntry {
            path: self.path.clone(),
            registry: registry.to_string(),
            reason: reason.to_string(),
        };
        let field = |k: &str| {
            entry
                .get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if let Some(token) = field("identitytoken") {
            return Ok(Some(Credential::identity_token(token)));
        }
        if let Some(auth) = field("auth") {
            let raw = b64_decode(auth).ok_or_else(|| invalid("auth is not valid base64"))?;
            let pair = String::from_utf8(raw).map_err(|_| invalid("auth is not UTF-8"))?;
            let (user, pass) = pair
                .split_once(':')
                .ok_or_else(|| invalid("auth is not user:password"))?;
            return Ok(Some(Credential {
                username: user.to_string(),
                secret: pass.to_string(),
            }));
        }
        if let (Some(user), Some(pass)) = (field("username"), field("password")) {
            return Ok(Some(Credential {
                username: user.to_string(),
                secret: pass.to_string(),
            }));
        }
        // e.g. the empty `{}` docker leaves behind when a helper holds the secret.
        Ok(None)
    }

    /// Drop every `auths` key that means `registry`; true if any existed.
    fn remove_auths(&mut self, registry: &str) -> bool {
        let Some(Value::Object(auths)) = self.doc.get_mut("auths") else {
            return false;
        };
        let before = auths.len();
        auths.retain(|key, _| key != registry && normalize_key(key) != registry);
        auths.len() != before
    }
}

/// Map an `auths`/`credHelpers` key to `host[:port]`: strip the scheme and
/// path, and fold Docker Hub's historic hostnames into `docker.io`.
fn normalize_key(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or(rest);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        other => other,
    }
}

/// The key docker writes (and sends to helpers) for `registry`.
fn server_key(registry: &str) -> String {
    if registry == "docker.io" {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

fn find_on_path(program: &str, search: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    std::env::split_paths(search?)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Standard base64; decoding accepts missing padding, since hand-edited
/// config files omit it and docker reads them.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Standard base64 with padding (what docker writes).
fn b64_encode(data: &[u8]) -> String {
    base64::Engine::encode(&B64, data)
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    base64::Engine::decode(&B64, s.trim()).ok()
}

#[cfg(test)]
mod tests;

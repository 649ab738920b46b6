//! A Distribution / OCI v2 registry client.
//!
//! Why not `oci-client`: its blob upload (`push_blob`, `push_blob_chunked`)
//! takes the whole blob as one in-memory buffer, which breaks kiln's rule
//! that layers are streamed (and the 128 MiB RSS budget for a 300 MB image);
//! it has one TLS configuration for all registries rather than per-registry
//! `certs.d` CAs and client certificates; and it cannot report a failed call
//! with the registry, repository, tag and the registry's error code together.
//! The protocol subset kiln needs is small (ping, token, manifest GET/PUT,
//! blob HEAD/GET, upload POST/PATCH/PUT, mount), so it is written here on
//! top of `reqwest` (rustls with the `ring` provider: no C toolchain beyond
//! `cc`, and it links statically for musl).
//!
//! Blocking `reqwest` is used on purpose: blob bodies are `Read`ers that feed
//! [`crate::store::Store::put_reader`] directly, and parallelism comes from
//! scoped threads. Its internal runtime thread is only started when a
//! [`Client`] is built, inside the commands that talk to a registry.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::sleep;
use std::time::Duration;

use reqwest::blocking::{Body, Client as Http, RequestBuilder, Response};
use reqwest::header::{
    HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode, Url};

use crate::image::media_types;
use crate::store::Digest;

use super::auth::{parse_challenge, Challenge, TokenResponse};
use super::credentials::Credential;
use super::error::RegistryError;
use super::progress::{BlobProgress, CountingReader};
use super::tls;

/// Attempts per request (first try plus retries) on 5xx, 429 and resets.
const MAX_ATTEMPTS: u32 = 4;
/// First retry delay; doubled each time (0.25 s, 0.5 s, 1 s).
const BACKOFF: Duration = Duration::from_millis(250);
/// Largest manifest accepted (the distribution spec suggests 4 MiB).
const MAX_MANIFEST: u64 = 8 * 1024 * 1024;
/// Blobs up to this size go up in one PUT; larger ones in PATCH chunks.
pub const MONOLITHIC_MAX: u64 = 32 * 1024 * 1024;
/// Size of one PATCH chunk for large blobs.
pub const CHUNK_SIZE: u64 = 64 * 1024 * 1024;

/// Every manifest type kiln understands, for `Accept`.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Verify TLS certificates (`--tls-verify`); when false, HTTPS is tried
    /// without verification and plain HTTP after it, like `--insecure`.
    pub tls_verify: bool,
    /// A certs.d-style directory used instead of the system ones (`--cert-dir`).
    pub cert_dir: Option<PathBuf>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            tls_verify: true,
            cert_dir: None,
        }
    }
}

/// What a request needs access to, for bearer-token scopes.
#[derive(Debug, Clone)]
pub struct Scope {
    scopes: Vec<String>,
}

impl Scope {
    pub fn pull(repo: &str) -> Scope {
        Scope {
            scopes: vec![format!("repository:{repo}:pull")],
        }
    }

    pub fn push(repo: &str) -> Scope {
        Scope {
            scopes: vec![format!("repository:{repo}:pull,push")],
        }
    }

    /// Push to `repo` plus read `from` (a cross-repository mount).
    pub fn mount(repo: &str, from: &str) -> Scope {
        Scope {
            scopes: vec![
                format!("repository:{repo}:pull,push"),
                format!("repository:{from}:pull"),
            ],
        }
    }

    fn none() -> Scope {
        Scope { scopes: Vec::new() }
    }

    fn key(&self) -> String {
        self.scopes.join(" ")
    }
}

/// Result of a cross-repository mount request.
pub enum Mount {
    Mounted,
    /// The registry did not mount but opened an upload session here.
    Upload(Url),
}

/// A connection to one registry. `Sync`: blob transfers share it across threads.
pub struct Client {
    /// `host[:port]` as in references (`docker.io`).
    registry: String,
    /// `https://host[:port]` or `http://…`.
    base: Url,
    http: Http,
    credential: Option<Credential>,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, String>>,
}

impl Client {
    /// Connects to `registry` (served at `api_host`), choosing HTTPS or (for
    /// loopback registries and `tls_verify: false`) plain HTTP, and learns
    /// how it wants to be authenticated.
    ///
    /// HTTPS is always tried first, as docker does; HTTP is used only when
    /// the HTTPS attempt failed for a reason other than the certificate (a
    /// plain-HTTP server answers a TLS hello with garbage), so a TLS registry
    /// on loopback with an unknown CA gives the TLS error, not a silent
    /// downgrade.
    pub fn connect(
        registry: &str,
        api_host: &str,
        loopback: bool,
        credential: Option<Credential>,
        opts: &ClientOptions,
    ) -> Result<Client, RegistryError> {
        let material = tls::load(registry, opts.cert_dir.as_deref())?;
        let dirs = material.dirs.clone();
        let mut builder = Http::builder()
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            // Blob bodies can take long; a whole-request timeout would cut them.
            .timeout(None::<Duration>)
            .danger_accept_invalid_certs(!opts.tls_verify);
        for cert in material.roots {
            builder = builder.add_root_certificate(cert);
        }
        if let Some(id) = material.identity {
            builder = builder.identity(id);
        }
        let http = builder.build().map_err(|e| RegistryError::Network {
            action: "set up HTTP client for".into(),
            registry: registry.to_string(),
            detail: error_chain(&e),
        })?;
        let mut client = Client {
            registry: registry.to_string(),
            base: base_url("https", api_host, registry)?,
            http,
            credential,
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        };
        match client.ping() {
            Ok(()) => Ok(client),
            Err(e) => {
                let text = error_chain(&e);
                if is_certificate_error(&text) && opts.tls_verify {
                    return Err(RegistryError::Tls {
                        registry: registry.to_string(),
                        detail: text,
                        dirs,
                    });
                }
                if !loopback && opts.tls_verify {
                    return Err(RegistryError::Network {
                        action: "connect to".into(),
                        registry: registry.to_string(),
                        detail: text,
                    });
                }
                tracing::debug!(registry, error = %text, "HTTPS failed; trying plain HTTP");
                client.base = base_url("http", api_host, registry)?;
                client.ping().map_err(|e2| RegistryError::Network {
                    action: "connect to".into(),
                    registry: registry.to_string(),
                    detail: format!("https: {text}; http: {}", error_chain(&e2)),
                })?;
                Ok(client)
            }
        }
    }

    /// `host[:port]` of the registry.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `GET /v2/`: 200 means open, 401 carries the auth challenge.
    fn ping(&self) -> Result<(), reqwest::Error> {
        let url = self.url("/v2/");
        let resp = self.http.get(url).send()?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            self.learn_challenge(resp.headers());
        }
        Ok(())
    }

    /// Checks that the credential given at connect is accepted (`kiln login`).
    pub fn verify_login(&self) -> Result<(), RegistryError> {
        let fail = |detail: String| RegistryError::LoginFailed {
            registry: self.registry.clone(),
            detail,
        };
        let challenge = self.current_challenge();
        match challenge {
            None => Ok(()),
            Some(Challenge::Basic) => {
                let resp = self.send(&Scope::none(), "log in to", "", |h| {
                    Ok(h.get(self.url("/v2/")))
                })?;
                match resp.status() {
                    s if s.is_success() => Ok(()),
                    s => Err(fail(format!(
                        "HTTP {}{}: wrong username or password?",
                        s.as_u16(),
                        error_body_text(resp)
                    ))),
                }
            }
            Some(Challenge::Bearer { .. }) => match self.fetch_token(&Scope::none(), None) {
                Ok(_) => Ok(()),
                Err(RegistryError::Unauthorized {
                    status, message, ..
                }) => Err(fail(format!(
                    "HTTP {status}{}: wrong username or password?",
                    message.map(|m| format!(": {m}")).unwrap_or_default()
                ))),
                Err(e) => Err(e),
            },
        }
    }

    /// Fetches a manifest (or index) by tag or digest: the exact bytes, the
    /// media type, and their digest (checked against `target` when it is one).
    pub fn get_manifest(
        &self,
        repo: &str,
        target: &str,
    ) -> Result<(Vec<u8>, String, Digest), RegistryError> {
        let action = format!("get manifest {}", super::error::describe_target(target));
        let path = format!("/v2/{repo}/manifests/{target}");
        let resp = self.send(&Scope::pull(repo), &action, repo, |h| {
            Ok(h.get(self.url(&path)).header(ACCEPT, MANIFEST_ACCEPT))
        })?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(RegistryError::ManifestUnknown {
                registry: self.registry.clone(),
                repository: repo.to_string(),
                target: target.to_string(),
            });
        }
        let resp = self.check(resp, &action, repo, Some(target))?;
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
        let mut bytes = Vec::new();
        resp.take(MAX_MANIFEST + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.net_error(&action, e.to_string()))?;
        if bytes.len() as u64 > MAX_MANIFEST {
            return Err(self.protocol(
                repo,
                format!("{action}: manifest larger than {MAX_MANIFEST} bytes"),
            ));
        }
        let digest = Digest::of_bytes(&bytes);
        if target.starts_with("sha256:") && digest.as_str() != target {
            return Err(RegistryError::DigestMismatch {
                registry: self.registry.clone(),
                repository: repo.to_string(),
                what: action,
                expected: target.to_string(),
                got: digest.to_string(),
            });
        }
        // The document's own mediaType wins over a generic Content-Type
        // (some registries answer `application/json`).
        let declared = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            });
        let media_type = match (content_type, declared) {
            (Some(ct), _) if media_types::is_index(&ct) || media_types::is_manifest(&ct) => ct,
            (_, Some(d)) => d,
            (Some(ct), None) => ct,
            (None, None) => media_types::OCI_MANIFEST.to_string(),
        };
        Ok((bytes, media_type, digest))
    }

    /// `HEAD` a blob: whether the repository has it.
    pub fn blob_exists(&self, repo: &str, digest: &Digest) -> Result<bool, RegistryError> {
        let action = format!("check blob {digest} in");
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.send(&Scope::push(repo), &action, repo, |h| {
            Ok(h.head(self.url(&path)))
        })?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => self.check(resp, &action, repo, None).map(|_| false),
        }
    }

    /// Starts `GET` of a blob; the response body is the blob (redirects followed).
    pub fn get_blob(&self, repo: &str, digest: &Digest) -> Result<Response, RegistryError> {
        let action = format!("get blob {digest} from");
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = self.send(&Scope::pull(repo), &action, repo, |h| {
            Ok(h.get(self.url(&path)))
        })?;
        self.check(resp, &action, repo, None)
    }

    /// Asks the registry to mount `digest` from repository `from` into `repo`.
    pub fn mount_blob(
        &self,
        repo: &str,
        digest: &Digest,
        from: &str,
    ) -> Result<Mount, RegistryError> {
        let action = format!("mount blob {digest} from {from} into");
        let mut url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", digest.as_str())
            .append_pair("from", from);
        let resp = self.send(&Scope::mount(repo, from), &action, repo, |h| {
            Ok(h.post(url.clone()).header(CONTENT_LENGTH, "0"))
        })?;
        let status = resp.status();
        let resp = self.check(resp, &action, repo, None)?;
        if status == StatusCode::CREATED {
            return Ok(Mount::Mounted);
        }
        Ok(Mount::Upload(self.location(&resp, repo, &action)?))
    }

    /// Opens an upload session: the URL to send the blob to.
    pub fn start_upload(&self, repo: &str) -> Result<Url, RegistryError> {
        let action = "start blob upload to";
        let url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        let resp = self.send(&Scope::push(repo), action, repo, |h| {
            Ok(h.post(url.clone()).header(CONTENT_LENGTH, "0"))
        })?;
        let resp = self.check(resp, action, repo, None)?;
        self.location(&resp, repo, action)
    }

    /// Uploads the file at `path` (`size` bytes, hashing to `digest`) into the
    /// session at `location`: one PUT up to [`MONOLITHIC_MAX`], else PATCH
    /// chunks of [`CHUNK_SIZE`] and a closing PUT. The file is streamed,
    /// never read whole into memory.
    pub fn upload_blob(
        &self,
        repo: &str,
        mut location: Url,
        digest: &Digest,
        path: &Path,
        size: u64,
        progress: &BlobProgress,
    ) -> Result<(), RegistryError> {
        let action = format!("upload blob {digest} to");
        let scope = Scope::push(repo);
        let open_at = |offset: u64, len: u64| -> Result<Body, RegistryError> {
            let mut f = File::open(path).map_err(|source| RegistryError::Io {
                what: format!("open {}", path.display()),
                source,
            })?;
            f.seek(SeekFrom::Start(offset))
                .map_err(|source| RegistryError::Io {
                    what: format!("seek {}", path.display()),
                    source,
                })?;
            Ok(Body::sized(
                CountingReader::new(f.take(len), progress.clone()),
                len,
            ))
        };
        if size > MONOLITHIC_MAX {
            let mut offset = 0;
            while offset < size {
                let len = CHUNK_SIZE.min(size - offset);
                let range = format!("{offset}-{}", offset + len - 1);
                let url = location.clone();
                let resp = self.send(&scope, &action, repo, |h| {
                    Ok(h.request(Method::PATCH, url.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header("Content-Range", range.clone())
                        .header(CONTENT_LENGTH, len)
                        .body(open_at(offset, len)?))
                })?;
                let resp = self.check(resp, &action, repo, None)?;
                location = self.location(&resp, repo, &action)?;
                offset += len;
            }
            location
                .query_pairs_mut()
                .append_pair("digest", digest.as_str());
            let url = location;
            let resp = self.send(&scope, &action, repo, |h| {
                Ok(h.put(url.clone()).header(CONTENT_LENGTH, "0"))
            })?;
            self.check(resp, &action, repo, None)?;
            return Ok(());
        }
        location
            .query_pairs_mut()
            .append_pair("digest", digest.as_str());
        let url = location;
        let resp = self.send(&scope, &action, repo, |h| {
            progress.reset();
            Ok(h.put(url.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(open_at(0, size)?))
        })?;
        self.check(resp, &action, repo, None)?;
        Ok(())
    }

    /// `PUT` a manifest under `target` (tag or digest) with its exact bytes and
    /// media type; returns the digest of those bytes.
    pub fn put_manifest(
        &self,
        repo: &str,
        target: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        let action = format!("put manifest {}", super::error::describe_target(target));
        let url = self.url(&format!("/v2/{repo}/manifests/{target}"));
        let resp = self.send(&Scope::push(repo), &action, repo, |h| {
            Ok(h.put(url.clone())
                .header(CONTENT_TYPE, media_type)
                .body(bytes.to_vec()))
        })?;
        self.check(resp, &action, repo, Some(target))?;
        Ok(Digest::of_bytes(bytes))
    }

    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(path);
        url
    }

    /// The upload `Location`, resolved against the registry's URL.
    fn location(&self, resp: &Response, repo: &str, action: &str) -> Result<Url, RegistryError> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                self.protocol(repo, format!("{action}: response has no Location header"))
            })?;
        self.base
            .join(loc)
            .map_err(|e| self.protocol(repo, format!("{action}: bad Location {loc:?}: {e}")))
    }

    fn current_challenge(&self) -> Option<Challenge> {
        self.challenge.lock().map(|c| c.clone()).unwrap_or(None)
    }

    fn learn_challenge(&self, headers: &HeaderMap) {
        let parsed = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(parse_challenge)
            // Prefer bearer when a registry offers both.
            .max_by_key(|c| matches!(c, Challenge::Bearer { .. }));
        if let (Some(c), Ok(mut slot)) = (parsed, self.challenge.lock()) {
            *slot = Some(c);
        }
    }

    /// The `Authorization` value for `scope`, fetching a token if needed.
    fn authorization(
        &self,
        scope: &Scope,
        extra: Option<&str>,
    ) -> Result<Option<String>, RegistryError> {
        match self.current_challenge() {
            None => Ok(None),
            Some(Challenge::Basic) => Ok(self.credential.as_ref().map(basic_header)),
            Some(Challenge::Bearer { .. }) => {
                let key = format!("{} {}", scope.key(), extra.unwrap_or(""));
                if let Some(t) = self.tokens.lock().ok().and_then(|t| t.get(&key).cloned()) {
                    return Ok(Some(format!("Bearer {t}")));
                }
                let token = self.fetch_token(scope, extra)?;
                if let Ok(mut tokens) = self.tokens.lock() {
                    tokens.insert(key, token.clone());
                }
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// Gets a bearer token from the challenge's realm for `scope` (plus the
    /// scope the registry named in its last challenge, if any). Anonymous
    /// when there is no credential; an identity token uses the OAuth2
    /// refresh-token grant, as docker does.
    fn fetch_token(&self, scope: &Scope, extra: Option<&str>) -> Result<String, RegistryError> {
        let Some(Challenge::Bearer {
            realm,
            service,
            scope: challenge_scope,
        }) = self.current_challenge()
        else {
            return Err(self.protocol("", "token requested without a bearer challenge".into()));
        };
        let action = "get a token from";
        let realm_url = Url::parse(&realm)
            .map_err(|e| self.protocol("", format!("bad token realm {realm:?}: {e}")))?;
        let mut scopes = scope.scopes.clone();
        for s in [
            extra.map(str::to_string),
            challenge_scope.filter(|_| extra.is_some()),
        ]
        .into_iter()
        .flatten()
        {
            if !scopes.contains(&s) {
                scopes.push(s);
            }
        }
        let identity = self.credential.as_ref().filter(|c| c.is_identity_token());
        let resp = self.execute(action, "", || {
            if let Some(cred) = identity {
                let mut form = vec![
                    ("grant_type".to_string(), "refresh_token".to_string()),
                    ("refresh_token".to_string(), cred.secret.clone()),
                    ("client_id".to_string(), "kiln".to_string()),
                    ("service".to_string(), service.clone().unwrap_or_default()),
                ];
                if !scopes.is_empty() {
                    form.push(("scope".to_string(), scopes.join(" ")));
                }
                return Ok(self.http.post(realm_url.clone()).form(&form));
            }
            let mut url = realm_url.clone();
            {
                let mut q = url.query_pairs_mut();
                if let Some(s) = &service {
                    q.append_pair("service", s);
                }
                for s in &scopes {
                    q.append_pair("scope", s);
                }
            }
            let mut req = self.http.get(url);
            if let Some(cred) = &self.credential {
                req = req.header(AUTHORIZATION, basic_header(cred));
            }
            Ok(req)
        })?;
        let resp = self.check(resp, action, "", None)?;
        let mut body = Vec::new();
        resp.take(MAX_MANIFEST)
            .read_to_end(&mut body)
            .map_err(|e| self.net_error(action, e.to_string()))?;
        let parsed: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| self.protocol("", format!("token response from {realm}: {e}")))?;
        parsed
            .into_token()
            .ok_or_else(|| self.protocol("", format!("token response from {realm} has no token")))
    }

    /// Sends a request with authentication, retrying (bounded) on 5xx, 429
    /// and connection failures, and once more with fresh auth on a 401.
    /// `build` is called per attempt, so bodies are re-created.
    fn send(
        &self,
        scope: &Scope,
        action: &str,
        repo: &str,
        build: impl Fn(&Http) -> Result<RequestBuilder, RegistryError>,
    ) -> Result<Response, RegistryError> {
        let mut extra_scope: Option<String> = None;
        let mut reauthed = false;
        loop {
            let auth = self.authorization(scope, extra_scope.as_deref())?;
            let resp = self.execute(action, repo, || {
                let req = build(&self.http)?;
                Ok(match &auth {
                    Some(a) => req.header(AUTHORIZATION, a.as_str()),
                    None => req,
                })
            })?;
            if resp.status() == StatusCode::UNAUTHORIZED && !reauthed && self.credential_may_help()
            {
                reauthed = true;
                self.learn_challenge(resp.headers());
                if let Some(Challenge::Bearer { scope: Some(s), .. }) = self.current_challenge() {
                    extra_scope = Some(s);
                }
                // Drop the cached token: it may have expired.
                if let Ok(mut tokens) = self.tokens.lock() {
                    tokens.clear();
                }
                continue;
            }
            return Ok(resp);
        }
    }

    /// A second try after 401 helps when a token expired or the challenge
    /// changed; with basic auth the same credential would just fail again.
    fn credential_may_help(&self) -> bool {
        !matches!(self.current_challenge(), Some(Challenge::Basic))
    }

    /// One request with bounded retries; no auth handling.
    fn execute(
        &self,
        action: &str,
        repo: &str,
        build: impl Fn() -> Result<RequestBuilder, RegistryError>,
    ) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= MAX_ATTEMPTS;
            match build()?.send() {
                Ok(resp) => {
                    let s = resp.status();
                    if (s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS) && !last {
                        tracing::debug!(status = s.as_u16(), action, repo, attempt, "retrying");
                        sleep(BACKOFF * 2u32.pow(attempt - 1));
                        continue;
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    let text = error_chain(&e);
                    if is_certificate_error(&text) {
                        return Err(RegistryError::Tls {
                            registry: self.registry.clone(),
                            detail: text,
                            dirs: Vec::new(),
                        });
                    }
                    if !last && (e.is_connect() || e.is_timeout() || e.is_request() || e.is_body())
                    {
                        tracing::debug!(error = %text, action, repo, attempt, "retrying");
                        sleep(BACKOFF * 2u32.pow(attempt - 1));
                        continue;
                    }
                    let target = if repo.is_empty() {
                        self.registry.clone()
                    } else {
                        format!("{}/{repo}", self.registry)
                    };
                    return Err(RegistryError::Network {
                        action: action.to_string(),
                        registry: target,
                        detail: text,
                    });
                }
            }
        }
    }

    /// Turns an error status into the matching [`RegistryError`].
    fn check(
        &self,
        resp: Response,
        action: &str,
        repo: &str,
        target: Option<&str>,
    ) -> Result<Response, RegistryError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let (code, message) = error_body(resp);
        if let (Some(t), Some("MANIFEST_UNKNOWN")) = (target, code.as_deref()) {
            return Err(RegistryError::ManifestUnknown {
                registry: self.registry.clone(),
                repository: repo.to_string(),
                target: t.to_string(),
            });
        }
        let (registry, repository) = (self.registry.clone(), repo.to_string());
        let status = status.as_u16();
        if status == 401 || status == 403 {
            return Err(RegistryError::Unauthorized {
                action: action.to_string(),
                registry,
                repository,
                status,
                code,
                message,
            });
        }
        Err(RegistryError::Http {
            action: action.to_string(),
            registry,
            repository,
            status,
            code,
            message,
        })
    }

    fn net_error(&self, action: &str, detail: String) -> RegistryError {
        RegistryError::Network {
            action: action.to_string(),
            registry: self.registry.clone(),
            detail,
        }
    }

    fn protocol(&self, repo: &str, reason: String) -> RegistryError {
        RegistryError::Protocol {
            registry: self.registry.clone(),
            repository: repo.to_string(),
            reason,
        }
    }
}

fn base_url(scheme: &str, api_host: &str, registry: &str) -> Result<Url, RegistryError> {
    Url::parse(&format!("{scheme}://{api_host}/")).map_err(|e| RegistryError::Protocol {
        registry: registry.to_string(),
        repository: String::new(),
        reason: format!("invalid registry address: {e}"),
    })
}

fn basic_header(cred: &Credential) -> String {
    let pair = format!("{}:{}", cred.username, cred.secret);
    format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair.as_bytes())
    )
}

/// The first `{"errors":[{"code","message"}]}` entry of an error body.
fn error_body(resp: Response) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default)]
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: Option<String>,
        #[serde(default)]
        message: Option<String>,
    }
    let mut body = Vec::new();
    if resp.take(64 * 1024).read_to_end(&mut body).is_err() {
        return (None, None);
    }
    match serde_json::from_slice::<Envelope>(&body) {
        Ok(env) => match env.errors.into_iter().next() {
            Some(e) => (e.code, e.message),
            None => (None, None),
        },
        Err(_) => {
            let text = String::from_utf8_lossy(&body).trim().to_string();
            (None, (!text.is_empty() && text.len() < 200).then_some(text))
        }
    }
}

fn error_body_text(resp: Response) -> String {
    match error_body(resp) {
        (Some(c), Some(m)) => format!(" {c}: {m}"),
        (Some(c), None) => format!(" {c}"),
        (None, Some(m)) => format!(" {m}"),
        (None, None) => String::new(),
    }
}

/// An error and all its causes on one line (reqwest hides the useful part
/// — the rustls or io error — in the source chain).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// Whether a connection error came from certificate verification (rustls
/// reports `invalid peer certificate: …`).
fn is_certificate_error(text: &str) -> bool {
    text.contains("invalid peer certificate") || text.contains("certificate")
}

//! A throwaway Distribution v2 registry (Debian's `docker-registry`) on
//! 127.0.0.1, one per test.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use super::tools;

/// How long [`Registry::start`] waits for one registry process to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How many ports [`Registry::start`] tries before giving up.
const START_ATTEMPTS: u32 = 5;
/// Pause between readiness probes.
const POLL: Duration = Duration::from_millis(50);

/// A running `docker-registry serve` with filesystem storage in its own
/// temporary directory, listening on `127.0.0.1:<port>` over plain HTTP with
/// no authentication. Dropping it kills and reaps the process and deletes
/// the storage.
pub struct Registry {
    child: Child,
    addr: String,
    log: PathBuf,
    dir: tempfile::TempDir,
    options: RegistryOptions,
}

/// How a registry is served: plain HTTP without auth by default.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with this certificate and key (see [`TestCa`]).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Require basic auth from this htpasswd (bcrypt) file.
    pub htpasswd: Option<PathBuf>,
    /// Require bearer tokens from this token server (realm, issuer, cert).
    pub token: Option<TokenAuth>,
}

/// The `auth.token` settings that make the registry trust a [`TokenServer`].
#[derive(Clone, Debug)]
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub cert: PathBuf,
}

impl Registry {
    /// Starts a registry and returns once `GET /v2/` answers 200.
    ///
    /// Panics with "docker-registry not found: run
    /// scripts/install-test-deps.sh as root" when the binary is missing,
    /// and with the registry's log when it does not come up: each attempt
    /// is bounded by 15 s, and a lost port race (another process bound the
    /// port first) is retried on a fresh port, at most 5 times.
    pub fn start() -> Registry {
        Self::start_with(&RegistryOptions::default())
    }

    /// [`Registry::start`] with TLS and/or htpasswd auth. With TLS the
    /// readiness probe is a TCP connect (after the "listening on" line).
    pub fn start_with(options: &RegistryOptions) -> Registry {
        let binary = tools::require("docker-registry");
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            match Self::try_start(&binary, options) {
                Ok(registry) => return registry,
                Err(PortTaken(log)) => {
                    failures.push(format!("attempt {attempt}: port taken\n{log}"));
                }
            }
        }
        panic!(
            "docker-registry: no free port after {START_ATTEMPTS} attempts\n{}",
            failures.join("\n")
        );
    }

    /// One start on one port. `Err` only when the port was taken; any other
    /// failure panics with the log.
    fn try_start(binary: &Path, options: &RegistryOptions) -> Result<Registry, PortTaken> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-registry-")
            .tempdir()
            .expect("create a temporary directory for the registry");
        let addr = format!("127.0.0.1:{}", tools::free_port());
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            config_yaml(&dir.path().join("storage"), &addr, options),
        )
        .expect("write the registry config");
        let log = dir.path().join("registry.log");
        let log_file = File::create(&log).expect("create the registry log file");
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("duplicate the log file handle"))
            .stderr(log_file);
        // REGISTRY_* variables override the config file; keep ours authoritative.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|err| panic!("could not start `{}`: {err}", tools::describe(&cmd)));
        let mut registry = Registry {
            child,
            addr,
            log,
            dir,
            options: options.clone(),
        };
        registry.wait_ready(&cmd)?;
        Ok(registry)
    }

    /// Waits until this process says it listens on our address and
    /// `GET /v2/` there answers 200. The "listening on" log line proves
    /// the answer comes from our process, not one that won the port race.
    fn wait_ready(&mut self, cmd: &Command) -> Result<(), PortTaken> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let listening = format!("listening on {}", self.addr);
        let mut last_probe = String::from("not probed yet");
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the registry process") {
                let log = self.log();
                if log.contains("address already in use") {
                    return Err(PortTaken(log));
                }
                panic!(
                    "`{}` exited with {status} before answering on {}\n--- log ---\n{log}",
                    tools::describe(cmd),
                    self.addr
                );
            }
            if self.log().contains(&listening) && self.options.tls.is_some() {
                let sock: SocketAddr = self.addr.parse().expect("registry address is ip:port");
                match TcpStream::connect_timeout(&sock, Duration::from_secs(1)) {
                    Ok(_) => return Ok(()),
                    Err(err) => last_probe = format!("connect failed: {err}"),
                }
            } else if self.log().contains(&listening) {
                match get_v2(&self.addr) {
                    Ok(status) if status.starts_with("HTTP/1.1 200") => return Ok(()),
                    Ok(status)
                        if (self.options.htpasswd.is_some() || self.options.token.is_some())
                            && status.starts_with("HTTP/1.1 401") =>
                    {
                        return Ok(())
                    }
                    Ok(status) => last_probe = format!("GET /v2/ answered `{status}`"),
                    Err(err) => last_probe = format!("GET /v2/ failed: {err}"),
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "`{}` did not answer 200 on http://{}/v2/ within {READY_TIMEOUT:?} \
                     (last probe: {last_probe})\n--- log ---\n{}",
                    tools::describe(cmd),
                    self.addr,
                    self.log()
                );
            }
            sleep(POLL);
        }
    }

    /// `127.0.0.1:PORT`, the registry's host for image references
    /// (`docker://{addr}/repo:tag`).
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// Everything the registry printed so far (its log), for failure messages.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_else(|err| format!("(cannot read {}: {err})", self.log.display()))
    }

    /// The registry's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory holding the config, the log and the blob storage.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The requests the registry answered so far (its access log), as
    /// `(method, uri)` pairs, from its `response completed` log lines.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.log()
            .lines()
            .filter(|l| l.contains("msg=\"response completed\""))
            .filter_map(|l| {
                let method = log_field(l, "http.request.method=")?;
                let uri = log_field(l, "http.request.uri=")?;
                Some((method, uri))
            })
            .collect()
    }

    /// Blob upload requests (`PATCH`/`PUT` on `.../blobs/uploads/...`) so far.
    pub fn upload_requests(&self) -> Vec<(String, String)> {
        self.requests()
            .into_iter()
            .filter(|(m, u)| (m == "PATCH" || m == "PUT") && u.contains("/blobs/uploads/"))
            .collect()
    }

    /// Cross-repository mount requests (`POST ...?mount=`) so far.
    pub fn mount_requests(&self) -> Vec<(String, String)> {
        self.requests()
            .into_iter()
            .filter(|(m, u)| m == "POST" && u.contains("mount="))
            .collect()
    }
}

/// The value of `key` in a logrus text line (`key=value` or `key="value"`).
fn log_field(line: &str, key: &str) -> Option<String> {
    let rest = &line[line.find(key)? + key.len()..];
    if let Some(quoted) = rest.strip_prefix('"') {
        Some(quoted[..quoted.find('"')?].to_string())
    } else {
        Some(rest.split_whitespace().next()?.to_string())
    }
}

/// A certificate authority made by `openssl` for one test, and a server
/// certificate it signed for `127.0.0.1` (IP SAN), in a temporary directory.
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// Generates the CA and the server certificate (P-256 keys, 1 day).
    pub fn generate() -> TestCa {
        let openssl = tools::require("openssl");
        let dir = tempfile::Builder::new()
            .prefix("kiln-ca-")
            .tempdir()
            .expect("create a temporary directory for the CA");
        let d = dir.path();
        let ext = d.join("server.ext");
        fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write the certificate extensions");
        let run = |args: &[&str]| {
            tools::run(Command::new(&openssl).args(args).current_dir(d));
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=kiln test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "server.ext",
        ]);
        TestCa { dir }
    }

    /// The CA certificate (PEM), what clients must trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// `(certificate, key)` for the registry's `http.tls`.
    pub fn server(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("server.crt"),
            self.dir.path().join("server.key"),
        )
    }
}

/// Writes an htpasswd file with one bcrypt entry (`htpasswd -Bbn`).
pub fn htpasswd(path: &Path, user: &str, password: &str) {
    let out = tools::run(Command::new(tools::require("htpasswd")).args(["-Bbn", user, password]));
    fs::write(path, out.stdout).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Killing an already exited child is harmless; reaping is what matters.
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- docker-registry log ({}) ---\n{}",
                self.addr,
                self.log()
            );
        }
    }
}

/// A start that lost the port race; carries the log.
struct PortTaken(String);

/// The registry configuration: filesystem storage under `storage`, plain
/// HTTP on `addr`, no auth, no background upload purging.
fn config_yaml(storage: &Path, addr: &str, options: &RegistryOptions) -> String {
    let mut yaml = format!(
        "version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: kiln-test-registry
",
        storage = storage.display()
    );
    if let Some((cert, key)) = &options.tls {
        yaml.push_str(&format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            cert.display(),
            key.display()
        ));
    }
    if let Some(t) = &options.token {
        yaml.push_str(&format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            t.realm,
            t.service,
            t.issuer,
            t.cert.display()
        ));
    }
    if let Some(file) = &options.htpasswd {
        yaml.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
            file.display()
        ));
    }
    yaml
}

/// Sends `GET /v2/` over a raw HTTP/1.1 connection and returns the status
/// line. Every socket operation is bounded by one second.
fn get_v2(addr: &str) -> std::io::Result<String> {
    let timeout = Duration::from_secs(1);
    let sock: SocketAddr = addr.parse().expect("registry address is ip:port");
    let mut stream = TcpStream::connect_timeout(&sock, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.take(64 * 1024).read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    Ok(response.lines().next().unwrap_or_default().to_owned())
}

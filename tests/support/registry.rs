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
        let binary = tools::require("docker-registry");
        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            match Self::try_start(&binary) {
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
    fn try_start(binary: &Path) -> Result<Registry, PortTaken> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-registry-")
            .tempdir()
            .expect("create a temporary directory for the registry");
        let addr = format!("127.0.0.1:{}", tools::free_port());
        let config = dir.path().join("config.yml");
        fs::write(&config, config_yaml(&dir.path().join("storage"), &addr))
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
            if self.log().contains(&listening) {
                match get_v2(&self.addr) {
                    Ok(status) if status.starts_with("HTTP/1.1 200") => return Ok(()),
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
fn config_yaml(storage: &Path, addr: &str) -> String {
    format!(
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
    )
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

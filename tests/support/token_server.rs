//! A Docker token-protocol authorization server for one test: the `realm`
//! that a real `docker-registry` (configured with `auth.token`) sends
//! clients to. It issues RS256 JWTs signed with a key made by `openssl`,
//! whose certificate the registry trusts, granting what was asked to the
//! right user/password and only `pull` to anonymous clients. The registry
//! verifies every token itself, so a wrong token is still refused for real.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde_json::json;

use super::registry::TokenAuth;
use super::tools;

const SERVICE: &str = "kiln-test-registry";
const ISSUER: &str = "kiln-test-issuer";

/// One token request as the server saw it.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The basic-auth user, `None` for an anonymous request.
    pub user: Option<String>,
    pub scopes: Vec<String>,
    /// Whether a token was issued (false: wrong password).
    pub issued: bool,
}

pub struct TokenServer {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    requests: Arc<Mutex<Vec<TokenRequest>>>,
    dir: tempfile::TempDir,
}

struct Keys {
    key: PathBuf,
    x5c: String,
    dir: PathBuf,
    user: String,
    password: String,
    counter: AtomicU64,
}

impl TokenServer {
    /// Starts serving on a free loopback port; `user`/`password` get full access.
    pub fn start(user: &str, password: &str) -> TokenServer {
        let openssl = tools::require("openssl");
        let dir = tempfile::Builder::new()
            .prefix("kiln-token-")
            .tempdir()
            .expect("temporary directory for the token server");
        tools::run(
            Command::new(&openssl)
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "token.key",
                    "-out",
                    "token.crt",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=kiln token issuer",
                ])
                .current_dir(dir.path()),
        );
        let der = tools::run(
            Command::new(&openssl)
                .args(["x509", "-in", "token.crt", "-outform", "DER"])
                .current_dir(dir.path()),
        )
        .stdout;
        let keys = Arc::new(Keys {
            key: dir.path().join("token.key"),
            x5c: base64::engine::general_purpose::STANDARD.encode(der),
            dir: dir.path().to_path_buf(),
            user: user.to_string(),
            password: password.to_string(),
            counter: AtomicU64::new(0),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the token server");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener
            .local_addr()
            .expect("token server address")
            .to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, requests) = (stop.clone(), requests.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Err(e) = handle(stream, &keys, &requests) {
                                eprintln!("token server: {e}");
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => {
                            eprintln!("token server: accept: {e}");
                            return;
                        }
                    }
                }
            })
        };
        TokenServer {
            addr,
            stop,
            thread: Some(thread),
            requests,
            dir,
        }
    }

    /// The registry settings that point at this server.
    pub fn auth(&self) -> TokenAuth {
        TokenAuth {
            realm: format!("http://{}/token", self.addr),
            service: SERVICE.to_string(),
            issuer: ISSUER.to_string(),
            cert: self.dir.path().join("token.crt"),
        }
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.requests.lock().expect("token request log").clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn handle(
    stream: TcpStream,
    keys: &Keys,
    requests: &Mutex<Vec<TokenRequest>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorization = None;
    for _ in 0..100 {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "scope")
        .map(|(_, v)| percent_decode(v))
        .collect();

    let basic = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|raw| String::from_utf8(raw).ok());
    let (user, full) = match basic.as_deref().and_then(|b| b.split_once(':')) {
        Some((u, p)) if u == keys.user && p == keys.password => (Some(u.to_string()), true),
        Some((u, _)) => {
            requests.lock().expect("log").push(TokenRequest {
                user: Some(u.to_string()),
                scopes,
                issued: false,
            });
            return respond(
                stream,
                "401 Unauthorized",
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"invalid username or password"}]}"#,
            );
        }
        None => (None, false),
    };
    let access: Vec<_> = scopes
        .iter()
        .filter_map(|s| {
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            let actions: Vec<&str> = actions
                .split(',')
                .filter(|a| full || *a == "pull")
                .collect();
            Some(json!({"type": kind, "name": name, "actions": actions}))
        })
        .collect();
    let token = sign(keys, &user, access)?;
    requests.lock().expect("log").push(TokenRequest {
        user,
        scopes,
        issued: true,
    });
    let body = json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    respond(stream, "200 OK", &body)
}

fn respond(mut stream: TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn sign(
    keys: &Keys,
    user: &Option<String>,
    access: Vec<serde_json::Value>,
) -> std::io::Result<String> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let n = keys.counter.fetch_add(1, Ordering::Relaxed);
    let header = json!({"typ": "JWT", "alg": "RS256", "x5c": [keys.x5c]});
    let claims = json!({
        "iss": ISSUER, "sub": user.clone().unwrap_or_default(), "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now - 10, "jti": format!("kiln-{n}"),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let file = keys.dir.join(format!("input-{n}"));
    std::fs::write(&file, &input)?;
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-sign"])
        .arg(&keys.key)
        .arg(&file)
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    Ok(format!("{input}.{}", b64(&out.stdout)))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

//! An HTTP proxy in front of a test registry that fails chosen requests (a
//! 503 answer, or a connection closed without an answer) and forwards the
//! others unchanged: a real registry behind a real network fault, to check
//! kiln's bounded retries. One request per connection; bodies are not
//! forwarded, so it serves pulls (GET/HEAD).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What to do with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer `503 Service Unavailable`.
    Unavailable,
    /// Close the connection without answering (a reset).
    Reset,
}

type Decide = dyn Fn(&str, usize) -> Option<Fault> + Send + Sync;
/// Request lines seen, with the fault applied to each.
type Log = Mutex<Vec<(String, Option<Fault>)>>;

pub struct FlakyProxy {
    addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    seen: Arc<Log>,
}

impl FlakyProxy {
    /// Proxies to `upstream` (`host:port`). `decide(request_line, n)` gets
    /// each request line (`GET /v2/... HTTP/1.1`) and how many earlier
    /// requests had the same line, and picks a fault or `None` to forward.
    pub fn start(
        upstream: &str,
        decide: impl Fn(&str, usize) -> Option<Fault> + Send + Sync + 'static,
    ) -> FlakyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let decide: Arc<Decide> = Arc::new(decide);
        let upstream = upstream.to_string();
        let thread = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let (seen, decide, upstream) =
                                (seen.clone(), decide.clone(), upstream.clone());
                            std::thread::spawn(move || {
                                let _ = serve(client, &upstream, &*decide, &seen);
                            });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => return,
                    }
                }
            })
        };
        FlakyProxy {
            addr,
            stop,
            thread: Some(thread),
            seen,
        }
    }

    /// `127.0.0.1:PORT`, to use as the registry in references.
    pub fn addr(&self) -> String {
        self.addr.clone()
    }

    /// Request lines seen so far (with the fault applied to each).
    pub fn seen(&self) -> Vec<(String, Option<Fault>)> {
        self.seen.lock().expect("proxy log").clone()
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(client: TcpStream, upstream: &str, decide: &Decide, seen: &Log) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    // A TLS hello (kiln tries HTTPS first): this proxy speaks plain HTTP only.
    let mut first = [0u8; 1];
    if client.peek(&mut first)? == 1 && first[0] == 0x16 {
        return client.shutdown(Shutdown::Both);
    }
    let mut reader = BufReader::new(client.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let request_line = line.trim_end().to_string();
    let mut head = line.clone();
    for _ in 0..200 {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if !h.to_ascii_lowercase().starts_with("connection:") {
            head.push_str(&h);
        }
    }
    head.push_str("Connection: close\r\n\r\n");
    let fault = {
        let mut seen = seen.lock().expect("proxy log");
        let n = seen.iter().filter(|(l, _)| *l == request_line).count();
        let fault = decide(&request_line, n);
        seen.push((request_line.clone(), fault));
        fault
    };
    let mut client = client;
    match fault {
        Some(Fault::Reset) => client.shutdown(Shutdown::Both),
        Some(Fault::Unavailable) => {
            let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"flaky proxy says no"}]}"#;
            write!(
                client,
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )?;
            client.flush()
        }
        None => {
            let mut up = TcpStream::connect(upstream)?;
            up.write_all(head.as_bytes())?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = up.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                client.write_all(&buf[..n])?;
            }
            client.flush()
        }
    }
}

//! A real gRPC stack on both ends: gRPC servers and clients from Python's grpcio,
//! and HTTP/2 (h2c) requests from Python's h2, run by `tests/grpc/peer.py` in the
//! virtualenv that `make grpc-tools` fills (`.tools/venv`). Every process is killed
//! when its handle drops. A missing Python or grpcio is a failure, never a skip.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The Python that has grpcio and h2: `$GRPC_PYTHON`, else `.tools/venv/bin/python`.
pub fn python() -> PathBuf {
    let path = std::env::var_os("GRPC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::repo_root().join(".tools/venv/bin/python"));
    let ok = Command::new(&path)
        .args(["-c", "import grpc, h2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{} cannot import grpc and h2: run `make grpc-tools` (or set GRPC_PYTHON). \
         End-to-end tests never skip.",
        path.display()
    );
    path
}

fn peer_script() -> PathBuf {
    super::repo_root().join("tests/grpc/peer.py")
}

/// Kills the child on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a server answers a failed call (see `tests/grpc/peer.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// The status alone, in the response headers.
    TrailersOnly,
    /// Initial metadata, then the status in the trailers.
    AfterMetadata,
    /// One message (a server-streaming call), then the status in the trailers.
    AfterMessage,
}

impl How {
    pub fn as_str(self) -> &'static str {
        match self {
            How::TrailersOnly => "trailers-only",
            How::AfterMetadata => "after-metadata",
            How::AfterMessage => "after-message",
        }
    }

    /// The method that can answer this way: only a stream sends a message and
    /// then fails.
    pub fn method(self) -> &'static str {
        match self {
            How::AfterMessage => "Stream",
            _ => "Unary",
        }
    }
}

/// A grpcio server answering as `version`, by default with `code` sent `how`.
pub struct GrpcServer {
    pub port: u16,
    _process: Process,
}

impl GrpcServer {
    pub fn ok(version: &str) -> GrpcServer {
        Self::start(version, "OK", How::TrailersOnly)
    }

    /// Starts the server and waits (at most 30 s) until it listens.
    pub fn start(version: &str, code: &str, how: How) -> GrpcServer {
        Self::spawn(
            version,
            &[
                "serve",
                "--version",
                version,
                "--code",
                code,
                "--how",
                how.as_str(),
            ],
        )
    }

    /// Not a gRPC server: an HTTP/2 server that answers gRPC calls as a broken
    /// server or a proxy in between might, by the request header `x-break`
    /// (`no-status`, `reset`, `http-503`, `http-404`; see `tests/grpc/peer.py`).
    pub fn broken(version: &str) -> GrpcServer {
        Self::spawn(version, &["serve-broken", "--version", version])
    }

    fn spawn(version: &str, args: &[&str]) -> GrpcServer {
        let mut child = Command::new(python())
            .arg(peer_script())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the gRPC server");
        let stdout = child.stdout.take().expect("stdout");
        let process = Process(child);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("the gRPC server {version} did not say ready in 30 s"));
        let port = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!("the gRPC server {version} said {line:?}, not `ready <port>`")
            });
        GrpcServer {
            port,
            _process: process,
        }
    }
}

/// What a gRPC call ended with, as the grpcio client saw it.
#[derive(Debug, Clone)]
pub struct GrpcAnswer {
    pub code: String,
    pub details: String,
    /// The server that answered (`x-served-by`), or what Envoy answered itself: none.
    pub served_by: Option<String>,
    pub messages: Vec<String>,
}

/// What an HTTP/2 request got back, frame by frame as the h2 library saw it.
#[derive(Debug, Clone)]
pub struct H2Answer {
    pub headers: Vec<(String, String)>,
    /// The answer was the headers alone (END_STREAM on HEADERS): trailers-only.
    pub end_stream_on_headers: bool,
    pub body: String,
    pub trailers: Option<Vec<(String, String)>>,
}

impl H2Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .as_ref()?
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A long-lived grpcio client process, one JSON request and answer per line, so
/// that thousands of calls cost no process start each.
pub struct PeerClient {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    _process: Process,
}

fn pairs(value: &Value) -> Vec<(String, String)> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|kv| {
                    (
                        kv[0].as_str().unwrap_or_default().to_string(),
                        kv[1].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

impl PeerClient {
    pub fn start() -> PeerClient {
        let mut child = Command::new(python())
            .arg(peer_script())
            .arg("client")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the gRPC client");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        PeerClient {
            stdin,
            stdout,
            _process: Process(child),
        }
    }

    fn exchange(&mut self, request: &Value) -> Value {
        assert!(
            request["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("127.0.0.1:")),
            "calls go to this machine only"
        );
        writeln!(self.stdin, "{request}").expect("write to the gRPC client");
        self.stdin.flush().expect("flush");
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read from the gRPC client");
        assert!(!line.is_empty(), "the gRPC client exited on {request}");
        let answer: Value = serde_json::from_str(&line).expect("the client's JSON");
        assert!(
            answer.get("error").is_none(),
            "{request} failed in the client: {}",
            answer["error"]
        );
        answer
    }

    /// One call of `canary.Probe/<method>` through `target` with this metadata.
    pub fn call(
        &mut self,
        target: SocketAddr,
        method: &str,
        metadata: &[(&str, &str)],
    ) -> GrpcAnswer {
        self.call_at(target, None, method, metadata)
    }

    /// [`PeerClient::call`] with this `:authority` instead of the target's address
    /// (the host a caller in a mesh names).
    pub fn call_at(
        &mut self,
        target: SocketAddr,
        authority: Option<&str>,
        method: &str,
        metadata: &[(&str, &str)],
    ) -> GrpcAnswer {
        let answer = self.exchange(&json!({
            "op": "grpc", "target": target.to_string(), "method": method,
            "metadata": metadata, "timeout": 10, "authority": authority,
        }));
        let served_by = answer["initial"]["x-served-by"]
            .as_str()
            .or(answer["trailing"]["x-served-by"].as_str())
            .map(str::to_string);
        GrpcAnswer {
            code: answer["code"].as_str().unwrap_or_default().to_string(),
            details: answer["details"].as_str().unwrap_or_default().to_string(),
            served_by,
            messages: answer["messages"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// A unary call with the user ID in the metadata `x-user-id`.
    pub fn unary_as(&mut self, target: SocketAddr, user: &str) -> GrpcAnswer {
        self.call(target, "Unary", &[("x-user-id", user)])
    }

    /// `calls` sequential unary calls (for load): how many ended with each code.
    pub fn load(
        &mut self,
        target: SocketAddr,
        metadata: &[(&str, &str)],
        calls: u64,
    ) -> (Value, f64) {
        let answer = self.exchange(&json!({
            "op": "load", "target": target.to_string(), "method": "Unary",
            "metadata": metadata, "calls": calls,
        }));
        (
            answer["codes"].clone(),
            answer["seconds"].as_f64().unwrap_or(0.0),
        )
    }

    /// One HTTP/2 request with prior knowledge (h2c); `body` is sent as given.
    pub fn h2(&mut self, target: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> H2Answer {
        let hex: String = body.iter().map(|b| format!("{b:02x}")).collect();
        let answer = self.exchange(&json!({
            "op": "h2", "target": target.to_string(), "headers": headers, "body": hex,
        }));
        H2Answer {
            headers: pairs(&answer["headers"]),
            end_stream_on_headers: answer["end_stream_on_headers"].as_bool().unwrap_or(false),
            body: answer["body"].as_str().unwrap_or_default().to_string(),
            trailers: answer["trailers"]
                .as_array()
                .map(|_| pairs(&answer["trailers"])),
        }
    }

    /// A gRPC call of `canary.Probe/<method>` framed by hand over h2 (one empty-ish
    /// message), to see where the answer's `grpc-status` travels.
    pub fn grpc_over_h2(
        &mut self,
        target: SocketAddr,
        method: &str,
        metadata: &[(&str, &str)],
    ) -> H2Answer {
        let path = format!("/canary.Probe/{method}");
        let mut headers = vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path.as_str()),
            (":authority", "canary.test"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ];
        headers.extend_from_slice(metadata);
        // One uncompressed message of one byte.
        self.h2(target, &headers, &[0, 0, 0, 0, 1, b'p'])
    }
}

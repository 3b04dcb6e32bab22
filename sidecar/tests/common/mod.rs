//! Shared helpers for the integration tests: start the real binary, talk
//! HTTP/1.1 to it over a raw `TcpStream`, and run the CLI.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub mod pg;

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate-sidecar");
pub const ADMIN: &str = "test-admin-token-0123456789";
pub const DATA: &str = "test-data-token-9876543210";

/// A running `tollgate-sidecar serve`; killed (SIGKILL) and reaped on drop.
pub struct Server {
    child: Option<Child>,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub db: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// Starts the server on an ephemeral port and waits for its banner.
    pub fn start(db: &Path) -> Server {
        Self::start_args(&["--db".as_ref(), db.as_os_str()], db)
    }

    /// Starts the server on `--store STORE` (a path or a PostgreSQL URL)
    /// with extra `serve` arguments.
    pub fn start_store(store: &str, extra: &[&str]) -> Server {
        let mut args: Vec<&std::ffi::OsStr> = vec!["--store".as_ref(), store.as_ref()];
        args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
        Self::start_args(&args, Path::new(store))
    }

    fn start_args(store_args: &[&std::ffi::OsStr], db: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(store_args)
            .env_remove("TOLLGATE_DB")
            .env_remove("TOLLGATE_STORE")
            .env_remove("TOLLGATE_KEY_FILE")
            .env_remove("TOLLGATE_SIDECAR_LISTEN")
            .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
            .env("TOLLGATE_DATA_TOKEN", DATA)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut line = String::new();
                while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    log.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
        }
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                let _ = tx.send(line.clone());
                line.clear();
            }
        });
        let mut server = Server { child: Some(child), addr: String::new(), db: db.to_path_buf(), stderr: log };
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no banner; stderr: {}", server.stderr()));
        let addr = line
            .trim()
            .strip_prefix("tollgate-sidecar listening on http://")
            .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
            .to_string();
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        server.addr = addr;
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (up to `timeout`) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = i32::try_from(child.id()).expect("pid");
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Resp {
        request(&self.addr, "GET", path, token, None).expect("request")
    }

    pub fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Resp {
        request(&self.addr, method, path, token, body).expect("request")
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        self.send(method, path, Some(ADMIN), body)
    }

    pub fn data(&self, path: &str) -> Resp {
        self.get(path, Some(DATA))
    }

    /// Current store revision via the admin list.
    pub fn revision(&self) -> u64 {
        let r = self.admin("GET", "/admin/v1/profiles", None);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["revision"].as_u64().expect("revision")
    }

    /// Creates a profile through the admin API and returns the answer JSON.
    pub fn create(&self, name: &str, prefixes: &[&str]) -> Value {
        let body = serde_json::json!({"name": name, "allowed_prefixes": prefixes}).to_string();
        let r = self.admin("POST", "/admin/v1/profiles", Some(&body));
        assert_eq!(r.status, 201, "{}", r.body);
        r.json()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("bad JSON ({e}) in {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Asserts the error shape and returns the code.
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert!(v["message"].is_string(), "{}", self.body);
        v["error"].as_str().expect("error code").to_string()
    }
}

/// One HTTP/1.1 request with `Connection: close`.
pub fn request(addr: &str, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> std::io::Result<Resp> {
    request_raw(addr, method, path, token.map(|t| format!("Bearer {t}")), body.map(str::as_bytes))
}

/// Like [`request`] with a literal Authorization value and a byte body.
pub fn request_raw(
    addr: &str,
    method: &str,
    path: &str,
    authorization: Option<String>,
    body: Option<&[u8]>,
) -> std::io::Result<Resp> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(90)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(auth) = authorization {
        head.push_str(&format!("Authorization: {auth}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str("Content-Type: application/json\r\n");
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    // The server may answer (e.g. 413) and close before reading everything.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Resp> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no header end"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("head not utf-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status: u16 =
        status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("bad status line"))?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked =
        headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Resp { status, headers, body: String::from_utf8(body).map_err(|_| bad("body not utf-8"))? })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// Runs the CLI against `db` (TOLLGATE_DB removed from the environment).
pub fn cli(db: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--db")
        .arg(db)
        .env_remove("TOLLGATE_DB")
        .env_remove("TOLLGATE_STORE")
        .env_remove("TOLLGATE_KEY_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("run cli")
}

/// Runs the binary with exactly `args` and extra environment.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("TOLLGATE_DB")
        .env_remove("TOLLGATE_STORE")
        .env_remove("TOLLGATE_KEY_FILE")
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .env_remove("TOLLGATE_DATA_TOKEN")
        .env_remove("TOLLGATE_SIDECAR_LISTEN")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run binary")
}

/// Parses a successful CLI run's stdout as JSON.
pub fn cli_json(out: &Output) -> Value {
    assert!(out.status.success(), "status {:?}, stderr {}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("CLI JSON")
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A temp dir and a DB path inside a not-yet-existing subdirectory.
pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("var").join("tollgate.db");
    (dir, db)
}

/// One request with the admin-style bearer token and extra headers.
pub fn request_with_headers(
    addr: &str,
    method: &str,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Resp> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(90)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Polls `f` until it returns `Some`, for at most `timeout`.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "condition not met within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

//! A throw-away PostgreSQL server for tests: Debian's `postgresql` binaries,
//! `initdb` into a temporary directory, `postgres` on 127.0.0.1 and a free
//! port as our child process (never a shared system instance), stopped on
//! drop. PostgreSQL refuses to run as root, so as root (CI) the server runs
//! as the `postgres` system user that Debian's package creates, and the
//! temporary directory is handed to it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory holding `initdb` and `postgres`: `$TOLLGATE_PG_BIN`, else
/// the newest `/usr/lib/postgresql/*/bin`.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TOLLGATE_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (./build.sh installs Debian's postgresql package)")
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions.pop().expect("no /usr/lib/postgresql/*/bin/postgres").1
}

/// uid and gid to run PostgreSQL as: ours, or `postgres`'s when we are root.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam with a valid C string; the result is read at once,
    // before any other passwd call.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(!pw.is_null(), "running as root needs the 'postgres' user (Debian's postgresql package creates it)");
    // SAFETY: non-null pointer returned by getpwnam.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    if let Some((uid, gid)) = run_as() {
        cmd.uid(uid).gid(gid);
    }
    cmd.env_remove("PGDATA").env("LC_ALL", "C").stdin(Stdio::null());
    cmd
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running PostgreSQL server; stopped (fast shutdown) on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Postgres {
    /// `initdb` and start; waits until it accepts queries.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("tollgate-pg-").tempdir().unwrap();
        if let Some((uid, gid)) = run_as() {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let out = command(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync", "-D"])
            .arg(dir.path().join("data"))
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut pg = Postgres { dir, bin, port: free_port(), child: None };
        pg.start_server();
        pg
    }

    fn start_server(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        if let Some((uid, gid)) = run_as() {
            std::os::unix::fs::chown(self.dir.path().join("server.log"), Some(uid), Some(gid)).unwrap();
        }
        let child = command(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=200"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("postgres exited with {status}: {}", self.log());
            }
            if postgres::Client::connect(&self.url("postgres"), postgres::NoTls)
                .and_then(|mut c| c.simple_query("SELECT 1"))
                .is_ok()
            {
                return;
            }
            assert!(Instant::now() < deadline, "postgres not ready: {}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A fresh, empty database; returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let mut admin = postgres::Client::connect(&self.url("postgres"), postgres::NoTls).unwrap();
        admin.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        self.url(name)
    }

    /// Fast shutdown (SIGINT): clients are disconnected, the data kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
    }

    /// Starts the stopped server again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.start_server();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

//! A real S3-compatible server on the loopback interface, for the S3 tests, the S3
//! benchmarks and the image-loading example: `s3s-fs` if it is installed (`cargo install
//! s3s-fs@0.14.1 --features binary --locked`), else `moto_server` (`pip install
//! 'moto[server]'`). It listens on 127.0.0.1 at a free port chosen at run time, keeps its
//! data in a temporary directory, and is killed and waited for when its handle is dropped
//! (also when a test panics).
//!
//! `PIPELINE_S3_SERVER=s3s-fs|moto` picks one; `PIPELINE_REQUIRE_S3=1` turns "cannot start
//! a server" from a skip into a failure (see [`start_or_skip`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pipeline_runtime::storage::StoreOptions;

use crate::scratch::TempDir;

/// The access key the server is started with.
pub const ACCESS_KEY: &str = "pipeline-test-key";
/// Its secret.
pub const SECRET_KEY: &str = "pipeline-test-secret";

/// Which server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// `s3s-fs`: Rust, checks signatures (wrong credentials are refused).
    S3sFs,
    /// `moto_server`: Python; accepts any credentials.
    Moto,
}

/// A running server; dropping it kills the process and waits for it.
#[derive(Debug)]
pub struct S3Server {
    child: Option<Child>,
    addr: SocketAddr,
    kind: ServerKind,
    data: TempDir,
}

impl S3Server {
    /// Starts a server and waits (up to 30 s) until it accepts connections.
    pub fn start() -> Result<S3Server, String> {
        let choice = std::env::var("PIPELINE_S3_SERVER").ok();
        let kind = match choice.as_deref() {
            Some("s3s-fs") => ServerKind::S3sFs,
            Some("moto") => ServerKind::Moto,
            Some(other) => return Err(format!("PIPELINE_S3_SERVER={other}: use s3s-fs or moto")),
            None if on_path("s3s-fs") => ServerKind::S3sFs,
            None if on_path("moto_server") => ServerKind::Moto,
            None => {
                return Err(
                    "neither `s3s-fs` nor `moto_server` is on PATH (install one: \
                            `cargo install s3s-fs@0.14.1 --features binary --locked`, or \
                            `pip install 'moto[server]'`)"
                        .into(),
                )
            }
        };
        let data = TempDir::new(&format!("pipeline-s3-{}-{}", std::process::id(), unique()))
            .map_err(|e| format!("temporary directory: {e}"))?;
        let port = free_port()?;
        let mut command = match kind {
            ServerKind::S3sFs => {
                let mut c = Command::new("s3s-fs");
                c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                    .arg(data.path());
                c
            }
            ServerKind::Moto => {
                let mut c = Command::new("moto_server");
                c.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .current_dir(data.path());
                c
            }
        };
        let log = std::fs::File::create(data.path().join("server.log"))
            .map_err(|e| format!("server log: {e}"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {kind:?}: {e}"))?;
        let mut server = S3Server {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            kind,
            data,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&server.addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "{kind:?} exited at start ({status}): {}",
                    server.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{kind:?} did not listen on {} within 30 s",
                    server.addr
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Which server this is.
    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    /// Store options that reach this server: its endpoint, its credentials, plain HTTP.
    pub fn options(&self) -> StoreOptions {
        StoreOptions::new()
            .endpoint(self.endpoint())
            .region("us-east-1")
            .credentials(ACCESS_KEY, SECRET_KEY)
            .allow_http(true)
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, name: &str) -> Result<(), String> {
        match self.kind {
            // s3s-fs serves the directories of its root as buckets.
            ServerKind::S3sFs => std::fs::create_dir_all(self.data.path().join(name))
                .map_err(|e| format!("bucket {name}: {e}")),
            // moto accepts unsigned requests.
            ServerKind::Moto => {
                let status = raw_request(self.addr, "PUT", &format!("/{name}"))?;
                if status == 200 {
                    Ok(())
                } else {
                    Err(format!("create bucket {name}: HTTP {status}"))
                }
            }
        }
    }

    /// Kills the server and waits for it (a fault in a test: the server gone mid-run).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text[start..].to_owned()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A server, or `None` with the reason printed; with `PIPELINE_REQUIRE_S3=1`, a panic
/// instead of the skip.
pub fn start_or_skip(test: &str) -> Option<S3Server> {
    match S3Server::start() {
        Ok(server) => Some(server),
        Err(reason) => {
            if std::env::var("PIPELINE_REQUIRE_S3").is_ok_and(|v| v == "1") {
                panic!("{test}: PIPELINE_REQUIRE_S3=1 but no S3 server: {reason}");
            }
            eprintln!("skipping {test}: {reason}");
            None
        }
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(program)))
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A port nobody listens on now (the OS's choice for port 0).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One unsigned HTTP/1.1 request with an empty body; returns the status code.
fn raw_request(addr: SocketAddr, method: &str, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{method} {path}: no HTTP status in {response:?}"))
}

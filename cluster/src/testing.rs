//! For tests, of this crate and of the server: Debian's `redis-server` and
//! `redis-sentinel` started on loopback ports of their own, killed when dropped. No part
//! of the cluster uses it.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to listen.
const START: Duration = Duration::from_secs(10);

/// A `redis-server` on 127.0.0.1, without persistence.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// On a free port.
    pub fn start() -> RedisServer {
        RedisServer::with(free_port(), &[])
    }

    /// On `port` (a restart where the last one was), with `extra` arguments.
    pub fn with(port: u16, extra: &[&str]) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's package; the README's test command installs it)");
        wait_for_port(port, "redis-server");
        RedisServer { child, port }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills it; returns its port, for a restart.
    pub fn stop(mut self) -> u16 {
        self.kill();
        self.port
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `redis-sentinel` watching a server as master `mymaster`.
#[derive(Debug)]
pub struct Sentinel {
    child: Child,
    port: u16,
    /// Its config file's directory (Sentinel rewrites the file).
    dir: PathBuf,
}

impl Sentinel {
    pub fn start(master: &RedisServer) -> Sentinel {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("sentinel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for sentinel.conf");
        let config = dir.join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\nsentinel monitor mymaster 127.0.0.1 {} 1\n",
            master.port
        );
        std::fs::write(&config, text).expect("sentinel.conf");
        let child = Command::new("redis-sentinel")
            .arg(&config)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-sentinel (Debian's package; the README's test command installs it)");
        wait_for_port(port, "redis-sentinel");
        Sentinel { child, port, dir }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP port on 127.0.0.1 free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + START;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

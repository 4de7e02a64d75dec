//! What the tests that start the `sfu` binary share: child processes killed when the
//! test ends, network namespaces of their own, and a directory for their files.

// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

pub mod server;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A child process killed when dropped.
pub struct Running(pub Child);

impl Running {
    /// Sends it signal `name` (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{name} {pid}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A network namespace with its loopback up, removed when dropped: what runs in it
/// listens nowhere else (the tests run as root, as the end-to-end tests do).
pub struct Namespace(String);

impl Namespace {
    /// A namespace named after `tag` and this process.
    pub fn new(tag: &str) -> Namespace {
        let name = format!("sfu-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add (this test needs root)");
        let ns = Namespace(name);
        let up = ns
            .command("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(up.success());
        ns
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A directory of a test's own files, removed when dropped.
pub struct Dir(pub PathBuf);

impl Dir {
    /// A fresh directory named after `tag` and this process.
    pub fn new(tag: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("sfu-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    /// Writes `text` to `file` in it; its path.
    pub fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.0.join(file);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

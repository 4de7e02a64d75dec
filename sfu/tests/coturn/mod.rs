//! What the tests with coturn's client share: its tools found on the machine, and child
//! processes killed when the test ends.

use std::process::Child;

/// A child process killed when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The path of one of coturn's tools (`turnutils_uclient`, `turnutils_peer`).
pub fn tool(name: &str) -> String {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let path = format!("{dir}/{name}");
        if std::path::Path::new(&path).exists() {
            return path;
        }
    }
    panic!("{name} not found: install Debian's coturn package (scripts/test does)");
}

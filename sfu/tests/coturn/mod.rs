//! What the tests with coturn's client share: its tools found on the machine.

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

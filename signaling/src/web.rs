//! The browser client library and demo page, embedded in the binary: no build step, no CDN.

/// The demo page served at `/`.
pub const INDEX_HTML: &str = include_str!("../web/index.html");
/// The client library, an ES module, served at `/client.js`.
pub const CLIENT_JS: &str = include_str!("../web/client.js");
/// The demo page's script, served at `/demo.js`.
pub const DEMO_JS: &str = include_str!("../web/demo.js");
/// The demo page's styles, served at `/style.css`.
pub const STYLE_CSS: &str = include_str!("../web/style.css");

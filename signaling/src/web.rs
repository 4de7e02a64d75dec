//! The browser client library and demo page, embedded in the binary: no build step, no CDN.

/// The demo page served at `/`.
pub const INDEX_HTML: &str = include_str!("../web/index.html");

/// A file of `signaling/web/` served as is, at a fixed URL path.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// The URL path it is served at: its path under `signaling/web/`, e.g. `/client/slots.js`.
    pub path: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Its contents, embedded at build time.
    pub body: &'static str,
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

/// The asset of `signaling/web/<file>`, served at `/<file>`.
macro_rules! asset {
    ($file:literal, $content_type:expr) => {
        Asset {
            path: concat!("/", $file),
            content_type: $content_type,
            body: include_str!(concat!("../web/", $file)),
        }
    };
}

/// Every file served besides the demo page itself: the client library (`/client.js` and
/// the modules it imports from `/client/`), the demo page's script and its styles.
pub const ASSETS: &[Asset] = &[
    asset!("client.js", JAVASCRIPT),
    asset!("client/audio-watch.js", JAVASCRIPT),
    asset!("client/e2ee.js", JAVASCRIPT),
    asset!("client/e2ee-av1.js", JAVASCRIPT),
    asset!("client/e2ee-frame.js", JAVASCRIPT),
    asset!("client/e2ee-h264.js", JAVASCRIPT),
    asset!("client/e2ee-keys.js", JAVASCRIPT),
    asset!("client/e2ee-layout.js", JAVASCRIPT),
    asset!("client/e2ee-worker.js", JAVASCRIPT),
    asset!("client/error.js", JAVASCRIPT),
    asset!("client/fallback.js", JAVASCRIPT),
    asset!("client/layers.js", JAVASCRIPT),
    asset!("client/mlines.js", JAVASCRIPT),
    asset!("client/moderation.js", JAVASCRIPT),
    asset!("client/negotiation.js", JAVASCRIPT),
    asset!("client/publishing.js", JAVASCRIPT),
    asset!("client/sframe.js", JAVASCRIPT),
    asset!("client/room.js", JAVASCRIPT),
    asset!("client/signaling.js", JAVASCRIPT),
    asset!("client/slots.js", JAVASCRIPT),
    asset!("client/stats.js", JAVASCRIPT),
    asset!("client/view.js", JAVASCRIPT),
    asset!("demo.js", JAVASCRIPT),
    asset!("style.css", "text/css"),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The module specifiers a script names in `import ... from '...'`,
    /// `export ... from '...'` and `import '...'`, and the module URLs it loads itself
    /// (`new URL('./worker.js', import.meta.url)`, a worker), outside comments.
    fn imports(js: &str) -> Vec<String> {
        let code: String = js
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                !(l.starts_with("//") || l.starts_with("/*") || l.starts_with('*'))
            })
            .flat_map(|l| [l, "\n"])
            .collect();
        let mut out = Vec::new();
        for (at, _) in code.match_indices("new URL(") {
            let rest = code[at + "new URL(".len()..].trim_start();
            let Some(quote) = rest.chars().next().filter(|&c| c == '\'' || c == '"') else {
                continue;
            };
            if let Some(end) = rest[1..].find(quote)
                && rest[1 + end..]
                    .trim_start_matches(quote)
                    .trim_start()
                    .starts_with(", import.meta.url")
            {
                out.push(rest[1..1 + end].to_owned());
            }
        }
        for keyword in ["from", "import"] {
            for (at, _) in code.match_indices(keyword) {
                let before = code[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$' || c == '.') {
                    continue;
                }
                let rest = code[at + keyword.len()..].trim_start();
                let Some(quote) = rest.chars().next().filter(|&c| c == '\'' || c == '"') else {
                    continue;
                };
                if let Some(end) = rest[1..].find(quote) {
                    out.push(rest[1..1 + end].to_owned());
                }
            }
        }
        out
    }

    /// The URL path `specifier` names when imported by the script at `from` (a path).
    fn resolve(from: &str, specifier: &str) -> String {
        assert!(
            specifier.starts_with('/')
                || specifier.starts_with("./")
                || specifier.starts_with("../"),
            "{from} imports {specifier:?}: a bare specifier, which no browser resolves without a build step"
        );
        let mut parts: Vec<&str> = if specifier.starts_with('/') {
            Vec::new()
        } else {
            let dir = &from[..from.rfind('/').unwrap_or(0)];
            dir.split('/').filter(|p| !p.is_empty()).collect()
        };
        for part in specifier.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                p => parts.push(p),
            }
        }
        format!("/{}", parts.join("/"))
    }

    fn scripts() -> impl Iterator<Item = &'static Asset> {
        ASSETS.iter().filter(|a| a.content_type == JAVASCRIPT)
    }

    #[test]
    fn every_import_is_served() {
        for asset in scripts() {
            for specifier in imports(asset.body) {
                let path = resolve(asset.path, &specifier);
                assert!(
                    ASSETS.iter().any(|a| a.path == path),
                    "{} imports {specifier:?}, which is {path}: not in web::ASSETS",
                    asset.path
                );
            }
        }
    }

    #[test]
    fn every_client_module_is_imported() {
        let imported: Vec<String> = scripts()
            .flat_map(|a| imports(a.body).into_iter().map(|s| resolve(a.path, &s)))
            .collect();
        for asset in ASSETS.iter().filter(|a| a.path.starts_with("/client/")) {
            assert!(
                imported.iter().any(|p| p == asset.path),
                "{} is served but no script imports it",
                asset.path
            );
        }
    }

    #[test]
    fn the_demo_page_loads_served_files() {
        for attribute in ["src=\"", "href=\"/"] {
            for (at, _) in INDEX_HTML.match_indices(attribute) {
                let rest = &INDEX_HTML[at + attribute.find('"').unwrap() + 1..];
                let url = &rest[..rest.find('"').unwrap()];
                if url.starts_with("data:") {
                    continue;
                }
                assert!(
                    ASSETS.iter().any(|a| a.path == url),
                    "index.html loads {url}: not in web::ASSETS"
                );
            }
        }
    }

    #[test]
    fn imports_are_found_and_resolved() {
        let js = "// import { x } from './commented.js';\n\
                  import { a,\n  b } from './client/a.js';\nexport { c } from \"../c.js\";\n\
                  import './side.js';\nconst imported = 1; x.from('y');";
        let found: Vec<String> = imports(js)
            .iter()
            .map(|s| resolve("/lib/m.js", s))
            .collect();
        assert_eq!(found, ["/lib/client/a.js", "/c.js", "/lib/side.js"]);
    }
}

//! The console's files, compiled into the binary: nothing is read from disk or fetched at run time.

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    /// Its URL path.
    pub path: &'static str,
    /// Its `content-type`.
    pub content_type: &'static str,
    /// Its text.
    pub body: &'static str,
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the console serves.
pub const ASSETS: &[Asset] = &[
    Asset { path: "/console/", content_type: "text/html; charset=utf-8", body: include_str!("assets/index.html") },
    Asset {
        path: "/console/console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("assets/console.css"),
    },
    Asset { path: "/console/app.js", content_type: JS, body: include_str!("assets/app.js") },
    Asset { path: "/console/rpc.js", content_type: JS, body: include_str!("assets/rpc.js") },
    Asset { path: "/console/proto.js", content_type: JS, body: include_str!("assets/proto.js") },
    Asset { path: "/console/text.js", content_type: JS, body: include_str!("assets/text.js") },
    Asset { path: "/console/icon.svg", content_type: "image/svg+xml", body: include_str!("assets/icon.svg") },
];

/// The file at `path`, if there is one (`/console/index.html` is the root page too).
pub fn find(path: &str) -> Option<&'static Asset> {
    let path = if path == "/console/index.html" { "/console/" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

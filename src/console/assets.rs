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

/// Every asset's gzip encoding, in [`ASSETS`]' order: compressed once, on the first request that accepts it (the
/// files never change while the binary runs), at the best level, since it is paid once.
static GZIPPED: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            use std::io::Write;
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            // Writing to a Vec cannot fail.
            let _ = encoder.write_all(asset.body.as_bytes());
            encoder.finish().unwrap_or_default()
        })
        .collect()
});

impl Asset {
    /// Its gzip encoding; None if it would not be smaller.
    pub fn gzipped(&'static self) -> Option<&'static [u8]> {
        let index = ASSETS.iter().position(|a| std::ptr::eq(a, self))?;
        let gzipped = GZIPPED.get(index)?;
        (!gzipped.is_empty() && gzipped.len() < self.body.len()).then_some(gzipped.as_slice())
    }
}

/// The file at `path`, if there is one (`/console/index.html` is the root page too).
pub fn find(path: &str) -> Option<&'static Asset> {
    let path = if path == "/console/index.html" { "/console/" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

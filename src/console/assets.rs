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

/// Every asset's gzip encoding (of what is served, [`Asset::served`]), in [`ASSETS`]' order: compressed once, on the
/// first request that accepts it (the files never change while the binary runs), at the best level, since it is
/// paid once.
static GZIPPED: std::sync::LazyLock<Vec<Vec<u8>>> = std::sync::LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            use std::io::Write;
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            // Writing to a Vec cannot fail.
            let _ = encoder.write_all(asset.served().as_bytes());
            encoder.finish().unwrap_or_default()
        })
        .collect()
});

impl Asset {
    /// Its gzip encoding; None if it would not be smaller.
    pub fn gzipped(&'static self) -> Option<&'static [u8]> {
        let index = ASSETS.iter().position(|a| a.path == self.path)?;
        let gzipped = GZIPPED.get(index)?;
        (!gzipped.is_empty() && gzipped.len() < self.served().len()).then_some(gzipped.as_slice())
    }
}

/// The file at `path`, if there is one (`/console/index.html` is the root page too).
pub fn find(path: &str) -> Option<&'static Asset> {
    let path = if path == "/console/index.html" { "/console/" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

impl Asset {
    /// What is sent for it: the file without each line's indentation, blank lines, and (scripts and styles) lines
    /// that hold only a comment. The page is on a byte budget (tests/api/console.rs) while the files keep their
    /// comments and layout; no asset has text whose meaning depends on leading spaces (no multi-line string or
    /// template text in the scripts, no `<pre>` in the page), so nothing the browser does changes.
    pub fn served(&self) -> &'static str {
        static SERVED: std::sync::LazyLock<Vec<String>> =
            std::sync::LazyLock::new(|| ASSETS.iter().map(|a| tighten(a.content_type, a.body)).collect());
        ASSETS.iter().position(|a| a.path == self.path).map_or(self.body, |i| SERVED[i].as_str())
    }
}

fn tighten(content_type: &str, body: &str) -> String {
    let script = content_type.starts_with("text/javascript");
    let style = content_type.starts_with("text/css");
    let mut out = String::with_capacity(body.len());
    for line in body.lines().map(str::trim_start) {
        let comment = (script && line.starts_with("//")) || (style && line.starts_with("/*") && line.ends_with("*/"));
        if line.is_empty() || comment {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_files_drop_indentation_and_comment_lines_only() {
        let js = tighten(JS, "// why\nfunction f() {\n  // inner\n  return `a ${b}`; // kept\n}\n\n");
        assert_eq!(js, "function f() {\nreturn `a ${b}`; // kept\n}\n");
        let css = tighten("text/css; charset=utf-8", "/* note */\na {\n  color: red; /* kept */\n}\n");
        assert_eq!(css, "a {\ncolor: red; /* kept */\n}\n");
        let html = tighten("text/html; charset=utf-8", "<p>\n  // not a comment in HTML\n</p>\n");
        assert_eq!(html, "<p>\n// not a comment in HTML\n</p>\n");
        // Every asset is served, and no script has a line that would open a multi-line template literal (whose
        // text would lose its indentation): each line holds an even number of backticks, or is a known one
        // whose line break sits inside `${…}`.
        for asset in ASSETS {
            assert!(asset.served().len() <= asset.body.len(), "{}", asset.path);
            if asset.content_type == JS {
                assert!(!asset.served().lines().any(|l| l.starts_with("//") || l.starts_with(' ')), "{}", asset.path);
                let open = asset.served().lines().filter(|l| l.matches('`').count() % 2 == 1).count();
                assert!(open % 2 == 0 && open <= 2, "{}: multi-line template literal", asset.path);
            }
        }
    }

    /// Every form sits in a section the page serves hidden, shown only by app.js once it has taken the forms over:
    /// a token typed and entered before the script ran would otherwise be submitted by the browser itself, as a
    /// GET with the token in the address (and the test typing it fast would see a navigation, not the factors).
    #[test]
    fn no_form_shows_before_the_script_takes_it_over() {
        let page = find("/console/").unwrap().served();
        let mut open_sections = Vec::new();
        let mut forms = 0;
        for line in page.lines() {
            if line.starts_with("<section") {
                open_sections.push(line);
            }
            if line.starts_with("<form") {
                let section = open_sections.last().expect("a form outside any section");
                assert!(section.contains(" hidden>"), "a form shown before the script runs: {section}");
                forms += 1;
            }
            if line.starts_with("</section") {
                open_sections.pop();
            }
        }
        assert!(page.contains("<form id=\"sign-in-form\""));
        assert!(forms >= 4, "the served page's lines were not read as tags ({forms} forms seen)");
    }

    /// The console's page budget is 64 KiB over the wire (tests/api/console.rs measures it in Chromium, about
    /// 4 KiB of it response headers); this catches the bodies outgrowing it without a browser. Over the wire a
    /// browser gets them gzip-encoded (every browser sends `Accept-Encoding: gzip`), so that is what is counted.
    #[test]
    fn the_page_stays_inside_its_budget() {
        let bodies: usize = ASSETS.iter().map(|a| a.gzipped().map_or(a.served().len(), <[u8]>::len)).sum();
        assert!(bodies <= 58 * 1024, "{bodies} bytes served");
    }
}

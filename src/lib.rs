//! otpd: one-time SMS codes over gRPC. See DESIGN.md for the architecture; the modules follow it:
//! `domain` (valid-only types and the policy), `service` (the flows), `store` (SQLite and PostgreSQL),
//! `hashing` (argon2id + pepper), `sms` (gateways), `grpc` (the edge), `console` (the team leads' web console),
//! `config`, `startup`, `telemetry`.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod audit;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod ctl;
pub mod domain;
pub mod drain;
pub mod grpc;
pub mod hashing;
pub mod healthcheck;
pub mod limits;
pub mod listen;
pub mod metrics;
pub mod pb;
pub mod receipts;
pub mod service;
pub mod setting;
pub mod signin;
pub mod sms;
pub mod startup;
pub mod store;
pub mod supervision;
pub mod telemetry;
pub mod tls;
pub mod transport;

/// The top-level modules form no import circle: `domain` at the bottom, `metrics` below the flows that count,
/// nothing importing upwards. Read from the sources' `crate::…` paths, so a circle fails here, not in review.
#[cfg(test)]
mod layering {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// Each top-level module and the top-level modules its code names (`use crate::x`, `crate::x::…`).
    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, files);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src, &mut files);
        let path = regex::Regex::new(r"\bcrate::([a-z_][a-z0-9_]*)").unwrap();
        let mut edges = BTreeMap::<String, BTreeSet<String>>::new();
        for file in files {
            let relative = file.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap().as_os_str().to_str().unwrap();
            let module = first.strip_suffix(".rs").unwrap_or(first).to_owned();
            if ["lib", "main", "bin"].contains(&module.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for target in path.captures_iter(line).map(|c| c[1].to_owned()) {
                    if target != module {
                        edges.entry(module.clone()).or_default().insert(target);
                    }
                }
            }
        }
        edges
    }

    /// Every module `from` reaches through imports.
    fn reach(edges: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut next = vec![from.to_owned()];
        while let Some(module) = next.pop() {
            for target in edges.get(&module).into_iter().flatten() {
                if seen.insert(target.clone()) {
                    next.push(target.clone());
                }
            }
        }
        seen
    }

    #[test]
    fn no_top_level_module_imports_one_that_imports_it_back() {
        let edges = imports();
        assert!(edges.len() > 10, "the scan found the modules: {edges:?}");
        let circles: Vec<String> = edges
            .iter()
            .flat_map(|(from, targets)| targets.iter().map(move |to| (from, to)))
            .filter(|(from, to)| reach(&edges, to).contains(*from))
            .map(|(from, to)| format!("{from} -> {to} -> … -> {from}"))
            .collect();
        assert!(circles.is_empty(), "import circles between top-level modules: {circles:#?}");
    }

    #[test]
    fn domain_is_at_the_bottom_and_metrics_below_the_flows() {
        let edges = imports();
        assert_eq!(reach(&edges, "domain"), BTreeSet::new(), "domain imports nothing of the crate");
        let metrics = reach(&edges, "metrics");
        for flow in ["hashing", "limits", "sms", "service", "store", "supervision", "receipts"] {
            assert!(!metrics.contains(flow), "metrics reaches {flow}: {metrics:?}");
        }
    }
}

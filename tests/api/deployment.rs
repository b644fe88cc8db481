//! The deployment files agree with the code. No Docker daemon or systemd runs here, so the Dockerfile and the unit
//! are read as text and every binary, flag, port and variable they name is checked against Cargo.toml and the real
//! clap `Cli`; `otpd healthcheck`, which the image's HEALTHCHECK runs, is run against a real server.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Output;

use clap::{CommandFactory, Parser};
use otpd::config::{Cli, Command};
use otpd::healthcheck::Listener;

use crate::helpers::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

pub(crate) fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The `name`s of Cargo.toml's `[[bin]]` sections.
fn cargo_bins() -> BTreeSet<String> {
    let manifest = read("Cargo.toml");
    let mut bins = BTreeSet::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let Some(name) = line.strip_prefix("name = ").filter(|_| in_bin) {
            bins.insert(name.trim_matches('"').to_owned());
        }
    }
    bins
}

/// Every `OTPD_*` variable a setting reads, with its flag; and `OTPD_LOG`, the log filter.
pub(crate) fn settings_by_variable() -> BTreeMap<String, String> {
    let mut known: BTreeMap<String, String> = Cli::command()
        .get_arguments()
        .filter_map(|a| Some((a.get_env()?.to_str()?.to_owned(), a.get_long()?.to_owned())))
        .collect();
    known.insert("OTPD_LOG".into(), String::new());
    known
}

/// The port of a listener flag's default address.
pub(crate) fn default_port(flag: &str) -> u16 {
    let command = Cli::command();
    let arg = command.get_arguments().find(|a| a.get_long() == Some(flag)).unwrap();
    let default = arg.get_default_values()[0].to_str().unwrap();
    default.parse::<SocketAddr>().unwrap().port()
}

/// `OTPD_*` variables as the flags they stand for (what clap does when it reads the environment); the log filter,
/// which no flag takes, is left out.
pub(crate) fn as_flags(vars: &[(String, String)]) -> Vec<String> {
    let known = settings_by_variable();
    let mut flags = Vec::new();
    for (name, value) in vars {
        let flag = known.get(name).unwrap_or_else(|| panic!("{name} is not an otpd setting"));
        if !flag.is_empty() {
            flags.extend([format!("--{flag}"), value.clone()]);
        }
    }
    flags
}

/// A Dockerfile's instructions, continuation lines joined, comments dropped: (INSTRUCTION, arguments).
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (op, args) = current.trim().split_once(' ').unwrap();
                instructions.push((op.to_uppercase(), args.trim().to_owned()));
                current.clear();
            }
        }
    }
    instructions
}

/// The instructions of the Dockerfile's last stage (the image that ships).
pub(crate) fn runtime_stage() -> Vec<(String, String)> {
    let all = dockerfile();
    let last_from = all.iter().rposition(|(op, _)| op == "FROM").unwrap();
    all[last_from..].to_vec()
}

pub(crate) fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not an exec-form JSON array: {args}: {e}"))
}

/// `ENV A=1 B=2` instructions of the runtime stage.
pub(crate) fn image_env() -> Vec<(String, String)> {
    runtime_stage()
        .iter()
        .filter(|(op, _)| op == "ENV")
        .flat_map(|(_, args)| args.split_whitespace().map(|kv| kv.split_once('=').unwrap()))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The value the runtime stage's `ENV` gives `name`.
fn image_var(name: &str) -> String {
    image_env().into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("the image sets no {name}")).1
}

/// The settings a production deployment adds to what a file sets: a provider and a pepper.
const PROD_ADDITIONS: [&str; 6] = [
    "--sms-gateway",
    "http:https://sms.example/send",
    "--pepper-file",
    "/run/secrets/otpd/pepper",
    "--support-number",
    "1588-0000",
];

#[test]
fn the_image_ships_the_binaries_cargo_builds() {
    let bins = cargo_bins();
    assert_eq!(bins, BTreeSet::from(["otpctl".to_owned(), "otpd".to_owned()]));
    let all = dockerfile();
    let build = all.iter().find(|(op, args)| op == "RUN" && args.contains("cargo build")).unwrap().1.clone();
    assert!(build.contains("--release") && build.contains("--locked"), "{build}");
    let copied: BTreeMap<String, String> = runtime_stage()
        .iter()
        .filter(|(op, args)| op == "COPY" && args.starts_with("--from="))
        .map(|(_, args)| {
            let parts: Vec<&str> = args.split_whitespace().collect();
            (parts[1].to_owned(), parts[2].to_owned())
        })
        .collect();
    for bin in &bins {
        assert!(build.contains(&format!("--bin {bin}")), "the build builds {bin}: {build}");
        assert!(build.contains(&format!("target/release/{bin} /out/{bin}")), "the build keeps {bin}: {build}");
        assert_eq!(copied.get(&format!("/out/{bin}")), Some(&format!("/usr/local/bin/{bin}")), "{copied:?}");
    }
    let entrypoint = exec_form(&runtime_stage().iter().find(|(op, _)| op == "ENTRYPOINT").unwrap().1);
    assert_eq!(entrypoint, ["/usr/local/bin/otpd"]);

    // The build context holds what the build reads: every path COPY names, and every target Cargo.toml declares.
    let sources: Vec<String> = all
        .iter()
        .filter(|(op, args)| op == "COPY" && !args.starts_with("--from="))
        .flat_map(|(_, args)| {
            let parts: Vec<&str> = args.split_whitespace().collect();
            parts[..parts.len() - 1].iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()
        })
        .collect();
    for source in &sources {
        assert!(std::path::Path::new(ROOT).join(source).exists(), "COPY {source}: no such path");
    }
    let manifest = read("Cargo.toml");
    let declared = manifest.lines().filter_map(|l| l.trim().strip_prefix("path = ")).map(|p| p.trim_matches('"'));
    let benches = manifest.lines().filter_map(|l| l.trim().strip_prefix("name = ")).map(|n| n.trim_matches('"'));
    let benches = benches.filter(|n| std::path::Path::new(&format!("{ROOT}/benches/{n}.rs")).exists());
    for path in declared.map(str::to_owned).chain(benches.map(|n| format!("benches/{n}.rs"))) {
        let top = path.split('/').next().unwrap();
        assert!(sources.iter().any(|s| s == top || s == &path), "the image build does not copy {path}");
    }
    let ignored = read(".dockerignore");
    for kept_out in ["target/", ".git/", "*.pepper", "*.db"] {
        assert!(ignored.lines().any(|l| l.trim() == kept_out), ".dockerignore keeps {kept_out} out");
    }
}

#[test]
fn the_image_exposes_the_listeners_default_ports_and_runs_as_non_root() {
    let stage = runtime_stage();
    let exposed: BTreeSet<u16> = stage
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, args)| args.split_whitespace().map(|p| p.parse::<u16>().unwrap()))
        .collect();
    assert_eq!(exposed, BTreeSet::from([default_port("listen"), default_port("admin-listen")]));

    // The image's own settings, read by the real command line: the listeners bind those ports on every address.
    let mut argv = vec!["otpd".to_owned()];
    argv.extend(as_flags(&image_env()));
    argv.extend(exec_form(&stage.iter().find(|(op, _)| op == "CMD").unwrap().1));
    let cli = Cli::try_parse_from(&argv).unwrap();
    assert!(matches!(cli.command, Some(Command::Serve)), "{argv:?}");
    for addr in [cli.settings.listen, cli.settings.admin_listen] {
        assert!(addr.ip().is_unspecified() && exposed.contains(&addr.port()), "{addr} is not an exposed port");
    }
    // In prod mode it refuses to start without a provider and a pepper, and starts with them.
    assert_eq!(cli.settings.mode, otpd::config::Mode::Prod);
    let refused = cli.settings.validate().unwrap_err();
    assert_eq!(refused.setting, "sms-gateway");
    let mut prod = argv.clone();
    prod.extend(PROD_ADDITIONS.map(str::to_owned));
    let config = Cli::try_parse_from(&prod).unwrap().settings.validate().unwrap();
    // Both listeners serve the certificate the image's variables name, from where the guide says to mount it,
    // without asking clients for certificates (the operator adds OTPD_ADMIN_CLIENT_CA).
    let (cert, key) = (image_var("OTPD_TLS_CERT"), image_var("OTPD_TLS_KEY"));
    for files in [config.tls.public.as_ref(), config.tls.admin.as_ref()] {
        let files = files.expect("the image serves TLS on both listeners");
        assert_eq!((files.cert.path.to_str(), files.key.path.to_str()), (Some(cert.as_str()), Some(key.as_str())));
        assert!(files.client_ca.is_none());
    }
    let guide = read("docs/operations.md");
    for path in [&cert, &key] {
        assert!(path.starts_with("/etc/otpd/tls/") && guide.contains(path.as_str()), "the guide says to mount {path}");
    }
    // Without them prod mode refuses the image's admin listener: they are what lets the image start at all.
    let mut plaintext = vec!["otpd".to_owned()];
    let env: Vec<_> = image_env().into_iter().filter(|(name, _)| !name.starts_with("OTPD_TLS_")).collect();
    plaintext.extend(as_flags(&env));
    plaintext.extend(PROD_ADDITIONS.map(str::to_owned));
    assert_eq!(Cli::try_parse_from(&plaintext).unwrap().settings.validate().unwrap_err().setting, "admin-listen");

    let user = stage.iter().find(|(op, _)| op == "USER").unwrap().1.clone();
    assert!(!user.starts_with("root") && !user.starts_with("0"), "USER {user}");
    // Numeric, as Kubernetes' runAsNonRoot needs to check it, and the uid and gid deploy/k8s runs as.
    assert_eq!(user, "65532:65532", "USER is numeric");
}

#[tokio::test]
async fn the_image_health_check_is_otpd_healthcheck_over_tls_on_the_public_listener() {
    let stage = runtime_stage();
    let check = stage.iter().find(|(op, _)| op == "HEALTHCHECK").unwrap().1.clone();
    let argv = exec_form(check.split_once("CMD ").unwrap().1.trim());
    let entrypoint = exec_form(&stage.iter().find(|(op, _)| op == "ENTRYPOINT").unwrap().1);
    assert_eq!(argv[0], entrypoint[0], "the health check runs the image's own binary");
    let mut full = vec!["otpd".to_owned()];
    full.extend(argv[1..].iter().cloned());
    full.extend(as_flags(&image_env()));
    let cli = Cli::try_parse_from(&full).unwrap();
    let Some(Command::Healthcheck(args)) = cli.command else { panic!("not `otpd healthcheck`: {full:?}") };
    assert_eq!(args.listener, Listener::Public);
    assert_eq!(otpd::healthcheck::dialable(cli.settings.listen).port(), default_port("listen"));
    // The probe validates the image's settings as the service does (prod mode, with what an operator adds) and
    // speaks TLS, pinning the certificate of OTPD_TLS_CERT: here, where nothing is mounted, it says it cannot read
    // exactly that file, rather than falling back to plaintext.
    full.extend(PROD_ADDITIONS.map(str::to_owned));
    let config = Cli::try_parse_from(&full).unwrap().settings.validate().unwrap();
    let error = otpd::healthcheck::transport(&config, args.listener).await.unwrap_err();
    let expected = format!("--tls-cert {}: cannot read the file", image_var("OTPD_TLS_CERT"));
    assert!(format!("{error:#}").starts_with(&expected), "{error:#}");
}

/// A systemd unit's `Key=value` lines (a key may repeat).
fn unit() -> Vec<(String, String)> {
    read("deploy/otpd.service")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| l.split_once('=').unwrap())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn unit_values(key: &str) -> Vec<String> {
    unit().into_iter().filter(|(k, _)| k == key).map(|(_, v)| v).collect()
}

/// `deploy/otpd.env`'s settings, and the names of those it shows commented out.
fn env_file() -> (Vec<(String, String)>, Vec<String>) {
    let text = read("deploy/otpd.env");
    let mut set = Vec::new();
    let mut commented = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        match line.strip_prefix('#') {
            Some(comment) => {
                if let Some((name, _)) = comment.trim().split_once('=').filter(|(n, _)| n.starts_with("OTPD_")) {
                    commented.push(name.to_owned());
                }
            }
            None => {
                let (name, value) = line.split_once('=').unwrap();
                set.push((name.to_owned(), value.to_owned()));
            }
        }
    }
    (set, commented)
}

#[test]
fn the_unit_runs_otpd_with_real_settings_and_hardening() {
    let exec = unit_values("ExecStart");
    assert_eq!(exec.len(), 1);
    let mut argv: Vec<String> = exec[0].split_whitespace().map(str::to_owned).collect();
    let binary = argv[0].clone();
    assert_eq!(binary, "/usr/local/bin/otpd", "the path the README and the image install it at");
    assert!(cargo_bins().contains(binary.rsplit('/').next().unwrap()));

    // Its environment: the file's variables and the unit's own, `%d` being the credentials directory.
    assert_eq!(unit_values("EnvironmentFile"), ["/etc/otpd/otpd.env"]);
    let (mut vars, commented) = env_file();
    let known = settings_by_variable();
    for name in vars.iter().map(|(n, _)| n).chain(&commented) {
        assert!(known.contains_key(name), "deploy/otpd.env: {name} is not an otpd setting");
    }
    for value in unit_values("Environment") {
        let (name, value) = value.split_once('=').unwrap();
        assert!(known.contains_key(name), "Environment={name} is not an otpd setting");
        vars.push((name.to_owned(), value.replace("%d", "/run/credentials/otpd.service")));
    }
    let credentials: Vec<String> =
        unit_values("LoadCredential").iter().map(|c| c.split(':').next().unwrap().into()).collect();
    for (name, value) in &vars {
        if let Some(credential) = value.strip_prefix("/run/credentials/otpd.service/") {
            assert!(credentials.iter().any(|c| c == credential), "{name} reads credential {credential}, never loaded");
        }
    }
    argv.splice(1..1, as_flags(&vars));
    argv[0] = "otpd".into();
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(matches!(cli.command, Some(Command::Serve)));
    let config = cli.settings.validate().unwrap_or_else(|e| panic!("the unit's settings are refused: {e}"));
    assert!(!config.migrate_on_start, "the service role does not own the schema");
    assert!(matches!(config.pepper, otpd::config::PepperSource::File(_)));
    assert!(config.audit_key_file.is_some(), "the audit chain has its own key, so the pepper can rotate");

    for (key, value) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallFilter", "@system-service"),
        ("SystemCallArchitectures", "native"),
        ("StateDirectory", "otpd"),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert!(unit_values(key).iter().any(|v| v == value), "the unit sets {key}={value}");
    }
    // Long enough for SIGTERM's drain: the servers give a call at most 30 s.
    let stop = unit_values("TimeoutStopSec");
    assert!(humantime::parse_duration(&stop[0]).unwrap() > std::time::Duration::from_secs(30), "{stop:?}");
}

#[test]
fn the_readme_points_to_the_deployment_files_and_the_operations_guide() {
    let readme = read("README.md");
    for path in ["Dockerfile", "deploy/otpd.service", "docs/operations.md"] {
        assert!(readme.contains(&format!("({path})")), "README links {path}");
    }
    // The guide's settings table names every OTPD_* variable (the coordinator's merge adds the TLS and metrics ones).
    let guide = read("docs/operations.md");
    for name in settings_by_variable().keys() {
        assert!(guide.contains(&format!("`{name}`")), "docs/operations.md does not mention `{name}`");
    }
}

fn healthcheck(args: &[&str], dir: &std::path::Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_otpd"))
        .arg("healthcheck")
        .args(args)
        .current_dir(dir)
        .env_remove("OTPD_LOG")
        .output()
        .unwrap()
}

/// The probe the image runs answers 0 for a serving listener (either one), 1 once it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otpd_healthcheck_exits_0_while_serving_and_1_when_stopped() {
    let app = spawn_app(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let public = app.public_addr.to_string();
    let admin = app.admin_addr.to_string();

    let out = healthcheck(&["--listen", &public], dir.path());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{public}: SERVING"));
    let out = healthcheck(&["--listener", "admin", "--admin-listen", &admin], dir.path());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = healthcheck(&["--listen", &public, "--service", "otp.v1.OtpService"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A name health does not know is not SERVING.
    let out = healthcheck(&["--listen", &public, "--service", "otp.v1.Nope"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("SERVICE_UNKNOWN"), "{out:?}");

    app.stop().await;
    let out = healthcheck(&["--listen", &public, "--timeout", "2s"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"), "{out:?}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "the probe writes nothing");
}

/// systemd's own reading of the unit, where systemd is installed: every directive known (no "Unknown key"
/// warnings), and an exposure level (`systemd-analyze security`) of at most 2.0 on its 0–10 scale.
#[test]
fn systemd_analyze_accepts_the_unit() {
    if std::process::Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed: skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The unit as installed, but running the binary just built (verify checks that ExecStart is executable).
    let unit = read("deploy/otpd.service").replace("/usr/local/bin/otpd", env!("CARGO_BIN_EXE_otpd"));
    let path = dir.path().join("otpd.service");
    std::fs::write(&path, unit).unwrap();
    let verify = std::process::Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    assert!(verify.status.success() && verify.stderr.is_empty(), "{verify:?}");
    let security = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(security.status.success(), "{}", String::from_utf8_lossy(&security.stdout));
}

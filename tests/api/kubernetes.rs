//! deploy/k8s agrees with Kubernetes and with the code. Every manifest is validated offline against the Kubernetes
//! API schemas (`kubernetes-validate --strict`, from PyPI, installed by scripts/test; its schemas are in the
//! package), and read (YAML through PyYAML, which it depends on) to check that probes, ports, variables, the user
//! and the drain timings are the ones the code and the image use.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command as Process;

use clap::Parser;
use otpd::config::{Cli, Command};
use serde_json::Value;

use crate::deployment::{as_flags, default_port, image_env, read, runtime_stage, settings_by_variable};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/k8s");
/// The Kubernetes version the manifests are validated against (the newest the validator knows).
const KUBERNETES: &str = "1.37.0";

/// Every manifest file but the kustomization.
fn manifests() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    files.sort();
    files
}

fn validate(paths: &[&Path]) -> std::process::Output {
    Process::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", KUBERNETES])
        .args(paths)
        .output()
        .expect("kubernetes-validate (PyPI) on PATH: scripts/test installs it")
}

/// The documents of a YAML file, as JSON values (PyYAML's safe loader).
fn documents(file: &str) -> Vec<Value> {
    let script = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let out = Process::new("python3").args(["-c", script, &format!("{DIR}/{file}")]).output().unwrap();
    assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn all_documents() -> Vec<Value> {
    manifests().iter().flat_map(|file| documents(file)).collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

#[test]
fn every_manifest_is_valid_against_the_kubernetes_schemas() {
    let files = manifests();
    let paths: Vec<_> = files.iter().map(|f| Path::new(DIR).join(f)).collect();
    let out = validate(&paths.iter().map(|p| p.as_path()).collect::<Vec<_>>());
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{report}");
    for file in &files {
        assert!(report.contains(&format!("{file} passed")), "{file} was validated: {report}");
    }
    // The validator is strict: an unknown field fails it (so a pass above means something).
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    let text = std::fs::read_to_string(paths.iter().find(|p| p.ends_with("deployment.yaml")).unwrap()).unwrap();
    std::fs::write(&broken, text.replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:")).unwrap();
    assert!(!validate(&[&broken]).status.success(), "a misspelt field passed");
    // The kustomization lists every manifest.
    let kustomization = documents("kustomization.yaml").remove(0);
    let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    assert_eq!(listed, files.into_iter().collect::<BTreeSet<_>>());
}

/// The otpd container of the Deployment.
fn server(docs: &[Value]) -> Value {
    let deployment = of_kind(docs, "Deployment");
    assert_eq!(deployment.len(), 1);
    deployment[0]["spec"]["template"]["spec"]["containers"][0].clone()
}

/// What the secrets hold in the test, standing in for the Secret's values.
fn secret(key: &str) -> String {
    match key {
        "database-url" | "owner-database-url" => {
            "postgres://otpd@db.internal/otpd?sslmode=verify-full&sslrootcert=/run/secrets/otpd/db-ca.crt".into()
        }
        "sms-gateway" => "https://sms.example/send".into(),
        other => panic!("a Secret key the test does not know: {other}"),
    }
}

/// The image's environment with the container's on top, as the process sees it.
fn environment(container: &Value) -> Vec<(String, String)> {
    let mut vars: BTreeMap<String, String> = image_env().into_iter().collect();
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap().to_owned();
        let value = match var["value"].as_str() {
            Some(value) => value.to_owned(),
            None => secret(var["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap()),
        };
        vars.insert(name, value);
    }
    vars.into_iter().collect()
}

/// The flags of `env`, with the Secret's mount replaced by `dir` holding stand-in files (validation reads the
/// receipt key).
fn flags_with_secrets_in(env: &[(String, String)], dir: &Path) -> Vec<String> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(name, value)| match value.strip_prefix("/run/secrets/otpd/") {
            Some(file) => {
                let path = dir.join(file);
                std::fs::write(&path, "0123456789abcdef0123456789abcdef0123456789abcdef").unwrap();
                (name.clone(), path.to_str().unwrap().to_owned())
            }
            None => (name.clone(), value.clone()),
        })
        .collect();
    as_flags(&env)
}

#[test]
fn the_deployment_runs_the_image_as_it_is_built_and_configured() {
    let docs = all_documents();
    let container = server(&docs);
    let env = environment(&container);
    let known = settings_by_variable();
    for (name, _) in &env {
        assert!(known.contains_key(name), "{name} is not an otpd setting");
    }
    // The whole environment parses and validates in prod mode (the image's OTPD_MODE), as `otpd serve`.
    let secrets = tempfile::tempdir().unwrap();
    let mut argv = vec!["otpd".to_owned()];
    argv.extend(flags_with_secrets_in(&env, secrets.path()));
    argv.extend(strings(&container["args"]));
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(matches!(cli.command, Some(Command::Serve)));
    let config = cli.settings.validate().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(config.tls.public.is_some() && config.tls.admin.is_some() && config.tls.webhook.is_some());
    assert!(config.tls.admin.as_ref().unwrap().client_ca.is_some(), "mutual TLS on the admin listener");

    // Ports: the listeners' addresses, each named once.
    let ports: BTreeMap<String, u64> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["containerPort"].as_u64().unwrap()))
        .collect();
    assert_eq!(ports["grpc-public"], u64::from(config.listen.port()));
    assert_eq!(ports["grpc-public"], u64::from(default_port("listen")));
    assert_eq!(ports["grpc-admin"], u64::from(config.admin_listen.port()));
    assert_eq!(ports["https-receipts"], u64::from(config.delivery.webhook_listen.unwrap().port()));
    assert_eq!(ports["http-metrics"], u64::from(config.metrics_listen.unwrap().port()));

    // The image's numeric user; nothing written to the root file system; no privileges.
    let pod = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["spec"];
    let user = runtime_stage().into_iter().find(|(op, _)| op == "USER").unwrap().1;
    let (uid, gid) = user.split_once(':').unwrap();
    assert_eq!(pod["securityContext"]["runAsUser"].to_string(), uid);
    assert_eq!(pod["securityContext"]["runAsGroup"].to_string(), gid);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);

    // Mounted where the settings read: the TLS pair and every *_FILE / CA path under a mounted volume.
    let mounts: Vec<String> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{}/", m["mountPath"].as_str().unwrap()))
        .collect();
    for (name, value) in &env {
        if value.starts_with('/') {
            assert!(mounts.iter().any(|m| value.starts_with(m.as_str())), "{name}={value} is not on a mounted volume");
        }
    }

    // The drain: a preStop pause, then SIGTERM's drain of 40 s (docs/operations.md), within the grace period.
    let pause = container["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(pause >= 1 && grace >= pause + 40, "preStop {pause}s, grace {grace}s");
    assert!(read("docs/operations.md").contains("Give a stop at least 40 s"));
}

/// `otpd healthcheck` as a probe runs it; its `--service`.
fn probe_service(probe: &Value, env: &[(String, String)]) -> (String, u64) {
    let command = strings(&probe["exec"]["command"]);
    assert_eq!(command[0], "/usr/local/bin/otpd");
    let mut argv = vec!["otpd".to_owned()];
    argv.extend(as_flags(env));
    argv.extend(command[1..].iter().cloned());
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    let Some(Command::Healthcheck(args)) = cli.command else { panic!("not `otpd healthcheck`: {command:?}") };
    // The probe's timeout leaves room for the check's own and, after a rotation, its second look.
    let timeout = probe["timeoutSeconds"].as_u64().unwrap();
    assert!(timeout >= args.timeout.as_secs() + 3, "timeoutSeconds {timeout} for --timeout {}", args.timeout);
    (args.service, timeout)
}

#[test]
fn probes_ask_the_health_names_the_service_reports() {
    let docs = all_documents();
    let container = server(&docs);
    let env = environment(&container);
    let (liveness, _) = probe_service(&container["livenessProbe"], &env);
    assert_eq!(liveness, otpd::startup::LIVENESS_NAME, "liveness must not follow the database");
    let (readiness, _) = probe_service(&container["readinessProbe"], &env);
    assert_eq!(readiness, otpd::startup::OTP_SERVICE_NAME);
    let (startup, _) = probe_service(&container["startupProbe"], &env);
    assert_eq!(startup, otpd::startup::OTP_SERVICE_NAME);
}

#[test]
fn services_policies_autoscaler_and_migration_match_the_container() {
    let docs = all_documents();
    let container = server(&docs);
    let ports: BTreeSet<String> =
        container["ports"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap().to_owned()).collect();
    let labels = &of_kind(&docs, "Deployment")[0]["spec"]["template"]["metadata"]["labels"];

    // Every Service selects the pods and targets one of the container's named ports; each port has one.
    let mut served = BTreeSet::new();
    for service in of_kind(&docs, "Service") {
        for (key, value) in service["spec"]["selector"].as_object().unwrap() {
            assert_eq!(&labels[key], value, "{}", service["metadata"]["name"]);
        }
        for port in service["spec"]["ports"].as_array().unwrap() {
            let target = port["targetPort"].as_str().unwrap().to_owned();
            assert!(ports.contains(&target), "{target}");
            served.insert(target);
        }
    }
    assert_eq!(served, ports);
    assert!(of_kind(&docs, "Service").iter().any(|s| s["spec"]["clusterIP"] == "None"), "a headless Service");

    // NetworkPolicies: every port admitted by exactly one policy, so admin and receipts never share callers.
    let mut admitted: BTreeMap<String, String> = BTreeMap::new();
    for policy in of_kind(&docs, "NetworkPolicy") {
        let name = policy["metadata"]["name"].as_str().unwrap().to_owned();
        for rule in policy["spec"]["ingress"].as_array().unwrap() {
            for port in rule["ports"].as_array().unwrap() {
                let port = port["port"].as_str().unwrap().to_owned();
                assert!(ports.contains(&port), "{name}: {port}");
                assert!(admitted.insert(port.clone(), name.clone()).is_none(), "{port} is in two policies");
            }
        }
    }
    assert_eq!(admitted.keys().cloned().collect::<BTreeSet<_>>(), ports);
    assert_ne!(admitted["grpc-admin"], admitted["https-receipts"]);

    // The autoscaler scales the Deployment on CPU and on a metric otpd exports.
    let hpa = of_kind(&docs, "HorizontalPodAutoscaler")[0];
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], of_kind(&docs, "Deployment")[0]["metadata"]["name"]);
    let metrics = hpa["spec"]["metrics"].as_array().unwrap();
    assert!(metrics.iter().any(|m| m["resource"]["name"] == "cpu"));
    let custom = metrics.iter().find(|m| m["type"] == "Pods").unwrap()["pods"]["metric"]["name"].as_str().unwrap();
    let exported = otpd::metrics::Metrics::new().encode().unwrap();
    assert!(exported.lines().any(|l| l.starts_with(&format!("{custom} "))), "otpd exports no gauge {custom}");

    // The PDB covers the Deployment's pods.
    let pdb = of_kind(&docs, "PodDisruptionBudget")[0];
    for (key, value) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[key], value);
    }

    // The migration Job runs `otpd migrate` with settings that validate in prod mode.
    let job = of_kind(&docs, "Job")[0];
    let migrate = &job["spec"]["template"]["spec"]["containers"][0];
    let secrets = tempfile::tempdir().unwrap();
    let mut argv = vec!["otpd".to_owned()];
    argv.extend(flags_with_secrets_in(&environment(migrate), secrets.path()));
    argv.extend(strings(&migrate["args"]));
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(matches!(cli.command, Some(Command::Migrate)));
    cli.settings.validate().unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    // The service does not migrate on start (the Job does, as the owner).
    let env = environment(&container);
    assert!(env.contains(&("OTPD_MIGRATE_ON_START".to_owned(), "false".to_owned())));
}

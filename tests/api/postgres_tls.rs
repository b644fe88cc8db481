//! PostgreSQL over TLS against a real server the test starts itself: `initdb` and `pg_ctl` from the PostgreSQL
//! installation, in a temporary directory, on a free port, with `ssl = on`, a server certificate made here by
//! `rcgen`, and a `pg_hba.conf` that accepts only TLS connections (`hostssl`). A CA that did not sign the
//! server's certificate is refused, the right one connects, and the send/verify flow runs over it.

use std::path::{Path, PathBuf};
use std::process::Command;

use otpd::pb::otp::v1 as pb;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

use crate::helpers::*;

/// The newest installed PostgreSQL's `bin` directory.
fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server binaries in /usr/lib/postgresql (scripts/test installs them)")
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort_by_key(|bin| {
        bin.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok())
    });
    versions.pop().expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs a PostgreSQL tool; as root (CI), as the `postgres` user, since initdb and postgres refuse root.
fn run_as_postgres(program: &Path, args: &[&str]) {
    let output = if is_root() {
        Command::new("runuser").args(["-u", "postgres", "--"]).arg(program).args(args).output()
    } else {
        Command::new(program).args(args).output()
    }
    .unwrap();
    assert!(
        output.status.success(),
        "{} {args:?}: {}\n{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA and a certificate for 127.0.0.1 and localhost that it signed, PEM.
fn ca_and_server() -> (String, String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "otpd test database CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(params, ca_key);
    let mut server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    server.distinguished_name.push(DnType::CommonName, "localhost");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = server.signed_by(&key, &issuer).unwrap();
    (ca_pem, cert.pem(), key.serialize_pem())
}

/// A PostgreSQL cluster that serves only TLS, stopped when dropped.
struct TlsPostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// The CA that signed the server's certificate, and one that did not.
    right_ca: PathBuf,
    wrong_ca: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsPostgres {
    fn start() -> Self {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (ca, cert, key) = ca_and_server();
        let (wrong_ca, _, _) = ca_and_server();
        let right_ca = dir.path().join("right-ca.crt");
        let wrong_ca_path = dir.path().join("wrong-ca.crt");
        std::fs::write(&right_ca, ca).unwrap();
        std::fs::write(&wrong_ca_path, wrong_ca).unwrap();
        let (cert_path, key_path) = (dir.path().join("server.crt"), dir.path().join("server.key"));
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            // PostgreSQL refuses a key others can read.
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().unwrap();
            assert!(status.success());
        }
        let data_arg = data.to_str().unwrap();
        run_as_postgres(&bin.join("initdb"), &["-D", data_arg, "-U", "postgres", "--auth=trust", "-E", "UTF8"]);
        let port = free_port();
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nssl = on\n\
             ssl_cert_file = '{}'\nssl_key_file = '{}'\nfsync = off\n",
            dir.path().display(),
            cert_path.display(),
            key_path.display()
        );
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).unwrap();
        text.push_str(&conf);
        std::fs::write(&conf_path, text).unwrap();
        // TCP only over TLS; the Unix socket (for pg_ctl) without.
        std::fs::write(data.join("pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 trust\n").unwrap();
        let log = dir.path().join("postgres.log");
        run_as_postgres(&bin.join("pg_ctl"), &["-D", data_arg, "-l", log.to_str().unwrap(), "-w", "start"]);
        Self { bin, data, port, right_ca, wrong_ca: wrong_ca_path, _dir: dir }
    }

    fn url(&self, database: &str, query: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}?{query}", self.port)
    }

    fn verify_full(&self, database: &str, ca: &Path) -> String {
        self.url(database, &format!("sslmode=verify-full&sslrootcert={}", ca.display()))
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let data = self.data.to_str().unwrap_or_default().to_owned();
        let pg_ctl = self.bin.join("pg_ctl");
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(pg_ctl)
                .args(["-D", &data, "-m", "immediate", "stop"])
                .output()
        } else {
            Command::new(pg_ctl).args(["-D", &data, "-m", "immediate", "stop"]).output()
        };
    }
}

#[tokio::test]
async fn postgres_over_tls_checks_the_ca_and_serves_the_flow() {
    let server = TlsPostgres::start();

    // A CA that did not sign the server's certificate: refused, whatever the server offers.
    let wrong = otpd::store::connect(&server.verify_full("postgres", &server.wrong_ca)).await;
    assert!(wrong.is_err(), "a server certificate from another CA was accepted");
    // Without TLS the server (hostssl only) refuses: so a connection that works below is TLS.
    assert!(otpd::store::connect(&server.url("postgres", "sslmode=disable")).await.is_err());

    // The right CA connects, over TLS.
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&server.verify_full("postgres", &server.right_ca)).await.unwrap();
        let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert!(ssl);
        sqlx::query("CREATE DATABASE otpd").execute(&mut conn).await.unwrap();
    }

    // The service on it, in prod's accepted form: migrations, then send and verify.
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb { url: server.verify_full("otpd", &server.right_ca), backend: Backend::Postgres };
    let app = spawn_app_at(db, dir, &[]).await;
    let code = app.send_and_read("010-1234-5678", pb::Purpose::Login).await;
    let verified = app.verify("010-1234-5678", pb::Purpose::Login, &code).await.unwrap();
    assert_eq!(verified.result(), pb::VerifyResult::Approved);
    app.stop().await;
}

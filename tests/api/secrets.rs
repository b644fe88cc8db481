//! No code in the logs of a whole run at TRACE level, and none in clear in the database.

use otpd::pb::otp::v1::{Purpose, VerifyResult};

use crate::both_backends;
use crate::helpers::*;

both_backends!(codes_are_stored_only_as_argon2id_hashes);

/// A code standing alone (not inside a longer run of digits or letters).
fn contains_code(haystack: &str, code: &str) -> bool {
    regex::Regex::new(&format!(r"\b{code}\b")).unwrap().is_match(haystack)
}

async fn codes_are_stored_only_as_argon2id_hashes(backend: Backend) {
    let app = spawn_app_with(backend, &["--resend-cooldown", "0s"]).await;
    let mut codes = Vec::new();
    for purpose in [Purpose::Login, Purpose::Login, Purpose::Signup, Purpose::Reauth] {
        codes.push(app.send_and_read(PHONE, purpose).await);
    }
    assert_eq!(app.verify(PHONE, Purpose::Signup, &codes[2]).await.unwrap().result(), VerifyResult::Approved);

    let rows = app.db.dump().await;
    assert!(rows.len() > 4 + 3, "{rows:?}");
    for code in &codes {
        for row in &rows {
            assert!(!contains_code(row, code), "code {code} in a database row: {row}");
        }
    }
    let hashes: Vec<&String> = rows.iter().filter(|r| r.contains("$argon2id$")).collect();
    assert_eq!(hashes.len(), 4, "one argon2id hash per code");
    assert!(hashes.iter().all(|r| r.contains("$argon2id$v=19$m=1024,t=1,p=1$")));
}

/// A real `otpd` process on SQLite logging everything at TRACE, driven through sends, resends, wrong and
/// right codes, a lockout and bad input: no code appears in its output, nor anywhere in the database files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_code_in_trace_logs_or_database_files() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("otpd.db");
    let db_url = format!("sqlite://{}", db_path.display());
    let sms_path = dir.path().join("sms.jsonl");
    let gateway = format!("file:{}", sms_path.display());
    let args =
        ["--database-url", &db_url, "--sms-gateway", &gateway, "--log-format", "json", "--resend-cooldown", "0s"];
    let otpd = OtpdProcess::start(dir.path(), "otpd", &args, &[("OTPD_LOG", "trace")]).await;
    let mut client = otpd.otp().await;

    let send = |purpose| send_req(PHONE, purpose);
    let verify = |purpose, code: &str| verify_req(PHONE, purpose, code);
    client.send_code(send(Purpose::Login)).await.unwrap();
    client.send_code(send(Purpose::Login)).await.unwrap();
    let sms = read_sms(&sms_path);
    let (first, second) = (code_in(&sms[0].body), code_in(&sms[1].body));
    let wrong = ["000000", "111111", "222222"].into_iter().find(|c| *c != first && *c != second).unwrap();
    client.verify_code(verify(Purpose::Login, wrong)).await.unwrap();
    let r = client.verify_code(verify(Purpose::Login, &first)).await.unwrap().into_inner();
    assert_eq!(r.result(), VerifyResult::Approved);
    client.send_code(send(Purpose::Signup)).await.unwrap();
    let signup = code_in(&read_sms(&sms_path)[2].body);
    let bad = ["333333", "444444", "555555"].into_iter().find(|c| *c != signup).unwrap();
    for _ in 0..10 {
        client.verify_code(verify(Purpose::Signup, bad)).await.unwrap();
    }
    let locked = client.verify_code(verify(Purpose::Signup, &signup)).await.unwrap_err();
    assert_eq!(reason(&locked), "PHONE_LOCKED");
    client.verify_code(verify(Purpose::Signup, "12x456")).await.unwrap_err();

    let (stdout, stderr) = otpd.terminate().await;
    assert!(stderr.contains("verification approved"), "the run was logged: {stderr}");
    assert!(
        stderr.lines().any(|l| l.contains("\"target\":\"audit\"") && l.contains("phone_locked")),
        "the lockout is on the audit tracing target"
    );
    assert!(stderr.contains("+82 10-****-5678"), "numbers are logged masked");
    assert!(!stderr.contains(PHONE_E164) && !stdout.contains(PHONE_E164), "numbers are never logged in full");

    let codes: Vec<String> = read_sms(&sms_path).iter().map(|s| code_in(&s.body)).collect();
    assert_eq!(codes.len(), 3);
    for code in &codes {
        assert!(!contains_code(&stdout, code), "code {code} on stdout");
        assert!(!contains_code(&stderr, code), "code {code} in the logs");
        for suffix in ["", "-wal", "-shm"] {
            let path = format!("{}{suffix}", db_path.display());
            if let Ok(bytes) = std::fs::read(&path) {
                let found = bytes.windows(code.len()).any(|w| w == code.as_bytes());
                assert!(!found, "code {code} in {path}");
            }
        }
    }
}

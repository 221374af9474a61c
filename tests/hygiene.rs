//! Secrets hygiene of the running binary: no core dumps, and the leak scanner that every
//! integration test's provider log goes through really finds leaks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::{
    env::{Env, SP_SECRET},
    leaks,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_dumps_are_disabled_at_start() {
    let env = Env::start(&[]).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", env.provider.pid())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core limit line");
    let fields: Vec<&str> = core.split_whitespace().collect();
    // "Max core file size  <soft>  <hard>  bytes"
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
    assert!(
        !env.provider
            .logs()
            .contains("core dumps could not be fully disabled"),
        "{}",
        env.provider.logs()
    );
}

#[test]
fn the_leak_scanner_finds_registered_values_and_credential_shapes() {
    leaks::register("registered-secret-value-42");
    let leaky = [
        "mount ok value=registered-secret-value-42",
        "sending Authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9",
        "token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.sig",
        "body client_secret=abc123def&scope=x",
        "form client_assertion=eyJabc.def.ghi&client_id=x",
        r#"{"access_token": "at-123456"}"#,
        "-----BEGIN PRIVATE KEY-----",
        "-----BEGIN RSA PRIVATE KEY-----",
    ];
    for line in leaky {
        assert_eq!(leaks::scan(line).len(), 1, "{line}");
    }
    // The fake's client secret is registered when a test adds the service principal.
    let clean = [
        "mount ok pod=shop/web-0 objects=3 bytes=120",
        r#"WWW-Authenticate: Bearer authorization="https://login.test/t", resource="https://vault.test""#,
        "identity: service principal (clientid 1111, tenant 2222)",
        r#"{"refresh_token": ""}"#,
    ];
    for line in clean {
        assert!(leaks::scan(line).is_empty(), "{line}");
    }
    let _ = SP_SECRET;
}

//! The fault matrix: Key Vault, the token services and the network misbehave; every case ends in
//! a defined gRPC status and message, no partial reply, the process keeps serving and the next
//! good request succeeds. Run with `--nocapture` to print the table rows of RELIABILITY.md.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::too_many_lines
)]

mod support;

use futures::future::join_all;
use serde_json::json;
use std::time::Duration;
use support::{
    env::{Env, SP_ID, TENANT, files, sp_secrets, sp_secrets_for},
    fake_azure::{Fault, Mangle, SYSTEM_ASSIGNED_CLIENT_ID, SecretOpts, Service},
    provider::{NO_SECRET_REF, http_get},
};
use tonic::Code;

/// What a case must end in.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// The mount fails with this code and a message containing the text.
    Fails(Code, &'static str),
    /// The mount succeeds (the damage is harmless).
    Succeeds,
}

fn object(name: &str) -> String {
    format!("objectName: {name}\nobjectType: secret")
}

/// Prints one row of the table in RELIABILITY.md.
fn row(case: &str, outcome: &Result<akv_csi_provider::v1alpha1::MountResponse, tonic::Status>) {
    match outcome {
        Ok(r) => println!("| {case} | OK | {} file(s) |", r.files.len()),
        Err(s) => println!("| {case} | {:?} | {} |", s.code(), s.message()),
    }
}

fn check(
    case: &str,
    outcome: &Result<akv_csi_provider::v1alpha1::MountResponse, tonic::Status>,
    expect: Expect,
) {
    row(case, outcome);
    match (expect, outcome) {
        (Expect::Fails(code, needle), Err(status)) => {
            assert_eq!(status.code(), code, "{case}: {status:?}");
            assert!(
                status.message().contains(needle),
                "{case}: {}",
                status.message()
            );
        }
        (Expect::Succeeds, Ok(_)) => {}
        (expect, outcome) => panic!("{case}: expected {expect:?}, got {outcome:?}"),
    }
}

/// The provider's `/metrics` text.
async fn metrics_text(env: &Env) -> String {
    http_get(env.provider.metrics_port, "/metrics").await.1
}

fn throttle_body() -> String {
    json!({"error": {"code": "Throttled", "message": "Request was not processed because too many requests were received."}}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_vault_faults() {
    let env = Env::start(&[]).await;
    env.secret("healthy", "healthy-value-0001");
    // Everything works before the faults (which are injected per secret, for Key Vault only).
    env.mount_sp(&[&object("healthy")]).await.expect("warm-up");

    let cases: Vec<(&str, Fault, Expect)> = vec![
        (
            "429 with Retry-After: 1 (every attempt)",
            Fault::throttled(1),
            Expect::Fails(
                Code::Unavailable,
                "throttled the requests (HTTP 429), asking to wait 1s",
            ),
        ),
        (
            "429 without Retry-After (every attempt)",
            Fault::status(429).with_body(&throttle_body()),
            Expect::Fails(
                Code::Unavailable,
                "throttled the requests (HTTP 429); the driver will retry",
            ),
        ),
        (
            "500 (every attempt)",
            Fault::status(500),
            Expect::Fails(Code::Unavailable, "is unavailable: HTTP 500"),
        ),
        (
            "502 (every attempt)",
            Fault::status(502),
            Expect::Fails(Code::Unavailable, "is unavailable: HTTP 502"),
        ),
        (
            "503 (every attempt)",
            Fault::status(503),
            Expect::Fails(Code::Unavailable, "is unavailable: HTTP 503"),
        ),
        (
            "504 (every attempt)",
            Fault::status(504),
            Expect::Fails(Code::Unavailable, "is unavailable: HTTP 504"),
        ),
        (
            "503 once, then good",
            Fault::status(503).times(1),
            Expect::Succeeds,
        ),
        (
            "connection reset after 20 body bytes (every attempt)",
            Fault::reset_mid_body(20),
            Expect::Fails(Code::Unavailable, "is unavailable"),
        ),
        (
            "connection reset once, then good",
            Fault::reset_mid_body(20).times(1),
            Expect::Succeeds,
        ),
        (
            "200 with the JSON cut after 30 bytes",
            Fault::mangled(Mangle::Truncate(30)),
            Expect::Fails(Code::Internal, "the body is not a JSON secret bundle"),
        ),
        (
            "200 with malformed JSON",
            Fault::ok_body(r#"{"value": "x", "id": }"#, "application/json"),
            Expect::Fails(Code::Internal, "the body is not a JSON secret bundle"),
        ),
        (
            "200 with an empty body",
            Fault::ok_body("", "application/json"),
            Expect::Fails(Code::Internal, "the body is not a JSON secret bundle"),
        ),
        (
            "200 with an HTML page (text/html), e.g. a proxy",
            Fault::ok_body(
                "<html><body>Sign in to the proxy</body></html>",
                "text/html",
            ),
            Expect::Fails(Code::Internal, "Content-Type text/html"),
        ),
        (
            "200 with a valid bundle but Content-Type text/plain",
            Fault::mangled(Mangle::ContentType("text/plain".into())),
            Expect::Succeeds,
        ),
        (
            "200 with a bundle without id",
            Fault::mangled(Mangle::RemoveFields(vec!["id".into()])),
            Expect::Fails(Code::Internal, "has no id"),
        ),
        (
            "200 with a bundle without value",
            Fault::mangled(Mangle::RemoveFields(vec!["value".into()])),
            Expect::Fails(Code::Internal, "the secret has no value"),
        ),
        (
            "404 with a non-JSON body",
            Fault::status(404).with_body("not found"),
            Expect::Fails(Code::NotFound, "was not found in Key Vault kv1"),
        ),
        (
            "403 ForbiddenByConnection (public network access disabled)",
            Fault::keyvault_error("forbidden-by-connection"),
            Expect::Fails(
                Code::FailedPrecondition,
                "refused the request from this node's network (ForbiddenByConnection: Public network access is disabled and request is not from a trusted service nor via an approved private link.): the vault's public network access is disabled: reach it through a private endpoint",
            ),
        ),
        (
            "403 ForbiddenByFirewall (client address not allowed)",
            Fault::keyvault_error("forbidden-by-firewall"),
            Expect::Fails(
                Code::FailedPrecondition,
                "(ForbiddenByFirewall: Client address is not authorized and caller is not a trusted service. Client address: 203.0.113.7): the vault's firewall does not allow this node's address",
            ),
        ),
        (
            "403 ForbiddenByRbac (no role assignment)",
            Fault::keyvault_error("forbidden-by-rbac"),
            Expect::Fails(
                Code::PermissionDenied,
                "the identity lacks the secrets get permission",
            ),
        ),
        (
            "400 with an unknown error body",
            Fault::status(400).with_body(r#"{"error":{"code":"BadParameter","message":"odd"}}"#),
            Expect::Fails(Code::Internal, "sent an unexpected response for secret/"),
        ),
    ];
    let runs = cases.iter().enumerate().map(|(i, (case, fault, expect))| {
        let env = &env;
        async move {
            let name = format!("case-{i}");
            let value = format!("value-of-case-{i}-0001");
            env.secret(&name, &value);
            env.fake.inject("kv1", &name, fault.clone());
            let outcome = env.mount_sp(&[&object("healthy"), &object(&name)]).await;
            env.fake.clear_faults_for("kv1", &name);
            // The next good request succeeds, whole.
            let next = env
                .mount_sp(&[&object("healthy"), &object(&name)])
                .await
                .unwrap_or_else(|e| panic!("{case}: the next good mount failed: {e:?}"));
            assert_eq!(
                files(&next),
                vec![
                    ("healthy".to_owned(), b"healthy-value-0001".to_vec()),
                    (name.clone(), value.clone().into_bytes()),
                ],
                "{case}"
            );
            (*case, outcome, *expect, name, value)
        }
    });
    for (case, outcome, expect, name, value) in join_all(runs).await {
        check(case, &outcome, expect);
        if let Ok(reply) = outcome {
            // A harmless fault changes nothing in the reply.
            assert_eq!(
                files(&reply),
                vec![
                    ("healthy".to_owned(), b"healthy-value-0001".to_vec()),
                    (name, value.into_bytes()),
                ],
                "{case}"
            );
        }
    }

    // A secret that is PKCS#12 by content type but has no kid is not certificate-backed: the
    // value is written as stored (as the Go provider does).
    let stored = "MIIKcQIBAzCCCi8GCSqGSIb3DQEHAaCCCiAEggocMIIKGDCCBM8GCSqG";
    env.fake.set_secret(
        "kv1",
        "pfx-no-kid",
        stored,
        SecretOpts {
            content_type: Some("application/x-pkcs12".into()),
            kid: Some("https://kv1.vault.test/keys/pfx-no-kid/0123".into()),
            ..SecretOpts::default()
        },
    );
    env.fake.inject(
        "kv1",
        "pfx-no-kid",
        Fault::mangled(Mangle::RemoveFields(vec!["kid".into()])),
    );
    let outcome = env.mount_sp(&[&object("pfx-no-kid")]).await;
    check(
        "200 with a PKCS#12 bundle without kid",
        &outcome,
        Expect::Succeeds,
    );
    assert_eq!(
        outcome.expect("no kid").files[0].contents,
        stored.as_bytes()
    );
    assert!(env.serving().await);
}

/// `optional: true` skips an object only when Key Vault says definitely that it does not exist
/// or is disabled: a vault refusing the node's network, a missing role or a bare 404 from
/// something in between fails the Mount instead of "succeeding" with no files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_objects_are_skipped_only_for_definite_codes() {
    let env = Env::start(&[]).await;
    env.secret("healthy", "healthy-value-0003");
    let optional = |name: &str| format!("objectName: {name}\nobjectType: secret\noptional: true");
    let cases: Vec<(&str, Fault, Code)> = vec![
        (
            "optional, 403 ForbiddenByConnection",
            Fault::keyvault_error("forbidden-by-connection"),
            Code::FailedPrecondition,
        ),
        (
            "optional, 403 ForbiddenByFirewall",
            Fault::keyvault_error("forbidden-by-firewall"),
            Code::FailedPrecondition,
        ),
        (
            "optional, 403 ForbiddenByRbac",
            Fault::keyvault_error("forbidden-by-rbac"),
            Code::PermissionDenied,
        ),
        (
            "optional, 404 without Key Vault's code",
            Fault::status(404).with_body("not found"),
            Code::NotFound,
        ),
    ];
    for (i, (case, fault, code)) in cases.into_iter().enumerate() {
        let name = format!("opt-{i}");
        env.secret(&name, &format!("optional-value-{i}-0001"));
        env.fake.inject("kv1", &name, fault);
        let outcome = env.mount_sp(&[&object("healthy"), &optional(&name)]).await;
        row(case, &outcome);
        let status = outcome.expect_err(case);
        assert_eq!(status.code(), code, "{case}: {status:?}");
    }
    // A definite not-found (Key Vault's SecretNotFound) is still skipped.
    let outcome = env
        .mount_sp(&[&object("healthy"), &optional("never-created")])
        .await
        .expect("a missing optional object is skipped");
    assert_eq!(
        files(&outcome),
        vec![("healthy".to_owned(), b"healthy-value-0003".to_vec())]
    );
    let metrics = metrics_text(&env).await;
    assert!(
        metrics.contains(r#"akv_optional_objects_skipped_total{reason="not_found"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("keyvault_request_count")
                && l.contains(r#"object_name="opt-0""#)
                && l.contains(r#"error="network_denied""#)),
        "{metrics}"
    );
}

/// `akv_token_requests_total{mode="service_principal"}` with outcome `rejected` and `unavailable`.
fn token_outcomes(metrics: &str) -> [f64; 2] {
    ["rejected", "unavailable"].map(|outcome| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("akv_token_requests_total{")
                    && l.contains(r#"mode="service_principal""#)
                    && l.contains(&format!(r#"outcome="{outcome}""#))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_service_faults() {
    let env = Env::start(&[]).await;
    env.secret("healthy", "healthy-value-0002");
    let aadsts = |status: u16, error: &str, code: u32, text: &str| {
        Fault::status(status).with_body(
            &json!({"error": error, "error_description": format!("AADSTS{code}: {text}"), "error_codes": [code]})
                .to_string(),
        )
    };
    let cases: Vec<(&str, Fault, Expect)> = vec![
        (
            "token endpoint 400 (AADSTS90002 tenant not found)",
            aadsts(400, "invalid_request", 90_002, "Tenant not found."),
            Expect::Fails(Code::PermissionDenied, "AADSTS90002"),
        ),
        (
            "token endpoint 401 (AADSTS7000215 invalid secret)",
            aadsts(
                401,
                "invalid_client",
                7_000_215,
                "Invalid client secret provided.",
            ),
            Expect::Fails(Code::PermissionDenied, "AADSTS7000215"),
        ),
        (
            "token endpoint 500 (every attempt)",
            Fault::status(500),
            Expect::Fails(Code::Unavailable, "the token service is unavailable"),
        ),
        (
            "token endpoint 503 once, then good",
            Fault::status(503).times(1),
            Expect::Succeeds,
        ),
        (
            "token endpoint 200 without access_token",
            Fault::ok_body(
                r#"{"token_type":"Bearer","expires_in":3599}"#,
                "application/json",
            ),
            Expect::Fails(Code::Unavailable, "answered without an access_token"),
        ),
        (
            "token endpoint 200 with malformed JSON",
            Fault::ok_body(r#"{"access_token": "#, "application/json"),
            Expect::Fails(Code::Unavailable, "not a token response"),
        ),
        (
            "token endpoint 502 with an HTML body (every attempt)",
            Fault::status(502).with_body("<html>Bad gateway</html>"),
            Expect::Fails(Code::Unavailable, "not a token response"),
        ),
        (
            "token endpoint connection reset mid-body (every attempt)",
            Fault::reset_mid_body(10),
            Expect::Fails(Code::Unavailable, "the token service is unavailable"),
        ),
    ];
    for (i, (case, fault, expect)) in cases.into_iter().enumerate() {
        // A new identity per case: nothing cached, the token request happens.
        let (id, secret) = (
            format!("sp-token-case-{i}"),
            format!("token-case-secret-{i}-x"),
        );
        env.fake.add_service_principal(TENANT, &id, &secret);
        env.fake.grant("kv1", &id, &["get"]);
        env.fake.inject_service(Service::Authority, fault);
        let params = env.params(&[&object("healthy")], &[]);
        let counted = token_outcomes(&metrics_text(&env).await);
        let outcome = env.mount(&params, &sp_secrets_for(&id, &secret)).await;
        check(case, &outcome, expect);
        // The metric's outcome and the gRPC code come from one classification.
        let now = token_outcomes(&metrics_text(&env).await);
        if let Err(status) = &outcome {
            let label = usize::from(status.code() == Code::Unavailable);
            let grew = |i: usize| now[i] - counted[i] > 0.5;
            assert!(
                grew(label) && !grew(1 - label),
                "{case}: {:?} but token requests rejected/unavailable went {counted:?} -> {now:?}",
                status.code()
            );
        }
        env.fake.clear_faults();
        let before = env.fake.count(|r| r.service == Service::Authority);
        let next = env.mount(&params, &sp_secrets_for(&id, &secret)).await;
        let after = env.fake.count(|r| r.service == Service::Authority);
        assert!(
            next.is_ok(),
            "{case}: the next good mount failed ({before}->{after} token requests): {next:?}"
        );
    }

    assert!(env.serving().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_endpoint_faults() {
    // The SDK follows Microsoft's IMDS retry guidance (6 retries over up to 72 s), longer than a
    // Mount may take: the Mount deadline ends it.
    let env = Env::start(&["--mount-timeout=3s"]).await;
    env.secret("healthy", "healthy-value-0005");
    env.fake.add_managed_identity(None);
    env.fake.grant("kv1", SYSTEM_ASSIGNED_CLIENT_ID, &["get"]);
    // One pod per case: a token cached for an earlier case's pod would hide the fault.
    for pod in ["pod-0", "pod-1", "pod-2"] {
        env.fake
            .add_pod_identity("shop", pod, "pod-identity-client");
    }
    env.fake.grant("kv1", "pod-identity-client", &["get"]);
    for (index, (case, service, parameter, expect)) in [
        (
            "IMDS 500 (every attempt), --mount-timeout=3s",
            Service::Imds,
            "useVMManagedIdentity",
            Expect::Fails(Code::Unavailable, "the Mount did not finish within 3s"),
        ),
        (
            "NMI 500 (every attempt)",
            Service::Nmi,
            "usePodIdentity",
            Expect::Fails(Code::Unavailable, "the token service is unavailable"),
        ),
        (
            "NMI 200 with malformed JSON",
            Service::Nmi,
            "usePodIdentity",
            Expect::Fails(Code::Unavailable, "the token service is unavailable"),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let fault = if case.contains("malformed") {
            Fault::ok_body(r#"{"token": {"access_token": 5"#, "application/json")
        } else {
            Fault::status(500)
        };
        env.fake.inject_service(service, fault);
        let params = env.params(
            &[&object("healthy")],
            &[
                (parameter, "true".to_owned()),
                ("csi.storage.k8s.io/pod.name", format!("pod-{index}")),
            ],
        );
        let outcome = env.mount(&params, NO_SECRET_REF).await;
        check(case, &outcome, expect);
        env.fake.clear_faults();
        let next = env.mount(&params, NO_SECRET_REF).await;
        assert!(next.is_ok(), "{case}: the next good mount failed: {next:?}");
    }
    assert!(env.serving().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_connection_failures() {
    let env = Env::start(&[]).await;
    env.secret("healthy", "healthy-value-0003");
    env.fake.add_managed_identity(None);
    env.fake.grant("kv1", SYSTEM_ASSIGNED_CLIENT_ID, &["get"]);
    let mi = [("useVMManagedIdentity", "true".to_owned())];

    // Key Vault presents a certificate from an unknown CA (token over plain-HTTP IMDS).
    env.fake.set_untrusted_certificate(true);
    let params = env.params(&[&object("healthy")], &mi);
    let outcome = env.mount(&params, NO_SECRET_REF).await;
    check(
        "Key Vault certificate not signed by a trusted CA",
        &outcome,
        Expect::Fails(Code::Unavailable, "certificate"),
    );
    env.fake.set_untrusted_certificate(false);
    env.mount(&params, NO_SECRET_REF)
        .await
        .expect("next good mount");

    // The token authority presents it (no connection to it is pooled yet).
    env.fake.set_untrusted_certificate(true);
    let outcome = env.mount_sp(&[&object("healthy")]).await;
    check(
        "token endpoint certificate not signed by a trusted CA",
        &outcome,
        Expect::Fails(Code::Unavailable, "certificate"),
    );
    env.fake.set_untrusted_certificate(false);
    env.mount_sp(&[&object("healthy")])
        .await
        .expect("next good mount");

    // Nothing listens where the vault should be.
    let dead = support::provider::free_port();
    let cloud = env.fake.cloud_env_json().replace(
        &format!("vault.test:{}", env.fake.port()),
        &format!("vault.test:{dead}"),
    );
    let dead_file = env.fake.temp_dir().join("dead-vault.json");
    std::fs::write(&dead_file, cloud).unwrap();
    let mut params = env.params(&[&object("healthy")], &mi);
    params.retain(|(k, _)| *k != "cloudEnvFileName");
    params.push(("cloudEnvFileName", dead_file.display().to_string()));
    let outcome = env.mount(&params, NO_SECRET_REF).await;
    check(
        "Key Vault connection refused",
        &outcome,
        Expect::Fails(Code::Unavailable, "is unavailable"),
    );
    env.mount(&env.params(&[&object("healthy")], &mi), NO_SECRET_REF)
        .await
        .expect("next good mount");
    assert!(env.serving().await);
    let _ = (SP_ID, sp_secrets());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_answers_past_the_deadline() {
    let env = Env::start(&["--mount-timeout=1s"]).await;
    env.secret("healthy", "healthy-value-0004");
    env.secret("slow", "slow-value-00001");
    env.fake
        .inject("kv1", "slow", Fault::slow(Duration::from_secs(3)).times(1));
    let outcome = env.mount_sp(&[&object("healthy"), &object("slow")]).await;
    check(
        "Key Vault answers after 3 s, --mount-timeout=1s",
        &outcome,
        Expect::Fails(Code::Unavailable, "the Mount did not finish within 1s"),
    );
    // Still serving while the slow answer is pending, and the next mount works.
    assert!(env.serving().await);
    env.mount_sp(&[&object("healthy"), &object("slow")])
        .await
        .expect("next good mount");
    env.fake.inject_service(
        Service::Authority,
        Fault::slow(Duration::from_secs(3)).times(1),
    );
    env.fake
        .add_service_principal(TENANT, "sp-slow-token", "slow-token-secret-1");
    env.fake.grant("kv1", "sp-slow-token", &["get"]);
    let params = env.params(&[&object("healthy")], &[]);
    let secrets = sp_secrets_for("sp-slow-token", "slow-token-secret-1");
    let outcome = env.mount(&params, &secrets).await;
    check(
        "token endpoint answers after 3 s, --mount-timeout=1s",
        &outcome,
        Expect::Fails(Code::Unavailable, "the Mount did not finish within 1s"),
    );
    env.mount(&params, &secrets).await.expect("next good mount");
}

//! Mount through the real binary against the fake Azure services (TLS, challenge auth, Entra, IMDS, NMI).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use akv_csi_provider::v1alpha1::{MountResponse, VersionRequest};
use base64::Engine;
use std::time::Duration;
use support::{
    env::{CheckedEnv, SP_ID, TENANT, sp_secrets, versions},
    fake_azure::Fault,
    provider::{NO_SECRET_REF, mount_request, objects_yaml, tokens_attribute},
};
use tonic::Code;

const WI_ID: &str = "66666666-7777-8888-9999-000000000000";
const SA_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.service-account-token-must-never-leak.sig";

/// The shared test environment; the service-account token is sensitive too.
async fn env_with(flags: &[&str], vars: &[(&str, &str)]) -> CheckedEnv {
    let mut env = CheckedEnv::start_with_env(flags, vars).await;
    env.sensitive.push(SA_TOKEN.to_owned());
    env
}

fn files(r: &MountResponse) -> Vec<(String, i32, Vec<u8>)> {
    r.files
        .iter()
        .map(|f| (f.path.clone(), f.mode, f.contents.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_principal_reads_secrets_with_encodings_alias_and_modes() {
    let mut env = env_with(&[], &[]).await;
    let plain = env.secret("db-pass", "pa55-w0rd!");
    let b64 = env.secret(
        "tls-blob",
        &base64::engine::general_purpose::STANDARD.encode([0u8, 1, 2, 255]),
    );
    let hex = env.secret("hex-key", "deadBEEF");
    let resp = env
        .mount_sp(&[
            "objectName: db-pass\nobjectType: secret",
            "objectName: tls-blob\nobjectType: secret\nobjectEncoding: base64\nobjectAlias: certs/blob.bin\nfilePermission: \"0600\"",
            "objectName: hex-key\nobjectType: secret\nobjectEncoding: HEX\nfilePermission: '0440'",
        ])
        .await
        .expect("mount");
    assert_eq!(
        files(&resp),
        vec![
            ("db-pass".to_owned(), 0o644, b"pa55-w0rd!".to_vec()),
            ("certs/blob.bin".to_owned(), 0o600, vec![0, 1, 2, 255]),
            ("hex-key".to_owned(), 0o440, vec![0xde, 0xad, 0xbe, 0xef]),
        ]
    );
    assert_eq!(
        versions(&resp),
        vec![
            ("secret/db-pass".to_owned(), plain),
            ("secret/tls-blob".to_owned(), b64),
            ("secret/hex-key".to_owned(), hex),
        ]
    );
    // The SDK authenticated through the challenge and used the SP's token for every read.
    let reads = env.fake.count(|r| r.is_vault("kv1") && r.status == 200);
    assert_eq!(reads, 3);
    assert!(
        env.fake
            .requests()
            .iter()
            .filter(|r| r.is_vault("kv1") && r.status == 200)
            .all(|r| r.principal.as_deref() == Some(SP_ID))
    );
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_version_and_rotation_to_a_new_latest() {
    let mut env = env_with(&[], &[]).await;
    let v1 = env.secret("app", "value-one");
    let v2 = env.secret("app", "value-two");
    let pinned = env
        .mount_sp(&[&format!(
            "objectName: app\nobjectType: secret\nobjectVersion: {v1}"
        )])
        .await
        .expect("mount");
    assert_eq!(files(&pinned)[0].2, b"value-one");
    assert_eq!(versions(&pinned), vec![("secret/app".to_owned(), v1)]);

    let latest = env
        .mount_sp(&["objectName: app\nobjectType: secret"])
        .await
        .expect("mount");
    assert_eq!(versions(&latest), vec![("secret/app".to_owned(), v2)]);
    // Rotation: a new version in the vault shows up on the next Mount.
    let v3 = env.secret("app", "value-three");
    let rotated = env
        .mount_sp(&["objectName: app\nobjectType: secret"])
        .await
        .expect("mount");
    assert_eq!(files(&rotated)[0].2, b"value-three");
    assert_eq!(versions(&rotated), vec![("secret/app".to_owned(), v3)]);
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_history_returns_exactly_the_n_newest_enabled_versions() {
    let mut env = env_with(&[], &[]).await;
    env.fake.set_page_size(2);
    let v: Vec<String> = (0..6)
        .map(|i| env.secret("hist", &format!("value-{i}")))
        .collect();
    env.fake.disable_version("kv1", "hist", &v[4]);
    let resp = env
        .mount_sp(&[
            "objectName: hist\nobjectType: secret\nobjectVersionHistory: 3\nobjectAlias: h",
        ])
        .await
        .expect("mount");
    let got: Vec<(String, Vec<u8>)> = resp
        .files
        .iter()
        .map(|f| (f.path.clone(), f.contents.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("h/0".to_owned(), b"value-5".to_vec()),
            ("h/1".to_owned(), b"value-3".to_vec()),
            ("h/2".to_owned(), b"value-2".to_vec()),
        ]
    );
    assert_eq!(
        versions(&resp),
        vec![
            ("secret/hist/0".to_owned(), v[5].clone()),
            ("secret/hist/1".to_owned(), v[3].clone()),
            ("secret/hist/2".to_owned(), v[2].clone()),
        ]
    );
    // Fewer versions than asked: all of them, no padding.
    let few = env.secret("few", "only");
    let resp = env
        .mount_sp(&["objectName: few\nobjectType: secret\nobjectVersionHistory: 4"])
        .await
        .expect("mount");
    assert_eq!(versions(&resp), vec![("secret/few/0".to_owned(), few)]);

    // Pinned with objectVersion: the history starts there (the Go provider's `<alias>/0` = the
    // pinned version, then older enabled ones), still exactly N.
    let pinned = |version: &str, n: u32| {
        format!(
            "objectName: hist\nobjectType: secret\nobjectVersionHistory: {n}\nobjectVersion: {version}\nobjectAlias: h"
        )
    };
    let resp = env
        .mount_sp(&[&pinned(&v[3], 3)])
        .await
        .expect("pinned history");
    assert_eq!(
        versions(&resp),
        vec![
            ("secret/hist/0".to_owned(), v[3].clone()),
            ("secret/hist/1".to_owned(), v[2].clone()),
            ("secret/hist/2".to_owned(), v[1].clone()),
        ]
    );
    assert_eq!(resp.files[0].contents, b"value-3");
    // Near the oldest: what there is.
    let resp = env.mount_sp(&[&pinned(&v[1], 3)]).await.expect("oldest");
    assert_eq!(
        versions(&resp),
        vec![
            ("secret/hist/0".to_owned(), v[1].clone()),
            ("secret/hist/1".to_owned(), v[0].clone()),
        ]
    );
    // A disabled or unknown start fails with Key Vault's own answer (the Go provider wrote no
    // file and reported success).
    let err = env
        .mount_sp(&[&pinned(&v[4], 2)])
        .await
        .expect_err("disabled start");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("disabled"), "{}", err.message());
    let err = env
        .mount_sp(&[&pinned("0123456789abcdef0123456789abcdef", 2)])
        .await
        .expect_err("unknown start");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_exchanges_the_service_account_token() {
    let mut env = env_with(&[], &[]).await;
    env.fake.add_federated_identity(TENANT, WI_ID, SA_TOKEN);
    env.fake.grant("kv1", WI_ID, &["get"]);
    let version = env.secret("wi-secret", "from-workload-identity");
    let tokens = tokens_attribute("api://AzureADTokenExchange", SA_TOKEN);
    let params = env.params(
        &["objectName: wi-secret\nobjectType: secret"],
        &[
            ("clientID", WI_ID.to_owned()),
            ("csi.storage.k8s.io/serviceAccount.tokens", tokens),
        ],
    );
    let resp = env.mount(&params, NO_SECRET_REF).await.expect("mount");
    assert_eq!(files(&resp)[0].2, b"from-workload-identity");
    assert_eq!(
        versions(&resp),
        vec![("secret/wi-secret".to_owned(), version)]
    );
    let vault_principals: Vec<Option<String>> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.is_vault("kv1") && r.status == 200)
        .map(|r| r.principal)
        .collect();
    assert_eq!(vault_principals, vec![Some(WI_ID.to_owned())]);

    // A forged token is refused by the token service: PermissionDenied, no files.
    let forged = "eyJhbGciOiJSUzI1NiJ9.forged-token.sig";
    env.sensitive.push(forged.to_owned());
    let params = env.params(
        &["objectName: wi-secret\nobjectType: secret"],
        &[
            ("clientID", WI_ID.to_owned()),
            (
                "csi.storage.k8s.io/serviceAccount.tokens",
                tokens_attribute("api://AzureADTokenExchange", forged),
            ),
        ],
    );
    let err = env
        .mount(&params, NO_SECRET_REF)
        .await
        .expect_err("forged token must fail");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("AADSTS700213"), "{}", err.message());
    assert!(
        err.message().contains(WI_ID),
        "names the identity: {}",
        err.message()
    );
    env.assert_no_leaks();
}

/// (case, extra parameters, secrets, principal that must read the vault)
type TokenInSecretsCase<'a> = (&'a str, Vec<(&'static str, String)>, &'a String, &'a str);

/// Kubernetes 1.35 with the CSIDriver's `serviceAccountTokenInSecrets: true`: kubelet puts the
/// tokens entry into `NodePublishVolumeRequest.secrets` (beside a nodePublishSecretRef's data, if
/// any); the driver v1.6.0 copies it into `attributes` and passes its `secrets` on as they are
/// (`getServiceAccountTokens` and `json.Marshal(secrets)` in `pkg/secrets-store/nodeserver.go`).
/// Every mode mounts, the entry is never taken for a node-publish credential, and the token
/// never shows in the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_token_in_secrets_for_every_mode() {
    let mut env = env_with(&[], &[]).await;
    env.fake.add_federated_identity(TENANT, WI_ID, SA_TOKEN);
    let system = env.fake.add_managed_identity(None);
    env.fake
        .add_pod_identity("shop", "web-0", "pod-identity-client");
    for principal in [WI_ID, SP_ID, system.as_str(), "pod-identity-client"] {
        env.fake.grant("kv1", principal, &["get"]);
    }
    env.secret("s", "value");
    let tokens = tokens_attribute("api://AzureADTokenExchange", SA_TOKEN);
    let tokens_only =
        serde_json::json!({ "csi.storage.k8s.io/serviceAccount.tokens": tokens.clone() })
            .to_string();
    let sp_with_tokens = serde_json::json!({
        "clientid": SP_ID,
        "clientsecret": support::env::SP_SECRET,
        "csi.storage.k8s.io/serviceAccount.tokens": tokens.clone(),
    })
    .to_string();
    let in_attributes = ("csi.storage.k8s.io/serviceAccount.tokens", tokens.clone());
    let cases: Vec<TokenInSecretsCase> = vec![
        (
            "workload identity (driver v1.6: token in both)",
            vec![("clientID", WI_ID.to_owned()), in_attributes.clone()],
            &tokens_only,
            WI_ID,
        ),
        (
            "workload identity (token only in secrets)",
            vec![("clientID", WI_ID.to_owned())],
            &tokens_only,
            WI_ID,
        ),
        (
            "service principal (nodePublishSecretRef + token)",
            vec![in_attributes.clone()],
            &sp_with_tokens,
            SP_ID,
        ),
        (
            "VM managed identity",
            vec![
                ("useVMManagedIdentity", "true".to_owned()),
                in_attributes.clone(),
            ],
            &tokens_only,
            system.as_str(),
        ),
        (
            "pod identity",
            vec![("usePodIdentity", "true".to_owned()), in_attributes.clone()],
            &tokens_only,
            "pod-identity-client",
        ),
    ];
    for (case, extra, secrets, principal) in cases {
        env.fake.clear_requests();
        let params = env.params(&["objectName: s\nobjectType: secret"], &extra);
        let resp = env
            .mount(&params, secrets)
            .await
            .unwrap_or_else(|e| panic!("{case}: {e:?}"));
        assert_eq!(files(&resp)[0].2, b"value", "{case}");
        let used: Vec<Option<String>> = env
            .fake
            .requests()
            .into_iter()
            .filter(|r| r.is_vault("kv1") && r.status == 200)
            .map(|r| r.principal)
            .collect();
        assert_eq!(used, vec![Some(principal.to_owned())], "{case}");
    }
    // The tokens entry alone is no service principal: the message says what is missing.
    let params = env.params(&["objectName: s\nobjectType: secret"], &[in_attributes]);
    let err = env
        .mount(&params, &tokens_only)
        .await
        .expect_err("no identity");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("the volume has no nodePublishSecretRef"),
        "{}",
        err.message()
    );
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_audience_is_a_failed_precondition() {
    let env = env_with(&[], &[]).await;
    let params = env.params(
        &["objectName: s\nobjectType: secret"],
        &[
            ("clientID", WI_ID.to_owned()),
            (
                "csi.storage.k8s.io/serviceAccount.tokens",
                tokens_attribute("some-other-audience", SA_TOKEN),
            ),
        ],
    );
    let err = env
        .mount(&params, NO_SECRET_REF)
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("tokenRequests"), "{}", err.message());
    assert!(err.message().contains("api://AzureADTokenExchange"));
    assert_eq!(env.fake.requests().len(), 0, "nothing was sent anywhere");
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identities_and_pod_identity() {
    let mut env = env_with(&[], &[]).await;
    let system = env.fake.add_managed_identity(None);
    let user_assigned = env.fake.add_managed_identity(Some("uami-client-id"));
    env.fake
        .add_pod_identity("shop", "web-0", "pod-identity-client");
    for principal in [
        system.as_str(),
        user_assigned.as_str(),
        "pod-identity-client",
    ] {
        env.fake.grant("kv1", principal, &["get"]);
    }
    env.secret("mi", "managed-value");
    let cases: Vec<(Vec<(&'static str, String)>, String)> = vec![
        (vec![("useVMManagedIdentity", "true".to_owned())], system),
        (
            vec![
                ("useVMManagedIdentity", "TRUE".to_owned()),
                ("userAssignedIdentityID", "uami-client-id".to_owned()),
            ],
            user_assigned,
        ),
        (
            vec![("usePodIdentity", "1".to_owned())],
            "pod-identity-client".to_owned(),
        ),
    ];
    for (identity, principal) in cases {
        env.fake.clear_requests();
        let params = env.params(&["objectName: mi\nobjectType: secret"], &identity);
        let resp = env
            .mount(&params, NO_SECRET_REF)
            .await
            .unwrap_or_else(|e| panic!("{identity:?}: {e:?}"));
        assert_eq!(files(&resp)[0].2, b"managed-value");
        let used: Vec<Option<String>> = env
            .fake
            .requests()
            .into_iter()
            .filter(|r| r.is_vault("kv1") && r.status == 200)
            .map(|r| r.principal)
            .collect();
        assert_eq!(used, vec![Some(principal)], "{identity:?}");
    }
    // A user-assigned identity the VM does not have.
    let params = env.params(
        &["objectName: mi\nobjectType: secret"],
        &[
            ("useVMManagedIdentity", "true".to_owned()),
            ("userAssignedIdentityID", "not-assigned".to_owned()),
        ],
    );
    let err = env
        .mount(&params, NO_SECRET_REF)
        .await
        .expect_err("unknown identity");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    // A pod without an identity binding: NMI refuses.
    let params = env.params(
        &["objectName: mi\nobjectType: secret"],
        &[
            ("usePodIdentity", "true".to_owned()),
            ("csi.storage.k8s.io/pod.name", "unbound-pod".to_owned()),
        ],
    );
    let err = env
        .mount(&params, NO_SECRET_REF)
        .await
        .expect_err("unbound pod");
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "{err:?} {:?}",
        env.fake.requests().iter().rev().take(3).collect::<Vec<_>>()
    );
    assert!(
        err.message().contains("shop/unbound-pod"),
        "{}",
        err.message()
    );
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_vault_errors_map_to_fitting_codes() {
    let mut env = env_with(&[], &[]).await;
    env.secret("present", "here");
    let disabled = env.secret("off", "disabled-value");
    env.fake.disable_version("kv1", "off", &disabled);

    let err = env
        .mount_sp(&["objectName: missing\nobjectType: secret"])
        .await
        .expect_err("404");
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message().contains("secret/missing") && err.message().contains("kv1"),
        "{}",
        err.message()
    );

    let err = env
        .mount_sp(&["objectName: off\nobjectType: secret"])
        .await
        .expect_err("disabled");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    // One failing object fails the whole mount: no partial reply.
    let err = env
        .mount_sp(&[
            "objectName: present\nobjectType: secret",
            "objectName: missing\nobjectType: secret",
        ])
        .await
        .expect_err("partial");
    assert_eq!(err.code(), Code::NotFound);

    env.fake.revoke("kv1", SP_ID);
    env.fake.grant("kv1", SP_ID, &["get"]);
    let err = env
        .mount_sp(&["objectName: present\nobjectType: secret\nobjectVersionHistory: 2"])
        .await
        .expect_err("list");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("secrets list permission"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains(SP_ID),
        "names the identity: {}",
        err.message()
    );

    env.fake.revoke("kv1", SP_ID);
    let err = env
        .mount_sp(&["objectName: present\nobjectType: secret"])
        .await
        .expect_err("403");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("secrets get permission"),
        "{}",
        err.message()
    );
    env.fake.grant("kv1", SP_ID, &["get", "list"]);

    let bad_secret =
        serde_json::json!({ "clientid": SP_ID, "clientsecret": "wrong-secret-value" }).to_string();
    env.sensitive.push("wrong-secret-value".to_owned());
    let err = env
        .mount(
            &env.params(&["objectName: present\nobjectType: secret"], &[]),
            &bad_secret,
        )
        .await
        .expect_err("401");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("AADSTS7000215"), "{}", err.message());

    env.fake.inject("kv1", "present", Fault::throttled(1));
    let err = env
        .mount_sp(&["objectName: present\nobjectType: secret"])
        .await
        .expect_err("429");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("429"), "{}", err.message());
    env.fake.clear_faults();

    env.fake.inject("kv1", "present", Fault::status(503));
    let err = env
        .mount_sp(&["objectName: present\nobjectType: secret"])
        .await
        .expect_err("503");
    assert_eq!(err.code(), Code::Unavailable);
    env.fake.clear_faults();

    // A transient 503 is retried and the mount succeeds.
    env.fake
        .inject("kv1", "present", Fault::status(503).times(1));
    let ok = env
        .mount_sp(&["objectName: present\nobjectType: secret"])
        .await
        .expect("retried");
    assert_eq!(files(&ok)[0].2, b"here");

    // The process keeps serving after all of this.
    let mut client = env.provider.client().await;
    assert!(
        client
            .version(VersionRequest {
                version: "v1alpha1".into()
            })
            .await
            .is_ok()
    );
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_invalid_argument() {
    let env = env_with(&[], &[]).await;
    let cases: Vec<(Vec<(&'static str, String)>, &str)> = vec![
        (vec![("keyvaultName", "k".to_owned())], "keyvaultName"),
        (
            vec![("objects", "array: [".to_owned())],
            "parameter objects",
        ),
        (
            vec![(
                "objects",
                objects_yaml(&["objectName: s\nobjectType: Secret"]),
            )],
            "objectType \"Secret\"",
        ),
        (
            vec![(
                "objects",
                objects_yaml(&["objectName: s\nobjectType: secret\nobjectAlias: ../../etc/passwd"]),
            )],
            "objectAlias",
        ),
        (
            vec![(
                "objects",
                objects_yaml(&["objectName: s\nobjectType: secret\nfilePermission: 0999"]),
            )],
            "filePermission",
        ),
        (
            vec![("useVMManagedIdentity", "maybe".to_owned())],
            "useVMManagedIdentity",
        ),
        (
            vec![("cloudName", "AzureGermanCloud".to_owned())],
            "cloudName",
        ),
    ];
    for (overrides, needle) in cases {
        let mut params = env.params(&["objectName: s\nobjectType: secret"], &[]);
        for (k, v) in overrides {
            params.retain(|(key, _)| *key != k);
            params.push((k, v));
        }
        let err = env.mount(&params, &sp_secrets()).await.expect_err(needle);
        assert_eq!(err.code(), Code::InvalidArgument, "{needle}: {err:?}");
        assert!(
            err.message().contains(needle),
            "{needle}: {}",
            err.message()
        );
    }
    // No identity at all.
    let err = env
        .mount(
            &env.params(&["objectName: s\nobjectType: secret"], &[]),
            NO_SECRET_REF,
        )
        .await
        .expect_err("no identity");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("nodePublishSecretRef"));
    // Malformed request fields.
    let mut client = env.provider.client().await;
    let mut req = mount_request(
        &env.params(&["objectName: s\nobjectType: secret"], &[]),
        &sp_secrets(),
    );
    req.permission = "0644".into();
    let err = client.mount(req).await.expect_err("permission");
    assert_eq!(err.code(), Code::InvalidArgument);
    let mut req = mount_request(
        &env.params(&["objectName: s\nobjectType: secret"], &[]),
        &sp_secrets(),
    );
    req.attributes = "{not json".into();
    let err = client.mount(req).await.expect_err("attributes");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        env.fake.requests().len(),
        0,
        "invalid requests never reach Azure"
    );
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_mount_finish() {
    let mut env = env_with(&[], &[]).await;
    env.secret("slow", "slow-value");
    env.fake
        .inject("kv1", "slow", Fault::slow(Duration::from_millis(1500)));
    let params = env.params(&["objectName: slow\nobjectType: secret"], &[]);
    let mut client = env.provider.client().await;
    let call =
        tokio::spawn(async move { client.mount(mount_request(&params, &sp_secrets())).await });
    // SIGTERM once the Mount is in the provider (a fixed wait raced with a loaded machine).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while env.provider.mounts_in_flight().await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the Mount never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    env.provider.signal(nix::sys::signal::Signal::SIGTERM);
    let resp = call
        .await
        .expect("join")
        .expect("in-flight mount completes")
        .into_inner();
    assert_eq!(resp.files[0].contents, b"slow-value");
    let status = env.base.provider.wait_exit();
    assert_eq!(status.code(), Some(0));
    assert!(!env.provider.socket.exists());
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_slower_than_the_timeout_is_unavailable_and_the_next_one_works() {
    let mut env = env_with(&["--mount-timeout=1s"], &[]).await;
    env.secret("slow", "eventually");
    env.fake
        .inject("kv1", "slow", Fault::slow(Duration::from_secs(3)).times(1));
    let err = env
        .mount_sp(&["objectName: slow\nobjectType: secret"])
        .await
        .expect_err("timeout");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("did not finish within 1s"),
        "{}",
        err.message()
    );
    let ok = env
        .mount_sp(&["objectName: slow\nobjectType: secret"])
        .await
        .expect("next mount");
    assert_eq!(files(&ok)[0].2, b"eventually");
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_reaches_the_logs_even_with_every_library_at_trace() {
    let mut env = env_with(&["--log-format-json"], &[("RUST_LOG", "trace")]).await;
    env.fake.add_federated_identity(TENANT, WI_ID, SA_TOKEN);
    env.fake.grant("kv1", WI_ID, &["get", "list"]);
    env.secret("one", "first-secret-value-xyz");
    env.secret("one", "second-secret-value-xyz");
    let tokens = tokens_attribute("api://AzureADTokenExchange", SA_TOKEN);
    let params = env.params(
        &["objectName: one\nobjectType: secret\nobjectVersionHistory: 2"],
        &[
            ("clientID", WI_ID.to_owned()),
            ("csi.storage.k8s.io/serviceAccount.tokens", tokens),
        ],
    );
    env.mount(&params, NO_SECRET_REF)
        .await
        .expect("workload identity mount");
    env.mount_sp(&["objectName: one\nobjectType: secret"])
        .await
        .expect("service principal mount");
    env.fake.inject("kv1", "one", Fault::status(500).times(1));
    env.mount_sp(&["objectName: one\nobjectType: secret"])
        .await
        .expect("retried mount");
    // Access tokens issued to the provider are secrets too.
    let issued = env.fake.issued_tokens();
    assert!(issued.len() >= 2, "tokens were issued: {issued:?}");
    env.sensitive.extend(issued);
    let logs = env.provider.logs();
    assert!(logs.lines().count() > 20, "trace logging is on");
    for line in logs.lines() {
        assert!(
            !line.to_ascii_lowercase().contains("authorization: bearer"),
            "{line}"
        );
        assert!(!line.contains("access_token"), "{line}");
        assert!(!line.contains("client_assertion="), "{line}");
    }
    env.assert_no_leaks();
}

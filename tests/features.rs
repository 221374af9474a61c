//! Opt-in SPC features through the real binary against the fake Azure services: optional objects,
//! JSON key extraction, several vaults in one SPC, and bulk mounts by name prefix or tags.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::too_many_lines
)]

mod support;

use akv_csi_provider::v1alpha1::MountResponse;
use std::collections::BTreeMap;
use support::{
    env::{CheckedEnv, SP_ID, TENANT, versions},
    fake_azure::SecretOpts,
    provider::http_get,
};
use tonic::Code;

impl CheckedEnv {
    async fn metrics(&self) -> String {
        http_get(self.provider.metrics_port, "/metrics").await.1
    }
}

fn files(r: &MountResponse) -> Vec<(String, String)> {
    r.files
        .iter()
        .map(|f| {
            (
                f.path.clone(),
                String::from_utf8_lossy(&f.contents).into_owned(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_objects_are_skipped_with_a_warning_and_a_metric() {
    let mut env = CheckedEnv::start(&[]).await;
    let present = env.secret_in("kv1", "present", "value-present-7");
    let off = env.secret_in("kv1", "switched-off", "disabled-value");
    env.fake.disable_version("kv1", "switched-off", &off);
    let resp = env
        .mount_sp(&[
            "objectName: missing\nobjectType: secret\noptional: true",
            "objectName: present\nobjectType: secret\noptional: true",
            "objectName: switched-off\nobjectType: secret\noptional: \"true\"",
            "objectName: missing-key\nobjectType: key\noptional: true",
            "objectName: missing-history\nobjectType: secret\nobjectVersionHistory: 3\noptional: true",
        ])
        .await
        .expect("optional objects do not fail the mount");
    assert_eq!(files(&resp), pairs(&[("present", "value-present-7")]));
    assert_eq!(
        versions(&resp),
        vec![("secret/present".to_owned(), present)]
    );
    let metrics = env.metrics().await;
    assert!(
        metrics.contains(r#"akv_optional_objects_skipped_total{reason="not_found"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"akv_optional_objects_skipped_total{reason="disabled"} 1"#),
        "{metrics}"
    );
    let logs = env.provider.logs();
    assert!(
        logs.contains("optional object skipped") && logs.contains("\"missing\""),
        "{logs}"
    );

    // Without optional, the same object fails the whole mount, as before.
    let err = env
        .mount_sp(&[
            "objectName: present\nobjectType: secret",
            "objectName: missing\nobjectType: secret",
        ])
        .await
        .expect_err("a missing object fails");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    // Optional does not hide a missing permission.
    env.fake.add_vault("locked", TENANT);
    env.fake
        .set_secret("locked", "s", "v", SecretOpts::default());
    let err = env
        .mount_sp(&["objectName: s\nobjectType: secret\noptional: true\nkeyvaultName: locked"])
        .await
        .expect_err("forbidden is not skipped");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_keys_become_separate_files_with_their_own_versions() {
    let mut env = CheckedEnv::start(&[]).await;
    let json = r#"{"username":"app-user","password":"pa55-json-w0rd","conn":{"host":"db.internal","port":5432},"replicas":["r1","r2"]}"#;
    let version = env.secret_in("kv1", "db-creds", json);
    let resp = env
        .mount_sp(&[
            "objectName: db-creds\nobjectType: secret\nfilePermission: '0600'\njsonKeys:\n  - username\n  - key: password\n    alias: db/password\n  - key: conn.port\n    alias: db/port\n  - key: replicas.1\n    alias: replica\n  - key: conn\n    alias: conn.json",
        ])
        .await
        .expect("mount");
    assert_eq!(
        files(&resp),
        pairs(&[
            ("username", "app-user"),
            ("db/password", "pa55-json-w0rd"),
            ("db/port", "5432"),
            ("replica", "r2"),
            ("conn.json", r#"{"host":"db.internal","port":5432}"#),
        ])
    );
    assert!(resp.files.iter().all(|f| f.mode == 0o600));
    assert_eq!(
        versions(&resp),
        vec![
            ("secret/db-creds#username".to_owned(), version.clone()),
            ("secret/db-creds#db/password".to_owned(), version.clone()),
            ("secret/db-creds#db/port".to_owned(), version.clone()),
            ("secret/db-creds#replica".to_owned(), version.clone()),
            ("secret/db-creds#conn.json".to_owned(), version.clone()),
        ]
    );
    // One read serves every key.
    assert_eq!(
        env.fake
            .count(|r| r.is_vault("kv1") && r.status == 200 && r.path.contains("db-creds")),
        1
    );

    let err = env
        .mount_sp(&["objectName: db-creds\nobjectType: secret\njsonKeys: [conn.user]"])
        .await
        .expect_err("missing key");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "jsonKeys of secret/db-creds: key \"conn.user\" is not in the secret's JSON value: \"conn\" has no key \"user\" (keys are case-sensitive)"
    );
    env.secret_in("kv1", "plain", "not-json-at-all");
    let err = env
        .mount_sp(&["objectName: plain\nobjectType: secret\njsonKeys: [a]"])
        .await
        .expect_err("not JSON");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with(
            "jsonKeys of secret/plain: the secret's value is not JSON (error at line 1 column "
        ),
        "{}",
        err.message()
    );
    assert!(!err.message().contains("not-json-at-all"));
    // A file conflict between a key file and another object is caught before any read.
    env.fake.clear_requests();
    let err = env
        .mount_sp(&[
            "objectName: db-creds\nobjectType: secret\njsonKeys: [username]",
            "objectName: plain\nobjectType: secret\nobjectAlias: username",
        ])
        .await
        .expect_err("conflict");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("both write \"username\""),
        "{}",
        err.message()
    );
    assert_eq!(env.fake.count(|r| r.is_vault("kv1")), 0);
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_may_come_from_several_vaults_with_one_identity() {
    let mut env = CheckedEnv::start(&[]).await;
    env.fake.add_vault("kv2", TENANT);
    env.fake.grant("kv2", SP_ID, &["get"]);
    let one = env.secret_in("kv1", "shared", "from-kv1");
    let two = env.secret_in("kv2", "shared", "from-kv2");
    let only = env.secret_in("kv2", "only-two", "second-vault");
    let resp = env
        .mount_sp(&[
            "objectName: shared\nobjectType: secret",
            "objectName: shared\nobjectType: secret\nkeyvaultName: kv2\nobjectAlias: shared-2",
            "objectName: only-two\nobjectType: secret\nkeyvaultName: KV2",
            "objectName: shared\nobjectType: secret\nkeyvaultName: kv1\nobjectAlias: same-vault",
        ])
        .await
        .expect("mount");
    assert_eq!(
        files(&resp),
        pairs(&[
            ("shared", "from-kv1"),
            ("shared-2", "from-kv2"),
            ("only-two", "second-vault"),
            ("same-vault", "from-kv1"),
        ])
    );
    assert_eq!(
        versions(&resp),
        vec![
            ("secret/shared".to_owned(), one.clone()),
            ("secret/shared@kv2".to_owned(), two),
            ("secret/only-two@KV2".to_owned(), only),
            ("secret/shared".to_owned(), one),
        ]
    );
    let principals: Vec<_> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.is_vault("kv2") && r.status == 200)
        .map(|r| r.principal)
        .collect();
    assert_eq!(principals, vec![Some(SP_ID.to_owned()); 2]);
    // A vault the identity may not read is named in the error.
    env.fake.add_vault("kv3", TENANT);
    env.fake.set_secret("kv3", "x", "y", SecretOpts::default());
    let err = env
        .mount_sp(&["objectName: x\nobjectType: secret\nkeyvaultName: kv3"])
        .await
        .expect_err("no grant on kv3");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("Key Vault kv3"), "{}", err.message());
    env.assert_no_leaks();
}

fn tagged(tags: &[(&str, &str)]) -> SecretOpts {
    SecretOpts {
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        ..SecretOpts::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_entries_mount_every_enabled_secret_by_prefix_or_tag() {
    let mut env = CheckedEnv::start(&[]).await;
    env.fake.set_page_size(2);
    let a = env.secret_with(
        "kv1",
        "app-alpha",
        "v-alpha-9f",
        tagged(&[("team", "payments")]),
    );
    let b = env.secret_with(
        "kv1",
        "APP-beta",
        "v-beta-9f",
        tagged(&[("Team", "payments")]),
    );
    let off = env.secret_in("kv1", "app-off", "v-off-9f");
    env.fake.disable_version("kv1", "app-off", &off);
    let other = env.secret_with(
        "kv1",
        "other",
        "v-other-9f",
        tagged(&[("team", "payments")]),
    );
    env.secret_with("kv1", "misc", "v-misc-9f", tagged(&[("team", "Payments")]));

    let resp = env
        .mount_sp(&[
            "objectNamePrefix: app-\nobjectType: secret\nobjectAlias: app\nfilePermission: '0640'",
        ])
        .await
        .expect("prefix mount");
    assert_eq!(
        files(&resp),
        pairs(&[
            ("app/app-alpha", "v-alpha-9f"),
            ("app/APP-beta", "v-beta-9f")
        ])
    );
    assert!(resp.files.iter().all(|f| f.mode == 0o640));
    assert_eq!(
        versions(&resp),
        vec![
            ("secret/app-alpha".to_owned(), a.clone()),
            ("secret/APP-beta".to_owned(), b.clone()),
        ]
    );
    // The listing was paged (page size 2) and needed the list permission.
    let listings = env
        .fake
        .count(|r| r.is_vault("kv1") && r.path == "/secrets" && r.status == 200);
    assert!(listings >= 3, "paged listing: {listings}");

    let resp = env
        .mount_sp(&[
            "objectTags:\n  team: payments\nobjectType: secret",
            "objectName: misc\nobjectType: secret\nobjectAlias: misc-file",
        ])
        .await
        .expect("tag mount");
    assert_eq!(
        files(&resp),
        pairs(&[
            ("app-alpha", "v-alpha-9f"),
            ("APP-beta", "v-beta-9f"),
            ("other", "v-other-9f"),
            ("misc-file", "v-misc-9f"),
        ])
    );
    assert_eq!(versions(&resp)[2], ("secret/other".to_owned(), other));

    // Prefix and tags together, and an explicit object writing a selected name: conflict.
    let err = env
        .mount_sp(&[
            "objectNamePrefix: app-\nobjectTags: {team: payments}\nobjectType: secret",
            "objectName: other\nobjectType: secret\nobjectAlias: app-alpha",
        ])
        .await
        .expect_err("conflict after listing");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "objects \"app-alpha\" (matched by objectNamePrefix \"app-\" and objectTags {team: \"payments\"}) and \"other\" both write \"app-alpha\": give one of them a different objectAlias"
    );

    // Nothing matches: NotFound, unless optional.
    let err = env
        .mount_sp(&["objectNamePrefix: nope-\nobjectType: secret"])
        .await
        .expect_err("no match");
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message()
            .starts_with("no enabled secret in Key Vault kv1 matches objectNamePrefix \"nope-\""),
        "{}",
        err.message()
    );
    let resp = env
        .mount_sp(&[
            "objectNamePrefix: nope-\nobjectType: secret\noptional: true",
            "objectName: other\nobjectType: secret",
        ])
        .await
        .expect("optional bulk entry");
    assert_eq!(files(&resp).len(), 1);
    assert!(
        env.metrics()
            .await
            .contains(r#"akv_optional_objects_skipped_total{reason="no_match"} 1"#)
    );
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_entries_have_a_hard_cap_and_need_the_list_permission() {
    // Every Mount lists the vault again: with the default --listing-window (5s) a revoked list
    // permission would apply once the shared listing expires.
    let env = CheckedEnv::start(&["--listing-window=0s"]).await;
    for i in 0..101 {
        env.fake
            .set_secret("kv1", &format!("many-{i:03}"), "v", SecretOpts::default());
    }
    let err = env
        .mount_sp(&["objectNamePrefix: many-\nobjectType: secret"])
        .await
        .expect_err("over the cap");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.message(),
        "101 enabled secrets in Key Vault kv1 match objectNamePrefix \"many-\"; one entry mounts at most 100: narrow objectNamePrefix or objectTags, or split the entry"
    );
    assert_eq!(
        env.fake
            .count(|r| r.is_vault("kv1") && r.path.starts_with("/secrets/many-")),
        0,
        "no value was read"
    );
    let resp = env
        .mount_sp(&["objectNamePrefix: many-05\nobjectType: secret"])
        .await
        .expect("ten match");
    assert_eq!(resp.files.len(), 10);

    env.fake.revoke("kv1", SP_ID);
    env.fake.grant("kv1", SP_ID, &["get"]);
    let err = env
        .mount_sp(&["objectNamePrefix: many-\nobjectType: secret"])
        .await
        .expect_err("no list permission");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message()
            .contains("the identity lacks the secrets list permission"),
        "{}",
        err.message()
    );
}

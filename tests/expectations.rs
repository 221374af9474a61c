//! The shared secret expectations (`tests/fixtures/expectations/secrets.json`), also read by the
//! Go end-to-end tests: one source of truth for what the provider returns for given inputs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::format_push_string
)]
#![allow(clippy::too_many_lines, clippy::format_collect)] // one end-to-end comparison

mod support;

use serde::Deserialize;
use std::collections::BTreeMap;
use support::{
    fake_azure::{FakeAzure, SecretOpts},
    provider::{Provider, mount_request},
};

const TENANT: &str = "tenant-expectations";
const SP_ID: &str = "sp-expectations";
const SP_SECRET: &str = "sp-expectations-secret";

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    name: String,
    versions: Vec<String>,
    pin: Option<usize>,
    object: BTreeMap<String, String>,
    files: Vec<ExpectedFile>,
    object_versions: BTreeMap<String, usize>,
}

#[derive(Deserialize)]
struct ExpectedFile {
    path: String,
    mode: String,
    utf8: Option<String>,
    hex: Option<String>,
}

impl ExpectedFile {
    fn bytes(&self) -> Vec<u8> {
        match (&self.utf8, &self.hex) {
            (Some(text), None) => text.as_bytes().to_vec(),
            (None, Some(hex)) => hex::decode(hex).expect("hex in fixture"),
            _ => panic!("file {} needs exactly one of utf8 / hex", self.path),
        }
    }
}

fn object_yaml(case: &Case, version: Option<&str>) -> String {
    let mut yaml = String::new();
    for (k, v) in &case.object {
        yaml.push_str(&format!(
            "{k}: {}\n",
            serde_json::to_string(v).expect("json string")
        ));
    }
    if let Some(v) = version {
        yaml.push_str(&format!("objectVersion: {v}\n"));
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_returns_exactly_the_shared_expectations() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/expectations/secrets.json"
    ))
    .expect("fixture");
    let fixture: Fixture = serde_json::from_str(&text).expect("fixture JSON");
    assert!(fixture.cases.len() >= 5);

    let fake = FakeAzure::start().await;
    fake.add_vault("kv1", TENANT);
    fake.add_service_principal(TENANT, SP_ID, SP_SECRET);
    fake.grant("kv1", SP_ID, &["get", "list"]);
    let cloud = fake.write_cloud_env_file().display().to_string();
    let provider = Provider::start(&[
        format!("--ca-file={}", fake.ca_file().display()),
        "--resolve=*.vault.test=127.0.0.1".to_owned(),
        "--resolve=login.test=127.0.0.1".to_owned(),
    ]);
    let secrets = serde_json::json!({"clientid": SP_ID, "clientsecret": SP_SECRET}).to_string();

    let mut all_objects = Vec::new();
    let mut all_files = Vec::new();
    let mut all_versions = Vec::new();
    for case in &fixture.cases {
        let name = &case.object["objectName"];
        let ids: Vec<String> = case
            .versions
            .iter()
            .map(|v| fake.set_secret("kv1", name, v, SecretOpts::default()))
            .collect();
        let yaml = object_yaml(case, case.pin.map(|i| ids[i].as_str()));
        let objects = format!(
            "array:\n  - |\n{}",
            yaml.lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        let params = vec![
            ("keyvaultName", "kv1".to_owned()),
            ("tenantID", TENANT.to_owned()),
            ("cloudName", "AzureStackCloud".to_owned()),
            ("cloudEnvFileName", cloud.clone()),
            ("objects", objects),
        ];
        let mut client = provider.client().await;
        let resp = client
            .mount(mount_request(&params, &secrets))
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", case.name))
            .into_inner();
        let got: Vec<(String, i32, Vec<u8>)> = resp
            .files
            .iter()
            .map(|f| (f.path.clone(), f.mode, f.contents.clone()))
            .collect();
        let want: Vec<(String, i32, Vec<u8>)> = case
            .files
            .iter()
            .map(|f| {
                (
                    f.path.clone(),
                    i32::from_str_radix(&f.mode, 8).expect("octal mode"),
                    f.bytes(),
                )
            })
            .collect();
        assert_eq!(got, want, "{}", case.name);
        let got_versions: BTreeMap<String, String> = resp
            .object_version
            .iter()
            .map(|v| (v.id.clone(), v.version.clone()))
            .collect();
        let want_versions: BTreeMap<String, String> = case
            .object_versions
            .iter()
            .map(|(id, i)| (id.clone(), ids[*i].clone()))
            .collect();
        assert_eq!(got_versions, want_versions, "{}", case.name);
        all_objects.push(yaml);
        all_files.extend(want);
        all_versions.extend(resp.object_version.iter().map(|v| v.id.clone()));
    }

    // All cases in one SecretProviderClass, in order.
    let objects = format!(
        "array:\n{}",
        all_objects
            .iter()
            .map(|y| format!(
                "  - |\n{}",
                y.lines().map(|l| format!("    {l}\n")).collect::<String>()
            ))
            .collect::<String>()
    );
    let params = vec![
        ("keyvaultName", "kv1".to_owned()),
        ("tenantID", TENANT.to_owned()),
        ("cloudName", "AzureStackCloud".to_owned()),
        ("cloudEnvFileName", cloud.clone()),
        ("objects", objects),
    ];
    let mut client = provider.client().await;
    let resp = client
        .mount(mount_request(&params, &secrets))
        .await
        .expect("all cases")
        .into_inner();
    let got: Vec<(String, i32, Vec<u8>)> = resp
        .files
        .iter()
        .map(|f| (f.path.clone(), f.mode, f.contents.clone()))
        .collect();
    assert_eq!(got, all_files);
    let ids: Vec<String> = resp.object_version.iter().map(|v| v.id.clone()).collect();
    assert_eq!(ids, all_versions);
}

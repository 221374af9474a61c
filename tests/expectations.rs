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
use support::env::{Env, sp_secrets};

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

    let env = Env::start(&[]).await;
    let secrets = sp_secrets();

    let mut all_objects = Vec::new();
    let mut all_files = Vec::new();
    let mut all_versions = Vec::new();
    for case in &fixture.cases {
        let name = &case.object["objectName"];
        let ids: Vec<String> = case.versions.iter().map(|v| env.secret(name, v)).collect();
        let yaml = object_yaml(case, case.pin.map(|i| ids[i].as_str()));
        let resp = env
            .mount(&env.params(&[&yaml], &[]), &secrets)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:?}", case.name));
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
    let all_objects: Vec<&str> = all_objects.iter().map(String::as_str).collect();
    let resp = env
        .mount(&env.params(&all_objects, &[]), &secrets)
        .await
        .expect("all cases");
    let got: Vec<(String, i32, Vec<u8>)> = resp
        .files
        .iter()
        .map(|f| (f.path.clone(), f.mode, f.contents.clone()))
        .collect();
    assert_eq!(got, all_files);
    let ids: Vec<String> = resp.object_version.iter().map(|v| v.id.clone()).collect();
    assert_eq!(ids, all_versions);
}

//! `akv-csi-provider validate`: the real binary on manifest fixtures, the example SPCs and the
//! SPC examples of the README.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn validate(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_akv-csi-provider"))
        .arg("validate")
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the binary");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write stdin");
    drop(input);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("wait");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[test]
fn a_valid_bundle_passes_with_notes_for_skipped_documents() {
    let (code, out, err) = validate(&["tests/fixtures/spc/valid.yaml"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out, "");
    assert!(
        err.contains("tests/fixtures/spc/valid.yaml:doc 1: note: skipped kind ConfigMap"),
        "{err}"
    );
    assert!(
        err.contains("doc 3: note: skipped SecretProviderClass \"vault-secrets\": provider vault is not azure"),
        "{err}"
    );
    assert!(
        err.ends_with(
            "1 SecretProviderClass(es) checked in 1 file(s), 2 document(s) skipped: 0 problem(s)\n"
        ),
        "{err}"
    );
}

#[test]
fn every_problem_is_printed_with_file_document_and_path() {
    let (code, out, _) = validate(
        &[
            "tests/fixtures/spc/invalid.yaml",
            "tests/fixtures/spc/valid.yaml",
            "tests/fixtures/spc/missing.yaml",
        ],
        None,
    );
    assert_eq!(code, 1);
    let f = "tests/fixtures/spc/invalid.yaml";
    let want = [
        format!(
            "{f}:doc 1: spec.parameters.usePodIdentity: is a boolean, but parameters are strings and Kubernetes rejects other types: quote the value (\"false\")"
        ),
        format!(
            "{f}:doc 1: spec.parameters.keyVaultName: is not a parameter of this provider (it would be ignored): did you mean keyvaultName? Names are case-sensitive"
        ),
        format!(
            "{f}:doc 1: spec.parameters.keyvaultName: is required: set it to the name of the Key Vault (not its URL)"
        ),
        format!(
            "{f}:doc 1: spec.parameters.objects.array[0]: object \"db-creds\": jsonKeys cannot be combined with objectAlias (name each file with jsonKeys[i].alias): it reads a JSON-valued secret and writes one file per key"
        ),
        format!(
            "{f}:doc 1: spec.parameters.objects.array[1]: object \"tls\": objectType \"Cert\" is not one of secret, key, cert (names are case-sensitive)"
        ),
        format!(
            "{f}:doc 1: spec.parameters.objects.array[2]: object <unnamed>: objectNamePrefix \"app_\" is not the start of a Key Vault object name: up to 127 characters of letters, digits and '-'"
        ),
        format!(
            "{f}:doc 1: spec.parameters.objects.array[3]: object \"api-key\": keyvaultName \"x\" is not a vault name: 3 to 24 characters of letters, digits and '-'"
        ),
        format!(
            "{f}:doc 2: spec.parameters.objects: objects \"db-creds\" and \"password\" both write \"password\": give one of them a different objectAlias"
        ),
        "tests/fixtures/spc/missing.yaml: cannot be read: No such file or directory (os error 2)"
            .to_owned(),
    ];
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got, want);
}

#[test]
fn stdin_and_usage_errors() {
    let (code, out, _) = validate(
        &["-"],
        Some(
            "kind: SecretProviderClass\napiVersion: secrets-store.csi.x-k8s.io/v1\nmetadata: {name: x}\nspec:\n  provider: azure\n  parameters:\n    keyvaultName: kv1\n    tenantID: t\n",
        ),
    );
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "-:doc 1: spec.parameters.objects: is required: list the objects to mount as YAML: array: [\"objectName: x\\nobjectType: secret\"]\n"
    );
    let (code, _, err) = validate(&[], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("FILE"), "{err}");
}

#[test]
fn the_shipped_example_spcs_are_valid() {
    let (code, out, err) = validate(&["deploy/examples"], None);
    assert_eq!(code, 0, "{out}{err}");
    let examples = std::fs::read_dir(repo().join("deploy/examples"))
        .expect("examples")
        .count();
    assert!(err.contains(&format!("in {examples} file(s)")), "{err}");
}

#[test]
fn the_readme_spc_examples_are_valid() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_start()) {
            (None, "```yaml") => current = Some(String::new()),
            (Some(block), "```") => {
                if block.contains("kind: SecretProviderClass") {
                    blocks.push(block.clone());
                }
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(
        blocks.len() >= 5,
        "README has SPC examples: {}",
        blocks.len()
    );
    // Placeholders such as "<tenant id>" stand for GUIDs.
    let mut all = blocks.join("---\n");
    while let Some(start) = all.find("\"<") {
        let end = all[start..].find(">\"").expect("closed placeholder") + start + 2;
        all.replace_range(start..end, "\"00000000-0000-0000-0000-00000000000a\"");
    }
    let (code, out, err) = validate(&["-"], Some(&all));
    assert_eq!(code, 0, "{out}{err}\n{all}");
    assert!(
        err.contains(&format!("{} SecretProviderClass(es) checked", blocks.len())),
        "{err}"
    );
}

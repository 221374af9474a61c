//! `akv-csi-provider validate FILE...`: offline checks of SecretProviderClass manifests with the
//! provider's own parsing rules, for CI and GitOps pipelines.
//!
//! Every document of every file is read; documents that are not a SecretProviderClass, or are one
//! for another provider, are skipped with a note on stderr. Each problem is printed on stdout as
//! `FILE:doc N: PATH: MESSAGE` (documents numbered from 1, empty documents not counted). The exit
//! code is 1 when there is any problem (or a file cannot be read or is not YAML), 0 otherwise,
//! 2 for a usage error.

use crate::{
    auth::AuthError,
    cloud::{CloudError, CloudName},
    spc::{
        SecretProviderClass,
        manifest::{self, Document, Problem, SpcManifest},
    },
};
use clap::Parser;
use std::{
    ffi::OsString,
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

/// Parameters this provider reads (case-sensitive), for "did you mean" hints.
const KNOWN_PARAMETERS: [&str; 11] = [
    "keyvaultName",
    "tenantID",
    "tenantId",
    "cloudName",
    "cloudEnvFileName",
    "clientID",
    "usePodIdentity",
    "useVMManagedIdentity",
    "useAzureTokenProxy",
    "userAssignedIdentityID",
    "objects",
];

/// Flags of `akv-csi-provider validate`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "akv-csi-provider validate",
    about = "Check SecretProviderClass manifests offline with the provider's own rules; exit 1 on any problem",
    disable_version_flag = true
)]
pub struct ValidateArgs {
    /// Manifest files (YAML, several documents allowed); a folder means its `*.yaml` and `*.yml`
    /// files, recursively; `-` reads stdin.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Totals of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Files read.
    pub files: usize,
    /// Azure SecretProviderClasses checked.
    pub checked: usize,
    /// Documents skipped (other kinds or providers).
    pub skipped: usize,
    /// Problems printed.
    pub problems: usize,
}

/// Every problem of one Azure SecretProviderClass: structure, parameters, objects, references.
pub fn check(spc: &SpcManifest) -> Vec<Problem> {
    let mut problems = spc.problems.clone();
    let params = &spc.parameters;
    let mut keys: Vec<&String> = params.keys().collect();
    keys.sort();
    for key in keys {
        if KNOWN_PARAMETERS.contains(&key.as_str()) {
            continue;
        }
        if let Some(known) = KNOWN_PARAMETERS
            .iter()
            .find(|k| k.eq_ignore_ascii_case(key))
        {
            problems.push(Problem {
                path: format!("spec.parameters.{key}"),
                message: format!(
                    "is not a parameter of this provider (it would be ignored): did you mean {known}? Names are case-sensitive"
                ),
            });
        }
    }
    let errors = SecretProviderClass::problems(params);
    problems.extend(errors.iter().map(|e| Problem {
        path: format!("spec.parameters.{}", e.location()),
        message: e.detail(),
    }));
    let value = |key: &str| params.get(key).map_or("", |v| v.trim());
    if CloudName::parse(value("cloudName")).ok() == Some(CloudName::Stack)
        && value("cloudEnvFileName").is_empty()
    {
        problems.push(Problem {
            path: "spec.parameters.cloudEnvFileName".into(),
            message: CloudError::MissingEnvFile.to_string(),
        });
    }
    if crate::compat::parse_go_bool(value("useAzureTokenProxy")) == Ok(true)
        && value("clientID").is_empty()
    {
        problems.push(Problem {
            path: "spec.parameters.clientID".into(),
            message: AuthError::MissingClientId.to_string(),
        });
    }
    if errors.is_empty()
        && let Ok(parsed) = SecretProviderClass::from_attributes(params)
        && parsed.objects.iter().all(|o| o.selector.is_none())
    {
        let files: Vec<String> = parsed
            .objects
            .iter()
            .flat_map(crate::spc::KeyVaultObject::planned_files)
            .collect();
        for (path, name) in &spc.secret_object_files {
            let known = files.iter().any(|f| {
                f == name
                    || [".crt", ".key"]
                        .iter()
                        .any(|suffix| format!("{f}{suffix}") == *name)
            });
            if !known {
                problems.push(Problem {
                    path: path.clone(),
                    message: format!(
                        "\"{}\" is not a file this SecretProviderClass writes ({}): use the objectAlias (or objectName) of an object, or a jsonKeys alias",
                        crate::text::quote(name),
                        files.join(", ")
                    ),
                });
            }
        }
    }
    problems
}

/// Where a valid SPC mounts differently than under the Go provider, for a migration: notes, not
/// problems (see [`crate::spc::go_parity`]).
pub fn go_differences(spc: &SpcManifest) -> Vec<Problem> {
    SecretProviderClass::from_attributes(&spc.parameters)
        .map(|parsed| {
            crate::spc::go_parity::differences(&parsed)
                .into_iter()
                .map(|d| Problem {
                    path: format!("spec.parameters.objects.array[{}].{}", d.index, d.field),
                    message: format!("differs from the Go provider: {}", d.message),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Checks the manifests in `text` (named `file` in messages): problems to `out`, notes (skipped
/// documents, differences from the Go provider) to `notes`.
pub fn check_text(
    file: &str,
    text: &str,
    out: &mut dyn Write,
    notes: &mut dyn Write,
) -> io::Result<Summary> {
    let mut summary = Summary {
        files: 1,
        ..Summary::default()
    };
    let documents = match manifest::documents(text) {
        Ok(documents) => documents,
        Err(e) => {
            writeln!(out, "{file}: {e}")?;
            summary.problems += 1;
            return Ok(summary);
        }
    };
    for (index, node) in documents.iter().enumerate() {
        let doc = index + 1;
        match manifest::classify(node) {
            Document::OtherKind(kind) => {
                let kind = if kind.is_empty() { "(none)" } else { &kind };
                writeln!(
                    notes,
                    "{file}:doc {doc}: note: skipped kind {kind}: only SecretProviderClass is checked"
                )?;
                summary.skipped += 1;
            }
            Document::OtherProvider(name, provider) => {
                writeln!(
                    notes,
                    "{file}:doc {doc}: note: skipped SecretProviderClass \"{name}\": provider {provider} is not {}",
                    manifest::PROVIDER
                )?;
                summary.skipped += 1;
            }
            Document::Azure(spc) => {
                summary.checked += 1;
                let problems = check(&spc);
                for problem in &problems {
                    writeln!(out, "{file}:doc {doc}: {problem}")?;
                    summary.problems += 1;
                }
                if problems.is_empty() {
                    for note in go_differences(&spc) {
                        writeln!(notes, "{file}:doc {doc}: note: {note}")?;
                    }
                }
            }
        }
    }
    if summary.checked == 0 {
        writeln!(
            notes,
            "{file}: note: no SecretProviderClass with provider {} found",
            manifest::PROVIDER
        )?;
    }
    Ok(summary)
}

/// Runs `validate` with `args` (without the program name and subcommand): reads the files (or
/// `stdin` for `-`), writes problems to `out` and notes to `notes`. Returns the exit code.
pub fn run<I>(
    args: I,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    notes: &mut dyn Write,
) -> io::Result<u8>
where
    I: IntoIterator<Item = OsString>,
{
    let parsed = ValidateArgs::try_parse_from(
        std::iter::once(OsString::from("akv-csi-provider validate")).chain(args),
    );
    let args = match parsed {
        Ok(args) => args,
        Err(e) if e.use_stderr() => {
            write!(notes, "{}", e.render())?;
            return Ok(2);
        }
        Err(e) => {
            write!(out, "{}", e.render())?;
            return Ok(0);
        }
    };
    let mut total = Summary::default();
    let mut files = Vec::new();
    for path in &args.files {
        expand(path, &mut files);
    }
    for path in &files {
        let name = path.display().to_string();
        let text = if name == "-" {
            let mut text = String::new();
            stdin
                .take(manifest::MAX_MANIFEST_BYTES as u64 + 1)
                .read_to_string(&mut text)
                .map(|_| text)
        } else {
            read_limited(path)
        };
        let summary = match text {
            Ok(text) => check_text(&name, &text, out, notes)?,
            Err(e) => {
                writeln!(out, "{name}: cannot be read: {e}")?;
                Summary {
                    files: 1,
                    problems: 1,
                    ..Summary::default()
                }
            }
        };
        total.files += summary.files;
        total.checked += summary.checked;
        total.skipped += summary.skipped;
        total.problems += summary.problems;
    }
    writeln!(
        notes,
        "{} SecretProviderClass(es) checked in {} file(s), {} document(s) skipped: {} problem(s)",
        total.checked, total.files, total.skipped, total.problems
    )?;
    Ok(u8::from(total.problems > 0))
}

/// A folder's YAML files (recursively, sorted); anything else as given.
fn expand(path: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(path) else {
        files.push(path.to_path_buf());
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for child in paths {
        if child.is_dir() {
            expand(&child, files);
        } else if child.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(child);
        }
    }
}

fn read_limited(path: &Path) -> io::Result<String> {
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(manifest::MAX_MANIFEST_BYTES as u64 + 1)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// The parameters of the first Azure SecretProviderClass in `text` (or the one named `name`),
/// refusing it when [`check`] finds problems. Used by the agent.
pub fn load_spc(text: &str, name: Option<&str>) -> Result<SpcManifest, Vec<String>> {
    let documents = manifest::documents(text).map_err(|e| vec![e])?;
    let mut names = Vec::new();
    for (index, node) in documents.iter().enumerate() {
        if let Document::Azure(spc) = manifest::classify(node) {
            if name.is_some_and(|n| n != spc.name) {
                names.push(spc.name.clone());
                continue;
            }
            let problems = check(&spc);
            if problems.is_empty() {
                return Ok(*spc);
            }
            return Err(problems
                .iter()
                .map(|p| format!("doc {}: {p}", index + 1))
                .collect());
        }
    }
    Err(vec![match name {
        Some(name) => format!(
            "no SecretProviderClass named \"{name}\" with provider {} (found: {})",
            manifest::PROVIDER,
            names.join(", ")
        ),
        None => format!(
            "no SecretProviderClass with provider {} found",
            manifest::PROVIDER
        ),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> (Vec<String>, Summary) {
        let mut out = Vec::new();
        let mut notes = Vec::new();
        let summary = check_text("f.yaml", text, &mut out, &mut notes).unwrap_or_default();
        (
            String::from_utf8_lossy(&out)
                .lines()
                .map(str::to_owned)
                .collect(),
            summary,
        )
    }

    const HEAD: &str = "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: app\nspec:\n  provider: azure\n";

    #[test]
    fn a_valid_spc_has_no_problems() {
        let text = format!(
            "{HEAD}  secretObjects:\n  - secretName: s\n    type: Opaque\n    data:\n    - objectName: db\n      key: a\n    - objectName: user\n      key: b\n    - objectName: tls.crt\n      key: c\n  parameters:\n    keyvaultName: kv1\n    tenantID: t\n    objects: |\n      array:\n        - |\n          objectName: db\n          objectType: secret\n        - |\n          objectName: creds\n          objectType: secret\n          jsonKeys: [user]\n        - |\n          objectName: tls\n          objectType: secret\n"
        );
        let (problems, summary) = lines(&text);
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(summary.checked, 1);
    }

    /// A valid SPC that mounts differently than under the Go provider: notes on stderr, exit 0.
    #[test]
    fn differences_from_the_go_provider_are_notes() {
        let text = format!(
            "{HEAD}  parameters:\n    keyvaultName: kv1\n    tenantID: t\n    objects: |\n      array:\n        - |\n          objectName: db\n          objectType: secret\n        - |\n          objectName: hist\n          objectType: secret\n          objectVersionHistory: 2\n        - |\n          objectName: tls\n          objectType: secret\n          objectFormat: pfx\n          optional: true\n"
        );
        let mut out = Vec::new();
        let mut notes = Vec::new();
        let summary = check_text("f.yaml", &text, &mut out, &mut notes).unwrap_or_default();
        assert_eq!(summary.problems, 0);
        assert!(out.is_empty());
        let notes = String::from_utf8_lossy(&notes);
        let paths: Vec<&str> = notes
            .lines()
            .filter_map(|l| l.strip_prefix("f.yaml:doc 1: note: "))
            .filter_map(|l| l.split(": differs from the Go provider: ").next())
            .collect();
        assert_eq!(
            paths,
            [
                "spec.parameters.objects.array[1].objectVersionHistory",
                "spec.parameters.objects.array[2].objectFormat",
                "spec.parameters.objects.array[2].optional",
            ],
            "{notes}"
        );
    }

    #[test]
    fn every_problem_with_its_path() {
        let text = format!(
            "{HEAD}  secretObjects:\n  - secretName: s\n    data:\n    - objectName: nope\n      key: a\n  parameters:\n    keyvaultName: kv\n    tenantid: t\n    cloudName: AzureStackCloud\n    useVMManagedIdentity: true\n    objects: |\n      array:\n        - |\n          objectName: a\n          objectType: Secret\n        - |\n          objectName: b\n          objectType: secret\n          optional: maybe\n"
        );
        let (problems, summary) = lines(&text);
        assert_eq!(
            problems,
            [
                "f.yaml:doc 1: spec.parameters.useVMManagedIdentity: is a boolean, but parameters are strings and Kubernetes rejects other types: quote the value (\"true\")",
                "f.yaml:doc 1: spec.parameters.tenantid: is not a parameter of this provider (it would be ignored): did you mean tenantID? Names are case-sensitive",
                "f.yaml:doc 1: spec.parameters.keyvaultName: is \"kv\": a vault name has 3 to 24 characters of letters, digits and '-'",
                "f.yaml:doc 1: spec.parameters.tenantID: is required: set it to the Entra ID tenant (directory) id of the vault",
                "f.yaml:doc 1: spec.parameters.objects.array[0]: object \"a\": objectType \"Secret\" is not one of secret, key, cert (names are case-sensitive)",
                "f.yaml:doc 1: spec.parameters.objects.array[1]: object \"b\": optional \"maybe\" is not a boolean (use true or false)",
                "f.yaml:doc 1: spec.parameters.cloudEnvFileName: cloudName AzureStackCloud needs cloudEnvFileName: the path of a JSON file with activeDirectoryEndpoint, keyVaultEndpoint and keyVaultDNSSuffix",
            ]
        );
        assert_eq!(summary.problems, 7);
    }

    #[test]
    fn secret_objects_must_name_a_file() {
        let text = format!(
            "{HEAD}  secretObjects:\n  - secretName: s\n    data:\n    - objectName: nope\n      key: a\n  parameters:\n    keyvaultName: kv1\n    tenantID: t\n    objects: |\n      array:\n        - |\n          objectName: a\n          objectType: secret\n          objectAlias: dir/a\n"
        );
        let (problems, _) = lines(&text);
        assert_eq!(
            problems,
            [
                "f.yaml:doc 1: spec.secretObjects[0].data[0].objectName: \"nope\" is not a file this SecretProviderClass writes (dir/a): use the objectAlias (or objectName) of an object, or a jsonKeys alias"
            ]
        );
    }

    #[test]
    fn other_documents_are_skipped_and_syntax_errors_reported() {
        let (problems, summary) =
            lines("kind: ConfigMap\n---\nkind: SecretProviderClass\nspec:\n  provider: gcp\n");
        assert!(problems.is_empty());
        assert_eq!(summary.skipped, 2);
        let (problems, summary) = lines("a: [\n");
        assert_eq!(summary.problems, 1);
        assert!(
            problems[0].starts_with("f.yaml: is not valid YAML: "),
            "{problems:?}"
        );
    }

    #[test]
    fn run_exit_codes() {
        let mut out = Vec::new();
        let mut notes = Vec::new();
        let mut stdin: &[u8] = b"kind: ConfigMap\n";
        let code = run([OsString::from("-")], &mut stdin, &mut out, &mut notes).ok();
        assert_eq!(code, Some(0));
        let code = run(Vec::<OsString>::new(), &mut stdin, &mut out, &mut notes).ok();
        assert_eq!(code, Some(2));
        let code = run(
            [OsString::from("/nonexistent/spc.yaml")],
            &mut stdin,
            &mut out,
            &mut notes,
        )
        .ok();
        assert_eq!(code, Some(1));
    }

    #[test]
    fn load_spc_picks_by_name_and_refuses_problems() {
        let valid = format!(
            "{HEAD}  parameters:\n    keyvaultName: kv1\n    tenantID: t\n    objects: |\n      array:\n        - |\n          objectName: a\n          objectType: secret\n"
        );
        let text = format!("kind: ConfigMap\n---\n{valid}");
        assert_eq!(
            load_spc(&text, None).map(|s| s.name).ok().as_deref(),
            Some("app")
        );
        assert_eq!(
            load_spc(&text, Some("other")).err(),
            Some(vec![
                "no SecretProviderClass named \"other\" with provider azure (found: app)"
                    .to_owned()
            ])
        );
        let bad = valid.replace("kv1", "k");
        assert_eq!(load_spc(&bad, None).err().map(|e| e.len()), Some(1));
    }
}

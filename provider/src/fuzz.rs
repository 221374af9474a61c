//! Entry points of the fuzz targets in `fuzz/` (built with `--cfg fuzzing`), also run over the
//! committed seeds and regressions as unit tests. Each checks invariants, not only "no panic".
//!
//! Untrusted inputs covered: the Mount request (`attributes` JSON, `secrets` JSON, `permission`),
//! the `objects` YAML, file names, `objectEncoding` decoding and Azure Stack cloud files.
//!
//! Panicking on a broken invariant is how a fuzz target reports it.
#![allow(clippy::missing_panics_doc, clippy::panic)]

use crate::{
    cloud::{CloudEnvironment, CloudName},
    convert,
    grpc::to_status,
    mount::{self, MountError},
    sensitive::SecretBytes,
    spc::{self, ObjectEncoding, file_name},
    v1alpha1::MountRequest,
};
use std::collections::BTreeMap;

/// Largest gRPC status message (bytes).
const MAX_MESSAGE: usize = crate::grpc::MAX_MESSAGE_BYTES;

/// A message a log line or a driver event can carry: bounded, no control characters.
fn check_message(message: &str) {
    assert!(
        message.len() <= MAX_MESSAGE,
        "message of {} bytes",
        message.len()
    );
    assert!(
        !message.chars().any(char::is_control),
        "control character in {message:?}"
    );
}

/// The fuzz input split into the three request fields.
///
/// `S` first: key/value records (`0x1E` between records, `0x1F` between key and value; keys
/// `#secrets` and `#permission` set those fields), so the fuzzer reaches the SPC rules with valid
/// JSON. Anything else: `attributes`, `secrets` and `permission` separated by NUL bytes.
fn request_of(data: &[u8]) -> MountRequest {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if let Some(rest) = data.strip_prefix(b"S") {
        let mut attributes = BTreeMap::new();
        let mut secrets = String::from("{}");
        let mut permission = String::from("420");
        for record in rest.split(|b| *b == 0x1E) {
            let mut kv = record.splitn(2, |b| *b == 0x1F);
            let key = text(kv.next().unwrap_or_default());
            let value = text(kv.next().unwrap_or_default());
            match key.as_str() {
                "#secrets" => secrets = value,
                "#permission" => permission = value,
                _ => {
                    attributes.insert(key, value);
                }
            }
        }
        MountRequest {
            attributes: serde_json::to_string(&attributes).unwrap_or_default(),
            secrets,
            target_path: "/fuzz".into(),
            permission,
            current_object_version: Vec::new(),
        }
    } else {
        let mut parts = data.splitn(3, |b| *b == 0);
        MountRequest {
            attributes: text(parts.next().unwrap_or_default()),
            secrets: text(parts.next().unwrap_or_default()),
            target_path: "/fuzz".into(),
            permission: text(parts.next().unwrap_or_default()),
            current_object_version: Vec::new(),
        }
    }
}

/// Values that must never appear in an error message or a plan's `Debug`.
fn secrets_of(request: &MountRequest) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(map) = serde_json::from_str::<BTreeMap<String, String>>(&request.secrets) {
        // Everything but the client id (which names the identity in messages) is secret.
        out.extend(
            map.into_iter()
                .filter(|(k, _)| !k.trim().eq_ignore_ascii_case("clientid"))
                .map(|(_, v)| v),
        );
    }
    if let Ok(attrs) = serde_json::from_str::<BTreeMap<String, String>>(&request.attributes)
        && let Some(tokens) = attrs.get(mount::request::SERVICE_ACCOUNT_TOKENS)
        && let Ok(tokens) = serde_json::from_str::<BTreeMap<String, serde_json::Value>>(tokens)
    {
        out.extend(
            tokens
                .values()
                .filter_map(|t| t.get("token")?.as_str().map(str::to_owned)),
        );
    }
    // Short values occur in ordinary text by chance.
    out.retain(|v| v.len() >= 12);
    out
}

/// A Mount request through `mount::plan`: no panic; errors bounded, printable and free of
/// secrets; a plan only names files that pass the file-name rules.
pub fn mount_request(data: &[u8]) {
    let mut request = request_of(data);
    // No file reads from a fuzzer: the cloud file's bytes go to the cloud file parser instead.
    if let Ok(mut attrs) = serde_json::from_str::<BTreeMap<String, String>>(&request.attributes)
        && let Some(file) = attrs.get_mut("cloudEnvFileName")
    {
        cloud_env(file.as_bytes());
        "/nonexistent/akv-csi-provider-fuzz/cloud.json".clone_into(file);
        request.attributes = serde_json::to_string(&attrs).unwrap_or_default();
    }
    let secrets = secrets_of(&request);
    match mount::plan(&request, CloudName::Public) {
        Ok(plan) => {
            assert!(plan.default_mode <= 0o777);
            assert!(!plan.spc.objects.is_empty() && plan.spc.objects.len() <= spc::MAX_OBJECTS);
            for object in &plan.spc.objects {
                assert_eq!(file_name::check(object.file_name()), Ok(()));
            }
            let shown = format!("{plan:?} {}", plan.identity);
            for secret in &secrets {
                assert!(
                    !shown.contains(secret.as_str()),
                    "a secret in the plan's Debug"
                );
            }
        }
        Err(e) => check_error(&e, &secrets),
    }
}

fn check_error(error: &MountError, secrets: &[String]) {
    let message = to_status(error).message().to_owned();
    check_message(&message);
    for secret in secrets {
        assert!(
            !message.contains(secret.as_str()),
            "a secret in {message:?}"
        );
    }
}

/// The `objects` parameter: no panic; a result is within the limits, its files pass the
/// file-name rules and do not collide; errors are bounded and printable.
pub fn objects_yaml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match spc::parse_objects(&text) {
        Ok(objects) => {
            assert!(!objects.is_empty() && objects.len() <= spc::MAX_OBJECTS);
            let mut paths = Vec::new();
            for object in &objects {
                assert_eq!(file_name::check(object.file_name()), Ok(()));
                assert!((1..=spc::MAX_VERSION_HISTORY).contains(&object.version_history));
                assert!(object.file_permission.is_none_or(|m| m <= 0o777));
                if object.version_history > 1 {
                    paths.extend(
                        (0..object.version_history).map(|i| format!("{}/{i}", object.file_name())),
                    );
                } else {
                    paths.push(object.file_name().to_owned());
                }
            }
            paths.sort();
            for pair in paths.windows(2) {
                assert_ne!(pair[0], pair[1], "two objects write one file");
                assert!(
                    !pair[1].starts_with(&format!("{}/", pair[0])),
                    "a file is another's folder: {} and {}",
                    pair[0],
                    pair[1]
                );
            }
        }
        Err(e) => check_message(&e.to_string()),
    }
}

/// File-name rules against an independent oracle: an accepted name is relative, has only normal
/// path components, none reserved by the atomic writer, and stays below the target folder.
pub fn file_name(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    if file_name::check(name).is_err() {
        return;
    }
    let path = std::path::Path::new(name);
    assert!(path.is_relative());
    assert!(!name.contains('\\') && !name.contains('\0'));
    assert!(!name.chars().any(char::is_control));
    assert!(name.len() <= file_name::MAX_PATH_BYTES);
    for component in path.components() {
        let std::path::Component::Normal(part) = component else {
            panic!("{name:?} has a {component:?} component");
        };
        let part = part.to_string_lossy();
        assert!(!part.starts_with(".."), "{name:?}");
        assert!(part.len() <= file_name::MAX_ELEMENT_BYTES);
    }
    assert_eq!(
        path.components().count(),
        name.split('/').count(),
        "{name:?} normalises to another path"
    );
    let lower = name.to_ascii_lowercase();
    assert!(!lower.contains("%2e") && !lower.contains("%2f") && !lower.contains("%5c"));
}

/// `objectEncoding` decoding: hex and base64 round-trip exactly; errors never repeat the value
/// (a message with its digits removed is one of the fixed forms).
pub fn object_encoding(data: &[u8]) {
    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    let encoding = match selector % 3 {
        0 => ObjectEncoding::Utf8,
        1 => ObjectEncoding::Hex,
        _ => ObjectEncoding::Base64,
    };
    let input = SecretBytes::new(value.to_vec());
    match convert::decode(&input, encoding, "secret/fuzz") {
        Ok(out) => {
            let trimmed = value.trim_ascii();
            match encoding {
                ObjectEncoding::Utf8 => assert_eq!(out.expose(), value),
                ObjectEncoding::Hex => {
                    assert_eq!(
                        hex::encode(out.expose()).as_bytes(),
                        trimmed.to_ascii_lowercase()
                    );
                }
                ObjectEncoding::Base64 => {
                    use base64::Engine;
                    let again = base64::engine::general_purpose::STANDARD.encode(out.expose());
                    assert_eq!(again.as_bytes(), trimmed);
                }
            }
        }
        Err(e) => {
            let shape: String = e
                .to_string()
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .collect();
            let forms = [
                "odd number of digits",
                "a non-hex character at offset ",
                "wrong length",
                "an invalid character at offset ",
                "an invalid last character at offset ",
                "wrong padding",
            ];
            // With the digits gone, base64 reads "base".
            let known = ["hex", "base"].iter().any(|enc| {
                forms.iter().any(|reason| {
                    shape
                        == format!(
                            "the value of secret/fuzz is not valid {enc} ({reason}): check objectEncoding, or store the value {enc}-encoded"
                        )
                })
            });
            assert!(known, "unexpected decode message {shape:?}");
        }
    }
}

/// An Azure Stack cloud environment file: no panic; errors bounded and printable; a result has
/// an https authority and a usable vault suffix.
pub fn cloud_env(data: &[u8]) {
    match CloudEnvironment::from_json("fuzz.json", data) {
        Ok(cloud) => {
            assert_eq!(cloud.authority_host.scheme(), "https");
            let url = cloud.vault_url("kv-fuzz");
            assert!(url.starts_with("https://kv-fuzz."));
        }
        Err(e) => check_message(&e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every committed seed and regression input of every target.
    #[test]
    fn seeds_and_regressions_replay_cleanly() {
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 5] = [
            ("mount_request", mount_request),
            ("objects_yaml", objects_yaml),
            ("file_name", file_name),
            ("object_encoding", object_encoding),
            ("cloud_env", cloud_env),
        ];
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut replayed = 0;
        for (target, run) in targets {
            for kind in ["seeds", "regressions"] {
                let dir = root.join(kind).join(target);
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let data = std::fs::read(entry.path()).unwrap_or_default();
                    run(&data);
                    replayed += 1;
                }
            }
        }
        assert!(replayed >= 20, "only {replayed} inputs replayed");
    }
}

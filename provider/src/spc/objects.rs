//! The `objects` parameter: YAML `array:` of YAML documents, one per Key Vault object.

use super::{MAX_OBJECTS, MAX_OBJECTS_YAML_BYTES, MAX_VERSION_HISTORY, SpcError, file_name, quote};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

/// What kind of Key Vault object to read (`objectType`, case-sensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectType {
    /// A secret (also the secret that backs a certificate).
    Secret,
    /// A key: its public part as PEM.
    Key,
    /// A certificate: the leaf as PEM.
    Cert,
}

impl ObjectType {
    /// The name used in SPCs and object version ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::Key => "key",
            Self::Cert => "cert",
        }
    }
}

/// `objectFormat` of certificate-backed secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectFormat {
    /// PEM (default).
    Pem,
    /// The PFX as stored (secrets only).
    Pfx,
}

/// `objectEncoding`: how the stored secret value is decoded before writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectEncoding {
    /// Written as stored (default).
    Utf8,
    /// Hex-decoded.
    Hex,
    /// Base64-decoded (standard alphabet, padded).
    Base64,
}

/// One validated object of a SecretProviderClass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVaultObject {
    /// `objectName`: the name in Key Vault.
    pub name: String,
    /// `objectType`.
    pub object_type: ObjectType,
    /// `objectVersion`, `None` for the latest.
    pub version: Option<String>,
    /// `objectAlias`, `None` to use `objectName` as file name.
    pub alias: Option<String>,
    /// `objectFormat`.
    pub format: ObjectFormat,
    /// `objectEncoding`.
    pub encoding: ObjectEncoding,
    /// `filePermission`, parsed from octal; `None` for the Mount's default.
    pub file_permission: Option<u32>,
    /// `objectVersionHistory`: 1 for a single file, N > 1 for `<file>/0..N-1`.
    pub version_history: u32,
}

impl KeyVaultObject {
    /// The file name: `objectAlias` or else `objectName`.
    pub fn file_name(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }

    /// The object version id: `<objectType>/<objectName>`.
    pub fn version_id(&self) -> String {
        format!("{}/{}", self.object_type.as_str(), self.name)
    }
}

/// Object fields as written. Scalars are read as their source text, so `off`, `yes` or `0600`
/// stay strings (YAML 1.1 booleans and octals do not change names or modes).
type Fields = BTreeMap<String, Option<String>>;

#[derive(Debug, Deserialize)]
struct ObjectsDoc {
    #[serde(default)]
    array: Vec<String>,
}

fn short(e: &serde_saphyr::Error) -> String {
    // YAML errors can quote input; keep the first line, cut to a sane length, escaped.
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    let mut out = String::new();
    for c in line.chars().take(200) {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// YAML limits far above any real `objects` (1000 objects are about 2000 nodes outside and 25
/// inside each), far below what a hostile document (alias bomb, deep nesting) could cost.
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = 20_000;
    budget.max_events = 50_000;
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_depth = 16;
    budget.max_documents = 1;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Parses and validates the `objects` parameter.
pub fn parse_objects(yaml: &str) -> Result<Vec<KeyVaultObject>, SpcError> {
    if yaml.trim().is_empty() {
        return Err(SpcError::Missing {
            name: "objects",
            hint: "list the objects to mount as YAML: array: [\"objectName: x\\nobjectType: secret\"]",
        });
    }
    if yaml.len() > MAX_OBJECTS_YAML_BYTES {
        return Err(SpcError::ObjectsYaml(format!(
            "is {} bytes long; at most {MAX_OBJECTS_YAML_BYTES} are accepted",
            yaml.len()
        )));
    }
    let doc: ObjectsDoc = serde_saphyr::from_str_with_options(yaml, yaml_options()).map_err(|e| {
        SpcError::ObjectsYaml(format!(
            "is not valid YAML of the form array: [\"<object YAML>\", ...] (each object is a string): {}",
            short(&e)
        ))
    })?;
    if doc.array.is_empty() {
        return Err(SpcError::ObjectsYaml(
            "has no objects: its array must list at least one object".into(),
        ));
    }
    if doc.array.len() > MAX_OBJECTS {
        return Err(SpcError::ObjectsYaml(format!(
            "lists {} objects; at most {MAX_OBJECTS} are accepted",
            doc.array.len()
        )));
    }
    let mut objects = Vec::with_capacity(doc.array.len());
    for (index, text) in doc.array.iter().enumerate() {
        let fields =
            serde_saphyr::from_str_with_options::<Fields>(text, yaml_options()).map_err(|e| {
                SpcError::Object {
                    index,
                    object: "<unnamed>".into(),
                    problem: format!("is not a YAML mapping of object fields: {}", short(&e)),
                }
            })?;
        objects.push(parse_object(index, &fields)?);
    }
    check_file_conflicts(&objects)?;
    Ok(objects)
}

fn field(fields: &Fields, key: &str) -> String {
    fields
        .get(key)
        .and_then(Option::as_deref)
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

#[allow(clippy::too_many_lines)] // one validation step per field, in the order of the docs
fn parse_object(index: usize, fields: &Fields) -> Result<KeyVaultObject, SpcError> {
    let name = field(fields, "objectName");
    let shown = if name.is_empty() {
        "<unnamed>".to_owned()
    } else {
        format!("\"{}\"", quote(&name))
    };
    let fail = |problem: String| SpcError::Object {
        index,
        object: shown.clone(),
        problem,
    };
    if name.is_empty() {
        return Err(fail("objectName is required".into()));
    }

    let type_text = field(fields, "objectType");
    let object_type = match type_text.as_str() {
        "secret" => ObjectType::Secret,
        "key" => ObjectType::Key,
        "cert" => ObjectType::Cert,
        "" => {
            return Err(fail(
                "objectType is required: one of secret, key, cert".into(),
            ));
        }
        other => {
            return Err(fail(format!(
                "objectType \"{}\" is not one of secret, key, cert (names are case-sensitive)",
                quote(other)
            )));
        }
    };

    let format_text = field(fields, "objectFormat");
    let format = match format_text.to_ascii_lowercase().as_str() {
        "" | "pem" => ObjectFormat::Pem,
        "pfx" if object_type == ObjectType::Secret => ObjectFormat::Pfx,
        "pfx" => {
            return Err(fail(format!(
                "objectFormat pfx is only supported for objectType secret, not {}",
                object_type.as_str()
            )));
        }
        other => {
            return Err(fail(format!(
                "objectFormat \"{}\" is not one of pem, pfx",
                quote(other)
            )));
        }
    };

    let encoding_text = field(fields, "objectEncoding");
    let encoding = match encoding_text.to_ascii_lowercase().as_str() {
        "" | "utf-8" => ObjectEncoding::Utf8,
        "hex" | "base64" if object_type != ObjectType::Secret => {
            return Err(fail(format!(
                "objectEncoding is only supported for objectType secret, not {}",
                object_type.as_str()
            )));
        }
        "hex" => ObjectEncoding::Hex,
        "base64" => ObjectEncoding::Base64,
        other => {
            return Err(fail(format!(
                "objectEncoding \"{}\" is not one of utf-8, hex, base64",
                quote(other)
            )));
        }
    };

    let version = Some(field(fields, "objectVersion")).filter(|v| !v.is_empty());
    if let Some(v) = &version
        && (v.len() > 128 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err(fail(format!(
            "objectVersion \"{}\" is not a Key Vault version id (letters and digits, e.g. 32 hex characters)",
            quote(v)
        )));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || name.len() > 127 {
        return Err(fail(
            "objectName must be a Key Vault object name: 1-127 characters of letters, digits and '-'"
                .into(),
        ));
    }

    let alias = Some(field(fields, "objectAlias")).filter(|a| !a.is_empty());
    let file = alias.as_deref().unwrap_or(&name);
    if let Err(problem) = file_name::check(file) {
        let which = if alias.is_some() {
            "objectAlias"
        } else {
            "objectName"
        };
        return Err(fail(format!(
            "{which} \"{}\" is not a usable file name: it {problem}",
            quote(file)
        )));
    }

    let permission_text = field(fields, "filePermission");
    let file_permission = if permission_text.is_empty() {
        None
    } else {
        let digits = permission_text.as_str();
        let parsed = u32::from_str_radix(digits, 8)
            .ok()
            .filter(|mode| *mode <= 0o777 && digits.bytes().all(|b| (b'0'..=b'7').contains(&b)));
        Some(parsed.ok_or_else(|| {
            fail(format!(
                "filePermission \"{}\" is not an octal file mode such as 0644 or 0600 (at most 0777)",
                quote(&permission_text)
            ))
        })?)
    };

    let history_text = field(fields, "objectVersionHistory");
    let version_history = if history_text.is_empty() {
        1
    } else {
        history_text
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= MAX_VERSION_HISTORY)
            .ok_or_else(|| {
                fail(format!(
                    "objectVersionHistory \"{}\" is not a whole number from 0 to {MAX_VERSION_HISTORY}",
                    quote(&history_text)
                ))
            })?
            .max(1)
    };
    if version_history > 1 && version.is_some() {
        return Err(fail(
            "objectVersionHistory and objectVersion cannot be combined: history always starts at the latest version"
                .into(),
        ));
    }

    Ok(KeyVaultObject {
        name,
        object_type,
        version,
        alias,
        format,
        encoding,
        file_permission,
        version_history,
    })
}

/// Every file path an object will produce, for conflict checks.
fn planned_paths(object: &KeyVaultObject) -> Vec<String> {
    let base = object.file_name();
    if object.version_history > 1 {
        (0..object.version_history)
            .map(|i| format!("{base}/{i}"))
            .collect()
    } else {
        vec![base.to_owned()]
    }
}

fn check_file_conflicts(objects: &[KeyVaultObject]) -> Result<(), SpcError> {
    // path -> owning object; folders are recorded too so that "a" and "a/b" conflict.
    let mut files: HashMap<String, &str> = HashMap::new();
    let mut folders: HashMap<String, &str> = HashMap::new();
    for object in objects {
        for path in planned_paths(object) {
            let conflict = |other: &str| SpcError::FileConflict {
                path: quote(&path),
                first: format!("\"{}\"", quote(other)),
                second: format!("\"{}\"", quote(&object.name)),
            };
            if let Some(other) = files.get(&path).or_else(|| folders.get(&path)) {
                return Err(conflict(other));
            }
            let mut prefix = String::new();
            for element in path
                .split('/')
                .collect::<Vec<_>>()
                .iter()
                .rev()
                .skip(1)
                .rev()
            {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(element);
                if let Some(other) = files.get(&prefix) {
                    return Err(conflict(other));
                }
                folders.insert(prefix.clone(), &object.name);
            }
            files.insert(path, &object.name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> Result<KeyVaultObject, String> {
        let indented: String = body.lines().flat_map(|l| ["    ", l, "\n"]).collect();
        let yaml = format!("array:\n  - |\n{indented}");
        parse_objects(&yaml)
            .map_err(|e| e.to_string())
            .and_then(|mut v| v.pop().ok_or_else(|| "none".to_owned()))
    }

    #[test]
    fn full_object() {
        let o = one(
            "objectName: db-pass\nobjectType: secret\nobjectVersion: abc123\nobjectAlias: db/password\nobjectEncoding: BASE64\nfilePermission: \"0600\"\nobjectFormat: PFX",
        );
        let o = o.ok();
        assert_eq!(
            o,
            Some(KeyVaultObject {
                name: "db-pass".into(),
                object_type: ObjectType::Secret,
                version: Some("abc123".into()),
                alias: Some("db/password".into()),
                format: ObjectFormat::Pfx,
                encoding: ObjectEncoding::Base64,
                file_permission: Some(0o600),
                version_history: 1,
            })
        );
    }

    #[test]
    fn defaults_and_trimming() {
        let o = one(
            "objectName: '  s1  '\nobjectType: key\nobjectVersion: ''\nobjectVersionHistory: 0",
        )
        .ok();
        assert_eq!(o.as_ref().map(KeyVaultObject::file_name), Some("s1"));
        assert_eq!(o.as_ref().map(|o| o.version.clone()), Some(None));
        assert_eq!(o.as_ref().map(|o| o.version_history), Some(1));
        assert_eq!(o.map(|o| o.version_id()), Some("key/s1".into()));
        let o =
            one("objectName: s1\nobjectType: secret\nobjectVersionHistory: 3\nfilePermission: 600")
                .ok();
        assert_eq!(o.as_ref().map(|o| o.version_history), Some(3));
        assert_eq!(o.map(|o| o.file_permission), Some(Some(0o600)));
    }

    #[test]
    fn mapping_entries_are_rejected_with_a_hint() {
        let yaml = "array:\n  - objectName: a\n    objectType: secret\n";
        let e = parse_objects(yaml)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("parameter objects is not valid YAML of the form array: [\"<object YAML>\", ...] (each object is a string)"),
            "{e}"
        );
    }

    #[test]
    fn yaml_1_1_lookalikes_stay_strings() {
        let o =
            one("objectName: off\nobjectType: secret\nobjectAlias: yes\nfilePermission: 0600").ok();
        assert_eq!(o.as_ref().map(|o| o.name.as_str()), Some("off"));
        assert_eq!(o.as_ref().map(KeyVaultObject::file_name), Some("yes"));
        assert_eq!(o.map(|o| o.file_permission), Some(Some(0o600)));
    }

    #[test]
    fn object_errors() {
        let cases = [
            (
                "objectType: secret",
                "object <unnamed> (objects.array[0]): objectName is required",
            ),
            (
                "objectName: s",
                "object \"s\" (objects.array[0]): objectType is required: one of secret, key, cert",
            ),
            (
                "objectName: s\nobjectType: Secret",
                "object \"s\" (objects.array[0]): objectType \"Secret\" is not one of secret, key, cert (names are case-sensitive)",
            ),
            (
                "objectName: s\nobjectType: key\nobjectFormat: pfx",
                "object \"s\" (objects.array[0]): objectFormat pfx is only supported for objectType secret, not key",
            ),
            (
                "objectName: s\nobjectType: secret\nobjectFormat: der",
                "object \"s\" (objects.array[0]): objectFormat \"der\" is not one of pem, pfx",
            ),
            (
                "objectName: s\nobjectType: cert\nobjectEncoding: hex",
                "object \"s\" (objects.array[0]): objectEncoding is only supported for objectType secret, not cert",
            ),
            (
                "objectName: s\nobjectType: secret\nobjectEncoding: utf16",
                "object \"s\" (objects.array[0]): objectEncoding \"utf16\" is not one of utf-8, hex, base64",
            ),
            (
                "objectName: s\nobjectType: secret\nfilePermission: rw-r--r--",
                "object \"s\" (objects.array[0]): filePermission \"rw-r--r--\" is not an octal file mode such as 0644 or 0600 (at most 0777)",
            ),
            (
                "objectName: s\nobjectType: secret\nfilePermission: '0800'",
                "object \"s\" (objects.array[0]): filePermission \"0800\" is not an octal file mode such as 0644 or 0600 (at most 0777)",
            ),
            (
                "objectName: s\nobjectType: secret\nfilePermission: '4755'",
                "object \"s\" (objects.array[0]): filePermission \"4755\" is not an octal file mode such as 0644 or 0600 (at most 0777)",
            ),
            (
                "objectName: s\nobjectType: secret\nobjectVersionHistory: -1",
                "object \"s\" (objects.array[0]): objectVersionHistory \"-1\" is not a whole number from 0 to 100",
            ),
            (
                "objectName: s\nobjectType: secret\nobjectVersionHistory: 3\nobjectVersion: abc",
                "object \"s\" (objects.array[0]): objectVersionHistory and objectVersion cannot be combined: history always starts at the latest version",
            ),
            (
                "objectName: s\nobjectType: secret\nobjectAlias: ../etc/passwd",
                "object \"s\" (objects.array[0]): objectAlias \"../etc/passwd\" is not a usable file name: it must not contain '..' path elements",
            ),
            (
                "objectName: s\nobjectType: secret\nobjectAlias: /abs",
                "object \"s\" (objects.array[0]): objectAlias \"/abs\" is not a usable file name: it must be a relative path (it starts with '/')",
            ),
            (
                "objectName: s/x\nobjectType: secret",
                "object \"s/x\" (objects.array[0]): objectName must be a Key Vault object name: 1-127 characters of letters, digits and '-'",
            ),
            (
                "objectName: s\nobjectType: secret\nobjectVersion: a/b",
                "object \"s\" (objects.array[0]): objectVersion \"a/b\" is not a Key Vault version id (letters and digits, e.g. 32 hex characters)",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(one(body).err().as_deref(), Some(want), "{body}");
        }
    }

    #[test]
    fn document_errors() {
        assert_eq!(
            parse_objects("").err().map(|e| e.to_string()).as_deref(),
            Some(
                "parameter objects is required: list the objects to mount as YAML: array: [\"objectName: x\\nobjectType: secret\"]"
            )
        );
        assert_eq!(
            parse_objects("array: []")
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some("parameter objects has no objects: its array must list at least one object")
        );
        let bad = parse_objects("array: [unclosed")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            bad.starts_with("parameter objects is not valid YAML of the form array: "),
            "{bad}"
        );
        let bad = parse_objects("array:\n  - '[1, 2]'")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            bad.starts_with(
                "object <unnamed> (objects.array[0]): is not a YAML mapping of object fields"
            ),
            "{bad}"
        );
    }

    #[test]
    fn conflicting_files() {
        let yaml = "array:\n  - |\n    objectName: a\n    objectType: secret\n  - |\n    objectName: b\n    objectType: secret\n    objectAlias: a\n";
        assert_eq!(
            parse_objects(yaml).err().map(|e| e.to_string()).as_deref(),
            Some(
                "objects \"a\" and \"b\" both write \"a\": give one of them a different objectAlias"
            )
        );
        let yaml = "array:\n  - |\n    objectName: a\n    objectType: secret\n  - |\n    objectName: b\n    objectType: secret\n    objectAlias: a/x\n";
        assert!(parse_objects(yaml).is_err());
        let yaml = "array:\n  - |\n    objectName: a\n    objectType: secret\n    objectVersionHistory: 2\n  - |\n    objectName: b\n    objectType: secret\n    objectAlias: a/1\n";
        assert!(parse_objects(yaml).is_err());
        let yaml = "array:\n  - |\n    objectName: b\n    objectType: secret\n    objectAlias: a/x\n  - |\n    objectName: a\n    objectType: secret\n";
        assert!(parse_objects(yaml).is_err());
    }
}

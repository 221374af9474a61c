//! The `objects` parameter: YAML `array:` of YAML documents, one per Key Vault object, read
//! ([`super::yaml`]), validated one by one ([`super::fields`]) and checked for file conflicts
//! ([`super::conflicts`]) into the model of [`super::model`].
//!
//! Besides the Go provider's fields, an object may carry (all opt-in, see the README):
//! `optional`, `jsonKeys`, `keyvaultName`, and, instead of `objectName`, `objectNamePrefix` and/or
//! `objectTags` (a bulk entry, expanded after listing the vault's secrets).

use super::{KeyVaultObject, SpcError, conflicts::file_conflicts, fields, yaml};

/// Parses and validates the `objects` parameter.
pub fn parse_objects(yaml: &str) -> Result<Vec<KeyVaultObject>, SpcError> {
    let mut problems = Vec::new();
    let objects = parse_objects_collecting(yaml, &mut problems);
    match problems.into_iter().next() {
        Some(problem) => Err(problem),
        None => Ok(objects),
    }
}

/// Parses the `objects` parameter, recording every problem (each invalid object, then every
/// file conflict among the valid ones) instead of stopping at the first. Returns the valid objects.
pub(crate) fn parse_objects_collecting(
    yaml: &str,
    problems: &mut Vec<SpcError>,
) -> Vec<KeyVaultObject> {
    let before = problems.len();
    let mut objects = Vec::new();
    for (index, read) in yaml::read(yaml, problems).into_iter().enumerate() {
        match read.and_then(|fields| fields::parse_object(index, &fields)) {
            Ok(object) => objects.push(object),
            Err(problem) => problems.push(problem),
        }
    }
    // Conflicts are only meaningful once every object is valid.
    if problems.len() == before {
        problems.extend(file_conflicts(&objects));
    }
    objects
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spc::{JsonKey, ObjectEncoding, ObjectFormat, ObjectType, check_file_conflicts};
    use std::collections::HashMap;

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
                optional: false,
                json_keys: Vec::new(),
                keyvault_name: None,
                selector: None,
                matched_by: None,
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

    fn all(bodies: &[&str]) -> Result<Vec<KeyVaultObject>, String> {
        let mut yaml = String::from("array:\n");
        for body in bodies {
            yaml.push_str("  - |\n");
            for line in body.lines() {
                yaml.push_str("    ");
                yaml.push_str(line);
                yaml.push('\n');
            }
        }
        parse_objects(&yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn optional_and_vault_override() {
        let o = one("objectName: s\nobjectType: secret\noptional: true\nkeyvaultName: kv-two").ok();
        assert_eq!(o.as_ref().map(|o| o.optional), Some(true));
        assert_eq!(
            o.as_ref().and_then(|o| o.keyvault_name.clone()),
            Some("kv-two".into())
        );
        assert_eq!(o.map(|o| o.version_id()), Some("secret/s@kv-two".into()));
        let o = one("objectName: s\nobjectType: key\noptional: 'false'").ok();
        assert_eq!(o.as_ref().map(|o| o.optional), Some(false));
        assert_eq!(o.map(|o| o.version_id()), Some("key/s".into()));
    }

    #[test]
    fn json_keys_forms() {
        let o = one(
            "objectName: db\nobjectType: secret\njsonKeys:\n  - username\n  - key: conn.port\n    alias: config/port\n  - {key: 'a\\.b.0', alias: ab0}\n",
        );
        let keys = o.map(|o| o.json_keys);
        assert_eq!(
            keys,
            Ok(vec![
                JsonKey {
                    key: "username".into(),
                    path: vec!["username".into()],
                    alias: "username".into(),
                },
                JsonKey {
                    key: "conn.port".into(),
                    path: vec!["conn".into(), "port".into()],
                    alias: "config/port".into(),
                },
                JsonKey {
                    key: "a\\.b.0".into(),
                    path: vec!["a.b".into(), "0".into()],
                    alias: "ab0".into(),
                },
            ])
        );
    }

    #[test]
    fn bulk_entries() {
        let o = one(
            "objectNamePrefix: app-\nobjectTags:\n  team: payments\n  env: prod\nobjectType: secret\nobjectAlias: app\noptional: true",
        )
        .ok();
        let selector = o.as_ref().and_then(|o| o.selector.clone());
        assert_eq!(
            selector.as_ref().map(ToString::to_string).as_deref(),
            Some("objectNamePrefix \"app-\" and objectTags {env: \"prod\", team: \"payments\"}")
        );
        let tags: HashMap<String, String> = [("Team", "payments"), ("ENV", "prod"), ("x", "y")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let selector = selector.unwrap_or_default();
        assert!(selector.matches("APP-one", &tags));
        assert!(!selector.matches("ap", &tags));
        assert!(!selector.matches("app-one", &HashMap::new()));
        let expanded = o.map(|o| o.expand("app-one"));
        assert_eq!(
            expanded.as_ref().map(KeyVaultObject::file_name),
            Some("app/app-one")
        );
        assert_eq!(
            expanded.as_ref().map(KeyVaultObject::shown).as_deref(),
            Some(
                "\"app-one\" (matched by objectNamePrefix \"app-\" and objectTags {env: \"prod\", team: \"payments\"})"
            )
        );
        assert_eq!(expanded.map(|o| o.optional), Some(true));
        let o = one("objectTags: {mounted: ''}\nobjectType: secret").ok();
        assert_eq!(
            o.and_then(|o| o.selector).map(|s| s.to_string()).as_deref(),
            Some("objectTags {mounted: \"\"}")
        );
    }

    #[test]
    fn new_field_errors() {
        let cases = [
            (
                "objectName: s\nobjectType: secret\noptional: maybe",
                "object \"s\" (objects.array[0]): optional \"maybe\" is not a boolean (use true or false)",
            ),
            (
                "objectName: s\nobjectType: secret\nkeyvaultName: kv_2",
                "object \"s\" (objects.array[0]): keyvaultName \"kv_2\" is not a vault name: 3 to 24 characters of letters, digits and '-'",
            ),
            (
                "objectName: s\nobjectType: key\njsonKeys: [a]",
                "object \"s\" (objects.array[0]): jsonKeys cannot be combined with objectType key: it reads a JSON-valued secret and writes one file per key",
            ),
            (
                "objectName: s\nobjectType: secret\nobjectAlias: x\njsonKeys: [a]",
                "object \"s\" (objects.array[0]): jsonKeys cannot be combined with objectAlias (name each file with jsonKeys[i].alias): it reads a JSON-valued secret and writes one file per key",
            ),
            (
                "objectName: s\nobjectType: secret\nobjectVersionHistory: 2\njsonKeys: [a]",
                "object \"s\" (objects.array[0]): jsonKeys cannot be combined with objectVersionHistory: it reads a JSON-valued secret and writes one file per key",
            ),
            (
                "objectName: s\nobjectType: secret\nobjectEncoding: base64\njsonKeys: [a]",
                "object \"s\" (objects.array[0]): jsonKeys cannot be combined with objectEncoding base64: it reads a JSON-valued secret and writes one file per key",
            ),
            (
                "objectName: s\nobjectType: secret\njsonKeys: []",
                "object \"s\" (objects.array[0]): jsonKeys is empty: list at least one key path, or remove jsonKeys",
            ),
            (
                "objectName: s\nobjectType: secret\njsonKeys:\n  - alias: x",
                "object \"s\" (objects.array[0]): jsonKeys[0].key is required: a dotted path into the JSON value, such as db.password",
            ),
            (
                "objectName: s\nobjectType: secret\njsonKeys: [a, 'b..c']",
                "object \"s\" (objects.array[0]): jsonKeys[1].key \"b..c\" is not a dotted path: it has an empty element (a leading, trailing or doubled '.')",
            ),
            (
                "objectName: s\nobjectType: secret\njsonKeys: ['a\\x']",
                "object \"s\" (objects.array[0]): jsonKeys[0].key \"a\\\\x\" is not a dotted path: it has a '\\' that is not followed by '.' or '\\'",
            ),
            (
                "objectName: s\nobjectType: secret\njsonKeys:\n  - key: a\n    alias: ../x",
                "object \"s\" (objects.array[0]): jsonKeys[0].alias \"../x\" is not a usable file name: it must not contain '..' path elements",
            ),
            (
                "objectName: s\nobjectType: secret\njsonKeys:\n  - key: a\n    file: x",
                "object <unnamed> (objects.array[0]): jsonKeys must be a list of key paths or {key: <path>, alias: <file>} mappings (unknown field \"file\" in a jsonKeys entry: use key and alias at line 4, column 5)",
            ),
            (
                "objectName: s\nobjectType: secret\njsonKeys: username",
                "object <unnamed> (objects.array[0]): jsonKeys must be a list of key paths or {key: <path>, alias: <file>} mappings (expected sequence start at line 3, column 11)",
            ),
            (
                "objectName: s\nobjectNamePrefix: app-\nobjectType: secret",
                "object \"s\" (objects.array[0]): objectName cannot be combined with objectNamePrefix or objectTags: an entry either names one object or selects secrets by prefix or tags",
            ),
            (
                "objectNamePrefix: app-\nobjectType: cert",
                "object objectNamePrefix \"app-\" (objects.array[0]): objectNamePrefix and objectTags select secrets only: objectType must be secret, not cert",
            ),
            (
                "objectNamePrefix: app_\nobjectType: secret",
                "object <unnamed> (objects.array[0]): objectNamePrefix \"app_\" is not the start of a Key Vault object name: up to 127 characters of letters, digits and '-'",
            ),
            (
                "objectNamePrefix: app-\nobjectType: secret\nobjectVersion: abc",
                "object objectNamePrefix \"app-\" (objects.array[0]): objectVersion cannot be combined with objectNamePrefix or objectTags: every matching secret is mounted at its latest version",
            ),
            (
                "objectTags: {}\nobjectType: secret",
                "object <unnamed> (objects.array[0]): objectTags is empty: list at least one tag name and value",
            ),
            (
                "objectTags: [a]\nobjectType: secret",
                "object <unnamed> (objects.array[0]): objectTags must be a mapping of tag names to values (expected mapping start at line 1, column 13)",
            ),
            (
                "objectNamePrefix: app-\nobjectType: secret\njsonKeys: [a]",
                "object objectNamePrefix \"app-\" (objects.array[0]): jsonKeys cannot be combined with objectNamePrefix or objectTags: it reads a JSON-valued secret and writes one file per key",
            ),
        ];
        for (body, want) in cases {
            assert_eq!(one(body).err().as_deref(), Some(want), "{body}");
        }
    }

    #[test]
    fn conflicts_cover_json_keys_and_expanded_objects() {
        assert_eq!(
            all(&[
                "objectName: db\nobjectType: secret\njsonKeys: [user, password]",
                "objectName: password\nobjectType: secret",
            ])
            .err()
            .as_deref(),
            Some(
                "objects \"db\" and \"password\" both write \"password\": give one of them a different objectAlias"
            )
        );
        assert!(
            all(&[
                "objectName: db\nobjectType: secret\njsonKeys:\n  - key: user\n    alias: a/b",
                "objectName: a\nobjectType: secret",
            ])
            .is_err()
        );
        // A bulk entry has no known files until the vault is listed.
        let objects = all(&[
            "objectNamePrefix: app-\nobjectType: secret",
            "objectName: app-one\nobjectType: secret",
        ])
        .unwrap_or_default();
        assert_eq!(objects.len(), 2);
        let expanded = vec![objects[0].expand("app-one"), objects[1].clone()];
        assert_eq!(
            check_file_conflicts(&expanded)
                .err()
                .map(|e| e.to_string())
                .as_deref(),
            Some(
                "objects \"app-one\" (matched by objectNamePrefix \"app-\") and \"app-one\" both write \"app-one\": give one of them a different objectAlias"
            )
        );
    }

    #[test]
    fn every_problem_is_collected() {
        let yaml = "array:\n  - |\n    objectName: a\n    objectType: Secret\n  - |\n    objectName: b\n  - |\n    objectName: c\n    objectType: secret\n";
        let mut problems = Vec::new();
        let objects = parse_objects_collecting(yaml, &mut problems);
        assert_eq!(objects.len(), 1);
        let locations: Vec<String> = problems.iter().map(SpcError::location).collect();
        assert_eq!(locations, ["objects.array[0]", "objects.array[1]"]);
        assert_eq!(
            problems[1].detail(),
            "object \"b\": objectType is required: one of secret, key, cert"
        );
    }
}

//! `jsonKeys`: chosen keys of a JSON-valued secret, each as its own file.
//!
//! A string is written as its text (no quotes); any other value (number, boolean, null, object,
//! list) as compact JSON. The parsed document's strings are zeroized before it is dropped.

use super::ConvertError;
use crate::{sensitive::SecretBytes, spc::JsonKey};
use serde_json::Value;
use zeroize::Zeroize;

/// The contents of every key of `keys` in the JSON `value`, in order.
pub fn extract(
    value: &SecretBytes,
    keys: &[JsonKey],
    object: &str,
) -> Result<Vec<SecretBytes>, ConvertError> {
    let mut document: Value =
        serde_json::from_slice(value.expose()).map_err(|e| ConvertError::JsonInvalid {
            object: object.to_owned(),
            line: e.line(),
            column: e.column(),
        })?;
    let result = keys
        .iter()
        .map(|key| lookup(&document, key, object))
        .collect();
    wipe(&mut document);
    result
}

fn lookup(document: &Value, key: &JsonKey, object: &str) -> Result<SecretBytes, ConvertError> {
    let mut current = document;
    for (depth, element) in key.path.iter().enumerate() {
        let next = match current {
            Value::Object(map) => map.get(element),
            Value::Array(items) => element.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        let Some(next) = next else {
            let at = if depth == 0 {
                "the value".to_owned()
            } else {
                format!("\"{}\"", crate::text::quote(&key.path[..depth].join(".")))
            };
            let reason = match current {
                Value::Object(_) => format!("{at} has no key \"{}\"", crate::text::quote(element)),
                Value::Array(items) => format!(
                    "{at} is a list of {} items, which has no index \"{}\"",
                    items.len(),
                    crate::text::quote(element)
                ),
                other => format!("{at} is {}, not an object or a list", kind(other)),
            };
            return Err(ConvertError::JsonKeyMissing {
                object: object.to_owned(),
                key: key.key.clone(),
                reason,
            });
        };
        current = next;
    }
    Ok(SecretBytes::new(match current {
        Value::String(text) => text.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    }))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Overwrites every string of the document (the values that may be secret).
fn wipe(value: &mut Value) {
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => map.values_mut().for_each(wipe),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> JsonKey {
        JsonKey {
            key: text.to_owned(),
            path: text.split('.').map(str::to_owned).collect(),
            alias: text.to_owned(),
        }
    }

    fn run(json: &str, keys: &[&str]) -> Result<Vec<String>, String> {
        let keys: Vec<JsonKey> = keys.iter().map(|k| key(k)).collect();
        extract(
            &SecretBytes::new(json.as_bytes().to_vec()),
            &keys,
            "secret/db",
        )
        .map(|files| {
            files
                .iter()
                .map(|f| String::from_utf8_lossy(f.expose()).into_owned())
                .collect()
        })
        .map_err(|e| e.to_string())
    }

    #[test]
    fn values_by_type() {
        let json = r#"{"user":"admin","port":5432,"tls":true,"none":null,"hosts":["a","b"],"conn":{"db":"x","opts":{"ssl":"on"}}}"#;
        assert_eq!(
            run(
                json,
                &[
                    "user",
                    "port",
                    "tls",
                    "none",
                    "hosts",
                    "hosts.1",
                    "conn.opts",
                    "conn.opts.ssl"
                ]
            ),
            Ok(vec![
                "admin".to_owned(),
                "5432".to_owned(),
                "true".to_owned(),
                "null".to_owned(),
                r#"["a","b"]"#.to_owned(),
                "b".to_owned(),
                r#"{"ssl":"on"}"#.to_owned(),
                "on".to_owned(),
            ])
        );
    }

    #[test]
    fn errors_name_the_key_and_never_the_value() {
        let json = r#"{"user":"s3cr3t-user","conn":{"port":1},"hosts":["a"]}"#;
        let cases = [
            (
                "password",
                "jsonKeys of secret/db: key \"password\" is not in the secret's JSON value: the value has no key \"password\" (keys are case-sensitive)",
            ),
            (
                "conn.host",
                "jsonKeys of secret/db: key \"conn.host\" is not in the secret's JSON value: \"conn\" has no key \"host\" (keys are case-sensitive)",
            ),
            (
                "user.name",
                "jsonKeys of secret/db: key \"user.name\" is not in the secret's JSON value: \"user\" is a string, not an object or a list (keys are case-sensitive)",
            ),
            (
                "hosts.3",
                "jsonKeys of secret/db: key \"hosts.3\" is not in the secret's JSON value: \"hosts\" is a list of 1 items, which has no index \"3\" (keys are case-sensitive)",
            ),
        ];
        for (k, want) in cases {
            assert_eq!(run(json, &[k]).err().as_deref(), Some(want));
        }
        let e = run("not json s3cr3t", &["a"]).err().unwrap_or_default();
        assert_eq!(
            e,
            "jsonKeys of secret/db: the secret's value is not JSON (error at line 1 column 2); store a JSON value or remove jsonKeys"
        );
        assert!(!e.contains("s3cr3t"));
        let e = run("[1, 2]", &["a"]).err().unwrap_or_default();
        assert!(
            e.contains("the value is a list of 2 items, which has no index \"a\""),
            "{e}"
        );
    }
}

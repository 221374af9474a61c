//! Validating one object's fields: names, types, versions, aliases, formats, encodings, modes,
//! history, and the opt-in `optional`, `jsonKeys`, `keyvaultName`, `objectNamePrefix` and
//! `objectTags`. Every error names the object and the field and says what is allowed.

use super::{
    JsonKey, KeyVaultObject, MAX_JSON_KEYS, MAX_SELECTOR_TAGS, MAX_VERSION_HISTORY, ObjectEncoding,
    ObjectFormat, ObjectType, Selector, SpcError, check_vault_name, file_name,
    yaml::{Fields, JSON_KEYS, OBJECT_TAGS, RawJsonKey, field},
};
use crate::text::quote;
use std::collections::BTreeMap;

/// Splits a `jsonKeys` path on unescaped dots (`\.` is a dot inside a key, `\\` a backslash).
fn split_key_path(key: &str) -> Result<Vec<String>, &'static str> {
    let mut elements = vec![String::new()];
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('.' | '\\')) => {
                    if let Some(last) = elements.last_mut() {
                        last.push(escaped);
                    }
                }
                _ => return Err("has a '\\' that is not followed by '.' or '\\'"),
            },
            '.' => elements.push(String::new()),
            other => {
                if let Some(last) = elements.last_mut() {
                    last.push(other);
                }
            }
        }
    }
    if elements.iter().any(String::is_empty) {
        return Err("has an empty element (a leading, trailing or doubled '.')");
    }
    Ok(elements)
}

/// Validates `jsonKeys` (entries numbered from 0 in messages).
fn parse_json_keys(
    raw: &[RawJsonKey],
    fail: &dyn Fn(String) -> SpcError,
) -> Result<Vec<JsonKey>, SpcError> {
    if raw.is_empty() {
        return Err(fail(format!(
            "{JSON_KEYS} is empty: list at least one key path, or remove {JSON_KEYS}"
        )));
    }
    if raw.len() > MAX_JSON_KEYS {
        return Err(fail(format!(
            "{JSON_KEYS} lists {} keys; at most {MAX_JSON_KEYS} are accepted",
            raw.len()
        )));
    }
    let mut keys = Vec::with_capacity(raw.len());
    for (i, entry) in raw.iter().enumerate() {
        let key = entry.key.as_deref().map(str::trim).unwrap_or_default();
        if key.is_empty() {
            return Err(fail(format!(
                "{JSON_KEYS}[{i}].key is required: a dotted path into the JSON value, such as db.password"
            )));
        }
        let path = split_key_path(key).map_err(|problem| {
            fail(format!(
                "{JSON_KEYS}[{i}].key \"{}\" is not a dotted path: it {problem}",
                crate::text::quote(key)
            ))
        })?;
        let alias = entry
            .alias
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty());
        let file = alias.unwrap_or(key);
        if let Err(problem) = file_name::check(file) {
            let which = if alias.is_some() {
                format!("{JSON_KEYS}[{i}].alias")
            } else {
                format!("{JSON_KEYS}[{i}].key (used as file name without alias)")
            };
            return Err(fail(format!(
                "{which} \"{}\" is not a usable file name: it {problem}",
                crate::text::quote(file)
            )));
        }
        keys.push(JsonKey {
            key: key.to_owned(),
            path,
            alias: file.to_owned(),
        });
    }
    Ok(keys)
}

/// Validates `objectNamePrefix` and `objectTags`; `None` when neither is set.
fn parse_selector(
    fields: &Fields,
    fail: &dyn Fn(String) -> SpcError,
) -> Result<Option<Selector>, SpcError> {
    let prefix = Some(field(fields, "objectNamePrefix")).filter(|p| !p.is_empty());
    if let Some(p) = &prefix
        && (p.len() > 127 || !p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err(fail(format!(
            "objectNamePrefix \"{}\" is not the start of a Key Vault object name: up to 127 characters of letters, digits and '-'",
            crate::text::quote(p)
        )));
    }
    let raw_tags = fields.tags.clone().unwrap_or_default();
    if raw_tags.len() > MAX_SELECTOR_TAGS {
        return Err(fail(format!(
            "{OBJECT_TAGS} lists {} tags; at most {MAX_SELECTOR_TAGS} are accepted (Key Vault allows 15 per secret)",
            raw_tags.len()
        )));
    }
    let mut tags = BTreeMap::new();
    for (key, value) in raw_tags {
        let key = key.trim().to_owned();
        let value = value.unwrap_or_default().trim().to_owned();
        if key.is_empty() || key.len() > 512 || value.len() > 256 {
            return Err(fail(format!(
                "{OBJECT_TAGS} has a tag \"{}\" that Key Vault cannot store: names are 1-512 characters, values at most 256",
                crate::text::quote(&key)
            )));
        }
        tags.insert(key, value);
    }
    if prefix.is_none() && tags.is_empty() {
        if fields.tags.is_some() {
            return Err(fail(format!(
                "{OBJECT_TAGS} is empty: list at least one tag name and value"
            )));
        }
        return Ok(None);
    }
    Ok(Some(Selector { prefix, tags }))
}

/// Parses a boolean object field like Go's `strconv.ParseBool`; empty is false.
fn bool_field(
    fields: &Fields,
    key: &str,
    fail: &dyn Fn(String) -> SpcError,
) -> Result<bool, SpcError> {
    let text = field(fields, key);
    if text.is_empty() {
        return Ok(false);
    }
    crate::compat::parse_go_bool(&text).map_err(|_| {
        fail(format!(
            "{key} \"{}\" is not a boolean (use true or false)",
            crate::text::quote(&text)
        ))
    })
}

#[allow(clippy::too_many_lines)] // one validation step per field, in the order of the docs
/// Validates the fields of object `index`.
pub(super) fn parse_object(index: usize, fields: &Fields) -> Result<KeyVaultObject, SpcError> {
    let name = field(fields, "objectName");
    let early_fail = |problem: String| SpcError::Object {
        index,
        object: if name.is_empty() {
            "<unnamed>".to_owned()
        } else {
            format!("\"{}\"", quote(&name))
        },
        problem,
    };
    let selector = parse_selector(fields, &early_fail)?;
    let shown = match (&selector, name.is_empty()) {
        (_, false) => format!("\"{}\"", quote(&name)),
        (Some(selector), true) => selector.to_string(),
        (None, true) => "<unnamed>".to_owned(),
    };
    let fail = |problem: String| SpcError::Object {
        index,
        object: shown.clone(),
        problem,
    };
    if name.is_empty() && selector.is_none() {
        return Err(fail("objectName is required".into()));
    }
    if !name.is_empty() && selector.is_some() {
        return Err(fail(
            "objectName cannot be combined with objectNamePrefix or objectTags: an entry either names one object or selects secrets by prefix or tags"
                .into(),
        ));
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
    if selector.is_some() && object_type != ObjectType::Secret {
        return Err(fail(format!(
            "objectNamePrefix and objectTags select secrets only: objectType must be secret, not {}",
            object_type.as_str()
        )));
    }

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
    if selector.is_none()
        && (!name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || name.len() > 127)
    {
        return Err(fail(
            "objectName must be a Key Vault object name: 1-127 characters of letters, digits and '-'"
                .into(),
        ));
    }

    let alias = Some(field(fields, "objectAlias")).filter(|a| !a.is_empty());
    if selector.is_none() || alias.is_some() {
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

    let optional = bool_field(fields, "optional", &fail)?;

    let keyvault_name = Some(field(fields, "keyvaultName")).filter(|v| !v.is_empty());
    if let Some(vault) = &keyvault_name
        && check_vault_name(vault).is_err()
    {
        return Err(fail(format!(
            "keyvaultName \"{}\" is not a vault name: 3 to 24 characters of letters, digits and '-'",
            crate::text::quote(vault)
        )));
    }

    let json_keys = match &fields.json_keys {
        None => Vec::new(),
        Some(raw) => {
            let combined = if object_type != ObjectType::Secret {
                Some(format!("objectType {}", object_type.as_str()))
            } else if selector.is_some() {
                Some("objectNamePrefix or objectTags".to_owned())
            } else if alias.is_some() {
                Some("objectAlias (name each file with jsonKeys[i].alias)".to_owned())
            } else if version_history > 1 {
                Some("objectVersionHistory".to_owned())
            } else if encoding != ObjectEncoding::Utf8 {
                Some(format!(
                    "objectEncoding {}",
                    encoding_text.to_ascii_lowercase()
                ))
            } else if format == ObjectFormat::Pfx {
                Some("objectFormat pfx".to_owned())
            } else {
                None
            };
            if let Some(other) = combined {
                return Err(fail(format!(
                    "{JSON_KEYS} cannot be combined with {other}: it reads a JSON-valued secret and writes one file per key"
                )));
            }
            parse_json_keys(raw, &fail)?
        }
    };

    if selector.is_some() {
        let combined = if version.is_some() {
            Some("objectVersion")
        } else if version_history > 1 {
            Some("objectVersionHistory")
        } else {
            None
        };
        if let Some(other) = combined {
            return Err(fail(format!(
                "{other} cannot be combined with objectNamePrefix or objectTags: every matching secret is mounted at its latest version"
            )));
        }
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
        optional,
        json_keys,
        keyvault_name,
        selector,
        matched_by: None,
    })
}

//! Reading the `objects` parameter as YAML: the `array:` of object documents, each a mapping of
//! fields kept as written (validation is [`super::fields`]). Hostile documents (alias bombs, deep
//! nesting, huge inputs) are stopped by budgets before they cost anything.

use super::{MAX_OBJECTS, MAX_OBJECTS_YAML_BYTES, SpcError};
use serde::{
    Deserialize, Deserializer,
    de::{self, IgnoredAny, MapAccess, Visitor},
};
use std::{collections::BTreeMap, fmt};

/// Object fields as written. Scalars are read as their source text, so `off`, `yes` or `0600`
/// stay strings (YAML 1.1 booleans and octals do not change names or modes). `jsonKeys` and
/// `objectTags` are the only structured fields.
#[derive(Debug, Default)]
pub(super) struct Fields {
    pub(super) scalars: BTreeMap<String, Option<String>>,
    pub(super) json_keys: Option<Vec<RawJsonKey>>,
    pub(super) tags: Option<BTreeMap<String, Option<String>>>,
}

pub(super) const JSON_KEYS: &str = "jsonKeys";
pub(super) const OBJECT_TAGS: &str = "objectTags";

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of object fields")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Fields::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        JSON_KEYS => {
                            let keys = map.next_value::<Option<Vec<RawJsonKey>>>().map_err(|e| {
                                de::Error::custom(format!(
                                    "{JSON_KEYS} must be a list of key paths or {{key: <path>, alias: <file>}} mappings ({e})"
                                ))
                            })?;
                            fields.json_keys = keys;
                        }
                        OBJECT_TAGS => {
                            let tags = map
                                .next_value::<Option<BTreeMap<String, Option<String>>>>()
                                .map_err(|e| {
                                    de::Error::custom(format!(
                                        "{OBJECT_TAGS} must be a mapping of tag names to values ({e})"
                                    ))
                                })?;
                            fields.tags = tags;
                        }
                        _ => {
                            let value = map.next_value::<Option<String>>()?;
                            fields.scalars.insert(key, value);
                        }
                    }
                }
                Ok(fields)
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// One `jsonKeys` entry as written: `- db.password` or `- {key: db.password, alias: pw}`.
#[derive(Debug, Default)]
pub(super) struct RawJsonKey {
    pub(super) key: Option<String>,
    pub(super) alias: Option<String>,
}

impl<'de> Deserialize<'de> for RawJsonKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = RawJsonKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key path or a mapping with key and alias")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawJsonKey, E> {
                Ok(RawJsonKey {
                    key: Some(v.to_owned()),
                    alias: None,
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawJsonKey, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawJsonKey, A::Error> {
                let mut raw = RawJsonKey::default();
                while let Some(field) = map.next_key::<String>()? {
                    match field.as_str() {
                        "key" => raw.key = map.next_value::<Option<String>>()?,
                        "alias" => raw.alias = map.next_value::<Option<String>>()?,
                        other => {
                            let _ = map.next_value::<IgnoredAny>()?;
                            return Err(de::Error::custom(format!(
                                "unknown field \"{}\" in a jsonKeys entry: use key and alias",
                                crate::text::quote(other)
                            )));
                        }
                    }
                }
                Ok(raw)
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

#[derive(Debug, Deserialize)]
struct ObjectsDoc {
    #[serde(default)]
    array: Vec<String>,
}

fn short(e: &serde_saphyr::Error) -> String {
    // YAML errors can quote input; keep the first line, cut to a sane length, escaped.
    let text = e.to_string();
    crate::text::printable(text.lines().next().unwrap_or_default(), 200)
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

/// A scalar field, trimmed; empty when absent or null.
pub(super) fn field(fields: &Fields, key: &str) -> String {
    fields
        .scalars
        .get(key)
        .and_then(Option::as_deref)
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// Reads the `objects` YAML into one entry per object: its fields, or why its YAML is not a
/// mapping of fields. Problems of the whole parameter are recorded and give no entries.
pub(super) fn read(yaml: &str, problems: &mut Vec<SpcError>) -> Vec<Result<Fields, SpcError>> {
    if yaml.trim().is_empty() {
        problems.push(SpcError::Missing {
            name: "objects",
            hint: "list the objects to mount as YAML: array: [\"objectName: x\\nobjectType: secret\"]",
        });
        return Vec::new();
    }
    if yaml.len() > MAX_OBJECTS_YAML_BYTES {
        problems.push(SpcError::ObjectsYaml(format!(
            "is {} bytes long; at most {MAX_OBJECTS_YAML_BYTES} are accepted",
            yaml.len()
        )));
        return Vec::new();
    }
    let doc: ObjectsDoc = match serde_saphyr::from_str_with_options(yaml, yaml_options()) {
        Ok(doc) => doc,
        Err(e) => {
            problems.push(SpcError::ObjectsYaml(format!(
                "is not valid YAML of the form array: [\"<object YAML>\", ...] (each object is a string): {}",
                short(&e)
            )));
            return Vec::new();
        }
    };
    if doc.array.is_empty() {
        problems.push(SpcError::ObjectsYaml(
            "has no objects: its array must list at least one object".into(),
        ));
        return Vec::new();
    }
    if doc.array.len() > MAX_OBJECTS {
        problems.push(SpcError::ObjectsYaml(format!(
            "lists {} objects; at most {MAX_OBJECTS} are accepted",
            doc.array.len()
        )));
        return Vec::new();
    }
    doc.array
        .iter()
        .enumerate()
        .map(|(index, text)| {
            serde_saphyr::from_str_with_options::<Fields>(text, yaml_options()).map_err(|e| {
                let text = short(&e);
                let problem = if text.starts_with(JSON_KEYS) || text.starts_with(OBJECT_TAGS) {
                    text
                } else {
                    format!("is not a YAML mapping of object fields: {text}")
                };
                SpcError::Object {
                    index,
                    object: "<unnamed>".into(),
                    problem,
                }
            })
        })
        .collect()
}

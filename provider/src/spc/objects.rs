//! The `objects` parameter: YAML `array:` of YAML documents, one per Key Vault object.
//!
//! Besides the Go provider's fields, an object may carry (all opt-in, see the README):
//! `optional`, `jsonKeys`, `keyvaultName`, and, instead of `objectName`, `objectNamePrefix` and/or
//! `objectTags` (a bulk entry, expanded after listing the vault's secrets).

use super::{
    MAX_JSON_KEYS, MAX_OBJECTS, MAX_OBJECTS_YAML_BYTES, MAX_SELECTOR_TAGS, MAX_VERSION_HISTORY,
    SpcError, check_vault_name, file_name, quote,
};
use serde::{
    Deserialize, Deserializer,
    de::{self, IgnoredAny, MapAccess, Visitor},
};
use std::{
    collections::{BTreeMap, HashMap},
    fmt,
};

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

/// One entry of `jsonKeys`: a dotted path into the secret's JSON value and the file it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonKey {
    /// The path as written (`db.password`, `hosts.0`, `a\.b` for a key containing a dot).
    pub key: String,
    /// The path split into elements, escapes resolved.
    pub path: Vec<String>,
    /// The file name (`alias`, else the key as written).
    pub alias: String,
}

/// `objectNamePrefix` and/or `objectTags` of a bulk entry: every enabled secret that matches all
/// of them is mounted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// Names must start with this (ASCII case-insensitive, like Key Vault names).
    pub prefix: Option<String>,
    /// Tags that must be present with exactly these values (tag names case-insensitive).
    pub tags: BTreeMap<String, String>,
}

impl Selector {
    /// Whether a secret with `name` and `tags` is selected.
    pub fn matches(&self, name: &str, tags: &HashMap<String, String>) -> bool {
        let prefix_ok = self.prefix.as_deref().is_none_or(|p| {
            name.len() >= p.len() && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
        });
        prefix_ok
            && self.tags.iter().all(|(key, value)| {
                tags.iter()
                    .any(|(k, v)| k.eq_ignore_ascii_case(key) && v == value)
            })
    }
}

/// How a selector is named in messages: `objectNamePrefix "app-"`, `objectTags {team: "x"}`.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(prefix) = &self.prefix {
            write!(f, "objectNamePrefix \"{}\"", crate::text::quote(prefix))?;
            if !self.tags.is_empty() {
                f.write_str(" and ")?;
            }
        }
        if !self.tags.is_empty() {
            f.write_str("objectTags {")?;
            for (i, (key, value)) in self.tags.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(
                    f,
                    "{}: \"{}\"",
                    crate::text::quote(key),
                    crate::text::quote(value)
                )?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

/// One validated object of a SecretProviderClass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVaultObject {
    /// `objectName`: the name in Key Vault (empty for a bulk entry).
    pub name: String,
    /// `objectType`.
    pub object_type: ObjectType,
    /// `objectVersion`, `None` for the latest.
    pub version: Option<String>,
    /// `objectAlias`, `None` to use `objectName` as file name (a bulk entry: the folder).
    pub alias: Option<String>,
    /// `objectFormat`.
    pub format: ObjectFormat,
    /// `objectEncoding`.
    pub encoding: ObjectEncoding,
    /// `filePermission`, parsed from octal; `None` for the Mount's default.
    pub file_permission: Option<u32>,
    /// `objectVersionHistory`: 1 for a single file, N > 1 for `<file>/0..N-1` (starting at
    /// `objectVersion` when it is set, else at the latest version).
    pub version_history: u32,
    /// `optional`: a missing or disabled object is skipped instead of failing the Mount.
    pub optional: bool,
    /// `jsonKeys`: write these keys of the JSON value as files instead of the whole value.
    pub json_keys: Vec<JsonKey>,
    /// `keyvaultName` of this object when it differs from the SecretProviderClass's vault.
    pub keyvault_name: Option<String>,
    /// `objectNamePrefix` / `objectTags`: a bulk entry, expanded when mounting.
    pub selector: Option<Selector>,
    /// For an object expanded from a bulk entry: that entry's selector, for messages.
    pub matched_by: Option<String>,
}

impl KeyVaultObject {
    /// The file name: `objectAlias` or else `objectName`.
    pub fn file_name(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }

    /// The object version id: `<objectType>/<objectName>`, with `@<keyvaultName>` appended for
    /// an object read from another vault than the SecretProviderClass's.
    pub fn version_id(&self) -> String {
        match &self.keyvault_name {
            Some(vault) => format!("{}/{}@{vault}", self.object_type.as_str(), self.name),
            None => format!("{}/{}", self.object_type.as_str(), self.name),
        }
    }

    /// How the object is named in messages: `"db-pass"`, `objectNamePrefix "app-"`, or
    /// `"app-one" (matched by objectNamePrefix "app-")`.
    pub fn shown(&self) -> String {
        match (&self.selector, &self.matched_by) {
            (Some(selector), _) => selector.to_string(),
            (None, Some(by)) => format!("\"{}\" (matched by {by})", crate::text::quote(&self.name)),
            (None, None) => format!("\"{}\"", crate::text::quote(&self.name)),
        }
    }

    /// The object that a bulk entry yields for the secret `name`: latest version, file
    /// `<objectAlias>/<name>` (or `<name>`), the entry's other settings.
    #[must_use]
    pub fn expand(&self, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            alias: self.alias.as_ref().map(|folder| format!("{folder}/{name}")),
            selector: None,
            matched_by: self.selector.as_ref().map(ToString::to_string),
            ..self.clone()
        }
    }
}

/// Object fields as written. Scalars are read as their source text, so `off`, `yes` or `0600`
/// stay strings (YAML 1.1 booleans and octals do not change names or modes). `jsonKeys` and
/// `objectTags` are the only structured fields.
#[derive(Debug, Default)]
struct Fields {
    scalars: BTreeMap<String, Option<String>>,
    json_keys: Option<Vec<RawJsonKey>>,
    tags: Option<BTreeMap<String, Option<String>>>,
}

const JSON_KEYS: &str = "jsonKeys";
const OBJECT_TAGS: &str = "objectTags";

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
struct RawJsonKey {
    key: Option<String>,
    alias: Option<String>,
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
    let before = problems.len();
    let mut objects = Vec::with_capacity(doc.array.len());
    for (index, text) in doc.array.iter().enumerate() {
        let parsed = serde_saphyr::from_str_with_options::<Fields>(text, yaml_options())
            .map_err(|e| {
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
            .and_then(|fields| parse_object(index, &fields));
        match parsed {
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

fn field(fields: &Fields, key: &str) -> String {
    fields
        .scalars
        .get(key)
        .and_then(Option::as_deref)
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

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
    crate::cli::parse_go_bool(&text).map_err(|_| {
        fail(format!(
            "{key} \"{}\" is not a boolean (use true or false)",
            crate::text::quote(&text)
        ))
    })
}

#[allow(clippy::too_many_lines)] // one validation step per field, in the order of the docs
fn parse_object(index: usize, fields: &Fields) -> Result<KeyVaultObject, SpcError> {
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

impl KeyVaultObject {
    /// Every file path the object will produce (none for a bulk entry before it is expanded;
    /// without the `.crt`/`.key` files of certificate-backed secrets, which depend on the value).
    pub fn planned_files(&self) -> Vec<String> {
        planned_paths(self)
    }
}

/// Every file path an object will produce, for conflict checks (none for a bulk entry before it
/// is expanded; `.crt`/`.key` files are checked in the Mount's reply).
fn planned_paths(object: &KeyVaultObject) -> Vec<String> {
    if object.selector.is_some() {
        return Vec::new();
    }
    if !object.json_keys.is_empty() {
        return object.json_keys.iter().map(|k| k.alias.clone()).collect();
    }
    let base = object.file_name();
    if object.version_history > 1 {
        (0..object.version_history)
            .map(|i| format!("{base}/{i}"))
            .collect()
    } else {
        vec![base.to_owned()]
    }
}

/// The first file conflict among `objects`, if any.
pub fn check_file_conflicts(objects: &[KeyVaultObject]) -> Result<(), SpcError> {
    match file_conflicts(objects).into_iter().next() {
        Some(conflict) => Err(conflict),
        None => Ok(()),
    }
}

/// Every file conflict among `objects`: two objects writing one path, or one object's file being
/// another's folder.
pub(crate) fn file_conflicts(objects: &[KeyVaultObject]) -> Vec<SpcError> {
    // path -> owning object; folders are recorded too so that "a" and "a/b" conflict.
    let mut files: HashMap<String, String> = HashMap::new();
    let mut folders: HashMap<String, String> = HashMap::new();
    let mut conflicts = Vec::new();
    for object in objects {
        let shown = object.shown();
        'paths: for path in planned_paths(object) {
            let conflict = |other: &str| SpcError::FileConflict {
                path: quote(&path),
                first: other.to_owned(),
                second: shown.clone(),
            };
            if let Some(other) = files.get(&path).or_else(|| folders.get(&path)) {
                conflicts.push(conflict(other));
                continue;
            }
            let elements: Vec<&str> = path.split('/').collect();
            let mut prefix = String::new();
            for element in &elements[..elements.len() - 1] {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(element);
                if let Some(other) = files.get(&prefix) {
                    conflicts.push(conflict(other));
                    continue 'paths;
                }
            }
            let mut prefix = String::new();
            for element in &elements[..elements.len() - 1] {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(element);
                folders.insert(prefix.clone(), shown.clone());
            }
            files.insert(path, shown.clone());
        }
    }
    conflicts
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

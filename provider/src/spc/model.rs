//! What one Key Vault object of the `objects` parameter is, once read and validated: its type,
//! version, file name, format, encoding, mode and the opt-in fields of this provider.

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

impl KeyVaultObject {
    /// Every file path the object will produce (none for a bulk entry before it is expanded;
    /// without the `.crt`/`.key` files of certificate-backed secrets, which depend on the value).
    pub fn planned_files(&self) -> Vec<String> {
        if self.selector.is_some() {
            return Vec::new();
        }
        if !self.json_keys.is_empty() {
            return self.json_keys.iter().map(|k| k.alias.clone()).collect();
        }
        let base = self.file_name();
        if self.version_history > 1 {
            (0..self.version_history)
                .map(|i| format!("{base}/{i}"))
                .collect()
        } else {
            vec![base.to_owned()]
        }
    }
}

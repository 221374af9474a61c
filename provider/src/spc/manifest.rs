//! SecretProviderClass manifests: Kubernetes YAML files with one or more documents, read
//! leniently so that every problem can be reported with its path instead of stopping at the
//! first type error. Used by the offline validator and by the standalone agent.

use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, SeqAccess, Visitor},
};
use std::{collections::HashMap, fmt};

/// The API group of SecretProviderClass.
pub const API_GROUP: &str = "secrets-store.csi.x-k8s.io";
/// The kind this provider reads.
pub const KIND: &str = "SecretProviderClass";
/// The `spec.provider` this provider serves.
pub const PROVIDER: &str = "azure";
/// Largest manifest file read, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;

/// A YAML node as written. Plain scalars that YAML types (booleans, numbers, null) keep their type
/// so that a parameter Kubernetes would reject (parameters are strings) can be reported.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A string (quoted, block, or a plain scalar that is not a boolean, number or null).
    Str(String),
    /// A boolean such as `true`.
    Bool(bool),
    /// An integer, as text.
    Int(String),
    /// A floating-point number.
    Float(f64),
    /// `null`, `~` or nothing.
    Null,
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<(String, Node)>),
}

impl Node {
    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Self::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string of a `Str` node.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// What the node is, for messages: `a string`, `a boolean`, `a list`, ...
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Str(_) => "a string",
            Self::Bool(_) => "a boolean",
            Self::Int(_) | Self::Float(_) => "a number",
            Self::Null => "empty",
            Self::Seq(_) => "a list",
            Self::Map(_) => "a mapping",
        }
    }

    /// A scalar as text (`true`, `42`, the string itself); `None` for lists and mappings.
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Self::Str(s) | Self::Int(s) => Some(s.clone()),
            Self::Bool(b) => Some(b.to_string()),
            Self::Float(f) => Some(f.to_string()),
            Self::Null => Some(String::new()),
            Self::Seq(_) | Self::Map(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::Int(v.to_string()))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
                Ok(Node::Int(v.to_string()))
            }
            fn visit_u128<E>(self, v: u128) -> Result<Node, E> {
                Ok(Node::Int(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Node, D2::Error> {
                Node::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Node>()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Node>()? {
                    let key = key.scalar_text().unwrap_or_else(|| "<complex key>".into());
                    entries.push((key, map.next_value::<Node>()?));
                }
                Ok(Node::Map(entries))
            }
        }
        deserializer.deserialize_any(NodeVisitor)
    }
}

/// Reads every document of a YAML stream (empty documents are skipped).
pub fn documents(text: &str) -> Result<Vec<Node>, String> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(format!(
            "is {} bytes long; at most {MAX_MANIFEST_BYTES} are read",
            text.len()
        ));
    }
    // Kubernetes reads manifests as YAML 1.1: `0600` is an octal number, `yes` a boolean.
    let options = serde_saphyr::options! {
        legacy_octal_numbers: true,
    };
    serde_saphyr::from_multiple_with_options::<Node>(text, options).map_err(|e| {
        let text = e.to_string();
        let line: String = text
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        format!("is not valid YAML: {line}")
    })
}

/// A problem found in a manifest: where (`spec.parameters.objects.array[1]`) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The path inside the document.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A SecretProviderClass for `provider: azure`, with the problems found in its structure.
#[derive(Debug, Clone, Default)]
pub struct SpcManifest {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, if set.
    pub namespace: Option<String>,
    /// `spec.parameters`, every value as text.
    pub parameters: HashMap<String, String>,
    /// `spec.secretObjects[i].data[j].objectName` with their paths.
    pub secret_object_files: Vec<(String, String)>,
    /// Structural problems (types, missing fields); parameter rules are checked separately.
    pub problems: Vec<Problem>,
}

/// What one document is.
#[derive(Debug, Clone)]
pub enum Document {
    /// Not a SecretProviderClass (its kind, or empty).
    OtherKind(String),
    /// A SecretProviderClass for another provider (name, provider).
    OtherProvider(String, String),
    /// A SecretProviderClass for this provider.
    Azure(Box<SpcManifest>),
}

/// Classifies a document and, for an Azure SecretProviderClass, collects its parts.
#[allow(clippy::too_many_lines)] // one step per field of the manifest
pub fn classify(node: &Node) -> Document {
    let kind = node.get("kind").and_then(Node::as_str).unwrap_or_default();
    if kind != KIND {
        return Document::OtherKind(kind.to_owned());
    }
    let name = node
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Node::as_str)
        .unwrap_or_default()
        .to_owned();
    let spec = node.get("spec");
    let provider = spec
        .and_then(|s| s.get("provider"))
        .and_then(Node::as_str)
        .unwrap_or_default();
    if !provider.is_empty() && provider != PROVIDER {
        return Document::OtherProvider(name, provider.to_owned());
    }
    let mut manifest = SpcManifest {
        name,
        namespace: node
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Node::as_str)
            .map(str::to_owned),
        ..SpcManifest::default()
    };
    let problems = &mut manifest.problems;
    match node.get("apiVersion").and_then(Node::as_str) {
        Some(v) if v == format!("{API_GROUP}/v1") || v == format!("{API_GROUP}/v1alpha1") => {}
        Some(v) => problems.push(Problem::new(
            "apiVersion",
            format!(
                "is \"{}\", not {API_GROUP}/v1 (or the older v1alpha1)",
                crate::text::quote(v)
            ),
        )),
        None => problems.push(Problem::new(
            "apiVersion",
            format!("is required: {API_GROUP}/v1"),
        )),
    }
    if manifest.name.is_empty() {
        problems.push(Problem::new(
            "metadata.name",
            "is required: the name pods refer to in volumeAttributes.secretProviderClass",
        ));
    }
    let Some(spec) = spec.filter(|s| matches!(s, Node::Map(_))) else {
        problems.push(Problem::new(
            "spec",
            "is required: a mapping with provider: azure and parameters",
        ));
        return Document::Azure(Box::new(manifest));
    };
    if provider.is_empty() {
        problems.push(Problem::new(
            "spec.provider",
            format!("is required: {PROVIDER}"),
        ));
    }
    match spec.get("parameters") {
        None | Some(Node::Null) => {}
        Some(Node::Map(entries)) => {
            for (key, value) in entries {
                let text = value.scalar_text();
                match value {
                    Node::Str(_) | Node::Null => {}
                    Node::Bool(_) | Node::Int(_) | Node::Float(_) => problems.push(Problem::new(
                        format!("spec.parameters.{key}"),
                        format!(
                            "is {}, but parameters are strings and Kubernetes rejects other types: quote the value (\"{}\")",
                            value.describe(),
                            text.clone().unwrap_or_default()
                        ),
                    )),
                    Node::Seq(_) | Node::Map(_) => problems.push(Problem::new(
                        format!("spec.parameters.{key}"),
                        format!(
                            "is {}, but parameters are strings (objects is a YAML text: write it as a block scalar, objects: |)",
                            value.describe()
                        ),
                    )),
                }
                if let Some(text) = text {
                    manifest.parameters.insert(key.clone(), text);
                }
            }
        }
        Some(other) => problems.push(Problem::new(
            "spec.parameters",
            format!(
                "is {}, but must be a mapping of parameter names to strings",
                other.describe()
            ),
        )),
    }
    if let Some(Node::Seq(secret_objects)) = spec.get("secretObjects") {
        for (i, secret) in secret_objects.iter().enumerate() {
            let Some(Node::Seq(data)) = secret.get("data") else {
                continue;
            };
            for (j, entry) in data.iter().enumerate() {
                if let Some(object) = entry.get("objectName").and_then(Node::scalar_text) {
                    manifest.secret_object_files.push((
                        format!("spec.secretObjects[{i}].data[{j}].objectName"),
                        object,
                    ));
                }
            }
        }
    }
    Document::Azure(Box::new(manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_keep_their_yaml_type() {
        let docs = documents(
            "a: text\nb: yes\nc: 0600\nd: '0600'\ne:\nf: [1, x]\ng: |\n  block\n---\n---\nkind: X\n",
        )
        .unwrap_or_default();
        assert_eq!(docs.len(), 2, "{docs:?}");
        let d = &docs[0];
        assert_eq!(d.get("a"), Some(&Node::Str("text".into())));
        assert_eq!(d.get("b"), Some(&Node::Bool(true)));
        assert!(matches!(d.get("c"), Some(Node::Int(_))));
        assert_eq!(d.get("d"), Some(&Node::Str("0600".into())));
        assert_eq!(d.get("e"), Some(&Node::Null));
        assert!(matches!(d.get("f"), Some(Node::Seq(items)) if items.len() == 2));
        assert_eq!(d.get("g"), Some(&Node::Str("block\n".into())));
    }

    #[test]
    fn syntax_errors_are_reported() {
        let e = documents("a: [unclosed\n").err().unwrap_or_default();
        assert!(e.starts_with("is not valid YAML: "), "{e}");
    }

    #[test]
    fn classifies_documents() {
        let docs = documents(
            "kind: ConfigMap\n---\nkind: SecretProviderClass\napiVersion: secrets-store.csi.x-k8s.io/v1\nmetadata: {name: x}\nspec: {provider: vault}\n---\nkind: SecretProviderClass\napiVersion: v1\nspec:\n  provider: azure\n  parameters:\n    keyvaultName: kv1\n    usePodIdentity: false\n    objects: [a]\n  secretObjects:\n  - secretName: s\n    data:\n    - objectName: db\n      key: k\n",
        )
        .unwrap_or_default();
        assert!(matches!(classify(&docs[0]), Document::OtherKind(k) if k == "ConfigMap"));
        assert!(
            matches!(classify(&docs[1]), Document::OtherProvider(n, p) if n == "x" && p == "vault")
        );
        let Document::Azure(spc) = classify(&docs[2]) else {
            unreachable!("an azure SPC")
        };
        let problems: Vec<String> = spc.problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "apiVersion: is \"v1\", not secrets-store.csi.x-k8s.io/v1 (or the older v1alpha1)",
                "metadata.name: is required: the name pods refer to in volumeAttributes.secretProviderClass",
                "spec.parameters.usePodIdentity: is a boolean, but parameters are strings and Kubernetes rejects other types: quote the value (\"false\")",
                "spec.parameters.objects: is a list, but parameters are strings (objects is a YAML text: write it as a block scalar, objects: |)",
            ]
        );
        assert_eq!(
            spc.parameters.get("usePodIdentity").map(String::as_str),
            Some("false")
        );
        assert_eq!(
            spc.secret_object_files,
            [(
                "spec.secretObjects[0].data[0].objectName".to_owned(),
                "db".to_owned()
            )]
        );
    }
}

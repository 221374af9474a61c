//! SecretProviderClass parameters and objects, parsed and validated with the Go provider's rules.
//!
//! Values are trimmed, keys are case-sensitive, unknown keys are ignored. Every error names the
//! parameter or object and says what is allowed; they map to gRPC `InvalidArgument`.

mod conflicts;
mod fields;
pub mod file_name;
pub mod go_parity;
pub mod manifest;
mod model;
mod objects;
mod yaml;

pub use conflicts::{check_file_conflicts, path_conflicts};
pub use model::{JsonKey, KeyVaultObject, ObjectEncoding, ObjectFormat, ObjectType, Selector};
pub use objects::parse_objects;

use crate::cloud::CloudName;
use crate::text::quote;
use std::collections::HashMap;

/// Largest `objects` YAML accepted, in bytes.
pub const MAX_OBJECTS_YAML_BYTES: usize = 1024 * 1024;
/// Most objects accepted in one SecretProviderClass.
pub const MAX_OBJECTS: usize = 1000;
/// Largest `objectVersionHistory` accepted.
pub const MAX_VERSION_HISTORY: u32 = 100;
/// Most `jsonKeys` entries of one object.
pub const MAX_JSON_KEYS: usize = 100;
/// Most `objectTags` of one bulk entry (Key Vault stores at most 15 tags per secret).
pub const MAX_SELECTOR_TAGS: usize = 15;
/// Most secrets one bulk entry (`objectNamePrefix` / `objectTags`) may mount; more is an error.
pub const MAX_SELECTED_SECRETS: usize = 100;
/// Longest `clientID` / `userAssignedIdentityID` accepted (they are GUIDs in practice).
pub const MAX_CLIENT_ID_BYTES: usize = 256;

/// Errors in SecretProviderClass parameters or objects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpcError {
    /// A required parameter is absent or empty.
    #[error("parameter {name} is required: {hint}")]
    Missing {
        /// Parameter name.
        name: &'static str,
        /// What to set.
        hint: &'static str,
    },
    /// A parameter has a value outside what is allowed.
    #[error("parameter {name} {problem}")]
    Invalid {
        /// Parameter name.
        name: &'static str,
        /// What is wrong and what is allowed.
        problem: String,
    },
    /// The `objects` YAML cannot be read.
    #[error("parameter objects {0}")]
    ObjectsYaml(String),
    /// One object has an invalid field.
    #[error("object {object} (objects.array[{index}]): {problem}")]
    Object {
        /// Position in `objects.array`.
        index: usize,
        /// The object's name, quoted, or `<unnamed>`.
        object: String,
        /// What is wrong and what is allowed.
        problem: String,
    },
    /// Two objects would write the same file, or one's file is another's folder.
    #[error(
        "objects {first} and {second} both write \"{path}\": give one of them a different objectAlias"
    )]
    FileConflict {
        /// Conflicting path.
        path: String,
        /// First object's name.
        first: String,
        /// Second object's name.
        second: String,
    },
}

impl SpcError {
    /// Where the problem is, relative to `spec.parameters`: `keyvaultName`, `objects`,
    /// `objects.array[2]`.
    pub fn location(&self) -> String {
        match self {
            Self::Missing { name, .. } | Self::Invalid { name, .. } => (*name).to_owned(),
            Self::ObjectsYaml(_) | Self::FileConflict { .. } => "objects".to_owned(),
            Self::Object { index, .. } => format!("objects.array[{index}]"),
        }
    }

    /// The message without its location prefix, for tools that print the location themselves.
    pub fn detail(&self) -> String {
        match self {
            Self::Missing { hint, .. } => format!("is required: {hint}"),
            Self::Invalid { problem, .. } | Self::ObjectsYaml(problem) => problem.clone(),
            Self::Object {
                object, problem, ..
            } => format!("object {object}: {problem}"),
            Self::FileConflict { .. } => self.to_string(),
        }
    }

    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Missing { .. } => "missing_parameter",
            Self::Invalid { .. } => "invalid_parameter",
            Self::ObjectsYaml(_) => "invalid_objects",
            Self::Object { .. } => "invalid_object",
            Self::FileConflict { .. } => "file_conflict",
        }
    }
}

/// The identity-related parameters as written; [`crate::mount`] turns them into an identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityParameters {
    /// `clientID`: workload identity (or identity binding) client id.
    pub client_id: String,
    /// `usePodIdentity`.
    pub use_pod_identity: bool,
    /// `useVMManagedIdentity`.
    pub use_vm_managed_identity: bool,
    /// `useAzureTokenProxy`.
    pub use_azure_token_proxy: bool,
    /// `userAssignedIdentityID` (empty = system-assigned).
    pub user_assigned_identity_id: String,
}

/// The validated parameters of a SecretProviderClass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretProviderClass {
    /// `keyvaultName`.
    pub keyvault_name: String,
    /// `tenantID` (or legacy `tenantId`).
    pub tenant_id: String,
    /// `cloudName`, if given.
    pub cloud_name: Option<CloudName>,
    /// `cloudEnvFileName`, if given.
    pub cloud_env_file: Option<String>,
    /// Identity parameters.
    pub identity: IdentityParameters,
    /// The objects to mount, in the SPC's order.
    pub objects: Vec<KeyVaultObject>,
}

fn param<'a>(attrs: &'a HashMap<String, String>, key: &str) -> &'a str {
    attrs.get(key).map_or("", |v| v.trim())
}

/// Parses a boolean parameter like Go's `strconv.ParseBool`; empty is false.
fn bool_param(attrs: &HashMap<String, String>, key: &'static str) -> Result<bool, SpcError> {
    let value = param(attrs, key);
    if value.is_empty() {
        return Ok(false);
    }
    crate::compat::parse_go_bool(value).map_err(|_| SpcError::Invalid {
        name: key,
        problem: format!(
            "is \"{}\", which is not a boolean (use true or false)",
            quote(value)
        ),
    })
}

/// Checks the Key Vault name rule: 3-24 characters of `[-A-Za-z0-9]`.
pub fn check_vault_name(name: &str) -> Result<(), SpcError> {
    let ok = (3..=24).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SpcError::Invalid {
            name: "keyvaultName",
            problem: format!(
                "is \"{}\": a vault name has 3 to 24 characters of letters, digits and '-'",
                quote(name)
            ),
        })
    }
}

impl SecretProviderClass {
    /// Validates the SPC parameters found in a Mount's attributes; the first problem is the error.
    pub fn from_attributes(attrs: &HashMap<String, String>) -> Result<Self, SpcError> {
        let mut problems = Vec::new();
        let spc = Self::check(attrs, &mut problems);
        match (problems.into_iter().next(), spc) {
            (None, Some(spc)) => Ok(spc),
            (Some(problem), _) => Err(problem),
            (None, None) => Err(SpcError::ObjectsYaml("could not be read".into())),
        }
    }

    /// Every problem of the SPC parameters, in the order [`Self::from_attributes`] checks them
    /// (each parameter, each object, then file conflicts); empty when the SPC is valid.
    pub fn problems(attrs: &HashMap<String, String>) -> Vec<SpcError> {
        let mut problems = Vec::new();
        let _ = Self::check(attrs, &mut problems);
        problems
    }

    /// Checks every parameter, recording problems; `Some` only when there are none.
    #[allow(clippy::too_many_lines)] // one step per parameter, in the order of the docs
    fn check(attrs: &HashMap<String, String>, problems: &mut Vec<SpcError>) -> Option<Self> {
        let keyvault_name = param(attrs, "keyvaultName");
        if keyvault_name.is_empty() {
            problems.push(SpcError::Missing {
                name: "keyvaultName",
                hint: "set it to the name of the Key Vault (not its URL)",
            });
        } else if let Err(e) = check_vault_name(keyvault_name) {
            problems.push(e);
        }

        let tenant_id = match param(attrs, "tenantID") {
            "" => param(attrs, "tenantId"),
            t => t,
        };
        if tenant_id.is_empty() {
            problems.push(SpcError::Missing {
                name: "tenantID",
                hint: "set it to the Entra ID tenant (directory) id of the vault",
            });
        } else if tenant_id.len() > 253
            || !tenant_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            problems.push(SpcError::Invalid {
                name: "tenantID",
                problem: format!(
                    "is \"{}\": a tenant is a GUID or a domain name (letters, digits, '-', '.')",
                    quote(tenant_id)
                ),
            });
        }

        let cloud_name = match param(attrs, "cloudName") {
            "" => None,
            name => {
                let parsed = CloudName::parse(name).ok();
                if parsed.is_none() {
                    problems.push(SpcError::Invalid {
                        name: "cloudName",
                        problem: format!(
                            "is \"{}\", not one of AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud, AzureStackCloud (case-insensitive)",
                            quote(name)
                        ),
                    });
                }
                parsed
            }
        };
        let cloud_env_file = Some(param(attrs, "cloudEnvFileName"))
            .filter(|v| !v.is_empty())
            .map(str::to_owned);

        for key in ["clientID", "userAssignedIdentityID"] {
            let value = param(attrs, key);
            if value.len() > MAX_CLIENT_ID_BYTES || !value.bytes().all(|b| b.is_ascii_graphic()) {
                problems.push(SpcError::Invalid {
                    name: if key == "clientID" {
                        "clientID"
                    } else {
                        "userAssignedIdentityID"
                    },
                    problem: format!(
                        "is \"{}\": a client id is a GUID such as 00000000-0000-0000-0000-000000000000",
                        quote(value)
                    ),
                });
            }
        }
        let mut flag = |key: &'static str| {
            bool_param(attrs, key).unwrap_or_else(|e| {
                problems.push(e);
                false
            })
        };
        let identity = IdentityParameters {
            client_id: param(attrs, "clientID").to_owned(),
            use_pod_identity: flag("usePodIdentity"),
            use_vm_managed_identity: flag("useVMManagedIdentity"),
            use_azure_token_proxy: flag("useAzureTokenProxy"),
            user_assigned_identity_id: param(attrs, "userAssignedIdentityID").to_owned(),
        };
        let modes: Vec<&str> = [
            ("usePodIdentity", identity.use_pod_identity),
            ("useVMManagedIdentity", identity.use_vm_managed_identity),
            ("useAzureTokenProxy", identity.use_azure_token_proxy),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect();
        if modes.len() > 1 {
            problems.push(SpcError::Invalid {
                name: "usePodIdentity/useVMManagedIdentity/useAzureTokenProxy",
                problem: format!(
                    "enable at most one identity mode, but {} are all true",
                    modes.join(" and ")
                ),
            });
        }

        let objects_yaml = attrs.get("objects").map_or("", String::as_str);
        let mut objects = objects::parse_objects_collecting(objects_yaml, problems);
        if !problems.is_empty() {
            return None;
        }
        // An object naming the SPC's own vault is an object of that vault (same version id).
        for object in &mut objects {
            if object
                .keyvault_name
                .as_deref()
                .is_some_and(|v| v.eq_ignore_ascii_case(keyvault_name))
            {
                object.keyvault_name = None;
            }
        }

        Some(Self {
            keyvault_name: keyvault_name.to_owned(),
            tenant_id: tenant_id.to_owned(),
            cloud_name,
            cloud_env_file,
            identity,
            objects,
        })
    }

    /// The distinct vaults this SPC reads: its own, then per-object `keyvaultName`s in order.
    pub fn vault_names(&self) -> Vec<&str> {
        let mut names = vec![self.keyvault_name.as_str()];
        for object in &self.objects {
            if let Some(vault) = object.keyvault_name.as_deref()
                && !names.iter().any(|n| n.eq_ignore_ascii_case(vault))
            {
                names.push(vault);
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const OBJECTS: &str = "array:\n  - |\n    objectName: s1\n    objectType: secret\n";

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("keyvaultName", "kv-one"),
            ("tenantID", "t1"),
            ("objects", OBJECTS),
        ]
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        match SecretProviderClass::from_attributes(&attrs(pairs)) {
            Ok(spc) => format!("unexpectedly valid: {spc:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_spc() {
        let spc = SecretProviderClass::from_attributes(&attrs(&base()));
        let spc = spc.ok();
        assert_eq!(
            spc.as_ref().map(|s| s.keyvault_name.as_str()),
            Some("kv-one")
        );
        assert_eq!(spc.as_ref().map(|s| s.objects.len()), Some(1));
        assert_eq!(spc.as_ref().and_then(|s| s.cloud_name), None);
    }

    #[test]
    fn trims_and_prefers_tenant_upper_id() {
        let mut p = base();
        p[0] = ("keyvaultName", "  kv-one \n");
        p[1] = ("tenantID", " upper ");
        p.push(("tenantId", "lower"));
        p.push(("unknownKey", "ignored"));
        let spc = SecretProviderClass::from_attributes(&attrs(&p)).ok();
        assert_eq!(
            spc.as_ref().map(|s| s.keyvault_name.as_str()),
            Some("kv-one")
        );
        assert_eq!(spc.as_ref().map(|s| s.tenant_id.as_str()), Some("upper"));
        let legacy = [
            ("keyvaultName", "kv-one"),
            ("tenantId", "lower"),
            ("objects", OBJECTS),
        ];
        let spc = SecretProviderClass::from_attributes(&attrs(&legacy)).ok();
        assert_eq!(spc.map(|s| s.tenant_id), Some("lower".to_owned()));
    }

    #[test]
    fn user_values_in_messages_are_escaped_and_bounded() {
        let long = "x".repeat(5000);
        let mut p = base();
        p.retain(|(k, _)| *k != "tenantID");
        p.push(("tenantID", &long));
        let e = err(&p);
        assert!(e.len() < 400, "{e}");
        assert!(e.contains("…(5000 characters)"), "{e}");
        let mut p = base();
        p.push(("usePodIdentity", "yes\nlevel=error msg=forged"));
        let e = err(&p);
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("yes\\nlevel"), "{e}");
        for bad in ["a b", "id\u{202E}", &long] {
            let mut p = base();
            p.push(("clientID", bad));
            assert!(err(&p).starts_with("parameter clientID is \""), "{bad}");
            let mut p = base();
            p.push(("userAssignedIdentityID", bad));
            assert!(
                err(&p).starts_with("parameter userAssignedIdentityID is \""),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_messages() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                vec![("tenantID", "t"), ("objects", OBJECTS)],
                "parameter keyvaultName is required: set it to the name of the Key Vault (not its URL)",
            ),
            (
                vec![
                    ("keyvaultName", "kv"),
                    ("tenantID", "t"),
                    ("objects", OBJECTS),
                ],
                "parameter keyvaultName is \"kv\": a vault name has 3 to 24 characters of letters, digits and '-'",
            ),
            (
                vec![
                    ("keyvaultName", "kv_under"),
                    ("tenantID", "t"),
                    ("objects", OBJECTS),
                ],
                "parameter keyvaultName is \"kv_under\": a vault name has 3 to 24 characters of letters, digits and '-'",
            ),
            (
                vec![
                    ("keyvaultName", "abcdefghijklmnopqrstuvwxy"),
                    ("tenantID", "t"),
                    ("objects", OBJECTS),
                ],
                "parameter keyvaultName is \"abcdefghijklmnopqrstuvwxy\": a vault name has 3 to 24 characters of letters, digits and '-'",
            ),
            (
                vec![("keyvaultName", "kv1"), ("objects", OBJECTS)],
                "parameter tenantID is required: set it to the Entra ID tenant (directory) id of the vault",
            ),
            (
                vec![
                    ("keyvaultName", "kv1"),
                    ("tenantID", "a/b"),
                    ("objects", OBJECTS),
                ],
                "parameter tenantID is \"a/b\": a tenant is a GUID or a domain name (letters, digits, '-', '.')",
            ),
            (
                vec![
                    ("keyvaultName", "kv1"),
                    ("tenantID", "t"),
                    ("cloudName", "AzureGermanCloud"),
                    ("objects", OBJECTS),
                ],
                "parameter cloudName is \"AzureGermanCloud\", not one of AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud, AzureStackCloud (case-insensitive)",
            ),
            (
                vec![
                    ("keyvaultName", "kv1"),
                    ("tenantID", "t"),
                    ("usePodIdentity", "yes"),
                    ("objects", OBJECTS),
                ],
                "parameter usePodIdentity is \"yes\", which is not a boolean (use true or false)",
            ),
            (
                vec![
                    ("keyvaultName", "kv1"),
                    ("tenantID", "t"),
                    ("usePodIdentity", "true"),
                    ("useVMManagedIdentity", "1"),
                    ("objects", OBJECTS),
                ],
                "parameter usePodIdentity/useVMManagedIdentity/useAzureTokenProxy enable at most one identity mode, but usePodIdentity and useVMManagedIdentity are all true",
            ),
        ];
        for (pairs, want) in cases {
            assert_eq!(err(&pairs), want);
        }
    }

    #[test]
    fn boolean_forms() {
        for (value, want) in [
            ("true", true),
            ("TRUE", true),
            ("1", true),
            ("t", true),
            ("false", false),
            ("0", false),
            ("F", false),
            ("", false),
        ] {
            let mut p = base();
            p.push(("useVMManagedIdentity", value));
            let spc = SecretProviderClass::from_attributes(&attrs(&p)).ok();
            assert_eq!(
                spc.map(|s| s.identity.use_vm_managed_identity),
                Some(want),
                "{value}"
            );
        }
    }
}

//! Decoding the JSON fields of a Mount request: attributes, node-publish secret, permission.

use super::MountError;
use crate::sensitive::SecretString;
use std::collections::HashMap;

/// Pod attribute keys set by kubelet/the driver.
pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
/// Pod namespace attribute.
pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
/// Pod UID attribute.
pub const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
/// Service account name attribute.
pub const SERVICE_ACCOUNT_NAME: &str = "csi.storage.k8s.io/serviceAccount.name";
/// Service account tokens attribute (a JSON string).
pub const SERVICE_ACCOUNT_TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";

/// Largest `attributes` or `secrets` JSON accepted, in bytes.
pub const MAX_JSON_BYTES: usize = 2 * 1024 * 1024;

/// The pod a Mount is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID, if sent.
    pub uid: String,
    /// Service account name, if sent.
    pub service_account: String,
}

/// Parses `attributes`: a JSON object of strings.
pub fn attributes(json: &str) -> Result<HashMap<String, String>, MountError> {
    string_map(json, "attributes")
}

/// The decoded `secrets` field: the node-publish secret's data, and the service-account tokens
/// when the CSIDriver has `serviceAccountTokenInSecrets: true` (Kubernetes 1.35+).
#[derive(Debug, Default)]
pub struct NodePublishSecrets {
    /// The `nodePublishSecretRef` Secret's entries (values kept secret), without the tokens entry.
    pub credentials: HashMap<String, SecretString>,
    /// The `csi.storage.k8s.io/serviceAccount.tokens` entry, when kubelet put it into the secrets.
    pub tokens: Option<SecretString>,
}

/// Parses `secrets`.
///
/// The driver sends `json.Marshal` of the volume's node-publish secrets: the four characters
/// `null` when the volume has no `nodePublishSecretRef` (a nil Go map), which is the normal case
/// for workload identity, managed identity and pod identity. `null`, `{}` and an empty string
/// all mean "no secret". The tokens entry is never a node-publish credential: it is taken out of
/// the credentials and kept apart.
pub fn secrets(json: &str) -> Result<NodePublishSecrets, MountError> {
    let trimmed = json.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(NodePublishSecrets::default());
    }
    let mut map = string_map(json, "secrets")?;
    let tokens = map.remove(SERVICE_ACCOUNT_TOKENS).map(SecretString::new);
    let credentials = map
        .into_iter()
        .map(|(k, v)| (k, SecretString::new(v)))
        .collect();
    Ok(NodePublishSecrets {
        credentials,
        tokens,
    })
}

fn string_map(json: &str, field: &'static str) -> Result<HashMap<String, String>, MountError> {
    if json.len() > MAX_JSON_BYTES {
        return Err(MountError::Request {
            field,
            problem: format!(
                "is {} bytes; at most {MAX_JSON_BYTES} are accepted ({})",
                json.len(),
                if field == "secrets" {
                    "it is the data of the nodePublishSecretRef Secret, which Kubernetes keeps under 1 MiB"
                } else {
                    "the driver builds it from the SecretProviderClass and the pod, which Kubernetes keeps far smaller"
                }
            ),
        });
    }
    // serde_json's messages can quote values; only its position is reported.
    serde_json::from_str(json).map_err(|e| MountError::Request {
        field,
        problem: format!(
            "is not a JSON object of string values (error at line {} column {})",
            e.line(),
            e.column()
        ),
    })
}

/// Parses `permission`: a JSON number, the decimal file mode (the driver sends `420` = 0644).
pub fn permission(text: &str) -> Result<u32, MountError> {
    let bad = || MountError::Request {
        field: "permission",
        problem: format!(
            "is \"{}\": expected a decimal file mode from 0 to 511 such as 420 (0644)",
            crate::text::quote(text)
        ),
    };
    let mode: u32 = serde_json::from_str(text.trim()).map_err(|_| bad())?;
    if mode > 0o777 {
        return Err(bad());
    }
    Ok(mode)
}

/// Reads the pod's identity attributes; name and namespace are required.
pub fn pod_info(attrs: &HashMap<String, String>) -> Result<PodInfo, MountError> {
    let get = |key: &str| attrs.get(key).map_or("", |v| v.trim()).to_owned();
    let info = PodInfo {
        namespace: get(POD_NAMESPACE),
        name: get(POD_NAME),
        uid: get(POD_UID),
        service_account: get(SERVICE_ACCOUNT_NAME),
    };
    if info.name.is_empty() {
        return Err(MountError::MissingPodAttribute(POD_NAME));
    }
    if info.namespace.is_empty() {
        return Err(MountError::MissingPodAttribute(POD_NAMESPACE));
    }
    Ok(info)
}

/// One service-account token from the tokens attribute.
#[derive(serde::Deserialize)]
struct TokenEntry {
    token: String,
}

/// The `serviceAccount.tokens` JSON of a Mount: from `attributes` (where kubelet's volume
/// context puts it, and where the driver v1.6+ copies it in every case), else from `secrets`
/// (where kubelet puts it with `serviceAccountTokenInSecrets: true`; a driver that does not copy
/// it leaves it only there).
pub fn tokens_json<'a>(
    attrs: &'a HashMap<String, String>,
    secrets: &'a NodePublishSecrets,
) -> Option<&'a str> {
    attrs
        .get(SERVICE_ACCOUNT_TOKENS)
        .map(String::as_str)
        .filter(|t| !t.trim().is_empty())
        .or_else(|| {
            secrets
                .tokens
                .as_ref()
                .map(SecretString::expose)
                .filter(|t| !t.trim().is_empty())
        })
}

/// Finds the token for `audience` in a `serviceAccount.tokens` JSON ([`tokens_json`]).
///
/// `Ok(None)` when there are no tokens or none for the audience.
pub fn service_account_token(
    tokens_json: Option<&str>,
    audience: &str,
) -> Result<Option<SecretString>, crate::auth::AuthError> {
    let Some(raw) = tokens_json else {
        return Ok(None);
    };
    let mut tokens: HashMap<String, TokenEntry> = serde_json::from_str(raw).map_err(|e| {
        crate::auth::AuthError::BadTokens(format!(
            "error at line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    let found = tokens
        .remove(audience)
        .map(|entry| SecretString::new(entry.token))
        .filter(|t| !t.is_empty());
    // Tokens for other audiences are secrets too.
    for entry in tokens.values_mut() {
        zeroize::Zeroize::zeroize(&mut entry.token);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_forms() {
        assert!(matches!(permission("420"), Ok(0o644)));
        assert!(matches!(permission(" 384 "), Ok(0o600)));
        for bad in ["", "0644x", "-1", "512", "\"420\"", "4.2"] {
            let e = permission(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.starts_with("Mount request field permission is "),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn json_errors_do_not_quote_values() {
        let e = attributes(r#"{"a": 12345678}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("12345678"), "{e}");
        assert_eq!(
            e,
            "Mount request field attributes is not a JSON object of string values (error at line 1 column 14)"
        );
        let s = secrets("").ok().map(|m| m.credentials.len());
        assert_eq!(s, Some(0));
    }

    #[test]
    fn tokens() {
        let mut attrs = HashMap::new();
        attrs.insert(
            SERVICE_ACCOUNT_TOKENS.to_owned(),
            r#"{"api://AzureADTokenExchange":{"token":"jwt-1","expirationTimestamp":"2030-01-01T00:00:00Z"}}"#.to_owned(),
        );
        let none = NodePublishSecrets::default();
        let t = service_account_token(tokens_json(&attrs, &none), "api://AzureADTokenExchange")
            .ok()
            .flatten();
        assert_eq!(t.map(|t| t.expose().to_owned()), Some("jwt-1".into()));
        assert!(matches!(
            service_account_token(tokens_json(&attrs, &none), "other"),
            Ok(None)
        ));
        attrs.insert(
            SERVICE_ACCOUNT_TOKENS.to_owned(),
            "not json secret-xyz".into(),
        );
        let e = service_account_token(tokens_json(&attrs, &none), "x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("secret-xyz"));
    }

    /// What the driver v1.6.0 sends as `secrets` (`json.Marshal` of the node-publish secrets map,
    /// `pkg/secrets-store/nodeserver.go`): `null` for a nil map (no nodePublishSecretRef).
    #[test]
    fn secrets_null_empty_and_blank_mean_none() {
        for json in ["null", " null\n", "{}", "", "  "] {
            let s = secrets(json);
            assert!(
                s.as_ref()
                    .is_ok_and(|s| s.credentials.is_empty() && s.tokens.is_none()),
                "{json:?}: {s:?}"
            );
        }
        for bad in ["nul", "[]", "\"null\"", "{\"a\":1}", "NULL"] {
            assert!(secrets(bad).is_err(), "{bad:?}");
        }
    }

    /// Kubernetes 1.35 with `serviceAccountTokenInSecrets: true`: kubelet puts the tokens entry
    /// into the secrets (beside a nodePublishSecretRef's data, if any).
    #[test]
    fn tokens_in_secrets_are_not_credentials() {
        let tokens = r#"{"api://AzureADTokenExchange":{"token":"jwt-2","expirationTimestamp":"2030-01-01T00:00:00Z"}}"#;
        let json = serde_json::json!({ SERVICE_ACCOUNT_TOKENS: tokens }).to_string();
        let parsed = secrets(&json).unwrap_or_default();
        assert!(parsed.credentials.is_empty());
        assert_eq!(
            parsed.tokens.as_ref().map(SecretString::expose),
            Some(tokens)
        );
        assert!(!format!("{parsed:?}").contains("jwt-2"));
        // Only in the secrets (a driver that does not copy it into the attributes).
        let t = service_account_token(
            tokens_json(&HashMap::new(), &parsed),
            "api://AzureADTokenExchange",
        )
        .ok()
        .flatten();
        assert_eq!(t.map(|t| t.expose().to_owned()), Some("jwt-2".into()));
        // The attributes win when both have it (the driver v1.6 copies it there).
        let mut attrs = HashMap::new();
        attrs.insert(
            SERVICE_ACCOUNT_TOKENS.to_owned(),
            tokens.replace("jwt-2", "jwt-3"),
        );
        let t = service_account_token(tokens_json(&attrs, &parsed), "api://AzureADTokenExchange")
            .ok()
            .flatten();
        assert_eq!(t.map(|t| t.expose().to_owned()), Some("jwt-3".into()));
        let both = serde_json::json!({
            SERVICE_ACCOUNT_TOKENS: tokens, "clientid": "app", "clientsecret": "pw"
        })
        .to_string();
        let parsed = secrets(&both).unwrap_or_default();
        let mut keys: Vec<&String> = parsed.credentials.keys().collect();
        keys.sort();
        assert_eq!(keys, ["clientid", "clientsecret"]);
    }
}

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

/// Parses `secrets` (node-publish secret data) with values kept secret; empty means `{}`.
pub fn secrets(json: &str) -> Result<HashMap<String, SecretString>, MountError> {
    if json.trim().is_empty() {
        return Ok(HashMap::new());
    }
    Ok(string_map(json, "secrets")?
        .into_iter()
        .map(|(k, v)| (k, SecretString::new(v)))
        .collect())
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
            text.chars().take(32).collect::<String>().escape_debug()
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

/// Finds the token for `audience` in the `serviceAccount.tokens` attribute.
///
/// `Ok(None)` when the attribute or the audience is absent.
pub fn service_account_token(
    attrs: &HashMap<String, String>,
    audience: &str,
) -> Result<Option<SecretString>, crate::auth::AuthError> {
    let Some(raw) = attrs
        .get(SERVICE_ACCOUNT_TOKENS)
        .filter(|t| !t.trim().is_empty())
    else {
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
        let s = secrets("").ok().map(|m| m.len());
        assert_eq!(s, Some(0));
    }

    #[test]
    fn tokens() {
        let mut attrs = HashMap::new();
        attrs.insert(
            SERVICE_ACCOUNT_TOKENS.to_owned(),
            r#"{"api://AzureADTokenExchange":{"token":"jwt-1","expirationTimestamp":"2030-01-01T00:00:00Z"}}"#.to_owned(),
        );
        let t = service_account_token(&attrs, "api://AzureADTokenExchange")
            .ok()
            .flatten();
        assert_eq!(t.map(|t| t.expose().to_owned()), Some("jwt-1".into()));
        assert!(matches!(service_account_token(&attrs, "other"), Ok(None)));
        attrs.insert(
            SERVICE_ACCOUNT_TOKENS.to_owned(),
            "not json secret-xyz".into(),
        );
        let e = service_account_token(&attrs, "x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(!e.contains("secret-xyz"));
    }
}

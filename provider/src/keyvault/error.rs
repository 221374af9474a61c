//! Key Vault and token errors, classified from SDK errors into what an operator can act on.

use super::{ObjectKind, Permission};
use azure_core::error::ErrorKind;
use std::time::Duration;

/// Longest piece of service text carried into an error message (room for our own advice, such as
/// the token proxy's flag and CA file, after a long cause).
const MAX_DETAIL_CHARS: usize = 500;

/// The SDK error behind a classified [`KeyVaultError`]: its `source`, so the whole chain (HTTP
/// status, TLS, socket) stays available to logs and debuggers instead of only our summary.
/// Shared (`Arc`) because a coalesced read hands one error to many Mounts; never compared: two
/// errors are equal when they mean the same to an operator.
#[derive(Debug, Clone)]
pub struct SdkCause(pub std::sync::Arc<azure_core::Error>);

impl PartialEq for SdkCause {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SdkCause {}

impl std::fmt::Display for SdkCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SdkCause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.0.as_ref())
    }
}

/// Errors reading from Key Vault (including getting the token for it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyVaultError {
    /// The object or the pinned version does not exist (wrong name, version, vault, or deleted).
    #[error(
        "{object} was not found in Key Vault {vault}: check objectName, objectVersion and keyvaultName"
    )]
    NotFound {
        /// Vault name.
        vault: String,
        /// `secret/<name>[@version]`.
        object: String,
        /// Key Vault said so with its own code (`SecretNotFound`, `KeyNotFound`,
        /// `CertificateNotFound`); a bare 404 (a proxy, a wrong path) is not definite and never
        /// lets an `optional` object be skipped.
        definite: bool,
    },
    /// The identity authenticated but may not perform the operation.
    #[error(
        "{object} in Key Vault {vault}: the identity lacks the {collection} {permission} permission; grant the role \"{role}\" or an access policy with {permission} on {collection} ({detail})",
        collection = .kind.collection(),
        role = .kind.reader_role()
    )]
    Forbidden {
        /// Vault name.
        vault: String,
        /// The object.
        object: String,
        /// The collection the object is in.
        kind: ObjectKind,
        /// `get` or `list`.
        permission: Permission,
        /// Key Vault's own words.
        detail: String,
        /// The SDK error it was classified from (its chain: HTTP, TLS, socket), if any.
        #[source]
        cause: Option<SdkCause>,
    },
    /// The object exists but the requested version is disabled.
    #[error(
        "{object} in Key Vault {vault} is disabled: enable it, or pin an enabled objectVersion"
    )]
    Disabled {
        /// Vault name.
        vault: String,
        /// The object.
        object: String,
    },
    /// Key Vault refused the request because of where it came from, before looking at the
    /// identity: public network access is disabled (`ForbiddenByConnection`: the node must reach
    /// the vault through a private endpoint) or the vault's firewall does not list the node's
    /// address (`ForbiddenByFirewall`). Granting roles does not help; retrying does not either.
    #[error(
        "Key Vault {vault} refused the request from this node's network ({code}: {detail}): {fix}",
        fix = network_fix(code)
    )]
    NetworkDenied {
        /// Vault name.
        vault: String,
        /// Key Vault's `innererror.code`: `ForbiddenByConnection` or `ForbiddenByFirewall`.
        code: String,
        /// Key Vault's own words (first line).
        detail: String,
        /// The SDK error it was classified from (its chain: HTTP, TLS, socket), if any.
        #[source]
        cause: Option<SdkCause>,
    },
    /// Key Vault rejected the token (wrong tenant, wrong audience, firewall on identity).
    #[error(
        "Key Vault {vault} rejected the access token ({detail}): check tenantID and that the identity belongs to the vault's tenant"
    )]
    Unauthorized {
        /// Vault name.
        vault: String,
        /// Key Vault's own words.
        detail: String,
        /// The SDK error it was classified from (its chain: HTTP, TLS, socket), if any.
        #[source]
        cause: Option<SdkCause>,
    },
    /// The token service refused to issue a token (bad secret, no federated credential, unknown client).
    #[error("getting a Key Vault token failed: {detail}")]
    Authentication {
        /// The token service's words (never a secret).
        detail: String,
        /// The SDK error it was classified from (its chain: HTTP, TLS, socket), if any.
        #[source]
        cause: Option<SdkCause>,
    },
    /// The token service could not be reached or failed on its side.
    #[error("the token service is unavailable: {detail}; the driver will retry")]
    AuthenticationUnavailable {
        /// What failed.
        detail: String,
        /// The SDK error it was classified from (its chain: HTTP, TLS, socket), if any.
        #[source]
        cause: Option<SdkCause>,
    },
    /// Key Vault throttled the requests (HTTP 429) and retries ran out.
    #[error("Key Vault {vault} throttled the requests (HTTP 429){}; the driver will retry", retry_after.map(|d| format!(", asking to wait {}s", d.as_secs())).unwrap_or_default())]
    Throttled {
        /// Vault name.
        vault: String,
        /// What Key Vault asked to wait.
        retry_after: Option<Duration>,
    },
    /// Key Vault could not be reached, timed out, or failed with 5xx after retries.
    #[error("Key Vault {vault} is unavailable: {detail}; the driver will retry")]
    Unavailable {
        /// Vault name.
        vault: String,
        /// What failed.
        detail: String,
        /// The SDK error it was classified from (its chain: HTTP, TLS, socket), if any.
        #[source]
        cause: Option<SdkCause>,
    },
    /// The vault holds more secrets than a bulk entry may scan.
    #[error(
        "Key Vault {vault} lists more than {limit} secrets, too many to select from with objectNamePrefix or objectTags: name the objects instead"
    )]
    TooManySecrets {
        /// Vault name.
        vault: String,
        /// The scan limit.
        limit: usize,
    },
    /// Key Vault answered something we cannot use.
    #[error("Key Vault {vault} sent an unexpected response for {object}: {detail}")]
    BadResponse {
        /// Vault name.
        vault: String,
        /// The object.
        object: String,
        /// What was wrong.
        detail: String,
        /// The SDK error it was classified from (its chain: HTTP, TLS, socket), if any.
        #[source]
        cause: Option<SdkCause>,
    },
}

impl KeyVaultError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Forbidden { .. } => "forbidden",
            Self::Disabled { .. } => "disabled",
            Self::NetworkDenied { .. } => "network_denied",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Authentication { .. } => "authentication_failed",
            Self::AuthenticationUnavailable { .. } => "token_service_unavailable",
            Self::Throttled { .. } => "throttled",
            Self::Unavailable { .. } => "unavailable",
            Self::TooManySecrets { .. } => "too_many_secrets",
            Self::BadResponse { .. } => "bad_response",
        }
    }
}

impl KeyVaultError {
    /// Whether an `optional: true` object may be skipped for this error: only when Key Vault
    /// said definitely that the object does not exist or is disabled. A refused network, a
    /// missing permission or a bare 404 from something in between must fail the Mount, or a
    /// sync would "succeed" with no files.
    pub fn is_skippable(&self) -> bool {
        matches!(
            self,
            Self::NotFound { definite: true, .. } | Self::Disabled { .. }
        )
    }
}

/// The firewall's message names the address it saw on a later line (`Client address: 10.1.2.3`):
/// the address to allow, worth keeping next to the first line.
fn with_client_address(detail: &str, message: &str) -> String {
    match message
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("Client address:"))
    {
        Some(line) => format!("{detail} {}", clip(line)),
        None => detail.to_owned(),
    }
}

/// What to do about a refused network, by Key Vault's code.
fn network_fix(code: &str) -> &'static str {
    if code == "ForbiddenByConnection" {
        "the vault's public network access is disabled: reach it through a private endpoint (and a private DNS zone privatelink.vaultcore.azure.net linked to the cluster's network, so the vault name resolves to it), or enable public access for selected networks"
    } else {
        "the vault's firewall does not allow this node's address: add the node's outbound address or subnet to the vault's firewall, or reach it through a private endpoint"
    }
}

/// Key Vault's `innererror.code` values for a request refused by network rules.
const NETWORK_CODES: [&str; 2] = ["ForbiddenByConnection", "ForbiddenByFirewall"];
/// Key Vault's codes for a disabled object (`innererror.code` of a 403).
const DISABLED_CODES: [&str; 3] = ["SecretDisabled", "KeyDisabled", "CertificateDisabled"];
/// Key Vault's codes for a missing object or version (`error.code` of a 404).
const NOT_FOUND_CODES: [&str; 3] = ["SecretNotFound", "KeyNotFound", "CertificateNotFound"];

/// Cuts service text to one line of bounded length.
pub(crate) fn clip(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim();
    let mut out = crate::text::printable(line, MAX_DETAIL_CHARS);
    if line.chars().count() > MAX_DETAIL_CHARS {
        out.push('…');
    }
    out
}

/// Wrapper messages the SDK's retry policy puts in front of the real error.
const GENERIC_CONTEXT: [&str; 2] = [
    "non-transport error occurred which will not be retried",
    "retry policy expired and the request will no longer be retried",
];

/// The messages of an error and its sources, without the SDK's generic wrappers, as one bounded
/// line. When it is too long the middle is left out: the first words say what was attempted, the
/// last ones the root cause (refused, reset, certificate).
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let mut text = e
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .split(" To troubleshoot, visit")
            .next()
            .unwrap_or_default()
            .to_owned();
        for generic in GENERIC_CONTEXT {
            text = text.replace(generic, "");
        }
        let text = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .trim_end_matches([':', ' '])
            .to_owned();
        let redundant = text.is_empty() || parts.iter().any(|p| p.contains(&text));
        if !redundant {
            parts.push(text);
        }
        current = e.source();
    }
    let mut joined = String::new();
    for part in parts {
        if !joined.is_empty() {
            joined.push_str(if joined.ends_with('.') { " " } else { ": " });
        }
        joined.push_str(&part);
    }
    with_hint(&clip_middle(&crate::text::printable(&joined, usize::MAX)))
}

/// One line of at most [`MAX_DETAIL_CHARS`] characters: head and tail, the middle elided.
fn clip_middle(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    let count = line.chars().count();
    if count <= MAX_DETAIL_CHARS {
        return line.to_owned();
    }
    let head: String = line.chars().take(MAX_DETAIL_CHARS / 3).collect();
    let tail: String = line
        .chars()
        .skip(count - (MAX_DETAIL_CHARS - MAX_DETAIL_CHARS / 3))
        .collect();
    format!("{head} … {tail}")
}

/// Adds what to do when TLS verification failed: the usual cause is a TLS-inspecting proxy or a
/// private CA.
fn with_hint(detail: &str) -> String {
    if detail.contains("invalid peer certificate") {
        format!(
            "{detail} (the server's TLS certificate is not trusted: for a TLS-inspecting proxy or a private CA, pass its CA certificate with --ca-file)"
        )
    } else {
        detail.to_owned()
    }
}

/// Key Vault's error body: `{"error": {"code", "message", "innererror": {"code"}}}`.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ErrorBody {
    error: ErrorInner,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ErrorInner {
    code: String,
    message: String,
    innererror: Option<Box<ErrorInner>>,
}

/// Key Vault's message and codes: `error.code` first, then every nested `innererror.code`.
fn service_error(raw: Option<&azure_core::http::RawResponse>) -> (String, Vec<String>) {
    let Some(raw) = raw else {
        return (String::new(), Vec::new());
    };
    let body: ErrorBody = serde_json::from_slice(raw.body().as_ref()).unwrap_or_default();
    let mut codes = Vec::new();
    let mut current = Some(&body.error);
    // Key Vault nests one level; a hostile body cannot make this loop long (depth of the JSON
    // is bounded by serde_json's recursion limit).
    while let Some(e) = current {
        if !e.code.is_empty() {
            codes.push(e.code.clone());
        }
        current = e.innererror.as_deref();
    }
    (body.error.message, codes)
}

fn retry_after(raw: Option<&azure_core::http::RawResponse>) -> Option<Duration> {
    let value = raw?
        .headers()
        .get_optional_str(&azure_core::http::headers::RETRY_AFTER)?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Turns an SDK error for `object` (of collection `kind`) in `vault` during `permission`
/// (`get`/`list`) into a [`KeyVaultError`].
pub fn classify(
    err: azure_core::Error,
    vault: &str,
    object: &str,
    kind: ObjectKind,
    permission: Permission,
) -> KeyVaultError {
    let vault = vault.to_owned();
    let object = object.to_owned();
    let shared = std::sync::Arc::new(err);
    let err = shared.as_ref();
    let cause = Some(SdkCause(shared.clone()));
    match err.kind() {
        ErrorKind::HttpResponse {
            status,
            raw_response,
            ..
        } => {
            let raw = raw_response.as_deref();
            let (message, codes) = service_error(raw);
            let has = |set: &[&str]| codes.iter().find(|c| set.contains(&c.as_str())).cloned();
            let detail = if message.is_empty() {
                format!("HTTP {}", u16::from(*status))
            } else {
                clip(&message)
            };
            match u16::from(*status) {
                404 => KeyVaultError::NotFound {
                    vault,
                    object,
                    definite: has(&NOT_FOUND_CODES).is_some(),
                },
                403 if has(&NETWORK_CODES).is_some() => KeyVaultError::NetworkDenied {
                    vault,
                    code: has(&NETWORK_CODES).unwrap_or_default(),
                    detail: with_client_address(&detail, &message),
                    cause,
                },
                403 if has(&DISABLED_CODES).is_some() => KeyVaultError::Disabled { vault, object },
                403 => KeyVaultError::Forbidden {
                    vault,
                    object,
                    kind,
                    permission,
                    detail,
                    cause,
                },
                401 => KeyVaultError::Unauthorized {
                    vault,
                    detail,
                    cause,
                },
                429 => KeyVaultError::Throttled {
                    vault,
                    retry_after: retry_after(raw),
                },
                408 | 500..=599 => KeyVaultError::Unavailable {
                    vault,
                    detail,
                    cause,
                },
                _ => KeyVaultError::BadResponse {
                    vault,
                    object,
                    detail,
                    cause,
                },
            }
        }
        ErrorKind::Credential => {
            let detail = describe(err);
            match crate::auth::TokenFailure::of(err) {
                crate::auth::TokenFailure::Unavailable => {
                    KeyVaultError::AuthenticationUnavailable { detail, cause }
                }
                crate::auth::TokenFailure::Garbled => KeyVaultError::AuthenticationUnavailable {
                    detail: format!(
                        "the token service answered with something that is not a token response: {detail}"
                    ),
                    cause,
                },
                crate::auth::TokenFailure::Rejected => {
                    KeyVaultError::Authentication { detail, cause }
                }
            }
        }
        ErrorKind::Connection | ErrorKind::Io => KeyVaultError::Unavailable {
            vault,
            // The cause (reset, refused, certificate) is in the sources, not the top message.
            detail: describe(err),
            cause,
        },
        _ => KeyVaultError::BadResponse {
            vault,
            object,
            detail: clip(&err.to_string()),
            cause,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SDK error and its own causes stay reachable as the classified error's sources.
    #[test]
    fn the_sdk_error_stays_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let sdk = azure_core::Error::with_error(ErrorKind::Io, io, "sending the request failed");
        let e = classify(sdk, "kv1", "secret/s", ObjectKind::Secret, Permission::Get);
        assert_eq!(e.kind(), "unavailable");
        let mut chain = Vec::new();
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(next) = current {
            chain.push(next.to_string());
            current = next.source();
        }
        assert!(chain.len() >= 3, "{chain:?}");
        assert!(
            chain.iter().any(|c| c.contains("reset by peer")),
            "{chain:?}"
        );
        // Causes take no part in equality: the same classification is the same error.
        let again = classify(
            azure_core::Error::with_message(
                ErrorKind::Io,
                "sending the request failed: reset by peer",
            ),
            "kv1",
            "secret/s",
            ObjectKind::Secret,
            Permission::Get,
        );
        assert_eq!(e.kind(), again.kind());
    }

    #[test]
    fn clip_keeps_one_bounded_line() {
        assert_eq!(clip("\nfirst line\nsecond"), "first line");
        assert_eq!(
            clip(&"x".repeat(MAX_DETAIL_CHARS + 100)).chars().count(),
            MAX_DETAIL_CHARS + 1
        );
    }

    #[test]
    fn messages() {
        let e = KeyVaultError::Throttled {
            vault: "kv1".into(),
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(
            e.to_string(),
            "Key Vault kv1 throttled the requests (HTTP 429), asking to wait 7s; the driver will retry"
        );
        let e = KeyVaultError::Forbidden {
            vault: "kv1".into(),
            object: "key/signing".into(),
            kind: ObjectKind::Key,
            permission: Permission::Get,
            detail: "denied".into(),
            cause: None,
        };
        assert_eq!(
            e.to_string(),
            "key/signing in Key Vault kv1: the identity lacks the keys get permission; grant the role \"Key Vault Crypto User\" or an access policy with get on keys (denied)"
        );
        let e = KeyVaultError::NotFound {
            vault: "kv1".into(),
            object: "secret/db".into(),
            definite: true,
        };
        assert_eq!(
            e.to_string(),
            "secret/db was not found in Key Vault kv1: check objectName, objectVersion and keyvaultName"
        );
    }
}

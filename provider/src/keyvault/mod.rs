//! Reading objects from Key Vault, behind a small trait so the mount logic does not depend on the SDK.

mod cache;
mod error;
mod retry;
mod sdk;

pub use cache::{CachedVault, ReadCache, ReadCacheConfig};
pub use error::{KeyVaultError, classify, describe};
pub use retry::{RetryPolicy, RetryingVault, VaultLimits};
pub use sdk::SdkConnector;

use crate::{auth::IdentityKey, sensitive::SecretBytes};
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use std::sync::Arc;
use time::OffsetDateTime;

/// Most versions of one object scanned for `objectVersionHistory`.
pub const MAX_VERSIONS_SCANNED: usize = 10_000;

/// A secret as read from Key Vault.
#[derive(Debug, Clone)]
pub struct FetchedSecret {
    /// The secret's version: the last segment of its id.
    pub version: String,
    /// The stored value (text as stored; certificate-backed secrets hold base64 PFX or PEM).
    pub value: SecretBytes,
    /// `contentType`, if set.
    pub content_type: Option<String>,
    /// `kid`: set when the secret backs a certificate.
    pub kid: Option<String>,
}

/// One version of an object, from a version listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// Version id.
    pub version: String,
    /// Creation time, if reported.
    pub created: Option<OffsetDateTime>,
    /// Whether the version is enabled.
    pub enabled: bool,
}

/// Read access to one vault, with one identity.
#[async_trait]
pub trait Vault: Send + Sync {
    /// Reads a secret, the latest version when `version` is `None`.
    async fn get_secret(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedSecret, KeyVaultError>;

    /// Lists all versions of a secret (at most [`MAX_VERSIONS_SCANNED`]).
    async fn list_secret_versions(&self, name: &str) -> Result<Vec<VersionInfo>, KeyVaultError>;
}

/// Opens vaults for a credential.
pub trait VaultConnector: Send + Sync {
    /// A client for the vault at `vault_url` authenticating as `identity` with `credential`.
    ///
    /// Implementations may reuse a client made earlier for the same vault and identity key.
    fn connect(
        &self,
        vault_url: &str,
        identity: &IdentityKey,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Arc<dyn Vault>, KeyVaultError>;
}

/// The version segment of a Key Vault object id (`https://v/secrets/<name>/<version>`).
pub fn version_of(id: &str) -> Option<String> {
    let url = url::Url::parse(id).ok()?;
    let segments: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [_, _, version] if !version.is_empty() => Some((*version).to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::version_of;

    #[test]
    fn versions_from_ids() {
        assert_eq!(
            version_of("https://kv.vault.azure.net/secrets/db/0123abc").as_deref(),
            Some("0123abc")
        );
        assert_eq!(
            version_of("https://kv.vault.azure.net/secrets/db/abc/").as_deref(),
            Some("abc")
        );
        assert_eq!(version_of("https://kv.vault.azure.net/secrets/db"), None);
        assert_eq!(version_of("not a url"), None);
    }
}

//! Reading objects from Key Vault, behind a small trait so the mount logic does not depend on the SDK.

mod cache;
mod error;
mod limit;
mod retry;
#[cfg(test)]
mod scripted;
mod sdk;

pub use cache::{CachedVault, ReadCache, ReadCacheConfig};
pub use error::{KeyVaultError, SdkCause, classify, describe};
pub use limit::{LimitedVault, VaultLimits};
pub(crate) use retry::random_fraction;
pub use retry::{RetryPolicy, RetryingVault};
pub use sdk::SdkConnector;

use crate::{auth::IdentityKey, sensitive::SecretBytes};
use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use std::sync::Arc;
use time::OffsetDateTime;

/// Most versions of one object scanned for `objectVersionHistory`.
pub const MAX_VERSIONS_SCANNED: usize = 10_000;
/// Most secrets of one vault scanned for `objectNamePrefix` / `objectTags`; a larger vault is an
/// error rather than a silently incomplete mount.
pub const MAX_SECRETS_SCANNED: usize = 25_000;
/// Secrets asked for per page of a listing (`maxresults`): Key Vault's largest page.
pub const LIST_PAGE_SIZE: i32 = 25;

/// The Key Vault permission an operation needs (data-plane `get` or `list`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Read one object.
    Get,
    /// List versions or objects.
    List,
}

impl Permission {
    /// The name Key Vault's access policies and error messages use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three collections of a vault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// `/secrets` (also the secrets that back certificates).
    Secret,
    /// `/keys`.
    Key,
    /// `/certificates`.
    Certificate,
}

impl ObjectKind {
    /// The collection's name in Key Vault's permission model: `secrets`, `keys`, `certificates`.
    pub fn collection(self) -> &'static str {
        match self {
            Self::Secret => "secrets",
            Self::Key => "keys",
            Self::Certificate => "certificates",
        }
    }

    /// The built-in Azure RBAC role that grants reading this collection.
    pub fn reader_role(self) -> &'static str {
        match self {
            Self::Secret => "Key Vault Secrets User",
            Self::Key => "Key Vault Crypto User",
            Self::Certificate => "Key Vault Certificate User",
        }
    }
}

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

/// The public part of a key as read from Key Vault (a JSON Web Key; Key Vault never returns
/// private parts here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchedKey {
    /// The key's version: the last segment of its `kid`.
    pub version: String,
    /// `kty`: `RSA`, `RSA-HSM`, `EC`, `EC-HSM`, `oct`, `oct-HSM`.
    pub kty: String,
    /// `crv` of EC keys.
    pub crv: Option<String>,
    /// RSA modulus.
    pub n: Option<Vec<u8>>,
    /// RSA public exponent.
    pub e: Option<Vec<u8>>,
    /// EC x coordinate.
    pub x: Option<Vec<u8>>,
    /// EC y coordinate.
    pub y: Option<Vec<u8>>,
}

/// A certificate as read from Key Vault (public part only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchedCertificate {
    /// The certificate's version: the last segment of its id.
    pub version: String,
    /// `cer`: the leaf certificate, DER.
    pub cer: Vec<u8>,
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

/// One secret of a vault listing (no value): what bulk entries select on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretSummary {
    /// The secret's name.
    pub name: String,
    /// Whether its current version is enabled.
    pub enabled: bool,
    /// Its tags.
    pub tags: std::collections::HashMap<String, String>,
    /// Whether it backs a certificate.
    pub managed: bool,
}

/// One page of a vault's secret listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretPage {
    /// The secrets of this page.
    pub secrets: Vec<SecretSummary>,
    /// Key Vault's `nextLink`: the page after this one, `None` on the last page.
    pub next: Option<String>,
}

/// Adds a page to a listing; more than [`MAX_SECRETS_SCANNED`] is
/// [`KeyVaultError::TooManySecrets`].
pub fn extend_listing(
    all: &mut Vec<SecretSummary>,
    page: Vec<SecretSummary>,
    vault: &str,
) -> Result<(), KeyVaultError> {
    if all.len() + page.len() > MAX_SECRETS_SCANNED {
        return Err(KeyVaultError::TooManySecrets {
            vault: vault.to_owned(),
            limit: MAX_SECRETS_SCANNED,
        });
    }
    all.extend(page);
    Ok(())
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

    /// Reads the public part of a key, the latest version when `version` is `None`.
    async fn get_key(&self, name: &str, version: Option<&str>)
    -> Result<FetchedKey, KeyVaultError>;

    /// Reads a certificate, the latest version when `version` is `None`.
    async fn get_certificate(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedCertificate, KeyVaultError>;

    /// Lists all versions of a secret, key or certificate (at most [`MAX_VERSIONS_SCANNED`]).
    async fn list_versions(
        &self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Vec<VersionInfo>, KeyVaultError>;

    /// Lists the vault's secrets (names, enabled, tags; no values), at most
    /// [`MAX_SECRETS_SCANNED`]; more is [`KeyVaultError::TooManySecrets`].
    async fn list_secrets(&self) -> Result<Vec<SecretSummary>, KeyVaultError>;

    /// One page of the listing: the first for `next` = `None`, else the page Key Vault's
    /// `nextLink` names. Lets a retry resume a half-read listing where it failed. The default
    /// serves the whole listing as one page.
    async fn list_secrets_page(&self, next: Option<&str>) -> Result<SecretPage, KeyVaultError> {
        if next.is_some() {
            return Ok(SecretPage::default());
        }
        Ok(SecretPage {
            secrets: self.list_secrets().await?,
            next: None,
        })
    }
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

    /// Drops a reused client after its identity failed to authenticate, so the next Mount starts
    /// with a fresh credential (the SDK's credentials keep what the token service answered).
    fn forget(&self, _vault_url: &str, _identity: &IdentityKey) {}
}

/// The version segment of a Key Vault object id (`https://v/secrets/<name>/<version>`; also
/// `/keys/` and `/certificates/`).
pub fn version_of(id: &str) -> Option<String> {
    let url = url::Url::parse(id).ok()?;
    let segments: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [_, _, version] if !version.is_empty() => Some((*version).to_owned()),
        _ => None,
    }
}

/// The name segment of a Key Vault object id (`https://v/secrets/<name>[/<version>]`).
pub fn name_of(id: &str) -> Option<String> {
    let url = url::Url::parse(id).ok()?;
    let segments: Vec<&str> = url.path_segments()?.filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [_, name] | [_, name, _] => Some((*name).to_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{name_of, version_of};

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
        assert_eq!(
            name_of("https://kv.vault.azure.net/secrets/db").as_deref(),
            Some("db")
        );
        assert_eq!(
            name_of("https://kv.vault.azure.net/secrets/db/abc").as_deref(),
            Some("db")
        );
        assert_eq!(name_of("https://kv.vault.azure.net/"), None);
    }
}

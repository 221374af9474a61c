//! [`Vault`] over the official `azure_security_keyvault_secrets` client.

use super::{
    FetchedSecret, KeyVaultError, MAX_VERSIONS_SCANNED, Vault, VaultConnector, VersionInfo,
    classify, version_of,
};
use crate::{sensitive::SecretBytes, transport::HttpTransport};
use async_trait::async_trait;
use azure_core::{
    credentials::TokenCredential,
    http::{ClientOptions, ExponentialRetryOptions, RetryOptions},
    time::Duration,
};
use azure_security_keyvault_secrets::{
    SecretClient, SecretClientOptions,
    models::{SecretClientGetSecretOptions, SecretClientListSecretPropertiesVersionsOptions},
};
use futures::TryStreamExt;
use std::sync::Arc;

/// The retry policy for Key Vault and token requests: a few quick retries; the driver retries
/// `Unavailable` mounts itself, and rotation runs again later.
pub fn retry_options() -> RetryOptions {
    RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: Duration::milliseconds(250),
        max_retries: 3,
        max_total_elapsed: Duration::seconds(20),
        max_delay: Duration::seconds(8),
    })
}

/// Opens [`SdkVault`]s over the shared transport.
#[derive(Debug, Clone)]
pub struct SdkConnector {
    transport: Arc<HttpTransport>,
}

impl SdkConnector {
    /// A connector over the shared transport.
    pub fn new(transport: Arc<HttpTransport>) -> Self {
        Self { transport }
    }
}

impl VaultConnector for SdkConnector {
    fn connect(
        &self,
        vault_url: &str,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Arc<dyn Vault>, KeyVaultError> {
        let vault = url::Url::parse(vault_url)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .and_then(|h| h.split('.').next())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| vault_url.to_owned());
        let options = SecretClientOptions {
            client_options: ClientOptions {
                transport: Some(self.transport.sdk_transport()),
                retry: retry_options(),
                ..ClientOptions::default()
            },
            ..SecretClientOptions::default()
        };
        let client = SecretClient::new(vault_url, credential, Some(options)).map_err(|e| {
            KeyVaultError::BadResponse {
                vault: vault.clone(),
                object: "-".into(),
                detail: format!("invalid vault URL {vault_url}: {e}"),
            }
        })?;
        Ok(Arc::new(SdkVault { client, vault }))
    }
}

/// One vault through the SDK's `SecretClient`.
pub struct SdkVault {
    client: SecretClient,
    vault: String,
}

#[async_trait]
impl Vault for SdkVault {
    async fn get_secret(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedSecret, KeyVaultError> {
        let object = match version {
            Some(v) => format!("secret/{name} (version {v})"),
            None => format!("secret/{name}"),
        };
        let options = SecretClientGetSecretOptions {
            secret_version: version.map(str::to_owned),
            ..SecretClientGetSecretOptions::default()
        };
        let response = self
            .client
            .get_secret(name, Some(options))
            .await
            .map_err(|e| classify(&e, &self.vault, &object, "get"))?;
        let bad = |detail: &str| KeyVaultError::BadResponse {
            vault: self.vault.clone(),
            object: object.clone(),
            detail: detail.to_owned(),
        };
        let content_type = response
            .headers()
            .get_optional_str(&azure_core::http::headers::CONTENT_TYPE)
            .map(super::error::clip)
            .unwrap_or_default();
        let secret = response.into_model().map_err(|_| {
            bad(&format!(
                "the body is not a JSON secret bundle (Content-Type {content_type}); a proxy may be answering in Key Vault's place"
            ))
        })?;
        let id = secret
            .id
            .as_deref()
            .ok_or_else(|| bad("the secret has no id"))?;
        let found_version = version_of(id).ok_or_else(|| bad("the secret id has no version"))?;
        if let Some(pinned) = version
            && !pinned.eq_ignore_ascii_case(&found_version)
        {
            return Err(bad("the returned version is not the requested one"));
        }
        let value = secret.value.ok_or_else(|| bad("the secret has no value"))?;
        Ok(FetchedSecret {
            version: found_version,
            value: SecretBytes::new(value.into_bytes()),
            content_type: secret.content_type,
            kid: secret.kid,
        })
    }

    async fn list_secret_versions(&self, name: &str) -> Result<Vec<VersionInfo>, KeyVaultError> {
        let object = format!("secret/{name}");
        let mut pager = self
            .client
            .list_secret_properties_versions(
                name,
                Some(SecretClientListSecretPropertiesVersionsOptions::default()),
            )
            .map_err(|e| classify(&e, &self.vault, &object, "list"))?;
        let mut versions = Vec::new();
        while let Some(item) = pager
            .try_next()
            .await
            .map_err(|e| classify(&e, &self.vault, &object, "list"))?
        {
            let Some(version) = item.id.as_deref().and_then(version_of) else {
                continue;
            };
            let attributes = item.attributes.unwrap_or_default();
            versions.push(VersionInfo {
                version,
                created: attributes.created,
                enabled: attributes.enabled.unwrap_or(true),
            });
            if versions.len() >= MAX_VERSIONS_SCANNED {
                break;
            }
        }
        Ok(versions)
    }
}

//! Fetching and converting the objects of a plan.

use super::{MountError, MountPlan};
use crate::{
    auth::CredentialFactory,
    convert::{self, ConvertError},
    keyvault::{FetchedSecret, KeyVaultError, Vault, VaultConnector, VersionInfo},
    metrics::Metrics,
    sensitive::SecretBytes,
    spc::{KeyVaultObject, ObjectFormat, ObjectType},
};
use futures::{StreamExt, TryStreamExt, stream};
use std::{cmp::Reverse, sync::Arc, time::Instant};

/// Content type of PKCS#12 certificate-backed secrets.
const CONTENT_TYPE_PKCS12: &str = "application/x-pkcs12";

/// One file of the reply.
#[derive(Debug, Clone)]
pub struct OutputFile {
    /// Relative path.
    pub path: String,
    /// Mode bits.
    pub mode: u32,
    /// Contents.
    pub contents: SecretBytes,
}

/// What a Mount returns: files and object versions, in the SPC's order.
#[derive(Debug, Clone, Default)]
pub struct MountOutput {
    /// Files to write.
    pub files: Vec<OutputFile>,
    /// `(id, version)` pairs.
    pub versions: Vec<(String, String)>,
}

impl MountOutput {
    /// Bytes of all file contents.
    pub fn total_bytes(&self) -> usize {
        self.files.iter().map(|f| f.contents.len()).sum()
    }
}

/// Settings of the mount executor.
#[derive(Debug, Clone, Copy)]
pub struct MounterConfig {
    /// Objects fetched at once.
    pub max_concurrent_fetches: usize,
    /// Largest reply, in encoded bytes (the driver's `--max-call-recv-msg-size`).
    pub max_reply_bytes: usize,
}

/// Runs Mount plans against Key Vault.
pub struct Mounter {
    credentials: CredentialFactory,
    connector: Arc<dyn VaultConnector>,
    config: MounterConfig,
    metrics: Arc<Metrics>,
}

impl Mounter {
    /// An executor over a credential factory and a vault connector.
    pub fn new(
        credentials: CredentialFactory,
        connector: Arc<dyn VaultConnector>,
        config: MounterConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            credentials,
            connector,
            config,
            metrics,
        }
    }

    /// Fetches and converts every object of `plan`; any failure fails the whole Mount.
    pub async fn mount(&self, plan: &MountPlan) -> Result<MountOutput, MountError> {
        let credential = self.credentials.credential(&plan.identity, &plan.cloud)?;
        let identity = plan.identity.to_string();
        let vault = self
            .connector
            .connect(&plan.vault_url, credential)
            .map_err(|source| MountError::Vault {
                source,
                identity: identity.clone(),
            })?;
        let vault_name = plan.spc.keyvault_name.as_str();
        let fetches: Vec<_> = plan
            .spc
            .objects
            .iter()
            .map(|object| self.timed_fetch(vault.as_ref(), vault_name, object, plan.default_mode))
            .collect();
        let parts: Vec<MountOutput> = stream::iter(fetches)
            .buffered(self.config.max_concurrent_fetches.max(1))
            .try_collect()
            .await
            .map_err(|e| match e {
                FetchError::Vault(source) => MountError::Vault {
                    source,
                    identity: identity.clone(),
                },
                FetchError::Convert(e) => MountError::Convert(e),
            })?;
        let mut output = MountOutput::default();
        for part in parts {
            output.files.extend(part.files);
            output.versions.extend(part.versions);
        }
        let size = super::reply_len(&output);
        if size > self.config.max_reply_bytes {
            return Err(MountError::TooLarge {
                total: size,
                limit: self.config.max_reply_bytes,
            });
        }
        self.metrics
            .mount_size(plan.spc.objects.len(), output.total_bytes());
        Ok(output)
    }

    /// Fetches one object and records its latency and outcome in `keyvault_request`.
    async fn timed_fetch(
        &self,
        vault: &dyn Vault,
        vault_name: &str,
        object: &KeyVaultObject,
        default_mode: u32,
    ) -> Result<MountOutput, FetchError> {
        let started = Instant::now();
        let result = fetch_object(vault, vault_name, object, default_mode).await;
        let error = result.as_ref().err().map(|e| match e {
            FetchError::Vault(e) => e.kind(),
            FetchError::Convert(e) => e.kind(),
        });
        self.metrics.keyvault_request(
            object.object_type.as_str(),
            &object.name,
            error,
            started.elapsed(),
        );
        result
    }
}

enum FetchError {
    Vault(KeyVaultError),
    Convert(ConvertError),
}

impl From<KeyVaultError> for FetchError {
    fn from(e: KeyVaultError) -> Self {
        Self::Vault(e)
    }
}

impl From<ConvertError> for FetchError {
    fn from(e: ConvertError) -> Self {
        Self::Convert(e)
    }
}

async fn fetch_object(
    vault: &dyn Vault,
    vault_name: &str,
    object: &KeyVaultObject,
    default_mode: u32,
) -> Result<MountOutput, FetchError> {
    let mode = object.file_permission.unwrap_or(default_mode);
    let label = object.version_id();
    if object.object_type != ObjectType::Secret {
        return Err(ConvertError::Unsupported {
            object: label,
            what: format!("objectType {}", object.object_type.as_str()),
        }
        .into());
    }
    tracing::trace!(object = %label, vault = vault_name, version = object.version.as_deref().unwrap_or("latest"), "fetching object");
    let mut output = MountOutput::default();
    if object.version_history > 1 {
        let versions = newest_enabled(
            vault.list_secret_versions(&object.name).await?,
            object.version_history,
        );
        for (index, version) in versions.iter().enumerate() {
            let secret = vault
                .get_secret(&object.name, Some(&version.version))
                .await?;
            let contents = secret_contents(&secret, object, &label)?;
            output.files.push(OutputFile {
                path: format!("{}/{index}", object.file_name()),
                mode,
                contents,
            });
            output
                .versions
                .push((format!("{label}/{index}"), secret.version));
        }
        return Ok(output);
    }
    let secret = vault
        .get_secret(&object.name, object.version.as_deref())
        .await?;
    let contents = secret_contents(&secret, object, &label)?;
    output.files.push(OutputFile {
        path: object.file_name().to_owned(),
        mode,
        contents,
    });
    output.versions.push((label, secret.version));
    Ok(output)
}

/// The `n` newest enabled versions, newest first (ties broken by version id for stable output).
pub(crate) fn newest_enabled(mut versions: Vec<VersionInfo>, n: u32) -> Vec<VersionInfo> {
    versions.retain(|v| v.enabled);
    versions
        .sort_by(|a, b| (Reverse(a.created), &a.version).cmp(&(Reverse(b.created), &b.version)));
    versions.truncate(n as usize);
    versions
}

fn secret_contents(
    secret: &FetchedSecret,
    object: &KeyVaultObject,
    label: &str,
) -> Result<SecretBytes, ConvertError> {
    let is_pkcs12 = secret.kid.is_some()
        && secret
            .content_type
            .as_deref()
            .is_some_and(|ct| ct.trim().eq_ignore_ascii_case(CONTENT_TYPE_PKCS12));
    if is_pkcs12 && object.format == ObjectFormat::Pem {
        return Err(ConvertError::Unsupported {
            object: label.to_owned(),
            what: "converting a PKCS#12 certificate-backed secret to PEM (use objectFormat: pfx meanwhile)".to_owned(),
        });
    }
    convert::decode(&secret.value, object.encoding, label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;

    fn v(version: &str, created: i64, enabled: bool) -> VersionInfo {
        VersionInfo {
            version: version.into(),
            created: OffsetDateTime::from_unix_timestamp(created).ok(),
            enabled,
        }
    }

    #[test]
    fn history_takes_exactly_n_newest_enabled() {
        let all = vec![
            v("a", 10, true),
            v("d", 40, true),
            v("b", 20, false),
            v("c", 30, true),
            v("e", 50, true),
        ];
        let got: Vec<String> = newest_enabled(all.clone(), 3)
            .into_iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(got, ["e", "d", "c"]);
        let got: Vec<String> = newest_enabled(all, 10)
            .into_iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(got, ["e", "d", "c", "a"]);
    }
}

//! Fetching and converting the objects of a plan.

use super::{MountError, MountPlan};
use crate::{
    auth::{CredentialFactory, IdentityKey},
    convert::{self, CertificateFiles, ConvertError, jwk::PublicJwk},
    keyvault::{
        CachedVault, FetchedSecret, KeyVaultError, LimitedVault, ObjectKind, ReadCache,
        ReadCacheConfig, RetryPolicy, RetryingVault, SecretSummary, Vault, VaultConnector,
        VaultLimits, VersionInfo,
    },
    metrics::Metrics,
    review::{PodRef, Sharing, TokenReviewer},
    sensitive::SecretBytes,
    spc::{
        KeyVaultObject, MAX_OBJECTS, MAX_SELECTED_SECRETS, ObjectEncoding, ObjectFormat,
        ObjectType, SpcError, check_file_conflicts,
    },
};
use futures::{StreamExt, TryStreamExt, stream};
use std::{cmp::Reverse, collections::HashMap, sync::Arc};
use tokio::time::Instant;

/// Content type of PKCS#12 certificate-backed secrets.
const CONTENT_TYPE_PKCS12: &str = "application/x-pkcs12";
/// Content type of PEM certificate-backed secrets.
const CONTENT_TYPE_PEM: &str = "application/x-pem-file";
/// File name suffix of the certificates of a certificate-backed secret (separate files).
const CRT_SUFFIX: &str = ".crt";
/// File name suffix of the private key of a certificate-backed secret (separate files).
const KEY_SUFFIX: &str = ".key";

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
    /// Requests in flight to one vault from this process, across Mounts.
    pub max_concurrent_per_vault: usize,
    /// Retries of throttled or unavailable reads.
    pub retry: RetryPolicy,
    /// Pinned-version and latest-window caching.
    pub cache: ReadCacheConfig,
    /// `--construct-pem-chain`: order PKCS#12 certificates leaf → root.
    pub construct_pem_chain: bool,
    /// `--write-cert-and-key-in-separate-files`: also `<file>.crt` and `<file>.key` for
    /// certificate-backed secrets.
    pub write_cert_and_key_in_separate_files: bool,
}

/// Runs Mount plans against Key Vault.
pub struct Mounter {
    credentials: CredentialFactory,
    connector: Arc<dyn VaultConnector>,
    config: MounterConfig,
    metrics: Arc<Metrics>,
    limits: VaultLimits,
    reads: Arc<ReadCache>,
    reviewer: Option<Arc<TokenReviewer>>,
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
            limits: VaultLimits::new(config.max_concurrent_per_vault),
            reads: Arc::new(ReadCache::new(config.cache, metrics.clone())),
            reviewer: None,
            config,
            metrics,
        }
    }

    /// Workload-identity and identity-binding Mounts have their service-account token reviewed
    /// by Kubernetes: vouched for, they share the identity of their service account; refused,
    /// they fail (see [`crate::review`]).
    #[must_use]
    pub fn with_reviewer(mut self, reviewer: Arc<TokenReviewer>) -> Self {
        self.reviewer = Some(reviewer);
        self
    }

    /// The key of the plan's identity: shared by the pods of a service account when Kubernetes
    /// vouched for the token, else the identity's own (per token).
    async fn identity_key(&self, plan: &MountPlan) -> Result<(IdentityKey, bool), MountError> {
        let own = (plan.identity.key(&plan.cloud), false);
        let (Some(reviewer), Some((token, audience))) =
            (&self.reviewer, plan.identity.service_account_token())
        else {
            return Ok(own);
        };
        let pod = PodRef {
            namespace: &plan.pod.namespace,
            name: &plan.pod.name,
            uid: &plan.pod.uid,
            service_account: &plan.pod.service_account,
        };
        Ok(
            match reviewer
                .vouch(plan.identity.mode(), token, audience, pod)
                .await?
            {
                Sharing::Shared(vouched) => plan
                    .identity
                    .shared_key(&plan.cloud, &vouched)
                    .map_or(own, |key| (key, true)),
                Sharing::PerToken(_) => own,
            },
        )
    }

    /// Fetches and converts every object of `plan`; any failure fails the whole Mount (an
    /// `optional` object that is missing or disabled is skipped instead).
    /// Retries stop in time for `deadline`.
    pub async fn mount(
        &self,
        plan: &MountPlan,
        deadline: Instant,
    ) -> Result<MountOutput, MountError> {
        let (key, shared) = self.identity_key(plan).await?;
        let result = self.mount_once(plan, &key, shared, deadline).await;
        if let Err(MountError::Vault { source, .. }) = &result
            && matches!(
                source,
                KeyVaultError::Authentication { .. }
                    | KeyVaultError::AuthenticationUnavailable { .. }
                    | KeyVaultError::Unauthorized { .. }
            )
        {
            // The SDK credential inside a reused client keeps what the token service answered;
            // after an authentication failure the next Mount must start from scratch.
            for vault_name in plan.spc.vault_names() {
                let vault_url = if vault_name == plan.spc.keyvault_name {
                    plan.vault_url.clone()
                } else {
                    plan.cloud.vault_url(vault_name)
                };
                self.connector.forget(&vault_url, &key);
            }
        }
        result
    }

    async fn mount_once(
        &self,
        plan: &MountPlan,
        key: &IdentityKey,
        shared: bool,
        deadline: Instant,
    ) -> Result<MountOutput, MountError> {
        let credential = self
            .credentials
            .credential(&plan.identity, &plan.cloud, key)?;
        let identity = plan.identity.to_string();
        let vault_error = |source| MountError::Vault {
            source,
            identity: identity.clone(),
        };
        // One client per vault the SPC reads: its own, and every per-object keyvaultName.
        let mut vaults: HashMap<String, Arc<dyn Vault>> = HashMap::new();
        for vault_name in plan.spc.vault_names() {
            let vault_url = if vault_name == plan.spc.keyvault_name {
                plan.vault_url.clone()
            } else {
                plan.cloud.vault_url(vault_name)
            };
            let client = self
                .connector
                .connect(&vault_url, key, credential.clone())
                .map_err(vault_error)?;
            // Shared by every Mount: the client (one per vault and identity), the per-vault cap
            // and the read cache. This Mount's own: its deadline, carried by the retries on top.
            let limited: Arc<dyn Vault> =
                Arc::new(LimitedVault::new(client, self.limits.for_vault(&vault_url)));
            let retrying = |inner: Arc<dyn Vault>| -> Arc<dyn Vault> {
                Arc::new(RetryingVault::new(
                    inner,
                    vault_name,
                    deadline,
                    self.config.retry,
                    self.metrics.clone(),
                ))
            };
            let cached = Arc::new(
                CachedVault::new(
                    limited.clone(),
                    retrying(limited),
                    self.reads.clone(),
                    &vault_url,
                    key.clone(),
                )
                .shared(shared),
            );
            vaults.insert(vault_name.to_ascii_lowercase(), retrying(cached));
        }
        let vault_of = |object: &KeyVaultObject| {
            let name = object
                .keyvault_name
                .as_deref()
                .unwrap_or(&plan.spc.keyvault_name);
            vaults
                .get(&name.to_ascii_lowercase())
                .map(|v| (name.to_owned(), v.clone()))
        };
        let objects = self.expand(plan, &vault_of).await.map_err(|e| match e {
            ExpandError::Vault(source) => vault_error(source),
            ExpandError::Mount(e) => e,
        })?;
        if objects.len() > MAX_OBJECTS {
            return Err(MountError::Spc(SpcError::ObjectsYaml(format!(
                "selects {} objects after expanding objectNamePrefix/objectTags; at most {MAX_OBJECTS} are mounted",
                objects.len()
            ))));
        }
        check_file_conflicts(&objects)?;
        let fetches: Vec<_> = objects
            .iter()
            .map(|object| {
                let vault = vault_of(object);
                async move {
                    let (vault_name, vault) =
                        vault.ok_or_else(|| FetchError::Vault(no_client(object)))?;
                    self.timed_fetch(vault.as_ref(), &vault_name, object, plan.default_mode)
                        .await
                }
            })
            .collect();
        let parts: Vec<MountOutput> = stream::iter(fetches)
            .buffered(self.config.max_concurrent_fetches.max(1))
            .try_collect()
            .await
            .map_err(|e| match e {
                FetchError::Vault(source) => vault_error(source),
                FetchError::Convert(e) => MountError::Convert(e),
            })?;
        check_paths(&parts, &objects)?;
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
        self.metrics.mount_size(objects.len(), output.total_bytes());
        Ok(output)
    }

    /// Replaces every bulk entry (`objectNamePrefix` / `objectTags`) by the enabled secrets it
    /// selects, sorted by name; each vault is listed at most once per Mount.
    async fn expand(
        &self,
        plan: &MountPlan,
        vault_of: &VaultOf<'_>,
    ) -> Result<Vec<KeyVaultObject>, ExpandError> {
        let mut listings: HashMap<String, Vec<SecretSummary>> = HashMap::new();
        let mut objects = Vec::with_capacity(plan.spc.objects.len());
        for object in &plan.spc.objects {
            let Some(selector) = &object.selector else {
                objects.push(object.clone());
                continue;
            };
            let (vault_name, vault) =
                vault_of(object).ok_or_else(|| ExpandError::Vault(no_client(object)))?;
            let listing_key = vault_name.to_ascii_lowercase();
            if !listings.contains_key(&listing_key) {
                let listed = vault.list_secrets().await.map_err(ExpandError::Vault)?;
                listings.insert(listing_key.clone(), listed);
            }
            let mut names: Vec<&str> = listings
                .get(&listing_key)
                .into_iter()
                .flatten()
                .filter(|s| s.enabled && selector.matches(&s.name, &s.tags))
                .map(|s| s.name.as_str())
                .collect();
            names.sort_by_key(|n| n.to_ascii_lowercase());
            names.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
            tracing::debug!(vault = %vault_name, selector = %selector, matched = names.len(), "listed secrets for a bulk entry");
            if names.len() > MAX_SELECTED_SECRETS {
                return Err(ExpandError::Mount(MountError::TooManyMatches {
                    vault: vault_name,
                    selector: selector.to_string(),
                    found: names.len(),
                    limit: MAX_SELECTED_SECRETS,
                }));
            }
            if names.is_empty() {
                if object.optional {
                    self.skipped(&object.shown(), &vault_name, "no_match");
                    continue;
                }
                return Err(ExpandError::Mount(MountError::NoMatches {
                    vault: vault_name,
                    selector: selector.to_string(),
                }));
            }
            objects.extend(names.into_iter().map(|name| object.expand(name)));
        }
        Ok(objects)
    }

    /// Logs and counts an optional object that is skipped.
    fn skipped(&self, object: &str, vault: &str, reason: &'static str) {
        tracing::warn!(object = %object, vault = %vault, reason, "optional object skipped");
        self.metrics.optional_skipped(reason);
    }

    /// Fetches one object and records its latency and outcome in `keyvault_request`; an optional
    /// object that is missing or disabled yields no files.
    async fn timed_fetch(
        &self,
        vault: &dyn Vault,
        vault_name: &str,
        object: &KeyVaultObject,
        default_mode: u32,
    ) -> Result<MountOutput, FetchError> {
        let started = Instant::now();
        let result = fetch_object(vault, vault_name, object, default_mode, self.config).await;
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
        match result {
            Err(FetchError::Vault(e)) if object.optional && e.is_skippable() => {
                self.skipped(&object.shown(), vault_name, e.kind());
                Ok(MountOutput::default())
            }
            other => other,
        }
    }
}

/// Every vault of the plan has a client; this is the error if one were missing (a bug).
fn no_client(object: &KeyVaultObject) -> KeyVaultError {
    KeyVaultError::BadResponse {
        vault: object.keyvault_name.clone().unwrap_or_default(),
        object: object.version_id(),
        detail: "no client was opened for this vault".into(),
        cause: None,
    }
}

/// Finds the vault (name and client) an object is read from.
type VaultOf<'a> = dyn Fn(&KeyVaultObject) -> Option<(String, Arc<dyn Vault>)> + Sync + 'a;

/// Why expanding bulk entries failed.
enum ExpandError {
    Vault(KeyVaultError),
    Mount(MountError),
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

/// Two objects may not write the same file, nor a file where another writes a folder. The SPC
/// check cannot see the `.crt`/`.key` files of certificate-backed secrets, nor what a bulk entry
/// matched, so the same check runs on the reply.
fn check_paths(parts: &[MountOutput], objects: &[KeyVaultObject]) -> Result<(), MountError> {
    let owners: Vec<(String, Vec<String>)> = parts
        .iter()
        .zip(objects)
        .map(|(part, object)| {
            (
                object.shown(),
                part.files.iter().map(|f| f.path.clone()).collect(),
            )
        })
        .collect();
    match crate::spc::path_conflicts(&owners).into_iter().next() {
        Some(conflict) => Err(MountError::Spc(conflict)),
        None => Ok(()),
    }
}

async fn fetch_object(
    vault: &dyn Vault,
    vault_name: &str,
    object: &KeyVaultObject,
    default_mode: u32,
    config: MounterConfig,
) -> Result<MountOutput, FetchError> {
    let mode = object.file_permission.unwrap_or(default_mode);
    let label = object.version_id();
    tracing::trace!(object = %label, vault = vault_name, version = object.version.as_deref().unwrap_or("latest"), "fetching object");
    let mut output = MountOutput::default();
    if !object.json_keys.is_empty() {
        let secret = vault
            .get_secret(&object.name, object.version.as_deref())
            .await?;
        let contents = convert::json::extract(&secret.value, &object.json_keys, &label)?;
        for (key, contents) in object.json_keys.iter().zip(contents) {
            output.files.push(OutputFile {
                path: key.alias.clone(),
                mode,
                contents,
            });
            output
                .versions
                .push((format!("{label}#{}", key.alias), secret.version.clone()));
        }
        return Ok(output);
    }
    let mut push = |path: &str, id: &str, version: String, files: Vec<(&str, SecretBytes)>| {
        for (suffix, contents) in files {
            output.files.push(OutputFile {
                path: format!("{path}{suffix}"),
                mode,
                contents,
            });
            output.versions.push((id.to_owned(), version.clone()));
        }
    };
    if object.version_history > 1 {
        let kind = match object.object_type {
            ObjectType::Secret => ObjectKind::Secret,
            ObjectType::Key => ObjectKind::Key,
            ObjectType::Cert => ObjectKind::Certificate,
        };
        let start = object
            .version
            .as_deref()
            .filter(|v| !v.eq_ignore_ascii_case(LATEST));
        let listed = vault.list_versions(kind, &object.name).await?;
        let Some(versions) = history_from(listed, start, object.version_history) else {
            // The pinned start is not among the enabled versions: read it for Key Vault's own
            // answer (disabled, or not found); were it readable after all, it is still not in
            // the list the history is taken from.
            let pinned = start.unwrap_or_default();
            fetch_version(vault, object, Some(pinned), &label, config).await?;
            return Err(FetchError::Vault(KeyVaultError::NotFound {
                // The version list is Key Vault's own answer: the version is not an enabled one.
                definite: true,
                vault: vault_name.to_owned(),
                object: format!(
                    "{label}@{pinned} (the objectVersion objectVersionHistory starts at, among the enabled versions)"
                ),
            }));
        };
        for (index, version) in versions.iter().enumerate() {
            let (found, files) =
                fetch_version(vault, object, Some(&version.version), &label, config).await?;
            push(
                &format!("{}/{index}", object.file_name()),
                &format!("{label}/{index}"),
                found,
                files,
            );
        }
        return Ok(output);
    }
    let (found, files) =
        fetch_version(vault, object, object.version.as_deref(), &label, config).await?;
    push(object.file_name(), &label, found, files);
    Ok(output)
}

/// One version of an object: its version id and its files as `(suffix, contents)`, in the Go
/// provider's order (`.crt`, `.key`, then the object's own file).
async fn fetch_version(
    vault: &dyn Vault,
    object: &KeyVaultObject,
    version: Option<&str>,
    label: &str,
    config: MounterConfig,
) -> Result<(String, Vec<(&'static str, SecretBytes)>), FetchError> {
    match object.object_type {
        ObjectType::Secret => {
            let secret = vault.get_secret(&object.name, version).await?;
            let files = secret_files(&secret, object, label, config).await?;
            Ok((secret.version, files))
        }
        ObjectType::Key => {
            let key = vault.get_key(&object.name, version).await?;
            let jwk = PublicJwk {
                kty: &key.kty,
                crv: key.crv.as_deref(),
                n: key.n.as_deref(),
                e: key.e.as_deref(),
                x: key.x.as_deref(),
                y: key.y.as_deref(),
            };
            let pem = convert::public_key_pem(&jwk, label)?;
            Ok((key.version, vec![("", pem)]))
        }
        ObjectType::Cert => {
            let certificate = vault.get_certificate(&object.name, version).await?;
            let pem = convert::certificate_pem(&certificate.cer, label)?;
            Ok((certificate.version, vec![("", pem)]))
        }
    }
}

/// The `objectVersion` that means "the latest" to the Go provider's history.
const LATEST: &str = "latest";

/// `objectVersionHistory`: `n` enabled versions, newest first (ties broken by version id for
/// stable output), starting at the pinned version
/// `start` (the Go provider's order: `<file>/0` is the pinned version, then older ones), or at
/// the latest. `None` when `start` is not among the enabled versions.
pub(crate) fn history_from(
    mut versions: Vec<VersionInfo>,
    start: Option<&str>,
    n: u32,
) -> Option<Vec<VersionInfo>> {
    versions.retain(|v| v.enabled);
    versions
        .sort_by(|a, b| (Reverse(a.created), &a.version).cmp(&(Reverse(b.created), &b.version)));
    let first = match start {
        None => 0,
        Some(pinned) => versions.iter().position(|v| v.version == pinned)?,
    };
    Some(versions.into_iter().skip(first).take(n as usize).collect())
}

/// `objectEncoding` cannot apply to PEM text (`stored_as_pem`: the certificate is stored as PEM,
/// so there is no PFX either).
fn no_encoding(
    object: &KeyVaultObject,
    label: &str,
    stored_as_pem: bool,
) -> Result<(), ConvertError> {
    match object.encoding {
        ObjectEncoding::Utf8 => Ok(()),
        ObjectEncoding::Hex | ObjectEncoding::Base64 => Err(ConvertError::EncodingOfPem {
            object: label.to_owned(),
            encoding: if object.encoding == ObjectEncoding::Hex {
                "hex"
            } else {
                "base64"
            },
            stored_as_pem,
        }),
    }
}

/// Opens a PKCS#12 value off the async threads (key derivation is CPU work).
async fn pkcs12_to_pem(
    value: &SecretBytes,
    construct_chain: bool,
    label: &str,
) -> Result<CertificateFiles, ConvertError> {
    let value = value.clone();
    let object = label.to_owned();
    // The Mount's span goes along, so a warning about the chain names its pod.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        convert::pkcs12_to_pem(&value, construct_chain, &object)
    })
    .await
    .unwrap_or_else(|e| {
        Err(ConvertError::Pkcs12 {
            object: label.to_owned(),
            source: convert::pkcs12::Pkcs12Error::Malformed(format!("the conversion stopped: {e}")),
        })
    })
}

/// The files of one secret version: the secret's own file and, for certificate-backed secrets
/// with `--write-cert-and-key-in-separate-files`, `.crt` and `.key` (always PEM, whatever
/// `objectFormat` and `objectEncoding` say).
async fn secret_files(
    secret: &FetchedSecret,
    object: &KeyVaultObject,
    label: &str,
    config: MounterConfig,
) -> Result<Vec<(&'static str, SecretBytes)>, ConvertError> {
    if secret.kid.as_deref().is_none_or(str::is_empty) {
        return Ok(vec![(
            "",
            convert::decode(&secret.value, object.encoding, label)?,
        )]);
    }
    let content_type = secret.content_type.as_deref().unwrap_or_default().trim();
    let separate = config.write_cert_and_key_in_separate_files;
    let (main, split) = if content_type.eq_ignore_ascii_case(CONTENT_TYPE_PEM) {
        no_encoding(object, label, true)?;
        let split = if separate {
            Some(convert::split_pem(&secret.value, label)?)
        } else {
            None
        };
        (secret.value.clone(), split)
    } else if content_type.eq_ignore_ascii_case(CONTENT_TYPE_PKCS12) {
        if object.format == ObjectFormat::Pfx {
            let main = convert::decode(&secret.value, object.encoding, label)?;
            let split = if separate {
                Some(pkcs12_to_pem(&secret.value, config.construct_pem_chain, label).await?)
            } else {
                None
            };
            (main, split)
        } else {
            no_encoding(object, label, false)?;
            let files = pkcs12_to_pem(&secret.value, config.construct_pem_chain, label).await?;
            (files.combined(), separate.then_some(files))
        }
    } else {
        return Err(ConvertError::ContentType {
            object: label.to_owned(),
            content_type: crate::text::printable(content_type, 64),
        });
    };
    let mut files = Vec::with_capacity(3);
    if let Some(split) = split {
        files.push((CRT_SUFFIX, split.certs_pem()));
        files.push((KEY_SUFFIX, split.keys_pem()));
    }
    files.push(("", main));
    Ok(files)
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
        let got: Vec<String> = history_from(all.clone(), None, 3)
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(got, ["e", "d", "c"]);
        let got: Vec<String> = history_from(all, None, 10)
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(got, ["e", "d", "c", "a"]);
    }

    #[test]
    fn history_starts_at_the_pinned_version() {
        let all = vec![
            v("a", 10, true),
            v("d", 40, true),
            v("b", 20, false),
            v("c", 30, true),
            v("e", 50, true),
        ];
        let ids = |got: Option<Vec<VersionInfo>>| {
            got.map(|v| v.into_iter().map(|v| v.version).collect::<Vec<_>>())
        };
        assert_eq!(
            ids(history_from(all.clone(), Some("d"), 2)),
            Some(vec!["d".to_owned(), "c".to_owned()])
        );
        // Older than the pinned version only; disabled ones left out; fewer when there are fewer.
        assert_eq!(
            ids(history_from(all.clone(), Some("c"), 5)),
            Some(vec!["c".to_owned(), "a".to_owned()])
        );
        assert_eq!(
            ids(history_from(all.clone(), Some("b"), 2)),
            None,
            "disabled"
        );
        assert_eq!(ids(history_from(all, Some("zz"), 2)), None, "unknown");
    }

    fn part(paths: &[&str]) -> MountOutput {
        MountOutput {
            files: paths
                .iter()
                .map(|p| OutputFile {
                    path: (*p).to_owned(),
                    mode: 0o644,
                    contents: SecretBytes::default(),
                })
                .collect(),
            versions: Vec::new(),
        }
    }

    fn object(name: &str) -> KeyVaultObject {
        let yaml = format!("array:\n  - |\n    objectName: {name}\n    objectType: secret\n");
        crate::spc::parse_objects(&yaml)
            .ok()
            .and_then(|mut o| o.pop())
            .unwrap_or_else(|| unreachable!("valid object"))
    }

    #[test]
    fn split_files_may_not_collide_with_other_objects() {
        let objects = [object("tls"), object("other")];
        let ok = [part(&["tls.crt", "tls.key", "tls"]), part(&["other"])];
        assert!(check_paths(&ok, &objects).is_ok());
        let same = [part(&["tls.crt", "tls.key", "tls"]), part(&["tls.key"])];
        assert_eq!(
            check_paths(&same, &objects).err().map(|e| e.to_string()),
            Some("objects \"tls\" and \"other\" both write \"tls.key\": give one of them a different objectAlias".to_owned())
        );
        let folder = [part(&["tls.crt", "tls.key", "tls"]), part(&["tls.crt/x"])];
        assert!(matches!(
            check_paths(&folder, &objects),
            Err(MountError::Spc(SpcError::FileConflict { path, .. })) if path == "tls.crt"
        ));
    }
}

//! [`Vault`] over the official `azure_security_keyvault_{secrets,keys,certificates}` clients,
//! which share one transport and one retry policy.

use super::{
    FetchedCertificate, FetchedKey, FetchedSecret, KeyVaultError, LIST_PAGE_SIZE,
    MAX_VERSIONS_SCANNED, ObjectKind, Permission, SecretPage, SecretSummary, Vault, VaultConnector,
    VersionInfo, classify, extend_listing, name_of, version_of,
};
use crate::{
    auth::{IdentityKey, TokenCache},
    sensitive::SecretBytes,
    transport::HttpTransport,
};
use async_trait::async_trait;
use azure_core::{
    credentials::TokenCredential,
    http::{
        ClientOptions, Context, Request, RetryOptions, StatusCode,
        headers::AUTHORIZATION,
        pager::{PagerContinuation, PagerOptions},
        policies::{Policy, PolicyResult},
    },
};
use azure_security_keyvault_certificates::{
    CertificateClient, CertificateClientOptions,
    models::{
        CertificateAttributes, CertificateClientGetCertificateOptions,
        CertificateClientListCertificatePropertiesVersionsOptions,
    },
};
use azure_security_keyvault_keys::{
    KeyClient, KeyClientOptions,
    models::{KeyAttributes, KeyClientGetKeyOptions, KeyClientListKeyPropertiesVersionsOptions},
};
use azure_security_keyvault_secrets::{
    SecretClient, SecretClientOptions,
    models::{
        SecretAttributes, SecretClientGetSecretOptions, SecretClientListSecretPropertiesOptions,
        SecretClientListSecretPropertiesVersionsOptions,
    },
};
use futures::{Stream, TryStreamExt};
use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};
use time::OffsetDateTime;

/// Clients kept for reuse (one per vault and identity key).
const MAX_CLIENTS: u64 = 1_000;
/// A client unused this long is dropped.
const CLIENT_IDLE: std::time::Duration = std::time::Duration::from_mins(15);

/// Opens [`SdkVault`]s over the shared transport and reuses them per vault and identity, so a
/// rotation does not pay Key Vault's authentication challenge again.
pub struct SdkConnector {
    transport: Arc<HttpTransport>,
    tokens: Arc<TokenCache>,
    clients: moka::sync::Cache<(String, IdentityKey), Arc<SdkVault>>,
}

impl std::fmt::Debug for SdkConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdkConnector")
            .field("clients", &self.clients.entry_count())
            .finish_non_exhaustive()
    }
}

impl SdkConnector {
    /// A connector over the shared transport; a token Key Vault rejects (401) is evicted from
    /// `tokens`, the cache the credentials use.
    pub fn new(transport: Arc<HttpTransport>, tokens: Arc<TokenCache>) -> Self {
        Self {
            transport,
            tokens,
            clients: moka::sync::Cache::builder()
                .max_capacity(MAX_CLIENTS)
                .time_to_idle(CLIENT_IDLE)
                .build(),
        }
    }
}

impl VaultConnector for SdkConnector {
    fn connect(
        &self,
        vault_url: &str,
        identity: &IdentityKey,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Arc<dyn Vault>, KeyVaultError> {
        let key = (vault_url.to_ascii_lowercase(), identity.clone());
        if let Some(client) = self.clients.get(&key) {
            client.credential.replace(credential);
            return Ok(client);
        }
        let client = self.open(vault_url, identity, credential)?;
        self.clients.insert(key, client.clone());
        Ok(client)
    }

    fn forget(&self, vault_url: &str, identity: &IdentityKey) {
        self.clients
            .invalidate(&(vault_url.to_ascii_lowercase(), identity.clone()));
    }
}

impl SdkConnector {
    fn open(
        &self,
        vault_url: &str,
        identity: &IdentityKey,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Arc<SdkVault>, KeyVaultError> {
        let vault = url::Url::parse(vault_url)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .and_then(|h| h.split('.').next())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| vault_url.to_owned());
        let client_options = ClientOptions {
            transport: Some(self.transport.sdk_transport()),
            // Retries happen in `RetryingVault`, which knows the Mount's deadline.
            retry: RetryOptions::none(),
            // After the SDK's bearer-token policy: sees the token each request carried.
            per_try_policies: vec![Arc::new(EvictRejectedToken {
                tokens: self.tokens.clone(),
                identity: identity.clone(),
            })],
            ..ClientOptions::default()
        };
        let invalid = |e: azure_core::Error| KeyVaultError::BadResponse {
            vault: vault.clone(),
            object: "-".into(),
            detail: format!("invalid vault URL {vault_url}: {e}"),
            cause: Some(super::SdkCause(Arc::new(e))),
        };
        let latest = Arc::new(LatestCredential(std::sync::RwLock::new(credential)));
        let credential: Arc<dyn TokenCredential> = latest.clone();
        let secrets = SecretClient::new(
            vault_url,
            credential.clone(),
            Some(SecretClientOptions {
                client_options: client_options.clone(),
                ..SecretClientOptions::default()
            }),
        )
        .map_err(invalid)?;
        let keys = KeyClient::new(
            vault_url,
            credential.clone(),
            Some(KeyClientOptions {
                client_options: client_options.clone(),
                ..KeyClientOptions::default()
            }),
        )
        .map_err(invalid)?;
        let certificates = CertificateClient::new(
            vault_url,
            credential,
            Some(CertificateClientOptions {
                client_options,
                ..CertificateClientOptions::default()
            }),
        )
        .map_err(invalid)?;
        Ok(Arc::new(SdkVault {
            credential: latest,
            secrets,
            keys,
            certificates,
            vault,
            challenges: [
                Challenge::default(),
                Challenge::default(),
                Challenge::default(),
            ],
        }))
    }
}

/// The credential of a reused client: the one the latest Mount of its identity key brought.
///
/// A client is kept per (vault, identity key). When Kubernetes vouched for the pods of a
/// service account, that key is shared by pods that each bring their own service-account token
/// (see [`crate::review`]); the token of the pod whose Mount made the client expires, or the pod
/// goes away, while the client lives on. So every Mount installs its own credential here, and a
/// token request always presents the freshest token of the identity. For the other identities
/// the credential installed is equivalent to the one it replaces.
struct LatestCredential(std::sync::RwLock<Arc<dyn TokenCredential>>);

impl LatestCredential {
    fn replace(&self, credential: Arc<dyn TokenCredential>) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = credential;
    }

    fn current(&self) -> Arc<dyn TokenCredential> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl std::fmt::Debug for LatestCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LatestCredential")
    }
}

#[async_trait]
impl TokenCredential for LatestCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        let current = self.current();
        current.get_token(scopes, options).await
    }
}

/// Evicts a token from the shared [`TokenCache`] when Key Vault answers 401 to a request that
/// carried it (revoked, or issued before a change Key Vault knows of). Without this the cache
/// hands the rejected token back to the SDK's challenge retry, and to every Mount after, until
/// it nearly expires (hours with managed identity). The SDK's bearer policy asks the credential
/// again right after the 401, so the same Mount retries with a fresh token.
#[derive(Debug)]
struct EvictRejectedToken {
    tokens: Arc<TokenCache>,
    identity: IdentityKey,
}

#[async_trait]
impl Policy for EvictRejectedToken {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let response = next[0].send(ctx, request, &next[1..]).await?;
        if response.status() == StatusCode::Unauthorized
            && let Some(token) = request
                .headers()
                .get_optional_str(&AUTHORIZATION)
                .and_then(|v| v.strip_prefix("Bearer "))
        {
            // Only a request that carried a token: the first one of a client is sent without
            // one to learn the challenge.
            self.tokens.reject(&self.identity, token.trim()).await;
        }
        Ok(response)
    }
}

/// Key Vault's authentication challenge, learned once per SDK client.
///
/// Each SDK client sends its first request without a token, reads the authority and scope from
/// the 401 challenge, and only then authenticates. Requests that start before the first one has
/// its answer all go out unauthenticated and each draws its own 401 (20 objects: 20 challenges).
/// So the first request of each client goes alone; the others wait for it, then fan out.
#[derive(Debug, Default)]
struct Challenge {
    learned: AtomicBool,
    first: tokio::sync::Mutex<()>,
}

impl Challenge {
    /// Runs `request`, alone if the challenge is not learned yet.
    async fn run<T>(
        &self,
        request: impl Future<Output = Result<T, KeyVaultError>>,
    ) -> Result<T, KeyVaultError> {
        if self.learned.load(Ordering::Acquire) {
            return request.await;
        }
        let _alone = self.first.lock().await;
        if self.learned.load(Ordering::Acquire) {
            return request.await;
        }
        let result = request.await;
        // Any answer from Key Vault past the challenge teaches it (a value, 403, 404, a token
        // refused by the token service); no connection or throttling does not.
        let learned = !matches!(
            result,
            Err(KeyVaultError::Unavailable { .. } | KeyVaultError::Throttled { .. })
        );
        if learned {
            self.learned.store(true, Ordering::Release);
        }
        result
    }
}

/// One vault through the SDK's clients.
pub struct SdkVault {
    credential: Arc<LatestCredential>,
    secrets: SecretClient,
    keys: KeyClient,
    certificates: CertificateClient,
    vault: String,
    /// One per SDK client: secrets, keys, certificates (each learns the challenge itself).
    challenges: [Challenge; 3],
}

/// `<collection>/<name>` or `<collection>/<name> (version <v>)`, for messages.
fn label(kind: ObjectKind, name: &str, version: Option<&str>) -> String {
    let prefix = match kind {
        ObjectKind::Secret => "secret",
        ObjectKind::Key => "key",
        ObjectKind::Certificate => "cert",
    };
    match version {
        Some(v) => format!("{prefix}/{name} (version {v})"),
        None => format!("{prefix}/{name}"),
    }
}

impl SdkVault {
    fn challenge(&self, kind: ObjectKind) -> &Challenge {
        match kind {
            ObjectKind::Secret => &self.challenges[0],
            ObjectKind::Key => &self.challenges[1],
            ObjectKind::Certificate => &self.challenges[2],
        }
    }

    fn bad(&self, object: &str, detail: &str) -> KeyVaultError {
        KeyVaultError::BadResponse {
            vault: self.vault.clone(),
            object: object.to_owned(),
            detail: detail.to_owned(),
            cause: None,
        }
    }

    /// The version of `id`, checked against a pinned `version`.
    fn checked_version(
        &self,
        id: Option<&str>,
        pinned: Option<&str>,
        object: &str,
    ) -> Result<String, KeyVaultError> {
        let id = id.ok_or_else(|| self.bad(object, "the object has no id"))?;
        let found =
            version_of(id).ok_or_else(|| self.bad(object, "the object id has no version"))?;
        if let Some(pinned) = pinned
            && !pinned.eq_ignore_ascii_case(&found)
        {
            return Err(self.bad(object, "the returned version is not the requested one"));
        }
        Ok(found)
    }

    /// Collects a version listing, at most [`MAX_VERSIONS_SCANNED`] entries.
    async fn collect_versions<S, T>(
        &self,
        mut pager: S,
        object: &str,
        kind: ObjectKind,
        entry: impl Fn(T) -> Option<VersionInfo>,
    ) -> Result<Vec<VersionInfo>, KeyVaultError>
    where
        S: Stream<Item = azure_core::Result<T>> + Unpin,
    {
        let mut versions = Vec::new();
        while let Some(item) = pager
            .try_next()
            .await
            .map_err(|e| classify(e, &self.vault, object, kind, Permission::List))?
        {
            if let Some(version) = entry(item) {
                versions.push(version);
            }
            if versions.len() >= MAX_VERSIONS_SCANNED {
                break;
            }
        }
        Ok(versions)
    }
}

fn info(
    id: Option<&str>,
    created: Option<OffsetDateTime>,
    enabled: Option<bool>,
) -> Option<VersionInfo> {
    Some(VersionInfo {
        version: id.and_then(version_of)?,
        created,
        enabled: enabled.unwrap_or(true),
    })
}

/// The requests, each behind its client's [`Challenge`] in the `Vault` impl below.
impl SdkVault {
    async fn read_secret(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedSecret, KeyVaultError> {
        let object = label(ObjectKind::Secret, name, version);
        let options = SecretClientGetSecretOptions {
            secret_version: version.map(str::to_owned),
            ..SecretClientGetSecretOptions::default()
        };
        let response = self
            .secrets
            .get_secret(name, Some(options))
            .await
            .map_err(|e| classify(e, &self.vault, &object, ObjectKind::Secret, Permission::Get))?;
        let content_type = response
            .headers()
            .get_optional_str(&azure_core::http::headers::CONTENT_TYPE)
            .map(super::error::clip)
            .unwrap_or_default();
        let secret = response.into_model().map_err(|_| {
            self.bad(
                &object,
                &format!(
                    "the body is not a JSON secret bundle (Content-Type {content_type}); a proxy may be answering in Key Vault's place"
                ),
            )
        })?;
        let found_version = self.checked_version(secret.id.as_deref(), version, &object)?;
        let value = secret
            .value
            .ok_or_else(|| self.bad(&object, "the secret has no value"))?;
        Ok(FetchedSecret {
            version: found_version,
            value: SecretBytes::new(value.into_bytes()),
            content_type: secret.content_type,
            kid: secret.kid,
        })
    }

    async fn read_key(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedKey, KeyVaultError> {
        let object = label(ObjectKind::Key, name, version);
        let options = KeyClientGetKeyOptions {
            key_version: version.map(str::to_owned),
            ..KeyClientGetKeyOptions::default()
        };
        let response = self
            .keys
            .get_key(name, Some(options))
            .await
            .map_err(|e| classify(e, &self.vault, &object, ObjectKind::Key, Permission::Get))?;
        let key = response
            .into_model()
            .map_err(|_| self.bad(&object, "the body is not a key bundle"))?
            .key
            .ok_or_else(|| self.bad(&object, "the key bundle has no key"))?;
        let found_version = self.checked_version(key.kid.as_deref(), version, &object)?;
        let kty = key
            .kty
            .ok_or_else(|| self.bad(&object, "the key has no kty"))?;
        Ok(FetchedKey {
            version: found_version,
            kty: kty.as_ref().to_owned(),
            crv: key.crv.map(|c| c.as_ref().to_owned()),
            n: key.n,
            e: key.e,
            x: key.x,
            y: key.y,
        })
    }

    async fn read_certificate(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedCertificate, KeyVaultError> {
        let object = label(ObjectKind::Certificate, name, version);
        let options = CertificateClientGetCertificateOptions {
            certificate_version: version.map(str::to_owned),
            ..CertificateClientGetCertificateOptions::default()
        };
        let response = self
            .certificates
            .get_certificate(name, Some(options))
            .await
            .map_err(|e| {
                classify(
                    e,
                    &self.vault,
                    &object,
                    ObjectKind::Certificate,
                    Permission::Get,
                )
            })?;
        let certificate = response
            .into_model()
            .map_err(|_| self.bad(&object, "the body is not a certificate bundle"))?;
        let found_version = self.checked_version(certificate.id.as_deref(), version, &object)?;
        let cer = certificate
            .cer
            .filter(|c| !c.is_empty())
            .ok_or_else(|| self.bad(&object, "the certificate has no cer"))?;
        Ok(FetchedCertificate {
            version: found_version,
            cer,
        })
    }

    async fn read_versions(
        &self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Vec<VersionInfo>, KeyVaultError> {
        let object = label(kind, name, None);
        let failed =
            |e: azure_core::Error| classify(e, &self.vault, &object, kind, Permission::List);
        match kind {
            ObjectKind::Secret => {
                let pager = self
                    .secrets
                    .list_secret_properties_versions(
                        name,
                        Some(SecretClientListSecretPropertiesVersionsOptions::default()),
                    )
                    .map_err(failed)?;
                self.collect_versions(pager, &object, kind, |item| {
                    let a: SecretAttributes = item.attributes.unwrap_or_default();
                    info(item.id.as_deref(), a.created, a.enabled)
                })
                .await
            }
            ObjectKind::Key => {
                let pager = self
                    .keys
                    .list_key_properties_versions(
                        name,
                        Some(KeyClientListKeyPropertiesVersionsOptions::default()),
                    )
                    .map_err(failed)?;
                self.collect_versions(pager, &object, kind, |item| {
                    let a: KeyAttributes = item.attributes.unwrap_or_default();
                    info(item.kid.as_deref(), a.created, a.enabled)
                })
                .await
            }
            ObjectKind::Certificate => {
                let pager = self
                    .certificates
                    .list_certificate_properties_versions(
                        name,
                        Some(CertificateClientListCertificatePropertiesVersionsOptions::default()),
                    )
                    .map_err(failed)?;
                self.collect_versions(pager, &object, kind, |item| {
                    let a: CertificateAttributes = item.attributes.unwrap_or_default();
                    info(item.id.as_deref(), a.created, a.enabled)
                })
                .await
            }
        }
    }

    /// One page of `GET /secrets`, Key Vault's largest page size.
    async fn read_secret_page(&self, next: Option<&str>) -> Result<SecretPage, KeyVaultError> {
        let object = "the list of secrets";
        let failed = |e: azure_core::Error| {
            classify(e, &self.vault, object, ObjectKind::Secret, Permission::List)
        };
        let continuation = match next {
            Some(link) => Some(PagerContinuation::Link(
                url::Url::parse(link).map_err(|_| self.bad(object, "the nextLink is not a URL"))?,
            )),
            None => None,
        };
        let options = SecretClientListSecretPropertiesOptions {
            maxresults: Some(LIST_PAGE_SIZE),
            method_options: PagerOptions {
                continuation,
                ..PagerOptions::default()
            },
        };
        let mut pages = self
            .secrets
            .list_secret_properties(Some(options))
            .map_err(failed)?
            .into_pages();
        let Some(page) = pages.try_next().await.map_err(failed)? else {
            return Ok(SecretPage::default());
        };
        let next = pages.continuation().map(|c| c.as_ref().to_owned());
        let page = page
            .into_model()
            .map_err(|_| self.bad(object, "the body is not a JSON list of secrets"))?;
        let secrets = page
            .value
            .into_iter()
            .filter_map(|item| {
                Some(SecretSummary {
                    name: item.id.as_deref().and_then(name_of)?,
                    enabled: item
                        .attributes
                        .as_ref()
                        .and_then(|a| a.enabled)
                        .unwrap_or(true),
                    tags: item.tags.unwrap_or_default(),
                    managed: item.managed.unwrap_or(false),
                })
            })
            .collect();
        Ok(SecretPage { secrets, next })
    }
}

#[async_trait]
impl Vault for SdkVault {
    async fn get_secret(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedSecret, KeyVaultError> {
        self.challenge(ObjectKind::Secret)
            .run(self.read_secret(name, version))
            .await
    }

    async fn get_key(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedKey, KeyVaultError> {
        self.challenge(ObjectKind::Key)
            .run(self.read_key(name, version))
            .await
    }

    async fn get_certificate(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedCertificate, KeyVaultError> {
        self.challenge(ObjectKind::Certificate)
            .run(self.read_certificate(name, version))
            .await
    }

    async fn list_versions(
        &self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Vec<VersionInfo>, KeyVaultError> {
        self.challenge(kind)
            .run(self.read_versions(kind, name))
            .await
    }

    async fn list_secrets(&self) -> Result<Vec<SecretSummary>, KeyVaultError> {
        let mut all = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self.list_secrets_page(next.as_deref()).await?;
            extend_listing(&mut all, page.secrets, &self.vault)?;
            match page.next {
                Some(link) => next = Some(link),
                None => return Ok(all),
            }
        }
    }

    async fn list_secrets_page(&self, next: Option<&str>) -> Result<SecretPage, KeyVaultError> {
        self.challenge(ObjectKind::Secret)
            .run(self.read_secret_page(next))
            .await
    }
}

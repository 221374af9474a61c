//! Identities and the credentials that get Key Vault tokens for them.
//!
//! Workload identity, identity binding, service principal and VM managed identity use the
//! official `azure_identity` credentials (identity binding with the token-proxy transport of
//! [`token_proxy`]); pod identity (deprecated AAD pod identity, NMI) is a small credential of our
//! own.

mod failure;
mod pod_identity;
mod token_cache;
pub mod token_proxy;

pub use failure::TokenFailure;
pub use pod_identity::PodIdentityCredential;
pub use token_cache::{CachedCredential, REFRESH_MARGIN, TokenCache};
pub use token_proxy::{TokenProxyConfig, TokenProxyTransport};

use crate::{
    cloud::CloudEnvironment, metrics::Metrics, sensitive::SecretString, transport::HttpTransport,
};
use azure_core::{
    cloud::{CloudConfiguration, CustomConfiguration},
    credentials::TokenCredential,
    http::{ClientMethodOptions, ClientOptions},
};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId,
};
use sha2::Digest as _;
use std::{fmt, sync::Arc};
use url::Url;

/// The audience of the service-account token used for workload identity.
pub const WORKLOAD_IDENTITY_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The audience of the token used for AKS identity binding.
pub const IDENTITY_BINDING_AUDIENCE: &str = "api://AKSIdentityBinding";

/// Errors choosing or building a credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Workload identity or identity binding is configured but the driver sent no token for its
    /// audience: the CSIDriver object lacks `tokenRequests`.
    #[error(
        "{selector} selects {mode}, but the driver sent no service account token for audience {audience}: add {{\"audience\": \"{audience}\"}} to spec.tokenRequests of the CSIDriver secrets-store.csi.k8s.io (Helm: tokenRequests) and keep requiresRepublish: true",
        selector = if *.audience == IDENTITY_BINDING_AUDIENCE {
            format!("useAzureTokenProxy with clientID \"{}\"", .client_id)
        } else {
            format!("clientID \"{}\"", .client_id)
        },
        mode = if *.audience == IDENTITY_BINDING_AUDIENCE { "identity binding" } else { "workload identity" }
    )]
    MissingToken {
        /// Client id from the SPC.
        client_id: String,
        /// Audience that was expected.
        audience: &'static str,
    },
    /// Identity binding needs the client id of the managed identity it binds to.
    #[error(
        "useAzureTokenProxy (AKS identity binding) needs clientID: set it to the client id of the managed identity the identity binding is for"
    )]
    MissingClientId,
    /// `csi.storage.k8s.io/serviceAccount.tokens` is not the JSON the driver sends.
    #[error(
        "attribute csi.storage.k8s.io/serviceAccount.tokens is not a JSON object of audience -> {{token, expirationTimestamp}}: {0}"
    )]
    BadTokens(String),
    /// No identity parameter is set and the node-publish secret has no service principal.
    #[error(
        "no identity configured: set clientID for workload identity, useVMManagedIdentity, or usePodIdentity in the SecretProviderClass, or give the volume a nodePublishSecretRef whose secret has clientid and clientsecret ({0})"
    )]
    NoIdentity(&'static str),
    /// The SDK refused the credential parameters (e.g. a malformed tenant id).
    #[error("the {mode} credential could not be created: {reason}")]
    Build {
        /// Identity mode.
        mode: &'static str,
        /// What the SDK said.
        reason: String,
    },
}

impl AuthError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingToken { .. } => "missing_token_audience",
            Self::BadTokens(_) => "bad_service_account_tokens",
            Self::NoIdentity(_) => "no_identity",
            Self::MissingClientId => "missing_client_id",
            Self::Build { .. } => "credential_build",
        }
    }
}

/// Who the provider authenticates as for one Mount.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Identity {
    /// Workload identity: the pod's service-account token exchanged as a client assertion.
    WorkloadIdentity {
        /// Tenant of the app registration or managed identity.
        tenant_id: String,
        /// Client id of the app or user-assigned identity.
        client_id: String,
        /// The service-account token (audience `api://AzureADTokenExchange`).
        token: SecretString,
    },
    /// AKS identity binding: the pod's service-account token (audience `api://AKSIdentityBinding`)
    /// exchanged as a client assertion through the cluster's token proxy.
    IdentityBinding {
        /// Tenant of the managed identity.
        tenant_id: String,
        /// Client id of the managed identity.
        client_id: String,
        /// The service-account token (audience `api://AKSIdentityBinding`).
        token: SecretString,
    },
    /// Service principal with a client secret from the node-publish secret.
    ServicePrincipal {
        /// Tenant.
        tenant_id: String,
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: SecretString,
    },
    /// VM managed identity through IMDS.
    ManagedIdentity {
        /// Client id of a user-assigned identity; `None` for system-assigned.
        user_assigned_client_id: Option<String>,
    },
    /// AAD pod identity through the node's NMI endpoint.
    PodIdentity {
        /// Pod namespace.
        namespace: String,
        /// Pod name.
        pod_name: String,
    },
}

/// A digest of an identity and the proof it presents (token, secret), plus the authority.
///
/// Caches of tokens, clients and values are keyed by it: equal keys mean Entra and Key Vault
/// verified exactly this proof, so sharing what they returned is safe.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct IdentityKey(pub [u8; 32]);

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "IdentityKey({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// SHA-256 of `parts`, each prefixed with its length, so that no two different lists of parts
/// (`["ab", "c"]`, `["a", "bc"]`) share a digest: the cache keys of identities and of reviews.
pub(crate) fn digest_of(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The subject Kubernetes vouched for (TokenReview) behind a service-account token.
///
/// Every pod of one service account presents a different token, but Entra exchanges each of
/// them for the same federated credential: keyed by this instead of the token, those pods share
/// one access token and the read caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VouchedSubject {
    /// The token's issuer (`iss`), verified by the review.
    pub issuer: String,
    /// `system:serviceaccount:<namespace>:<name>`.
    pub subject: String,
    /// The audience the review confirmed.
    pub audience: String,
}

impl Identity {
    /// The cache key of this identity in `cloud` once Kubernetes vouched for its token: the
    /// mode, authority, tenant, client id, issuer, subject and audience, without the token.
    /// `None` for modes without a service-account token.
    pub fn shared_key(
        &self,
        cloud: &CloudEnvironment,
        vouched: &VouchedSubject,
    ) -> Option<IdentityKey> {
        let (Self::WorkloadIdentity {
            tenant_id,
            client_id,
            ..
        }
        | Self::IdentityBinding {
            tenant_id,
            client_id,
            ..
        }) = self
        else {
            return None;
        };
        // A different first part than any per-token key, so the two kinds never meet.
        Some(IdentityKey(digest_of(&[
            b"vouched",
            self.mode().as_bytes(),
            cloud.authority_host.as_str().as_bytes(),
            tenant_id.as_bytes(),
            client_id.as_bytes(),
            vouched.issuer.as_bytes(),
            vouched.subject.as_bytes(),
            vouched.audience.as_bytes(),
        ])))
    }

    /// The service-account token and its audience, for the modes that present one.
    pub fn service_account_token(&self) -> Option<(&SecretString, &'static str)> {
        match self {
            Self::WorkloadIdentity { token, .. } => Some((token, WORKLOAD_IDENTITY_AUDIENCE)),
            Self::IdentityBinding { token, .. } => Some((token, IDENTITY_BINDING_AUDIENCE)),
            _ => None,
        }
    }

    /// The cache key of this identity in `cloud`.
    pub fn key(&self, cloud: &CloudEnvironment) -> IdentityKey {
        let common = [
            self.mode().as_bytes(),
            cloud.authority_host.as_str().as_bytes(),
        ];
        let own: Vec<&[u8]> = match self {
            Self::WorkloadIdentity {
                tenant_id,
                client_id,
                token,
            }
            | Self::IdentityBinding {
                tenant_id,
                client_id,
                token,
            } => vec![
                tenant_id.as_bytes(),
                client_id.as_bytes(),
                token.expose().as_bytes(),
            ],
            Self::ServicePrincipal {
                tenant_id,
                client_id,
                client_secret,
            } => vec![
                tenant_id.as_bytes(),
                client_id.as_bytes(),
                client_secret.expose().as_bytes(),
            ],
            Self::ManagedIdentity {
                user_assigned_client_id,
            } => vec![
                user_assigned_client_id
                    .as_deref()
                    .unwrap_or_default()
                    .as_bytes(),
            ],
            Self::PodIdentity {
                namespace,
                pod_name,
            } => vec![namespace.as_bytes(), pod_name.as_bytes()],
        };
        IdentityKey(digest_of(&[&common[..], &own[..]].concat()))
    }

    /// Stable name of the identity mode, for metrics and logs.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::WorkloadIdentity { .. } => "workload_identity",
            Self::IdentityBinding { .. } => "identity_binding",
            Self::ServicePrincipal { .. } => "service_principal",
            Self::ManagedIdentity { .. } => "managed_identity",
            Self::PodIdentity { .. } => "pod_identity",
        }
    }
}

/// Describes the identity without any secret, for error messages and logs.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WorkloadIdentity {
                client_id,
                tenant_id,
                ..
            } => {
                write!(
                    f,
                    "workload identity (clientID {client_id}, tenant {tenant_id})"
                )
            }
            Self::IdentityBinding {
                client_id,
                tenant_id,
                ..
            } => {
                write!(
                    f,
                    "identity binding (clientID {client_id}, tenant {tenant_id})"
                )
            }
            Self::ServicePrincipal {
                client_id,
                tenant_id,
                ..
            } => {
                write!(
                    f,
                    "service principal (clientid {client_id}, tenant {tenant_id})"
                )
            }
            Self::ManagedIdentity {
                user_assigned_client_id: Some(id),
            } => {
                write!(f, "user-assigned managed identity (client id {id})")
            }
            Self::ManagedIdentity {
                user_assigned_client_id: None,
            } => f.write_str("system-assigned managed identity"),
            Self::PodIdentity {
                namespace,
                pod_name,
            } => {
                write!(f, "pod identity of pod {namespace}/{pod_name}")
            }
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({self})")
    }
}

/// A fixed client assertion: the service-account token the driver handed us.
#[derive(Clone)]
struct ServiceAccountAssertion(SecretString);

impl fmt::Debug for ServiceAccountAssertion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceAccountAssertion(<redacted>)")
    }
}

#[async_trait::async_trait]
impl ClientAssertion for ServiceAccountAssertion {
    async fn secret(
        &self,
        _options: Option<ClientMethodOptions<'_>>,
    ) -> azure_core::Result<String> {
        Ok(self.0.expose().to_owned())
    }
}

/// Makes a new SDK credential for one identity.
type BuildCredential = Arc<dyn Fn() -> azure_core::Result<Arc<dyn TokenCredential>> + Send + Sync>;

/// Makes the token requests of one identity, each with a new SDK credential (see
/// [`CredentialFactory::credential`]), and counts them by identity mode and outcome.
struct MeteredCredential {
    build: BuildCredential,
    mode: &'static str,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for MeteredCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeteredCredential")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for MeteredCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        let mut result = match (self.build)() {
            Ok(inner) => inner.get_token(scopes, options).await,
            Err(e) => Err(e),
        };
        if result
            .as_ref()
            .is_ok_and(|t| t.token.secret().trim().is_empty())
        {
            // The SDK accepts a 200 without access_token as an empty token; Key Vault would then
            // answer 401 and the error would blame permissions.
            let missing = azure_core::Error::with_message(
                azure_core::error::ErrorKind::DataConversion,
                "the token service answered without an access_token",
            );
            result = Err(azure_core::Error::with_error(
                azure_core::error::ErrorKind::Credential,
                missing,
                "the token service answered without an access_token",
            ));
        }
        // The same classification as the Mount's error, so the label and the gRPC code agree.
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => TokenFailure::of(e).outcome(),
        };
        self.metrics.token_request(self.mode, outcome);
        result
    }
}

/// Builds credentials that share one HTTP transport.
#[derive(Debug, Clone)]
pub struct CredentialFactory {
    transport: Arc<HttpTransport>,
    token_proxy: Option<Arc<TokenProxyTransport>>,
    pod_identity_endpoint: Option<Url>,
    metrics: Arc<Metrics>,
    tokens: Arc<TokenCache>,
}

impl CredentialFactory {
    /// A factory over the shared transport; `pod_identity_endpoint` is the NMI base URL (`None`
    /// where pod identity cannot work, as in the standalone agent).
    pub fn new(
        transport: Arc<HttpTransport>,
        pod_identity_endpoint: Option<Url>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            transport,
            token_proxy: None,
            pod_identity_endpoint,
            tokens: Arc::new(TokenCache::new(metrics.clone())),
            metrics,
        }
    }

    /// Identity binding sends its token requests through `proxy` (without one, an
    /// identity-binding Mount fails with a message saying so).
    #[must_use]
    pub fn with_token_proxy(mut self, proxy: Arc<TokenProxyTransport>) -> Self {
        self.token_proxy = Some(proxy);
        self
    }

    /// The token cache behind every credential of this factory (the Key Vault clients evict a
    /// token Key Vault rejects).
    pub fn token_cache(&self) -> Arc<TokenCache> {
        self.tokens.clone()
    }

    fn client_options(&self, cloud: &CloudEnvironment) -> ClientOptions {
        let mut custom = CustomConfiguration::default();
        cloud
            .authority_host
            .as_str()
            .trim_end_matches('/')
            .clone_into(&mut custom.authority_host);
        ClientOptions {
            transport: Some(self.transport.sdk_transport()),
            cloud: Some(Arc::new(CloudConfiguration::Custom(custom))),
            // The SDK default retries for up to a minute: longer than a Mount may take.
            retry: crate::transport::retry_options(),
            ..ClientOptions::default()
        }
    }

    /// A credential for `identity` in `cloud`, whose tokens are cached under `key` (the
    /// identity's own [`Identity::key`], or its [`Identity::shared_key`]).
    ///
    /// Its tokens come from the shared [`TokenCache`]; on a miss a new SDK credential makes the
    /// token request. The SDK's credentials keep their own token caches, which cannot be told
    /// that Key Vault rejected a token: a credential kept inside a reused Key Vault client would
    /// hand the rejected token back after our cache evicted it.
    pub fn credential(
        &self,
        identity: &Identity,
        cloud: &CloudEnvironment,
        key: &IdentityKey,
    ) -> Result<Arc<dyn TokenCredential>, AuthError> {
        let mode = identity.mode();
        // Built once now so that a bad identity fails here, with its mode.
        self.sdk_credential(identity, cloud)
            .map_err(|e| AuthError::Build {
                mode,
                reason: e.to_string(),
            })?;
        let build: BuildCredential = {
            let (factory, identity, cloud) = (self.clone(), identity.clone(), cloud.clone());
            Arc::new(move || factory.sdk_credential(&identity, &cloud))
        };
        let metered = Arc::new(MeteredCredential {
            build,
            mode,
            metrics: self.metrics.clone(),
        });
        Ok(Arc::new(CachedCredential::new(
            metered,
            key.clone(),
            self.tokens.clone(),
        )))
    }

    /// A new SDK credential for `identity` (no token request yet).
    fn sdk_credential(
        &self,
        identity: &Identity,
        cloud: &CloudEnvironment,
    ) -> azure_core::Result<Arc<dyn TokenCredential>> {
        let credential: Arc<dyn TokenCredential> = match identity {
            Identity::WorkloadIdentity {
                tenant_id,
                client_id,
                token,
            } => ClientAssertionCredential::new(
                tenant_id.clone(),
                client_id.clone(),
                ServiceAccountAssertion(token.clone()),
                Some(ClientAssertionCredentialOptions {
                    client_options: self.client_options(cloud),
                }),
            )?,
            Identity::IdentityBinding {
                tenant_id,
                client_id,
                token,
            } => {
                let proxy = self.token_proxy.as_ref().ok_or_else(|| {
                    azure_core::Error::with_message(
                        azure_core::error::ErrorKind::Credential,
                        "this process has no token proxy for identity binding (the standalone agent has none: use workload identity)",
                    )
                })?;
                let mut client_options = self.client_options(cloud);
                client_options.transport = Some(proxy.sdk_transport());
                ClientAssertionCredential::new(
                    tenant_id.clone(),
                    client_id.clone(),
                    ServiceAccountAssertion(token.clone()),
                    Some(ClientAssertionCredentialOptions { client_options }),
                )?
            }
            Identity::ServicePrincipal {
                tenant_id,
                client_id,
                client_secret,
            } => ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                client_secret.expose().to_owned().into(),
                Some(ClientSecretCredentialOptions {
                    client_options: self.client_options(cloud),
                }),
            )?,
            Identity::ManagedIdentity {
                user_assigned_client_id,
            } => ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                user_assigned_id: user_assigned_client_id
                    .clone()
                    .map(UserAssignedId::ClientId),
                client_options: self.client_options(cloud),
            }))?,
            Identity::PodIdentity {
                namespace,
                pod_name,
            } => Arc::new(PodIdentityCredential::new(
                self.transport.clone(),
                self.pod_identity_endpoint.clone().ok_or_else(|| {
                    azure_core::Error::with_message(
                        azure_core::error::ErrorKind::Credential,
                        "this process has no pod identity (NMI) endpoint (the standalone agent has none: use workload identity)",
                    )
                })?,
                namespace.clone(),
                pod_name.clone(),
            )),
        };
        Ok(credential)
    }
}

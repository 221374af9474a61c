//! Building the Mount path from flags, once, for the provider and the agent alike: the shared
//! HTTP transport, the credentials (with the token proxy for identity binding), the Key Vault
//! connector and the [`Mounter`] with its caches and limits.

use crate::{
    auth::{CredentialFactory, TokenProxyConfig, TokenProxyTransport},
    cli::Connection,
    keyvault::{ReadCacheConfig, RetryPolicy, SdkConnector},
    metrics::Metrics,
    mount::{Mounter, MounterConfig},
    transport::{HttpTransport, TransportError},
};
use std::{sync::Arc, time::Duration};

/// Errors building the Mount path; all are start-up configuration errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WiringError {
    /// The HTTP transport or the token proxy could not be set up from the flags.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// `--kubeconfig` cannot be used for the TokenReview API.
    #[error(transparent)]
    Review(#[from] crate::review::ConfigError),
    /// `--pod-identity-endpoint` is not a URL.
    #[error("--pod-identity-endpoint \"{0}\" is not a URL")]
    PodIdentityEndpoint(String),
}

impl WiringError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Transport(e) => e.kind(),
            Self::Review(e) => e.kind(),
            Self::PodIdentityEndpoint(_) => "pod_identity_endpoint",
        }
    }
}

/// What the provider's and the agent's own flags add to the shared [`Connection`] flags.
#[derive(Debug, Clone)]
pub struct MountSettings {
    /// The NMI base URL for pod identity; `None` where pod identity cannot work (the agent).
    pub pod_identity_endpoint: Option<String>,
    /// The identity-binding token proxy; `None` where identity binding cannot work (the agent).
    pub token_proxy: Option<TokenProxyConfig>,
    /// Objects of one Mount fetched at once.
    pub max_concurrent_fetches: usize,
    /// Largest reply, in bytes.
    pub max_reply_bytes: usize,
    /// Retries of throttled or unavailable reads.
    pub max_retries: u32,
    /// Value caches and the listing window.
    pub cache: ReadCacheConfig,
    /// `--construct-pem-chain`.
    pub construct_pem_chain: bool,
    /// `--write-cert-and-key-in-separate-files`.
    pub write_cert_and_key_in_separate_files: bool,
}

impl ReadCacheConfig {
    /// No value cache and no shared listing: every read goes to Key Vault (the agent, whose one
    /// identity reads each object once per sync).
    pub fn none() -> Self {
        Self {
            pinned_ttl: Duration::ZERO,
            latest_window: Duration::ZERO,
            listing_window: Duration::ZERO,
            max_bytes: 0,
        }
    }
}

/// The Mount path for `connection` and `settings`, counting into `metrics`.
pub fn mounter(
    connection: &Connection,
    settings: MountSettings,
    metrics: &Arc<Metrics>,
) -> Result<Mounter, WiringError> {
    let transport = HttpTransport::new(&connection.transport_config(metrics.clone()))?;
    let pod_identity_endpoint = settings
        .pod_identity_endpoint
        .map(|text| {
            url::Url::parse(&text)
                .map_err(|_| WiringError::PodIdentityEndpoint(crate::text::quote(&text)))
        })
        .transpose()?;
    let mut credentials =
        CredentialFactory::new(transport.clone(), pod_identity_endpoint, metrics.clone());
    if let Some(proxy) = &settings.token_proxy {
        credentials = credentials.with_token_proxy(TokenProxyTransport::new(proxy)?);
    }
    let tokens = credentials.token_cache();
    Ok(Mounter::new(
        credentials,
        Arc::new(SdkConnector::new(transport, tokens)),
        MounterConfig {
            max_concurrent_fetches: settings.max_concurrent_fetches,
            max_reply_bytes: settings.max_reply_bytes,
            max_concurrent_per_vault: usize::from(connection.max_concurrent_per_vault),
            retry: RetryPolicy {
                max_retries: settings.max_retries,
                ..RetryPolicy::default()
            },
            cache: settings.cache,
            construct_pem_chain: settings.construct_pem_chain,
            write_cert_and_key_in_separate_files: settings.write_cert_and_key_in_separate_files,
        },
        metrics.clone(),
    ))
}

/// The TokenReview step for `--token-review`, `--kubeconfig` and `--token-review-cache-ttl`:
/// `None` when it is off or no Kubernetes API configuration is found (Mounts then keep
/// per-token identities). A `--kubeconfig` that cannot be used fails the start; an incomplete
/// in-cluster configuration only turns the step off, with a warning.
pub async fn token_reviewer(
    mode: crate::cli::TokenReview,
    kubeconfig: Option<&std::path::Path>,
    cache_ttl: Duration,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<crate::review::TokenReviewer>>, WiringError> {
    use crate::review::{ApiSource, KubeReviews, ReviewerConfig, TokenReviewer};
    if mode == crate::cli::TokenReview::Off {
        tracing::info!("--token-review=off: every service-account token is its own identity");
        return Ok(None);
    }
    let Some(source) = ApiSource::detect(kubeconfig) else {
        tracing::info!(
            "no Kubernetes API configuration (no --kubeconfig, no in-cluster service account token): service-account tokens are not reviewed, every token is its own identity"
        );
        return Ok(None);
    };
    let api = match KubeReviews::connect(&source).await {
        Ok(api) => api,
        Err(e) if source == ApiSource::InCluster => {
            tracing::warn!(error = %e, kind = e.kind(), "service-account tokens are not reviewed, every token is its own identity");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(
        source = ?source,
        cache_ttl = ?cache_ttl,
        "service-account tokens are reviewed with the Kubernetes TokenReview API: pods of one service account share their identity"
    );
    Ok(Some(Arc::new(TokenReviewer::new(
        Arc::new(api),
        ReviewerConfig { cache_ttl },
        metrics.clone(),
    ))))
}

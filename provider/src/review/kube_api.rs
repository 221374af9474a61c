//! The TokenReview API of a real Kubernetes API server, through kube-rs.

use super::{ApiError, ReviewApi, ReviewStatus};
use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::{
    Api, Client, Config,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
};
use std::{path::Path, time::Duration};

/// How long one review may take before the Mount falls back to a per-token identity.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Connecting to the API server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Errors finding or building the Kubernetes client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--kubeconfig` could not be read or used.
    #[error("--kubeconfig {path}: {reason}")]
    Kubeconfig {
        /// The path, quoted.
        path: String,
        /// What kube-rs said.
        reason: String,
    },
    /// The in-cluster configuration (service-account token and CA) is incomplete.
    #[error(
        "in-cluster Kubernetes configuration: {0} (the pod needs automountServiceAccountToken: true; the chart sets it with tokenReview.enabled)"
    )]
    InCluster(String),
    /// kube-rs could not build a client from the configuration.
    #[error("Kubernetes client: {0}")]
    Client(String),
}

impl ConfigError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kubeconfig { .. } => "kubeconfig",
            Self::InCluster(_) => "in_cluster_config",
            Self::Client(_) => "kube_client",
        }
    }
}

/// Where the Kubernetes API configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiSource {
    /// `--kubeconfig PATH`.
    Kubeconfig(std::path::PathBuf),
    /// The pod's service account (`KUBERNETES_SERVICE_HOST`/`_PORT` and the mounted token and CA).
    InCluster,
}

impl ApiSource {
    /// `--kubeconfig` if given, else in-cluster when `KUBERNETES_SERVICE_HOST` is set and the
    /// service-account token is mounted; `None`: no Kubernetes API to ask.
    pub fn detect(kubeconfig: Option<&Path>) -> Option<Self> {
        if let Some(path) = kubeconfig {
            return Some(Self::Kubeconfig(path.to_owned()));
        }
        let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|h| !h.is_empty())
            && Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token").exists();
        in_cluster.then_some(Self::InCluster)
    }
}

/// TokenReviews through kube-rs.
#[derive(Clone)]
pub struct KubeReviews {
    api: Api<TokenReview>,
}

impl std::fmt::Debug for KubeReviews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeReviews")
    }
}

impl KubeReviews {
    /// A client for `source`. Needs a Tokio runtime (kube-rs spawns its connection tasks).
    pub async fn connect(source: &ApiSource) -> Result<Self, ConfigError> {
        let mut config = match source {
            ApiSource::Kubeconfig(path) => {
                let quoted = crate::text::quote(&path.display().to_string());
                let bad = |reason: String| ConfigError::Kubeconfig {
                    path: quoted.clone(),
                    reason,
                };
                let file = Kubeconfig::read_from(path).map_err(|e| bad(e.to_string()))?;
                Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| bad(e.to_string()))?
            }
            ApiSource::InCluster => {
                Config::incluster().map_err(|e| ConfigError::InCluster(e.to_string()))?
            }
        };
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(REVIEW_TIMEOUT);
        config.write_timeout = Some(REVIEW_TIMEOUT);
        let client = Client::try_from(config).map_err(|e| ConfigError::Client(e.to_string()))?;
        Ok(Self {
            api: Api::all(client),
        })
    }
}

#[async_trait]
impl ReviewApi for KubeReviews {
    async fn review(&self, token: &str, audience: &str) -> Result<ReviewStatus, ApiError> {
        let mut request = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![audience.to_owned()]),
            },
            ..TokenReview::default()
        };
        let result = tokio::time::timeout(
            REVIEW_TIMEOUT,
            self.api.create(&PostParams::default(), &request),
        )
        .await;
        if let Some(copy) = request.spec.token.as_mut() {
            zeroize::Zeroize::zeroize(copy);
        }
        let answer = match result {
            Err(_) => {
                return Err(ApiError::Unavailable(format!(
                    "no answer within {REVIEW_TIMEOUT:?}"
                )));
            }
            Ok(Err(kube::Error::Api(status))) if matches!(status.code, 401 | 403) => {
                return Err(ApiError::Forbidden(format!(
                    "HTTP {}: {}",
                    status.code,
                    crate::text::printable(&status.message, 300)
                )));
            }
            Ok(Err(kube::Error::Api(status))) => {
                return Err(ApiError::Unavailable(format!(
                    "HTTP {}: {}",
                    status.code,
                    crate::text::printable(&status.message, 300)
                )));
            }
            // Connection, TLS and decoding failures; their text holds no token.
            Ok(Err(other)) => return Err(ApiError::Unavailable(crate::text::chain(&other, 300))),
            Ok(Ok(answer)) => answer,
        };
        // The API server echoes the spec, token included.
        let TokenReview { spec, status, .. } = answer;
        if let Some(mut echoed) = spec.token {
            zeroize::Zeroize::zeroize(&mut echoed);
        }
        let status = status.unwrap_or_default();
        let user = status.user.unwrap_or_default();
        let mut extra = user.extra.unwrap_or_default();
        let mut first = |key: &str| {
            extra
                .remove(key)
                .and_then(|values| values.into_iter().next())
        };
        Ok(ReviewStatus {
            authenticated: status.authenticated.unwrap_or(false),
            error: status.error.unwrap_or_default(),
            username: user.username.unwrap_or_default(),
            pod_name: first(super::EXTRA_POD_NAME),
            pod_uid: first(super::EXTRA_POD_UID),
            audiences: status.audiences.unwrap_or_default(),
        })
    }
}

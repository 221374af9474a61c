//! Kubernetes vouching for a Mount's service-account token (the TokenReview API).
//!
//! A workload-identity or identity-binding Mount presents the pod's service-account token. Keyed
//! by that token, 100 pods of one service account are 100 identities: 100 token requests and
//! 100 reads of every object. When Kubernetes itself vouches for the token (signature, expiry,
//! audience, and that the pod it is bound to still exists) and the token belongs to the pod and
//! service account of the Mount, the Mount's identity becomes the subject Kubernetes vouched for
//! ([`VouchedSubject`]): every pod of that service account on the node then shares one Entra
//! token and the read caches. Entra would exchange any of those tokens for the same federated
//! credential, so sharing gives no pod anything it could not get itself.
//!
//! When no review can be made (no API access, no RBAC, API server down), the Mount keeps the
//! per-token identity of before and shares nothing. A review that says no refuses the Mount.

pub mod kube_api;

pub use kube_api::{ApiSource, ConfigError, KubeReviews};

use crate::{auth::VouchedSubject, metrics::Metrics, sensitive::SecretString};
use async_trait::async_trait;
use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};
use tokio::time::Instant;

/// The `user.extra` key with the name of the pod a bound token belongs to.
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
/// The `user.extra` key with the uid of the pod a bound token belongs to.
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
/// First wait after a failed review before the next one is tried.
const BACKOFF_MIN: Duration = Duration::from_secs(5);
/// Longest wait between failed reviews.
const BACKOFF_MAX: Duration = Duration::from_mins(5);
/// Most review results kept.
const MAX_CACHED: u64 = 10_000;

/// What the API server answered to one TokenReview.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReviewStatus {
    /// `status.authenticated`.
    pub authenticated: bool,
    /// `status.error` (why not authenticated).
    pub error: String,
    /// `status.user.username`, e.g. `system:serviceaccount:shop:web`.
    pub username: String,
    /// The pod a bound token belongs to (`user.extra`).
    pub pod_name: Option<String>,
    /// Its uid.
    pub pod_uid: Option<String>,
    /// `status.audiences`: the requested audiences the token is valid for.
    pub audiences: Vec<String>,
}

/// A review that could not be made.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 401 or 403: the provider may not create TokenReviews (RBAC).
    #[error("the provider may not create TokenReviews: {0}")]
    Forbidden(String),
    /// Timeout, connection failure, 5xx, an answer that is not a TokenReview.
    #[error("the TokenReview API did not answer: {0}")]
    Unavailable(String),
}

impl ApiError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Forbidden(_) => "forbidden",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// Creates TokenReviews.
#[async_trait]
pub trait ReviewApi: Send + Sync {
    /// Reviews `token` for `audience`.
    async fn review(&self, token: &str, audience: &str) -> Result<ReviewStatus, ApiError>;
}

/// Why a Mount was refused after a review.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ReviewRefusal {
    /// The API server did not authenticate the token.
    #[error(
        "Kubernetes TokenReview did not authenticate the service account token of pod {pod} for audience {audience}: {reason} (expired, revoked, signed by another issuer, for another audience, or its pod was deleted; kubelet sends a fresh token on the next republish)"
    )]
    Unauthenticated {
        /// `namespace/name` of the Mount's pod.
        pod: String,
        /// The audience reviewed.
        audience: &'static str,
        /// `status.error`.
        reason: String,
    },
    /// The token is valid but belongs to another service account or pod than the Mount's.
    #[error(
        "the service account token presented for pod {pod} (service account {service_account}) belongs to {found}, according to Kubernetes TokenReview: refused (only the Secrets Store CSI driver should call this socket, with the pod's own token)"
    )]
    WrongSubject {
        /// `namespace/name` of the Mount's pod.
        pod: String,
        /// The Mount's service account attribute.
        service_account: String,
        /// Who the token belongs to.
        found: String,
    },
}

impl ReviewRefusal {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unauthenticated { .. } => "token_review_unauthenticated",
            Self::WrongSubject { .. } => "token_review_wrong_subject",
        }
    }
}

/// The pod of a Mount, as the driver's attributes name it.
#[derive(Debug, Clone, Copy)]
pub struct PodRef<'a> {
    /// Namespace.
    pub namespace: &'a str,
    /// Name.
    pub name: &'a str,
    /// UID (may be empty).
    pub uid: &'a str,
    /// Service account name (may be empty).
    pub service_account: &'a str,
}

/// What a Mount's identity is keyed by after the review step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sharing {
    /// Kubernetes vouched: key by the subject, shared by every pod of the service account.
    Shared(VouchedSubject),
    /// No review, or one that cannot vouch for sharing: key by the token, as before. The reason
    /// is a short label (`off`, `forbidden`, `unavailable`, `backoff`, `not_pod_bound`...).
    PerToken(&'static str),
}

/// Settings of the reviewer.
#[derive(Debug, Clone, Copy)]
pub struct ReviewerConfig {
    /// How long a review result is reused (0: never); never beyond the token's expiry.
    pub cache_ttl: Duration,
}

#[derive(Debug, Default)]
struct Backoff {
    until: Option<Instant>,
    next: Duration,
}

/// Reviews tokens, with a short cache by token digest and a backoff when the API fails.
pub struct TokenReviewer {
    api: Arc<dyn ReviewApi>,
    config: ReviewerConfig,
    cache: moka::future::Cache<[u8; 32], Arc<Cached>>,
    backoff: Mutex<Backoff>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// A cached review and until when it may be used.
#[derive(Debug)]
struct Cached {
    status: ReviewStatus,
    valid_until: Instant,
}

/// The claims of a service-account token the review step reads (after Kubernetes verified them).
#[derive(Debug, Default, serde::Deserialize)]
struct Claims {
    #[serde(default)]
    iss: String,
    #[serde(default)]
    exp: Option<i64>,
}

impl Claims {
    /// The payload of a JWT, unverified: only read after, or for, a review.
    fn of(token: &str) -> Option<Self> {
        use base64::Engine;
        let payload = token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Time left until `exp`, if the token has one.
    fn remaining(&self) -> Option<Duration> {
        let exp = self.exp?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Some(Duration::from_secs(u64::try_from(exp - now).unwrap_or(0)))
    }
}

impl TokenReviewer {
    /// A reviewer over `api`.
    pub fn new(api: Arc<dyn ReviewApi>, config: ReviewerConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            api,
            cache: moka::future::Cache::builder()
                .max_capacity(MAX_CACHED)
                .time_to_live(config.cache_ttl.max(Duration::from_millis(1)))
                .build(),
            config,
            backoff: Mutex::new(Backoff::default()),
            metrics,
        }
    }

    /// Decides how the Mount of `pod` presenting `token` for `audience` is keyed, refusing it
    /// when Kubernetes says the token is not valid or not the pod's.
    pub async fn vouch(
        &self,
        mode: &'static str,
        token: &SecretString,
        audience: &'static str,
        pod: PodRef<'_>,
    ) -> Result<Sharing, ReviewRefusal> {
        let result = self.decide(mode, token, audience, pod).await;
        let label = match &result {
            Ok(Sharing::Shared(_)) => "shared",
            Ok(Sharing::PerToken(_)) => "per_token",
            Err(_) => "refused",
        };
        self.metrics.identity_sharing(mode, label);
        result
    }

    async fn decide(
        &self,
        mode: &'static str,
        token: &SecretString,
        audience: &'static str,
        pod: PodRef<'_>,
    ) -> Result<Sharing, ReviewRefusal> {
        // Read once: its expiry bounds the cached review, its issuer is part of the shared key.
        let claims = Claims::of(token.expose());
        let status = match self.review(mode, token, audience, claims.as_ref()).await {
            Ok(status) => status,
            Err(reason) => return Ok(Sharing::PerToken(reason)),
        };
        let pod_text = format!(
            "\"{}/{}\"",
            crate::text::quote(pod.namespace),
            crate::text::quote(pod.name)
        );
        if !status.authenticated {
            return Err(ReviewRefusal::Unauthenticated {
                pod: pod_text,
                audience,
                reason: if status.error.trim().is_empty() {
                    "not authenticated".to_owned()
                } else {
                    crate::text::printable(&status.error, 300)
                },
            });
        }
        if pod.service_account.is_empty() {
            return Ok(Sharing::PerToken("no_service_account_attribute"));
        }
        let expected = format!(
            "system:serviceaccount:{}:{}",
            pod.namespace, pod.service_account
        );
        let wrong = |found: String| ReviewRefusal::WrongSubject {
            pod: pod_text.clone(),
            service_account: format!("\"{}\"", crate::text::quote(pod.service_account)),
            found,
        };
        if status.username != expected {
            return Err(wrong(format!(
                "\"{}\"",
                crate::text::quote(&status.username)
            )));
        }
        let Some(bound_pod) = status.pod_name.as_deref() else {
            // A valid token of the right service account, but not bound to a pod (a legacy
            // Secret token): nothing proves it came from a running pod; do not share.
            return Ok(Sharing::PerToken("not_pod_bound"));
        };
        let other_uid = status
            .pod_uid
            .as_deref()
            .is_some_and(|uid| !pod.uid.is_empty() && uid != pod.uid);
        if bound_pod != pod.name || other_uid {
            return Err(wrong(format!(
                "\"{}\" of pod \"{}/{}\" (uid \"{}\")",
                crate::text::quote(&status.username),
                crate::text::quote(pod.namespace),
                crate::text::quote(bound_pod),
                crate::text::quote(status.pod_uid.as_deref().unwrap_or("-"))
            )));
        }
        if !status.audiences.iter().any(|a| a == audience) {
            return Ok(Sharing::PerToken("audience_not_confirmed"));
        }
        let Some(claims) = claims else {
            return Ok(Sharing::PerToken("undecodable_token"));
        };
        Ok(Sharing::Shared(VouchedSubject {
            issuer: claims.iss,
            subject: status.username,
            audience: audience.to_owned(),
        }))
    }

    /// The review of `token`: cached, or asked now. `Err` is the per-token reason label.
    async fn review(
        &self,
        mode: &'static str,
        token: &SecretString,
        audience: &'static str,
        claims: Option<&Claims>,
    ) -> Result<ReviewStatus, &'static str> {
        if self.in_backoff() {
            return Err("backoff");
        }
        let key = digest(token, audience);
        if !self.config.cache_ttl.is_zero()
            && let Some(hit) = self.cache.get(&key).await
        {
            if hit.valid_until > Instant::now() {
                self.metrics.cache_lookup("token_review", "hit");
                return Ok(hit.status.clone());
            }
            self.cache.invalidate(&key).await;
        }
        self.metrics.cache_lookup("token_review", "miss");
        let asked = if self.config.cache_ttl.is_zero() {
            self.ask(mode, token, audience, claims)
                .await
                .map(|c| c.status)
        } else {
            // Concurrent Mounts with one token share one review.
            self.cache
                .try_get_with(key, async {
                    self.ask(mode, token, audience, claims).await.map(Arc::new)
                })
                .await
                .map(|c| c.status.clone())
                .map_err(|e| (*e).clone())
        };
        match asked {
            Ok(status) => {
                self.succeeded();
                Ok(status)
            }
            Err(e) => {
                self.failed(&e);
                Err(e.kind())
            }
        }
    }

    async fn ask(
        &self,
        mode: &'static str,
        token: &SecretString,
        audience: &'static str,
        claims: Option<&Claims>,
    ) -> Result<Cached, ApiError> {
        let result = self.api.review(token.expose(), audience).await;
        let outcome = match &result {
            Ok(s) if s.authenticated => "authenticated",
            Ok(_) => "unauthenticated",
            Err(e) => e.kind(),
        };
        self.metrics.token_review(mode, outcome);
        let status = result?;
        // A refusal is not reused: the next Mount asks again (kubelet's next token may be fine).
        let ttl = if status.authenticated {
            claims
                .and_then(Claims::remaining)
                .map_or(self.config.cache_ttl, |left| {
                    left.min(self.config.cache_ttl)
                })
        } else {
            Duration::ZERO
        };
        Ok(Cached {
            status,
            valid_until: Instant::now() + ttl,
        })
    }

    fn in_backoff(&self) -> bool {
        let backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        backoff.until.is_some_and(|until| Instant::now() < until)
    }

    fn succeeded(&self) {
        let mut backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        if backoff.until.take().is_some() {
            tracing::info!(
                "Kubernetes TokenReview answers again: pods of one service account share their identity"
            );
        }
        backoff.next = Duration::ZERO;
    }

    fn failed(&self, error: &ApiError) {
        let mut backoff = self.backoff.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = if backoff.next.is_zero() {
            BACKOFF_MIN
        } else {
            (backoff.next * 2).min(BACKOFF_MAX)
        };
        backoff.next = wait;
        backoff.until = Some(Instant::now() + wait);
        tracing::warn!(
            error = %error,
            kind = error.kind(),
            retry_in = ?wait,
            "Kubernetes TokenReview failed: Mounts use per-token identities (nothing shared) until it answers; grant create on tokenreviews.authentication.k8s.io (chart: tokenReview.enabled) or set --token-review=off"
        );
    }
}

/// The cache key of a review: a digest of the audience and the token.
fn digest(token: &SecretString, audience: &str) -> [u8; 32] {
    crate::auth::digest_of(&[audience.as_bytes(), token.expose().as_bytes()])
}

#[cfg(test)]
mod tests;

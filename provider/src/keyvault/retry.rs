//! Retries of throttled and unavailable reads: `Retry-After` honoured, jittered backoff, the
//! caller's deadline respected.
//!
//! The SDK's own retries are off for Key Vault clients so that this is the only retry loop and it
//! can see the Mount's deadline: when Key Vault asks for a wait that does not fit, the read fails
//! at once with `Unavailable` and the wait it asked for, and the driver retries later.

use super::{
    FetchedCertificate, FetchedKey, FetchedSecret, KeyVaultError, ObjectKind, SecretPage,
    SecretSummary, Vault, VersionInfo,
};
use crate::metrics::Metrics;
use async_trait::async_trait;
use std::{
    future::Future,
    hash::{BuildHasher, Hasher},
    sync::Arc,
    time::Duration,
};
use tokio::time::Instant;

/// Retry settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts after the first.
    pub max_retries: u32,
    /// First backoff when Key Vault gives no `Retry-After`.
    pub initial_backoff: Duration,
    /// Largest backoff without `Retry-After`.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// Backoff before retry `attempt` (0-based): exponential with full jitter in [50%, 100%].
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(2u32.saturating_pow(attempt))
            .min(self.max_backoff);
        let jitter = random_fraction();
        base.mul_f64(0.5 + 0.5 * jitter)
    }
}

/// A number in [0, 1) from the standard library's randomly seeded hasher.
pub(crate) fn random_fraction() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    #[allow(clippy::cast_precision_loss)]
    let x = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    x
}

/// A [`Vault`] that retries within one caller's deadline: the outermost layer of a Mount's
/// vault, so every Mount (also one that joined another's read in the cache below) waits and
/// gives up by its own deadline.
pub struct RetryingVault {
    inner: Arc<dyn Vault>,
    vault: String,
    deadline: Instant,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl RetryingVault {
    /// Wraps `inner` (the vault named `vault`) for one Mount ending at `deadline`.
    pub fn new(
        inner: Arc<dyn Vault>,
        vault: &str,
        deadline: Instant,
        policy: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner,
            vault: vault.to_owned(),
            deadline,
            policy,
            metrics,
        }
    }

    async fn run<T, F, Fut>(&self, op: F) -> Result<T, KeyVaultError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, KeyVaultError>>,
    {
        let mut attempt = 0;
        loop {
            let result = op().await;
            let err = match result {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            let asked = match &err {
                KeyVaultError::Throttled { retry_after, .. } => *retry_after,
                KeyVaultError::Unavailable { .. } => None,
                _ => return Err(err),
            };
            if attempt >= self.policy.max_retries {
                return Err(err);
            }
            let wait = asked.unwrap_or_else(|| self.policy.backoff(attempt));
            let left = self.deadline.saturating_duration_since(Instant::now());
            if wait >= left {
                return Err(match err {
                    KeyVaultError::Throttled { vault, retry_after } => {
                        KeyVaultError::Throttled { vault, retry_after }
                    }
                    KeyVaultError::Unavailable {
                        vault,
                        detail,
                        cause,
                    } => KeyVaultError::Unavailable {
                        vault,
                        detail: format!("{detail}; no time left to retry before the deadline"),
                        cause,
                    },
                    other => other,
                });
            }
            tracing::debug!(vault = %self.vault, attempt, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), kind = err.kind(), "retrying Key Vault read");
            self.metrics.throttle_wait(&self.vault, wait);
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

#[async_trait]
impl Vault for RetryingVault {
    async fn get_secret(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedSecret, KeyVaultError> {
        self.run(|| self.inner.get_secret(name, version)).await
    }

    async fn get_key(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedKey, KeyVaultError> {
        self.run(|| self.inner.get_key(name, version)).await
    }

    async fn get_certificate(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedCertificate, KeyVaultError> {
        self.run(|| self.inner.get_certificate(name, version)).await
    }

    async fn list_versions(
        &self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Vec<VersionInfo>, KeyVaultError> {
        self.run(|| self.inner.list_versions(kind, name)).await
    }

    /// Page by page, each page retried on its own: a throttled third page does not read the
    /// first two again.
    async fn list_secrets(&self) -> Result<Vec<SecretSummary>, KeyVaultError> {
        let mut all = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let page = self
                .run(|| self.inner.list_secrets_page(next.as_deref()))
                .await?;
            super::extend_listing(&mut all, page.secrets, &self.vault)?;
            match page.next {
                Some(link) => next = Some(link),
                None => return Ok(all),
            }
        }
    }

    async fn list_secrets_page(&self, next: Option<&str>) -> Result<SecretPage, KeyVaultError> {
        self.run(|| self.inner.list_secrets_page(next)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyvault::scripted::ScriptedVault;

    fn throttled(secs: u64) -> KeyVaultError {
        KeyVaultError::Throttled {
            vault: "kv".into(),
            retry_after: Some(Duration::from_secs(secs)),
        }
    }

    fn flaky(failures: Vec<KeyVaultError>) -> Arc<ScriptedVault> {
        Arc::new(ScriptedVault::new(Duration::from_millis(5), failures))
    }

    fn wrap(inner: Arc<dyn Vault>, deadline: Duration) -> RetryingVault {
        RetryingVault::new(
            inner,
            "kv",
            Instant::now() + deadline,
            RetryPolicy::default(),
            Arc::new(Metrics::new(10)),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after_within_the_deadline() {
        let inner = flaky(vec![
            throttled(2),
            KeyVaultError::Unavailable {
                vault: "kv".into(),
                detail: "503".into(),
                cause: None,
            },
        ]);
        let vault = wrap(inner.clone(), Duration::from_secs(30));
        let started = Instant::now();
        assert!(vault.get_secret("s", None).await.is_ok());
        assert_eq!(inner.calls(), 3);
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "waited as Key Vault asked"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_past_the_deadline_fails_at_once_with_the_asked_wait() {
        let inner = flaky(vec![throttled(60)]);
        let vault = wrap(inner.clone(), Duration::from_secs(10));
        let started = Instant::now();
        let err = vault.get_secret("s", None).await.err();
        assert_eq!(err, Some(throttled(60)));
        assert_eq!(inner.calls(), 1);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no pointless waiting"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let inner = flaky(vec![KeyVaultError::NotFound {
            vault: "kv".into(),
            object: "secret/s".into(),
            definite: true,
        }]);
        let vault = wrap(inner.clone(), Duration::from_secs(10));
        assert!(vault.get_secret("s", None).await.is_err());
        assert_eq!(inner.calls(), 1);
    }

    /// Two Mounts share one read in the cache below (coalesced); Key Vault throttles it. The
    /// Mount with 1 s left fails at once with the wait Key Vault asked for; the one with 30 s
    /// waits and retries on its own, and gets the value.
    #[tokio::test(start_paused = true)]
    async fn a_joiner_keeps_its_own_deadline() {
        use crate::{
            auth::IdentityKey,
            keyvault::{CachedVault, ReadCache, ReadCacheConfig},
        };
        let inner = flaky(vec![throttled(2)]);
        let cache = Arc::new(ReadCache::new(
            ReadCacheConfig {
                pinned_ttl: Duration::ZERO,
                latest_window: Duration::ZERO,
                listing_window: Duration::ZERO,
                max_bytes: 1 << 20,
            },
            Arc::new(Metrics::new(10)),
        ));
        let shared = || -> Arc<dyn Vault> {
            Arc::new(CachedVault::new(
                inner.clone(),
                inner.clone(),
                cache.clone(),
                "https://kv.vault.test/",
                IdentityKey([7; 32]),
            ))
        };
        let hurried = wrap(shared(), Duration::from_secs(1));
        let patient = wrap(shared(), Duration::from_secs(30));
        let (a, b) = tokio::join!(hurried.get_secret("s", None), patient.get_secret("s", None));
        assert!(
            matches!(&a, Err(KeyVaultError::Throttled { retry_after: Some(d), .. }) if *d == Duration::from_secs(2)),
            "{a:?}"
        );
        assert_eq!(
            b.map(|s| s.value.expose().to_vec()).ok(),
            Some(b"s".to_vec())
        );
        assert_eq!(
            inner.calls(),
            2,
            "one shared attempt, one retry of the patient Mount"
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let p = RetryPolicy::default();
        for attempt in 0..10 {
            let b = p.backoff(attempt);
            let cap = p
                .initial_backoff
                .saturating_mul(2u32.saturating_pow(attempt))
                .min(p.max_backoff);
            assert!(b >= cap / 2 && b <= cap, "{attempt}: {b:?}");
        }
    }
}

//! Retries of throttled and unavailable reads: `Retry-After` honoured, jittered backoff, the
//! caller's deadline respected, and a per-vault cap on concurrent requests from this node.
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
    collections::HashMap,
    future::Future,
    hash::{BuildHasher, Hasher},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};
use tokio::{sync::Semaphore, time::Instant};

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

/// Per-vault semaphores shared by all Mounts of the process.
#[derive(Debug)]
pub struct VaultLimits {
    per_vault: usize,
    semaphores: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl VaultLimits {
    /// At most `per_vault` requests in flight to one vault.
    pub fn new(per_vault: usize) -> Self {
        Self {
            per_vault: per_vault.max(1),
            semaphores: Mutex::new(HashMap::new()),
        }
    }

    fn for_vault(&self, vault: &str) -> Arc<Semaphore> {
        let mut map = self
            .semaphores
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(vault.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_vault)))
            .clone()
    }
}

/// A [`Vault`] that retries within a deadline and respects the per-vault cap.
pub struct RetryingVault {
    inner: Arc<dyn Vault>,
    vault: String,
    deadline: Instant,
    limit: Arc<Semaphore>,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl RetryingVault {
    /// Wraps `inner` (the vault named `vault`) for one Mount ending at `deadline`.
    pub fn new(
        inner: Arc<dyn Vault>,
        vault: &str,
        deadline: Instant,
        limits: &VaultLimits,
        policy: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner,
            vault: vault.to_owned(),
            deadline,
            limit: limits.for_vault(vault),
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
            let result = {
                let _permit = self.limit.acquire().await;
                op().await
            };
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
                    KeyVaultError::Unavailable { vault, detail } => KeyVaultError::Unavailable {
                        vault,
                        detail: format!("{detail}; no time left to retry before the deadline"),
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

    fn wrap(inner: Arc<ScriptedVault>, deadline: Duration, limits: &VaultLimits) -> RetryingVault {
        RetryingVault::new(
            inner,
            "kv",
            Instant::now() + deadline,
            limits,
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
            },
        ]);
        let vault = wrap(inner.clone(), Duration::from_secs(30), &VaultLimits::new(4));
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
        let vault = wrap(inner.clone(), Duration::from_secs(10), &VaultLimits::new(4));
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
        let vault = wrap(inner.clone(), Duration::from_secs(10), &VaultLimits::new(4));
        assert!(vault.get_secret("s", None).await.is_err());
        assert_eq!(inner.calls(), 1);
    }

    #[tokio::test]
    async fn the_per_vault_cap_bounds_concurrency_across_mounts() {
        let limits = VaultLimits::new(3);
        let inner = flaky(vec![]);
        let a = Arc::new(wrap(inner.clone(), Duration::from_secs(10), &limits));
        let b = Arc::new(wrap(inner.clone(), Duration::from_secs(10), &limits));
        let calls: Vec<_> = (0..20)
            .map(|i| {
                let v = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { v.get_secret("s", None).await.is_ok() })
            })
            .collect();
        for c in calls {
            assert!(c.await.unwrap_or(false));
        }
        assert!(inner.max_in_flight() <= 3);
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

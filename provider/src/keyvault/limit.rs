//! A cap on the requests in flight to one vault from this process, across Mounts and
//! identities: `--max-concurrent-per-vault`.
//!
//! The cap sits right above the SDK client, below the read cache: a read that many Mounts share
//! takes one permit, and a Mount waiting to retry holds none.

use super::{
    FetchedCertificate, FetchedKey, FetchedSecret, KeyVaultError, ObjectKind, SecretPage,
    SecretSummary, Vault, VersionInfo,
};
use async_trait::async_trait;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};
use tokio::sync::Semaphore;

/// Vaults whose semaphores are kept before unused ones are dropped.
const PRUNE_ABOVE: usize = 64;

/// Per-vault semaphores shared by all Mounts of the process, keyed by the normalised vault URL
/// (`https://KV1.vault.azure.net/` and `https://kv1.vault.azure.net` are one vault). A semaphore
/// no Mount holds is dropped once more than [`PRUNE_ABOVE`] vaults were seen, so the map does
/// not grow with every vault ever named.
#[derive(Debug)]
pub struct VaultLimits {
    per_vault: usize,
    semaphores: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// The key of a vault URL: lowercase, without a trailing slash.
fn normalise(vault_url: &str) -> String {
    vault_url.trim().trim_end_matches('/').to_ascii_lowercase()
}

impl VaultLimits {
    /// At most `per_vault` requests in flight to one vault.
    pub fn new(per_vault: usize) -> Self {
        Self {
            per_vault: per_vault.max(1),
            semaphores: Mutex::new(HashMap::new()),
        }
    }

    /// The semaphore of the vault at `vault_url`.
    pub fn for_vault(&self, vault_url: &str) -> Arc<Semaphore> {
        let mut map = self
            .semaphores
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map.len() > PRUNE_ABOVE {
            map.retain(|_, semaphore| Arc::strong_count(semaphore) > 1);
        }
        map.entry(normalise(vault_url))
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_vault)))
            .clone()
    }

    /// Vaults with a semaphore now.
    pub fn vaults(&self) -> usize {
        self.semaphores
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A [`Vault`] whose every request holds a permit of its vault's semaphore.
pub struct LimitedVault {
    inner: Arc<dyn Vault>,
    permits: Arc<Semaphore>,
}

impl LimitedVault {
    /// `inner` under `permits` (from [`VaultLimits::for_vault`]).
    pub fn new(inner: Arc<dyn Vault>, permits: Arc<Semaphore>) -> Self {
        Self { inner, permits }
    }
}

#[async_trait]
impl Vault for LimitedVault {
    async fn get_secret(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedSecret, KeyVaultError> {
        let _permit = self.permits.acquire().await;
        self.inner.get_secret(name, version).await
    }

    async fn get_key(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedKey, KeyVaultError> {
        let _permit = self.permits.acquire().await;
        self.inner.get_key(name, version).await
    }

    async fn get_certificate(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedCertificate, KeyVaultError> {
        let _permit = self.permits.acquire().await;
        self.inner.get_certificate(name, version).await
    }

    async fn list_versions(
        &self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Vec<VersionInfo>, KeyVaultError> {
        let _permit = self.permits.acquire().await;
        self.inner.list_versions(kind, name).await
    }

    /// The whole listing under one permit (a retrying caller reads it page by page instead).
    async fn list_secrets(&self) -> Result<Vec<SecretSummary>, KeyVaultError> {
        let _permit = self.permits.acquire().await;
        self.inner.list_secrets().await
    }

    async fn list_secrets_page(&self, next: Option<&str>) -> Result<SecretPage, KeyVaultError> {
        let _permit = self.permits.acquire().await;
        self.inner.list_secrets_page(next).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyvault::scripted::ScriptedVault;
    use std::time::Duration;

    #[test]
    fn one_semaphore_per_vault_whatever_the_spelling() {
        let limits = VaultLimits::new(2);
        let a = limits.for_vault("https://KV1.vault.azure.net/");
        let b = limits.for_vault("https://kv1.vault.azure.net");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(limits.vaults(), 1);
    }

    #[test]
    fn unused_semaphores_are_dropped() {
        let limits = VaultLimits::new(2);
        let held = limits.for_vault("https://held.vault.test/");
        for i in 0..200 {
            drop(limits.for_vault(&format!("https://v{i}.vault.test/")));
        }
        assert!(limits.vaults() <= PRUNE_ABOVE + 2, "{}", limits.vaults());
        assert!(Arc::ptr_eq(
            &held,
            &limits.for_vault("https://held.vault.test")
        ));
    }

    #[tokio::test]
    async fn the_cap_bounds_concurrency_across_views() {
        let limits = VaultLimits::new(3);
        let inner = Arc::new(ScriptedVault::new(Duration::from_millis(5), vec![]));
        let view = || {
            Arc::new(LimitedVault::new(
                inner.clone(),
                limits.for_vault("https://kv.vault.test/"),
            ))
        };
        let (a, b) = (view(), view());
        let calls: Vec<_> = (0..20)
            .map(|i| {
                let v = if i % 2 == 0 { a.clone() } else { b.clone() };
                tokio::spawn(async move { v.get_secret("s", None).await.is_ok() })
            })
            .collect();
        for c in calls {
            assert!(c.await.unwrap_or(false));
        }
        assert!(inner.max_in_flight() <= 3, "{}", inner.max_in_flight());
    }
}

//! Fewer Key Vault reads: identical concurrent reads share one request, pinned versions are
//! cached, and the latest version may be reused for a short, configurable window.
//!
//! Every key includes the vault and the [`IdentityKey`], so a value is only ever served to the
//! identity (and proof) that Key Vault authorized for it. Cached values are [`SecretBytes`]:
//! zeroized when evicted or dropped. Only successful reads are cached.

use super::{
    FetchedCertificate, FetchedKey, FetchedSecret, KeyVaultError, ObjectKind, SecretSummary, Vault,
    VersionInfo,
};
use crate::{auth::IdentityKey, metrics::Metrics};
use async_trait::async_trait;
use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use moka::future::Cache;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

/// Settings of the read cache.
#[derive(Debug, Clone, Copy)]
pub struct ReadCacheConfig {
    /// How long a pinned version's value is kept (0 disables).
    pub pinned_ttl: Duration,
    /// How long a latest-version read may be reused (0: always read; the default).
    pub latest_window: Duration,
    /// How long a vault's secret listing is reused for bulk entries (0: list every time).
    pub listing_window: Duration,
    /// Most bytes of values kept.
    pub max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ReadKey {
    vault_url: String,
    identity: IdentityKey,
    name: String,
    version: Option<String>,
}

type Pending = Shared<BoxFuture<'static, Result<FetchedSecret, KeyVaultError>>>;

/// A read in flight and how many Mounts wait for it.
struct InFlight {
    pending: Pending,
    waiters: usize,
    id: u64,
}

/// Leaves an in-flight read when dropped; the last waiter to leave (e.g. all Mounts timed out)
/// removes it, so a later Mount starts a fresh request instead of joining an abandoned one.
struct Waiter<'a> {
    cache: &'a ReadCache,
    key: &'a ReadKey,
    id: u64,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut in_flight = self
            .cache
            .in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = in_flight.get_mut(self.key)
            && entry.id == self.id
        {
            entry.waiters -= 1;
            if entry.waiters == 0 {
                in_flight.remove(self.key);
            }
        }
    }
}

/// The process-wide read cache.
pub struct ReadCache {
    /// Secret listings per vault and identity, for the listing window; concurrent
    /// listings of one key share one.
    listings: Option<Listings>,
    pinned: Option<Cache<ReadKey, FetchedSecret>>,
    latest: Option<Cache<ReadKey, FetchedSecret>>,
    in_flight: Mutex<HashMap<ReadKey, InFlight>>,
    next_id: std::sync::atomic::AtomicU64,
    metrics: Arc<Metrics>,
}

/// Secret listings by vault URL and identity.
type Listings = Cache<(String, IdentityKey), Arc<Vec<SecretSummary>>>;

/// Most listings kept (each at most 25,000 names and tags, kept a few seconds).
const MAX_LISTINGS: u64 = 64;

fn weigh(_: &ReadKey, value: &FetchedSecret) -> u32 {
    u32::try_from(value.value.len() + 128).unwrap_or(u32::MAX)
}

fn build(ttl: Duration, max_bytes: u64) -> Option<Cache<ReadKey, FetchedSecret>> {
    (!ttl.is_zero()).then(|| {
        Cache::builder()
            .weigher(weigh)
            .max_capacity(max_bytes)
            .time_to_live(ttl)
            .build()
    })
}

impl ReadCache {
    /// A cache with `config`.
    pub fn new(config: ReadCacheConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            listings: (!config.listing_window.is_zero()).then(|| {
                Cache::builder()
                    .max_capacity(MAX_LISTINGS)
                    .time_to_live(config.listing_window)
                    .build()
            }),
            pinned: build(config.pinned_ttl, config.max_bytes),
            latest: build(config.latest_window, config.max_bytes),
            in_flight: Mutex::new(HashMap::new()),
            next_id: std::sync::atomic::AtomicU64::new(0),
            metrics,
        }
    }

    fn store(&self, key: &ReadKey) -> Option<(&'static str, &Cache<ReadKey, FetchedSecret>)> {
        if key.version.is_some() {
            self.pinned.as_ref().map(|c| ("pinned", c))
        } else {
            self.latest.as_ref().map(|c| ("latest", c))
        }
    }
}

/// A [`Vault`] view through the read cache, for one identity.
///
/// It shares single reads: a retry is its caller's (a [`super::RetryingVault`] above it, with
/// that caller's deadline), so a Mount that joins another's read keeps its own time to retry.
/// A shared listing is the exception: it is many requests, read page by page through `listing`
/// (which retries each page within the deadline of the Mount that started it).
pub struct CachedVault {
    inner: Arc<dyn Vault>,
    listing: Arc<dyn Vault>,
    cache: Arc<ReadCache>,
    vault_url: String,
    identity: IdentityKey,
    shared: bool,
}

impl CachedVault {
    /// Reads of `inner` (the vault at `vault_url`) as `identity`, through `cache`; secret
    /// listings through `listing`.
    pub fn new(
        inner: Arc<dyn Vault>,
        listing: Arc<dyn Vault>,
        cache: Arc<ReadCache>,
        vault_url: &str,
        identity: IdentityKey,
    ) -> Self {
        Self {
            inner,
            listing,
            cache,
            vault_url: vault_url.trim_end_matches('/').to_ascii_lowercase(),
            identity,
            shared: false,
        }
    }

    /// `identity` is shared by the pods of a service account (see [`crate::review`]): every read
    /// answered without a request of its own is counted as saved by the sharing.
    #[must_use]
    pub fn shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    fn saved(&self) {
        if self.shared {
            self.cache.metrics.shared_read_saved();
        }
    }
}

#[async_trait]
impl Vault for CachedVault {
    async fn get_secret(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedSecret, KeyVaultError> {
        let key = ReadKey {
            vault_url: self.vault_url.clone(),
            identity: self.identity.clone(),
            // Key Vault names and versions are case-insensitive.
            name: name.to_ascii_lowercase(),
            version: version.map(str::to_ascii_lowercase),
        };
        if let Some((which, store)) = self.cache.store(&key) {
            if let Some(hit) = store.get(&key).await {
                self.cache.metrics.cache_lookup(which, "hit");
                self.saved();
                return Ok(hit);
            }
            self.cache.metrics.cache_lookup(which, "miss");
        }
        let (pending, id, joined) = {
            let mut in_flight = self
                .cache
                .in_flight
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(entry) = in_flight.get_mut(&key) {
                entry.waiters += 1;
                (entry.pending.clone(), entry.id, true)
            } else {
                let id = self
                    .cache
                    .next_id
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let inner = self.inner.clone();
                let cache = self.cache.clone();
                let (name, version, k) = (name.to_owned(), version.map(str::to_owned), key.clone());
                let pending = async move {
                    let result = inner.get_secret(&name, version.as_deref()).await;
                    if let (Ok(value), Some((_, store))) = (&result, cache.store(&k)) {
                        store.insert(k.clone(), value.clone()).await;
                    }
                    let mut in_flight = cache
                        .in_flight
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if in_flight.get(&k).is_some_and(|e| e.id == id) {
                        in_flight.remove(&k);
                    }
                    result
                }
                .boxed()
                .shared();
                in_flight.insert(
                    key.clone(),
                    InFlight {
                        pending: pending.clone(),
                        waiters: 1,
                        id,
                    },
                );
                (pending, id, false)
            }
        };
        if joined {
            self.cache.metrics.cache_lookup("read", "coalesced");
            self.saved();
        }
        let _waiter = Waiter {
            cache: &self.cache,
            key: &key,
            id,
        };
        pending.await
    }

    // Keys and certificates hold no secret material and are read as they are asked for.
    async fn get_key(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedKey, KeyVaultError> {
        self.inner.get_key(name, version).await
    }

    async fn get_certificate(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedCertificate, KeyVaultError> {
        self.inner.get_certificate(name, version).await
    }

    async fn list_versions(
        &self,
        kind: ObjectKind,
        name: &str,
    ) -> Result<Vec<VersionInfo>, KeyVaultError> {
        self.inner.list_versions(kind, name).await
    }

    /// Every bulk entry of every Mount within the listing window shares one listing of
    /// the vault per identity (names and tags only; a listing is only served to the identity
    /// Key Vault gave it to); a failed listing is not kept.
    async fn list_secrets(&self) -> Result<Vec<SecretSummary>, KeyVaultError> {
        let Some(listings) = &self.cache.listings else {
            return self.listing.list_secrets().await;
        };
        let key = (self.vault_url.clone(), self.identity.clone());
        let mut fetched = false;
        let listing = listings
            .try_get_with(key, async {
                fetched = true;
                self.listing.list_secrets().await.map(Arc::new)
            })
            .await
            .map_err(|e| KeyVaultError::clone(&e))?;
        self.cache
            .metrics
            .cache_lookup("listing", if fetched { "miss" } else { "hit" });
        Ok(listing.as_ref().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyvault::scripted::ScriptedVault;

    fn setup(latest_window: Duration) -> (Arc<ScriptedVault>, Arc<ReadCache>) {
        let config = ReadCacheConfig {
            pinned_ttl: Duration::from_hours(1),
            latest_window,
            listing_window: Duration::ZERO,
            max_bytes: 1 << 20,
        };
        (
            Arc::new(ScriptedVault::new(Duration::from_millis(30), vec![])),
            Arc::new(ReadCache::new(config, Arc::new(Metrics::new(10)))),
        )
    }

    fn view(inner: &Arc<ScriptedVault>, cache: &Arc<ReadCache>, id: u8) -> Arc<CachedVault> {
        Arc::new(CachedVault::new(
            inner.clone(),
            inner.clone(),
            cache.clone(),
            "https://kv.vault.test/",
            IdentityKey([id; 32]),
        ))
    }

    #[tokio::test]
    async fn concurrent_identical_reads_share_one_request() {
        let (inner, cache) = setup(Duration::ZERO);
        let v = view(&inner, &cache, 1);
        let reads: Vec<_> = (0..8)
            .map(|_| {
                let v = v.clone();
                tokio::spawn(async move {
                    v.get_secret("s", None)
                        .await
                        .map(|s| s.value.expose().to_vec())
                })
            })
            .collect();
        for r in reads {
            assert_eq!(r.await.ok().and_then(Result::ok), Some(b"s".to_vec()));
        }
        assert_eq!(inner.calls(), 1);
        // Latest reads are not cached by default: the next read goes to Key Vault.
        assert!(v.get_secret("s", None).await.is_ok());
        assert_eq!(inner.calls(), 2);
    }

    #[tokio::test]
    async fn pinned_versions_are_cached_per_identity_and_errors_are_not() {
        let (inner, cache) = setup(Duration::ZERO);
        let a = view(&inner, &cache, 1);
        assert!(a.get_secret("s", Some("V1")).await.is_ok());
        assert!(a.get_secret("S", Some("v1")).await.is_ok());
        assert_eq!(inner.calls(), 1, "second pinned read is a hit");
        let b = view(&inner, &cache, 2);
        assert!(b.get_secret("s", Some("v1")).await.is_ok());
        assert_eq!(
            inner.calls(),
            2,
            "another identity is verified by Key Vault itself"
        );
        assert!(a.get_secret("missing", Some("v1")).await.is_err());
        assert!(a.get_secret("missing", Some("v1")).await.is_err());
        assert_eq!(inner.calls(), 4);
    }

    #[tokio::test]
    async fn an_abandoned_read_is_not_joined_later() {
        let (inner, cache) = setup(Duration::ZERO);
        let v = view(&inner, &cache, 1);
        // A Mount gives up while its read is in flight.
        let gave_up = tokio::time::timeout(Duration::from_millis(5), v.get_secret("s", None)).await;
        assert!(gave_up.is_err());
        assert!(
            cache.in_flight.lock().is_ok_and(|m| m.is_empty()),
            "no abandoned entry left"
        );
        assert!(v.get_secret("s", None).await.is_ok());
        assert_eq!(inner.calls(), 2, "a fresh request");
    }

    #[tokio::test]
    async fn a_latest_window_reuses_reads() {
        let (inner, cache) = setup(Duration::from_mins(1));
        let v = view(&inner, &cache, 1);
        assert!(v.get_secret("s", None).await.is_ok());
        assert!(v.get_secret("s", None).await.is_ok());
        assert_eq!(inner.calls(), 1);
    }
}

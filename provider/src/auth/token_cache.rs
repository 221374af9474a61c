//! Tokens cached across Mounts, per verified identity, until shortly before they expire.
//!
//! The key is an [`IdentityKey`]: a digest of the identity *and the proof it presented* (the
//! service-account token, the client secret). A pod with a forged or different assertion has a
//! different key, so it can never be handed a token that Entra issued for someone else's proof.
//! Concurrent requests for one key share one token request; a failed request is never cached.

use super::IdentityKey;
use crate::metrics::Metrics;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use moka::future::Cache;
use std::{fmt, sync::Arc, time::Duration};
use tokio::sync::Mutex;

/// Tokens are refreshed this long before they expire (the SDK refreshes at 5 minutes too).
pub const REFRESH_MARGIN: Duration = Duration::from_mins(5);
/// Most identities with a cached token.
const MAX_ENTRIES: u64 = 10_000;

type Key = (IdentityKey, String);

struct UntilExpiry;

impl moka::Expiry<Key, AccessToken> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &Key,
        value: &AccessToken,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        let left = value.expires_on - time::OffsetDateTime::now_utc();
        let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
        Some(left.saturating_sub(REFRESH_MARGIN))
    }
}

/// The process-wide token cache.
pub struct TokenCache {
    tokens: Cache<Key, AccessToken>,
    locks: Cache<Key, Arc<Mutex<()>>>,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("entries", &self.tokens.entry_count())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// An empty cache.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            tokens: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(UntilExpiry)
                .build(),
            locks: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_idle(Duration::from_mins(10))
                .build(),
            metrics,
        }
    }

    /// A cached token for `key` and `scopes`, or one from `credential` (one request per key at a time).
    pub async fn get_token(
        &self,
        key: &IdentityKey,
        credential: &dyn TokenCredential,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let k: Key = (key.clone(), scopes.join(" "));
        if let Some(token) = self.tokens.get(&k).await {
            self.metrics.cache_lookup("token", "hit");
            return Ok(token);
        }
        let lock = self
            .locks
            .get_with(k.clone(), async { Arc::new(Mutex::new(())) })
            .await;
        let _turn = lock.lock().await;
        if let Some(token) = self.tokens.get(&k).await {
            // Another Mount fetched it while this one waited: a coalesced request.
            self.metrics.cache_lookup("token", "coalesced");
            return Ok(token);
        }
        self.metrics.cache_lookup("token", "miss");
        let token = credential.get_token(scopes, options).await?;
        self.tokens.insert(k, token.clone()).await;
        Ok(token)
    }
}

impl TokenCache {
    /// Evicts the token of `key` whose secret is `token`, for every scope: Key Vault answered
    /// 401 to it. A token cached since (another Mount already got a fresh one) stays.
    pub async fn reject(&self, key: &IdentityKey, token: &str) {
        let rejected: Vec<Key> = self
            .tokens
            .iter()
            .filter(|(k, v)| k.0 == *key && v.token.secret() == token)
            .map(|(k, _)| Key::clone(&k))
            .collect();
        for k in rejected {
            self.tokens.invalidate(&k).await;
            self.metrics.cache_lookup("token", "evicted");
        }
    }
}

/// A credential whose tokens come from the shared [`TokenCache`].
pub struct CachedCredential {
    inner: Arc<dyn TokenCredential>,
    key: IdentityKey,
    cache: Arc<TokenCache>,
}

impl CachedCredential {
    /// Wraps `inner`, caching its tokens under `key`.
    pub fn new(inner: Arc<dyn TokenCredential>, key: IdentityKey, cache: Arc<TokenCache>) -> Self {
        Self { inner, key, cache }
    }
}

impl fmt::Debug for CachedCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedCredential").finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for CachedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.cache
            .get_token(&self.key, self.inner.as_ref(), scopes, options)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::credentials::Secret;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Counting {
        calls: AtomicUsize,
        fail: bool,
        lifetime: time::Duration,
    }

    #[async_trait::async_trait]
    impl TokenCredential for Counting {
        async fn get_token(
            &self,
            _: &[&str],
            _: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.fail {
                return Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Credential,
                    "refused",
                ));
            }
            Ok(AccessToken::new(
                Secret::new("tok"),
                time::OffsetDateTime::now_utc() + self.lifetime,
            ))
        }
    }

    fn key(n: u8) -> IdentityKey {
        IdentityKey([n; 32])
    }

    #[tokio::test]
    async fn one_request_per_identity_and_concurrent_callers_share_it() {
        let cache = Arc::new(TokenCache::new(Arc::new(Metrics::new(10))));
        let cred = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            fail: false,
            lifetime: time::Duration::hours(1),
        });
        let calls: Vec<_> = (0..10)
            .map(|_| {
                let cache = cache.clone();
                let cred = cred.clone();
                tokio::spawn(async move {
                    cache
                        .get_token(&key(1), cred.as_ref(), &["s/.default"], None)
                        .await
                        .is_ok()
                })
            })
            .collect();
        for c in calls {
            assert!(c.await.unwrap_or(false));
        }
        assert_eq!(cred.calls.load(Ordering::SeqCst), 1);
        // Another identity (or another proof) is a different key.
        assert!(
            cache
                .get_token(&key(2), cred.as_ref(), &["s/.default"], None)
                .await
                .is_ok()
        );
        assert_eq!(cred.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn failures_and_nearly_expired_tokens_are_not_served() {
        let cache = TokenCache::new(Arc::new(Metrics::new(10)));
        let failing = Counting {
            calls: AtomicUsize::new(0),
            fail: true,
            lifetime: time::Duration::hours(1),
        };
        assert!(
            cache
                .get_token(&key(3), &failing, &["s"], None)
                .await
                .is_err()
        );
        assert!(
            cache
                .get_token(&key(3), &failing, &["s"], None)
                .await
                .is_err()
        );
        assert_eq!(
            failing.calls.load(Ordering::SeqCst),
            2,
            "errors are not cached"
        );
        let short = Counting {
            calls: AtomicUsize::new(0),
            fail: false,
            lifetime: time::Duration::minutes(4),
        };
        assert!(cache.get_token(&key(4), &short, &["s"], None).await.is_ok());
        assert!(cache.get_token(&key(4), &short, &["s"], None).await.is_ok());
        assert_eq!(
            short.calls.load(Ordering::SeqCst),
            2,
            "tokens inside the refresh margin are refetched"
        );
    }
}

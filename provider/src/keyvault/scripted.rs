//! A scripted [`Vault`] for the unit tests of the layers above it (retries, read cache): counts
//! calls and the most in flight at once, answers after a delay, fails the n-th secret read as
//! scripted, and answers `NotFound` for the secret named `missing`.

use super::{
    FetchedCertificate, FetchedKey, FetchedSecret, KeyVaultError, ObjectKind, SecretSummary, Vault,
    VersionInfo,
};
use crate::sensitive::SecretBytes;
use async_trait::async_trait;
use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

/// See the module documentation.
pub(crate) struct ScriptedVault {
    failures: Vec<KeyVaultError>,
    delay: Duration,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl ScriptedVault {
    /// Secret reads take `delay`; read n (0-based) fails with `failures[n]` when there is one.
    pub(crate) fn new(delay: Duration, failures: Vec<KeyVaultError>) -> Self {
        Self {
            failures,
            delay,
            calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    /// Secret reads so far.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The most secret reads that were in flight at once.
    pub(crate) fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Vault for ScriptedVault {
    /// The value is the name's bytes; the version the one asked for, else `latest-v`.
    async fn get_secret(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<FetchedSecret, KeyVaultError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(e) = self.failures.get(n) {
            return Err(e.clone());
        }
        if name == "missing" {
            return Err(KeyVaultError::NotFound {
                vault: "kv".into(),
                object: "secret/missing".into(),
                definite: true,
            });
        }
        Ok(FetchedSecret {
            version: version.unwrap_or("latest-v").to_owned(),
            value: SecretBytes::new(name.as_bytes().to_vec()),
            content_type: None,
            kid: None,
        })
    }

    async fn get_key(&self, _: &str, _: Option<&str>) -> Result<FetchedKey, KeyVaultError> {
        Ok(FetchedKey::default())
    }

    async fn get_certificate(
        &self,
        _: &str,
        _: Option<&str>,
    ) -> Result<FetchedCertificate, KeyVaultError> {
        Ok(FetchedCertificate::default())
    }

    async fn list_versions(
        &self,
        _: ObjectKind,
        _: &str,
    ) -> Result<Vec<VersionInfo>, KeyVaultError> {
        Ok(vec![])
    }

    async fn list_secrets(&self) -> Result<Vec<SecretSummary>, KeyVaultError> {
        Ok(vec![])
    }
}

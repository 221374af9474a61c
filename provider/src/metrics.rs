//! Prometheus metrics: the Go provider's histograms under the same names, plus our own series.
//!
//! Every label value is either a fixed short kind or a bounded name (vaults and object names are
//! interned up to a limit, then reported as `_other`), so a flood of distinct failing objects
//! cannot grow the series count without bound. No label ever carries error text or a secret.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::{
    collections::HashSet,
    sync::{Mutex, PoisonError},
    time::Duration,
};

/// Bucket bounds in seconds: finer low buckets, then the Go provider's 0.1 … 30 s.
pub const LATENCY_BUCKETS: [f64; 20] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0,
    10.0, 15.0, 30.0,
];
/// Distinct object names kept as label values; more are reported as `_other`.
pub const DEFAULT_MAX_OBJECT_NAMES: usize = 500;
/// Distinct vault names kept as label values.
const MAX_VAULT_NAMES: usize = 100;
/// Label value for names past the limit.
pub const OTHER: &str = "_other";

/// Labels of `keyvault_request` (the Go provider's names).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KeyVaultRequestLabels {
    /// `secret`, `key` or `cert`.
    pub object_type: String,
    /// The object name (bounded).
    pub object_name: String,
    /// Empty on success, else a short error kind.
    pub error: String,
}

/// Labels of `grpc_request` (the Go provider's names).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcRequestLabels {
    /// `/v1alpha1.CSIDriverProvider/Mount` or `.../Version`.
    pub grpc_method: String,
    /// The gRPC code name, e.g. `OK`, `NotFound`.
    pub grpc_code: String,
    /// Empty on success, else a short error kind.
    pub grpc_message: String,
}

/// Labels of HTTP responses from Azure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    /// `keyvault`, `token` or `managed_identity`.
    pub service: String,
    /// Vault name (bounded) for Key Vault, else the service name.
    pub vault: String,
    /// `2xx`, `4xx`, `5xx`, or `error` when no response arrived.
    pub status_class: String,
}

/// Labels carrying only a vault.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VaultLabels {
    /// Vault name (bounded).
    pub vault: String,
}

/// Labels of token requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// Identity mode, e.g. `workload_identity`.
    pub mode: String,
    /// `ok` or a short error kind.
    pub outcome: String,
}

/// Labels of the identity-sharing decision of a Mount.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SharingLabels {
    /// Identity mode, e.g. `workload_identity`.
    pub mode: String,
    /// `shared`, `per_token` or `refused`.
    pub result: String,
}

/// Labels of cache lookups.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    /// `token`, `pinned`, `latest` or `read` (in-flight reads).
    pub cache: String,
    /// `hit`, `miss` or `coalesced` (waited for an identical request in flight).
    pub result: String,
}

/// Labels carrying a short reason or result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `not_found`, `disabled` or `no_match`.
    pub reason: String,
}

/// Labels of agent syncs and hooks.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Syncs: `changed`, `unchanged` or `failed`; hooks: `ok` or `failed`.
    pub result: String,
}

/// Labels of build info.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    /// Crate version.
    pub version: String,
    /// Git commit.
    pub commit: String,
}

/// The gRPC code as grpc-go spells it (`OK`, `NotFound`, ...), so Go-provider dashboards match.
fn code_name(code: tonic::Code) -> String {
    match code {
        tonic::Code::Ok => "OK".to_owned(),
        other => format!("{other:?}"),
    }
}

/// A set of names kept as label values, up to a limit.
#[derive(Debug)]
struct Interner {
    names: Mutex<HashSet<String>>,
    limit: usize,
}

impl Interner {
    fn new(limit: usize) -> Self {
        Self {
            names: Mutex::new(HashSet::new()),
            limit,
        }
    }

    fn label(&self, name: &str) -> String {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        if names.contains(name) {
            return name.to_owned();
        }
        if names.len() < self.limit {
            names.insert(name.to_owned());
            return name.to_owned();
        }
        OTHER.to_owned()
    }
}

/// All metrics of the process.
pub struct Metrics {
    registry: Registry,
    keyvault_request: Family<KeyVaultRequestLabels, Histogram>,
    grpc_request: Family<GrpcRequestLabels, Histogram>,
    responses: Family<ResponseLabels, Counter>,
    throttled: Family<VaultLabels, Counter>,
    retry_after_seconds: Family<VaultLabels, Counter<f64>>,
    token_requests: Family<TokenLabels, Counter>,
    cache_lookups: Family<CacheLabels, Counter>,
    token_reviews: Family<TokenLabels, Counter>,
    identity_sharing: Family<SharingLabels, Counter>,
    shared_reads_saved: Counter,
    throttle_wait_seconds: Family<VaultLabels, Counter<f64>>,
    mount_objects: Histogram,
    mount_bytes: Histogram,
    mounts_in_flight: Gauge,
    optional_skipped: Family<ReasonLabels, Counter>,
    agent_syncs: Family<ResultLabels, Counter>,
    agent_hooks: Family<ResultLabels, Counter>,
    agent_last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    agent_consecutive_failures: Gauge,
    object_names: Interner,
    vault_names: Interner,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

impl Metrics {
    /// Registers every metric of the provider; `max_object_names` bounds the `object_name` label.
    pub fn new(max_object_names: usize) -> Self {
        Self::build(max_object_names, false)
    }

    /// Like [`Self::new`], plus the standalone agent's sync series.
    pub fn new_agent(max_object_names: usize) -> Self {
        Self::build(max_object_names, true)
    }

    #[allow(clippy::too_many_lines)] // one registration per series, in exposition order
    fn build(max_object_names: usize, agent: bool) -> Self {
        let mut registry = Registry::default();
        let keyvault_request = Family::<KeyVaultRequestLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let grpc_request = Family::<GrpcRequestLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let responses = Family::<ResponseLabels, Counter>::default();
        let throttled = Family::<VaultLabels, Counter>::default();
        let retry_after_seconds = Family::<VaultLabels, Counter<f64>>::default();
        let token_requests = Family::<TokenLabels, Counter>::default();
        let cache_lookups = Family::<CacheLabels, Counter>::default();
        let token_reviews = Family::<TokenLabels, Counter>::default();
        let identity_sharing = Family::<SharingLabels, Counter>::default();
        let shared_reads_saved = Counter::default();
        let throttle_wait_seconds = Family::<VaultLabels, Counter<f64>>::default();
        let mount_objects =
            Histogram::new([1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]);
        let mount_bytes = Histogram::new([
            256.0,
            1024.0,
            4096.0,
            16_384.0,
            65_536.0,
            262_144.0,
            1_048_576.0,
            4_194_304.0,
        ]);
        let mounts_in_flight = Gauge::default();
        let optional_skipped = Family::<ReasonLabels, Counter>::default();
        let agent_syncs = Family::<ResultLabels, Counter>::default();
        let agent_hooks = Family::<ResultLabels, Counter>::default();
        let agent_last_success = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let agent_consecutive_failures = Gauge::default();
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: crate::VERSION.to_owned(),
                commit: crate::GIT_COMMIT.to_owned(),
            })
            .set(1);

        registry.register(
            "keyvault_request",
            "Duration of Key Vault reads per object, in seconds (error: short kind, empty on success)",
            keyvault_request.clone(),
        );
        registry.register(
            "grpc_request",
            "Duration of gRPC calls from the driver, in seconds (grpc_message: short kind, empty on success)",
            grpc_request.clone(),
        );
        registry.register(
            "akv_azure_responses",
            "HTTP responses from Azure by service, vault and status class",
            responses.clone(),
        );
        registry.register(
            "akv_keyvault_throttled",
            "Key Vault 429 responses",
            throttled.clone(),
        );
        registry.register(
            "akv_keyvault_retry_after_seconds",
            "Seconds of Retry-After that Key Vault asked for and the provider waited",
            retry_after_seconds.clone(),
        );
        registry.register(
            "akv_token_requests",
            "Token requests by identity mode and outcome",
            token_requests.clone(),
        );
        registry.register(
            "akv_cache_lookups",
            "Cache lookups by cache (token, pinned, latest, read) and result (hit, miss, coalesced)",
            cache_lookups.clone(),
        );
        registry.register(
            "akv_token_reviews",
            "Kubernetes TokenReview calls by identity mode and outcome (authenticated, unauthenticated, forbidden, unavailable)",
            token_reviews.clone(),
        );
        registry.register(
            "akv_identity_sharing",
            "Workload-identity and identity-binding Mounts by how their identity was keyed (shared: by the service account Kubernetes vouched for; per_token: by the token; refused)",
            identity_sharing.clone(),
        );
        registry.register(
            "akv_shared_identity_reads_saved",
            "Secret reads of Mounts with a shared (Kubernetes-vouched) identity answered without a Key Vault request of their own (latest window, pinned cache, or another Mount's read in flight)",
            shared_reads_saved.clone(),
        );
        registry.register(
            "akv_throttle_wait_seconds",
            "Seconds the provider waited before retrying a throttled or unavailable vault",
            throttle_wait_seconds.clone(),
        );
        registry.register(
            "akv_mount_objects",
            "Objects per successful Mount",
            mount_objects.clone(),
        );
        registry.register(
            "akv_mount_bytes",
            "Bytes of files per successful Mount",
            mount_bytes.clone(),
        );
        registry.register(
            "akv_mounts_in_flight",
            "Mount calls being served",
            mounts_in_flight.clone(),
        );
        registry.register(
            "akv_optional_objects_skipped",
            "Optional objects skipped instead of failing the Mount (reason: not_found, disabled, no_match)",
            optional_skipped.clone(),
        );
        if agent {
            registry.register(
                "akv_agent_syncs",
                "Agent sync cycles by result (changed: files rewritten, unchanged, failed: last good files kept)",
                agent_syncs.clone(),
            );
            registry.register(
                "akv_agent_hooks",
                "Agent on-change command or signal runs by result (ok, failed)",
                agent_hooks.clone(),
            );
            registry.register(
                "akv_agent_last_success_timestamp_seconds",
                "Unix time of the agent's last successful sync (0 before the first)",
                agent_last_success.clone(),
            );
            registry.register(
                "akv_agent_consecutive_failures",
                "Failed agent syncs since the last successful one",
                agent_consecutive_failures.clone(),
            );
        }
        registry.register(
            "akv_build_info",
            "Version and commit of the provider (always 1)",
            build_info,
        );

        Self {
            registry,
            keyvault_request,
            grpc_request,
            responses,
            throttled,
            retry_after_seconds,
            token_requests,
            cache_lookups,
            token_reviews,
            identity_sharing,
            shared_reads_saved,
            throttle_wait_seconds,
            mount_objects,
            mount_bytes,
            mounts_in_flight,
            optional_skipped,
            agent_syncs,
            agent_hooks,
            agent_last_success,
            agent_consecutive_failures,
            object_names: Interner::new(max_object_names),
            vault_names: Interner::new(MAX_VAULT_NAMES),
        }
    }

    /// Records one Key Vault read of an object.
    pub fn keyvault_request(
        &self,
        object_type: &str,
        object_name: &str,
        error: Option<&'static str>,
        elapsed: Duration,
    ) {
        self.keyvault_request
            .get_or_create(&KeyVaultRequestLabels {
                object_type: object_type.to_owned(),
                object_name: self.object_names.label(object_name),
                error: error.unwrap_or_default().to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one gRPC call.
    pub fn grpc_request(
        &self,
        method: &str,
        code: tonic::Code,
        kind: Option<&'static str>,
        elapsed: Duration,
    ) {
        self.grpc_request
            .get_or_create(&GrpcRequestLabels {
                grpc_method: method.to_owned(),
                grpc_code: code_name(code),
                grpc_message: kind.unwrap_or_default().to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one HTTP response (or transport failure, `status` `None`) from Azure.
    pub fn azure_response(&self, service: &str, vault: Option<&str>, status: Option<u16>) {
        let vault = vault.map_or_else(|| service.to_owned(), |v| self.vault_names.label(v));
        let status_class = match status {
            Some(s @ 100..=599) => format!("{}xx", s / 100),
            _ => "error".to_owned(),
        };
        self.responses
            .get_or_create(&ResponseLabels {
                service: service.to_owned(),
                vault,
                status_class,
            })
            .inc();
    }

    /// Records a 429 from a vault and the wait it asked for.
    pub fn throttled(&self, vault: &str, retry_after: Option<Duration>) {
        let labels = VaultLabels {
            vault: self.vault_names.label(vault),
        };
        self.throttled.get_or_create(&labels).inc();
        if let Some(wait) = retry_after {
            self.retry_after_seconds
                .get_or_create(&labels)
                .inc_by(wait.as_secs_f64());
        }
    }

    /// Records one token request.
    pub fn token_request(&self, mode: &str, outcome: &str) {
        self.token_requests
            .get_or_create(&TokenLabels {
                mode: mode.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records one TokenReview call.
    pub fn token_review(&self, mode: &str, outcome: &str) {
        self.token_reviews
            .get_or_create(&TokenLabels {
                mode: mode.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records how a Mount's identity was keyed.
    pub fn identity_sharing(&self, mode: &str, result: &str) {
        self.identity_sharing
            .get_or_create(&SharingLabels {
                mode: mode.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Records a secret read a shared identity's Mount did not make itself.
    pub fn shared_read_saved(&self) {
        self.shared_reads_saved.inc();
    }

    /// Records a cache lookup.
    pub fn cache_lookup(&self, cache: &str, result: &str) {
        self.cache_lookups
            .get_or_create(&CacheLabels {
                cache: cache.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Records a wait before retrying a vault.
    pub fn throttle_wait(&self, vault: &str, waited: Duration) {
        self.throttle_wait_seconds
            .get_or_create(&VaultLabels {
                vault: self.vault_names.label(vault),
            })
            .inc_by(waited.as_secs_f64());
    }

    /// Records the size of a successful Mount.
    pub fn mount_size(&self, objects: usize, bytes: usize) {
        #[allow(clippy::cast_precision_loss)] // counts far below 2^52
        {
            self.mount_objects.observe(objects as f64);
            self.mount_bytes.observe(bytes as f64);
        }
    }

    /// Records an optional object skipped for `reason` (`not_found`, `disabled`, `no_match`).
    pub fn optional_skipped(&self, reason: &str) {
        self.optional_skipped
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Records an agent sync: `changed`, `unchanged` or `failed` (at Unix time `now`).
    pub fn agent_sync(&self, result: &str, now: f64) {
        self.agent_syncs
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
        if result == "failed" {
            self.agent_consecutive_failures.inc();
        } else {
            self.agent_consecutive_failures.set(0);
            self.agent_last_success.set(now);
        }
    }

    /// Records an agent on-change hook run (`ok` or `failed`).
    pub fn agent_hook(&self, result: &str) {
        self.agent_hooks
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    /// Marks a Mount as started; the returned guard marks it finished when dropped.
    pub fn mount_started(&self) -> InFlight<'_> {
        self.mounts_in_flight.inc();
        InFlight(&self.mounts_in_flight)
    }

    /// The text exposition of every metric (OpenMetrics text format).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Gauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels() {
        let m = Metrics::new(2);
        m.keyvault_request("secret", "a", None, Duration::from_millis(3));
        m.keyvault_request("secret", "b", Some("not_found"), Duration::from_millis(3));
        m.keyvault_request("secret", "c", Some("not_found"), Duration::from_millis(3));
        m.grpc_request(
            "/v1alpha1.CSIDriverProvider/Mount",
            tonic::Code::NotFound,
            Some("not_found"),
            Duration::from_millis(20),
        );
        m.azure_response("keyvault", Some("kv1"), Some(429));
        m.throttled("kv1", Some(Duration::from_secs(3)));
        m.token_request("workload_identity", "ok");
        let text = m.encode();
        assert!(text.contains(r#"keyvault_request_bucket{le="0.005",object_type="secret",object_name="a",error=""} 1"#), "{text}");
        assert!(
            text.contains(r#"object_name="_other",error="not_found""#),
            "{text}"
        );
        assert!(text.contains(r#"grpc_request_count{grpc_method="/v1alpha1.CSIDriverProvider/Mount",grpc_code="NotFound",grpc_message="not_found"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"akv_azure_responses_total{service="keyvault",vault="kv1",status_class="4xx"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"akv_keyvault_retry_after_seconds_total{vault="kv1"} 3.0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"akv_token_requests_total{mode="workload_identity",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains("akv_build_info{"), "{text}");
        assert!(!text.contains("akv_agent_"), "{text}");
        m.optional_skipped("not_found");
        assert!(
            m.encode()
                .contains(r#"akv_optional_objects_skipped_total{reason="not_found"} 1"#)
        );
        let agent = Metrics::new_agent(2);
        agent.agent_sync("failed", 0.0);
        agent.agent_sync("failed", 0.0);
        assert!(agent.encode().contains("akv_agent_consecutive_failures 2"));
        agent.agent_sync("changed", 1_700_000_000.0);
        agent.agent_hook("ok");
        let text = agent.encode();
        assert!(text.contains("akv_agent_consecutive_failures 0"), "{text}");
        assert!(
            text.contains(r#"akv_agent_syncs_total{result="failed"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("akv_agent_last_success_timestamp_seconds 1700000000.0"),
            "{text}"
        );
        assert!(
            text.contains(r#"akv_agent_hooks_total{result="ok"} 1"#),
            "{text}"
        );
        {
            let _a = m.mount_started();
            assert!(m.encode().contains("akv_mounts_in_flight 1"));
        }
        assert!(m.encode().contains("akv_mounts_in_flight 0"));
    }
}

//! Command-line flags, compatible with the Go Azure provider's flag set.
//!
//! Go's `flag` package accepts `-flag`, `--flag`, `-flag=value` and, for booleans, a bare `-flag`.
//! [`normalize_args`] rewrites single-dash long flags so clap sees the `--flag` form.

use crate::cloud::CloudName;
pub use crate::compat::{parse_go_bool, parse_go_duration};
use clap::{ArgAction, Parser};
use std::{ffi::OsString, path::PathBuf, time::Duration};

fn go_bool_arg(value: &str) -> Result<bool, String> {
    parse_go_bool(value)
}

fn duration_arg(value: &str) -> Result<Duration, String> {
    parse_go_duration(value)
}

/// All flags of the provider.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "akv-csi-provider",
    about = "Azure Key Vault provider for the Kubernetes Secrets Store CSI Driver",
    after_help = "Subcommands (as the first argument): agent (the standalone agent for hosts without Kubernetes), validate FILE... (offline SecretProviderClass checks). See `akv-csi-provider agent --help`.",
    disable_version_flag = true
)]
#[allow(clippy::struct_excessive_bools)]
pub struct Config {
    /// Listen address: unix:///path/azure.sock (the driver looks for <providers dir>/azure.sock).
    #[arg(long, default_value = "unix:///tmp/azure.sock")]
    pub endpoint: String,

    /// Order certificates from PKCS#12 as leaf, intermediates, root.
    #[arg(long, default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = go_bool_arg, action = ArgAction::Set)]
    pub construct_pem_chain: bool,

    /// For certificate-backed secrets also write <alias>.crt and <alias>.key.
    #[arg(long, default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = go_bool_arg, action = ArgAction::Set)]
    pub write_cert_and_key_in_separate_files: bool,

    /// Cloud used when a SecretProviderClass names none (AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud, AzureStackCloud).
    #[arg(long, default_value = "AzurePublicCloud")]
    pub cloud_name: String,

    /// Port of the HTTP health probe.
    #[arg(long, default_value_t = 8989)]
    pub healthz_port: u16,

    /// Path of the HTTP health probe.
    #[arg(long, default_value = "/healthz")]
    pub healthz_path: String,

    /// Time the health probe allows the gRPC health check (Go duration, e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = duration_arg)]
    pub healthz_timeout: Duration,

    /// Port of the Prometheus /metrics endpoint.
    #[arg(long, default_value_t = 8898)]
    pub prometheus_port: u16,

    /// Metrics backend; only Prometheus is supported.
    #[arg(long, default_value = "Prometheus")]
    pub metrics_backend: String,

    /// Write logs as JSON, one object per line.
    #[arg(long, default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = go_bool_arg, action = ArgAction::Set)]
    pub log_format_json: bool,

    /// Log verbosity, klog style: 0 essentials, 2 per-mount summary, 5 per-object detail.
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,

    /// Print the version as JSON and exit.
    #[arg(long, default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = go_bool_arg, action = ArgAction::Set)]
    pub version: bool,

    /// Accepted for compatibility; profiling endpoints are not served.
    #[arg(long, default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = go_bool_arg, action = ArgAction::Set)]
    pub enable_pprof: bool,

    /// Accepted for compatibility with --enable-pprof; unused.
    #[arg(long, default_value_t = 6060)]
    pub pprof_port: u16,

    /// AKS identity binding (useAzureTokenProxy): URL of the token proxy the token requests go
    /// to (https, no user info, query or fragment; empty = https://kubernetes.default.svc.cluster.local).
    #[arg(long, default_value = "")]
    pub token_proxy_url: String,

    /// AKS identity binding: TLS server name of the token proxy (SNI and certificate check);
    /// empty = computed from the API server's certificate (its hcp-kubernetes.<clusterID> SAN).
    #[arg(long, default_value = "")]
    pub sni_name: String,

    /// AKS identity binding: the only CA trusted for the token proxy and the API server probe,
    /// re-read when it changes (the pod's service-account CA, which kubelet rotates).
    #[arg(long, default_value = crate::auth::token_proxy::DEFAULT_CA_FILE)]
    pub token_proxy_ca_file: PathBuf,

    /// How Azure is reached: extra CAs, fixed addresses, the IMDS endpoint, the User-Agent.
    #[command(flatten)]
    pub connection: Connection,

    /// Pod identity (NMI) endpoint; the provider calls <endpoint>/host/token/.
    #[arg(long, default_value = "http://127.0.0.1:2579")]
    pub pod_identity_endpoint: String,

    /// Distinct object names kept as values of the `object_name` metric label; more share `_other`.
    #[arg(long, default_value_t = 500)]
    pub metrics_max_object_names: u16,

    /// Objects of one Mount fetched at the same time.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_concurrent_fetches: u16,

    /// On SIGTERM, time in-flight calls get to finish before the provider exits anyway (Go duration).
    #[arg(long, default_value = "20s", value_parser = duration_arg)]
    pub drain_timeout: Duration,

    /// How long the value of a pinned objectVersion is kept in memory (Go duration; 0 disables).
    #[arg(long, default_value = "1h", value_parser = duration_arg)]
    pub pinned_cache_ttl: Duration,

    /// How long a latest-version read may be reused by other Mounts (Go duration; 0 = always read).
    #[arg(long, default_value = "0s", value_parser = duration_arg)]
    pub latest_cache_window: Duration,

    /// How long one listing of a vault serves the objectNamePrefix/objectTags entries of other Mounts of the same identity (Go duration; 0 = list on every Mount).
    #[arg(long, default_value = "5s", value_parser = duration_arg)]
    pub listing_window: Duration,

    /// Review workload-identity and identity-binding service-account tokens with the Kubernetes
    /// TokenReview API, so that the pods of one service account share one Entra token and the
    /// read caches: auto (when --kubeconfig is given or the pod has its in-cluster service
    /// account; falls back to per-token identities without RBAC) or off.
    #[arg(long, value_enum, default_value_t = TokenReview::Auto)]
    pub token_review: TokenReview,

    /// kubeconfig file for the TokenReview API (default: the pod's in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,

    /// How long a TokenReview result is reused for the same token (Go duration; 0 = review on
    /// every Mount); never beyond the token's expiry.
    #[arg(long, default_value = "1m", value_parser = duration_arg)]
    pub token_review_cache_ttl: Duration,

    /// Most MiB of secret values kept in the caches.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub cache_max_mib: u32,

    /// Retries of a throttled (429) or unavailable (5xx, timeout) Key Vault read within the deadline.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub max_retries: u32,

    /// Time allowed for one Mount when the driver sets no deadline (Go duration).
    #[arg(long, default_value = "60s", value_parser = duration_arg)]
    pub mount_timeout: Duration,

    /// Largest Mount reply in bytes: the driver's own --max-call-recv-msg-size (default 4 MiB).
    /// Larger replies are refused with a message instead of failing inside the driver; raise
    /// both together.
    #[arg(long, default_value_t = 4 * 1024 * 1024, value_parser = clap::value_parser!(u32).range(1024..))]
    pub max_call_recv_msg_size: u32,
}

/// `--token-review`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenReview {
    /// Review when a Kubernetes API configuration is found.
    Auto,
    /// Never review: every service-account token is its own identity.
    Off,
}

/// How the provider and the agent reach Azure (Key Vault and the token services): flags shared
/// by both.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Text appended to the User-Agent of every request to Azure.
    #[arg(long, default_value = "")]
    pub custom_user_agent: String,

    /// PEM file of extra CA certificates trusted for Key Vault and the identity endpoints (private or Azure Stack CAs).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,

    /// Resolve a host name to a fixed address, like curl's --resolve: HOST=IP, HOST may start with "*." (repeatable; for private endpoints and tests).
    #[arg(long = "resolve", value_name = "HOST=IP")]
    pub resolve: Vec<String>,

    /// VM managed identity (IMDS) token endpoint.
    #[arg(
        long,
        default_value = "http://169.254.169.254/metadata/identity/oauth2/token"
    )]
    pub imds_endpoint: String,

    /// Requests in flight to one vault from this process, across all Mounts.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub max_concurrent_per_vault: u16,

    /// Requests to Azure (Key Vault and token services) in flight at once, all Mounts together:
    /// bounds memory and the burst Key Vault sees when many pods mount at once (0 = no limit).
    #[arg(long, default_value_t = 64)]
    pub max_concurrent_requests: u16,
}

impl Connection {
    /// The shared HTTP transport's settings for these flags.
    pub fn transport_config(
        &self,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> crate::transport::TransportConfig {
        crate::transport::TransportConfig {
            ca_file: self.ca_file.clone(),
            resolve: self.resolve.clone(),
            user_agent_suffix: self.custom_user_agent.clone(),
            imds_endpoint: Some(self.imds_endpoint.clone()),
            metrics: Some(metrics),
            max_concurrent_requests: usize::from(self.max_concurrent_requests),
        }
    }
}

/// Rewrites Go-style single-dash long flags (`-endpoint=x`) to `--endpoint=x`.
///
/// `-v`, `-v=N` and `-vN` stay as they are (clap's short form); `-h` too.
pub fn normalize_args<I>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = OsString>,
{
    let mut out = Vec::new();
    let mut value_expected = false;
    for (index, arg) in args.into_iter().enumerate() {
        if index == 0 || value_expected {
            value_expected = false;
            out.push(arg);
            continue;
        }
        let Some(text) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if text == "--" {
            out.push(arg);
            continue;
        }
        if let Some(rest) = text.strip_prefix('-')
            && !rest.starts_with('-')
        {
            let name = rest.split('=').next().unwrap_or_default();
            if name.len() > 1
                && !(name.starts_with('v') && name[1..].chars().all(|c| c.is_ascii_digit()))
            {
                out.push(OsString::from(format!("-{text}")));
                continue;
            }
        }
        out.push(arg);
    }
    out
}

impl Config {
    /// The default cloud; an unknown name is a start-up error (exit code 1, like the Go provider).
    pub fn default_cloud(&self) -> Result<CloudName, crate::cloud::CloudError> {
        CloudName::parse(&self.cloud_name)
    }

    /// Parses flags from an iterator of arguments (the first is the program name).
    pub fn parse_args<I>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = OsString>,
    {
        Self::try_parse_from(normalize_args(args))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec![OsString::from("akv-csi-provider")];
        all.extend(args.iter().map(OsString::from));
        match Config::parse_args(all) {
            Ok(c) => c,
            Err(e) => unreachable!("parse failed: {e}"),
        }
    }

    #[test]
    fn defaults_match_the_go_provider() {
        let c = parse(&[]);
        assert_eq!(c.endpoint, "unix:///tmp/azure.sock");
        assert!(c.construct_pem_chain);
        assert!(!c.write_cert_and_key_in_separate_files);
        assert_eq!(c.default_cloud().ok(), Some(CloudName::Public));
        assert_eq!(c.healthz_port, 8989);
        assert_eq!(c.healthz_path, "/healthz");
        assert_eq!(c.healthz_timeout, Duration::from_secs(5));
        assert_eq!(c.prometheus_port, 8898);
        assert_eq!(c.verbosity, 0);
    }

    #[test]
    fn boolean_forms() {
        assert!(!parse(&["--construct-pem-chain=false"]).construct_pem_chain);
        assert!(!parse(&["-construct-pem-chain=0"]).construct_pem_chain);
        assert!(parse(&["--log-format-json"]).log_format_json);
        assert!(parse(&["-log-format-json=T"]).log_format_json);
        assert!(
            parse(&["--write-cert-and-key-in-separate-files=true"])
                .write_cert_and_key_in_separate_files
        );
    }

    #[test]
    fn single_dash_and_verbosity() {
        let c = parse(&[
            "-endpoint=unix:///provider/azure.sock",
            "-v=5",
            "-healthz-timeout=1m30s",
        ]);
        assert_eq!(c.endpoint, "unix:///provider/azure.sock");
        assert_eq!(c.verbosity, 5);
        assert_eq!(c.healthz_timeout, Duration::from_secs(90));
        assert_eq!(parse(&["-v", "3"]).verbosity, 3);
        assert_eq!(parse(&["--v=2"]).verbosity, 2);
        assert_eq!(
            parse(&["--cloud-name=azurechinacloud"])
                .default_cloud()
                .ok(),
            Some(CloudName::China)
        );
        assert!(
            parse(&["--cloud-name=AzureGermanCloud"])
                .default_cloud()
                .is_err()
        );
    }

    #[test]
    fn bad_values_are_rejected() {
        let args = ["akv-csi-provider", "--healthz-port=x"].map(OsString::from);
        assert!(Config::parse_args(args).is_err());
        let args = ["akv-csi-provider", "--construct-pem-chain=yes"].map(OsString::from);
        assert!(Config::parse_args(args).is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("2h"), Ok(Duration::from_hours(2)));
        assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_go_duration("5").is_err());
        assert!(parse_go_duration("s").is_err());
        assert!(parse_go_duration("5x").is_err());
    }
}

//! `akv-csi-provider agent`: the provider without Kubernetes, for VMs, edge and hybrid servers.
//!
//! It reads a SecretProviderClass manifest and identity flags, mounts through the same plan and
//! mount code as the gRPC service (the request is built as the driver would build it), publishes
//! the files into a folder with the driver's atomic `..data` symlink swap, and repeats on its own
//! rotation loop: every `--interval` plus jitter, rewriting only when something changed, then
//! running an optional command or signal. On failure the last good files stay and it retries with
//! backoff. `/healthz` reports the last successful sync, `/metrics` the provider's series plus
//! `akv_agent_*`.

mod health;
pub mod hook;
pub mod request;
pub mod writer;

pub use health::SyncHealth;

use crate::{
    admin::{self, AdminConfig, HealthCheck},
    cloud::CloudName,
    compat::{parse_go_bool, parse_go_duration},
    keyvault::{ReadCacheConfig, RetryPolicy},
    metrics::Metrics,
    mount::{self, MountError, Mounter},
    validate,
};
use clap::{ArgAction, Parser};
use hook::Hook;
use request::AgentIdentity;
use sha2::{Digest, Sha256};
use std::{
    ffi::OsString,
    io::Read,
    net::IpAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use writer::{AtomicWriter, FileToWrite, WriteError};

/// Most bytes of files one sync may write (there is no driver message limit here).
pub const MAX_SYNC_BYTES: usize = 64 * 1024 * 1024;
/// Largest SecretProviderClass file read.
const MAX_SPC_FILE_BYTES: u64 = 16 * 1024 * 1024;

fn duration_arg(value: &str) -> Result<Duration, String> {
    parse_go_duration(value)
}

fn bool_arg(value: &str) -> Result<bool, String> {
    parse_go_bool(value)
}

fn mode_arg(value: &str) -> Result<u32, String> {
    u32::from_str_radix(value.trim(), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("\"{value}\" is not an octal file mode such as 0644 or 0600"))
}

/// Flags of `akv-csi-provider agent`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "akv-csi-provider agent",
    about = "Write Key Vault objects of a SecretProviderClass into a folder and keep them current, without Kubernetes",
    disable_version_flag = true
)]
#[allow(clippy::struct_excessive_bools)]
pub struct AgentConfig {
    /// SecretProviderClass manifest (YAML): the first one with provider azure, or --spc-name. Re-read every sync.
    #[arg(long, value_name = "FILE")]
    pub spc: PathBuf,

    /// Which SecretProviderClass of the file (metadata.name).
    #[arg(long)]
    pub spc_name: Option<String>,

    /// Folder the files are published into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub target_dir: PathBuf,

    /// Time between syncs (Go duration).
    #[arg(long, default_value = "2m", value_parser = duration_arg)]
    pub interval: Duration,

    /// Random extra delay added to each interval, up to this (Go duration; default a tenth of --interval).
    #[arg(long, value_parser = duration_arg)]
    pub jitter: Option<Duration>,

    /// Sync once and exit: 0 when the files are current, 1 on failure.
    #[arg(long)]
    pub once: bool,

    /// Mode of files whose object sets no filePermission (octal).
    #[arg(long, default_value = "0644", value_parser = mode_arg)]
    pub file_permission: u32,

    /// Client id for workload identity (overrides the SPC's clientID) or the service principal.
    #[arg(long, env = "AZURE_CLIENT_ID")]
    pub client_id: Option<String>,

    /// Tenant id, overriding the SPC's tenantID.
    #[arg(long, env = "AZURE_TENANT_ID")]
    pub tenant_id: Option<String>,

    /// Workload identity: file holding the federated token (re-read every sync).
    #[arg(long, env = "AZURE_FEDERATED_TOKEN_FILE", value_name = "FILE")]
    pub federated_token_file: Option<PathBuf>,

    /// Service principal: file holding the client secret (re-read every sync); needs --client-id.
    #[arg(long, value_name = "FILE")]
    pub client_secret_file: Option<PathBuf>,

    /// VM managed identity (system-assigned, or --user-assigned-identity-id).
    #[arg(long)]
    pub managed_identity: bool,

    /// Client id of a user-assigned managed identity.
    #[arg(long)]
    pub user_assigned_identity_id: Option<String>,

    /// Command run with /bin/sh -c after the files changed (AKV_TARGET_DIR is set).
    #[arg(long)]
    pub on_change_command: Option<String>,

    /// Signal sent after the files changed (HUP, USR1, ...) to the process in --on-change-pid-file.
    #[arg(long, value_parser = hook::parse_signal, requires = "on_change_pid_file")]
    pub on_change_signal: Option<nix::sys::signal::Signal>,

    /// File holding the process id for --on-change-signal (read at every change).
    #[arg(long, value_name = "FILE", requires = "on_change_signal")]
    pub on_change_pid_file: Option<PathBuf>,

    /// Longest the on-change command may run before it is killed (Go duration).
    #[arg(long, default_value = "30s", value_parser = duration_arg)]
    pub on_change_timeout: Duration,

    /// First wait after a failed sync (Go duration); doubles up to --retry-max.
    #[arg(long, default_value = "5s", value_parser = duration_arg)]
    pub retry_initial: Duration,

    /// Longest wait after failed syncs (Go duration; default --interval).
    #[arg(long, value_parser = duration_arg)]
    pub retry_max: Option<Duration>,

    /// Cloud when the SPC names none.
    #[arg(long, default_value = "AzurePublicCloud")]
    pub cloud_name: String,

    /// How Azure is reached: extra CAs, fixed addresses, the IMDS endpoint, the User-Agent.
    #[command(flatten)]
    pub connection: crate::cli::Connection,

    /// Address of the health and metrics endpoints.
    #[arg(long, default_value = "127.0.0.1")]
    pub admin_address: IpAddr,

    /// Port of the health endpoint (0 together with --prometheus-port=0 turns both off).
    #[arg(long, default_value_t = 8989)]
    pub healthz_port: u16,

    /// Path of the health endpoint.
    #[arg(long, default_value = "/healthz")]
    pub healthz_path: String,

    /// Port of /metrics.
    #[arg(long, default_value_t = 8898)]
    pub prometheus_port: u16,

    /// The health endpoint fails when the last successful sync is older than this (Go duration; default 3 x --interval + --retry-max).
    #[arg(long, value_parser = duration_arg)]
    pub healthz_max_age: Option<Duration>,

    /// Time allowed for one sync's Key Vault work (Go duration).
    #[arg(long, default_value = "60s", value_parser = duration_arg)]
    pub mount_timeout: Duration,

    /// Objects fetched at the same time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_concurrent_fetches: u16,

    /// Retries of a throttled or unavailable Key Vault read within one sync.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub max_retries: u32,

    /// Order certificates from PKCS#12 as leaf, intermediates, root.
    #[arg(long, default_value = "true", num_args = 0..=1, default_missing_value = "true", value_parser = bool_arg, action = ArgAction::Set)]
    pub construct_pem_chain: bool,

    /// For certificate-backed secrets also write <file>.crt and <file>.key.
    #[arg(long, default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = bool_arg, action = ArgAction::Set)]
    pub write_cert_and_key_in_separate_files: bool,

    /// Write logs as JSON, one object per line.
    #[arg(long, default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = bool_arg, action = ArgAction::Set)]
    pub log_format_json: bool,

    /// Log verbosity: 0 essentials, 2 one line per sync, 5 per-object detail.
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    pub verbosity: u8,
}

impl AgentConfig {
    /// Parses the agent's flags (`args` without the program name and the subcommand).
    pub fn parse_args<I>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = OsString>,
    {
        Self::try_parse_from(std::iter::once(OsString::from("akv-csi-provider agent")).chain(args))
    }

    fn retry_max(&self) -> Duration {
        self.retry_max.unwrap_or(self.interval)
    }

    fn healthz_max_age(&self) -> Duration {
        self.healthz_max_age
            .unwrap_or_else(|| self.interval.saturating_mul(3) + self.retry_max())
    }
}

/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// Flags that do not fit together (identity, hooks, cloud).
    #[error("{0}")]
    Config(String),
    /// The SecretProviderClass file cannot be read or has problems (as `validate` prints them).
    #[error("SecretProviderClass file {}: {}", path.display(), problems.join("; "))]
    Spc {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problems: Vec<String>,
    },
    /// A token or client secret file cannot be used.
    #[error("{what} {} cannot be used: {reason}", path.display())]
    SecretFile {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why (never its contents).
        reason: String,
    },
    /// The mount failed (Key Vault, identity, conversion): the last good files stay.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// The files could not be published: the last good files stay.
    #[error("publishing into the target folder failed: {0}")]
    Write(#[from] WriteError),
    /// The HTTP client or the runtime could not be set up.
    #[error("{0}")]
    Setup(String),
}

impl AgentError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Spc { .. } => "spc",
            Self::SecretFile { .. } => "secret_file",
            Self::Mount(e) => e.kind(),
            Self::Write(e) => e.kind(),
            Self::Setup(_) => "setup",
        }
    }
}

/// What a successful sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Files were published (the first time, or something changed).
    Changed,
    /// Everything was as published: nothing written.
    Unchanged,
}

/// One agent: configuration, mounter, writer and the last published state.
pub struct Agent {
    config: AgentConfig,
    identity: AgentIdentity,
    default_cloud: CloudName,
    mounter: Mounter,
    writer: AtomicWriter,
    hook: Hook,
    metrics: Arc<Metrics>,
    health: Arc<SyncHealth>,
    /// Digest of what was last published or found published.
    published: Option<[u8; 32]>,
}

impl Agent {
    /// Builds the agent; checks the flags and the SecretProviderClass file once.
    pub fn new(config: AgentConfig) -> Result<Self, AgentError> {
        let default_cloud = CloudName::parse(&config.cloud_name)
            .map_err(|e| AgentError::Config(format!("--cloud-name: {e}")))?;
        let identity = AgentIdentity::from_flags(
            config.client_id.as_deref(),
            config.federated_token_file.as_deref(),
            config.client_secret_file.as_deref(),
            config.managed_identity,
            config.user_assigned_identity_id.as_deref(),
        )?;
        if !config.healthz_path.starts_with('/') {
            return Err(AgentError::Config(format!(
                "--healthz-path \"{}\" must start with '/'",
                config.healthz_path
            )));
        }
        let metrics = Arc::new(Metrics::new_agent(crate::metrics::DEFAULT_MAX_OBJECT_NAMES));
        let mounter = crate::wiring::mounter(
            &config.connection,
            crate::wiring::MountSettings {
                // Pod identity and identity binding need a pod: refused before a request is built.
                pod_identity_endpoint: None,
                token_proxy: None,
                max_concurrent_fetches: usize::from(config.max_concurrent_fetches),
                max_reply_bytes: MAX_SYNC_BYTES,
                max_retries: config.max_retries,
                // One agent, one identity: every sync reads Key Vault.
                cache: ReadCacheConfig::none(),
                construct_pem_chain: config.construct_pem_chain,
                write_cert_and_key_in_separate_files: config.write_cert_and_key_in_separate_files,
            },
            &metrics,
        )
        .map_err(|e| AgentError::Setup(e.to_string()))?;
        let hook = Hook {
            command: config.on_change_command.clone(),
            signal: config
                .on_change_signal
                .zip(config.on_change_pid_file.clone()),
            timeout: config.on_change_timeout,
            target: config.target_dir.clone(),
        };
        let agent = Self {
            writer: AtomicWriter::new(&config.target_dir),
            health: Arc::new(SyncHealth::new(config.healthz_max_age())),
            identity,
            default_cloud,
            mounter,
            hook,
            metrics,
            published: None,
            config,
        };
        // Fail fast on a broken SPC or identity setup rather than retrying forever (a token or
        // secret file that is not there yet may appear later).
        match agent.request() {
            Err(e @ (AgentError::Spc { .. } | AgentError::Config(_))) => Err(e),
            _ => Ok(agent),
        }
    }

    /// The health state, for the health endpoint.
    pub fn health(&self) -> Arc<SyncHealth> {
        self.health.clone()
    }

    /// The metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Reads the SPC file and builds the Mount request (secrets re-read from their files).
    fn request(&self) -> Result<request::PlanInputs, AgentError> {
        let spc_error = |problems: Vec<String>| AgentError::Spc {
            path: self.config.spc.clone(),
            problems,
        };
        let file =
            std::fs::File::open(&self.config.spc).map_err(|e| spc_error(vec![e.to_string()]))?;
        let mut text = String::new();
        file.take(MAX_SPC_FILE_BYTES)
            .read_to_string(&mut text)
            .map_err(|e| spc_error(vec![e.to_string()]))?;
        let spc = validate::load_spc(&text, self.config.spc_name.as_deref()).map_err(spc_error)?;
        request::build(
            &spc.parameters,
            spc.namespace.as_deref(),
            &self.identity,
            self.config.tenant_id.as_deref(),
        )
    }

    /// One sync: mount, and publish when anything differs from what is published.
    pub async fn sync(&mut self) -> Result<Outcome, AgentError> {
        let inputs = self.request()?;
        let plan = mount::plan_from_parts(
            &inputs.parameters,
            inputs.pod,
            inputs.identity,
            self.config.file_permission,
            self.default_cloud,
        )?;
        let budget = self.config.mount_timeout;
        let deadline = tokio::time::Instant::now() + budget;
        let output = tokio::time::timeout(budget, self.mounter.mount(&plan, deadline))
            .await
            .map_err(|_| MountError::Timeout(budget))??;
        let files: Vec<FileToWrite> = output
            .files
            .into_iter()
            .map(|f| FileToWrite {
                path: f.path,
                mode: f.mode,
                contents: f.contents,
            })
            .collect();
        let count = files.len();
        let digest = digest(&output.versions, &files);
        if self.published == Some(digest) {
            return Ok(Outcome::Unchanged);
        }
        let writer = self.writer.clone();
        let first = self.published.is_none();
        let wrote = tokio::task::spawn_blocking(move || {
            if first && writer.matches(&files) {
                Ok(false)
            } else {
                writer.write(&files).map(|()| true)
            }
        })
        .await
        .map_err(|e| AgentError::Setup(format!("the writer stopped: {e}")))??;
        self.published = Some(digest);
        tracing::debug!(files = count, wrote, "sync finished");
        Ok(if wrote {
            Outcome::Changed
        } else {
            Outcome::Unchanged
        })
    }

    /// Syncs once, records the result, and runs the hook after a change.
    pub async fn cycle(&mut self) -> Result<Outcome, AgentError> {
        let started = std::time::Instant::now();
        let result = self.sync().await;
        let now = unix_now();
        match &result {
            Ok(outcome) => {
                let label = match outcome {
                    Outcome::Changed => "changed",
                    Outcome::Unchanged => "unchanged",
                };
                self.metrics.agent_sync(label, now);
                self.health.succeeded();
                if *outcome == Outcome::Changed {
                    tracing::info!(
                        target_dir = %self.config.target_dir.display(),
                        duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                        "files updated"
                    );
                    if !self.hook.is_empty() {
                        match self.hook.run().await {
                            Ok(()) => self.metrics.agent_hook("ok"),
                            Err(e) => {
                                self.metrics.agent_hook("failed");
                                tracing::warn!(error = %e, "on-change action failed");
                            }
                        }
                    }
                } else {
                    tracing::debug!("files unchanged");
                }
            }
            Err(e) => {
                self.metrics.agent_sync("failed", now);
                self.health.failed(e);
                tracing::warn!(kind = e.kind(), error = %e, "sync failed; the last good files stay");
            }
        }
        result
    }

    /// Runs until `stop`: sync, wait interval + jitter (or backoff after a failure); `wake`
    /// starts a sync at once.
    pub async fn run_loop(&mut self, stop: CancellationToken, wake: Arc<Notify>) {
        let policy = RetryPolicy {
            max_retries: 0,
            initial_backoff: self.config.retry_initial,
            max_backoff: self.config.retry_max(),
        };
        let jitter = self.config.jitter.unwrap_or(self.config.interval / 10);
        let mut failures: u32 = 0;
        loop {
            let wait = if self.cycle().await.is_ok() {
                failures = 0;
                self.config.interval + jitter.mul_f64(crate::keyvault::random_fraction())
            } else {
                failures = failures.saturating_add(1);
                policy.backoff(failures - 1)
            };
            tracing::debug!(
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "next sync"
            );
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                () = wake.notified() => tracing::info!("SIGHUP: syncing now"),
            }
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A digest of everything published: versions, paths, modes and contents.
fn digest(versions: &[(String, String)], files: &[FileToWrite]) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    for (id, version) in versions {
        part(id.as_bytes());
        part(version.as_bytes());
    }
    for file in files {
        part(file.path.as_bytes());
        part(&file.mode.to_be_bytes());
        part(file.contents.expose());
    }
    h.finalize().into()
}

/// Runs the agent until SIGTERM/SIGINT (or once with `--once`). SIGHUP syncs at once.
pub async fn run(config: AgentConfig) -> Result<(), AgentError> {
    let mut agent = Agent::new(config.clone())?;
    tracing::info!(
        spc = %config.spc.display(),
        target_dir = %config.target_dir.display(),
        identity = agent.identity.describe(),
        interval = ?config.interval,
        version = crate::VERSION,
        "agent starting"
    );
    if config.once {
        return agent.cycle().await.map(|_| ());
    }
    let stop = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    tokio::spawn(crate::shutdown::watch(
        stop.clone(),
        Some(wake.clone()),
        "stopping",
    ));
    let admin = if config.healthz_port == 0 && config.prometheus_port == 0 {
        None
    } else {
        let health = agent.health();
        // Bound before the first sync: a port in use fails the start, not the shutdown.
        let bound = admin::bind(
            AdminConfig {
                bind: config.admin_address,
                healthz_port: config.healthz_port,
                healthz_path: config.healthz_path.clone(),
                prometheus_port: config.prometheus_port,
                health: HealthCheck::Report(Arc::new(move || health.report())),
            },
            agent.metrics(),
        )
        .await
        .map_err(|e| AgentError::Setup(e.to_string()))?;
        Some(tokio::spawn(bound.serve(stop.clone())))
    };
    agent.run_loop(stop.clone(), wake).await;
    stop.cancel();
    if let Some(admin) = admin {
        admin.await.map_err(|e| AgentError::Setup(e.to_string()))?;
    }
    tracing::info!("agent stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_defaults() {
        let args = [
            "--spc",
            "spc.yaml",
            "--target-dir",
            "/srv/s",
            "--interval=30s",
        ]
        .map(OsString::from);
        let c = AgentConfig::parse_args(args).ok();
        assert_eq!(
            c.as_ref().map(|c| c.interval),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            c.as_ref().map(AgentConfig::retry_max),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            c.as_ref().map(AgentConfig::healthz_max_age),
            Some(Duration::from_mins(2))
        );
        assert_eq!(c.as_ref().map(|c| c.file_permission), Some(0o644));
        let bad = [
            "--spc",
            "x",
            "--target-dir",
            "y",
            "--file-permission",
            "0999",
        ]
        .map(OsString::from);
        assert!(AgentConfig::parse_args(bad).is_err());
        let lonely_signal = [
            "--spc",
            "x",
            "--target-dir",
            "y",
            "--on-change-signal",
            "HUP",
        ]
        .map(OsString::from);
        assert!(AgentConfig::parse_args(lonely_signal).is_err());
    }

    #[test]
    fn digests_change_with_any_part() {
        let file = |contents: &str, mode| FileToWrite {
            path: "a".into(),
            mode,
            contents: crate::sensitive::SecretBytes::new(contents.as_bytes().to_vec()),
        };
        let v = vec![("secret/a".to_owned(), "v1".to_owned())];
        let base = digest(&v, &[file("x", 0o644)]);
        assert_eq!(base, digest(&v, &[file("x", 0o644)]));
        assert_ne!(base, digest(&v, &[file("y", 0o644)]));
        assert_ne!(base, digest(&v, &[file("x", 0o600)]));
        assert_ne!(
            base,
            digest(
                &[("secret/a".to_owned(), "v2".to_owned())],
                &[file("x", 0o644)]
            )
        );
    }
}

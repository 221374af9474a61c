//! The `akv-csi-provider` binary: flags in, library out.

use akv_csi_provider::{
    BUILD_DATE, GIT_COMMIT, VERSION,
    admin::{self, AdminConfig, HealthCheck},
    auth::TokenProxyConfig,
    cli::Config,
    grpc::ProviderService,
    keyvault::ReadCacheConfig,
    metrics::Metrics,
    server, telemetry,
    wiring::{self, MountSettings},
};
use anyhow::Context;
use std::{io::Write, process::ExitCode, sync::Arc};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    // Before anything holds a secret: a core dump would contain them all.
    let hardening = akv_csi_provider::hardening::disable_core_dumps();
    // Subcommands; without one, the Go provider's flat flags (the DaemonSet passes no subcommand).
    match std::env::args_os().nth(1).as_ref().and_then(|a| a.to_str()) {
        Some("agent") => return agent(),
        Some("validate") => return validate(),
        _ => {}
    }
    let config = match Config::parse_args(std::env::args_os()) {
        Ok(config) => config,
        Err(e) => e.exit(),
    };
    if config.version {
        let info = serde_json::json!({
            "version": VERSION,
            "buildDate": BUILD_DATE,
            "gitCommit": GIT_COMMIT,
        });
        let mut out = std::io::stdout().lock();
        return if writeln!(out, "{info}").is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    telemetry::init(config.verbosity, config.log_format_json);
    if !hardening.problems.is_empty() {
        tracing::warn!(problems = ?hardening.problems, "core dumps could not be fully disabled");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "provider stopped");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let default_cloud = config.default_cloud().context("--cloud-name")?;
    if !config.metrics_backend.eq_ignore_ascii_case("prometheus") {
        anyhow::bail!(
            "--metrics-backend \"{}\" is not supported: only Prometheus",
            akv_csi_provider::text::quote(&config.metrics_backend)
        );
    }
    if config.enable_pprof {
        tracing::warn!(
            "--enable-pprof is accepted for compatibility; no profiling endpoint is served"
        );
    }
    let metrics = Arc::new(Metrics::new(usize::from(config.metrics_max_object_names)));
    let mounter = wiring::mounter(
        &config.connection,
        MountSettings {
            pod_identity_endpoint: Some(config.pod_identity_endpoint.clone()),
            token_proxy: Some(TokenProxyConfig {
                url: config.token_proxy_url.clone(),
                sni_name: config.sni_name.clone(),
                ca_file: Some(config.token_proxy_ca_file.clone()),
                api_server_port: std::env::var("KUBERNETES_SERVICE_PORT")
                    .ok()
                    .and_then(|p| p.trim().parse().ok()),
                resolve: config.connection.resolve.clone(),
            }),
            max_concurrent_fetches: usize::from(config.max_concurrent_fetches),
            max_reply_bytes: usize::try_from(config.max_call_recv_msg_size).unwrap_or(usize::MAX),
            max_retries: config.max_retries,
            cache: ReadCacheConfig {
                pinned_ttl: config.pinned_cache_ttl,
                latest_window: config.latest_cache_window,
                listing_window: config.listing_window,
                max_bytes: u64::from(config.cache_max_mib) * 1024 * 1024,
            },
            construct_pem_chain: config.construct_pem_chain,
            write_cert_and_key_in_separate_files: config.write_cert_and_key_in_separate_files,
        },
        &metrics,
    )?;
    let mounter = match wiring::token_reviewer(
        config.token_review,
        config.kubeconfig.as_deref(),
        config.token_review_cache_ttl,
        &metrics,
    )
    .await?
    {
        Some(reviewer) => mounter.with_reviewer(reviewer),
        None => mounter,
    };
    let service = ProviderService::new(
        Arc::new(mounter),
        default_cloud,
        config.mount_timeout,
        metrics.clone(),
    );
    let path = server::socket_path(&config.endpoint)?;
    // The admin ports first: a port in use fails the start (exit 1) before the socket exists,
    // so the driver never sees a provider that kubelet's probe will keep restarting.
    let admin = admin::bind(admin_config(&config, &path), metrics).await?;
    let listener = server::bind(&path)?;

    let stop = CancellationToken::new();
    let admin = tokio::spawn(admin.serve(stop.clone()));
    tokio::spawn(akv_csi_provider::shutdown::watch(
        stop.clone(),
        None,
        "draining in-flight calls",
    ));
    tracing::info!(
        endpoint = %config.endpoint,
        version = VERSION,
        cloud = %default_cloud,
        healthz = %format!(":{}{}", config.healthz_port, config.healthz_path),
        metrics = %format!(":{}/metrics", config.prometheus_port),
        "provider listening"
    );
    let served = server::serve(
        listener,
        &path,
        service,
        stop.clone().cancelled_owned(),
        config.drain_timeout,
    )
    .await;
    stop.cancel();
    admin.await.context("admin endpoints task")?;
    served?;
    tracing::info!("provider stopped; socket removed");
    Ok(())
}

fn admin_config(config: &Config, socket: &std::path::Path) -> AdminConfig {
    AdminConfig {
        bind: std::net::Ipv4Addr::UNSPECIFIED.into(),
        healthz_port: config.healthz_port,
        healthz_path: config.healthz_path.clone(),
        prometheus_port: config.prometheus_port,
        health: HealthCheck::Socket {
            path: socket.to_path_buf(),
            timeout: config.healthz_timeout,
        },
    }
}

/// `akv-csi-provider agent ...`: the standalone agent (exit 1 on a start-up error, or with
/// `--once` when the sync failed).
fn agent() -> ExitCode {
    let config = match akv_csi_provider::agent::AgentConfig::parse_args(std::env::args_os().skip(2))
    {
        Ok(config) => config,
        Err(e) => e.exit(),
    };
    telemetry::init(config.verbosity, config.log_format_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(akv_csi_provider::agent::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(kind = e.kind(), error = %e, "agent stopped");
            ExitCode::FAILURE
        }
    }
}

/// `akv-csi-provider validate FILE...`: problems on stdout, notes on stderr.
fn validate() -> ExitCode {
    let code = akv_csi_provider::validate::run(
        std::env::args_os().skip(2),
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    match code {
        Ok(code) => ExitCode::from(code),
        Err(_) => ExitCode::FAILURE,
    }
}

//! The `akv-csi-provider` binary: flags in, library out.

use akv_csi_provider::{
    VERSION,
    auth::CredentialFactory,
    cli::Config,
    grpc::ProviderService,
    keyvault::SdkConnector,
    mount::{Mounter, MounterConfig},
    server, telemetry,
    transport::{HttpTransport, TransportConfig},
};
use anyhow::Context;
use std::{io::Write, process::ExitCode, sync::Arc};

/// The driver's default `--max-call-recv-msg-size`.
const DRIVER_DEFAULT_MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;

fn main() -> ExitCode {
    let config = match Config::parse_args(std::env::args_os()) {
        Ok(config) => config,
        Err(e) => e.exit(),
    };
    if config.version {
        let info = serde_json::json!({
            "version": VERSION,
            "buildDate": env!("AKV_BUILD_DATE"),
            "gitCommit": env!("AKV_GIT_COMMIT"),
        });
        let mut out = std::io::stdout().lock();
        return if writeln!(out, "{info}").is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
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
            config.metrics_backend
        );
    }
    if config.enable_pprof {
        tracing::warn!(
            "--enable-pprof is accepted for compatibility; no profiling endpoint is served"
        );
    }
    let transport = HttpTransport::new(&TransportConfig {
        ca_file: config.ca_file.clone(),
        resolve: config.resolve.clone(),
        user_agent_suffix: config.custom_user_agent.clone(),
        imds_endpoint: Some(config.imds_endpoint.clone()),
    })?;
    let pod_identity_endpoint =
        url::Url::parse(&config.pod_identity_endpoint).with_context(|| {
            format!(
                "--pod-identity-endpoint \"{}\"",
                config.pod_identity_endpoint
            )
        })?;
    let credentials = CredentialFactory::new(transport.clone(), pod_identity_endpoint);
    let mounter = Mounter::new(
        credentials,
        Arc::new(SdkConnector::new(transport)),
        MounterConfig {
            max_concurrent_fetches: usize::from(config.max_concurrent_fetches),
            max_reply_bytes: DRIVER_DEFAULT_MAX_REPLY_BYTES,
            construct_pem_chain: config.construct_pem_chain,
            write_cert_and_key_in_separate_files: config.write_cert_and_key_in_separate_files,
        },
    );
    let service = ProviderService::new(Arc::new(mounter), default_cloud, config.mount_timeout);
    let path = server::socket_path(&config.endpoint)?;
    let listener = server::bind(&path)?;
    tracing::info!(endpoint = %config.endpoint, version = VERSION, cloud = %default_cloud, "provider listening");
    server::serve(
        listener,
        &path,
        service,
        shutdown_signal(),
        config.drain_timeout,
    )
    .await?;
    tracing::info!("provider stopped; socket removed");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => tracing::info!("SIGTERM: draining in-flight calls"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: draining in-flight calls"),
    }
}

//! The HTTP endpoints for operators: `/metrics` (Prometheus) and the health probe.
//!
//! For the provider, the probe dials its own unix socket and calls `grpc.health.v1.Health/Check`,
//! so it reports what the driver would see: 200 `ok` when the socket is bound and serving, 503 with
//! the reason otherwise. It never calls Key Vault: a Key Vault outage must not restart every
//! provider. The standalone agent reports its last successful sync instead ([`HealthCheck::Report`]).

use crate::metrics::Metrics;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use hyper_util::rt::TokioIo;
use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Errors of the admin endpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// A port could not be bound: in use (another provider on the node with `hostNetwork`, e.g.
    /// the Go provider on the same ports) or not allowed.
    #[error(
        "cannot listen on {addr} for {what}: {reason}; choose a free port with {flag} (the Helm chart's linux.healthzPort / metricsAddr)"
    )]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// `/metrics` or the health probe.
        what: &'static str,
        /// The flag that sets the port.
        flag: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// `--healthz-path` does not start with '/'.
    #[error("--healthz-path \"{0}\" must start with '/'")]
    Path(String),
}

impl AdminError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Bind { .. } => "bind",
            Self::Path(_) => "path",
        }
    }
}

/// A health report: healthy or not, and the body to answer.
pub type HealthReport = Arc<dyn Fn() -> (bool, String) + Send + Sync>;

/// What the health probe checks.
#[derive(Clone)]
pub enum HealthCheck {
    /// The provider: gRPC `Health/Check` over its own socket, within `timeout`.
    Socket {
        /// The provider's socket.
        path: PathBuf,
        /// Time allowed for the check.
        timeout: Duration,
    },
    /// A report computed by the caller (the agent's last successful sync).
    Report(HealthReport),
}

impl fmt::Debug for HealthCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Socket { path, timeout } => f
                .debug_struct("Socket")
                .field("path", path)
                .field("timeout", timeout)
                .finish(),
            Self::Report(_) => f.write_str("Report"),
        }
    }
}

/// Settings of the admin endpoints.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Address both endpoints listen on (the provider: all interfaces).
    pub bind: IpAddr,
    /// Port of the health probe.
    pub healthz_port: u16,
    /// Path of the health probe.
    pub healthz_path: String,
    /// Port of `/metrics`.
    pub prometheus_port: u16,
    /// What the probe checks.
    pub health: HealthCheck,
}

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: HealthCheck,
}

/// Checks the provider's own gRPC health service over its socket.
pub async fn check_socket(socket: &Path, timeout: Duration) -> Result<(), String> {
    let socket = socket.to_path_buf();
    let attempt = async move {
        let channel = Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to the provider socket: {}",
                    crate::keyvault::describe(&e)
                )
            })?;
        let status = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map_err(|e| format!("health check failed: {}", e.message()))?
            .into_inner()
            .status;
        if status == ServingStatus::Serving as i32 {
            Ok(())
        } else {
            Err(format!("the provider reports status {status}, not SERVING"))
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match &state.health {
        HealthCheck::Socket { path, timeout } => match check_socket(path, *timeout).await {
            Ok(()) => (StatusCode::OK, "ok".to_owned()),
            Err(reason) => {
                tracing::warn!(reason = %reason, "health probe failed");
                (StatusCode::SERVICE_UNAVAILABLE, reason)
            }
        },
        HealthCheck::Report(report) => match report() {
            (true, body) => (StatusCode::OK, body),
            (false, body) => (StatusCode::SERVICE_UNAVAILABLE, body),
        },
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn listen(
    addr: SocketAddr,
    what: &'static str,
    flag: &'static str,
) -> Result<tokio::net::TcpListener, AdminError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| AdminError::Bind {
            addr,
            what,
            flag,
            reason: e.to_string(),
        })
}

/// The admin ports, bound and not yet served: binding happens before the provider announces
/// itself (socket, "provider listening"), so a port in use fails the start instead of showing
/// up at SIGTERM while kubelet's liveness probe restarts the pod.
pub struct Bound {
    servers: Vec<(tokio::net::TcpListener, Router)>,
}

impl fmt::Debug for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<_> = self
            .servers
            .iter()
            .filter_map(|(l, _)| l.local_addr().ok())
            .collect();
        f.debug_struct("Bound").field("addrs", &addrs).finish()
    }
}

/// Binds the admin ports (health probe and `/metrics`; one listener when the ports are equal).
pub async fn bind(config: AdminConfig, metrics: Arc<Metrics>) -> Result<Bound, AdminError> {
    if !config.healthz_path.starts_with('/') {
        return Err(AdminError::Path(config.healthz_path));
    }
    let state = AppState {
        metrics,
        health: config.health,
    };
    let health = Router::new().route(&config.healthz_path, get(healthz));
    let metrics_router = Router::new().route("/metrics", get(metrics_text));
    let any = config.bind;
    let mut servers = Vec::new();
    if config.healthz_port == config.prometheus_port {
        let listener = listen(
            SocketAddr::from((any, config.healthz_port)),
            "/metrics and the health probe",
            "--healthz-port and --prometheus-port",
        )
        .await?;
        servers.push((listener, health.merge(metrics_router).with_state(state)));
    } else {
        let listener = listen(
            SocketAddr::from((any, config.healthz_port)),
            "the health probe",
            "--healthz-port",
        )
        .await?;
        servers.push((listener, health.with_state(state.clone())));
        let listener = listen(
            SocketAddr::from((any, config.prometheus_port)),
            "/metrics",
            "--prometheus-port",
        )
        .await?;
        servers.push((listener, metrics_router.with_state(state)));
    }
    Ok(Bound { servers })
}

impl Bound {
    /// Serves the bound ports until `stop` is cancelled.
    pub async fn serve(self, stop: CancellationToken) {
        let tasks: Vec<_> = self
            .servers
            .into_iter()
            .map(|(listener, router)| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, router)
                        .with_graceful_shutdown(stop.cancelled_owned())
                        .await
                    {
                        tracing::warn!(error = %e, "admin endpoint stopped");
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}

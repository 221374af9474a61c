//! The `v1alpha1.CSIDriverProvider` service and the mapping of errors to gRPC status codes.

pub mod codec;
mod status;

pub use status::{MAX_MESSAGE_BYTES, to_status};

use crate::{
    RUNTIME_NAME, VERSION,
    cloud::CloudName,
    metrics::Metrics,
    mount::{self, MountError, MountOutput, Mounter},
    v1alpha1::{
        File, MountRequest, MountResponse, ObjectVersion, VersionRequest, VersionResponse,
        csi_driver_provider_server::CsiDriverProvider,
    },
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// Numbers the Mounts of this process for their log span (`request_id`).
static NEXT_REQUEST_ID: AtomicU64 = AtomicU64::new(1);

/// The API version this provider speaks.
pub const API_VERSION: &str = "v1alpha1";

/// Serves Mount and Version.
pub struct ProviderService {
    mounter: Arc<Mounter>,
    default_cloud: CloudName,
    mount_timeout: Duration,
    metrics: Arc<Metrics>,
    /// Cancelled shortly before the drain time ends: unfinished Mounts answer `Unavailable`.
    abort: CancellationToken,
    /// The drain time, for the message.
    drain_timeout: Duration,
}

/// Method paths as the driver calls them (the `grpc_method` label).
const MOUNT_METHOD: &str = "/v1alpha1.CSIDriverProvider/Mount";
const VERSION_METHOD: &str = "/v1alpha1.CSIDriverProvider/Version";

impl ProviderService {
    /// A service over a mounter; `mount_timeout` bounds a Mount when the driver sets no deadline.
    pub fn new(
        mounter: Arc<Mounter>,
        default_cloud: CloudName,
        mount_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            mounter,
            default_cloud,
            mount_timeout,
            metrics,
            abort: CancellationToken::new(),
            drain_timeout: Duration::ZERO,
        }
    }

    /// The token that ends unfinished Mounts with `Unavailable` (the server cancels it shortly
    /// before `drain_timeout` runs out), so no call dies with a broken connection.
    pub fn abort_on(&mut self, drain_timeout: Duration) -> CancellationToken {
        self.drain_timeout = drain_timeout;
        self.abort.clone()
    }

    async fn run(
        &self,
        request: &MountRequest,
        budget: Duration,
    ) -> Result<(mount::MountPlan, MountOutput), (Option<mount::MountPlan>, MountError)> {
        let plan = mount::plan(request, self.default_cloud).map_err(|e| (None, e))?;
        let span = tracing::Span::current();
        span.record(
            "pod",
            tracing::field::display(format_args!("{}/{}", plan.pod.namespace, plan.pod.name)),
        );
        span.record("vault", plan.spc.keyvault_name.as_str());
        span.record("identity", plan.identity.mode());
        let deadline = tokio::time::Instant::now() + budget;
        match tokio::time::timeout(budget, self.mounter.mount(&plan, deadline)).await {
            Ok(Ok(output)) => Ok((plan, output)),
            Ok(Err(e)) => Err((Some(plan), e)),
            Err(_) => Err((Some(plan), MountError::Timeout(budget))),
        }
    }
}

/// The `grpc-timeout` of a call (`<digits><unit>`, unit one of H M S m u n).
fn grpc_timeout(metadata: &tonic::metadata::MetadataMap) -> Option<Duration> {
    let text = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn response(output: MountOutput) -> MountResponse {
    MountResponse {
        object_version: output
            .versions
            .into_iter()
            .map(|(id, version)| ObjectVersion { id, version })
            .collect(),
        error: None,
        files: output
            .files
            .into_iter()
            .map(|f| File {
                path: f.path,
                // Modes are validated to at most 0o777.
                mode: i32::try_from(f.mode).unwrap_or(0o644),
                // Moved, not copied: the codec zeroizes the reply once it is encoded.
                contents: f.contents.into_vec(),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl CsiDriverProvider for ProviderService {
    async fn version(
        &self,
        _request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        self.metrics
            .grpc_request(VERSION_METHOD, tonic::Code::Ok, None, Duration::ZERO);
        Ok(Response::new(VersionResponse {
            version: API_VERSION.to_owned(),
            runtime_name: RUNTIME_NAME.to_owned(),
            runtime_version: VERSION.to_owned(),
        }))
    }

    async fn mount(
        &self,
        request: Request<MountRequest>,
    ) -> Result<Response<MountResponse>, Status> {
        let started = Instant::now();
        let _in_flight = self.metrics.mount_started();
        // The driver's deadline (grpc-timeout), a little earlier so the answer still reaches it.
        let budget = grpc_timeout(request.metadata()).map_or(self.mount_timeout, |t| {
            t.saturating_sub(Duration::from_millis(250))
                .min(self.mount_timeout)
        });
        let mut request = request.into_inner();
        // Every line of this Mount carries these fields (pod, vault and identity once planned).
        let span = tracing::info_span!(
            "mount",
            request_id = NEXT_REQUEST_ID.fetch_add(1, Ordering::Relaxed),
            pod = tracing::field::Empty,
            vault = tracing::field::Empty,
            identity = tracing::field::Empty,
        );
        let result = async {
            tokio::select! {
                result = self.run(&request, budget) => result,
                () = self.abort.cancelled() => Err((None, MountError::ShuttingDown(self.drain_timeout))),
            }
        }
        .instrument(span.clone())
        .await;
        let _entered = span.enter();
        // The request carries service-account tokens and the node-publish secret.
        codec::Scrub::scrub(&mut request);
        let (code, kind) = match &result {
            Ok(_) => (tonic::Code::Ok, None),
            Err((_, e)) => (to_status(e).code(), Some(e.kind())),
        };
        self.metrics
            .grpc_request(MOUNT_METHOD, code, kind, started.elapsed());
        match result {
            Ok((plan, output)) => {
                tracing::debug!(
                    pod = %format!("{}/{}", plan.pod.namespace, plan.pod.name),
                    vault = %plan.spc.keyvault_name,
                    identity = plan.identity.mode(),
                    objects = plan.spc.objects.len(),
                    files = output.files.len(),
                    bytes = output.total_bytes(),
                    duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    outcome = "ok",
                    "mount"
                );
                Ok(Response::new(response(output)))
            }
            Err((plan, error)) => {
                let status = to_status(&error);
                tracing::warn!(
                    pod = %plan.as_ref().map(|p| format!("{}/{}", p.pod.namespace, p.pod.name)).unwrap_or_default(),
                    vault = %plan.as_ref().map(|p| p.spc.keyvault_name.as_str()).unwrap_or_default(),
                    objects = plan.as_ref().map_or(0, |p| p.spc.objects.len()),
                    duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    outcome = error.kind(),
                    code = ?status.code(),
                    // The capped message the driver gets, not the whole error.
                    error = %status.message(),
                    "mount failed"
                );
                // The whole cause chain (HTTP, TLS, socket) at -v=5, for whoever debugs it.
                tracing::trace!(
                    causes = %crate::text::chain(&error, 2000),
                    "mount failure causes"
                );
                Err(status)
            }
        }
    }
}

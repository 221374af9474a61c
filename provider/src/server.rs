//! The gRPC server on the unix socket: bind safely, serve, drain on shutdown, remove the socket.

use crate::{grpc::ProviderService, v1alpha1::csi_driver_provider_server::CsiDriverProviderServer};
use std::{
    future::Future,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    time::Duration,
};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

/// Largest Mount request accepted, in bytes (tonic's default, stated): larger requests are refused
/// with `OutOfRange` before they are decoded. The driver's requests are far smaller.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// `--endpoint` is not a `unix://` address.
    #[error("--endpoint \"{0}\" is not supported: use unix:///path/to/azure.sock")]
    Endpoint(String),
    /// The socket could not be created.
    #[error("cannot listen on {path}: {reason}")]
    Bind {
        /// Socket path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The server failed while running.
    #[error("gRPC server failed: {0}")]
    Serve(String),
}

impl ServerError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Endpoint(_) => "endpoint",
            Self::Bind { .. } => "bind",
            Self::Serve(_) => "serve",
        }
    }
}

/// The socket path of a `unix://` endpoint (`unix:///tmp/azure.sock` -> `/tmp/azure.sock`).
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ServerError> {
    let path = endpoint
        .strip_prefix("unix://")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ServerError::Endpoint(endpoint.to_owned()))?;
    Ok(PathBuf::from(path))
}

/// Binds `path` as a socket only its owner may use (0600).
///
/// The socket is bound in a private folder (0700) and renamed into place, so there is no moment
/// where it exists with wider permissions. A stale socket at `path` is removed; any other kind of
/// file there is an error (never delete what is not ours).
pub fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    let fail = |reason: String| ServerError::Bind {
        path: path.display().to_string(),
        reason,
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)
        .map_err(|e| fail(format!("creating {}: {e}", parent.display())))?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            std::fs::remove_file(path)
                .map_err(|e| fail(format!("removing the stale socket: {e}")))?;
        }
        Ok(_) => return Err(fail("a file that is not a socket is in the way".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e.to_string())),
    }
    let name = path
        .file_name()
        .ok_or_else(|| fail("the path has no file name".into()))?;
    let staging = parent.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir(&staging)
        .map_err(|e| fail(format!("creating {}: {e}", staging.display())))?;
    let result = (|| {
        std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail(e.to_string()))?;
        let staged = staging.join(name);
        let listener = UnixListener::bind(&staged).map_err(|e| fail(e.to_string()))?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail(e.to_string()))?;
        std::fs::rename(&staged, path)
            .map_err(|e| fail(format!("moving the socket into place: {e}")))?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

/// Serves the provider and health services on `listener` until `shutdown` resolves, then lets
/// in-flight calls finish (for at most `drain_timeout`) and removes the socket file at `path`.
pub async fn serve(
    listener: UnixListener,
    path: &Path,
    mut service: ProviderService,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain_timeout: Duration,
) -> Result<(), ServerError> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CsiDriverProviderServer<ProviderService>>()
        .await;
    let stop = CancellationToken::new();
    // Mounts still running shortly before the drain time ends answer Unavailable themselves,
    // so the server can close every connection cleanly in time.
    let abort = service.abort_on(drain_timeout);
    let grace = (drain_timeout / 4).min(Duration::from_secs(1));
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            stop.cancel();
            tokio::time::sleep(drain_timeout.saturating_sub(grace)).await;
            abort.cancel();
        })
    };
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(
            CsiDriverProviderServer::new(service).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener),
            stop.clone().cancelled_owned(),
        );
    // Idle connections are closed gracefully; a client that never lets go cannot hold the
    // process past the drain timeout.
    let drained = async {
        stop.cancelled().await;
        tokio::time::sleep(drain_timeout).await;
    };
    let result = tokio::select! {
        result = server => result.map_err(|e| ServerError::Serve(e.to_string())),
        () = drained => {
            tracing::warn!(timeout = ?drain_timeout, "in-flight calls did not finish in time; stopping anyway");
            Ok(())
        }
    };
    watcher.abort();
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not remove the socket");
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///tmp/azure.sock").ok(),
            Some(PathBuf::from("/tmp/azure.sock"))
        );
        assert!(socket_path("tcp://127.0.0.1:80").is_err());
        assert!(socket_path("unix://").is_err());
        assert!(socket_path("/tmp/azure.sock").is_err());
    }

    #[tokio::test]
    async fn binds_owner_only_and_replaces_stale_sockets() {
        let dir = tempfile::tempdir().ok();
        let Some(dir) = dir else { unreachable!() };
        let path = dir.path().join("nested/azure.sock");
        let first = bind(&path);
        assert!(first.is_ok());
        drop(first);
        // The file left behind is a stale socket: a second bind replaces it.
        let second = bind(&path);
        assert!(second.is_ok(), "{:?}", second.err());
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o777)
            .ok();
        assert_eq!(mode, Some(0o600));
        // Nothing but the socket is left in the folder.
        let entries = std::fs::read_dir(dir.path().join("nested"))
            .map(Iterator::count)
            .ok();
        assert_eq!(entries, Some(1));
        drop(second);
        std::fs::remove_file(&path).ok();
        std::fs::write(&path, b"not a socket").ok();
        assert!(bind(&path).is_err());
    }
}

//! Stopping on SIGTERM or SIGINT: the one signal watcher of the provider and the agent.
//!
//! The watcher cancels a [`CancellationToken`]; everything that must stop (the gRPC server with
//! its drain, the admin endpoints, the agent's loop) waits on that token. The agent also asks for
//! SIGHUP, which wakes its loop for an immediate sync instead of stopping anything.

use std::sync::Arc;
use tokio::{
    signal::unix::{Signal, SignalKind, signal},
    sync::Notify,
};
use tokio_util::sync::CancellationToken;

/// Waits for SIGTERM or SIGINT, logs `"<signal>: <action>"`, then cancels `stop`. Each SIGHUP
/// notifies `hangup` when given (otherwise SIGHUP keeps its default meaning). Returns early,
/// without cancelling, when `stop` is cancelled by someone else.
pub async fn watch(stop: CancellationToken, hangup: Option<Arc<Notify>>, action: &'static str) {
    let mut term = listen(SignalKind::terminate(), "SIGTERM");
    let mut hup = hangup
        .as_ref()
        .and_then(|_| listen(SignalKind::hangup(), "SIGHUP"));
    loop {
        tokio::select! {
            Some(()) = next(&mut term) => {
                tracing::info!("SIGTERM: {action}");
                break;
            }
            Ok(()) = tokio::signal::ctrl_c() => {
                tracing::info!("SIGINT: {action}");
                break;
            }
            Some(()) = next(&mut hup) => {
                if let Some(wake) = &hangup {
                    wake.notify_one();
                }
            }
            () = stop.cancelled() => return,
        }
    }
    stop.cancel();
}

fn listen(kind: SignalKind, name: &str) -> Option<Signal> {
    signal(kind)
        .inspect_err(|e| tracing::warn!(error = %e, "cannot watch {name}"))
        .ok()
}

/// The next delivery of `signal`; never, when it could not be watched.
async fn next(signal: &mut Option<Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

//! Logging: text by default, JSON with `--log-format-json`; `-v` levels map like klog.
//!
//! `-v` 0-1: essentials (start, stop, failed mounts); 2-4: one summary line per Mount;
//! 5 and up: per-object detail. `RUST_LOG` overrides the filter when set.

use tracing_subscriber::{EnvFilter, fmt};

/// The tracing filter for a klog verbosity.
pub fn filter_for(verbosity: u8) -> String {
    let ours = match verbosity {
        0 | 1 => "info",
        2..=4 => "debug",
        _ => "trace",
    };
    format!("warn,akv_csi_provider={ours}")
}

/// Installs the global subscriber writing to stderr. Call once, at start.
pub fn init(verbosity: u8, json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter_for(verbosity)));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second init (tests) keeps the first subscriber.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn klog_levels() {
        assert_eq!(super::filter_for(0), "warn,akv_csi_provider=info");
        assert_eq!(super::filter_for(2), "warn,akv_csi_provider=debug");
        assert_eq!(super::filter_for(5), "warn,akv_csi_provider=trace");
    }
}

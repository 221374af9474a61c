//! The agent's health: when it last synced successfully, and what failed since.

use super::AgentError;
use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

#[derive(Debug, Default)]
struct State {
    last_success: Option<OffsetDateTime>,
    last_attempt: Option<OffsetDateTime>,
    last_error: Option<(String, &'static str)>,
    consecutive_failures: u32,
}

/// Shared between the sync loop and the health endpoint.
#[derive(Debug)]
pub struct SyncHealth {
    state: Mutex<State>,
    max_age: Duration,
}

impl SyncHealth {
    /// Healthy while the last successful sync is at most `max_age` old.
    pub fn new(max_age: Duration) -> Self {
        Self {
            state: Mutex::new(State::default()),
            max_age,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a successful sync (changed or not).
    pub fn succeeded(&self) {
        let now = OffsetDateTime::now_utc();
        let mut state = self.lock();
        state.last_success = Some(now);
        state.last_attempt = Some(now);
        state.last_error = None;
        state.consecutive_failures = 0;
    }

    /// Records a failed sync.
    pub fn failed(&self, error: &AgentError) {
        let mut state = self.lock();
        state.last_attempt = Some(OffsetDateTime::now_utc());
        state.last_error = Some((error.to_string(), error.kind()));
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
    }

    /// `(healthy, JSON body)`: `status` is `ok` (last success at most `max_age` ago), `stale`
    /// (older) or `starting` (no success yet). A failure after a recent success stays healthy:
    /// the last good files are in place.
    pub fn report(&self) -> (bool, String) {
        let state = self.lock();
        let now = OffsetDateTime::now_utc();
        let age = state
            .last_success
            .map(|t| Duration::try_from(now - t).unwrap_or_default());
        let (healthy, status) = match age {
            None => (false, "starting"),
            Some(age) if age <= self.max_age => (true, "ok"),
            Some(_) => (false, "stale"),
        };
        let time = |t: Option<OffsetDateTime>| t.and_then(|t| t.format(&Rfc3339).ok());
        let body = serde_json::json!({
            "status": status,
            "lastSuccess": time(state.last_success),
            "lastAttempt": time(state.last_attempt),
            "secondsSinceLastSuccess": age.map(|a| a.as_secs()),
            "consecutiveFailures": state.consecutive_failures,
            "lastError": state.last_error.as_ref().map(|(message, _)| message),
            "lastErrorKind": state.last_error.as_ref().map(|(_, kind)| kind),
        });
        (healthy, body.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_ok_and_stale() {
        let h = SyncHealth::new(Duration::from_mins(1));
        let (healthy, body) = h.report();
        assert!(!healthy);
        assert!(body.contains(r#""status":"starting""#), "{body}");
        h.failed(&AgentError::Config("boom".into()));
        assert!(h.report().1.contains(r#""consecutiveFailures":1"#));
        h.succeeded();
        let (healthy, body) = h.report();
        assert!(healthy, "{body}");
        assert!(body.contains(r#""status":"ok""#), "{body}");
        assert!(body.contains(r#""lastError":null"#), "{body}");
        // A failure after a recent success keeps the endpoint healthy: the files are still good.
        h.failed(&AgentError::Config("outage".into()));
        let (healthy, body) = h.report();
        assert!(healthy, "{body}");
        assert!(body.contains(r#""lastError":"outage""#), "{body}");
        let stale = SyncHealth::new(Duration::ZERO);
        stale.succeeded();
        std::thread::sleep(Duration::from_millis(5));
        assert!(stale.report().1.contains(r#""status":"stale""#));
    }
}

//! What the agent does after it published changed files: run a command and/or signal a process.

use nix::sys::signal::Signal;
use std::{path::PathBuf, process::Stdio, str::FromStr, time::Duration};

/// The on-change actions.
#[derive(Debug, Clone, Default)]
pub struct Hook {
    /// Run with `/bin/sh -c`, with `AKV_TARGET_DIR` set to the target folder.
    pub command: Option<String>,
    /// Send this signal to the process whose id is in the file.
    pub signal: Option<(Signal, PathBuf)>,
    /// Longest a command may run before it is killed.
    pub timeout: Duration,
    /// The target folder (for `AKV_TARGET_DIR`).
    pub target: PathBuf,
}

/// Parses a signal name: `HUP`, `SIGHUP`, `usr1`, ...
pub fn parse_signal(name: &str) -> Result<Signal, String> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&full).map_err(|_| {
        format!(
            "\"{}\" is not a signal name (examples: HUP, USR1, TERM)",
            crate::text::quote(name)
        )
    })
}

impl Hook {
    /// Whether there is anything to do.
    pub fn is_empty(&self) -> bool {
        self.command.is_none() && self.signal.is_none()
    }

    /// Runs the actions; the first failure is returned (both are attempted).
    pub async fn run(&self) -> Result<(), String> {
        let mut result = Ok(());
        if let Some(command) = &self.command {
            result = self.run_command(command).await;
        }
        if let Some((signal, pid_file)) = &self.signal {
            let sent = send_signal(*signal, pid_file);
            if result.is_ok() {
                result = sent;
            }
        }
        result
    }

    async fn run_command(&self, command: &str) -> Result<(), String> {
        let mut child = tokio::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .env("AKV_TARGET_DIR", &self.target)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("the on-change command could not start: {e}"))?;
        match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("the on-change command failed ({status})")),
            Ok(Err(e)) => Err(format!("the on-change command could not be awaited: {e}")),
            Err(_) => {
                let _ = child.kill().await;
                Err(format!(
                    "the on-change command did not finish within {:?} and was killed",
                    self.timeout
                ))
            }
        }
    }
}

fn send_signal(signal: Signal, pid_file: &std::path::Path) -> Result<(), String> {
    let text = std::fs::read_to_string(pid_file)
        .map_err(|e| format!("the pid file {} cannot be read: {e}", pid_file.display()))?;
    let pid: i32 = text.trim().parse().ok().filter(|p| *p > 1).ok_or_else(|| {
        format!(
            "the pid file {} does not hold a process id",
            pid_file.display()
        )
    })?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .map_err(|e| format!("sending {signal} to process {pid} failed: {e}"))?;
    tracing::debug!(signal = %signal, pid, "on-change signal sent");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(parse_signal("hup"), Ok(Signal::SIGHUP));
        assert_eq!(parse_signal("SIGUSR1"), Ok(Signal::SIGUSR1));
        assert!(parse_signal("NOPE").is_err());
    }

    #[tokio::test]
    async fn commands_report_failures_and_timeouts() {
        let dir = tempfile::tempdir().ok();
        let dir = dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default();
        let marker = dir.join("ran");
        let ok = Hook {
            command: Some(format!("echo \"$AKV_TARGET_DIR\" > {}", marker.display())),
            timeout: Duration::from_secs(10),
            target: PathBuf::from("/srv/target"),
            ..Hook::default()
        };
        assert_eq!(ok.run().await, Ok(()));
        assert_eq!(
            std::fs::read_to_string(&marker).ok().as_deref(),
            Some("/srv/target\n")
        );
        let failing = Hook {
            command: Some("exit 3".into()),
            timeout: Duration::from_secs(10),
            ..Hook::default()
        };
        assert!(failing.run().await.is_err_and(|e| e.contains("failed")));
        let slow = Hook {
            command: Some("sleep 30".into()),
            timeout: Duration::from_millis(200),
            ..Hook::default()
        };
        assert!(slow.run().await.is_err_and(|e| e.contains("killed")));
        let bad_pid = Hook {
            signal: Some((Signal::SIGHUP, dir.join("missing.pid"))),
            ..Hook::default()
        };
        assert!(bad_pid.run().await.is_err());
    }
}

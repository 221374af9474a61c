//! The provider process: flags, socket, Version, health, graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use akv_csi_provider::v1alpha1::VersionRequest;
use std::{os::unix::fs::PermissionsExt, process::Command};
use support::provider::Provider;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_akv-csi-provider"))
}

#[test]
fn version_flag_prints_json_and_exits_zero() {
    let out = binary().arg("--version").output().expect("run");
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        json["buildDate"].as_str().is_some_and(|d| d.len() == 20),
        "{json}"
    );
    let out = binary().arg("-version").output().expect("run");
    assert!(out.status.success(), "Go-style single dash works");
}

#[test]
fn help_documents_every_flag() {
    let out = binary().arg("--help").output().expect("run");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--endpoint",
        "--construct-pem-chain",
        "--write-cert-and-key-in-separate-files",
        "--cloud-name",
        "--healthz-port",
        "--healthz-path",
        "--healthz-timeout",
        "--prometheus-port",
        "--metrics-backend",
        "--log-format-json",
        "--v",
        "--custom-user-agent",
        "--version",
        "--enable-pprof",
        "--pprof-port",
        "--token-proxy-url",
        "--sni-name",
        "--ca-file",
        "--resolve",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn invalid_cloud_name_exits_one() {
    let out = binary()
        .args([
            "--cloud-name=AzureGermanCloud",
            "--endpoint=unix:///nonexistent/x.sock",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AzureGermanCloud"));
}

/// Runs the binary to its exit; a process still running after a minute (serving instead of
/// failing) is killed and reported.
fn run_to_exit(cmd: &mut Command) -> std::process::Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    for _ in 0..600 {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.kill().expect("kill");
    let out = child.wait_with_output().expect("output");
    panic!(
        "still running after a minute instead of failing at start; stderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Another process on the health or metrics port (e.g. the Go provider with `hostNetwork`):
/// exit 1 at start with one log line naming the port and the flag, and no socket was created
/// (the driver never saw a provider that kubelet's liveness probe would keep restarting).
#[test]
fn an_occupied_admin_port_fails_the_start() {
    let occupied = std::net::TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = occupied.local_addr().expect("addr").port();
    for (flag, other) in [
        ("--healthz-port", "--prometheus-port"),
        ("--prometheus-port", "--healthz-port"),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("azure.sock");
        let out = run_to_exit(binary().args([
            format!("--endpoint=unix://{}", socket.display()),
            format!("{flag}={port}"),
            format!("{other}={}", free_port()),
        ]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "{flag}: one error line: {stderr}");
        assert!(
            errors[0].contains(&format!(":{port}")) && errors[0].contains(flag),
            "{flag}: the line names the port and the flag: {}",
            errors[0]
        );
        assert!(
            !stderr.contains("provider listening"),
            "{flag}: never announced: {stderr}"
        );
        assert!(!socket.exists(), "{flag}: no socket was created");
    }
    drop(occupied);
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = binary().arg("--no-such-flag").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_version_and_health_then_drains_on_sigterm() {
    let mut provider = Provider::start(&[
        "-v=5".to_owned(),
        "--construct-pem-chain=false".to_owned(),
        "--log-format-json".to_owned(),
    ]);
    let mode = std::fs::metadata(&provider.socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "socket must be owner-only");

    let mut client = provider.client().await;
    let version = client
        .version(VersionRequest {
            version: "v1alpha1".into(),
        })
        .await
        .expect("Version")
        .into_inner();
    assert_eq!(version.version, "v1alpha1");
    assert_eq!(version.runtime_name, "akv-csi-provider");
    assert_eq!(version.runtime_version, env!("CARGO_PKG_VERSION"));

    let mut health = HealthClient::new(provider.channel().await);
    for service in ["", "v1alpha1.CSIDriverProvider"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("Health/Check")
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    let status = provider.terminate();
    assert_eq!(status.code(), Some(0), "logs:\n{}", provider.logs());
    assert!(!provider.socket.exists(), "socket removed on shutdown");
    // JSON logs: every line is one JSON object.
    let logs = provider.logs();
    assert!(!logs.is_empty());
    for line in logs.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            value.get("level").is_some()
                && value.get("time").is_some()
                && value.get("message").is_some(),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaces_a_stale_socket_and_exits_zero_on_sigint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("azure.sock");
    // A socket file left behind by a crashed process.
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("stale socket"));
    assert!(socket.exists());

    let mut provider = Provider::start_at(&[], socket.clone(), dir);
    let mut client = provider.client().await;
    assert!(
        client
            .version(VersionRequest {
                version: "v1alpha1".into()
            })
            .await
            .is_ok()
    );
    provider.signal(nix::sys::signal::Signal::SIGINT);
    let status = provider.wait_exit();
    assert_eq!(status.code(), Some(0));
    assert!(!socket.exists());
}

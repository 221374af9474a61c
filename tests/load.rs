//! Load and soak against the real binary. Ignored by default: `scripts/load.sh` and
//! `scripts/soak.sh` run them (release build) and print the figures recorded in RELIABILITY.md;
//! `.ci/reliability.sh` runs reduced sizes. Sizes: `LOAD_MOUNTS` (default 1000),
//! `SOAK_ROTATIONS` (default 10000); `LOAD_PROVIDER_ARGS` adds provider flags. Behaviour is
//! asserted (no errors, complete replies, clean shutdown, bounded memory growth); times are only
//! printed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::too_many_lines,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss // figures, not arithmetic
)]

mod support;

use akv_csi_provider::v1alpha1::MountResponse;
use base64::Engine;
use futures::future::join_all;
use std::time::{Duration, Instant};
use support::{
    env::{Env, TENANT, sp_secrets},
    fake_azure::{Fault, SYSTEM_ASSIGNED_CLIENT_ID, Service},
    provider::{NO_SECRET_REF, mount_request, rss_kib, tokens_attribute},
};
use tonic::Code;

const WI_ID: &str = "66666666-7777-8888-9999-000000000000";
const SA_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.load-test-service-account-token.sig";

fn size_from_env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `q`-quantile of sorted durations, in milliseconds.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// The secrets of the load scenario: plain values of 32 B to 16 KiB, base64-stored binaries and
/// a secret with five versions for `objectVersionHistory`.
fn seed_secrets(env: &Env) {
    for i in 0..20 {
        let size = [32, 256, 1024, 4096, 16_384][i % 5];
        let value: String = std::iter::repeat(format!("v{i}-"))
            .flat_map(|s| s.chars().collect::<Vec<_>>())
            .take(size)
            .collect();
        env.secret(&format!("plain-{i}"), &value);
    }
    for i in 0..5 {
        let binary: Vec<u8> = (0..2048u32).map(|b| (b * 7 + i) as u8).collect();
        env.secret(
            &format!("blob-{i}"),
            &base64::engine::general_purpose::STANDARD.encode(binary),
        );
    }
    for v in 0..5 {
        env.secret("rotating", &format!("rotating-value-version-{v}"));
    }
}

/// Mount `i` of the mix: 1 to 5 objects, three identities, aliases, encodings, history.
fn mixed_mount(env: &Env, i: usize) -> (Vec<(&'static str, String)>, String, usize) {
    let count = 1 + i % 5;
    // Aliases differ by position, and `rotating` (history) occurs at most once in 5 positions.
    let objects: Vec<String> = (0..count)
        .map(|k| match (i + k) % 7 {
            0 => format!(
                "objectName: blob-{}\nobjectType: secret\nobjectEncoding: base64\nobjectAlias: bin/blob-{k}",
                (i + k) % 5
            ),
            1 => "objectName: rotating\nobjectType: secret\nobjectVersionHistory: 3\nobjectAlias: history".to_owned(),
            _ => format!(
                "objectName: plain-{}\nobjectType: secret\nobjectAlias: conf/p{k}\nfilePermission: \"0640\"",
                (i * 3 + k) % 20
            ),
        })
        .collect();
    let files = objects
        .iter()
        .map(|o| {
            if o.contains("objectVersionHistory") {
                3
            } else {
                1
            }
        })
        .sum();
    let refs: Vec<&str> = objects.iter().map(String::as_str).collect();
    let pod = [("csi.storage.k8s.io/pod.name", format!("web-{i}"))];
    let (params, secrets) = match i % 3 {
        0 => (env.params(&refs, &pod), sp_secrets()),
        1 => {
            let mut extra = pod.to_vec();
            extra.push(("useVMManagedIdentity", "true".to_owned()));
            (env.params(&refs, &extra), NO_SECRET_REF.to_owned())
        }
        _ => {
            let mut extra = pod.to_vec();
            extra.push(("clientID", WI_ID.to_owned()));
            extra.push((
                "csi.storage.k8s.io/serviceAccount.tokens",
                tokens_attribute("api://AzureADTokenExchange", SA_TOKEN),
            ));
            (env.params(&refs, &extra), NO_SECRET_REF.to_owned())
        }
    };
    (params, secrets, files)
}

/// Starts the scenario; `LOAD_PROVIDER_ARGS` (space-separated) adds provider flags.
async fn load_env(extra: &[&str]) -> Env {
    let more = std::env::var("LOAD_PROVIDER_ARGS").unwrap_or_default();
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(more.split_whitespace());
    let env = Env::start(&args).await;
    seed_secrets(&env);
    env.fake.add_managed_identity(None);
    env.fake
        .grant("kv1", SYSTEM_ASSIGNED_CLIENT_ID, &["get", "list"]);
    env.fake.add_federated_identity(TENANT, WI_ID, SA_TOKEN);
    env.fake.grant("kv1", WI_ID, &["get", "list"]);
    env
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: scripts/load.sh"]
async fn concurrent_mounts() {
    let n = size_from_env("LOAD_MOUNTS", 1000);
    let env = load_env(&["-v=0"]).await;
    let pid = env.provider.pid();
    let client = env.provider.client().await;
    // Warm-up: one mount per identity.
    for i in 0..3 {
        let (params, secrets, _) = mixed_mount(&env, i);
        client
            .clone()
            .mount(mount_request(&params, &secrets))
            .await
            .expect("warm-up");
    }
    let rss_before = rss_kib(pid, "VmRSS");
    env.fake.clear_requests();
    let started = Instant::now();
    let calls = (0..n).map(|i| {
        let (params, secrets, files) = mixed_mount(&env, i);
        let mut client = client.clone();
        async move {
            let t = Instant::now();
            let result = client.mount(mount_request(&params, &secrets)).await;
            (t.elapsed(), result.map(tonic::Response::into_inner), files)
        }
    });
    let results = join_all(calls).await;
    let wall = started.elapsed();
    let rss_peak = rss_kib(pid, "VmHWM");
    let rss_after = rss_kib(pid, "VmRSS");
    let mut latencies: Vec<Duration> = results.iter().map(|(d, _, _)| *d).collect();
    latencies.sort();
    let errors: Vec<String> = results
        .iter()
        .filter_map(|(_, r, _)| {
            r.as_ref()
                .err()
                .map(|s| format!("{:?}: {}", s.code(), s.message()))
        })
        .collect();
    let mut objects = 0;
    let mut files = 0;
    for (_, result, expected) in &results {
        if let Ok(reply) = result {
            assert_eq!(reply.files.len(), *expected, "complete reply");
            files += reply.files.len();
            objects += reply.object_version.len();
        }
    }
    let vault = env.fake.count(|r| matches!(r.service, Service::Vault(_)));
    let tokens = env
        .fake
        .count(|r| matches!(r.service, Service::Authority | Service::Imds));
    println!(
        "LOAD mounts={n} concurrent={n} identities=3 files={files} object_versions={objects} errors={} wall_s={:.2} mounts_per_s={:.0} p50_ms={:.1} p90_ms={:.1} p99_ms={:.1} max_ms={:.1} rss_before_mib={:.1} rss_peak_mib={:.1} rss_after_mib={:.1} vault_requests={vault} token_requests={tokens}",
        errors.len(),
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        quantile(&latencies, 0.50),
        quantile(&latencies, 0.90),
        quantile(&latencies, 0.99),
        quantile(&latencies, 1.0),
        mib(rss_before),
        mib(rss_peak),
        mib(rss_after),
    );
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(env.serving().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "load test: scripts/load.sh"]
async fn graceful_shutdown_under_load() {
    let n = size_from_env("LOAD_MOUNTS", 1000);
    // Every Key Vault answer takes 300 ms, so calls are in flight when SIGTERM arrives, and with
    // 1000 Mounts not all of them can finish within the 5 s drain: those must fail cleanly
    // (Unavailable, which the driver retries), none may hang or break.
    let env = load_env(&["-v=0", "--drain-timeout=5s"]).await;
    env.fake
        .inject("kv1", "*", Fault::slow(Duration::from_millis(300)));
    let client = env.provider.client().await;
    let calls = (0..n).map(|i| {
        let (params, secrets, files) = mixed_mount(&env, i);
        let mut client = client.clone();
        tokio::spawn(async move {
            let result = client.mount(mount_request(&params, &secrets)).await;
            (
                result.map(tonic::Response::into_inner),
                files,
                Instant::now(),
            )
        })
    });
    let handles: Vec<_> = calls.collect();
    // SIGTERM only once Mounts are in flight: otherwise the test proves nothing about draining.
    let wait_until = Instant::now() + Duration::from_secs(30);
    let mut in_flight_at_signal = env.provider.mounts_in_flight().await;
    while in_flight_at_signal == 0 && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        in_flight_at_signal = env.provider.mounts_in_flight().await;
    }
    assert!(
        in_flight_at_signal > 0,
        "no Mount was in flight when SIGTERM was to be sent"
    );
    let signalled = Instant::now();
    env.provider.signal(nix::sys::signal::Signal::SIGTERM);
    let status = tokio::task::spawn_blocking({
        let started = Instant::now();
        move || {
            let mut env = env;
            let status = env.provider.wait_exit();
            (env, status, started.elapsed())
        }
    });
    let results: Vec<(Result<MountResponse, tonic::Status>, usize, Instant)> = join_all(handles)
        .await
        .into_iter()
        .map(|r| r.expect("join"))
        .collect();
    let (env, status, exit_after) = status.await.expect("wait");
    let (mut ok, mut unavailable, mut other) = (0, 0, Vec::new());
    let mut kinds = std::collections::BTreeSet::new();
    let mut last_ok = signalled;
    for (result, files, at) in &results {
        match result {
            Ok(reply) => {
                assert_eq!(
                    reply.files.len(),
                    *files,
                    "a reply during shutdown is complete"
                );
                ok += 1;
                last_ok = last_ok.max(*at);
            }
            Err(s) if s.code() == Code::Unavailable => {
                unavailable += 1;
                kinds.insert(s.message().chars().take(70).collect::<String>());
            }
            Err(s) => other.push(format!("{:?}: {}", s.code(), s.message())),
        }
    }
    println!(
        "SHUTDOWN mounts={n} in_flight_at_sigterm={in_flight_at_signal} completed_ok={ok} failed_unavailable={unavailable} failed_other={} last_reply_after_sigterm_ms={} exit_after_ms={} exit_code={:?} socket_removed={}",
        other.len(),
        last_ok.duration_since(signalled).as_millis(),
        exit_after.as_millis(),
        status.code(),
        !env.provider.socket.exists(),
    );
    for kind in &kinds {
        println!("SHUTDOWN unavailable message: {kind}…");
    }
    assert!(
        other.is_empty(),
        "calls failed with other codes: {:?}",
        &other[..other.len().min(5)]
    );
    assert_eq!(ok + unavailable, n);
    assert!(ok > 0, "in-flight calls finish");
    assert_eq!(status.code(), Some(0));
    assert!(!env.provider.socket.exists(), "the socket is removed");
    assert!(
        !env.provider.logs().contains("did not finish in time"),
        "unfinished calls were answered before --drain-timeout ran out"
    );
}

/// `akv_mounts_in_flight` from `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test: scripts/soak.sh"]
async fn sequential_rotations() {
    let rotations = size_from_env("SOAK_ROTATIONS", 10_000);
    // RSS may grow by at most this much between the end of the warm-up and the end.
    let bound_kib = 8 * 1024;
    let warm_up = 200.min(rotations / 5);
    let env = load_env(&["-v=2"]).await;
    let pid = env.provider.pid();
    let mut client = env.provider.client().await;
    let objects = [
        "objectName: plain-3\nobjectType: secret",
        "objectName: blob-1\nobjectType: secret\nobjectEncoding: base64\nobjectAlias: bin/blob",
        "objectName: rotating\nobjectType: secret\nobjectVersionHistory: 2\nobjectAlias: history",
    ];
    let params = env.params(&objects, &[]);
    let mut rss_start = 0;
    let mut latencies = Vec::with_capacity(rotations);
    let mut current = env
        .fake
        .versions("kv1", "rotating")
        .last()
        .cloned()
        .unwrap();
    let mut rotated = 0;
    let started = Instant::now();
    for i in 0..rotations {
        if i == warm_up {
            rss_start = rss_kib(pid, "VmRSS");
        }
        if i > 0 && i % 500 == 0 {
            // A rotation in Key Vault: the next mount must return it.
            current = env.secret("rotating", &format!("rotating-value-version-at-{i}"));
            rotated += 1;
            env.fake.clear_requests();
        }
        let t = Instant::now();
        let reply = client
            .mount(mount_request(&params, &sp_secrets()))
            .await
            .unwrap_or_else(|e| panic!("rotation {i}: {e:?}"))
            .into_inner();
        latencies.push(t.elapsed());
        assert_eq!(reply.files.len(), 4);
        let newest = reply
            .object_version
            .iter()
            .find(|v| v.id == "secret/rotating/0")
            .map(|v| v.version.clone());
        assert_eq!(newest.as_deref(), Some(current.as_str()), "rotation {i}");
    }
    let wall = started.elapsed();
    let rss_end = rss_kib(pid, "VmRSS");
    let rss_peak = rss_kib(pid, "VmHWM");
    latencies.sort();
    println!(
        "SOAK rotations={rotations} secret_rotations={rotated} wall_s={:.1} p50_ms={:.2} p99_ms={:.2} max_ms={:.1} rss_start_mib={:.1} rss_end_mib={:.1} rss_growth_mib={:.1} rss_peak_mib={:.1} bound_mib={}",
        wall.as_secs_f64(),
        quantile(&latencies, 0.50),
        quantile(&latencies, 0.99),
        quantile(&latencies, 1.0),
        mib(rss_start),
        mib(rss_end),
        (rss_end as f64 - rss_start as f64) / 1024.0,
        mib(rss_peak),
        bound_kib / 1024,
    );
    assert!(
        rss_end <= rss_start + bound_kib,
        "RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
}

//! Mount benchmark: the real binary over its socket against the fake Key Vault with injected latency.
//!
//! Run: `cargo bench -p akv-csi-provider --bench mount` (prints figures; asserts nothing).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::{
    fake_azure::{FakeAzure, Fault, SecretOpts, Service},
    provider::{Provider, mount_request, objects_yaml},
};

const TENANT: &str = "bench-tenant";
const SP_ID: &str = "bench-sp";
const SP_SECRET: &str = "bench-secret";

fn params(cloud: &str, n: usize) -> Vec<(&'static str, String)> {
    let objects: Vec<String> = (0..n)
        .map(|i| format!("objectName: s{i}\nobjectType: secret"))
        .collect();
    let refs: Vec<&str> = objects.iter().map(String::as_str).collect();
    vec![
        ("keyvaultName", "kv1".to_owned()),
        ("tenantID", TENANT.to_owned()),
        ("cloudName", "AzureStackCloud".to_owned()),
        ("cloudEnvFileName", cloud.to_owned()),
        ("objects", objects_yaml(&refs)),
    ]
}

fn sp() -> String {
    serde_json::json!({"clientid": SP_ID, "clientsecret": SP_SECRET}).to_string()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A `Name:   <n> kB` field of a `/proc/<pid>/` file, in KiB.
fn proc_field(pid: u32, file: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// (VmRSS, VmHWM) in KiB.
fn rss(pid: u32) -> (u64, u64) {
    (
        proc_field(pid, "status", "VmRSS:"),
        proc_field(pid, "status", "VmHWM:"),
    )
}

/// User + system CPU seconds of a process.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of /proc/pid/stat (11 and 12 after the name).
    (ticks(11) + ticks(12)) as f64 / 100.0
}

#[allow(clippy::too_many_lines)] // one scenario after the other, printed in order
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let fake = FakeAzure::start().await;
    fake.add_vault("kv1", TENANT);
    fake.add_service_principal(TENANT, SP_ID, SP_SECRET);
    fake.grant("kv1", SP_ID, &["get", "list"]);
    for i in 0..50 {
        fake.set_secret(
            "kv1",
            &format!("s{i}"),
            &format!("value-{i}-{}", "x".repeat(64)),
            SecretOpts::default(),
        );
    }
    let cloud = fake.write_cloud_env_file().display().to_string();
    let provider = Provider::start(&[
        format!("--ca-file={}", fake.ca_file().display()),
        "--resolve=*.vault.test=127.0.0.1".to_owned(),
        "--resolve=login.test=127.0.0.1".to_owned(),
    ]);
    let pid = provider.pid();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (idle_rss, _) = rss(pid);
    println!(
        "akv-csi-provider benchmark (binary: {}; AKV_PROVIDER_BIN picks another)",
        support::provider::binary().display()
    );
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "idle RSS: {:.1} MiB ({:.1} MiB anonymous, {:.1} MiB of files: the binary and libraries; {} threads)",
        mib(idle_rss),
        mib(proc_field(pid, "status", "RssAnon:")),
        mib(proc_field(pid, "status", "RssFile:")),
        proc_field(pid, "status", "Threads:")
    );

    let mut client = provider.client().await;
    // Warm up: token, client, challenge.
    client
        .mount(mount_request(&params(&cloud, 1), &sp()))
        .await
        .expect("warm-up");

    // `AKV_BENCH_ONLY=<objects>x<mounts>`: only that 0 ms row, for a profiler around the binary
    // (e.g. an AKV_PROVIDER_BIN script running it under `valgrind --tool=callgrind`).
    if let Some((n, mounts)) = std::env::var("AKV_BENCH_ONLY")
        .ok()
        .and_then(|v| v.split_once('x').map(|(a, b)| (a.parse(), b.parse())))
        .and_then(|(a, b)| Some((a.ok()?, b.ok()?)))
    {
        let req = mount_request(&params(&cloud, n), &sp());
        let cpu_before = cpu_seconds(pid);
        for _ in 0..mounts {
            client.mount(req.clone()).await.expect("mount");
        }
        let cpu = (cpu_seconds(pid) - cpu_before) / f64::from(mounts);
        println!(
            "{mounts} Mounts of {n} objects at 0 ms: {:.2} ms CPU each",
            cpu * 1000.0
        );
        return;
    }
    // CPU is read in clock ticks (10 ms): the 0 ms rows make enough Mounts for a figure to 0.02 ms.
    let mounts_at = |latency: u64| if latency == 0 { 500 } else { 50 };
    println!(
        "\nMount latency (sequential, after a warm-up: {} Mounts a row at 0 ms, {} at 20 ms):",
        mounts_at(0),
        mounts_at(20)
    );
    println!(
        "{:>8} {:>10} {:>9} {:>9} {:>9}",
        "objects", "kv latency", "p50 ms", "p99 ms", "cpu ms"
    );
    let mut p50_one_at_20 = Duration::ZERO;
    for latency in [0u64, 20] {
        fake.clear_faults();
        if latency > 0 {
            fake.inject("kv1", "*", Fault::slow(Duration::from_millis(latency)));
        }
        for n in [1usize, 5, 20, 50] {
            let req = mount_request(&params(&cloud, n), &sp());
            let cpu_before = cpu_seconds(pid);
            let mut samples = Vec::new();
            let mounts = mounts_at(latency);
            for _ in 0..mounts {
                let started = Instant::now();
                let resp = client.mount(req.clone()).await.expect("mount").into_inner();
                samples.push(started.elapsed());
                assert_eq!(resp.files.len(), n);
            }
            let cpu = (cpu_seconds(pid) - cpu_before) / f64::from(mounts);
            samples.sort();
            let p50 = percentile(&samples, 0.5);
            if latency == 20 && n == 1 {
                p50_one_at_20 = p50;
            }
            println!(
                "{n:>8} {:>8}ms {:>9.2} {:>9.2} {:>9.2}",
                latency,
                ms(p50),
                ms(percentile(&samples, 0.99)),
                cpu * 1000.0
            );
            if latency == 20 && n == 20 {
                println!(
                    "         20 objects at 20 ms take {:.2}x a single-object Mount ({:.2} ms)",
                    ms(p50) / ms(p50_one_at_20),
                    ms(p50_one_at_20)
                );
            }
        }
    }
    fake.clear_faults();

    // Requests per 100 rotations of a 20-object pod.
    fake.clear_requests();
    let req = mount_request(&params(&cloud, 20), &sp());
    for _ in 0..100 {
        client.mount(req.clone()).await.expect("rotation");
    }
    let kv = fake.count(|r| matches!(r.service, Service::Vault(_)));
    let tokens = fake.count(|r| r.service == Service::Authority);
    println!(
        "\n100 rotations of a 20-object Mount (latest versions): {kv} Key Vault requests, {tokens} token requests"
    );
    let objects: Vec<String> = (0..20)
        .map(|i| {
            let version = fake
                .versions("kv1", &format!("s{i}"))
                .pop()
                .expect("version");
            format!("objectName: s{i}\nobjectType: secret\nobjectVersion: {version}")
        })
        .collect();
    let refs: Vec<&str> = objects.iter().map(String::as_str).collect();
    let mut pinned = params(&cloud, 1);
    pinned.retain(|(k, _)| *k != "objects");
    pinned.push(("objects", objects_yaml(&refs)));
    fake.clear_requests();
    let req = mount_request(&pinned, &sp());
    for _ in 0..100 {
        client.mount(req.clone()).await.expect("pinned rotation");
    }
    let kv = fake.count(|r| matches!(r.service, Service::Vault(_)));
    let tokens = fake.count(|r| r.service == Service::Authority);
    println!(
        "100 rotations of a 20-object Mount (pinned versions): {kv} Key Vault requests, {tokens} token requests"
    );

    // 200 concurrent Mounts.
    let started = Instant::now();
    let calls: Vec<_> = (0..200)
        .map(|_| {
            let req = mount_request(&params(&cloud, 5), &sp());
            let channel = provider.channel();
            async move {
                let mut c = akv_csi_provider::v1alpha1::csi_driver_provider_client::CsiDriverProviderClient::new(channel.await);
                let t = Instant::now();
                c.mount(req).await.map(|_| t.elapsed())
            }
        })
        .collect();
    let results = futures::future::join_all(calls).await;
    let errors = results.iter().filter(|r| r.is_err()).count();
    let mut lat: Vec<Duration> = results.into_iter().filter_map(Result::ok).collect();
    lat.sort();
    let (_, peak) = rss(pid);
    println!(
        "200 concurrent 5-object Mounts: {errors} errors, wall {:.0} ms, p50 {:.1} ms, p99 {:.1} ms, peak RSS {:.1} MiB",
        ms(started.elapsed()),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        peak as f64 / 1024.0
    );
    println!(
        "RSS after them: {:.1} MiB anonymous, {:.1} MiB of files",
        mib(proc_field(pid, "status", "RssAnon:")),
        mib(proc_field(pid, "status", "RssFile:"))
    );
}

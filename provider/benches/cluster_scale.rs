//! Key Vault economy at cluster scale (issue 17): one node's provider, 500 pods in 5 service
//! accounts (5 workload identities), 2 latest-version secrets each, every pod mounting once per
//! rotation interval, spread over the interval, 20 ms Key Vault latency. The real binary against
//! the fake Azure and the fake TokenReview API (`tests/support`).
//!
//! Time is scaled: the interval is `AKV_BENCH_INTERVAL_SECS` (default 12 s) standing for the
//! driver's 2-minute `--rotation-poll-interval`; the latest-value window and the review cache TTL
//! are half of it (60 s and 1 min at full scale). Counts per interval do not depend on the scale.
//! Two configurations run one after the other: ours (TokenReview on) and the Go provider's read
//! pattern (no review, no window: every Mount reads every object with its own token).
//!
//! Run: `cargo bench -p akv-csi-provider --bench cluster_scale` (prints figures; asserts nothing).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

#[path = "../../tests/support/mod.rs"]
mod support;

use base64::Engine;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use support::{
    fake_azure::{FakeAzure, Fault, SecretOpts, Service},
    kube_api::FakeKubeApi,
    provider::{Provider, mount_request, objects_yaml, tokens_attribute},
};

const TENANT: &str = "bench-tenant";
const WI: &str = "api://AzureADTokenExchange";
const PODS: usize = 500;
const ACCOUNTS: usize = 5;

struct Pod {
    name: String,
    uid: String,
    account: usize,
    token: String,
}

fn pods() -> Vec<Pod> {
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    (0..PODS)
        .map(|i| {
            let account = i % ACCOUNTS;
            let claims = serde_json::json!({
                "aud": [WI], "exp": 4_102_444_800_i64, "iss": "https://kubernetes.default.svc.cluster.local",
                "sub": format!("system:serviceaccount:bench:sa-{account}"), "n": i,
            });
            Pod {
                name: format!("pod-{i}"),
                uid: format!("uid-{i}"),
                account,
                token: format!(
                    "{}.{}.sig{i}",
                    b64(br#"{"alg":"RS256"}"#),
                    b64(claims.to_string().as_bytes())
                ),
            }
        })
        .collect()
}

fn client_id(account: usize) -> String {
    format!("00000000-0000-4000-8000-{account:012}")
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    support::provider::rss_kib(pid, field) as f64 / 1024.0
}

struct Figures {
    reads: usize,
    tokens: (usize, usize),
    reviews: usize,
    p50: f64,
    p99: f64,
    rss: f64,
    peak: f64,
    errors: usize,
}

/// Two intervals of Mounts; the figures are the second's (steady state).
#[allow(clippy::too_many_lines)] // the setup, then the two intervals, in order
async fn run(review: bool, interval: Duration) -> Figures {
    let fake = FakeAzure::start().await;
    fake.add_vault("kv1", TENANT);
    let kube = FakeKubeApi::start().await;
    let pods = Arc::new(pods());
    for pod in pods.iter() {
        let id = client_id(pod.account);
        fake.add_federated_identity(TENANT, &id, &pod.token);
        kube.add_token(
            &pod.token,
            "bench",
            &format!("sa-{}", pod.account),
            Some(&pod.name),
            &pod.uid,
            WI,
        );
    }
    for account in 0..ACCOUNTS {
        fake.grant("kv1", &client_id(account), &["get"]);
    }
    for name in ["db-password", "api-key"] {
        fake.set_secret(
            "kv1",
            name,
            &format!("{name}-{}", "x".repeat(32)),
            SecretOpts::default(),
        );
    }
    fake.inject("kv1", "*", Fault::slow(Duration::from_millis(20)));
    let cloud = fake.write_cloud_env_file().display().to_string();
    let half = format!("{}ms", interval.as_millis() / 2);
    let mut args = vec![
        format!("--ca-file={}", fake.ca_file().display()),
        "--resolve=*.vault.test=127.0.0.1".to_owned(),
        "--resolve=login.test=127.0.0.1".to_owned(),
    ];
    if review {
        args.push(format!("--kubeconfig={}", kube.kubeconfig().display()));
        args.push(format!("--latest-cache-window={half}"));
        args.push(format!("--token-review-cache-ttl={half}"));
    } else {
        args.push("--token-review=off".to_owned());
        args.push("--latest-cache-window=0s".to_owned());
    }
    let provider = Provider::start(&args);
    let objects = objects_yaml(&[
        "objectName: db-password\nobjectType: secret",
        "objectName: api-key\nobjectType: secret",
    ]);
    let mut figures = None;
    let mut first_tokens = 0;
    for round in 0..2 {
        fake.clear_requests();
        let reviews_before = kube.reviews();
        let started = Instant::now();
        let gap = interval / PODS as u32;
        // One connection, as the driver keeps one client per provider.
        let channel = provider.channel().await;
        let mut calls = Vec::with_capacity(PODS);
        for (i, pod) in pods.iter().enumerate() {
            let params = vec![
                ("keyvaultName", "kv1".to_owned()),
                ("tenantID", TENANT.to_owned()),
                ("cloudName", "AzureStackCloud".to_owned()),
                ("cloudEnvFileName", cloud.clone()),
                ("objects", objects.clone()),
                ("clientID", client_id(pod.account)),
                (
                    "csi.storage.k8s.io/serviceAccount.tokens",
                    tokens_attribute(WI, &pod.token),
                ),
                ("csi.storage.k8s.io/pod.name", pod.name.clone()),
                ("csi.storage.k8s.io/pod.namespace", "bench".to_owned()),
                ("csi.storage.k8s.io/pod.uid", pod.uid.clone()),
                (
                    "csi.storage.k8s.io/serviceAccount.name",
                    format!("sa-{}", pod.account),
                ),
            ];
            let req = mount_request(&params, "null");
            let at = started + gap * i as u32;
            let channel = channel.clone();
            calls.push(tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                let mut c = akv_csi_provider::v1alpha1::csi_driver_provider_client::CsiDriverProviderClient::new(channel);
                let t = Instant::now();
                c.mount(req).await.map(|_| t.elapsed())
            }));
        }
        let mut latencies = Vec::new();
        let mut errors = 0;
        for call in calls {
            match call.await.expect("task") {
                Ok(d) => latencies.push(d),
                Err(_) => errors += 1,
            }
        }
        if let Some(rest) = (started + interval).checked_duration_since(Instant::now()) {
            tokio::time::sleep(rest).await;
        }
        latencies.sort();
        let tokens = fake.count(|r| r.service == Service::Authority && r.path.contains("/oauth2/"));
        if round == 0 {
            first_tokens = tokens;
        } else {
            figures = Some(Figures {
                reads: fake.count(|r| matches!(r.service, Service::Vault(_)) && r.status == 200),
                tokens: (first_tokens, tokens),
                reviews: kube.reviews() - reviews_before,
                p50: percentile(&latencies, 0.5),
                p99: percentile(&latencies, 0.99),
                rss: rss_mib(provider.pid(), "VmRSS"),
                peak: rss_mib(provider.pid(), "VmHWM"),
                errors,
            });
        }
    }
    figures.expect("two rounds")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let interval = Duration::from_secs(
        std::env::var("AKV_BENCH_INTERVAL_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(12),
    );
    println!(
        "{PODS} pods in {ACCOUNTS} service accounts, 2 latest-version secrets each, one Mount per pod per interval ({interval:?} standing for 2 min), 20 ms Key Vault latency; figures of the second interval"
    );
    println!(
        "{:<44} {:>9} {:>14} {:>8} {:>8} {:>8} {:>7} {:>9} {:>6}",
        "configuration",
        "kv reads",
        "tokens 1st/2nd",
        "reviews",
        "p50 ms",
        "p99 ms",
        "RSS",
        "peak RSS",
        "errors"
    );
    for (label, review) in [
        ("TokenReview on, window and review TTL I/2", true),
        ("no review, no window (the Go provider's reads)", false),
    ] {
        let f = run(review, interval).await;
        println!(
            "{label:<44} {:>9} {:>14} {:>8} {:>8.1} {:>8.1} {:>5.1}Mi {:>7.1}Mi {:>6}",
            f.reads,
            format!("{}/{}", f.tokens.0, f.tokens.1),
            f.reviews,
            f.p50,
            f.p99,
            f.rss,
            f.peak,
            f.errors
        );
    }
}

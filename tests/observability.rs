//! Metrics, health probe and logs of the running binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(clippy::float_cmp, clippy::too_many_lines)] // exact small counts; one scenario per test

mod support;

use std::collections::BTreeSet;
use support::{
    fake_azure::{FakeAzure, Fault, SecretOpts},
    provider::{Provider, http_get, mount_request, objects_yaml},
};
use tonic::Code;

const TENANT: &str = "tenant-observability";
const SP_ID: &str = "sp-observability";
const SP_SECRET: &str = "observability-client-secret-value";
const SECRET_VALUE: &str = "observability-secret-value-123";

async fn start(extra: &[&str]) -> (FakeAzure, Provider, String) {
    let fake = FakeAzure::start().await;
    fake.add_vault("kv1", TENANT);
    fake.add_service_principal(TENANT, SP_ID, SP_SECRET);
    fake.grant("kv1", SP_ID, &["get", "list"]);
    fake.set_secret("kv1", "db", SECRET_VALUE, SecretOpts::default());
    let cloud_file = fake.write_cloud_env_file().display().to_string();
    let mut args = vec![
        format!("--ca-file={}", fake.ca_file().display()),
        "--resolve=*.vault.test=127.0.0.1".to_owned(),
        "--resolve=login.test=127.0.0.1".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let provider = Provider::start(&args);
    (fake, provider, cloud_file)
}

fn params(cloud_file: &str, objects: &[&str]) -> Vec<(&'static str, String)> {
    vec![
        ("keyvaultName", "kv1".to_owned()),
        ("tenantID", TENANT.to_owned()),
        ("cloudName", "AzureStackCloud".to_owned()),
        ("cloudEnvFileName", cloud_file.to_owned()),
        ("objects", objects_yaml(objects)),
    ]
}

fn sp() -> String {
    serde_json::json!({"clientid": SP_ID, "clientsecret": SP_SECRET}).to_string()
}

/// Lines of the exposition that start with `name{` and contain every `needle`.
fn series<'a>(text: &'a str, name: &str, needles: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect()
}

fn value(line: &str) -> f64 {
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("sample value")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_good_and_a_failing_mount() {
    let (fake, provider, cloud) = start(&["-v=2", "--log-format-json"]).await;
    let mut client = provider.client().await;
    client
        .mount(mount_request(
            &params(&cloud, &["objectName: db\nobjectType: secret"]),
            &sp(),
        ))
        .await
        .expect("good mount");
    let err = client
        .mount(mount_request(
            &params(&cloud, &["objectName: gone\nobjectType: secret"]),
            &sp(),
        ))
        .await
        .expect_err("missing object");
    assert_eq!(err.code(), Code::NotFound);
    fake.inject("kv1", "db", Fault::throttled(2));
    let err = client
        .mount(mount_request(
            &params(&cloud, &["objectName: db\nobjectType: secret"]),
            &sp(),
        ))
        .await
        .expect_err("throttled");
    assert_eq!(err.code(), Code::Unavailable);

    let (status, text) = http_get(provider.metrics_port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text");
    let ok = series(
        &text,
        "keyvault_request_count",
        &[
            r#"object_type="secret""#,
            r#"object_name="db""#,
            r#"error="""#,
        ],
    );
    assert_eq!(ok.len(), 1, "{text}");
    assert_eq!(value(ok[0]), 1.0);
    let missing = series(
        &text,
        "keyvault_request_count",
        &[r#"object_name="gone""#, r#"error="not_found""#],
    );
    assert_eq!(missing.len(), 1, "{text}");
    assert_eq!(
        series(
            &text,
            "keyvault_request_count",
            &[r#"object_name="db""#, r#"error="throttled""#]
        )
        .len(),
        1,
        "{text}"
    );
    // The Go provider's buckets are all there, plus the finer low ones.
    for le in ["0.001", "0.05", "0.1", "0.5", "1.0", "3.0", "30.0", "+Inf"] {
        assert_eq!(
            series(
                &text,
                "keyvault_request_bucket",
                &[
                    &format!("le=\"{le}\""),
                    r#"object_name="db""#,
                    r#"error="""#
                ]
            )
            .len(),
            1,
            "bucket {le}"
        );
    }
    let grpc_ok = series(
        &text,
        "grpc_request_count",
        &[
            r#"grpc_method="/v1alpha1.CSIDriverProvider/Mount""#,
            r#"grpc_code="OK""#,
            r#"grpc_message="""#,
        ],
    );
    assert_eq!(grpc_ok.len(), 1, "{text}");
    assert_eq!(
        series(
            &text,
            "grpc_request_count",
            &[r#"grpc_code="NotFound""#, r#"grpc_message="not_found""#]
        )
        .len(),
        1,
        "{text}"
    );
    assert_eq!(
        series(
            &text,
            "grpc_request_count",
            &[r#"grpc_code="Unavailable""#, r#"grpc_message="throttled""#]
        )
        .len(),
        1,
        "{text}"
    );
    assert!(
        value(
            series(
                &text,
                "akv_azure_responses_total",
                &[
                    r#"service="keyvault""#,
                    r#"vault="kv1""#,
                    r#"status_class="2xx""#
                ]
            )[0]
        ) >= 1.0
    );
    assert!(
        value(
            series(
                &text,
                "akv_azure_responses_total",
                &[r#"service="keyvault""#, r#"status_class="4xx""#]
            )[0]
        ) >= 2.0
    );
    assert!(
        value(
            series(
                &text,
                "akv_azure_responses_total",
                &[r#"service="token""#, r#"status_class="2xx""#]
            )[0]
        ) >= 1.0
    );
    let throttled = value(series(&text, "akv_keyvault_throttled_total", &[r#"vault="kv1""#])[0]);
    assert!(throttled >= 2.0, "every 429 counted: {throttled}");
    assert!(
        value(
            series(
                &text,
                "akv_keyvault_retry_after_seconds_total",
                &[r#"vault="kv1""#]
            )[0]
        ) >= 4.0
    );
    assert_eq!(
        value(
            series(
                &text,
                "akv_token_requests_total",
                &[r#"mode="service_principal""#, r#"outcome="ok""#]
            )[0]
        ),
        1.0,
        "three mounts of one identity: one token request, then the cache"
    );
    assert_eq!(
        value(
            series(
                &text,
                "akv_cache_lookups_total",
                &[r#"cache="token""#, r#"result="miss""#]
            )[0]
        ),
        1.0
    );
    assert_eq!(value(series(&text, "akv_mount_objects_count", &[])[0]), 1.0);
    assert_eq!(value(series(&text, "akv_mounts_in_flight", &[])[0]), 0.0);
    assert_eq!(
        series(
            &text,
            "akv_build_info",
            &[&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))]
        )
        .len(),
        1
    );
    for secret in [SECRET_VALUE, SP_SECRET] {
        assert!(!text.contains(secret));
    }

    // One JSON summary line per Mount at -v=2, with pod, vault, object count, duration, outcome.
    let logs = provider.logs();
    let summaries: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
        })
        .filter(|v| v["message"] == "mount" || v["message"] == "mount failed")
        .collect();
    assert_eq!(summaries.len(), 3, "{logs}");
    let outcomes: Vec<&str> = summaries
        .iter()
        .map(|v| v["outcome"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(outcomes, ["ok", "not_found", "throttled"]);
    for s in &summaries {
        assert_eq!(s["pod"], "shop/web-0");
        assert_eq!(s["vault"], "kv1");
        assert_eq!(s["objects"], 1);
        assert!(s["duration_ms"].is_u64(), "{s}");
        assert!(s["time"].is_string() && s["level"].is_string(), "{s}");
    }
    for secret in [SECRET_VALUE, SP_SECRET] {
        assert!(!logs.contains(secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_distinct_failing_objects_keep_label_sets_bounded() {
    let (_fake, provider, cloud) = start(&["--metrics-max-object-names=100"]).await;
    let names: Vec<String> = (0..1000).map(|i| format!("missing-{i}")).collect();
    let chunks: Vec<Vec<String>> = names.chunks(125).map(<[String]>::to_vec).collect();
    let mut tasks = Vec::new();
    for chunk in chunks {
        let mut client = provider.client().await;
        let cloud = cloud.clone();
        tasks.push(tokio::spawn(async move {
            for name in chunk {
                let object = format!("objectName: {name}\nobjectType: secret");
                let err = client
                    .mount(mount_request(&params(&cloud, &[&object]), &sp()))
                    .await
                    .expect_err("missing");
                assert_eq!(err.code(), Code::NotFound);
            }
        }));
    }
    for task in tasks {
        task.await.expect("mounts");
    }
    let (_, text) = http_get(provider.metrics_port, "/metrics").await;
    let counts = series(&text, "keyvault_request_count", &[]);
    let labels: BTreeSet<&str> = counts
        .iter()
        .filter_map(|l| l.split("object_name=\"").nth(1)?.split('"').next())
        .collect();
    assert!(labels.len() <= 101, "{} object_name values", labels.len());
    assert!(labels.contains("_other"));
    let total: f64 = counts.iter().map(|l| value(l)).sum();
    assert_eq!(total, 1000.0, "every failure is still counted");
    let grpc = series(&text, "grpc_request_count", &[]);
    assert_eq!(
        grpc.len(),
        1,
        "one label set for 1000 NotFound mounts: {grpc:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_reflects_the_socket_not_key_vault() {
    let (fake, provider, _cloud) =
        start(&["--healthz-path=/healthz", "--healthz-timeout=2s"]).await;
    let (status, body) = http_get(provider.healthz_port, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    // Key Vault and the token service going away does not make the provider unhealthy.
    drop(fake);
    let (status, _) = http_get(provider.healthz_port, "/healthz").await;
    assert_eq!(status, 200);
    // The socket disappearing (e.g. the hostPath was wiped) does.
    std::fs::remove_file(&provider.socket).expect("remove socket");
    let (status, body) = http_get(provider.healthz_port, "/healthz").await;
    assert_eq!(status, 503);
    assert!(
        body.contains("cannot connect to the provider socket"),
        "{body}"
    );
    let (status, _) = http_get(provider.healthz_port, "/nope").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_port_can_serve_both_endpoints() {
    let port = support::provider::free_port();
    let provider = Provider::start(&[
        format!("--healthz-port={port}"),
        format!("--prometheus-port={port}"),
    ]);
    assert_eq!(http_get(port, "/healthz").await.0, 200);
    let (status, text) = http_get(port, "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("akv_build_info"));
    drop(provider);
}

/// Every line a Mount logs carries the Mount's span: `request_id`, and `pod`, `vault` and
/// `identity` once the request is planned, so concurrent Mounts of many pods can be told apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_of_a_mount_names_its_pod() {
    let (fake, provider, cloud) = start(&["-v=5", "--log-format-json"]).await;
    let pods = ["web-0", "web-1", "web-2", "web-3"];
    for pod in pods {
        fake.set_secret("kv1", &format!("for-{pod}"), "v", SecretOpts::default());
    }
    // Slow answers keep the four Mounts in flight together.
    fake.inject(
        "kv1",
        "*",
        Fault::slow(std::time::Duration::from_millis(200)),
    );
    let mut tasks = Vec::new();
    for pod in pods {
        let mut client = provider.client().await;
        let object = format!("objectName: for-{pod}\nobjectType: secret");
        let mut params = params(&cloud, &[&object]);
        params.push(("csi.storage.k8s.io/pod.name", pod.to_owned()));
        tasks.push(tokio::spawn(async move {
            client.mount(mount_request(&params, &sp())).await
        }));
    }
    for task in tasks {
        task.await.expect("join").expect("mount");
    }
    let logs = provider.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let fetches: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["message"] == "fetching object")
        .collect();
    assert_eq!(fetches.len(), 4, "{logs}");
    let mut ids = BTreeSet::new();
    for line in &fetches {
        // The event itself names only the object; pod, vault, identity and id come from the span.
        let pod = line["pod"].as_str().unwrap_or_default();
        let object = line["object"].as_str().unwrap_or_default();
        assert_eq!(
            object,
            format!("secret/for-{}", pod.trim_start_matches("shop/")),
            "{line}"
        );
        assert_eq!(line["vault"], "kv1", "{line}");
        assert_eq!(line["identity"], "service_principal", "{line}");
        ids.insert(line["request_id"].as_u64().expect("request_id"));
    }
    assert_eq!(ids.len(), 4, "one request id per Mount");
    // The summary line of each Mount has the same id as its fetch.
    for line in lines.iter().filter(|v| v["message"] == "mount") {
        assert!(
            ids.contains(&line["request_id"].as_u64().unwrap_or(0)),
            "{line}"
        );
    }
}

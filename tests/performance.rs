//! Caching, coalescing, ordering and throttle-awareness, observed through the fake's request log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};
use support::{
    fake_azure::{FakeAzure, Fault, Recorded, SecretOpts, Service},
    provider::{NO_SECRET_REF, Provider, mount_request, objects_yaml, tokens_attribute},
};
use tonic::Code;

const TENANT: &str = "tenant-perf";
const SP_ID: &str = "sp-perf";
const SP_SECRET: &str = "perf-client-secret";
const WI_ID: &str = "wi-perf";
const SA_TOKEN: &str = "eyJ.sa-token-perf.sig";

async fn start(extra: &[&str]) -> (FakeAzure, Provider, String) {
    let fake = FakeAzure::start().await;
    fake.add_vault("kv1", TENANT);
    fake.add_service_principal(TENANT, SP_ID, SP_SECRET);
    fake.add_federated_identity(TENANT, WI_ID, SA_TOKEN);
    fake.grant("kv1", SP_ID, &["get", "list"]);
    fake.grant("kv1", WI_ID, &["get", "list"]);
    let cloud = fake.write_cloud_env_file().display().to_string();
    let mut args = vec![
        format!("--ca-file={}", fake.ca_file().display()),
        "--resolve=*.vault.test=127.0.0.1".to_owned(),
        "--resolve=login.test=127.0.0.1".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    (fake, Provider::start(&args), cloud)
}

fn params(cloud: &str, objects: &[String]) -> Vec<(&'static str, String)> {
    let objects: Vec<&str> = objects.iter().map(String::as_str).collect();
    vec![
        ("keyvaultName", "kv1".to_owned()),
        ("tenantID", TENANT.to_owned()),
        ("cloudName", "AzureStackCloud".to_owned()),
        ("cloudEnvFileName", cloud.to_owned()),
        ("objects", objects_yaml(&objects)),
    ]
}

fn sp() -> String {
    serde_json::json!({"clientid": SP_ID, "clientsecret": SP_SECRET}).to_string()
}

fn token_requests(fake: &FakeAzure) -> usize {
    fake.count(|r| r.service == Service::Authority && r.status == 200)
}

fn vault_requests(fake: &FakeAzure) -> usize {
    fake.count(|r| r.is_vault("kv1"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotations_reuse_one_token_and_pinned_values_cost_nothing() {
    let (fake, provider, cloud) = start(&[]).await;
    let v1 = fake.set_secret("kv1", "pinned", "pinned-value", SecretOpts::default());
    fake.set_secret("kv1", "latest", "latest-value", SecretOpts::default());
    let objects = vec![
        format!("objectName: pinned\nobjectType: secret\nobjectVersion: {v1}"),
        "objectName: latest\nobjectType: secret".to_owned(),
    ];
    let mut client = provider.client().await;
    let first = client
        .mount(mount_request(&params(&cloud, &objects), &sp()))
        .await
        .expect("mount")
        .into_inner();
    assert_eq!(first.files.len(), 2);
    assert_eq!(token_requests(&fake), 1);
    fake.clear_requests();
    for _ in 0..9 {
        let resp = client
            .mount(mount_request(&params(&cloud, &objects), &sp()))
            .await
            .expect("mount")
            .into_inner();
        assert_eq!(resp.files.len(), 2);
        assert_eq!(resp.files[0].contents, b"pinned-value");
    }
    assert_eq!(token_requests(&fake), 0, "one token for ten rotations");
    // Only the latest object is read; the pinned value and the challenge are not repeated.
    assert_eq!(vault_requests(&fake), 9, "{:?}", fake.requests());
    assert_eq!(
        fake.count(|r| r.is_vault("kv1") && r.status == 401),
        0,
        "the client is reused: no new challenge"
    );
    // A new latest version is seen on the next Mount (the latest window is 0 by default).
    fake.set_secret("kv1", "latest", "rotated-value", SecretOpts::default());
    let resp = client
        .mount(mount_request(&params(&cloud, &objects), &sp()))
        .await
        .expect("mount")
        .into_inner();
    assert_eq!(resp.files[1].contents, b"rotated-value");
}

/// A token Key Vault answers 401 to is evicted from the token cache: the SDK's challenge retry
/// gets a fresh token and the same Mount succeeds (before, the cache handed back the rejected
/// token to every Mount until it nearly expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_key_vault_rejects_is_evicted_and_replaced_at_once() {
    let (fake, provider, cloud) = start(&[]).await;
    fake.set_secret("kv1", "db", "db-value-0001", SecretOpts::default());
    let objects = vec!["objectName: db\nobjectType: secret".to_owned()];
    let mut client = provider.client().await;
    client
        .mount(mount_request(&params(&cloud, &objects), &sp()))
        .await
        .expect("first mount");
    assert_eq!(token_requests(&fake), 1);
    // Key Vault no longer accepts the token the provider holds (still valid for an hour by
    // its expiry): it answers 401 with a challenge.
    fake.expire_all_tokens();
    fake.clear_requests();
    let resp = client
        .mount(mount_request(&params(&cloud, &objects), &sp()))
        .await
        .expect("the Mount after the 401 gets a fresh token and succeeds")
        .into_inner();
    assert_eq!(resp.files[0].contents, b"db-value-0001");
    assert_eq!(
        token_requests(&fake),
        1,
        "one fresh token: {:?}",
        fake.requests()
    );
    assert_eq!(
        fake.count(|r| r.is_vault("kv1") && r.status == 401),
        1,
        "one rejected request: {:?}",
        fake.requests()
    );
    // And the fresh token is the cached one now: the next Mount asks for none.
    client
        .mount(mount_request(&params(&cloud, &objects), &sp()))
        .await
        .expect("third mount");
    assert_eq!(token_requests(&fake), 1);
}

/// The first Mount against a vault learns Key Vault's challenge with one request, then fans
/// out: one 401 for 20 objects, not one per object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_mount_draws_one_challenge_for_twenty_objects() {
    let (fake, provider, cloud) = start(&[]).await;
    let objects: Vec<String> = (0..20)
        .map(|i| {
            fake.set_secret(
                "kv1",
                &format!("s{i}"),
                &format!("value-{i}-0001"),
                SecretOpts::default(),
            );
            format!("objectName: s{i}\nobjectType: secret")
        })
        .collect();
    let resp = provider
        .client()
        .await
        .mount(mount_request(&params(&cloud, &objects), &sp()))
        .await
        .expect("mount")
        .into_inner();
    assert_eq!(resp.files.len(), 20);
    assert_eq!(
        fake.count(|r| r.is_vault("kv1") && r.status == 401),
        1,
        "{:?}",
        fake.requests()
    );
    assert_eq!(fake.count(|r| r.is_vault("kv1") && r.status == 200), 20);
    assert_eq!(token_requests(&fake), 1);
}

/// `objectNamePrefix` lists the vault with Key Vault's largest page (`maxresults=25`); a
/// failed page is retried on its own (the pages before it are not read again); and the Mounts
/// within `--listing-window` share one listing per vault and identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_listings_use_the_largest_page_resume_on_a_retry_and_are_shared() {
    // A window no test run outlasts: what is checked is the sharing, not the clock.
    let (fake, provider, cloud) = start(&["--listing-window=1h"]).await;
    for i in 0..60 {
        fake.set_secret(
            "kv1",
            &format!("app-{i:02}"),
            &format!("app-value-{i}"),
            SecretOpts::default(),
        );
    }
    let objects = vec!["objectNamePrefix: app-\nobjectType: secret\nobjectAlias: app".to_owned()];
    let listing = |r: &Recorded| {
        r.is_vault("kv1") && r.status != 401 && r.path.trim_end_matches('/') == "/secrets"
    };
    // 60 secrets are three pages; the second fails once with 503.
    fake.inject("kv1", "", Fault::status(503).after(1).times(1));
    let mut client = provider.client().await;
    let resp = client
        .mount(mount_request(&params(&cloud, &objects), &sp()))
        .await
        .expect("mount")
        .into_inner();
    assert_eq!(resp.files.len(), 60);
    let lists: Vec<Recorded> = fake.requests().into_iter().filter(listing).collect();
    assert!(
        lists
            .iter()
            .all(|r| r.query_param("maxresults").as_deref() == Some("25")),
        "{lists:?}"
    );
    assert_eq!(
        lists
            .iter()
            .filter(|r| r.query_param("$skiptoken").is_none())
            .count(),
        1,
        "the first page is read once: {lists:?}"
    );
    assert_eq!(lists.len(), 4, "pages 1, 2 (503), 2 again, 3: {lists:?}");
    // Another Mount of the same identity (a rotation, another pod): no listing.
    fake.clear_requests();
    let resp = client
        .mount(mount_request(&params(&cloud, &objects), &sp()))
        .await
        .expect("second mount")
        .into_inner();
    assert_eq!(resp.files.len(), 60);
    assert_eq!(fake.count(listing), 0, "{:?}", fake.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_mounts_share_one_token_request_and_identical_reads() {
    let (fake, provider, cloud) = start(&[]).await;
    fake.set_secret("kv1", "shared", "shared-value", SecretOpts::default());
    // The first read is held long enough for every Mount to join it.
    fake.inject(
        "kv1",
        "shared",
        Fault::slow(Duration::from_secs(3)).times(1),
    );
    let objects = vec!["objectName: shared\nobjectType: secret".to_owned()];
    let client = provider.client().await;
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let req = mount_request(&params(&cloud, &objects), &sp());
            let mut client = client.clone();
            tokio::spawn(async move { client.mount(req).await })
        })
        .collect();
    // They overlap: all ten are in flight before the held read has answered.
    let deadline = Instant::now() + Duration::from_secs(20);
    while provider.mounts_in_flight().await < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let answered = fake.count(|r| r.is_vault("kv1") && r.status == 200);
    assert_eq!(
        provider.mounts_in_flight().await,
        10,
        "all ten Mounts in flight"
    );
    assert_eq!(answered, 0, "the held read had not answered yet");
    let results = futures::future::join_all(calls).await;
    assert!(
        results.iter().all(|r| r.as_ref().is_ok_and(Result::is_ok)),
        "{results:?}"
    );
    assert_eq!(token_requests(&fake), 1, "single flight for the token");
    let reads = fake.count(|r| r.is_vault("kv1") && r.status == 200);
    assert_eq!(
        reads, 1,
        "identical overlapping reads are coalesced into one ({reads} reads for 10 mounts)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_token_after_a_valid_one_gets_nothing_from_any_cache() {
    let (fake, provider, cloud) = start(&[]).await;
    let v1 = fake.set_secret("kv1", "wi", "wi-value", SecretOpts::default());
    let objects = vec![format!(
        "objectName: wi\nobjectType: secret\nobjectVersion: {v1}"
    )];
    let with_token = |token: &str| {
        let mut p = params(&cloud, &objects);
        p.push(("clientID", WI_ID.to_owned()));
        p.push((
            "csi.storage.k8s.io/serviceAccount.tokens",
            tokens_attribute("api://AzureADTokenExchange", token),
        ));
        mount_request(&p, NO_SECRET_REF)
    };
    let mut client = provider.client().await;
    client
        .mount(with_token(SA_TOKEN))
        .await
        .expect("valid token");
    let err = client
        .mount(with_token("eyJ.forged.sig"))
        .await
        .expect_err("forged token");
    assert_eq!(err.code(), Code::PermissionDenied);
    // And the valid one still works from the cache.
    client
        .mount(with_token(SA_TOKEN))
        .await
        .expect("valid token again");
    assert_eq!(token_requests(&fake), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_keep_the_spc_order_when_fetched_concurrently() {
    let (fake, provider, cloud) = start(&["--max-concurrent-fetches=8"]).await;
    let mut objects = Vec::new();
    for i in 0..12 {
        fake.set_secret(
            "kv1",
            &format!("o{i}"),
            &format!("v{i}"),
            SecretOpts::default(),
        );
        objects.push(format!("objectName: o{i}\nobjectType: secret"));
    }
    // The first objects answer last.
    fake.inject("kv1", "o0", Fault::slow(Duration::from_millis(300)));
    fake.inject("kv1", "o1", Fault::slow(Duration::from_millis(200)));
    let mut client = provider.client().await;
    let resp = client
        .mount(mount_request(&params(&cloud, &objects), &sp()))
        .await
        .expect("mount")
        .into_inner();
    let paths: Vec<String> = resp.files.iter().map(|f| f.path.clone()).collect();
    let want: Vec<String> = (0..12).map(|i| format!("o{i}")).collect();
    assert_eq!(paths, want);
    let ids: Vec<String> = resp.object_version.iter().map(|v| v.id.clone()).collect();
    assert_eq!(
        ids,
        want.iter()
            .map(|n| format!("secret/{n}"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_beyond_the_deadline_fails_fast_with_the_asked_wait() {
    let (fake, provider, cloud) = start(&["--mount-timeout=10s"]).await;
    fake.set_secret("kv1", "busy", "busy-value", SecretOpts::default());
    fake.inject("kv1", "busy", Fault::throttled(120));
    let mut client = provider.client().await;
    let objects = vec!["objectName: busy\nobjectType: secret".to_owned()];
    let err = client
        .mount(mount_request(&params(&cloud, &objects), &sp()))
        .await
        .expect_err("throttled");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("asking to wait 120s"),
        "{}",
        err.message()
    );
    assert_eq!(
        fake.count(|r| r.is_vault("kv1") && r.status == 429),
        1,
        "no retry that cannot succeed in time"
    );
    // A short Retry-After is waited for and the read succeeds.
    fake.clear_faults();
    fake.inject("kv1", "busy", Fault::throttled(1).times(2));
    let resp = client
        .mount(mount_request(&params(&cloud, &objects), &sp()))
        .await
        .expect("after waiting")
        .into_inner();
    assert_eq!(resp.files[0].contents, b"busy-value");
}

/// A Mount that joins another's read keeps its own deadline: the shared attempt is throttled
/// (Retry-After 2 s); the Mount with a 1 s gRPC deadline fails at once with the asked wait, the
/// one with plenty of time waits and retries on its own and gets the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_read_keeps_each_mounts_own_deadline() {
    let (fake, provider, cloud) = start(&[]).await;
    fake.set_secret("kv1", "shared", "shared-value", SecretOpts::default());
    let objects = vec!["objectName: shared\nobjectType: secret".to_owned()];
    // Warm up the token and the client, so both Mounts only read the secret.
    fake.set_secret("kv1", "warm", "warm-value", SecretOpts::default());
    let mut client = provider.client().await;
    client
        .mount(mount_request(
            &params(&cloud, &["objectName: warm\nobjectType: secret".to_owned()]),
            &sp(),
        ))
        .await
        .expect("warm-up");
    fake.inject(
        "kv1",
        "shared",
        Fault::throttled(2)
            .delay(Duration::from_millis(600))
            .times(1),
    );
    let mut hurried_request = tonic::Request::new(mount_request(&params(&cloud, &objects), &sp()));
    hurried_request.set_timeout(Duration::from_secs(1));
    let mut hurried_client = client.clone();
    let hurried = tokio::spawn(async move { hurried_client.mount(hurried_request).await });
    // The patient Mount joins while the first attempt is still out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while provider.mounts_in_flight().await < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut patient_client = client.clone();
    let patient_request = mount_request(&params(&cloud, &objects), &sp());
    let patient = tokio::spawn(async move { patient_client.mount(patient_request).await });
    let hurried = hurried
        .await
        .expect("join")
        .expect_err("1 s is too short to wait 2 s");
    assert_eq!(hurried.code(), Code::Unavailable, "{hurried:?}");
    assert!(
        hurried.message().contains("asking to wait 2s"),
        "{}",
        hurried.message()
    );
    let patient = patient
        .await
        .expect("join")
        .expect("the patient Mount retries");
    assert_eq!(patient.into_inner().files[0].contents, b"shared-value");
    let reads = fake.count(|r| r.is_vault("kv1") && r.path.contains("/secrets/shared"));
    assert_eq!(
        reads, 2,
        "one shared attempt, then the patient Mount's retry"
    );
}

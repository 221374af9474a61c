//! Kubernetes TokenReview (issue 17): pods of one service account share one identity once the
//! API server vouched for each pod's token; every other token gets nothing from the shared
//! caches. The real binary against the fake Azure and a fake API server (`support::kube_api`)
//! that answers as kube-apiserver does; the cluster end-to-end tests repeat this against a real
//! kube-apiserver.

mod support;

use base64::Engine;
use support::{
    env::{CheckedEnv, Env, TENANT, files},
    fake_azure::FakeAzure,
    kube_api::FakeKubeApi,
    provider::{NO_SECRET_REF, Provider, binary, tokens_attribute},
};
use tonic::Code;

const WI_ID: &str = "6f1d2c3b-0000-4000-8000-0000000017aa";
const WI: &str = "api://AzureADTokenExchange";
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// A JWT-shaped service-account token (the fake API server knows it by its text).
fn sa_token(pod: &str) -> String {
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let claims = serde_json::json!({
        "aud": [WI], "exp": 4_102_444_800_i64, "iat": 1_700_000_000, "iss": ISSUER,
        "sub": "system:serviceaccount:shop:web",
        "kubernetes.io": {"namespace": "shop", "pod": {"name": pod}},
    });
    format!(
        "{}.{}.signature-of-{pod}-must-never-leak",
        b64(br#"{"alg":"RS256","kid":"cluster-key"}"#),
        b64(claims.to_string().as_bytes())
    )
}

struct Setup {
    env: CheckedEnv,
    kube: FakeKubeApi,
}

/// The fake Azure (vault kv1 with secret `s`, the workload identity federated with each token
/// in `tokens`), the fake API server, and the provider with `flags`.
async fn setup(tokens: &[&str], flags: impl Fn(&FakeKubeApi) -> Vec<String>) -> Setup {
    setup_with_window(tokens, "60s", flags).await
}

/// [`setup`] with `--latest-cache-window=<window>`.
async fn setup_with_window(
    tokens: &[&str],
    window: &str,
    flags: impl Fn(&FakeKubeApi) -> Vec<String>,
) -> Setup {
    let fake = FakeAzure::start().await;
    fake.add_vault("kv1", TENANT);
    for token in tokens {
        fake.add_federated_identity(TENANT, WI_ID, token);
    }
    fake.grant("kv1", WI_ID, &["get"]);
    let value = "shared-by-the-service-account";
    fake.set_secret(
        "kv1",
        "s",
        value,
        support::fake_azure::SecretOpts::default(),
    );
    let kube = FakeKubeApi::start().await;
    let window = format!("--latest-cache-window={window}");
    let mut args = Env::args(&fake, &[&window]);
    args.extend(flags(&kube));
    let provider = Provider::start(&args);
    let cloud_file = fake.write_cloud_env_file().display().to_string();
    let mut sensitive: Vec<String> = tokens.iter().map(|t| (*t).to_owned()).collect();
    sensitive.push(value.to_owned());
    sensitive.push(support::kube_api::CALLER_TOKEN.to_owned());
    let env = CheckedEnv {
        base: Env {
            fake,
            provider,
            cloud_file,
        },
        sensitive,
    };
    Setup { env, kube }
}

fn with_kubeconfig(kube: &FakeKubeApi) -> Vec<String> {
    vec![format!("--kubeconfig={}", kube.kubeconfig().display())]
}

/// Pods A and B of service account `shop/web`, each with its own token that Entra and the API
/// server know: the setup and the two tokens.
async fn pods_a_and_b(window: &str) -> (Setup, String, String) {
    let (a, b) = (sa_token("web-0"), sa_token("web-1"));
    let s = setup_with_window(&[&a, &b], window, with_kubeconfig).await;
    s.kube
        .add_token(&a, "shop", "web", Some("web-0"), "uid-a", WI);
    s.kube
        .add_token(&b, "shop", "web", Some("web-1"), "uid-b", WI);
    (s, a, b)
}

/// A Mount of secret `s` by pod `name` (uid, service account) presenting `token`.
async fn mount_as(
    env: &Env,
    pod: (&str, &str, &str),
    token: &str,
) -> Result<akv_csi_provider::v1alpha1::MountResponse, tonic::Status> {
    let (name, uid, service_account) = pod;
    let params = env.params(
        &["objectName: s\nobjectType: secret"],
        &[
            ("clientID", WI_ID.to_owned()),
            (
                "csi.storage.k8s.io/serviceAccount.tokens",
                tokens_attribute(WI, token),
            ),
            ("csi.storage.k8s.io/pod.name", name.to_owned()),
            ("csi.storage.k8s.io/pod.uid", uid.to_owned()),
            (
                "csi.storage.k8s.io/serviceAccount.name",
                service_account.to_owned(),
            ),
        ],
    );
    env.mount(&params, NO_SECRET_REF).await
}

const POD_A: (&str, &str, &str) = ("web-0", "uid-a", "web");
const POD_B: (&str, &str, &str) = ("web-1", "uid-b", "web");
const POD_ADMIN: (&str, &str, &str) = ("admin-0", "uid-c", "admin");

fn token_requests(env: &Env) -> usize {
    env.fake
        .count(|r| r.path.contains("/oauth2/") && r.status == 200)
}

fn reads(env: &Env) -> usize {
    env.fake.count(|r| r.is_vault("kv1") && r.status == 200)
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_of_one_service_account_share_one_token_and_one_read() {
    let (s, a, b) = pods_a_and_b("60s").await;
    let first = mount_as(&s.env, POD_A, &a).await.expect("pod A");
    let second = mount_as(&s.env, POD_B, &b).await.expect("pod B");
    assert_eq!(files(&first), files(&second));
    assert_eq!(files(&first)[0].1, b"shared-by-the-service-account");
    assert_eq!(
        token_requests(&s.env),
        1,
        "one Entra token for the service account"
    );
    assert_eq!(reads(&s.env), 1, "one Key Vault read within the window");
    assert_eq!(s.kube.reviews(), 2, "each pod's token reviewed once");
    // Pod A again within the review cache TTL: no new review, still nothing new from Azure.
    mount_as(&s.env, POD_A, &a).await.expect("pod A again");
    assert_eq!(s.kube.reviews(), 2);
    assert_eq!((token_requests(&s.env), reads(&s.env)), (1, 1));
    let text = s.env.provider.metrics().await;
    for (series, want) in [
        (
            r#"akv_token_reviews_total{mode="workload_identity",outcome="authenticated"}"#,
            2,
        ),
        (
            r#"akv_identity_sharing_total{mode="workload_identity",result="shared"}"#,
            3,
        ),
        (
            r#"akv_cache_lookups_total{cache="token_review",result="hit"}"#,
            1,
        ),
        // Pod B's read and pod A's second one, from the window.
        ("akv_shared_identity_reads_saved_total", 2),
    ] {
        assert_eq!(metric(&text, series), want, "{series}\n{text}");
    }
    s.env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_tokens_get_nothing_from_the_shared_caches() {
    let (a, b) = (sa_token("web-0"), sa_token("web-1"));
    let (other_audience, unknown) = (sa_token("web-0-other-audience"), sa_token("forged"));
    let s = setup(&[&a, &b, &other_audience, &unknown], with_kubeconfig).await;
    s.kube
        .add_token(&a, "shop", "web", Some("web-0"), "uid-a", WI);
    s.kube
        .add_token(&b, "shop", "web", Some("web-1"), "uid-b", WI);
    s.kube.add_token(
        &other_audience,
        "shop",
        "web",
        Some("web-0"),
        "uid-a",
        "other-audience",
    );
    mount_as(&s.env, POD_A, &a)
        .await
        .expect("pod A fills the caches");
    // Pod B's pod is deleted before its first Mount: the API server no longer knows its token.
    s.kube.revoke(&b);
    let cases = [
        (
            POD_ADMIN,
            a.as_str(),
            "belongs to \"system:serviceaccount:shop:web\"",
        ),
        (POD_B, a.as_str(), "of pod \"shop/web-0\" (uid \"uid-a\")"),
        (
            ("web-0", "uid-recreated", "web"),
            a.as_str(),
            "(uid \"uid-a\")",
        ),
        (POD_A, unknown.as_str(), "has been invalidated"),
        (
            POD_A,
            other_audience.as_str(),
            "is invalid for the target audiences",
        ),
        (POD_B, b.as_str(), "has been invalidated"),
    ];
    for (pod, token, needle) in cases {
        let err = mount_as(&s.env, pod, token).await.expect_err("refused");
        assert_eq!(err.code(), Code::PermissionDenied, "{pod:?}: {err:?}");
        assert!(err.message().contains("TokenReview"), "{err:?}");
        assert!(err.message().contains(needle), "{needle}: {err:?}");
    }
    assert_eq!(token_requests(&s.env), 1, "no refused Mount reached Entra");
    assert_eq!(reads(&s.env), 1, "no refused Mount reached Key Vault");
    let text = s.env.provider.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"akv_identity_sharing_total{mode="workload_identity",result="refused"}"#
        ),
        6,
        "{text}"
    );
    s.env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_rbac_every_token_is_its_own_identity() {
    let (s, a, b) = pods_a_and_b("60s").await;
    s.kube.fail_with(Some(403));
    mount_as(&s.env, POD_A, &a).await.expect("pod A per token");
    mount_as(&s.env, POD_B, &b).await.expect("pod B per token");
    assert_eq!(token_requests(&s.env), 2, "nothing shared");
    assert_eq!(reads(&s.env), 2, "nothing shared");
    assert_eq!(
        s.kube.reviews(),
        1,
        "after a refusal the next review waits (backoff)"
    );
    let text = s.env.provider.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"akv_token_reviews_total{mode="workload_identity",outcome="forbidden"}"#
        ),
        1,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"akv_identity_sharing_total{mode="workload_identity",result="per_token"}"#
        ),
        2
    );
    let logs = s.env.provider.logs();
    assert!(
        logs.contains("grant create on tokenreviews.authentication.k8s.io"),
        "{logs}"
    );
    s.env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_that_fails_means_per_token_identities() {
    let a = sa_token("web-0");
    let s = setup(&[&a], with_kubeconfig).await;
    s.kube
        .add_token(&a, "shop", "web", Some("web-0"), "uid-a", WI);
    s.kube.fail_with(Some(500));
    mount_as(&s.env, POD_A, &a).await.expect("per token");
    let text = s.env.provider.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"akv_token_reviews_total{mode="workload_identity",outcome="unavailable"}"#
        ),
        1,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_is_reused_for_the_cache_ttl_only() {
    let a = sa_token("web-0");
    let s = setup(&[&a], |kube| {
        let mut f = with_kubeconfig(kube);
        f.push("--token-review-cache-ttl=1s".into());
        f
    })
    .await;
    s.kube
        .add_token(&a, "shop", "web", Some("web-0"), "uid-a", WI);
    mount_as(&s.env, POD_A, &a).await.expect("first");
    mount_as(&s.env, POD_A, &a).await.expect("within the TTL");
    assert_eq!(s.kube.reviews(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    // The pod was deleted meanwhile: the cached review is gone, the new one refuses.
    s.kube.revoke(&a);
    let err = mount_as(&s.env, POD_A, &a)
        .await
        .expect_err("after the TTL");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert_eq!(s.kube.reviews(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_review_off_asks_nothing() {
    let (a, b) = (sa_token("web-0"), sa_token("web-1"));
    let s = setup(&[&a, &b], |kube| {
        let mut f = with_kubeconfig(kube);
        f.push("--token-review=off".into());
        f
    })
    .await;
    mount_as(&s.env, POD_A, &a).await.expect("pod A");
    mount_as(&s.env, POD_B, &b).await.expect("pod B");
    assert_eq!(s.kube.reviews(), 0);
    assert_eq!(token_requests(&s.env), 2);
}

#[test]
fn an_unusable_kubeconfig_fails_the_start() {
    let dir = tempfile::tempdir().expect("dir");
    let out = std::process::Command::new(binary())
        .arg(format!(
            "--endpoint=unix://{}/azure.sock",
            dir.path().display()
        ))
        .arg(format!("--kubeconfig={}/missing", dir.path().display()))
        .arg("--healthz-port=0")
        .arg("--prometheus-port=0")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        format!("{stdout}{stderr}").contains("--kubeconfig"),
        "{stdout}{stderr}"
    );
    assert!(!dir.path().join("azure.sock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_identity_asks_entra_with_the_latest_pods_token() {
    // No latest-value window: pod B's Mount reads Key Vault itself.
    let (s, a, b) = pods_a_and_b("0s").await;
    // Pod A's Mount makes the Key Vault client of the shared identity.
    mount_as(&s.env, POD_A, &a).await.expect("pod A");
    // Pod A's token expires (Entra no longer takes it), and so does the access token.
    s.env.fake.remove_federated_assertion(&a);
    s.env.fake.expire_all_tokens();
    // Pod B's Mount reuses that client: its token request must present pod B's token.
    let got = mount_as(&s.env, POD_B, &b).await.expect("pod B");
    assert_eq!(files(&got)[0].1, b"shared-by-the-service-account");
    assert_eq!(
        token_requests(&s.env),
        2,
        "a new token, asked with pod B's assertion"
    );
}

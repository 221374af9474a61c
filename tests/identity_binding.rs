//! AKS identity binding (`useAzureTokenProxy`): the real binary against a fake of AKS's endpoint
//! that answers by TLS server name (token proxy or API server, see `support::token_proxy`),
//! forwarding token requests to the fake Entra ID, which accepts only the pod's
//! `api://AKSIdentityBinding` token as the assertion.

mod support;

use akv_csi_provider::auth::token_proxy::server_name_for_cluster;
use support::{
    env::{CheckedEnv, Env, TENANT, files},
    fake_azure::FakeAzure,
    provider::{NO_SECRET_REF, Provider},
    token_proxy::{API_SERVER_HOST, FakeTokenProxy},
};
use tonic::Code;

const CLUSTER_ID: &str = "6543210fedcba9876543210f";
const IB_ID: &str = "8b1c4f2e-0000-4000-8000-00000000b1d1";
const IB_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.identity-binding-token-must-never-leak.sig";
const WI_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.workload-identity-token-must-never-leak.sig";

struct Setup {
    env: CheckedEnv,
    proxy: FakeTokenProxy,
}

/// The fake Azure, the fake AKS endpoint and the provider; `flags` adds provider flags.
async fn setup(
    proxy_name: &str,
    flags: impl Fn(&FakeAzure, &FakeTokenProxy) -> Vec<String>,
) -> Setup {
    let fake = FakeAzure::start().await;
    fake.add_vault("kv1", TENANT);
    fake.add_federated_identity(TENANT, IB_ID, IB_TOKEN);
    fake.add_federated_identity(TENANT, IB_ID, WI_TOKEN);
    fake.grant("kv1", IB_ID, &["get"]);
    let proxy = FakeTokenProxy::start(&fake, CLUSTER_ID, proxy_name).await;
    let mut args = Env::args(&fake, &[]);
    args.push(format!("--resolve={API_SERVER_HOST}=127.0.0.1"));
    args.push(format!(
        "--token-proxy-url=https://{API_SERVER_HOST}:{}",
        proxy.port
    ));
    args.extend(flags(&fake, &proxy));
    let port = proxy.port.to_string();
    let provider = Provider::start_with_env(&args, &[("KUBERNETES_SERVICE_PORT", &port)]);
    let cloud_file = fake.write_cloud_env_file().display().to_string();
    let env = CheckedEnv {
        base: Env {
            fake,
            provider,
            cloud_file,
        },
        sensitive: vec![IB_TOKEN.to_owned(), WI_TOKEN.to_owned()],
    };
    Setup { env, proxy }
}

/// The tokens attribute with both audiences the driver's chart requests.
fn tokens() -> String {
    serde_json::json!({
        "api://AzureADTokenExchange": { "token": WI_TOKEN, "expirationTimestamp": "2099-01-01T00:00:00Z" },
        "api://AKSIdentityBinding": { "token": IB_TOKEN, "expirationTimestamp": "2099-01-01T00:00:00Z" },
    })
    .to_string()
}

fn binding_params(env: &Env) -> Vec<(&'static str, String)> {
    env.params(
        &["objectName: s\nobjectType: secret"],
        &[
            ("useAzureTokenProxy", "true".to_owned()),
            ("clientID", IB_ID.to_owned()),
            ("csi.storage.k8s.io/serviceAccount.tokens", tokens()),
        ],
    )
}

fn token_requests_seen(proxy: &FakeTokenProxy) -> Vec<String> {
    proxy
        .seen()
        .into_iter()
        .filter(|s| s.path_and_query.contains("/oauth2/"))
        .map(|s| format!("{} {} {}", s.sni, s.host, s.path_and_query))
        .collect()
}

/// The computed server name: the API server's certificate is read for the cluster id, the token
/// request goes through the proxy with that name, the Host header is the proxy's, the token is
/// cached, and a workload-identity Mount of the same client never gets the proxy's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_go_through_the_proxy_with_the_computed_server_name() {
    let expected_name = server_name_for_cluster(CLUSTER_ID);
    let Setup { mut env, proxy } = setup(&expected_name, |_, proxy| {
        vec![format!(
            "--token-proxy-ca-file={}",
            proxy.ca_file().display()
        )]
    })
    .await;
    env.secret("s", "bound-value");
    let resp = env
        .mount(&binding_params(&env), NO_SECRET_REF)
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", env.provider.logs()));
    assert_eq!(files(&resp)[0].1, b"bound-value");
    let seen = proxy.seen();
    assert!(
        seen.iter()
            .any(|s| s.sni == API_SERVER_HOST && s.path_and_query == "/"),
        "the API server was asked for its certificate: {seen:?}"
    );
    assert_eq!(
        token_requests_seen(&proxy),
        [format!(
            "{expected_name} {API_SERVER_HOST}:{} /{TENANT}/oauth2/v2.0/token",
            proxy.port
        )]
    );
    let vault_principals: Vec<Option<String>> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.is_vault("kv1") && r.status == 200)
        .map(|r| r.principal)
        .collect();
    assert_eq!(vault_principals, [Some(IB_ID.to_owned())]);

    // Cached: the next Mount asks for no token.
    env.mount(&binding_params(&env), NO_SECRET_REF)
        .await
        .expect("second mount");
    assert_eq!(token_requests_seen(&proxy).len(), 1);

    // Workload identity of the same client id: its own token, straight to the authority.
    let wi = env.params(
        &["objectName: s\nobjectType: secret"],
        &[
            ("clientID", IB_ID.to_owned()),
            ("csi.storage.k8s.io/serviceAccount.tokens", tokens()),
        ],
    );
    let before = env
        .fake
        .count(|r| r.path.contains("/oauth2/") && r.status == 200);
    env.mount(&wi, NO_SECRET_REF)
        .await
        .expect("workload identity mount");
    assert_eq!(
        env.fake
            .count(|r| r.path.contains("/oauth2/") && r.status == 200),
        before + 1,
        "workload identity got a token of its own"
    );
    assert_eq!(
        token_requests_seen(&proxy).len(),
        1,
        "not through the proxy"
    );
    env.assert_no_leaks();
}

/// A wrong `--sni-name`: the proxy has no certificate for it; the message names the flag and
/// the CA file, and nothing is mounted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_server_name_fails_naming_sni_name() {
    let expected_name = server_name_for_cluster(CLUSTER_ID);
    let Setup { mut env, proxy } = setup(&expected_name, |_, proxy| {
        vec![
            format!("--token-proxy-ca-file={}", proxy.ca_file().display()),
            "--sni-name=aother.ests.aks".to_owned(),
        ]
    })
    .await;
    env.secret("s", "value-behind-the-proxy");
    let err = env
        .mount(&binding_params(&env), NO_SECRET_REF)
        .await
        .expect_err("wrong SNI");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("--sni-name")
            && err.message().contains("aother.ests.aks")
            && err
                .message()
                .contains(&proxy.ca_file().display().to_string()),
        "{}",
        err.message()
    );
    assert!(
        !proxy
            .seen()
            .iter()
            .any(|s| s.path_and_query.contains("/oauth2/")),
        "no request got through"
    );
    env.assert_no_leaks();
}

/// A CA the proxy's certificate does not chain to: the message names the CA file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_cluster_ca_fails_naming_the_file() {
    let expected_name = server_name_for_cluster(CLUSTER_ID);
    let name = expected_name.clone();
    // The fake Azure's CA is not the cluster's.
    let Setup {
        mut env,
        proxy: _proxy,
    } = setup(&expected_name, move |fake, _| {
        vec![
            format!("--sni-name={name}"),
            format!("--token-proxy-ca-file={}", fake.ca_file().display()),
        ]
    })
    .await;
    let wrong_ca = env.fake.ca_file();
    env.secret("s", "value-behind-the-proxy");
    let err = env
        .mount(&binding_params(&env), NO_SECRET_REF)
        .await
        .expect_err("untrusted CA");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains(&wrong_ca.display().to_string())
            && err.message().contains("cluster's CA"),
        "{}",
        err.message()
    );
    env.assert_no_leaks();
}

/// Bad `--token-proxy-url` values stop the process at start with one clear line.
#[test]
fn bad_proxy_urls_are_refused_at_start() {
    for (url, reason) in [
        ("http://proxy.test", "is not https"),
        ("https://user:pw@proxy.test", "has user info"),
        ("https://proxy.test/?x=1", "has a query"),
        ("https://proxy.test/#f", "has a fragment"),
    ] {
        let dir = tempfile::tempdir().expect("dir");
        let out = std::process::Command::new(support::provider::binary())
            .arg(format!(
                "--endpoint=unix://{}",
                dir.path().join("azure.sock").display()
            ))
            .arg(format!("--token-proxy-url={url}"))
            .arg("--healthz-port=0")
            .arg("--prometheus-port=0")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{url}");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains(&format!("--token-proxy-url \\\"{url}\\\" {reason}"))
                || log.contains(&format!("--token-proxy-url \"{url}\" {reason}")),
            "{url}: {log}"
        );
    }
}

//! A fake Kubernetes API server that answers only TokenReviews
//! (`POST /apis/authentication.k8s.io/v1/tokenreviews`), over TLS on 127.0.0.1 with a CA of its
//! own, for the provider's `--kubeconfig`.
//!
//! The answers have the shape kube-apiserver gives (the created TokenReview echoing `spec`, with
//! `status.user.extra` naming the bound pod, `status.error` on refusal; a `Status` object with
//! code 401/403 when the caller may not review). The cluster end-to-end tests run the same
//! scenarios against a real kube-apiserver.

use super::tls_server::TlsServer;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Bytes, body::Incoming};
use rcgen::{CertificateParams, DnType, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};

/// The bearer token the provider's kubeconfig carries.
pub const CALLER_TOKEN: &str = "provider-service-account-token";

/// What the fake knows of one service-account token.
#[derive(Debug, Clone)]
pub struct KnownToken {
    /// `system:serviceaccount:<ns>:<name>`.
    pub username: String,
    /// Bound pod name (None: a token not bound to a pod).
    pub pod_name: Option<String>,
    /// Bound pod uid.
    pub pod_uid: String,
    /// The token's audiences.
    pub audiences: Vec<String>,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, KnownToken>,
    /// Answer every review with this HTTP status (a `Status` object), e.g. 403 without RBAC.
    fail_with: Option<u16>,
    reviews: usize,
}

/// The running fake; stops when dropped.
pub struct FakeKubeApi {
    /// Port on 127.0.0.1.
    pub port: u16,
    server: TlsServer,
    dir: tempfile::TempDir,
    state: Arc<Mutex<State>>,
}

impl FakeKubeApi {
    /// Starts the fake and writes a kubeconfig for it ([`Self::kubeconfig`]).
    pub async fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("fake-kube-api-")
            .tempdir()
            .expect("temp dir");
        let (ca_pem, config) = tls();
        let state = Arc::new(Mutex::new(State::default()));
        let for_server = state.clone();
        let server = TlsServer::start(config, move |_sni, req| {
            let state = for_server.clone();
            async move { answer(&state, req).await }
        })
        .await;
        let kubeconfig = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {
                "server": format!("https://127.0.0.1:{}", server.port),
                "certificate-authority-data": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &ca_pem),
            }}],
            "users": [{"name": "provider", "user": {"token": CALLER_TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "provider"}}],
            "current-context": "fake",
        });
        std::fs::write(dir.path().join("kubeconfig"), kubeconfig.to_string()).expect("kubeconfig");
        Self {
            port: server.port,
            server,
            dir,
            state,
        }
    }

    /// A kubeconfig for the fake (server, CA, the provider's bearer token).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// Makes `token` a valid token of service account `ns/sa`, bound to pod `ns/pod` (`None`:
    /// not bound to a pod) with `uid`, for `audience`.
    pub fn add_token(
        &self,
        token: &str,
        ns: &str,
        sa: &str,
        pod: Option<&str>,
        uid: &str,
        audience: &str,
    ) {
        self.state.lock().expect("state").tokens.insert(
            token.to_owned(),
            KnownToken {
                username: format!("system:serviceaccount:{ns}:{sa}"),
                pod_name: pod.map(str::to_owned),
                pod_uid: uid.to_owned(),
                audiences: vec![audience.to_owned()],
            },
        );
    }

    /// Forgets `token`, as the API server does once its pod is deleted.
    pub fn revoke(&self, token: &str) {
        self.state.lock().expect("state").tokens.remove(token);
    }

    /// Answers every review with HTTP `code` (`None`: normal answers again).
    pub fn fail_with(&self, code: Option<u16>) {
        self.state.lock().expect("state").fail_with = code;
    }

    /// TokenReviews received.
    pub fn reviews(&self) -> usize {
        self.state.lock().expect("state").reviews
    }
}

fn json_response(code: u16, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("response")
}

/// A `Status` object as kube-apiserver sends with an error.
fn status(code: u16, reason: &str, message: &str) -> Response<Full<Bytes>> {
    json_response(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
            "details": {"group": "authentication.k8s.io", "kind": "tokenreviews"},
        }),
    )
}

async fn answer(state: &Mutex<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    if bearer.as_deref() != Some(&format!("Bearer {CALLER_TOKEN}")) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    if method != hyper::Method::POST || path != "/apis/authentication.k8s.io/v1/tokenreviews" {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
    }
    let mut state = state.lock().expect("state");
    state.reviews += 1;
    if let Some(code) = state.fail_with {
        return match code {
            403 => status(
                403,
                "Forbidden",
                "tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:kube-system:akv-csi-provider\" cannot create resource \"tokenreviews\" in API group \"authentication.k8s.io\" at the cluster scope",
            ),
            code => status(
                code,
                "InternalError",
                "Internal error occurred: etcdserver: request timed out",
            ),
        };
    }
    let Ok(review) = serde_json::from_slice::<Value>(&body) else {
        return status(400, "BadRequest", "the body is not a TokenReview");
    };
    let spec = review["spec"].clone();
    let status_json = review_status(&state.tokens, &spec);
    json_response(
        201,
        &json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec,
            "status": status_json,
        }),
    )
}

/// The `status` of a TokenReview of `spec`.
fn review_status(tokens: &HashMap<String, KnownToken>, spec: &Value) -> Value {
    let token = spec["token"].as_str().unwrap_or_default();
    let wanted: Vec<String> = spec["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    match tokens.get(token) {
        None => {
            json!({"user": {}, "error": "[invalid bearer token, service account token has been invalidated]"})
        }
        Some(known) => {
            let both: Vec<&String> = wanted
                .iter()
                .filter(|a| known.audiences.contains(a))
                .collect();
            if both.is_empty() {
                json!({"user": {}, "error": format!(
                    "[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]",
                    known.audiences, wanted
                )})
            } else {
                let mut extra = json!({
                    "authentication.kubernetes.io/credential-id": ["JTI=0f3b5c1e-1111-4000-8000-000000000001"],
                    "authentication.kubernetes.io/node-name": ["node-1"],
                    "authentication.kubernetes.io/node-uid": ["4c1a9d52-2222-4000-8000-000000000002"],
                });
                if let Some(pod) = &known.pod_name {
                    extra["authentication.kubernetes.io/pod-name"] = json!([pod]);
                    extra["authentication.kubernetes.io/pod-uid"] = json!([known.pod_uid]);
                }
                let ns = known.username.split(':').nth(2).unwrap_or_default();
                json!({
                    "authenticated": true,
                    "user": {
                        "username": known.username,
                        "uid": "5d2e8f63-3333-4000-8000-000000000003",
                        "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{ns}"), "system:authenticated"],
                        "extra": extra,
                    },
                    "audiences": both,
                })
            }
        }
    }
}

/// A CA and a server certificate for 127.0.0.1.
fn tls() -> (String, rustls::ServerConfig) {
    let ca = super::tls_server::test_ca("fake kube-apiserver CA");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]))];
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let cert = params.signed_by(&key, &ca).expect("sign");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), CertificateDer::from(ca.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    (ca.pem(), config)
}

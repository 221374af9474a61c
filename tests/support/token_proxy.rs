//! A fake of AKS's identity-binding endpoint: one TLS port on loopback that answers by server
//! name (SNI), as the API server of an AKS cluster does.
//!
//! * SNI = the token proxy's name (computed from the cluster id, see
//!   `akv_csi_provider::auth::token_proxy::server_name_for_cluster`): the token proxy. Its
//!   certificate names only that server name. A request is forwarded to the fake Entra ID of a
//!   [`FakeAzure`] (same path and query, same body) and the answer comes back unchanged.
//! * SNI = `kubernetes.default.svc.cluster.local`: the API server. Its certificate carries the
//!   SAN `hcp-kubernetes.<clusterID>.svc.cluster.local`; every request gets 403 (a client without
//!   credentials), which is all the provider needs to read the certificate.
//! * any other SNI: no certificate, the handshake fails.
//!
//! Both certificates come from a cluster CA of their own ([`FakeTokenProxy::ca_file`]), which the
//! fake Azure's CA is not. Every connection and forwarded request is recorded.

use super::fake_azure::{AUTHORITY_HOST, FakeAzure};
use super::tls_server::TlsServer;
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use rcgen::{
    CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The API server's in-cluster name.
pub const API_SERVER_HOST: &str = "kubernetes.default.svc.cluster.local";

/// One request the fake saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The TLS server name the client sent.
    pub sni: String,
    /// The `Host` header.
    pub host: String,
    /// Path and query.
    pub path_and_query: String,
}

/// The running fake; stops when dropped.
pub struct FakeTokenProxy {
    /// The port of the TLS server on 127.0.0.1.
    pub port: u16,
    /// The token proxy's TLS server name.
    pub server_name: String,
    dir: tempfile::TempDir,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: TlsServer,
}

struct ByName {
    proxy_name: String,
    proxy: Arc<CertifiedKey>,
    api_server: Arc<CertifiedKey>,
}

impl std::fmt::Debug for ByName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ByName")
    }
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match hello.server_name() {
            Some(name) if name.eq_ignore_ascii_case(&self.proxy_name) => Some(self.proxy.clone()),
            Some(name) if name.eq_ignore_ascii_case(API_SERVER_HOST) => {
                Some(self.api_server.clone())
            }
            _ => None,
        }
    }
}

fn certified(
    names: Vec<String>,
    ca: &CertifiedIssuer<'static, KeyPair>,
    provider: &rustls::crypto::CryptoProvider,
) -> Arc<CertifiedKey> {
    let key = KeyPair::generate().expect("generate key");
    let mut params = CertificateParams::new(names).expect("cert params");
    params
        .distinguished_name
        .push(DnType::CommonName, "fake cluster endpoint");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, ca).expect("sign cert");
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .expect("load key");
    Arc::new(CertifiedKey::new(
        vec![cert.der().clone(), CertificateDer::from(ca.der().to_vec())],
        signing,
    ))
}

impl FakeTokenProxy {
    /// Starts the fake for `cluster_id`, forwarding token requests to `azure`'s Entra ID.
    /// `proxy_name` is the server name the token proxy's certificate is for.
    pub async fn start(azure: &FakeAzure, cluster_id: &str, proxy_name: &str) -> Self {
        let (ca_pem, config) = tls(cluster_id, proxy_name);
        let dir = tempfile::Builder::new()
            .prefix("fake-token-proxy-")
            .tempdir()
            .expect("temp dir");
        std::fs::write(dir.path().join("ca.crt"), ca_pem).expect("write cluster CA");

        let seen = Arc::new(Mutex::new(Vec::new()));
        let forward = reqwest::Client::builder()
            .tls_certs_only(
                reqwest::Certificate::from_pem_bundle(azure.ca_pem().as_bytes())
                    .expect("fake Azure CA"),
            )
            .resolve(
                AUTHORITY_HOST,
                std::net::SocketAddr::from(([127, 0, 0, 1], azure.port())),
            )
            .build()
            .expect("forwarding client");
        let authority = format!("https://{AUTHORITY_HOST}:{}", azure.port());
        let state = (seen.clone(), proxy_name.to_owned(), forward, authority);
        let server =
            TlsServer::start(config, move |sni, req| answer(state.clone(), sni, req)).await;
        Self {
            port: server.port,
            server_name: proxy_name.to_owned(),
            dir,
            seen,
            server,
        }
    }

    /// The cluster CA (PEM) both certificates chain to.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }
}

/// The cluster CA (PEM) and the TLS configuration that picks the certificate by server name.
fn tls(cluster_id: &str, proxy_name: &str) -> (String, ServerConfig) {
    let ca = super::tls_server::test_ca("fake cluster CA");
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let resolver = ByName {
        proxy_name: proxy_name.to_owned(),
        proxy: certified(vec![proxy_name.to_owned()], &ca, &provider),
        api_server: certified(
            vec![
                API_SERVER_HOST.to_owned(),
                format!("hcp-kubernetes.{cluster_id}.svc.cluster.local"),
                "kubernetes".to_owned(),
            ],
            &ca,
            &provider,
        ),
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca.pem(), config)
}

type State = (Arc<Mutex<Vec<Seen>>>, String, reqwest::Client, String);

async fn answer(state: State, sni: String, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (seen, proxy_name, forward, authority) = state;
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    seen.lock().expect("seen").push(Seen {
        sni: sni.clone(),
        host,
        path_and_query: path_and_query.clone(),
    });
    let reply = |status: StatusCode, body: Bytes, content_type: &str| {
        Response::builder()
            .status(status)
            .header(hyper::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .expect("response")
    };
    if !sni.eq_ignore_ascii_case(&proxy_name) {
        return reply(
            StatusCode::FORBIDDEN,
            Bytes::from_static(
                br#"{"kind":"Status","status":"Failure","reason":"Forbidden","code":403}"#,
            ),
            "application/json",
        );
    }
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-www-form-urlencoded")
        .to_owned();
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let upstream = forward
        .request(method, format!("{authority}{path_and_query}"))
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body)
        .send()
        .await;
    match upstream {
        Ok(response) => {
            let status =
                StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/json")
                .to_owned();
            let body = response.bytes().await.unwrap_or_default();
            reply(status, body, &content_type)
        }
        Err(e) => reply(
            StatusCode::BAD_GATEWAY,
            Bytes::from(format!("forwarding failed: {e}")),
            "text/plain",
        ),
    }
}

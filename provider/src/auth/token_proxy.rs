//! AKS identity binding (`useAzureTokenProxy`): the workload-identity token request, sent through
//! the cluster's token proxy instead of to the authority host.
//!
//! The request is the ordinary client-assertion POST to `/<tenant>/oauth2/v2.0/token` (the
//! assertion is the pod's service-account token for `api://AKSIdentityBinding`); only where it
//! goes changes: the proxy URL (`--token-proxy-url`, default
//! `https://kubernetes.default.svc.cluster.local`) joined with the request's path, query kept.
//! The TLS connection to the proxy trusts only the cluster CA file (the pod's service-account
//! `ca.crt`, re-read when kubelet rotates it) and names the proxy by a server name of its own
//! (SNI and certificate check): `--sni-name`, or computed from the API server's serving
//! certificate, whose SAN `hcp-kubernetes.<clusterID>.svc.cluster.local` carries the cluster id.
//! The `Host` header stays the proxy URL's host. Key Vault calls go to the vault as usual.
//!
//! The Rust SDK's client-assertion credential does no instance discovery, so there is nothing to
//! turn off for this mode.

use super::super::transport::Resolver;
use async_trait::async_trait;
use azure_core::{
    error::ErrorKind,
    http::{AsyncRawResponse, HttpClient, Request, Url, headers::HeaderName},
};
use sha2::{Digest, Sha256};
use std::{
    path::{Path, PathBuf},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

/// The token proxy when `--token-proxy-url` is not set: the in-cluster API server.
pub const DEFAULT_TOKEN_PROXY_URL: &str = "https://kubernetes.default.svc.cluster.local";
/// The cluster CA the connection to the proxy trusts: the pod's service-account `ca.crt`.
pub const DEFAULT_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// The API server's in-cluster name, dialled to read the cluster id from its certificate.
pub const API_SERVER_HOST: &str = "kubernetes.default.svc.cluster.local";
/// Largest CA file read.
const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;
/// Dial and handshake limit of the API-server probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const SAN_PREFIX: &str = "hcp-kubernetes.";
const SAN_SUFFIX: &str = ".svc.cluster.local";
const SNI_SALT: &str = "identity-binding";

/// Errors setting up the route to the token proxy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenProxyError {
    /// `--token-proxy-url` is not a plain `https` URL.
    #[error(
        "--token-proxy-url \"{url}\" {reason}: give an https URL without user info, query or fragment, such as {DEFAULT_TOKEN_PROXY_URL}"
    )]
    ProxyUrl {
        /// The value (cut).
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// `--sni-name` is not a DNS name.
    #[error("--sni-name \"{0}\" is not a DNS name")]
    SniName(String),
    /// The cluster CA file cannot be read or holds no certificate.
    #[error(
        "the cluster CA file {path} for the identity-binding token proxy {reason} (it is the pod's service-account ca.crt: keep automountServiceAccountToken on, or set --token-proxy-ca-file)"
    )]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The API server could not be asked for its certificate (for the computed server name).
    #[error(
        "reading the cluster id from the API server's certificate at {address} failed ({reason}); set --sni-name to the token proxy's TLS server name to skip this step"
    )]
    ApiServer {
        /// `host:port` dialled.
        address: String,
        /// What failed.
        reason: String,
    },
    /// The API server's certificate has no `hcp-kubernetes.<clusterID>.svc.cluster.local` SAN.
    #[error(
        "the API server's certificate at {address} has no SAN hcp-kubernetes.<clusterID>.svc.cluster.local to compute the token proxy's TLS server name from (is this an AKS cluster with identity binding?); set --sni-name"
    )]
    NoClusterId {
        /// `host:port` dialled.
        address: String,
    },
    /// The TLS client could not be built.
    #[error("building the identity-binding token proxy client failed: {0}")]
    Build(String),
}

impl TokenProxyError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ProxyUrl { .. } => "token_proxy_url",
            Self::SniName(_) => "sni_name",
            Self::CaFile { .. } => "token_proxy_ca_file",
            Self::ApiServer { .. } => "token_proxy_api_server",
            Self::NoClusterId { .. } => "token_proxy_cluster_id",
            Self::Build(_) => "token_proxy_build",
        }
    }
}

/// Settings of the token-proxy route, from flags.
#[derive(Debug, Clone, Default)]
pub struct TokenProxyConfig {
    /// `--token-proxy-url`; empty for [`DEFAULT_TOKEN_PROXY_URL`].
    pub url: String,
    /// `--sni-name`; empty to compute it from the API server's certificate.
    pub sni_name: String,
    /// `--token-proxy-ca-file`; `None` for [`DEFAULT_CA_FILE`].
    pub ca_file: Option<PathBuf>,
    /// The API server's port for the computed server name (`KUBERNETES_SERVICE_PORT`, else 443).
    pub api_server_port: Option<u16>,
    /// `--resolve` overrides, applied to the proxy and API server host names too.
    pub resolve: Vec<String>,
}

/// The TLS server name of the token proxy for a cluster id: `a` + unpadded base32hex of
/// SHA-256(`identity-binding` + id), lowercased, + `.ests.aks`.
pub fn server_name_for_cluster(cluster_id: &str) -> String {
    let digest = Sha256::digest(format!("{SNI_SALT}{cluster_id}").as_bytes());
    let encoded = data_encoding::BASE32HEX_NOPAD.encode(&digest);
    format!("a{}.ests.aks", encoded.to_ascii_lowercase())
}

/// The cluster id in a SAN `hcp-kubernetes.<id>.svc.cluster.local`.
fn cluster_id_of(san: &str) -> Option<&str> {
    san.strip_prefix(SAN_PREFIX)?
        .strip_suffix(SAN_SUFFIX)
        .filter(|id| !id.is_empty())
}

/// Checks `--token-proxy-url`: https, a host, no user info, query or fragment.
pub fn proxy_url(text: &str) -> Result<Url, TokenProxyError> {
    let text = if text.trim().is_empty() {
        DEFAULT_TOKEN_PROXY_URL
    } else {
        text.trim()
    };
    let fail = |reason| TokenProxyError::ProxyUrl {
        url: crate::text::printable(text, 200),
        reason,
    };
    let url = Url::parse(text).map_err(|_| fail("is not a URL"))?;
    if url.scheme() != "https" {
        return Err(fail("is not https"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(fail("has user info"));
    }
    if url.query().is_some() {
        return Err(fail("has a query"));
    }
    if url.fragment().is_some() {
        return Err(fail("has a fragment"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(fail("has no host"));
    }
    Ok(url)
}

/// `request` as sent to the proxy: the proxy URL's path joined with the request's path, the
/// request's query kept, the host replaced by `server_name` (what TLS names; the connection goes
/// to the proxy's address) on the proxy's port.
fn proxied_url(proxy: &Url, original: &Url, server_name: &str) -> Result<Url, url::ParseError> {
    let base = proxy.path().trim_end_matches('/');
    let mut url = Url::parse(&format!(
        "https://{server_name}:{}/",
        proxy.port_or_known_default().unwrap_or(443)
    ))?;
    url.set_path(&format!("{base}{}", original.path()));
    url.set_query(original.query());
    Ok(url)
}

/// The proxy's `Host` header: its host and, when not 443, its port.
fn authority(proxy: &Url) -> String {
    let host = proxy.host_str().unwrap_or_default();
    match proxy.port() {
        Some(port) if port != 443 => format!("{host}:{port}"),
        _ => host.to_owned(),
    }
}

/// The client of one CA file's contents.
struct Route {
    ca: Vec<u8>,
    server_name: String,
    client: reqwest::Client,
}

/// The HTTP transport of identity-binding credentials: every request goes to the token proxy.
pub struct TokenProxyTransport {
    proxy: Url,
    fixed_server_name: Option<String>,
    ca_file: PathBuf,
    api_server_port: u16,
    resolver: Arc<Resolver>,
    route: tokio::sync::Mutex<Option<Arc<Route>>>,
}

impl std::fmt::Debug for TokenProxyTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProxyTransport")
            .field("proxy", &self.proxy.as_str())
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

impl TokenProxyTransport {
    /// Checks the flags; nothing is dialled or read until the first identity-binding token.
    pub fn new(
        config: &TokenProxyConfig,
    ) -> Result<Arc<Self>, super::super::transport::TransportError> {
        let proxy = proxy_url(&config.url)
            .map_err(|e| super::super::transport::TransportError::Build(e.to_string()))?;
        let sni = config.sni_name.trim();
        let fixed_server_name = if sni.is_empty() {
            None
        } else if reqwest::dns::Name::from_str(sni).is_ok()
            && sni
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            Some(sni.to_ascii_lowercase())
        } else {
            return Err(super::super::transport::TransportError::Build(
                TokenProxyError::SniName(crate::text::printable(sni, 200)).to_string(),
            ));
        };
        Ok(Arc::new(Self {
            proxy,
            fixed_server_name,
            ca_file: config
                .ca_file
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CA_FILE)),
            api_server_port: config.api_server_port.unwrap_or(443),
            resolver: Arc::new(Resolver::from_flags(&config.resolve)?),
            route: tokio::sync::Mutex::new(None),
        }))
    }

    /// The SDK transport option wrapping this client.
    pub fn sdk_transport(self: &Arc<Self>) -> azure_core::http::Transport {
        azure_core::http::Transport::new(self.clone())
    }

    /// The route for the CA file as it is now: built anew when the file changed.
    async fn route(&self) -> Result<Arc<Route>, TokenProxyError> {
        let ca = read_ca(&self.ca_file).await?;
        let mut current = self.route.lock().await;
        if let Some(route) = current.as_ref()
            && route.ca == ca
        {
            return Ok(route.clone());
        }
        let roots = certificates(&ca, &self.ca_file)?;
        let server_name = match (&self.fixed_server_name, current.as_ref()) {
            (Some(name), _) => name.clone(),
            // The cluster id does not change with the CA.
            (None, Some(previous)) => previous.server_name.clone(),
            (None, None) => self.compute_server_name(&roots).await?,
        };
        let client = reqwest::Client::builder()
            .tls_certs_only(roots)
            .tls_version_min(reqwest::tls::Version::TLS_1_2)
            .connect_timeout(PROBE_TIMEOUT)
            .timeout(Duration::from_secs(30))
            .dns_resolver(Arc::new(Alias {
                from: server_name.clone(),
                to: self.proxy.host_str().unwrap_or_default().to_owned(),
                resolver: self.resolver.clone(),
            }))
            .build()
            .map_err(|e| TokenProxyError::Build(e.to_string()))?;
        if current.is_some() {
            tracing::info!(file = %self.ca_file.display(), "the cluster CA file changed; the token proxy connection trusts the new one");
        }
        let route = Arc::new(Route {
            ca,
            server_name,
            client,
        });
        *current = Some(route.clone());
        Ok(route)
    }

    /// Reads the cluster id from the API server's serving certificate and derives the name.
    async fn compute_server_name(
        &self,
        roots: &[reqwest::Certificate],
    ) -> Result<String, TokenProxyError> {
        let address = format!("{API_SERVER_HOST}:{}", self.api_server_port);
        let fail = |reason: String| TokenProxyError::ApiServer {
            address: address.clone(),
            reason: crate::text::printable(&reason, 300),
        };
        let client = reqwest::Client::builder()
            .tls_certs_only(roots.iter().cloned())
            .tls_version_min(reqwest::tls::Version::TLS_1_2)
            .tls_info(true)
            .connect_timeout(PROBE_TIMEOUT)
            .timeout(PROBE_TIMEOUT)
            .dns_resolver(self.resolver.clone())
            .build()
            .map_err(|e| TokenProxyError::Build(e.to_string()))?;
        // Any answer will do (401 or 403 without credentials): only the certificate is read.
        let response = client
            .get(format!("https://{address}/"))
            .send()
            .await
            .map_err(|e| fail(crate::text::chain(&e, 300)))?;
        let leaf = response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(reqwest::tls::TlsInfo::peer_certificate)
            .ok_or_else(|| fail("no certificate was presented".into()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| fail(format!("its certificate does not parse: {e}")))?;
        let cluster_id = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .into_iter()
            .flat_map(|san| san.value.general_names.iter())
            .find_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => cluster_id_of(dns),
                _ => None,
            })
            .ok_or(TokenProxyError::NoClusterId {
                address: address.clone(),
            })?;
        let name = server_name_for_cluster(cluster_id);
        tracing::info!(server_name = %name, "computed the token proxy's TLS server name from the API server's certificate");
        Ok(name)
    }
}

#[async_trait]
impl HttpClient for TokenProxyTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let route = self
            .route()
            .await
            .map_err(|e| azure_core::Error::with_message(ErrorKind::Credential, e.to_string()))?;
        let url = proxied_url(&self.proxy, request.url(), &route.server_name).map_err(|e| {
            azure_core::Error::with_message(ErrorKind::Other, format!("token proxy URL: {e}"))
        })?;
        let mut proxied = request.clone();
        *proxied.url_mut() = url;
        proxied.insert_header(HeaderName::from_static("host"), authority(&self.proxy));
        let response = route.client.execute_request(&proxied).await.map_err(|e| {
            // One self-contained line: the advice must survive the middle being cut from long
            // details, and rustls' "invalid peer certificate" must not draw the --ca-file hint
            // meant for Key Vault.
            let cause = innermost(&e).replace("invalid peer certificate", "certificate rejected");
            azure_core::Error::with_message(
                ErrorKind::Connection,
                format!(
                    "the connection to the identity-binding token proxy {} failed ({cause}): check --sni-name (now {}) and that {} is the cluster's CA",
                    authority(&self.proxy),
                    route.server_name,
                    self.ca_file.display()
                ),
            )
        })?;
        crate::transport::readable_token_error(request.url(), response).await
    }
}

/// The deepest cause of an error (the TLS or socket reason).
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    crate::text::printable(&current.to_string(), 120)
}

/// Resolves the token proxy's TLS server name to the proxy host's addresses.
#[derive(Debug)]
struct Alias {
    from: String,
    to: String,
    resolver: Arc<Resolver>,
}

impl reqwest::dns::Resolve for Alias {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let target = if name.as_str().eq_ignore_ascii_case(&self.from) {
            reqwest::dns::Name::from_str(&self.to).unwrap_or(name)
        } else {
            name
        };
        self.resolver.resolve(target)
    }
}

async fn read_ca(path: &Path) -> Result<Vec<u8>, TokenProxyError> {
    let fail = |reason: String| TokenProxyError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| fail(format!("cannot be read: {e}")))?;
    if meta.len() > MAX_CA_FILE_BYTES {
        return Err(fail(format!("is larger than {MAX_CA_FILE_BYTES} bytes")));
    }
    tokio::fs::read(path)
        .await
        .map_err(|e| fail(format!("cannot be read: {e}")))
}

fn certificates(pem: &[u8], path: &Path) -> Result<Vec<reqwest::Certificate>, TokenProxyError> {
    let fail = |reason: String| TokenProxyError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| fail(format!("is not a PEM bundle: {e}")))?;
    if certs.is_empty() {
        return Err(fail("holds no PEM CERTIFICATE".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected names computed independently (Python: `"a" + base64.b32hexencode(
    /// hashlib.sha256(b"identity-binding" + id).digest()).decode().rstrip("=").lower() +
    /// ".ests.aks"`).
    #[test]
    fn server_name_from_a_known_cluster_id() {
        assert_eq!(
            server_name_for_cluster("6543210fedcba9876543210f"),
            "ajvpouph2u7rsj4ltdkmb91oin0aff4cc4bsns100sbptg6upk900.ests.aks"
        );
        assert_eq!(
            server_name_for_cluster("abc"),
            "ar47lgcnhtn52tohpbtporqbc5cjfjah6gmfdpri09hpae1b0v370.ests.aks"
        );
        assert_eq!(
            cluster_id_of("hcp-kubernetes.6543210fedcba9876543210f.svc.cluster.local"),
            Some("6543210fedcba9876543210f")
        );
        for other in [
            "hcp-kubernetes..svc.cluster.local",
            "kubernetes.default.svc.cluster.local",
            "hcp-kubernetes.x.svc.cluster.local.evil",
        ] {
            assert_eq!(cluster_id_of(other), None, "{other}");
        }
    }

    #[test]
    fn proxy_urls_are_plain_https() {
        assert_eq!(
            proxy_url("").map(|u| u.to_string()),
            Ok("https://kubernetes.default.svc.cluster.local/".to_owned())
        );
        assert!(proxy_url("https://proxy.example:8443/base").is_ok());
        for (bad, reason) in [
            ("http://proxy.example", "is not https"),
            ("https://user:pw@proxy.example", "has user info"),
            ("https://user@proxy.example", "has user info"),
            ("https://proxy.example/?a=b", "has a query"),
            ("https://proxy.example/#x", "has a fragment"),
            ("not a url", "is not a URL"),
        ] {
            let e = proxy_url(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                e.starts_with(&format!("--token-proxy-url \"{bad}\" {reason}: ")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn requests_are_rewritten_to_the_proxy() {
        let original =
            Url::parse("https://login.microsoftonline.com/tenant-1/oauth2/v2.0/token?x=1&y=%2F")
                .unwrap_or_else(|_| unreachable!());
        let proxy = proxy_url("https://kubernetes.default.svc.cluster.local")
            .unwrap_or_else(|_| unreachable!());
        let got = proxied_url(&proxy, &original, "a1.ests.aks").map(|u| u.to_string());
        assert_eq!(
            got,
            Ok("https://a1.ests.aks/tenant-1/oauth2/v2.0/token?x=1&y=%2F".to_owned())
        );
        assert_eq!(authority(&proxy), "kubernetes.default.svc.cluster.local");
        let proxy =
            proxy_url("https://proxy.example:8443/base/").unwrap_or_else(|_| unreachable!());
        let got = proxied_url(&proxy, &original, "a1.ests.aks").map(|u| u.to_string());
        assert_eq!(
            got,
            Ok("https://a1.ests.aks:8443/base/tenant-1/oauth2/v2.0/token?x=1&y=%2F".to_owned())
        );
        assert_eq!(authority(&proxy), "proxy.example:8443");
    }

    #[tokio::test]
    async fn the_ca_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let path = dir.path().join("ca.crt");
        let first = rcgen::generate_simple_self_signed(vec!["one.test".to_owned()])
            .unwrap_or_else(|_| unreachable!());
        let second = rcgen::generate_simple_self_signed(vec!["two.test".to_owned()])
            .unwrap_or_else(|_| unreachable!());
        std::fs::write(&path, first.cert.pem()).unwrap_or_else(|_| unreachable!());
        let transport = TokenProxyTransport::new(&TokenProxyConfig {
            sni_name: "a1.ests.aks".into(),
            ca_file: Some(path.clone()),
            ..TokenProxyConfig::default()
        })
        .unwrap_or_else(|_| unreachable!());
        let a = transport.route().await.map(|r| r.ca.clone());
        let again = transport.route().await.map(|r| r.ca.clone());
        assert_eq!(a, again);
        std::fs::write(&path, second.cert.pem()).unwrap_or_else(|_| unreachable!());
        let b = transport.route().await.map(|r| r.ca.clone());
        assert_eq!(b.as_deref().ok(), Some(second.cert.pem().as_bytes()));
        assert_ne!(a, b);
        std::fs::write(&path, "not a certificate").unwrap_or_else(|_| unreachable!());
        let e = transport
            .route()
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains(&path.display().to_string()), "{e}");
        std::fs::remove_file(&path).unwrap_or_else(|_| unreachable!());
        let e = transport
            .route()
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with(&format!(
                "the cluster CA file {} for the identity-binding token proxy cannot be read",
                path.display()
            )),
            "{e}"
        );
    }
}

//! The one HTTP client shared by every credential and Key Vault client.
//!
//! It trusts the system roots plus an optional `--ca-file`, applies `--resolve` overrides, appends
//! `--custom-user-agent` to the SDK's User-Agent and sends managed-identity requests to
//! `--imds-endpoint`. TLS verification is never disabled.

use crate::metrics::Metrics;
use async_trait::async_trait;
use azure_core::http::{AsyncRawResponse, HttpClient, Request, Transport, Url};
use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

/// The IMDS token URL the Azure SDK uses for VM managed identity.
pub const SDK_IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";
/// Most bytes of a CA file read.
const MAX_CA_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Errors building the HTTP client; all are start-up configuration errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// `--ca-file` could not be read or holds no PEM certificate.
    #[error("--ca-file {path}: {reason}")]
    CaFile {
        /// File path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A `--resolve` value is not `HOST=IP`.
    #[error(
        "--resolve \"{0}\" is not HOST=IP (HOST may start with \"*.\", IP is an IPv4 or IPv6 address)"
    )]
    Resolve(String),
    /// `--imds-endpoint` is not a URL.
    #[error("--imds-endpoint \"{0}\" is not an http(s) URL")]
    ImdsEndpoint(String),
    /// The TLS stack could not be set up.
    #[error("building the HTTP client failed: {0}")]
    Build(String),
}

impl TransportError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CaFile { .. } => "ca_file",
            Self::Resolve(_) => "resolve",
            Self::ImdsEndpoint(_) => "imds_endpoint",
            Self::Build(_) => "build",
        }
    }
}

/// Settings of the shared HTTP client.
#[derive(Debug, Clone, Default)]
pub struct TransportConfig {
    /// Extra trusted CA certificates (PEM bundle).
    pub ca_file: Option<PathBuf>,
    /// `HOST=IP` overrides.
    pub resolve: Vec<String>,
    /// Appended to the User-Agent header.
    pub user_agent_suffix: String,
    /// Where VM managed-identity token requests go.
    pub imds_endpoint: Option<String>,
    /// Where responses are counted.
    pub metrics: Option<Arc<Metrics>>,
    /// Requests to Azure in flight at once, all Mounts together; 0 means no limit.
    pub max_concurrent_requests: usize,
}

/// A host pattern and the address it resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Override {
    /// Exact host, or a suffix starting with '.' for `*.suffix`.
    host: String,
    wildcard: bool,
    ip: IpAddr,
}

impl Override {
    fn parse(text: &str) -> Result<Self, TransportError> {
        let bad = || TransportError::Resolve(text.to_owned());
        let (host, ip) = text.split_once('=').ok_or_else(bad)?;
        let ip: IpAddr = ip.trim().parse().map_err(|_| bad())?;
        let host = host.trim().to_ascii_lowercase();
        let (host, wildcard) = match host.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') && rest.len() > 1 => (rest.to_owned(), true),
            None if !host.is_empty() => (host, false),
            _ => return Err(bad()),
        };
        Ok(Self { host, wildcard, ip })
    }

    fn matches(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        if self.wildcard {
            name.ends_with(&self.host) && name.len() > self.host.len()
        } else {
            name == self.host
        }
    }
}

/// Name resolution with the `--resolve` overrides, else the system resolver.
#[derive(Debug)]
pub(crate) struct Resolver {
    overrides: Vec<Override>,
}

impl Resolver {
    /// A resolver for `--resolve` values (`HOST=IP`).
    pub(crate) fn from_flags(resolve: &[String]) -> Result<Self, TransportError> {
        let overrides = resolve
            .iter()
            .map(|r| Override::parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { overrides })
    }
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let fixed = self
            .overrides
            .iter()
            .find(|o| o.matches(&host))
            .map(|o| o.ip);
        Box::pin(async move {
            if let Some(ip) = fixed {
                let addrs: reqwest::dns::Addrs = Box::new(std::iter::once(SocketAddr::new(ip, 0)));
                return Ok(addrs);
            }
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let addrs: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

/// The shared HTTP client, used by the Azure SDK through [`HttpClient`].
#[derive(Debug)]
pub struct HttpTransport {
    client: reqwest::Client,
    user_agent_suffix: String,
    imds_endpoint: Option<Url>,
    metrics: Option<Arc<Metrics>>,
    /// Bounds connections, memory and the burst Key Vault sees when many pods mount at once.
    permits: Option<Arc<tokio::sync::Semaphore>>,
}

impl HttpTransport {
    /// Builds the client from flags.
    pub fn new(config: &TransportConfig) -> Result<Arc<Self>, TransportError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .pool_idle_timeout(Duration::from_secs(90))
            .dns_resolver(Arc::new(Resolver::from_flags(&config.resolve)?));
        if let Some(path) = &config.ca_file {
            builder = builder.tls_certs_merge(read_ca_file(path)?);
        }
        let client = builder
            .build()
            .map_err(|e| TransportError::Build(e.to_string()))?;
        let imds_endpoint = match config.imds_endpoint.as_deref() {
            None | Some(SDK_IMDS_ENDPOINT) => None,
            Some(text) => Some(
                Url::parse(text)
                    .ok()
                    .filter(|u| u.scheme() == "http" || u.scheme() == "https")
                    .ok_or_else(|| TransportError::ImdsEndpoint(text.to_owned()))?,
            ),
        };
        Ok(Arc::new(Self {
            client,
            user_agent_suffix: config.user_agent_suffix.trim().to_owned(),
            imds_endpoint,
            metrics: config.metrics.clone(),
            permits: (config.max_concurrent_requests > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests))),
        }))
    }

    /// The SDK transport option wrapping this client.
    pub fn sdk_transport(self: &Arc<Self>) -> Transport {
        Transport::new(self.clone())
    }

    /// The underlying reqwest client, for our own requests (pod identity).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The User-Agent suffix, for our own requests.
    pub fn user_agent_suffix(&self) -> &str {
        &self.user_agent_suffix
    }

    fn rewrite(&self, request: &Request) -> Option<Request> {
        let imds = self
            .imds_endpoint
            .as_ref()
            .filter(|_| request.url().as_str().starts_with(SDK_IMDS_ENDPOINT));
        if imds.is_none() && self.user_agent_suffix.is_empty() {
            return None;
        }
        let mut changed = request.clone();
        if let Some(endpoint) = imds {
            let mut url = endpoint.clone();
            url.set_query(request.url().query());
            *changed.url_mut() = url;
        }
        if !self.user_agent_suffix.is_empty() {
            let agent = request
                .headers()
                .get_optional_str(&azure_core::http::headers::USER_AGENT)
                .map_or_else(
                    || self.user_agent_suffix.clone(),
                    |ua| format!("{ua} {}", self.user_agent_suffix),
                );
            changed.insert_header(azure_core::http::headers::USER_AGENT, agent);
        }
        Some(changed)
    }
}

fn read_ca_file(path: &PathBuf) -> Result<Vec<reqwest::Certificate>, TransportError> {
    let fail = |reason: String| TransportError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if meta.len() > MAX_CA_FILE_BYTES {
        return Err(fail(format!("larger than {MAX_CA_FILE_BYTES} bytes")));
    }
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("no PEM CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// The retry policy of token requests (credential pipelines): a few quick retries, well inside a
/// Mount's deadline (the SDK default retries for up to a minute). Key Vault reads are retried by
/// `RetryingVault` instead, which knows the deadline.
pub fn retry_options() -> azure_core::http::RetryOptions {
    use azure_core::http::RetryOptions;
    RetryOptions::exponential(azure_core::http::ExponentialRetryOptions {
        initial_delay: azure_core::time::Duration::milliseconds(250),
        max_retries: 3,
        max_total_elapsed: azure_core::time::Duration::seconds(20),
        max_delay: azure_core::time::Duration::seconds(8),
    })
}

/// Whether a parse error of a response body is anywhere in the chain.
pub fn unparsable(err: &azure_core::Error) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if e.downcast_ref::<serde_json::Error>().is_some()
            || e.downcast_ref::<azure_core::Error>()
                .is_some_and(|a| matches!(a.kind(), azure_core::error::ErrorKind::DataConversion))
        {
            return true;
        }
        current = e.source();
    }
    false
}

/// Which Azure service a request is for, and the vault name for Key Vault requests.
fn service_of(url: &Url) -> (&'static str, Option<String>) {
    let path = url.path();
    let host = url.host_str().unwrap_or_default();
    if path.starts_with("/metadata/identity") || path.starts_with("/host/token") {
        return ("managed_identity", None);
    }
    if path.contains("/oauth2/") {
        return ("token", None);
    }
    let vault_paths = ["/secrets", "/keys", "/certificates", "/deleted"];
    if vault_paths.iter().any(|p| path.starts_with(p)) {
        let vault = host.split('.').next().unwrap_or(host).to_ascii_lowercase();
        return ("keyvault", Some(vault));
    }
    ("other", None)
}

/// The HTTP status and whether a transport failure (connection, I/O) is anywhere in an error chain.
pub fn http_cause(err: &azure_core::Error) -> (Option<u16>, bool) {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut status = None;
    let mut connection = false;
    while let Some(e) = current {
        if let Some(az) = e.downcast_ref::<azure_core::Error>() {
            match az.kind() {
                azure_core::error::ErrorKind::HttpResponse { status: s, .. } => {
                    status = Some(u16::from(*s));
                }
                azure_core::error::ErrorKind::Connection | azure_core::error::ErrorKind::Io => {
                    connection = true;
                }
                _ => {}
            }
        }
        if e.downcast_ref::<reqwest::Error>().is_some() {
            connection = true;
        }
        current = e.source();
    }
    (status, connection)
}

/// Largest token-endpoint error body rewritten by [`readable_token_error`]; a larger one is left
/// as it is (Entra's are well under 2 KiB).
const MAX_TOKEN_ERROR_BODY: usize = 64 * 1024;

/// A token-endpoint error answer (`/oauth2/` path, not 2xx) made readable for azure_identity.
///
/// azure_identity 1.0 reads `error_description` as a borrowed `&str`, and serde_json cannot
/// borrow a JSON string that holds an escape. Entra's real refusals all do: `Trace ID:`,
/// `Correlation ID:` and `Timestamp:` are separated by `\r\n` (e.g. `AADSTS700213: No matching
/// federated identity record found ...\r\nTrace ID: ...`). The SDK then fails with a parse
/// error, and a refused client assertion would look like an unavailable token service
/// (retried, `Unavailable`) instead of the AADSTS refusal it is (`PermissionDenied`). So the
/// body is read here, and `error_description` written back without characters that need an
/// escape (line breaks and other control characters become spaces, `"` becomes `'`, `\`
/// becomes `/`); every other field and every other response is passed through untouched.
pub(crate) async fn readable_token_error(
    request_url: &Url,
    response: AsyncRawResponse,
) -> azure_core::Result<AsyncRawResponse> {
    if response.status().is_success() || service_of(request_url).0 != "token" {
        return Ok(response);
    }
    let (status, mut headers, body) = response.deconstruct();
    let bytes = body.collect().await?;
    let rewritten = (bytes.len() <= MAX_TOKEN_ERROR_BODY)
        .then(|| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .flatten()
        .and_then(|mut value| {
            let description = value.get_mut("error_description")?;
            let text = description.as_str()?;
            if !text.chars().any(needs_escape) {
                return None;
            }
            *description = serde_json::Value::String(without_escapes(text));
            serde_json::to_vec(&value).ok()
        });
    Ok(match rewritten {
        Some(body) => {
            headers.remove(azure_core::http::headers::CONTENT_LENGTH);
            AsyncRawResponse::from_bytes(status, headers, body)
        }
        None => AsyncRawResponse::from_bytes(status, headers, bytes),
    })
}

/// Whether serde_json writes `c` as an escape inside a string.
fn needs_escape(c: char) -> bool {
    c.is_control() || c == '"' || c == '\\'
}

/// `text` with every character that needs a JSON escape replaced; a line break (`\r\n`, `\n`)
/// becomes one space.
fn without_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last_was_break = false;
    for c in text.chars() {
        let is_break = matches!(c, '\r' | '\n');
        match c {
            _ if is_break && last_was_break => {}
            '"' => out.push('\''),
            '\\' => out.push('/'),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
        last_was_break = is_break;
    }
    out
}

#[async_trait]
impl HttpClient for HttpTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        // Held until the response head arrives; retries wait outside (the SDK sleeps between
        // attempts after this returns).
        let _permit = match &self.permits {
            Some(permits) => Some(permits.acquire().await.map_err(|e| {
                azure_core::Error::with_message(azure_core::error::ErrorKind::Io, e.to_string())
            })?),
            None => None,
        };
        let result = match self.rewrite(request) {
            Some(changed) => self.client.execute_request(&changed).await,
            None => self.client.execute_request(request).await,
        };
        let result = match result {
            Ok(response) => readable_token_error(request.url(), response).await,
            Err(e) => Err(e),
        };
        if let Some(metrics) = &self.metrics {
            let (service, vault) = service_of(request.url());
            let status = result.as_ref().ok().map(|r| u16::from(r.status()));
            metrics.azure_response(service, vault.as_deref(), status);
            if let (Some(429), Some(vault), Ok(response)) =
                (status, vault.as_deref(), result.as_ref())
            {
                let wait = response
                    .headers()
                    .get_optional_str(&azure_core::http::headers::RETRY_AFTER)
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                metrics.throttled(vault, wait);
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::Method;

    #[test]
    fn token_error_descriptions_lose_their_escapes() {
        assert_eq!(
            without_escapes("AADSTS1: a.\r\nTrace ID: x\r\nTimestamp: \"t\" \\ y\tz\n"),
            "AADSTS1: a. Trace ID: x Timestamp: 't' / y z "
        );
    }

    #[tokio::test]
    async fn token_error_bodies_become_readable_for_the_sdk() {
        /// What azure_identity 1.0 reads of an error body.
        #[derive(serde::Deserialize)]
        struct SdkView<'a> {
            error_codes: Vec<i32>,
            error_description: &'a str,
        }
        let body = r#"{"error":"invalid_client","error_description":"AADSTS700213: No matching federated identity record found.\r\nTrace ID: 1\r\nCorrelation ID: 2\r\nTimestamp: 3","error_codes":[700213],"trace_id":"1"}"#;
        assert!(
            serde_json::from_str::<SdkView<'_>>(body).is_err(),
            "the SDK's own failure"
        );
        let answer = |status: u16| {
            AsyncRawResponse::from_bytes(
                azure_core::http::StatusCode::from(status),
                azure_core::http::headers::Headers::new(),
                body.as_bytes().to_vec(),
            )
        };
        let token = Url::parse("https://login.test/t/oauth2/v2.0/token").unwrap();
        let out = readable_token_error(&token, answer(400)).await.unwrap();
        let bytes = out.into_body().collect().await.unwrap();
        let view: SdkView<'_> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(view.error_codes, [700_213]);
        assert_eq!(
            view.error_description,
            "AADSTS700213: No matching federated identity record found. Trace ID: 1 Correlation ID: 2 Timestamp: 3"
        );
        // Successes and other services pass untouched.
        let vault = Url::parse("https://kv1.vault.test/secrets/s").unwrap();
        for (url, status) in [(&token, 200), (&vault, 400)] {
            let out = readable_token_error(url, answer(status)).await.unwrap();
            assert_eq!(
                out.into_body().collect().await.unwrap().as_ref(),
                body.as_bytes()
            );
        }
    }

    #[test]
    fn resolve_overrides() {
        let wild = Override::parse("*.vault.test=127.0.0.1").ok();
        assert!(wild.as_ref().is_some_and(|o| o.matches("kv1.vault.test")));
        assert!(wild.as_ref().is_some_and(|o| o.matches("KV1.Vault.Test")));
        assert!(!wild.as_ref().is_some_and(|o| o.matches("vault.test")));
        assert!(
            !wild
                .as_ref()
                .is_some_and(|o| o.matches("kv1.evilvault.test"))
        );
        let exact = Override::parse("login.test=::1").ok();
        assert!(exact.as_ref().is_some_and(|o| o.matches("login.test")));
        assert!(!exact.as_ref().is_some_and(|o| o.matches("x.login.test")));
        for bad in [
            "login.test",
            "=1.2.3.4",
            "x=notanip",
            "*=1.2.3.4",
            "*x.y=1.2.3.4",
        ] {
            assert!(Override::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rewrites_imds_and_user_agent() {
        let config = TransportConfig {
            user_agent_suffix: "team-x".into(),
            imds_endpoint: Some("http://127.0.0.1:9/metadata/identity/oauth2/token".into()),
            ..TransportConfig::default()
        };
        let transport = HttpTransport::new(&config).ok();
        let Some(transport) = transport else {
            unreachable!("transport builds");
        };
        let url = Url::parse(&format!(
            "{SDK_IMDS_ENDPOINT}?api-version=2019-08-01&resource=x"
        ))
        .ok();
        let Some(url) = url else { unreachable!() };
        let mut request = Request::new(url, Method::Get);
        request.insert_header(
            azure_core::http::headers::USER_AGENT,
            "azsdk-rust-identity/1.0.0",
        );
        let changed = transport.rewrite(&request);
        assert_eq!(
            changed.as_ref().map(|r| r.url().as_str().to_owned()),
            Some("http://127.0.0.1:9/metadata/identity/oauth2/token?api-version=2019-08-01&resource=x".into())
        );
        assert_eq!(
            changed.as_ref().and_then(|r| r
                .headers()
                .get_optional_str(&azure_core::http::headers::USER_AGENT)
                .map(str::to_owned)),
            Some("azsdk-rust-identity/1.0.0 team-x".into())
        );
    }
}

//! AAD pod identity (deprecated): tokens from the node's NMI endpoint.
//!
//! `GET <endpoint>/host/token/?resource=<resource>` with headers `podns` and `podname` answers
//! `{"token": {"access_token": "..", "expires_on": ".."}, "clientid": ".."}`.

use crate::transport::HttpTransport;
use azure_core::{
    credentials::{AccessToken, TokenCredential, TokenRequestOptions},
    error::{Error, ErrorKind},
    time::OffsetDateTime,
};
use serde::Deserialize;
use std::{fmt, sync::Arc};
use url::Url;

/// Largest NMI response read, in bytes.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Gets tokens for a pod from the NMI endpoint.
pub struct PodIdentityCredential {
    transport: Arc<HttpTransport>,
    endpoint: Url,
    namespace: String,
    pod_name: String,
}

impl fmt::Debug for PodIdentityCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodIdentityCredential")
            .field("endpoint", &self.endpoint.as_str())
            .field("pod", &format!("{}/{}", self.namespace, self.pod_name))
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct NmiResponse {
    token: NmiToken,
}

#[derive(Deserialize)]
struct NmiToken {
    access_token: String,
    #[serde(default)]
    expires_on: serde_json::Value,
}

fn credential_error(message: String) -> Error {
    Error::with_message(ErrorKind::Credential, message)
}

impl PodIdentityCredential {
    /// A credential for one pod.
    pub fn new(
        transport: Arc<HttpTransport>,
        endpoint: Url,
        namespace: String,
        pod_name: String,
    ) -> Self {
        Self {
            transport,
            endpoint,
            namespace,
            pod_name,
        }
    }
}

fn expiry(value: &serde_json::Value) -> Option<OffsetDateTime> {
    let seconds = match value {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }?;
    OffsetDateTime::from_unix_timestamp(seconds).ok()
}

#[async_trait::async_trait]
impl TokenCredential for PodIdentityCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let scope = scopes.first().copied().unwrap_or_default();
        let resource = scope.strip_suffix("/.default").unwrap_or(scope);
        let mut url = self
            .endpoint
            .join("host/token/")
            .map_err(|e| credential_error(format!("pod identity endpoint: {e}")))?;
        url.query_pairs_mut().append_pair("resource", resource);
        let agent = format!(
            "akv-csi-provider/{} {}",
            crate::VERSION,
            self.transport.user_agent_suffix()
        );
        let response = self
            .transport
            .client()
            .get(url)
            .header("podns", &self.namespace)
            .header("podname", &self.pod_name)
            .header("user-agent", agent.trim())
            .send()
            .await
            .map_err(|e| {
                let cause = Error::with_message(ErrorKind::Connection, e.to_string());
                Error::with_error(
                    ErrorKind::Credential,
                    cause,
                    "pod identity (NMI) endpoint unreachable",
                )
            })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            let cause = Error::with_message(ErrorKind::Io, e.to_string());
            Error::with_error(
                ErrorKind::Credential,
                cause,
                "reading the NMI response failed",
            )
        })?;
        if !status.is_success() {
            // The HTTP status travels as the source so callers can tell refusal from outage.
            let cause = Error::with_message(
                ErrorKind::HttpResponse {
                    status: status.as_u16().into(),
                    error_code: None,
                    raw_response: None,
                },
                format!("HTTP {status}"),
            );
            return Err(Error::with_error(
                ErrorKind::Credential,
                cause,
                if status.is_server_error() {
                    format!(
                        "pod identity (NMI) failed to get a token for pod {}/{}",
                        self.namespace, self.pod_name
                    )
                } else {
                    format!(
                        "pod identity (NMI) refused a token for pod {}/{}; check the AzureIdentity and AzureIdentityBinding of the pod",
                        self.namespace, self.pod_name
                    )
                },
            ));
        }
        if body.len() > MAX_RESPONSE_BYTES {
            return Err(credential_error("NMI response is too large".into()));
        }
        // A garbled answer is NMI misbehaving, not a refusal: the parse error travels as the
        // source (its text never quotes the body).
        let parsed: NmiResponse = serde_json::from_slice(&body).map_err(|e| {
            let cause = Error::with_message(
                ErrorKind::DataConversion,
                format!("error at line {} column {}", e.line(), e.column()),
            );
            Error::with_error(
                ErrorKind::Credential,
                cause,
                "NMI response is not the expected JSON",
            )
        })?;
        let expires_on = expiry(&parsed.token.expires_on)
            .ok_or_else(|| credential_error("NMI response has no valid expires_on".into()))?;
        Ok(AccessToken::new(parsed.token.access_token, expires_on))
    }
}

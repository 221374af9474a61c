//! An in-process fake of the Azure services the provider talks to.
//!
//! [`FakeAzure::start`] brings up, on loopback and random ports:
//!
//! * one HTTPS server (certificate signed by a throw-away test CA, see
//!   [`FakeAzure::ca_file`]) that dispatches on the `Host` header:
//!   `login.test` is the Entra ID token authority and `<vault>.vault.test` is
//!   the Key Vault named `<vault>`;
//! * one plain HTTP server serving the VM managed identity endpoint (IMDS,
//!   `/metadata/identity/oauth2/token`), the AAD pod identity NMI endpoint
//!   (`/host/token/`) and an HTTP `CONNECT` proxy that tunnels to the HTTPS
//!   server for the fake host names only.
//!
//! The servers run on a dedicated thread with their own Tokio runtime, so they
//! keep answering even while a test blocks its own thread (for example while
//! waiting synchronously for a child process). They stop when the
//! [`FakeAzure`] is dropped.
//!
//! A child process (the provider binary) reaches the fake host names either
//! through its own resolver override or through the proxy: set
//! `HTTPS_PROXY` to [`FakeAzure::proxy_url`] for `https://login.test:<port>`
//! and `https://<vault>.vault.test:<port>`. Setting `HTTP_PROXY` to the same
//! URL also routes absolute-form requests for the real IMDS
//! (`http://169.254.169.254/metadata/...`) and NMI addresses to the fake,
//! because the plain server dispatches on the path only.
//!
//! Vaults hold secrets, keys (`GET /keys/{name}/{version?}` answers a JSON Web
//! Key bundle) and certificates (`GET /certificates/{name}/{version?}` answers
//! `id`, `kid`, `sid`, `x5t`, `cer`, `attributes`, `policy`); version listings
//! work for all three, and so do listings of a whole collection (`GET /secrets`,
//! paged, each item with its newest version's attributes and tags; the `list`
//! permission; faults injected for `"*"` apply). [`FakeAzure::import_certificate`] creates the three
//! objects of a Key Vault certificate under one version id.
//!
//! All state lives behind one mutex and may be changed while requests are
//! being served (for example adding a secret version to simulate rotation).
//!
//! Faults: [`FakeAzure::inject`] replaces or alters Key Vault answers,
//! [`FakeAzure::inject_service`] those of the token authority, IMDS and NMI;
//! [`Fault::mangle`] damages an answer on the wire (connection reset in the
//! middle of the body, truncated body, another content type, missing JSON
//! fields); [`FakeAzure::set_untrusted_certificate`] makes the HTTPS server
//! present a certificate from a CA nobody trusts.
//!
//! Every secret value, client secret, federated assertion and access token
//! the fake knows is registered with [`super::leaks`], so the log scan of every
//! provider started by a test looks for them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::hash::{BuildHasher, RandomState};
use std::net::{Ipv4Addr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use base64::Engine as _;
use futures::StreamExt as _;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Host name of the fake Entra ID token authority.
pub const AUTHORITY_HOST: &str = "login.test";
/// DNS suffix of the fake vaults: vault `kv1` is `kv1.vault.test`.
pub const VAULT_DNS_SUFFIX: &str = "vault.test";
/// Audience (resource) that vault access tokens must be issued for.
pub const VAULT_RESOURCE: &str = "https://vault.test";
/// Client id reported for, and used as principal of, the system-assigned
/// managed identity (grant vault access to this id).
pub const SYSTEM_ASSIGNED_CLIENT_ID: &str = "5a5a5a5a-0000-4000-8000-000000000001";
/// Default lifetime of issued access tokens.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3599);
/// Default (and Key Vault's maximum) page size of version listings.
pub const DEFAULT_PAGE_SIZE: usize = 25;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const IMDS_PATH: &str = "/metadata/identity/oauth2/token";
const MAX_BODY: usize = 1 << 20;
const JSON: &str = "application/json; charset=utf-8";

/// Which fake service a request was addressed to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// The Entra ID token authority (`login.test`).
    Authority,
    /// The Key Vault with this name (`<name>.vault.test`).
    Vault(String),
    /// The VM managed identity endpoint.
    Imds,
    /// The AAD pod identity NMI endpoint.
    Nmi,
    /// A `CONNECT` request to the proxy (`path` holds the target authority).
    Proxy,
    /// Anything else (unknown host or path); answered with 404.
    Other,
}

/// One request seen by the fake, recorded after it was answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    /// Service the request was addressed to.
    pub service: Service,
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Request path, e.g. `/secrets/db-password/`.
    pub path: String,
    /// Raw query string (without `?`), empty if none.
    pub query: String,
    /// Vault: the principal (client id) of a valid bearer token. Authority,
    /// IMDS and NMI: the client id that was asked for or resolved.
    pub principal: Option<String>,
    /// HTTP status of the answer.
    pub status: u16,
}

impl Recorded {
    /// The decoded value of query parameter `name`, if present.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_map(&self.query).remove(name)
    }

    /// Whether this request went to the vault named `vault`.
    pub fn is_vault(&self, vault: &str) -> bool {
        matches!(&self.service, Service::Vault(v) if v == vault)
    }
}

/// A canned answer that replaces the normal vault response (after the bearer
/// token was validated, before permissions are checked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Status to answer with; `0` answers normally, only applying `delay`.
    pub status: u16,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// Response body (content type defaults to JSON if it looks like JSON).
    pub body: String,
    /// How many requests the fault applies to; `None` means forever.
    pub times: Option<u32>,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    /// Damage applied to the answer (the fault's own, or the normal one when `status` is 0).
    pub mangle: Option<Mangle>,
    /// Matching requests answered normally before the fault starts (e.g. 1: the second page
    /// of a listing fails, not the first).
    pub skip: u32,
}

/// How a [`Fault`] damages an answer on its way out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mangle {
    /// Send the headers (with the full `Content-Length`) and the first `n` body bytes, then
    /// drop the connection.
    ResetAfter(usize),
    /// Cut the body to its first `n` bytes (`Content-Length` matches the cut body).
    Truncate(usize),
    /// Replace the `Content-Type` header.
    ContentType(String),
    /// Remove these top-level fields from a JSON body.
    RemoveFields(Vec<String>),
}

impl Fault {
    /// A fault answering `code` with an empty body, forever unless [`Self::times`] is used.
    pub fn status(code: u16) -> Self {
        Self {
            status: code,
            headers: Vec::new(),
            body: String::new(),
            times: None,
            delay: None,
            mangle: None,
            skip: 0,
        }
    }

    /// The normal answer, damaged by `mangle`.
    pub fn mangled(mangle: Mangle) -> Self {
        Self::status(0).mangle(mangle)
    }

    /// The normal answer, but the connection drops after `n` bytes of the body.
    pub fn reset_mid_body(n: usize) -> Self {
        Self::mangled(Mangle::ResetAfter(n))
    }

    /// A 200 whose body is `body` (malformed JSON, an HTML page, ...).
    pub fn ok_body(body: &str, content_type: &str) -> Self {
        Self::status(200)
            .with_body(body)
            .with_header("Content-Type", content_type)
    }

    /// A 429 with `Retry-After: <secs>` and Key Vault's throttling body
    /// (`tests/fixtures/keyvault-errors/throttled.json`).
    pub fn throttled(retry_after_secs: u64) -> Self {
        Self::status(429)
            .with_header("Retry-After", &retry_after_secs.to_string())
            .with_body(&keyvault_error_body("throttled"))
    }

    /// A 403 with one of Key Vault's error bodies from `tests/fixtures/keyvault-errors/` (`name`
    /// without `.json`, e.g. `forbidden-by-connection`), byte for byte as Key Vault sends it.
    /// The Go stand-in (`e2e/internal/kvemu`) serves the same files.
    pub fn keyvault_error(name: &str) -> Self {
        Self::status(403)
            .with_body(&keyvault_error_body(name))
            .with_header("Content-Type", JSON)
    }

    /// A fault that answers normally, but only after `delay`.
    pub fn slow(delay: Duration) -> Self {
        Self::status(0).delay(delay)
    }

    /// Adds a response header.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the response body.
    #[must_use]
    pub fn with_body(mut self, body: &str) -> Self {
        body.clone_into(&mut self.body);
        self
    }

    /// Applies the fault to the next `n` matching requests only.
    #[must_use]
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// Lets the first `n` matching requests through before the fault applies.
    #[must_use]
    pub fn after(mut self, n: u32) -> Self {
        self.skip = n;
        self
    }

    /// Delays the answer by `delay`.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Damages the answer with `mangle`.
    #[must_use]
    pub fn mangle(mut self, mangle: Mangle) -> Self {
        self.mangle = Some(mangle);
        self
    }
}

/// Attributes of a secret version created with [`FakeAzure::set_secret`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretOpts {
    /// `contentType`, omitted from answers when `None`.
    pub content_type: Option<String>,
    /// `attributes.enabled`; reading a disabled version answers 403.
    pub enabled: bool,
    /// `kid` (set for certificate-backed secrets, which are also `managed`).
    pub kid: Option<String>,
    /// `tags`, omitted from answers when empty.
    pub tags: BTreeMap<String, String>,
}

impl Default for SecretOpts {
    fn default() -> Self {
        Self {
            content_type: None,
            enabled: true,
            kid: None,
            tags: BTreeMap::new(),
        }
    }
}

/// A certificate for [`FakeAzure::import_certificate`].
#[derive(Clone, Debug)]
pub struct CertificateImport {
    /// The leaf certificate, DER (`cer`).
    pub cer: Vec<u8>,
    /// The backing secret's value: base64 PFX or PEM text.
    pub secret_value: String,
    /// The backing secret's content type: `application/x-pkcs12` or `application/x-pem-file`.
    pub content_type: String,
    /// The key's public JWK, if the certificate has a key object.
    pub jwk: Option<Value>,
}

/// The running fake; see the module documentation.
pub struct FakeAzure {
    shared: Arc<Shared>,
    dir: tempfile::TempDir,
    ca_pem: String,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for FakeAzure {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl FakeAzure {
    /// Creates the test CA and certificate and starts both servers.
    pub async fn start() -> Self {
        let (ca_pem, tls) = make_tls("akv-csi-provider fake Azure test CA");
        let (_, untrusted_tls) = make_tls("an untrusted CA");
        let dir = tempfile::Builder::new()
            .prefix("fake-azure-")
            .tempdir()
            .expect("create fake Azure temp dir");
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).expect("write test CA file");

        let https = bind_loopback();
        let http = bind_loopback();
        let shared = Arc::new(Shared {
            port: https.local_addr().expect("https local addr").port(),
            http_port: http.local_addr().expect("http local addr").port(),
            state: Mutex::new(State::new()),
            untrusted: std::sync::atomic::AtomicBool::new(false),
        });

        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let server_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("fake-azure".to_owned())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build fake Azure runtime");
                runtime.block_on(async move {
                    let https = TcpListener::from_std(https).expect("register https listener");
                    let http = TcpListener::from_std(http).expect("register http listener");
                    let _ = ready_tx.send(());
                    tokio::select! {
                        _ = shutdown_rx => {}
                        () = accept_loop(https, Some((TlsAcceptor::from(tls), TlsAcceptor::from(untrusted_tls))), Arc::clone(&server_shared)) => {}
                        () = accept_loop(http, None, server_shared) => {}
                    }
                });
            })
            .expect("spawn fake Azure thread");
        ready_rx
            .await
            .expect("fake Azure server thread failed to start");

        Self {
            shared,
            dir,
            ca_pem,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// Port of the HTTPS server (authority and vaults) on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.shared.port
    }

    /// Port of the plain HTTP server (IMDS, NMI, proxy) on 127.0.0.1.
    pub fn http_port(&self) -> u16 {
        self.shared.http_port
    }

    /// PEM file holding the test CA certificate that signed the server certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The test CA certificate in PEM form.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Temporary directory owned by the fake (removed on drop); tests may put files there.
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// `https://login.test:<port>/`
    pub fn authority_url(&self) -> String {
        format!("https://{AUTHORITY_HOST}:{}/", self.port())
    }

    /// `https://<vault>.vault.test:<port>/`
    pub fn vault_url(&self, vault: &str) -> String {
        format!("https://{vault}.{VAULT_DNS_SUFFIX}:{}/", self.port())
    }

    /// `http://127.0.0.1:<http_port>/metadata/identity/oauth2/token`
    pub fn imds_url(&self) -> String {
        format!("http://127.0.0.1:{}{IMDS_PATH}", self.http_port())
    }

    /// `http://127.0.0.1:<http_port>/host/token/`
    pub fn nmi_url(&self) -> String {
        format!("http://127.0.0.1:{}/host/token/", self.http_port())
    }

    /// `http://127.0.0.1:<http_port>`, usable as `HTTPS_PROXY` (and `HTTP_PROXY`).
    pub fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port())
    }

    /// The Azure Stack cloud environment JSON pointing at this fake.
    pub fn cloud_env_json(&self) -> String {
        let port = self.port();
        format!(
            r#"{{"name":"AzureStackCloud","activeDirectoryEndpoint":"https://{AUTHORITY_HOST}:{port}/","keyVaultEndpoint":"{VAULT_RESOURCE}/","keyVaultDNSSuffix":"{VAULT_DNS_SUFFIX}:{port}","resourceManagerEndpoint":"https://management.test/"}}"#
        )
    }

    /// Writes [`Self::cloud_env_json`] to a file in the temp dir and returns its path.
    pub fn write_cloud_env_file(&self) -> PathBuf {
        let path = self.dir.path().join("azurestackcloud.json");
        std::fs::write(&path, self.cloud_env_json()).expect("write cloud env file");
        path
    }

    /// Registers an app in `tenant` that authenticates with `secret`.
    pub fn add_service_principal(&self, tenant: &str, client_id: &str, secret: &str) {
        let mut st = self.shared.lock();
        let app = st.app_mut(tenant, client_id);
        app.secrets.push(secret.to_owned());
        super::leaks::register(secret);
    }

    /// Registers an app in `tenant` with a federated credential: a
    /// `client_assertion` equal to `expected_assertion` is accepted.
    pub fn add_federated_identity(&self, tenant: &str, client_id: &str, expected_assertion: &str) {
        let mut st = self.shared.lock();
        let app = st.app_mut(tenant, client_id);
        app.assertions.push(expected_assertion.to_owned());
        super::leaks::register(expected_assertion);
    }

    /// No longer accepts `assertion` as a client assertion of any app (an expired token).
    pub fn remove_federated_assertion(&self, assertion: &str) {
        let mut st = self.shared.lock();
        for apps in st.tenants.values_mut() {
            for app in apps.values_mut() {
                app.assertions.retain(|a| a != assertion);
            }
        }
    }

    /// Assigns a managed identity to the "VM": `None` enables the
    /// system-assigned identity, `Some(id)` adds a user-assigned one.
    /// Returns the identity's client id (the principal to grant access to).
    pub fn add_managed_identity(&self, client_id: Option<&str>) -> String {
        let mut st = self.shared.lock();
        match client_id {
            None => {
                st.system_assigned = true;
                SYSTEM_ASSIGNED_CLIENT_ID.to_owned()
            }
            Some(id) => {
                st.user_assigned.insert(id.to_owned());
                id.to_owned()
            }
        }
    }

    /// Lets pod `namespace/pod_name` get tokens for `client_id` from NMI.
    pub fn add_pod_identity(&self, namespace: &str, pod_name: &str, client_id: &str) {
        let mut st = self.shared.lock();
        st.pods
            .entry((namespace.to_owned(), pod_name.to_owned()))
            .or_default()
            .push(client_id.to_owned());
    }

    /// Lifetime of tokens issued from now on (`expires_in`). Note that
    /// `azure_identity` refreshes cached tokens that expire within 300 s.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.lock().token_lifetime = lifetime;
    }

    /// Mints a token directly, as if issued to `principal` (tenant `None` is
    /// accepted by every vault; `resource` should be [`VAULT_RESOURCE`]).
    pub fn issue_token(&self, principal: &str, tenant: Option<&str>, resource: &str) -> String {
        self.shared.lock().mint(principal, tenant, resource)
    }

    /// Every access token issued so far (to scan logs for leaks).
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.lock().tokens.keys().cloned().collect()
    }

    /// Makes every token issued so far invalid.
    pub fn expire_all_tokens(&self) {
        for token in self.shared.lock().tokens.values_mut() {
            token.expires_at = UNIX_EPOCH;
        }
    }

    /// Creates an empty vault `name` owned by `tenant` (the tenant is also
    /// registered with the authority).
    pub fn add_vault(&self, name: &str, tenant: &str) {
        let mut st = self.shared.lock();
        st.tenants.entry(tenant.to_owned()).or_default();
        st.vaults.insert(
            name.to_ascii_lowercase(),
            Vault {
                tenant: tenant.to_owned(),
                grants: BTreeMap::new(),
                secrets: BTreeMap::new(),
                keys: BTreeMap::new(),
                certificates: BTreeMap::new(),
            },
        );
    }

    /// Grants permissions on `vault` to `principal` (a client id): `"get"` and `"list"` apply to
    /// secrets, keys and certificates; `"keys/get"`, `"certificates/list"`, ... to one collection.
    pub fn grant(&self, vault: &str, principal: &str, permissions: &[&str]) {
        let mut st = self.shared.lock();
        let grants = st
            .vault_mut(vault)
            .grants
            .entry(principal.to_owned())
            .or_default();
        grants.extend(permissions.iter().map(|p| p.to_ascii_lowercase()));
    }

    /// Removes every permission of `principal` on `vault`.
    pub fn revoke(&self, vault: &str, principal: &str) {
        self.shared.lock().vault_mut(vault).grants.remove(principal);
    }

    /// Adds a new (newest) version of secret `name`; returns its version id
    /// (32 lowercase hex characters).
    pub fn set_secret(&self, vault: &str, name: &str, value: &str, opts: SecretOpts) -> String {
        super::leaks::register(value);
        let id = random_hex(2);
        self.add_version(vault, Collection::Secrets, name, &id, value, opts);
        id
    }

    /// Adds a new (newest) version of key `name` whose public part is the JSON Web Key `jwk`
    /// (`kty`, `n`/`e` or `crv`/`x`/`y`, `key_ops`; the fake adds `kid`); returns its version id.
    pub fn set_key(&self, vault: &str, name: &str, jwk: &Value) -> String {
        let id = random_hex(2);
        self.add_version(
            vault,
            Collection::Keys,
            name,
            &id,
            &jwk.to_string(),
            SecretOpts::default(),
        );
        id
    }

    /// Adds a new (newest) version of certificate `name` with the DER certificate `cer` (no
    /// backing key or secret); returns its version id.
    pub fn set_certificate(&self, vault: &str, name: &str, cer: &[u8]) -> String {
        let id = random_hex(2);
        let value = base64::engine::general_purpose::STANDARD.encode(cer);
        self.add_version(
            vault,
            Collection::Certificates,
            name,
            &id,
            &value,
            SecretOpts::default(),
        );
        id
    }

    /// Imports a certificate the way Key Vault stores one: certificate `name` (`cer`), its backing
    /// secret (`secret_value` with `content_type`, `kid` set, managed) and, when `jwk` is given,
    /// its key, all under one new version id, which is returned.
    pub fn import_certificate(
        &self,
        vault: &str,
        name: &str,
        import: &CertificateImport,
    ) -> String {
        let id = random_hex(2);
        let base = format!(
            "https://{}.{VAULT_DNS_SUFFIX}:{}",
            vault.to_ascii_lowercase(),
            self.port()
        );
        let kid = format!("{base}/keys/{name}/{id}");
        let value = base64::engine::general_purpose::STANDARD.encode(&import.cer);
        self.add_version(
            vault,
            Collection::Certificates,
            name,
            &id,
            &value,
            SecretOpts::default(),
        );
        let managed = SecretOpts {
            content_type: Some(import.content_type.clone()),
            kid: Some(kid),
            ..SecretOpts::default()
        };
        self.add_version(
            vault,
            Collection::Secrets,
            name,
            &id,
            &import.secret_value,
            managed.clone(),
        );
        if let Some(jwk) = &import.jwk {
            let key_opts = SecretOpts {
                content_type: None,
                ..managed
            };
            self.add_version(
                vault,
                Collection::Keys,
                name,
                &id,
                &jwk.to_string(),
                key_opts,
            );
        }
        id
    }

    fn add_version(
        &self,
        vault: &str,
        collection: Collection,
        name: &str,
        id: &str,
        value: &str,
        opts: SecretOpts,
    ) {
        let mut st = self.shared.lock();
        st.clock += 1;
        let created = st.base_time + st.clock;
        let object = st
            .vault_mut(vault)
            .collection_mut(collection)
            .entry(name.to_ascii_lowercase())
            .or_insert_with(|| Secret {
                name: name.to_owned(),
                versions: Vec::new(),
            });
        let seq = u32::try_from(object.versions.len()).expect("too many versions");
        object.versions.push(Version {
            id: id.to_owned(),
            seq,
            value: value.to_owned(),
            opts,
            created,
            updated: created,
        });
    }

    /// Disables one version of a secret, key or certificate (all three for an imported certificate).
    pub fn disable_version(&self, vault: &str, name: &str, version: &str) {
        self.set_enabled(vault, name, version, false);
    }

    /// Re-enables one version of a secret, key or certificate.
    pub fn enable_version(&self, vault: &str, name: &str, version: &str) {
        self.set_enabled(vault, name, version, true);
    }

    fn set_enabled(&self, vault: &str, name: &str, version: &str, enabled: bool) {
        let mut st = self.shared.lock();
        st.clock += 1;
        let now = st.base_time + st.clock;
        let mut found = false;
        let v = st.vault_mut(vault);
        for collection in Collection::ALL {
            let matching = v
                .collection_mut(collection)
                .get_mut(&name.to_ascii_lowercase())
                .and_then(|s| s.versions.iter_mut().find(|v| v.id == version));
            if let Some(matching) = matching {
                matching.opts.enabled = enabled;
                matching.updated = now;
                found = true;
            }
        }
        assert!(
            found,
            "no version {version} of object {name} in vault {vault}"
        );
    }

    /// Removes secret `name` with all its versions (later reads answer 404).
    pub fn delete_secret(&self, vault: &str, name: &str) {
        self.shared
            .lock()
            .vault_mut(vault)
            .secrets
            .remove(&name.to_ascii_lowercase());
    }

    /// Version ids of secret `name`, oldest first (empty if unknown).
    pub fn versions(&self, vault: &str, name: &str) -> Vec<String> {
        self.shared
            .lock()
            .vault_mut(vault)
            .secrets
            .get(&name.to_ascii_lowercase())
            .map(|s| s.versions.iter().map(|v| v.id.clone()).collect())
            .unwrap_or_default()
    }

    /// Maximum number of items per page of a version listing (default 25);
    /// a smaller `maxresults` from the client wins.
    pub fn set_page_size(&self, n: usize) {
        assert!(n > 0, "page size must be positive");
        self.shared.lock().page_size = n;
    }

    /// Answers requests for object `secret_name` of `vault` (a secret, key or
    /// certificate; get and list versions; `"*"` matches every object) with `fault`. Faults are tried in
    /// the order they were injected.
    pub fn inject(&self, vault: &str, secret_name: &str, fault: Fault) {
        if fault.times == Some(0) {
            return;
        }
        self.shared.lock().faults.push(ActiveFault {
            vault: vault.to_ascii_lowercase(),
            secret: secret_name.to_ascii_lowercase(),
            fault,
        });
    }

    /// Removes every injected fault (Key Vault and services).
    pub fn clear_faults(&self) {
        let mut st = self.shared.lock();
        st.faults.clear();
        st.service_faults.clear();
    }

    /// Removes the faults injected for `secret_name` of `vault` (others stay).
    pub fn clear_faults_for(&self, vault: &str, secret_name: &str) {
        let (vault, secret) = (vault.to_ascii_lowercase(), secret_name.to_ascii_lowercase());
        self.shared
            .lock()
            .faults
            .retain(|f| !(f.vault == vault && f.secret == secret));
    }

    /// Answers requests to `service` ([`Service::Authority`] token requests,
    /// [`Service::Imds`], [`Service::Nmi`]) with `fault`, before they are
    /// validated. Faults are tried in the order they were injected.
    pub fn inject_service(&self, service: Service, fault: Fault) {
        if fault.times == Some(0) {
            return;
        }
        self.shared.lock().service_faults.push((service, fault));
    }

    /// From now on, TLS handshakes present a certificate signed by a CA that is
    /// not [`Self::ca_file`] (`false` restores the trusted certificate).
    pub fn set_untrusted_certificate(&self, untrusted: bool) {
        self.shared.untrusted.store(untrusted, Ordering::SeqCst);
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().log.clone()
    }

    /// Number of recorded requests matching `filter`.
    pub fn count(&self, filter: impl Fn(&Recorded) -> bool) -> usize {
        self.shared.lock().log.iter().filter(|r| filter(r)).count()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }
}

// ---------------------------------------------------------------------------
// State

struct Shared {
    port: u16,
    http_port: u16,
    state: Mutex<State>,
    untrusted: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct App {
    secrets: Vec<String>,
    assertions: Vec<String>,
}

#[derive(Clone)]
struct TokenRecord {
    principal: String,
    tenant: Option<String>,
    resource: String,
    expires_at: SystemTime,
}

struct Version {
    id: String,
    /// Insertion index within the secret; drives the listing order.
    seq: u32,
    value: String,
    opts: SecretOpts,
    created: u64,
    updated: u64,
}

struct Secret {
    /// Name as first set (lookups are case-insensitive, like Key Vault).
    name: String,
    /// Oldest first.
    versions: Vec<Version>,
}

struct Vault {
    tenant: String,
    grants: BTreeMap<String, BTreeSet<String>>,
    secrets: BTreeMap<String, Secret>,
    /// Versions hold the JWK (JSON text, without `kid`).
    keys: BTreeMap<String, Secret>,
    /// Versions hold `cer` (standard base64 of the DER).
    certificates: BTreeMap<String, Secret>,
}

impl Vault {
    fn collection(&self, collection: Collection) -> &BTreeMap<String, Secret> {
        match collection {
            Collection::Secrets => &self.secrets,
            Collection::Keys => &self.keys,
            Collection::Certificates => &self.certificates,
        }
    }

    fn collection_mut(&mut self, collection: Collection) -> &mut BTreeMap<String, Secret> {
        match collection {
            Collection::Secrets => &mut self.secrets,
            Collection::Keys => &mut self.keys,
            Collection::Certificates => &mut self.certificates,
        }
    }
}

/// The three object collections of a vault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Collection {
    /// `/secrets`
    Secrets,
    /// `/keys`
    Keys,
    /// `/certificates`
    Certificates,
}

impl Collection {
    const ALL: [Self; 3] = [Self::Secrets, Self::Keys, Self::Certificates];

    /// Path segment and permission namespace: `secrets`, `keys`, `certificates`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Secrets => "secrets",
            Self::Keys => "keys",
            Self::Certificates => "certificates",
        }
    }

    /// Singular noun used in Key Vault's messages and error codes.
    fn noun(self) -> (&'static str, &'static str) {
        match self {
            Self::Secrets => ("secret", "Secret"),
            Self::Keys => ("key", "Key"),
            Self::Certificates => ("certificate", "Certificate"),
        }
    }
}

struct ActiveFault {
    vault: String,
    secret: String,
    fault: Fault,
}

struct State {
    tenants: BTreeMap<String, BTreeMap<String, App>>,
    system_assigned: bool,
    user_assigned: BTreeSet<String>,
    pods: BTreeMap<(String, String), Vec<String>>,
    tokens: HashMap<String, TokenRecord>,
    token_lifetime: Duration,
    vaults: BTreeMap<String, Vault>,
    page_size: usize,
    /// Logical clock: version timestamps are `base_time + clock`.
    base_time: u64,
    clock: u64,
    faults: Vec<ActiveFault>,
    service_faults: Vec<(Service, Fault)>,
    log: Vec<Recorded>,
}

impl State {
    fn new() -> Self {
        Self {
            tenants: BTreeMap::new(),
            system_assigned: false,
            user_assigned: BTreeSet::new(),
            pods: BTreeMap::new(),
            tokens: HashMap::new(),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
            vaults: BTreeMap::new(),
            page_size: DEFAULT_PAGE_SIZE,
            // A day in the past so that created/updated never lie in the future.
            base_time: unix_now() - 86_400,
            clock: 0,
            faults: Vec::new(),
            service_faults: Vec::new(),
            log: Vec::new(),
        }
    }

    fn app_mut(&mut self, tenant: &str, client_id: &str) -> &mut App {
        self.tenants
            .entry(tenant.to_owned())
            .or_default()
            .entry(client_id.to_owned())
            .or_default()
    }

    fn vault_mut(&mut self, vault: &str) -> &mut Vault {
        self.vaults
            .get_mut(&vault.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("unknown fake vault {vault}; call add_vault first"))
    }

    fn mint(&mut self, principal: &str, tenant: Option<&str>, resource: &str) -> String {
        let token = format!("fake-at-{}", random_hex(4));
        super::leaks::register(&token);
        self.tokens.insert(
            token.clone(),
            TokenRecord {
                principal: principal.to_owned(),
                tenant: tenant.map(str::to_owned),
                resource: resource.trim_end_matches('/').to_owned(),
                expires_at: SystemTime::now() + self.token_lifetime,
            },
        );
        token
    }

    fn take_service_fault(&mut self, service: &Service) -> Option<Fault> {
        let index = self.service_faults.iter().position(|(s, _)| s == service)?;
        let fault = self.service_faults[index].1.clone();
        if let Some(times) = &mut self.service_faults[index].1.times {
            *times -= 1;
            if *times == 0 {
                self.service_faults.remove(index);
            }
        }
        Some(fault)
    }

    fn take_fault(&mut self, vault: &str, secret: &str) -> Option<Fault> {
        let secret = secret.to_ascii_lowercase();
        let index = self
            .faults
            .iter()
            .position(|f| f.vault == vault && (f.secret == "*" || f.secret == secret))?;
        let active = &mut self.faults[index];
        if active.fault.skip > 0 {
            active.fault.skip -= 1;
            return None;
        }
        let fault = active.fault.clone();
        if let Some(times) = &mut active.fault.times {
            *times -= 1;
            if *times == 0 {
                self.faults.remove(index);
            }
        }
        Some(fault)
    }
}

// ---------------------------------------------------------------------------
// Servers

fn bind_loopback() -> StdTcpListener {
    let listener = StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind loopback port");
    listener
        .set_nonblocking(true)
        .expect("make listener non-blocking");
    listener
}

fn make_tls(ca_name: &str) -> (String, Arc<ServerConfig>) {
    let ca_key = KeyPair::generate().expect("generate CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-sign test CA");

    let key = KeyPair::generate().expect("generate server key");
    let names = [
        AUTHORITY_HOST.to_owned(),
        format!("*.{VAULT_DNS_SUFFIX}"),
        VAULT_DNS_SUFFIX.to_owned(),
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
    ];
    let mut params = CertificateParams::new(names).expect("server cert params");
    params
        .distinguished_name
        .push(DnType::CommonName, "fake azure");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &*ca).expect("sign server cert");

    let chain = vec![cert.der().clone(), ca.der().clone()];
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .expect("server TLS config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca.pem(), Arc::new(config))
}

/// The trusted and the untrusted TLS acceptor.
type Acceptors = (TlsAcceptor, TlsAcceptor);

async fn accept_loop(listener: TcpListener, tls: Option<Acceptors>, shared: Arc<Shared>) {
    // Connection tasks live in the set, so they are aborted with the loop.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let untrusted = shared.untrusted.load(Ordering::SeqCst);
                    let tls = tls.as_ref().map(|(good, bad)| if untrusted { bad.clone() } else { good.clone() });
                    let shared = Arc::clone(&shared);
                    connections.spawn(serve_connection(tcp, tls, shared));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(tcp: TcpStream, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    match tls {
        Some(acceptor) => {
            // Handshake failures (e.g. a client not trusting the CA) just close the connection.
            if let Ok(stream) = acceptor.accept(tcp).await {
                serve_http(TokioIo::new(stream), shared, true).await;
            }
        }
        None => serve_http(TokioIo::new(tcp), shared, false).await,
    }
}

async fn serve_http<I>(io: I, shared: Arc<Shared>, secure: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(shared, req, secure).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades()
        .await;
}

/// A request with its body read.
struct Req {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An answer, turned into a response once the state lock is released.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    delay: Option<Duration>,
    mangle: Option<Mangle>,
}

impl Reply {
    fn json(status: u16, value: &Value) -> Self {
        Self {
            status,
            headers: vec![(CONTENT_TYPE.to_string(), JSON.to_owned())],
            body: value.to_string(),
            delay: None,
            mangle: None,
        }
    }

    fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: vec![(
                CONTENT_TYPE.to_string(),
                "text/plain; charset=utf-8".to_owned(),
            )],
            body: body.into(),
            delay: None,
            mangle: None,
        }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn from_fault(fault: Fault) -> Self {
        let mut headers = fault.headers;
        let has_type = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        if !has_type && !fault.body.is_empty() {
            let body = fault.body.trim_start();
            let kind = if body.starts_with('{') || body.starts_with('[') {
                JSON
            } else {
                "text/plain; charset=utf-8"
            };
            headers.push((CONTENT_TYPE.to_string(), kind.to_owned()));
        }
        Self {
            status: fault.status,
            headers,
            body: fault.body,
            delay: fault.delay,
            mangle: fault.mangle,
        }
    }

    fn into_response(mut self) -> Response<Body> {
        let text = std::mem::take(&mut self.body);
        let body = match self.mangle.take() {
            None => Body::from(text),
            Some(Mangle::ContentType(content_type)) => {
                self.headers
                    .retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
                self.headers.push((CONTENT_TYPE.to_string(), content_type));
                Body::from(text)
            }
            Some(Mangle::Truncate(n)) => {
                let bytes = Bytes::from(text);
                Body::from(bytes.slice(..n.min(bytes.len())))
            }
            Some(Mangle::RemoveFields(fields)) => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(mut map)) => {
                    for field in &fields {
                        map.remove(field);
                    }
                    Body::from(Value::Object(map).to_string())
                }
                _ => Body::from(text),
            },
            Some(Mangle::ResetAfter(n)) => {
                let bytes = Bytes::from(text);
                self.headers
                    .push(("Content-Length".to_owned(), bytes.len().to_string()));
                let head = bytes.slice(..n.min(bytes.len()));
                let stream = futures::stream::iter([Ok::<_, std::io::Error>(head)]).chain(
                    futures::stream::once(async {
                        // Let hyper flush the headers and the first bytes, then fail the body:
                        // hyper closes the connection in the middle of the message.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err(std::io::Error::new(
                            std::io::ErrorKind::ConnectionReset,
                            "fake connection reset",
                        ))
                    }),
                );
                Body::from_stream(stream)
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>, secure: bool) -> Response<Body> {
    if !secure && req.method() == Method::CONNECT {
        return connect(&shared, req);
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(Body::new(body), MAX_BODY)
        .await
        .unwrap_or_default();
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers,
        body,
    };
    let reply = route(&shared, &req, secure);
    if let Some(delay) = reply.delay {
        tokio::time::sleep(delay).await;
    }
    reply.into_response()
}

/// Tunnels a `CONNECT` to the HTTPS server, for the fake host names only.
fn connect(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    let target = req
        .uri()
        .authority()
        .map(ToString::to_string)
        .unwrap_or_default();
    let host = req.uri().host().unwrap_or_default().to_ascii_lowercase();
    let allowed = host == AUTHORITY_HOST
        || host == VAULT_DNS_SUFFIX
        || host.ends_with(&format!(".{VAULT_DNS_SUFFIX}"))
        || host == "localhost"
        || host == "127.0.0.1";
    let status = if allowed { 200 } else { 403 };
    shared.lock().log.push(Recorded {
        service: Service::Proxy,
        method: Method::CONNECT.to_string(),
        path: target.clone(),
        query: String::new(),
        principal: None,
        status,
    });
    if !allowed {
        return Reply::text(
            403,
            format!("the fake proxy only tunnels to fake hosts, not {target}"),
        )
        .into_response();
    }
    let port = shared.port;
    tokio::spawn(async move {
        if let Ok(upgraded) = hyper::upgrade::on(req).await {
            let mut client = TokioIo::new(upgraded);
            if let Ok(mut server) = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        }
    });
    Reply::text(200, String::new()).into_response()
}

/// A service fault's answer, or the service's normal answer with the fault's delay and damage.
fn with_service_fault(
    st: &mut State,
    service: &Service,
    answer: impl FnOnce(&mut State) -> (Option<String>, Reply),
) -> (Option<String>, Reply) {
    match st.take_service_fault(service) {
        Some(fault) if fault.status != 0 => (None, Reply::from_fault(fault)),
        Some(fault) => {
            let (principal, mut reply) = answer(st);
            reply.delay = fault.delay;
            reply.mangle = fault.mangle;
            (principal, reply)
        }
        None => answer(st),
    }
}

fn route(shared: &Shared, req: &Req, secure: bool) -> Reply {
    let mut st = shared.lock();
    let (service, principal, reply) = if secure {
        let host = host_without_port(&req.headers);
        if host == AUTHORITY_HOST {
            let (principal, reply) =
                with_service_fault(&mut st, &Service::Authority, |st| authority(st, req));
            (Service::Authority, principal, reply)
        } else if let Some(vault) = host
            .strip_suffix(VAULT_DNS_SUFFIX)
            .and_then(|v| v.strip_suffix('.'))
            .filter(|v| !v.is_empty() && !v.contains('.'))
        {
            let (principal, reply) = vault_request(&mut st, shared.port, vault, req);
            (Service::Vault(vault.to_owned()), principal, reply)
        } else {
            let reply = Reply::text(404, format!("no fake service for host '{host}'"));
            (Service::Other, None, reply)
        }
    } else if req.path == IMDS_PATH {
        let (principal, reply) = with_service_fault(&mut st, &Service::Imds, |st| imds(st, req));
        (Service::Imds, principal, reply)
    } else if req.path == "/host/token/" || req.path == "/host/token" {
        let (principal, reply) = with_service_fault(&mut st, &Service::Nmi, |st| nmi(st, req));
        (Service::Nmi, principal, reply)
    } else {
        (Service::Other, None, Reply::text(404, "not found"))
    };
    st.log.push(Recorded {
        service,
        method: req.method.to_string(),
        path: req.path.clone(),
        query: req.query.clone(),
        principal,
        status: reply.status,
    });
    reply
}

// ---------------------------------------------------------------------------
// Entra ID token authority

/// Entra's error answer: fixture `name` of `tests/fixtures/entra-errors/`, its placeholders filled
/// from `vars`; the fake adds `{trace_id}`, `{correlation_id}`, `{timestamp}` and `{authority}`.
fn entra_error(status: u16, name: &str, vars: &[(&str, &str)]) -> Reply {
    let (trace, correlation) = (random_guid(), random_guid());
    let timestamp = entra_timestamp(unix_now());
    let authority = format!("https://{AUTHORITY_HOST}");
    let mut all = vec![
        ("trace_id", trace.as_str()),
        ("correlation_id", correlation.as_str()),
        ("timestamp", timestamp.as_str()),
        ("authority", authority.as_str()),
    ];
    all.extend_from_slice(vars);
    fixture_reply(status, ENTRA_ERRORS, name, &all)
}

fn missing_parameter(name: &str) -> Reply {
    entra_error(400, "missing-parameter", &[("parameter", name)])
}

/// The `sub` claim of a JWT (unverified), empty if `assertion` is not one.
fn assertion_subject(assertion: &str) -> String {
    assertion
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("sub").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

fn authority(st: &mut State, req: &Req) -> (Option<String>, Reply) {
    let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    let [tenant, "oauth2", "v2.0", "token"] = segments.as_slice() else {
        return (None, Reply::text(404, "not found"));
    };
    if req.method != Method::POST {
        return (
            None,
            Reply::text(405, "the token endpoint only accepts POST"),
        );
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body)
        .into_owned()
        .collect();
    let client_id = form.get("client_id").cloned();
    let reply = match check_token_request(st, tenant, &form) {
        Ok((client_id, resource)) => {
            let token = st.mint(&client_id, Some(tenant), &resource);
            let secs = st.token_lifetime.as_secs();
            Reply::json(
                200,
                &json!({"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": token}),
            )
        }
        Err(reply) => reply,
    };
    (client_id, reply)
}

/// Validates a client credentials request; returns the client id and resource.
fn check_token_request(
    st: &State,
    tenant: &str,
    form: &HashMap<String, String>,
) -> Result<(String, String), Reply> {
    let Some(apps) = st.tenants.get(tenant) else {
        return Err(entra_error(400, "tenant-not-found", &[("tenant", tenant)]));
    };
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(other) => {
            return Err(entra_error(
                400,
                "unsupported-grant-type",
                &[("grant_type", other)],
            ));
        }
        None => return Err(missing_parameter("grant_type")),
    }
    let client_id = form
        .get("client_id")
        .ok_or_else(|| missing_parameter("client_id"))?;
    let scope = form
        .get("scope")
        .ok_or_else(|| missing_parameter("scope"))?;
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let resource = match scopes.as_slice() {
        [single] => single
            .strip_suffix("/.default")
            .ok_or_else(|| entra_error(400, "scope-without-default", &[("scope", single)]))?,
        _ => return Err(entra_error(400, "invalid-scope", &[("scope", scope)])),
    };
    let Some(app) = apps.get(client_id) else {
        return Err(entra_error(
            400,
            "application-not-found",
            &[("client_id", client_id), ("tenant", tenant)],
        ));
    };
    if let Some(secret) = form.get("client_secret") {
        if !app.secrets.iter().any(|s| s == secret) {
            return Err(entra_error(
                401,
                "invalid-client-secret",
                &[("client_id", client_id)],
            ));
        }
    } else if let Some(assertion) = form.get("client_assertion") {
        if form.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
            return Err(entra_error(400, "invalid-client-assertion-type", &[]));
        }
        if !app.assertions.iter().any(|a| a == assertion) {
            return Err(entra_error(
                400,
                "assertion-subject-mismatch",
                &[("subject", &assertion_subject(assertion))],
            ));
        }
    } else {
        return Err(entra_error(400, "missing-client-credential", &[]));
    }
    Ok((client_id.clone(), resource.to_owned()))
}

// ---------------------------------------------------------------------------
// IMDS and NMI

fn imds(st: &mut State, req: &Req) -> (Option<String>, Reply) {
    let invalid = |description: &str| {
        Reply::json(
            400,
            &json!({"error": "invalid_request", "error_description": description}),
        )
    };
    if req.method != Method::GET {
        return (None, Reply::text(405, "method not allowed"));
    }
    if !req
        .header("metadata")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return (None, invalid("Required metadata header not specified"));
    }
    let query = query_map(&req.query);
    if !query.contains_key("api-version") {
        return (
            None,
            invalid("Required query variable 'api-version' is missing"),
        );
    }
    let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) else {
        return (None, invalid("Required audience parameter not specified"));
    };
    let principal = if let Some(id) = query.get("client_id") {
        if !st.user_assigned.contains(id) {
            return (Some(id.clone()), invalid("Identity not found"));
        }
        id.clone()
    } else if ["object_id", "msi_res_id", "mi_res_id"]
        .iter()
        .any(|k| query.contains_key(*k))
    {
        return (None, invalid("Identity not found"));
    } else if st.system_assigned {
        SYSTEM_ASSIGNED_CLIENT_ID.to_owned()
    } else {
        let mut ids = st.user_assigned.iter();
        match (ids.next(), ids.next()) {
            (Some(only), None) => only.clone(),
            (None, _) => return (None, invalid("Identity not found")),
            (Some(_), Some(_)) => {
                return (
                    None,
                    invalid(
                        "Multiple user assigned identities exist, please specify the clientId / resourceId of the identity in the token request",
                    ),
                );
            }
        }
    };
    let token = st.mint(&principal, None, resource);
    let secs = st.token_lifetime.as_secs();
    let now = unix_now();
    let body = json!({
        "access_token": token,
        "client_id": principal,
        "expires_in": secs.to_string(),
        "expires_on": (now + secs).to_string(),
        "ext_expires_in": secs.to_string(),
        "not_before": now.to_string(),
        "resource": resource,
        "token_type": "Bearer",
    });
    (Some(principal), Reply::json(200, &body))
}

fn nmi(st: &mut State, req: &Req) -> (Option<String>, Reply) {
    if req.method != Method::GET {
        return (None, Reply::text(405, "method not allowed"));
    }
    let namespace = req.header("podns").filter(|v| !v.is_empty());
    let pod = req.header("podname").filter(|v| !v.is_empty());
    let (Some(namespace), Some(pod)) = (namespace, pod) else {
        return (None, Reply::text(400, "missing podns or podname header"));
    };
    let query = query_map(&req.query);
    let Some(resource) = query.get("resource").filter(|r| !r.is_empty()) else {
        return (None, Reply::text(400, "parameter resource cannot be empty"));
    };
    let Some(ids) = st.pods.get(&(namespace.to_owned(), pod.to_owned())) else {
        return (
            None,
            Reply::text(
                404,
                format!(
                    "getting assigned identities for pod {namespace}/{pod} in CREATED state failed after 16 attempts, retry duration [5]s. Error: <nil>"
                ),
            ),
        );
    };
    let client_id = match query.get("clientid") {
        Some(wanted) if ids.contains(wanted) => wanted.clone(),
        Some(wanted) => {
            return (
                Some(wanted.clone()),
                Reply::text(
                    403,
                    format!("clientid {wanted} is not assigned to pod {namespace}/{pod}"),
                ),
            );
        }
        None => ids[0].clone(),
    };
    let token = st.mint(&client_id, None, resource);
    let secs = st.token_lifetime.as_secs();
    let now = unix_now();
    let body = json!({
        "token": {
            "access_token": token,
            "refresh_token": "",
            "expires_in": secs.to_string(),
            "expires_on": (now + secs).to_string(),
            "not_before": now.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        },
        "clientid": client_id,
    });
    (Some(client_id), Reply::json(200, &body))
}

// ---------------------------------------------------------------------------
// Key Vault

/// Folder of `tests/fixtures/` holding Key Vault's error bodies.
pub const KEYVAULT_ERRORS: &str = "keyvault-errors";
/// Folder of `tests/fixtures/` holding Entra ID's token endpoint error bodies.
pub const ENTRA_ERRORS: &str = "entra-errors";

/// `tests/fixtures/<folder>` of the repository.
pub fn fixture_dir(folder: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(folder)
}

/// The fixtures of `folder` (file names without `.json`), sorted.
pub fn fixture_names(folder: &str) -> Vec<String> {
    let dir = fixture_dir(folder);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// Fixture `name` of `folder` as stored (placeholders `{name}` unfilled), without the final newline.
pub fn fixture_template(folder: &str, name: &str) -> String {
    let path = fixture_dir(folder).join(format!("{name}.json"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim_end_matches(['\r', '\n'])
        .to_owned()
}

/// The placeholders (`{name}`: lowercase letters and `_` in braces) of a template, in order of
/// first use.
pub fn fixture_placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end)
                if end > 0
                    && after[..end]
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b == b'_') =>
            {
                let name = after[..end].to_owned();
                if !out.contains(&name) {
                    out.push(name);
                }
                rest = &after[end + 1..];
            }
            _ => rest = after,
        }
    }
    out
}

/// Fixture `name` of `folder` with each placeholder replaced, in one pass, by its value in `vars`
/// escaped as JSON string content (as the Go stand-ins do). Panics when a placeholder has no
/// value: the body would not be the service's.
pub fn render_fixture(folder: &str, name: &str, vars: &[(&str, &str)]) -> String {
    let template = fixture_template(folder, name);
    let mut out = String::with_capacity(template.len());
    let mut rest = template.as_str();
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let placeholder = after
            .find('}')
            .map(|end| &after[..end])
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        if let Some(p) = placeholder {
            let (_, value) = vars
                .iter()
                .find(|(k, _)| *k == p)
                .unwrap_or_else(|| panic!("fixture {folder}/{name}: no value for {{{p}}}"));
            let quoted = Value::String((*value).to_owned()).to_string();
            out.push_str(&quoted[1..quoted.len() - 1]);
            rest = &after[p.len() + 1..];
        } else {
            out.push('{');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The body of `tests/fixtures/keyvault-errors/<name>.json` (a fixture without placeholders).
pub fn keyvault_error_body(name: &str) -> String {
    render_fixture(KEYVAULT_ERRORS, name, &[])
}

/// A JSON answer whose body is a rendered fixture.
fn fixture_reply(status: u16, folder: &str, name: &str, vars: &[(&str, &str)]) -> Reply {
    Reply {
        status,
        headers: vec![(CONTENT_TYPE.to_string(), JSON.to_owned())],
        body: render_fixture(folder, name, vars),
        delay: None,
        mangle: None,
    }
}

/// Key Vault's error answer: fixture `name` of `tests/fixtures/keyvault-errors/`.
fn kv_fixture(status: u16, name: &str, vars: &[(&str, &str)]) -> Reply {
    fixture_reply(status, KEYVAULT_ERRORS, name, vars)
}

fn kv_error(status: u16, code: &str, message: &str, inner: Option<&str>) -> Reply {
    let mut error = json!({"code": code, "message": message});
    if let Some(inner) = inner {
        error["innererror"] = json!({"code": inner});
    }
    Reply::json(status, &json!({ "error": error }))
}

enum SecretOp<'a> {
    Get {
        name: &'a str,
        version: Option<&'a str>,
    },
    List {
        name: &'a str,
    },
    /// `GET /secrets` (or `/keys`, `/certificates`): every object of the collection.
    ListAll,
}

impl SecretOp<'_> {
    fn name(&self) -> &str {
        match self {
            Self::Get { name, .. } | Self::List { name } => name,
            Self::ListAll => "",
        }
    }

    fn permission(&self) -> &'static str {
        match self {
            Self::Get { .. } => "get",
            Self::List { .. } | Self::ListAll => "list",
        }
    }
}

fn parse_object_path(path: &str) -> Option<(Collection, SecretOp<'_>)> {
    if let Some(collection) = Collection::ALL.iter().find(|c| {
        let p = path.trim_end_matches('/');
        p.strip_prefix('/') == Some(c.as_str())
    }) {
        return Some((*collection, SecretOp::ListAll));
    }
    let (collection, rest) = Collection::ALL.iter().find_map(|c| {
        path.strip_prefix('/')
            .and_then(|p| p.strip_prefix(c.as_str()))
            .and_then(|p| p.strip_prefix('/'))
            .map(|rest| (*c, rest))
    })?;
    let parts: Vec<&str> = rest.split('/').collect();
    let op = match parts.as_slice() {
        [name] | [name, ""] if !name.is_empty() => SecretOp::Get {
            name,
            version: None,
        },
        [name, "versions"] if !name.is_empty() => SecretOp::List { name },
        [name, version] if !name.is_empty() => SecretOp::Get {
            name,
            version: Some(version),
        },
        _ => return None,
    };
    Some((collection, op))
}

fn vault_request(st: &mut State, port: u16, vault: &str, req: &Req) -> (Option<String>, Reply) {
    let Some(tenant) = st.vaults.get(vault).map(|v| v.tenant.clone()) else {
        let message = format!("The fake has no vault named '{vault}'.");
        return (None, kv_error(404, "VaultNotFound", &message, None));
    };
    let challenge = format!(
        r#"Bearer authorization="https://{AUTHORITY_HOST}:{port}/{tenant}", resource="{VAULT_RESOURCE}""#
    );
    let unauthorized = |fixture: &str, vars: &[(&str, &str)]| {
        kv_fixture(401, fixture, vars).header("WWW-Authenticate", &challenge)
    };

    let presented = req
        .header(AUTHORIZATION.as_str())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    let Some(presented) = presented else {
        return (None, unauthorized("unauthorized-missing-token", &[]));
    };
    let Some(token) = st.tokens.get(presented).cloned() else {
        // Key Vault names the JWT header it found no signing key for; the fake's tokens are
        // opaque, so a made-up one has no header to name (never echo a whole token).
        let header = presented.split_once('.').map_or("", |(h, _)| h);
        return (
            None,
            unauthorized(
                "unauthorized-unknown-signing-key",
                &[("jwt_header", header)],
            ),
        );
    };
    if token.expires_at <= SystemTime::now() {
        return (None, unauthorized("unauthorized-token-expired", &[]));
    }
    let principal = token.principal;
    if token.resource != VAULT_RESOURCE {
        return (
            Some(principal),
            unauthorized(
                "unauthorized-wrong-audience",
                &[("expected", VAULT_RESOURCE), ("found", &token.resource)],
            ),
        );
    }
    if let Some(issuer) = token.tenant.as_deref()
        && issuer != tenant
    {
        let expected = format!("https://{AUTHORITY_HOST}:{port}/{tenant}/");
        let found = format!("https://{AUTHORITY_HOST}:{port}/{issuer}/");
        return (
            Some(principal),
            unauthorized(
                "unauthorized-wrong-issuer",
                &[("expected", &expected), ("found", &found)],
            ),
        );
    }

    let query = query_map(&req.query);
    if !query.contains_key("api-version") {
        return (Some(principal), kv_fixture(400, "api-version-missing", &[]));
    }
    let Some((collection, op)) = parse_object_path(&req.path) else {
        let message = format!("The fake does not implement {}.", req.path);
        return (Some(principal), kv_error(404, "NotFound", &message, None));
    };
    if req.method != Method::GET {
        let message = format!(
            "The fake only implements GET on {}, not {}.",
            collection.as_str(),
            req.method
        );
        return (
            Some(principal),
            kv_error(405, "BadParameter", &message, None),
        );
    }

    let fault = st.take_fault(vault, op.name());
    if let Some(fault) = fault.as_ref().filter(|f| f.status != 0) {
        return (Some(principal), Reply::from_fault(fault.clone()));
    }
    let mut reply = object_op(
        st, port, vault, &tenant, &principal, collection, &op, &query,
    );
    if let Some(fault) = fault {
        reply.delay = fault.delay;
        reply.mangle = fault.mangle;
    }
    (Some(principal), reply)
}

#[allow(clippy::too_many_arguments)]
fn object_op(
    st: &State,
    port: u16,
    vault_name: &str,
    tenant: &str,
    principal: &str,
    collection: Collection,
    op: &SecretOp<'_>,
    query: &HashMap<String, String>,
) -> Reply {
    let vault = &st.vaults[vault_name];
    let permission = op.permission();
    let scoped = format!("{}/{permission}", collection.as_str());
    if !vault
        .grants
        .get(principal)
        .is_some_and(|p| p.contains(permission) || p.contains(&scoped))
    {
        let issuer = format!("https://{AUTHORITY_HOST}:{port}/{tenant}/");
        return kv_fixture(
            403,
            "forbidden-by-access-policy",
            &[
                ("client_id", principal),
                ("object_id", principal),
                ("issuer", &issuer),
                ("collection", collection.as_str()),
                ("permission", permission),
                ("vault", vault_name),
            ],
        );
    }
    let base = format!("https://{vault_name}.{VAULT_DNS_SUFFIX}:{port}");
    let object = vault
        .collection(collection)
        .get(&op.name().to_ascii_lowercase());
    let (noun, _) = collection.noun();
    match *op {
        SecretOp::Get { name, version } => {
            let found = object.and_then(|s| match version {
                None => s.versions.last(),
                Some(wanted) => s
                    .versions
                    .iter()
                    .find(|v| v.id.eq_ignore_ascii_case(wanted)),
            });
            match (object, found) {
                (Some(object), Some(v)) if v.opts.enabled => {
                    Reply::json(200, &object_json(&base, collection, object, v, true))
                }
                (Some(_), Some(_)) => kv_fixture(403, &format!("{noun}-disabled"), &[]),
                _ => {
                    let id = version.map_or_else(|| name.to_owned(), |v| format!("{name}/{v}"));
                    not_found(collection, &id)
                }
            }
        }
        SecretOp::List { name } => {
            let Some(object) = object else {
                return not_found(collection, name);
            };
            list_versions(st, &base, collection, object, query)
        }
        SecretOp::ListAll => list_objects(st, &base, collection, vault, query),
    }
}

/// `GET /<collection>`: one item per object (its newest version's attributes and tags, an id
/// without version), ordered by name, paged like version listings.
fn list_objects(
    st: &State,
    base: &str,
    collection: Collection,
    vault: &Vault,
    query: &HashMap<String, String>,
) -> Reply {
    let maxresults = match query.get("maxresults").map(|m| m.parse::<usize>()) {
        None => None,
        Some(Ok(n)) if (1..=DEFAULT_PAGE_SIZE).contains(&n) => Some(n),
        Some(_) => {
            return kv_error(
                400,
                "BadParameter",
                "Invalid maxresults: it must be an integer between 1 and 25.",
                None,
            );
        }
    };
    let skip = match query
        .get("$skiptoken")
        .map(|t| usize::from_str_radix(t, 16))
    {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return kv_error(400, "BadParameter", "Invalid $skiptoken.", None),
    };
    let page_size = maxresults.map_or(st.page_size, |m| m.min(st.page_size));
    let all: Vec<&Secret> = vault
        .collection(collection)
        .values()
        .filter(|o| !o.versions.is_empty())
        .collect();
    let page: Vec<Value> = all
        .iter()
        .skip(skip)
        .take(page_size)
        .filter_map(|object| {
            let latest = object.versions.last()?;
            let mut item = object_json(base, collection, object, latest, false);
            let id_field = if collection == Collection::Keys {
                "kid"
            } else {
                "id"
            };
            item[id_field] =
                Value::String(format!("{base}/{}/{}", collection.as_str(), object.name));
            Some(item)
        })
        .collect();
    let next = skip + page_size;
    let next_link = if next < all.len() {
        let api_version = query.get("api-version").map_or("", String::as_str);
        let mut link = format!(
            "{base}/{}?api-version={api_version}&$skiptoken={next:x}",
            collection.as_str()
        );
        if let Some(m) = maxresults {
            let _ = write!(link, "&maxresults={m}");
        }
        Value::String(link)
    } else {
        Value::Null
    };
    Reply::json(200, &json!({"value": page, "nextLink": next_link}))
}

/// Key Vault's 404 for object `id` (`name` or `name/version`) of `collection`.
fn not_found(collection: Collection, id: &str) -> Reply {
    let (noun, _) = collection.noun();
    kv_fixture(404, &format!("{noun}-not-found"), &[("name", id)])
}

/// Listing order key: descending bit-reversed insertion index. Deterministic,
/// never sorted by creation time for two or more versions, and stable as
/// versions are added (so it also serves as the paging cursor).
fn list_key(v: &Version) -> u32 {
    v.seq.reverse_bits()
}

fn list_versions(
    st: &State,
    base: &str,
    collection: Collection,
    secret: &Secret,
    query: &HashMap<String, String>,
) -> Reply {
    let maxresults = match query.get("maxresults").map(|m| m.parse::<usize>()) {
        None => None,
        Some(Ok(n)) if (1..=DEFAULT_PAGE_SIZE).contains(&n) => Some(n),
        Some(_) => {
            return kv_error(
                400,
                "BadParameter",
                "Invalid maxresults: it must be an integer between 1 and 25.",
                None,
            );
        }
    };
    let after = match query.get("$skiptoken").map(|t| u32::from_str_radix(t, 16)) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(_)) => return kv_error(400, "BadParameter", "Invalid $skiptoken.", None),
    };
    let page_size = maxresults.map_or(st.page_size, |m| m.min(st.page_size));
    let mut items: Vec<&Version> = secret
        .versions
        .iter()
        .filter(|v| after.is_none_or(|after| list_key(v) < after))
        .collect();
    items.sort_by_key(|v| std::cmp::Reverse(list_key(v)));
    let more = items.len() > page_size;
    items.truncate(page_size);
    let next_link = match items.last() {
        Some(last) if more => {
            let api_version = query.get("api-version").map_or("", String::as_str);
            let mut link = format!(
                "{base}/{}/{}/versions?api-version={api_version}&$skiptoken={:08x}",
                collection.as_str(),
                secret.name,
                list_key(last)
            );
            if let Some(m) = maxresults {
                let _ = write!(link, "&maxresults={m}");
            }
            Value::String(link)
        }
        _ => Value::Null,
    };
    let value: Vec<Value> = items
        .iter()
        .map(|v| object_json(base, collection, secret, v, false))
        .collect();
    Reply::json(200, &json!({"value": value, "nextLink": next_link}))
}

fn attributes_json(v: &Version) -> Value {
    json!({
        "enabled": v.opts.enabled,
        "created": v.created,
        "updated": v.updated,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": 90,
    })
}

/// A bundle (`full`) or a version list item of any collection.
fn object_json(
    base: &str,
    collection: Collection,
    object: &Secret,
    v: &Version,
    full: bool,
) -> Value {
    match collection {
        Collection::Secrets => secret_json(base, object, v, full),
        Collection::Keys => key_json(base, object, v, full),
        Collection::Certificates => certificate_json(base, object, v, full),
    }
}

/// A secret bundle (`with_value`) or a version list item.
fn secret_json(base: &str, secret: &Secret, v: &Version, with_value: bool) -> Value {
    let mut out = Map::new();
    if with_value {
        out.insert("value".into(), Value::String(v.value.clone()));
    }
    out.insert(
        "id".into(),
        Value::String(format!("{base}/secrets/{}/{}", secret.name, v.id)),
    );
    out.insert("attributes".into(), attributes_json(v));
    if let Some(content_type) = &v.opts.content_type {
        out.insert("contentType".into(), Value::String(content_type.clone()));
    }
    if let Some(kid) = &v.opts.kid {
        if with_value {
            out.insert("kid".into(), Value::String(kid.clone()));
        }
        out.insert("managed".into(), Value::Bool(true));
    }
    if !v.opts.tags.is_empty() {
        out.insert("tags".into(), json!(v.opts.tags));
    }
    Value::Object(out)
}

/// A key bundle (`{"key": <jwk with kid>, "attributes"}`) or a version list item (`kid`).
fn key_json(base: &str, key: &Secret, v: &Version, full: bool) -> Value {
    let kid = format!("{base}/keys/{}/{}", key.name, v.id);
    let mut out = Map::new();
    if full {
        let mut jwk: Value = serde_json::from_str(&v.value).unwrap_or_else(|_| json!({}));
        jwk["kid"] = Value::String(kid);
        out.insert("key".into(), jwk);
    } else {
        out.insert("kid".into(), Value::String(kid));
    }
    out.insert("attributes".into(), attributes_json(v));
    if v.opts.kid.is_some() {
        out.insert("managed".into(), Value::Bool(true));
    }
    Value::Object(out)
}

/// A certificate bundle (`id`, `kid`, `sid`, `x5t`, `cer`, `attributes`, `policy`) or a version
/// list item (`id`, `x5t`, `attributes`).
fn certificate_json(base: &str, certificate: &Secret, v: &Version, full: bool) -> Value {
    use sha1::Digest as _;
    let name = &certificate.name;
    let der = base64::engine::general_purpose::STANDARD
        .decode(&v.value)
        .unwrap_or_default();
    let x5t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha1::Sha1::digest(&der));
    let mut out = Map::new();
    out.insert(
        "id".into(),
        Value::String(format!("{base}/certificates/{name}/{}", v.id)),
    );
    out.insert("x5t".into(), Value::String(x5t));
    out.insert("attributes".into(), attributes_json(v));
    if full {
        out.insert(
            "kid".into(),
            Value::String(format!("{base}/keys/{name}/{}", v.id)),
        );
        out.insert(
            "sid".into(),
            Value::String(format!("{base}/secrets/{name}/{}", v.id)),
        );
        out.insert("cer".into(), Value::String(v.value.clone()));
        out.insert(
            "policy".into(),
            json!({
                "id": format!("{base}/certificates/{name}/policy"),
                "key_props": {"exportable": true, "kty": "RSA", "key_size": 2048, "reuse_key": false},
                "secret_props": {"contentType": "application/x-pkcs12"},
                "x509_props": {"subject": "CN=fake", "validity_months": 12},
                "issuer": {"name": "Self"},
                "attributes": {"enabled": true, "created": v.created, "updated": v.updated},
            }),
        );
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------
// Helpers

fn host_without_port(headers: &HeaderMap) -> String {
    let host = headers
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let host = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    host.to_ascii_lowercase()
}

fn query_map(query: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // Each RandomState gets fresh, randomly seeded SipHash keys.
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// `words` * 16 lowercase hex characters.
fn random_hex(words: usize) -> String {
    let mut out = String::with_capacity(words * 16);
    for _ in 0..words {
        let _ = write!(out, "{:016x}", random_u64());
    }
    out
}

fn random_guid() -> String {
    let hex = random_hex(2);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Entra's timestamp format, `2006-01-02 15:04:05Z` (UTC), for `unix` seconds.
fn entra_timestamp(unix: u64) -> String {
    let days = i64::try_from(unix / 86_400).expect("time in range");
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

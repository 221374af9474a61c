//! A fake Azure and a provider configured to reach it (TLS with the fake's CA, `--resolve` for the
//! fake host names, Azure Stack cloud file), with a service principal granted on vault `kv1`.

use super::fake_azure::{FakeAzure, SecretOpts};
use super::provider::{Provider, mount_request, objects_yaml};
use akv_csi_provider::v1alpha1::{MountResponse, VersionRequest};

/// Tenant of vault `kv1`.
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The service principal granted get and list on `kv1`.
pub const SP_ID: &str = "11111111-2222-3333-4444-555555555555";
/// Its client secret.
pub const SP_SECRET: &str = "sp-Secret~value.that-must-never-leak";

/// The fake, the provider and the cloud file that points one at the other.
pub struct Env {
    /// The fake Azure services.
    pub fake: FakeAzure,
    /// The provider binary.
    pub provider: Provider,
    /// Path of the Azure Stack cloud file.
    pub cloud_file: String,
}

impl Env {
    /// Starts both; `extra` are more provider flags.
    pub async fn start(extra: &[&str]) -> Env {
        Self::start_with_env(extra, &[]).await
    }

    /// Starts both, the provider with `vars` added to its environment.
    pub async fn start_with_env(extra: &[&str], vars: &[(&str, &str)]) -> Env {
        let fake = FakeAzure::start().await;
        fake.add_vault("kv1", TENANT);
        fake.add_service_principal(TENANT, SP_ID, SP_SECRET);
        fake.grant("kv1", SP_ID, &["get", "list"]);
        let provider = Provider::start_with_env(&Self::args(&fake, extra), vars);
        let cloud_file = fake.write_cloud_env_file().display().to_string();
        Env {
            fake,
            provider,
            cloud_file,
        }
    }

    /// The provider flags that point it at `fake`, plus `extra` (`-v=5` unless `extra` sets `-v`).
    pub fn args(fake: &FakeAzure, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            format!("--ca-file={}", fake.ca_file().display()),
            "--resolve=*.vault.test=127.0.0.1".to_owned(),
            "--resolve=login.test=127.0.0.1".to_owned(),
            format!("--imds-endpoint={}", fake.imds_url()),
            format!(
                "--pod-identity-endpoint=http://127.0.0.1:{}",
                fake.http_port()
            ),
        ];
        if !extra.iter().any(|a| a.starts_with("-v")) {
            args.push("-v=5".to_owned());
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    }

    /// Adds a version of secret `name` in `kv1`; returns its version id.
    pub fn secret(&self, name: &str, value: &str) -> String {
        self.fake
            .set_secret("kv1", name, value, SecretOpts::default())
    }

    /// SPC parameters for `objects` (each an object's YAML), plus `extra`.
    pub fn params(
        &self,
        objects: &[&str],
        extra: &[(&'static str, String)],
    ) -> Vec<(&'static str, String)> {
        let mut params = vec![
            ("keyvaultName", "kv1".to_owned()),
            ("tenantID", TENANT.to_owned()),
            ("cloudName", "AzureStackCloud".to_owned()),
            ("cloudEnvFileName", self.cloud_file.clone()),
            ("objects", objects_yaml(objects)),
        ];
        params.extend(extra.iter().cloned());
        params
    }

    /// One Mount over a fresh connection.
    pub async fn mount(
        &self,
        params: &[(&'static str, String)],
        secrets: &str,
    ) -> Result<MountResponse, tonic::Status> {
        let mut client = self.provider.client().await;
        client
            .mount(mount_request(params, secrets))
            .await
            .map(tonic::Response::into_inner)
    }

    /// A Mount of `objects` as the service principal.
    pub async fn mount_sp(&self, objects: &[&str]) -> Result<MountResponse, tonic::Status> {
        self.mount(&self.params(objects, &[]), &sp_secrets()).await
    }

    /// Whether the provider still answers `Version`.
    pub async fn serving(&self) -> bool {
        let mut client = self.provider.client().await;
        client
            .version(VersionRequest {
                version: "v1alpha1".into(),
            })
            .await
            .is_ok()
    }
}

/// The node-publish secret of the service principal.
pub fn sp_secrets() -> String {
    sp_secrets_for(SP_ID, SP_SECRET)
}

/// A node-publish secret for another service principal.
pub fn sp_secrets_for(client_id: &str, secret: &str) -> String {
    serde_json::json!({ "clientid": client_id, "clientsecret": secret }).to_string()
}

/// `(path, contents)` of every file of a reply.
pub fn files(r: &MountResponse) -> Vec<(String, Vec<u8>)> {
    r.files
        .iter()
        .map(|f| (f.path.clone(), f.contents.clone()))
        .collect()
}

/// `(id, version)` of every object version of a reply.
pub fn versions(r: &MountResponse) -> Vec<(String, String)> {
    r.object_version
        .iter()
        .map(|v| (v.id.clone(), v.version.clone()))
        .collect()
}

/// An [`Env`] that also remembers the secret material a test stored, to check that none of it
/// reaches the provider's log.
pub struct CheckedEnv {
    /// The environment.
    pub base: Env,
    /// Strings that must never appear in the provider's output.
    pub sensitive: Vec<String>,
}

impl std::ops::Deref for CheckedEnv {
    type Target = Env;

    fn deref(&self) -> &Env {
        &self.base
    }
}

impl CheckedEnv {
    /// Starts an [`Env`] with `flags`; the service principal's secret is already sensitive.
    pub async fn start(flags: &[&str]) -> CheckedEnv {
        Self::start_with_env(flags, &[]).await
    }

    /// [`CheckedEnv::start`] with `vars` added to the provider's environment.
    pub async fn start_with_env(flags: &[&str], vars: &[(&str, &str)]) -> CheckedEnv {
        CheckedEnv {
            base: Env::start_with_env(flags, vars).await,
            sensitive: vec![SP_SECRET.to_owned()],
        }
    }

    /// Adds a version of secret `name` in `kv1` (the value becomes sensitive); returns its id.
    pub fn secret(&mut self, name: &str, value: &str) -> String {
        self.secret_with("kv1", name, value, SecretOpts::default())
    }

    /// Adds a version of secret `name` in `vault` (the value becomes sensitive); returns its id.
    pub fn secret_in(&mut self, vault: &str, name: &str, value: &str) -> String {
        self.secret_with(vault, name, value, SecretOpts::default())
    }

    /// [`CheckedEnv::secret_in`] with options (content type, tags, enabled...).
    pub fn secret_with(
        &mut self,
        vault: &str,
        name: &str,
        value: &str,
        opts: SecretOpts,
    ) -> String {
        self.sensitive.push(value.to_owned());
        self.base.fake.set_secret(vault, name, value, opts)
    }

    /// Panics when the provider logged nothing or logged any sensitive string.
    pub fn assert_no_leaks(&self) {
        let logs = self.provider.logs();
        assert!(!logs.is_empty(), "the provider logged nothing");
        for needle in &self.sensitive {
            assert!(
                !logs.contains(needle.as_str()),
                "secret material leaked into the logs: {needle}\n{logs}"
            );
        }
        for line in logs.lines() {
            assert!(!line.contains("Bearer ey"), "a bearer token leaked: {line}");
        }
    }
}

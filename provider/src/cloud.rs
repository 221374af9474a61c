//! Azure clouds: authority host, Key Vault DNS suffix and resource, and Azure Stack environment files.
//!
//! Nothing here touches process-wide state: an Azure Stack file is read per Mount and the result is
//! passed down explicitly (the Go provider sets an environment variable, which races between mounts).

use serde::Deserialize;
use std::{fmt, io::Read, os::unix::fs::OpenOptionsExt, path::Path};
use url::Url;

/// Largest cloud environment file read, in bytes.
pub const MAX_CLOUD_ENV_FILE_BYTES: u64 = 64 * 1024;

/// Errors of cloud selection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CloudError {
    /// `cloudName` (or `--cloud-name`) is not a cloud we know; AzureGermanCloud is retired.
    #[error(
        "cloudName \"{0}\" is not one of AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud, AzureStackCloud (case-insensitive)"
    )]
    UnknownCloud(String),
    /// AzureStackCloud was chosen without `cloudEnvFileName`.
    #[error(
        "cloudName AzureStackCloud needs cloudEnvFileName: the path of a JSON file with activeDirectoryEndpoint, keyVaultEndpoint and keyVaultDNSSuffix"
    )]
    MissingEnvFile,
    /// The environment file could not be read (missing, not mounted into the provider pod, too large).
    #[error("cloudEnvFileName \"{path}\" could not be read: {reason}")]
    EnvFileUnreadable {
        /// File path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The environment file is not the expected JSON or misses a field.
    #[error("cloudEnvFileName \"{path}\" is not a valid cloud environment: {reason}")]
    EnvFileInvalid {
        /// File path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl CloudError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnknownCloud(_) => "unknown_cloud",
            Self::MissingEnvFile => "missing_cloud_env_file",
            Self::EnvFileUnreadable { .. } => "cloud_env_file_unreadable",
            Self::EnvFileInvalid { .. } => "cloud_env_file_invalid",
        }
    }
}

/// A cloud name as written in `cloudName` or `--cloud-name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudName {
    /// AzurePublicCloud.
    Public,
    /// AzureUSGovernmentCloud.
    UsGovernment,
    /// AzureChinaCloud.
    China,
    /// AzureStackCloud (endpoints from `cloudEnvFileName`).
    Stack,
}

impl CloudName {
    /// Parses a cloud name case-insensitively.
    pub fn parse(value: &str) -> Result<Self, CloudError> {
        match value.trim().to_ascii_lowercase().as_str() {
            "azurepubliccloud" => Ok(Self::Public),
            "azureusgovernmentcloud" => Ok(Self::UsGovernment),
            "azurechinacloud" => Ok(Self::China),
            "azurestackcloud" => Ok(Self::Stack),
            _ => Err(CloudError::UnknownCloud(value.trim().to_owned())),
        }
    }
}

impl fmt::Display for CloudName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Public => "AzurePublicCloud",
            Self::UsGovernment => "AzureUSGovernmentCloud",
            Self::China => "AzureChinaCloud",
            Self::Stack => "AzureStackCloud",
        })
    }
}

/// Endpoints of one cloud, as needed for authentication and Key Vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEnvironment {
    /// Which cloud this is.
    pub name: CloudName,
    /// Entra ID authority, e.g. `https://login.microsoftonline.com/`.
    pub authority_host: Url,
    /// DNS suffix of vaults, e.g. `vault.azure.net` (may carry a port on Azure Stack).
    pub vault_dns_suffix: String,
    /// Key Vault resource (token audience) without trailing slash, e.g. `https://vault.azure.net`.
    pub vault_resource: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvFile {
    #[serde(default)]
    active_directory_endpoint: String,
    #[serde(default)]
    key_vault_endpoint: String,
    #[serde(default, rename = "keyVaultDNSSuffix")]
    key_vault_dns_suffix: String,
}

fn known(name: CloudName, authority: &str, suffix: &str, resource: &str) -> CloudEnvironment {
    CloudEnvironment {
        name,
        authority_host: Url::parse(authority).unwrap_or_else(|_| unreachable!("constant URL")),
        vault_dns_suffix: suffix.to_owned(),
        vault_resource: resource.to_owned(),
    }
}

impl CloudEnvironment {
    /// The environment of a named cloud; Azure Stack reads `env_file`.
    pub fn resolve(name: CloudName, env_file: Option<&str>) -> Result<Self, CloudError> {
        match name {
            CloudName::Public => Ok(known(
                name,
                "https://login.microsoftonline.com/",
                "vault.azure.net",
                "https://vault.azure.net",
            )),
            CloudName::UsGovernment => Ok(known(
                name,
                "https://login.microsoftonline.us/",
                "vault.usgovcloudapi.net",
                "https://vault.usgovcloudapi.net",
            )),
            CloudName::China => Ok(known(
                name,
                "https://login.chinacloudapi.cn/",
                "vault.azure.cn",
                "https://vault.azure.cn",
            )),
            CloudName::Stack => {
                let path = env_file
                    .filter(|p| !p.is_empty())
                    .ok_or(CloudError::MissingEnvFile)?;
                Self::from_file(Path::new(path))
            }
        }
    }

    /// Reads an Azure Stack environment file.
    pub fn from_file(path: &Path) -> Result<Self, CloudError> {
        let shown = crate::text::quote(&path.display().to_string());
        let unreadable = |reason: String| CloudError::EnvFileUnreadable {
            path: shown.clone(),
            reason,
        };
        // The path comes from a SecretProviderClass: never block on a FIFO, never read a device
        // or a /proc file without end.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path)
            .map_err(|e| unreadable(e.to_string()))?;
        let meta = file.metadata().map_err(|e| unreadable(e.to_string()))?;
        if !meta.is_file() {
            return Err(unreadable("not a regular file".into()));
        }
        let mut text = Vec::new();
        file.take(MAX_CLOUD_ENV_FILE_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(|e| unreadable(e.to_string()))?;
        if text.len() as u64 > MAX_CLOUD_ENV_FILE_BYTES {
            return Err(unreadable(format!(
                "larger than {MAX_CLOUD_ENV_FILE_BYTES} bytes"
            )));
        }
        Self::from_json(&shown, &text)
    }

    /// Parses the JSON of an Azure Stack environment file (`path` only names it in errors).
    pub fn from_json(path: &str, text: &[u8]) -> Result<Self, CloudError> {
        let invalid = |reason: String| CloudError::EnvFileInvalid {
            path: path.to_owned(),
            reason,
        };
        // serde_json's messages can quote the file's values; report the position only.
        let env: EnvFile = serde_json::from_slice(text).map_err(|e| {
            invalid(format!(
                "not a JSON object of the expected fields (error at line {} column {})",
                e.line(),
                e.column()
            ))
        })?;
        let authority = env.active_directory_endpoint.trim();
        if authority.is_empty() {
            return Err(invalid("activeDirectoryEndpoint is missing".into()));
        }
        let authority_host =
            Url::parse(authority).map_err(|e| invalid(format!("activeDirectoryEndpoint: {e}")))?;
        if authority_host.scheme() != "https" {
            return Err(invalid("activeDirectoryEndpoint must use https".into()));
        }
        let suffix = env.key_vault_dns_suffix.trim().trim_matches('.').to_owned();
        if suffix.is_empty() || suffix.contains('/') {
            return Err(invalid(
                "keyVaultDNSSuffix must be a DNS suffix such as vault.local.azurestack.external"
                    .into(),
            ));
        }
        let resource = env
            .key_vault_endpoint
            .trim()
            .trim_end_matches('/')
            .to_owned();
        if resource.is_empty() {
            return Err(invalid("keyVaultEndpoint is missing".into()));
        }
        Url::parse(&resource).map_err(|e| invalid(format!("keyVaultEndpoint: {e}")))?;
        Ok(Self {
            name: CloudName::Stack,
            authority_host,
            vault_dns_suffix: suffix,
            vault_resource: resource,
        })
    }

    /// The URL of a vault: `https://<name>.<suffix>/`.
    pub fn vault_url(&self, vault_name: &str) -> String {
        format!("https://{vault_name}.{}/", self.vault_dns_suffix)
    }

    /// The Key Vault token scope, e.g. `https://vault.azure.net/.default`.
    pub fn vault_scope(&self) -> String {
        format!("{}/.default", self.vault_resource)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(
            CloudName::parse("AZUREPUBLICCLOUD").ok(),
            Some(CloudName::Public)
        );
        assert_eq!(
            CloudName::parse(" azurestackcloud ").ok(),
            Some(CloudName::Stack)
        );
        let err = CloudName::parse("AzureGermanCloud")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "cloudName \"AzureGermanCloud\" is not one of AzurePublicCloud, AzureUSGovernmentCloud, AzureChinaCloud, AzureStackCloud (case-insensitive)"
            )
        );
    }

    #[test]
    fn known_clouds() {
        let gov = CloudEnvironment::resolve(CloudName::UsGovernment, None).ok();
        let gov = gov.as_ref();
        assert_eq!(
            gov.map(|c| c.vault_url("kv")),
            Some("https://kv.vault.usgovcloudapi.net/".into())
        );
        assert_eq!(
            gov.map(|c| c.authority_host.as_str()),
            Some("https://login.microsoftonline.us/")
        );
        let cn = CloudEnvironment::resolve(CloudName::China, None).ok();
        assert_eq!(
            cn.map(|c| c.vault_scope()),
            Some("https://vault.azure.cn/.default".into())
        );
    }

    #[test]
    fn stack_file() {
        let json = br#"{"name":"AzureStackCloud","activeDirectoryEndpoint":"https://login.stack.local/","keyVaultEndpoint":"https://vault.stack.local/","keyVaultDNSSuffix":"vault.stack.local"}"#;
        let env = CloudEnvironment::from_json("f.json", json).ok();
        assert_eq!(
            env.as_ref().map(|e| e.vault_url("kv1")),
            Some("https://kv1.vault.stack.local/".into())
        );
        assert_eq!(
            env.map(|e| e.vault_resource),
            Some("https://vault.stack.local".into())
        );
        let err = CloudEnvironment::from_json("f.json", br#"{"keyVaultDNSSuffix":"x"}"#)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "cloudEnvFileName \"f.json\" is not a valid cloud environment: activeDirectoryEndpoint is missing"
            )
        );
        assert!(matches!(
            CloudEnvironment::resolve(CloudName::Stack, None),
            Err(CloudError::MissingEnvFile)
        ));
    }

    #[test]
    fn stack_file_never_blocks_or_reads_without_end() {
        let dir = tempfile::tempdir().ok();
        let Some(dir) = dir else { unreachable!() };
        let fifo = dir.path().join("fifo.json");
        assert!(nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).is_ok());
        let big = dir.path().join("big.json");
        assert!(std::fs::write(&big, vec![b' '; 70 * 1024]).is_ok());
        for (path, want) in [
            ("/dev/zero", "not a regular file"),
            ("/", "not a regular file"),
            (fifo.to_str().unwrap_or_default(), "not a regular file"),
            (big.to_str().unwrap_or_default(), "larger than 65536 bytes"),
            ("/nonexistent/x.json", "No such file"),
        ] {
            let err = CloudEnvironment::resolve(CloudName::Stack, Some(path))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(want), "{path}: {err}");
        }
    }
}

//! From the agent's SPC file and identity flags to the typed inputs of a Mount plan (the SPC
//! parameters, the pod it reports, the identity), so the agent mounts through the same plan and
//! mount code as the provider without encoding a driver request as JSON and parsing it back.
//!
//! Secrets (the federated token, the client secret) are read from their files on every sync, so a
//! rotated token or secret is picked up without a restart.

use super::AgentError;
use crate::{auth::Identity, mount::request::PodInfo, sensitive::SecretString};
use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
};

/// Identity parameters of an SPC, replaced when the agent is given an identity flag.
const IDENTITY_PARAMETERS: [&str; 5] = [
    "clientID",
    "usePodIdentity",
    "useVMManagedIdentity",
    "useAzureTokenProxy",
    "userAssignedIdentityID",
];
/// Largest token or client secret file read.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;
/// The pod name the agent reports (logs only; pod identity is not available to the agent).
pub const AGENT_POD_NAME: &str = "akv-csi-agent";

/// Who the agent authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentIdentity {
    /// As the SPC says (`useVMManagedIdentity`; workload identity needs a token file).
    FromSpc,
    /// Workload identity: the token in `token_file` as client assertion for `client_id` (the
    /// flag, else the SPC's `clientID`).
    Workload {
        /// Client id, if given by flag.
        client_id: Option<String>,
        /// File holding the federated token (re-read every sync).
        token_file: PathBuf,
    },
    /// Service principal: `client_id` with the secret in `secret_file`.
    ServicePrincipal {
        /// Client id.
        client_id: String,
        /// File holding the client secret (re-read every sync).
        secret_file: PathBuf,
    },
    /// VM managed identity (user-assigned when a client id is given).
    Managed {
        /// Client id of a user-assigned identity.
        user_assigned: Option<String>,
    },
}

impl AgentIdentity {
    /// Chooses the identity from the flags; at most one of them may be given.
    pub fn from_flags(
        client_id: Option<&str>,
        federated_token_file: Option<&Path>,
        client_secret_file: Option<&Path>,
        managed_identity: bool,
        user_assigned_identity_id: Option<&str>,
    ) -> Result<Self, AgentError> {
        let chosen = [
            federated_token_file.is_some(),
            client_secret_file.is_some(),
            managed_identity,
        ]
        .iter()
        .filter(|on| **on)
        .count();
        if chosen > 1 {
            return Err(AgentError::Config(
                "choose one identity: --federated-token-file (workload identity), --client-secret-file (service principal) or --managed-identity".into(),
            ));
        }
        let client_id = client_id.map(str::trim).filter(|c| !c.is_empty());
        if let Some(token_file) = federated_token_file {
            return Ok(Self::Workload {
                client_id: client_id.map(str::to_owned),
                token_file: token_file.to_path_buf(),
            });
        }
        if let Some(secret_file) = client_secret_file {
            let client_id = client_id.ok_or_else(|| {
                AgentError::Config(
                    "--client-secret-file needs --client-id (or AZURE_CLIENT_ID): the application (client) id of the service principal".into(),
                )
            })?;
            return Ok(Self::ServicePrincipal {
                client_id: client_id.to_owned(),
                secret_file: secret_file.to_path_buf(),
            });
        }
        if managed_identity {
            return Ok(Self::Managed {
                user_assigned: user_assigned_identity_id
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned),
            });
        }
        Ok(Self::FromSpc)
    }

    /// Names the mode, for logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::FromSpc => "as in the SecretProviderClass",
            Self::Workload { .. } => "workload identity (federated token file)",
            Self::ServicePrincipal { .. } => "service principal (client secret file)",
            Self::Managed { .. } => "VM managed identity",
        }
    }
}

/// Reads a secret file: at most 64 KiB, trimmed, not empty.
fn read_secret(path: &Path, what: &'static str) -> Result<SecretString, AgentError> {
    let unreadable = |reason: String| AgentError::SecretFile {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let mut text = zeroize::Zeroizing::new(String::new());
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| unreadable(e.to_string()))?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(unreadable(format!(
            "it is larger than {MAX_SECRET_FILE_BYTES} bytes"
        )));
    }
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(unreadable("it is empty".into()));
    }
    Ok(SecretString::new(trimmed.to_owned()))
}

/// What the agent plans a sync from: the SPC parameters as the agent uses them, the pod it
/// reports, and the identity its flags chose (`None`: as the SPC says). The identity holds the
/// token or client secret read from its file, zeroized when dropped.
#[derive(Debug)]
pub struct PlanInputs {
    /// The SPC parameters, with `--tenant-id` applied and the identity parameters removed when a
    /// flag chose the identity.
    pub parameters: HashMap<String, String>,
    /// The pod the agent reports (logs only).
    pub pod: PodInfo,
    /// The identity from the flags.
    pub identity: Option<Identity>,
}

/// The plan inputs for the SPC `parameters` (of an SPC in `namespace`) with `identity` and
/// `tenant_id` overriding the SPC's.
pub fn build(
    parameters: &HashMap<String, String>,
    namespace: Option<&str>,
    identity: &AgentIdentity,
    tenant_id: Option<&str>,
) -> Result<PlanInputs, AgentError> {
    let mut parameters = parameters.clone();
    let param = |parameters: &HashMap<String, String>, key: &str| {
        parameters.get(key).map_or("", |v| v.trim()).to_owned()
    };
    if *identity == AgentIdentity::FromSpc
        && (crate::compat::parse_go_bool(&param(&parameters, "usePodIdentity")) == Ok(true)
            || crate::compat::parse_go_bool(&param(&parameters, "useAzureTokenProxy")) == Ok(true))
    {
        return Err(AgentError::Config(
            "usePodIdentity and useAzureTokenProxy need a Kubernetes pod; give the agent an identity: --federated-token-file, --client-secret-file or --managed-identity".into(),
        ));
    }
    if let Some(tenant) = tenant_id.map(str::trim).filter(|t| !t.is_empty()) {
        parameters.remove("tenantId");
        parameters.insert("tenantID".into(), tenant.to_owned());
    }
    let spc_client_id = param(&parameters, "clientID");
    if *identity != AgentIdentity::FromSpc {
        for key in IDENTITY_PARAMETERS {
            parameters.remove(key);
        }
    }
    // As the SPC reads it: tenantID, else the legacy tenantId (the plan checks it is set).
    let tenant = match param(&parameters, "tenantID") {
        t if t.is_empty() => param(&parameters, "tenantId"),
        t => t,
    };
    let identity = match identity {
        AgentIdentity::FromSpc => {
            if !spc_client_id.is_empty()
                && crate::compat::parse_go_bool(&param(&parameters, "useVMManagedIdentity"))
                    != Ok(true)
            {
                return Err(AgentError::Config(format!(
                    "clientID \"{}\" selects workload identity: give the agent the federated token with --federated-token-file (or AZURE_FEDERATED_TOKEN_FILE)",
                    crate::text::quote(&spc_client_id)
                )));
            }
            None
        }
        AgentIdentity::Workload {
            client_id,
            token_file,
        } => {
            let client_id = client_id
                .clone()
                .or_else(|| Some(spc_client_id.clone()).filter(|c| !c.is_empty()))
                .ok_or_else(|| {
                    AgentError::Config(
                        "workload identity needs a client id: --client-id (or AZURE_CLIENT_ID), or clientID in the SecretProviderClass".into(),
                    )
                })?;
            Some(Identity::WorkloadIdentity {
                tenant_id: tenant,
                client_id,
                token: read_secret(token_file, "the federated token file")?,
            })
        }
        AgentIdentity::ServicePrincipal {
            client_id,
            secret_file,
        } => Some(Identity::ServicePrincipal {
            tenant_id: tenant,
            client_id: client_id.clone(),
            client_secret: read_secret(secret_file, "the client secret file")?,
        }),
        AgentIdentity::Managed { user_assigned } => Some(Identity::ManagedIdentity {
            user_assigned_client_id: user_assigned.clone(),
        }),
    };
    Ok(PlanInputs {
        parameters,
        pod: PodInfo {
            namespace: namespace.unwrap_or("default").to_owned(),
            name: AGENT_POD_NAME.to_owned(),
            uid: String::new(),
            service_account: String::new(),
        },
        identity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{cloud::CloudName, mount};

    fn params(extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut p: HashMap<String, String> = [
            ("keyvaultName", "kv1"),
            ("tenantID", "t1"),
            (
                "objects",
                "array:\n  - |\n    objectName: s\n    objectType: secret\n",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        p.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        p
    }

    fn identity_of(inputs: &PlanInputs) -> String {
        mount::plan_from_parts(
            &inputs.parameters,
            inputs.pod.clone(),
            inputs.identity.clone(),
            0o644,
            CloudName::Public,
        )
        .map_or_else(|e| e.to_string(), |p| p.identity.to_string())
    }

    #[test]
    fn flags_choose_the_identity() {
        let dir = tempfile::tempdir().ok();
        let dir = dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default();
        let token = dir.join("token");
        let secret = dir.join("secret");
        let _ = std::fs::write(&token, "jwt-from-file\n");
        let _ = std::fs::write(&secret, "  s3cr3t  ");

        let wi = AgentIdentity::from_flags(Some("wi-1"), Some(&token), None, false, None)
            .unwrap_or(AgentIdentity::FromSpc);
        let inputs = build(
            &params(&[("useVMManagedIdentity", "true")]),
            None,
            &wi,
            Some("t2"),
        );
        let Ok(inputs) = inputs else {
            unreachable!("workload identity inputs")
        };
        assert_eq!(
            identity_of(&inputs),
            "workload identity (clientID wi-1, tenant t2)"
        );
        assert!(matches!(
            &inputs.identity,
            Some(Identity::WorkloadIdentity { token, .. }) if token.expose() == "jwt-from-file"
        ));
        assert!(!inputs.parameters.contains_key("useVMManagedIdentity"));
        assert!(!format!("{inputs:?}").contains("jwt-from-file"));

        let sp = AgentIdentity::from_flags(Some("app-1"), None, Some(&secret), false, None)
            .unwrap_or(AgentIdentity::FromSpc);
        let Ok(inputs) = build(&params(&[("clientID", "ignored")]), Some("ns"), &sp, None) else {
            unreachable!("service principal inputs")
        };
        assert_eq!(
            identity_of(&inputs),
            "service principal (clientid app-1, tenant t1)"
        );
        assert!(matches!(
            &inputs.identity,
            Some(Identity::ServicePrincipal { client_secret, .. }) if client_secret.expose() == "s3cr3t"
        ));
        assert_eq!(inputs.pod.namespace, "ns");

        let mi = AgentIdentity::from_flags(None, None, None, true, Some("uai"))
            .unwrap_or(AgentIdentity::FromSpc);
        let Ok(inputs) = build(&params(&[]), None, &mi, None) else {
            unreachable!("managed identity inputs")
        };
        assert_eq!(
            identity_of(&inputs),
            "user-assigned managed identity (client id uai)"
        );

        let Ok(spc) = build(
            &params(&[("useVMManagedIdentity", "true")]),
            None,
            &AgentIdentity::FromSpc,
            None,
        ) else {
            unreachable!("SPC identity inputs")
        };
        assert_eq!(identity_of(&spc), "system-assigned managed identity");
    }

    #[test]
    fn identity_errors() {
        let both = AgentIdentity::from_flags(
            None,
            Some(Path::new("t")),
            Some(Path::new("s")),
            false,
            None,
        );
        assert!(matches!(both, Err(AgentError::Config(_))));
        let no_id = AgentIdentity::from_flags(None, None, Some(Path::new("s")), false, None);
        assert!(no_id.is_err());
        let e = build(
            &params(&[("clientID", "wi-1")]),
            None,
            &AgentIdentity::FromSpc,
            None,
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "clientID \"wi-1\" selects workload identity: give the agent the federated token with --federated-token-file (or AZURE_FEDERATED_TOKEN_FILE)"
            )
        );
        let e = build(
            &params(&[("usePodIdentity", "true")]),
            None,
            &AgentIdentity::FromSpc,
            None,
        );
        assert!(e.is_err());
        let missing = AgentIdentity::Workload {
            client_id: Some("x".into()),
            token_file: PathBuf::from("/nonexistent/token"),
        };
        let e = build(&params(&[]), None, &missing, None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("the federated token file /nonexistent/token cannot be used: "),
            "{e}"
        );
    }
}

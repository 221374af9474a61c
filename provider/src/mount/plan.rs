//! From a Mount request to a validated plan: pod, SPC, cloud, identity, default mode.

use super::{MountError, request};
use crate::{
    auth::{AuthError, IDENTITY_BINDING_AUDIENCE, Identity, WORKLOAD_IDENTITY_AUDIENCE},
    cloud::{CloudEnvironment, CloudName},
    sensitive::SecretString,
    spc::SecretProviderClass,
    v1alpha1::MountRequest,
};
use std::collections::HashMap;

/// Everything a Mount needs, validated.
#[derive(Debug, Clone)]
pub struct MountPlan {
    /// The pod.
    pub pod: request::PodInfo,
    /// The SecretProviderClass parameters and objects.
    pub spc: SecretProviderClass,
    /// The cloud's endpoints.
    pub cloud: CloudEnvironment,
    /// Who to authenticate as.
    pub identity: Identity,
    /// Mode of files whose object sets no `filePermission`.
    pub default_mode: u32,
    /// `https://<vault>.<suffix>/`.
    pub vault_url: String,
}

/// Validates a Mount request; `default_cloud` is `--cloud-name`.
pub fn plan(req: &MountRequest, default_cloud: CloudName) -> Result<MountPlan, MountError> {
    let scrubbed = Scrubbed(request::attributes(&req.attributes)?);
    let attrs = &scrubbed.0;
    let secrets = request::secrets(&req.secrets)?;
    let default_mode = request::permission(&req.permission)?;
    let pod = request::pod_info(attrs)?;
    assemble(attrs, pod, default_mode, default_cloud, |spc, pod| {
        identity(spc, pod, attrs, &secrets)
    })
}

/// A plan from typed parts, for a caller that is not the driver (the standalone agent): the SPC
/// `parameters`, the `pod`, and the `identity` (`None`: as the SPC's identity parameters say,
/// without service-account tokens or a node-publish secret). Nothing is encoded as a driver
/// request and parsed back, so no secret is copied into JSON text on the way.
pub fn plan_from_parts(
    parameters: &HashMap<String, String>,
    pod: request::PodInfo,
    identity: Option<Identity>,
    default_mode: u32,
    default_cloud: CloudName,
) -> Result<MountPlan, MountError> {
    assemble(
        parameters,
        pod,
        default_mode,
        default_cloud,
        |spc, pod| match identity {
            Some(identity) => Ok(identity),
            None => self::identity(
                spc,
                pod,
                parameters,
                &request::NodePublishSecrets::default(),
            ),
        },
    )
}

/// The SPC, the cloud and the identity (chosen by `choose` once the SPC is read) into a plan.
fn assemble(
    parameters: &HashMap<String, String>,
    pod: request::PodInfo,
    default_mode: u32,
    default_cloud: CloudName,
    choose: impl FnOnce(&SecretProviderClass, &request::PodInfo) -> Result<Identity, AuthError>,
) -> Result<MountPlan, MountError> {
    let spc = SecretProviderClass::from_attributes(parameters)?;
    let cloud = CloudEnvironment::resolve(
        spc.cloud_name.unwrap_or(default_cloud),
        spc.cloud_env_file.as_deref(),
    )?;
    let identity = choose(&spc, &pod)?;
    let vault_url = cloud.vault_url(&spc.keyvault_name);
    Ok(MountPlan {
        pod,
        spc,
        cloud,
        identity,
        default_mode,
        vault_url,
    })
}

/// The decoded attributes, zeroized when the plan is made: they hold service-account tokens.
struct Scrubbed(HashMap<String, String>);

impl Drop for Scrubbed {
    fn drop(&mut self) {
        for value in self.0.values_mut() {
            zeroize::Zeroize::zeroize(value);
        }
    }
}

/// Case-insensitive lookup in the node-publish secret.
pub(crate) fn secret_value<'a>(
    secrets: &'a HashMap<String, SecretString>,
    key: &str,
) -> Option<&'a SecretString> {
    secrets
        .iter()
        .find(|(k, v)| k.trim().eq_ignore_ascii_case(key) && !v.expose().trim().is_empty())
        .map(|(_, v)| v)
}

/// Chooses the identity the way the Go provider does: pod identity, VM managed identity,
/// identity binding, workload identity (clientID), else a service principal from the secret.
fn identity(
    spc: &SecretProviderClass,
    pod: &request::PodInfo,
    attrs: &HashMap<String, String>,
    secrets: &request::NodePublishSecrets,
) -> Result<Identity, AuthError> {
    let params = &spc.identity;
    if params.use_pod_identity {
        return Ok(Identity::PodIdentity {
            namespace: pod.namespace.clone(),
            pod_name: pod.name.clone(),
        });
    }
    if params.use_vm_managed_identity {
        let id = params.user_assigned_identity_id.trim();
        return Ok(Identity::ManagedIdentity {
            user_assigned_client_id: (!id.is_empty()).then(|| id.to_owned()),
        });
    }
    if params.use_azure_token_proxy {
        if params.client_id.is_empty() {
            return Err(AuthError::MissingClientId);
        }
        let tokens = request::tokens_json(attrs, secrets);
        let token = request::service_account_token(tokens, IDENTITY_BINDING_AUDIENCE)?.ok_or_else(
            || AuthError::MissingToken {
                client_id: params.client_id.clone(),
                audience: IDENTITY_BINDING_AUDIENCE,
            },
        )?;
        return Ok(Identity::IdentityBinding {
            tenant_id: spc.tenant_id.clone(),
            client_id: params.client_id.clone(),
            token,
        });
    }
    if !params.client_id.is_empty() {
        let tokens = request::tokens_json(attrs, secrets);
        let token = request::service_account_token(tokens, WORKLOAD_IDENTITY_AUDIENCE)?
            .ok_or_else(|| AuthError::MissingToken {
                client_id: params.client_id.clone(),
                audience: WORKLOAD_IDENTITY_AUDIENCE,
            })?;
        return Ok(Identity::WorkloadIdentity {
            tenant_id: spc.tenant_id.clone(),
            client_id: params.client_id.clone(),
            token,
        });
    }
    let secrets = &secrets.credentials;
    if secrets.is_empty() {
        return Err(AuthError::NoIdentity(
            "the volume has no nodePublishSecretRef",
        ));
    }
    let client_id = secret_value(secrets, "clientid").ok_or(AuthError::NoIdentity(
        "the node-publish secret has no clientid",
    ))?;
    let client_secret = secret_value(secrets, "clientsecret").ok_or(AuthError::NoIdentity(
        "the node-publish secret has no clientsecret",
    ))?;
    Ok(Identity::ServicePrincipal {
        tenant_id: spc.tenant_id.clone(),
        client_id: client_id.expose().trim().to_owned(),
        client_secret: client_secret.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJECTS: &str = "array:\n  - |\n    objectName: s1\n    objectType: secret\n";

    fn request(extra: &[(&str, &str)], secrets: &str) -> MountRequest {
        let mut attrs: HashMap<&str, &str> = [
            ("keyvaultName", "kv1"),
            ("tenantID", "tenant-1"),
            ("objects", OBJECTS),
            (request::POD_NAME, "web-0"),
            (request::POD_NAMESPACE, "shop"),
        ]
        .into_iter()
        .collect();
        attrs.extend(extra.iter().copied());
        MountRequest {
            attributes: serde_json::to_string(&attrs).unwrap_or_default(),
            secrets: secrets.to_owned(),
            target_path: "/tmp/x".into(),
            permission: "420".into(),
            current_object_version: vec![],
        }
    }

    fn planned(extra: &[(&str, &str)], secrets: &str) -> Result<MountPlan, String> {
        plan(&request(extra, secrets), CloudName::Public).map_err(|e| e.to_string())
    }

    #[test]
    fn identity_choice() {
        let p = planned(
            &[
                ("useVMManagedIdentity", "true"),
                ("userAssignedIdentityID", "uai-1"),
            ],
            "null",
        );
        assert_eq!(
            p.map(|p| p.identity.to_string()),
            Ok("user-assigned managed identity (client id uai-1)".into())
        );
        let p = planned(&[("usePodIdentity", "true")], "null");
        assert_eq!(
            p.map(|p| p.identity.to_string()),
            Ok("pod identity of pod shop/web-0".into())
        );
        let p = planned(&[], r#"{"ClientID":"app-1","ClientSecret":"s3cr3t"}"#);
        assert_eq!(
            p.as_ref().map(|p| p.identity.to_string()),
            Ok("service principal (clientid app-1, tenant tenant-1)".into())
        );
        assert!(!format!("{p:?}").contains("s3cr3t"));
        let tokens = r#"{"api://AzureADTokenExchange":{"token":"jwt","expirationTimestamp":"2030-01-01T00:00:00Z"}}"#;
        let p = planned(
            &[
                ("clientID", "wi-1"),
                (request::SERVICE_ACCOUNT_TOKENS, tokens),
            ],
            "null",
        );
        assert_eq!(
            p.as_ref().map(|p| p.identity.mode()),
            Ok("workload_identity")
        );
        assert_eq!(
            p.map(|p| p.vault_url),
            Ok("https://kv1.vault.azure.net/".into())
        );
    }

    #[test]
    fn identity_errors() {
        let e = planned(&[("clientID", "wi-1")], "null");
        assert_eq!(
            e.err().as_deref(),
            Some(
                "clientID \"wi-1\" selects workload identity, but the driver sent no service account token for audience api://AzureADTokenExchange: add {\"audience\": \"api://AzureADTokenExchange\"} to spec.tokenRequests of the CSIDriver secrets-store.csi.k8s.io (Helm: tokenRequests) and keep requiresRepublish: true"
            )
        );
        for none in ["null", "{}", ""] {
            let e = planned(&[], none);
            assert!(
                e.err()
                    .unwrap_or_default()
                    .ends_with("(the volume has no nodePublishSecretRef)"),
                "{none:?}"
            );
        }
        let e = planned(&[], r#"{"clientid":"a"}"#);
        assert!(
            e.err()
                .unwrap_or_default()
                .ends_with("(the node-publish secret has no clientsecret)")
        );
        let e = planned(&[("useAzureTokenProxy", "true"), ("clientID", "x")], "null");
        assert_eq!(
            e.err().as_deref(),
            Some(
                "useAzureTokenProxy with clientID \"x\" selects identity binding, but the driver sent no service account token for audience api://AKSIdentityBinding: add {\"audience\": \"api://AKSIdentityBinding\"} to spec.tokenRequests of the CSIDriver secrets-store.csi.k8s.io (Helm: tokenRequests) and keep requiresRepublish: true"
            )
        );
        // A workload-identity token is not an identity-binding token.
        let wi = r#"{"api://AzureADTokenExchange":{"token":"jwt","expirationTimestamp":"2030-01-01T00:00:00Z"}}"#;
        let e = planned(
            &[
                ("useAzureTokenProxy", "true"),
                ("clientID", "x"),
                (request::SERVICE_ACCOUNT_TOKENS, wi),
            ],
            "null",
        );
        assert!(
            e.err()
                .is_some_and(|e| e.contains("api://AKSIdentityBinding"))
        );
        let e = planned(&[("useAzureTokenProxy", "true")], "null");
        assert_eq!(
            e.err().as_deref(),
            Some(
                "useAzureTokenProxy (AKS identity binding) needs clientID: set it to the client id of the managed identity the identity binding is for"
            )
        );
        let both = r#"{"api://AzureADTokenExchange":{"token":"wi-jwt","expirationTimestamp":""},"api://AKSIdentityBinding":{"token":"ib-jwt","expirationTimestamp":""}}"#;
        let p = planned(
            &[
                ("useAzureTokenProxy", "true"),
                ("clientID", "x"),
                (request::SERVICE_ACCOUNT_TOKENS, both),
            ],
            "null",
        );
        assert_eq!(
            p.as_ref().map(|p| p.identity.to_string()),
            Ok("identity binding (clientID x, tenant tenant-1)".into())
        );
        assert!(matches!(
            p.map(|p| p.identity),
            Ok(Identity::IdentityBinding { token, .. }) if token.expose() == "ib-jwt"
        ));
    }

    /// Every identity mode with the `secrets` the driver v1.6.0 sends: `null` without a
    /// nodePublishSecretRef (`json.Marshal` of a nil map), and with the CSIDriver's
    /// `serviceAccountTokenInSecrets: true` the tokens entry in `secrets` as well as in the
    /// attributes (the driver copies it), or only in `secrets` (a driver that does not).
    #[test]
    fn every_mode_with_what_the_driver_sends() {
        let tokens = r#"{"api://AzureADTokenExchange":{"token":"jwt-in-secrets","expirationTimestamp":"2030-01-01T00:00:00Z"}}"#;
        let in_secrets = serde_json::json!({ request::SERVICE_ACCOUNT_TOKENS: tokens }).to_string();
        let sp_and_tokens = serde_json::json!({
            request::SERVICE_ACCOUNT_TOKENS: tokens, "clientid": "app-1", "clientsecret": "pw-1"
        })
        .to_string();
        let modes: [(&[(&str, &str)], &str); 4] = [
            (&[("useVMManagedIdentity", "true")], "managed_identity"),
            (&[("usePodIdentity", "true")], "pod_identity"),
            (
                &[
                    ("clientID", "wi-1"),
                    (request::SERVICE_ACCOUNT_TOKENS, tokens),
                ],
                "workload_identity",
            ),
            (&[("clientID", "wi-1")], "workload_identity"),
        ];
        for (index, (params, mode)) in modes.iter().enumerate() {
            let has_attr_token = params
                .iter()
                .any(|(k, _)| *k == request::SERVICE_ACCOUNT_TOKENS);
            // The last case has the token only in `secrets`: `null` cannot work for it.
            let forms: &[&str] = if index == 3 {
                &[&in_secrets]
            } else {
                &["null", &in_secrets]
            };
            for secrets in forms {
                let p = planned(params, secrets);
                assert_eq!(
                    p.as_ref().map(|p| p.identity.mode()),
                    Ok(*mode),
                    "{params:?} secrets={secrets} (token in attributes: {has_attr_token})"
                );
                assert!(!format!("{p:?}").contains("jwt-in-secrets"));
            }
        }
        let p = planned(&[], &sp_and_tokens);
        assert_eq!(
            p.as_ref().map(|p| p.identity.to_string()),
            Ok("service principal (clientid app-1, tenant tenant-1)".into())
        );
        // The tokens entry alone is no node-publish secret.
        let e = planned(&[], &in_secrets);
        assert!(
            e.err()
                .unwrap_or_default()
                .ends_with("(the volume has no nodePublishSecretRef)")
        );
    }

    #[test]
    fn pod_attributes_are_required() {
        let mut req = request(&[], "null");
        req.attributes =
            serde_json::json!({"keyvaultName": "kv1", "tenantID": "t", "objects": OBJECTS})
                .to_string();
        let e = plan(&req, CloudName::Public).err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "attribute csi.storage.k8s.io/pod.name is missing: the driver always sends it; is the caller the Secrets Store CSI driver?"
            )
        );
    }

    #[test]
    fn stack_cloud_needs_a_file() {
        let e = planned(
            &[("cloudName", "AzureStackCloud"), ("usePodIdentity", "true")],
            "null",
        );
        assert!(
            e.err()
                .unwrap_or_default()
                .starts_with("cloudName AzureStackCloud needs cloudEnvFileName")
        );
    }
}

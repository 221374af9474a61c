//! One Mount: request -> plan -> fetched objects -> files and object versions.

mod execute;
mod plan;
pub mod request;

pub use execute::{MountOutput, Mounter, MounterConfig, OutputFile};
pub use plan::{MountPlan, plan, plan_from_parts};

use crate::{
    auth::AuthError, cloud::CloudError, convert::ConvertError, keyvault::KeyVaultError,
    review::ReviewRefusal, spc::SpcError,
};
use std::time::Duration;

/// Everything that can fail in a Mount.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// A JSON field of the request is malformed (a caller that is not the driver, or a driver bug).
    #[error("Mount request field {field} {problem}")]
    Request {
        /// `attributes`, `secrets` or `permission`.
        field: &'static str,
        /// What is wrong (never a value from `secrets`).
        problem: String,
    },
    /// A pod attribute the driver always sends is missing.
    #[error(
        "attribute {0} is missing: the driver always sends it; is the caller the Secrets Store CSI driver?"
    )]
    MissingPodAttribute(&'static str),
    /// The SecretProviderClass is invalid.
    #[error(transparent)]
    Spc(#[from] SpcError),
    /// The cloud could not be resolved.
    #[error(transparent)]
    Cloud(#[from] CloudError),
    /// No usable identity.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Kubernetes TokenReview refused the service-account token, or it is another pod's.
    #[error(transparent)]
    Review(#[from] ReviewRefusal),
    /// Key Vault or the token service failed; `identity` says who we were.
    #[error("{source} (identity: {identity})")]
    Vault {
        /// The error.
        source: KeyVaultError,
        /// The identity, described without secrets.
        identity: String,
    },
    /// A value could not be converted into a file.
    #[error(transparent)]
    Convert(#[from] ConvertError),
    /// The Mount did not finish in time.
    #[error(
        "the Mount did not finish within {0:?}; Key Vault or the token service is slow; the driver will retry"
    )]
    Timeout(Duration),
    /// A bulk entry (`objectNamePrefix` / `objectTags`) selects more secrets than one entry may
    /// mount.
    #[error(
        "{found} enabled secrets in Key Vault {vault} match {selector}; one entry mounts at most {limit}: narrow objectNamePrefix or objectTags, or split the entry"
    )]
    TooManyMatches {
        /// Vault name.
        vault: String,
        /// The entry's selector, as written.
        selector: String,
        /// How many matched.
        found: usize,
        /// The limit.
        limit: usize,
    },
    /// A bulk entry that is not optional selects no enabled secret (typo in the prefix or tags,
    /// or the secrets are disabled).
    #[error(
        "no enabled secret in Key Vault {vault} matches {selector}: check objectNamePrefix and objectTags (tag names are case-insensitive, values case-sensitive), or set optional: true"
    )]
    NoMatches {
        /// Vault name.
        vault: String,
        /// The entry's selector, as written.
        selector: String,
    },
    /// The provider is stopping and the Mount did not finish within the drain time.
    #[error(
        "the provider is shutting down and this Mount did not finish within --drain-timeout ({0:?}); the driver will retry"
    )]
    ShuttingDown(Duration),
    /// The reply would exceed what the driver accepts.
    #[error(
        "the Mount reply for this volume would be {total} bytes (file contents, names and object versions), more than the {limit} bytes the driver accepts (its --max-call-recv-msg-size, 4 MiB by default): mount fewer or smaller objects, or raise the driver's --max-call-recv-msg-size and this provider's --max-call-recv-msg-size together"
    )]
    TooLarge {
        /// Encoded size of the reply.
        total: usize,
        /// The limit.
        limit: usize,
    },
}

/// The encoded size of the `MountResponse` for `output`, as the driver counts it against its
/// `--max-call-recv-msg-size` (protobuf bytes, without the 5-byte gRPC frame header).
pub fn reply_len(output: &MountOutput) -> usize {
    use prost::encoding::{encoded_len_varint, key_len};
    fn field(tag: u32, len: usize) -> usize {
        if len == 0 {
            0
        } else {
            key_len(tag) + encoded_len_varint(len as u64) + len
        }
    }
    fn message(tag: u32, len: usize) -> usize {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }
    let files: usize = output
        .files
        .iter()
        .map(|f| {
            let mode = if f.mode == 0 {
                0
            } else {
                key_len(2) + encoded_len_varint(u64::from(f.mode))
            };
            message(
                3,
                field(1, f.path.len()) + mode + field(3, f.contents.len()),
            )
        })
        .sum();
    let versions: usize = output
        .versions
        .iter()
        .map(|(id, version)| message(1, field(1, id.len()) + field(2, version.len())))
        .sum();
    files + versions
}

impl MountError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Request { .. } => "bad_request",
            Self::MissingPodAttribute(_) => "missing_pod_attribute",
            Self::Spc(e) => e.kind(),
            Self::Cloud(e) => e.kind(),
            Self::Auth(e) => e.kind(),
            Self::Review(e) => e.kind(),
            Self::Vault { source, .. } => source.kind(),
            Self::Convert(e) => e.kind(),
            Self::Timeout(_) => "timeout",
            Self::TooManyMatches { .. } => "too_many_matches",
            Self::NoMatches { .. } => "no_matches",
            Self::ShuttingDown(_) => "shutting_down",
            Self::TooLarge { .. } => "too_large",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        sensitive::SecretBytes,
        v1alpha1::{File, MountResponse, ObjectVersion},
    };
    use prost::Message;

    #[test]
    fn reply_len_is_the_encoded_length() {
        for (files, versions) in [(0usize, 0usize), (1, 1), (3, 2), (200, 200)] {
            let output = MountOutput {
                files: (0..files)
                    .map(|i| OutputFile {
                        path: "p".repeat(i % 300),
                        mode: if i % 5 == 0 { 0 } else { 0o644 },
                        contents: SecretBytes::new(vec![7; (i * 997) % 70_000]),
                    })
                    .collect(),
                versions: (0..versions)
                    .map(|i| ("i".repeat(i % 150), "v".repeat(i % 40)))
                    .collect(),
            };
            let proto = MountResponse {
                object_version: output
                    .versions
                    .iter()
                    .map(|(id, version)| ObjectVersion {
                        id: id.clone(),
                        version: version.clone(),
                    })
                    .collect(),
                error: None,
                files: output
                    .files
                    .iter()
                    .map(|f| File {
                        path: f.path.clone(),
                        mode: i32::try_from(f.mode).unwrap_or_default(),
                        contents: f.contents.expose().to_vec(),
                    })
                    .collect(),
            };
            assert_eq!(reply_len(&output), proto.encoded_len(), "{files} files");
        }
    }
}

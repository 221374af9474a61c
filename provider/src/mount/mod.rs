//! One Mount: request -> plan -> fetched objects -> files and object versions.

mod execute;
mod plan;
pub mod request;

pub use execute::{MountOutput, Mounter, MounterConfig, OutputFile};
pub use plan::{MountPlan, plan};

use crate::{
    auth::AuthError, cloud::CloudError, convert::ConvertError, keyvault::KeyVaultError,
    spc::SpcError,
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
    /// The reply would exceed what the driver accepts.
    #[error(
        "the files of this volume total {total} bytes, more than the {limit} bytes the driver accepts by default; raise the driver's --max-call-recv-msg-size or mount fewer objects"
    )]
    TooLarge {
        /// Bytes of all files.
        total: usize,
        /// The limit.
        limit: usize,
    },
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
            Self::Vault { source, .. } => source.kind(),
            Self::Convert(e) => e.kind(),
            Self::Timeout(_) => "timeout",
            Self::TooManyMatches { .. } => "too_many_matches",
            Self::NoMatches { .. } => "no_matches",
            Self::TooLarge { .. } => "too_large",
        }
    }
}

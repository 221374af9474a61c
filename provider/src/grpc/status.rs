//! The one place where errors become gRPC status codes.
//!
//! The driver retries `Unavailable` at once (3 attempts); other codes fail the publish and kubelet
//! retries later. So only transient trouble maps to `Unavailable`.

use crate::{auth::AuthError, cloud::CloudError, keyvault::KeyVaultError, mount::MountError};
use tonic::{Code, Status};

fn code(error: &MountError) -> Code {
    match error {
        MountError::Request { .. } | MountError::MissingPodAttribute(_) | MountError::Spc(_) => {
            Code::InvalidArgument
        }
        MountError::Cloud(e) => match e {
            CloudError::EnvFileUnreadable { .. } => Code::FailedPrecondition,
            _ => Code::InvalidArgument,
        },
        MountError::Auth(e) => match e {
            AuthError::MissingToken { .. } => Code::FailedPrecondition,
            _ => Code::InvalidArgument,
        },
        MountError::Vault { source, .. } => match source {
            KeyVaultError::NotFound { .. } => Code::NotFound,
            KeyVaultError::Forbidden { .. }
            | KeyVaultError::Unauthorized { .. }
            | KeyVaultError::Authentication { .. } => Code::PermissionDenied,
            // A vault that refuses our network is a state of the vault's configuration, not a
            // missing permission of the identity (PermissionDenied sends operators to RBAC) and
            // not transient (Unavailable makes the driver retry at once for nothing).
            KeyVaultError::Disabled { .. }
            | KeyVaultError::TooManySecrets { .. }
            | KeyVaultError::NetworkDenied { .. } => Code::FailedPrecondition,
            KeyVaultError::Throttled { .. }
            | KeyVaultError::Unavailable { .. }
            | KeyVaultError::AuthenticationUnavailable { .. } => Code::Unavailable,
            _ => Code::Internal,
        },
        // A value that is damaged or does not fit the request is a bad argument; a well-formed
        // object this provider cannot write (key type, curve, password) is a failed precondition.
        MountError::Convert(e) if e.is_unsupported() => Code::FailedPrecondition,
        MountError::Convert(_) => Code::InvalidArgument,
        MountError::Timeout(_) | MountError::ShuttingDown(_) => Code::Unavailable,
        MountError::TooLarge { .. } => Code::ResourceExhausted,
        MountError::Review(_) => Code::PermissionDenied,
        MountError::TooManyMatches { .. } => Code::FailedPrecondition,
        MountError::NoMatches { .. } => Code::NotFound,
    }
}

/// Longest status message sent, in bytes: it travels in an HTTP/2 header and ends up in logs.
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// The gRPC status for a failed Mount: a fitting code and the error's message (at most
/// [`MAX_MESSAGE_BYTES`]).
pub fn to_status(error: &MountError) -> Status {
    let mut message = error.to_string();
    if message.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES - '…'.len_utf8();
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    Status::new(code(error), message)
}

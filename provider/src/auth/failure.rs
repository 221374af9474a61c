//! How a failed token request is classified, for the Mount's gRPC code and the token metric.

/// Why a token request failed: the one classification behind both the gRPC code of the Mount
/// and the `outcome` label of `akv_token_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFailure {
    /// The token service refused (bad secret, unknown client, no federated credential): the
    /// identity must be fixed. Label `rejected`, code `PermissionDenied`.
    Rejected,
    /// 429, 5xx or no connection: a retry may work. Label `unavailable`, code `Unavailable`.
    Unavailable,
    /// An answer that is not a token response (a 5xx with an empty or HTML body, a garbled 200:
    /// the SDK reads error bodies as JSON and loses the status). Not a permission problem.
    /// Label `unavailable`, code `Unavailable`.
    Garbled,
}

impl TokenFailure {
    /// Classifies a failed token request.
    pub fn of(err: &azure_core::Error) -> Self {
        match crate::transport::http_cause(err) {
            (Some(s), _) if s == 429 || s >= 500 => Self::Unavailable,
            (None, true) => Self::Unavailable,
            (None, false) if crate::transport::unparsable(err) => Self::Garbled,
            _ => Self::Rejected,
        }
    }

    /// The `outcome` label of `akv_token_requests_total`.
    pub fn outcome(self) -> &'static str {
        match self {
            Self::Rejected => "rejected",
            Self::Unavailable | Self::Garbled => "unavailable",
        }
    }
}

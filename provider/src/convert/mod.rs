//! Turning stored Key Vault values into file bytes.
//!
//! Secrets: `objectEncoding` decoding. Certificate-backed secrets in PKCS#12 and keys/certificates
//! as PEM are converted by the modules added for them.

use crate::{sensitive::SecretBytes, spc::ObjectEncoding};
use base64::Engine;

/// Errors converting a stored value into file bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// The stored value does not match `objectEncoding`.
    #[error(
        "the value of {object} is not valid {encoding} ({reason}): check objectEncoding, or store the value {encoding}-encoded"
    )]
    Decode {
        /// The object.
        object: String,
        /// `hex` or `base64`.
        encoding: &'static str,
        /// What is wrong (never the value).
        reason: String,
    },
    /// The object needs a conversion this provider does not do yet.
    #[error("{object}: {what} is not supported by this provider version yet")]
    Unsupported {
        /// The object.
        object: String,
        /// What was asked.
        what: String,
    },
}

impl ConvertError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Decode { .. } => "decode",
            Self::Unsupported { .. } => "unsupported",
        }
    }
}

/// Applies `objectEncoding` to a secret value.
pub fn decode(
    value: &SecretBytes,
    encoding: ObjectEncoding,
    object: &str,
) -> Result<SecretBytes, ConvertError> {
    match encoding {
        ObjectEncoding::Utf8 => Ok(value.clone()),
        ObjectEncoding::Hex => {
            let text = value.expose().trim_ascii();
            hex::decode(text)
                .map(SecretBytes::new)
                .map_err(|e| ConvertError::Decode {
                    object: object.to_owned(),
                    encoding: "hex",
                    reason: match e {
                        hex::FromHexError::OddLength => "odd number of digits".to_owned(),
                        hex::FromHexError::InvalidHexCharacter { index, .. } => {
                            format!("a non-hex character at offset {index}")
                        }
                        hex::FromHexError::InvalidStringLength => "wrong length".to_owned(),
                    },
                })
        }
        ObjectEncoding::Base64 => {
            let text = value.expose().trim_ascii();
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map(SecretBytes::new)
                .map_err(|e| ConvertError::Decode {
                    object: object.to_owned(),
                    encoding: "base64",
                    reason: match e {
                        base64::DecodeError::InvalidByte(offset, _) => {
                            format!("an invalid character at offset {offset}")
                        }
                        base64::DecodeError::InvalidLength(_) => "wrong length".to_owned(),
                        base64::DecodeError::InvalidLastSymbol(offset, _) => {
                            format!("an invalid last character at offset {offset}")
                        }
                        base64::DecodeError::InvalidPadding => "wrong padding".to_owned(),
                    },
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> SecretBytes {
        SecretBytes::new(s.as_bytes().to_vec())
    }

    #[test]
    fn encodings() {
        assert_eq!(
            decode(&bytes("héllo"), ObjectEncoding::Utf8, "o").map(|b| b.expose().to_vec()),
            Ok("héllo".as_bytes().to_vec())
        );
        assert_eq!(
            decode(&bytes("00ff10"), ObjectEncoding::Hex, "o").map(|b| b.expose().to_vec()),
            Ok(vec![0, 255, 16])
        );
        assert_eq!(
            decode(&bytes("aGk=\n"), ObjectEncoding::Base64, "o").map(|b| b.expose().to_vec()),
            Ok(b"hi".to_vec())
        );
    }

    #[test]
    fn decode_errors_never_show_the_value() {
        let e = decode(&bytes("zz-secret"), ObjectEncoding::Hex, "secret/s")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            e,
            "the value of secret/s is not valid hex (odd number of digits): check objectEncoding, or store the value hex-encoded"
        );
        let e = decode(&bytes("not*base64"), ObjectEncoding::Base64, "secret/s")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            e,
            "the value of secret/s is not valid base64 (an invalid character at offset 3): check objectEncoding, or store the value base64-encoded"
        );
    }
}

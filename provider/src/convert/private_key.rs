//! Private keys in PKCS#8, PKCS#1 (RSA) or SEC1 (EC) to the PKCS#8 DER that `openssl pkey`
//! writes: version 1, no attributes; RSA with NULL parameters; EC with the named curve in the
//! algorithm, the scalar padded to the curve size, no inner parameters and the public key.
//!
//! Every buffer holding key material is zeroized when dropped.

use crate::sensitive::SecretBytes;
use der::{
    Decode, Encode,
    asn1::{AnyRef, ObjectIdentifier, OctetStringRef},
};
use p256::pkcs8::EncodePrivateKey;
use pkcs8::{AlgorithmIdentifierRef, PrivateKeyInfoRef};
use zeroize::Zeroizing;

/// `rsaEncryption`.
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// `id-ecPublicKey`.
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `secp256r1` (P-256).
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// `secp384r1` (P-384).
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// `secp521r1` (P-521).
const P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// How the input key is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// PKCS#8 `PrivateKeyInfo` (`PRIVATE KEY`); also the content of PKCS#12 key bags.
    Pkcs8,
    /// PKCS#1 `RSAPrivateKey` (`RSA PRIVATE KEY`).
    Pkcs1,
    /// SEC1 `ECPrivateKey` (`EC PRIVATE KEY`).
    Sec1,
}

/// Errors normalizing a private key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is not valid DER of its format (damaged or truncated).
    #[error("the private key is not a valid {format} key: {reason}")]
    Malformed {
        /// `PKCS#8`, `PKCS#1` or `SEC1`.
        format: &'static str,
        /// What is wrong (never key material).
        reason: String,
    },
    /// The key algorithm is neither RSA nor EC (e.g. Ed25519 or RSA-PSS).
    #[error(
        "private keys of algorithm {oid} are not supported; only RSA and EC (P-256, P-384, P-521) keys are"
    )]
    UnsupportedAlgorithm {
        /// The algorithm OID.
        oid: String,
    },
    /// The EC curve is not P-256, P-384 or P-521, or is not named.
    #[error("EC private keys on curve {curve} are not supported; only P-256, P-384 and P-521 are")]
    UnsupportedCurve {
        /// The curve OID, or a description when the curve is not named.
        curve: String,
    },
}

impl KeyError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "private_key_malformed",
            Self::UnsupportedAlgorithm { .. } => "unsupported_key_algorithm",
            Self::UnsupportedCurve { .. } => "unsupported_curve",
        }
    }
}

fn malformed(format: &'static str) -> impl Fn(der::Error) -> KeyError {
    move |e| KeyError::Malformed {
        format,
        reason: e.to_string(),
    }
}

/// The key as canonical PKCS#8 DER.
pub fn to_pkcs8(der: &[u8], format: KeyFormat) -> Result<SecretBytes, KeyError> {
    match format {
        KeyFormat::Pkcs8 => {
            let info = PrivateKeyInfoRef::from_der(der).map_err(malformed("PKCS#8"))?;
            match info.algorithm.oid {
                RSA_ENCRYPTION => rsa_to_pkcs8(info.private_key.as_bytes(), "PKCS#8"),
                EC_PUBLIC_KEY => {
                    let curve = match info.algorithm.parameters {
                        Some(params) => {
                            Some(params.decode_as::<ObjectIdentifier>().map_err(|_| {
                                KeyError::UnsupportedCurve {
                                    curve: "given by explicit parameters".into(),
                                }
                            })?)
                        }
                        None => None,
                    };
                    ec_to_pkcs8(info.private_key.as_bytes(), curve, "PKCS#8")
                }
                oid => Err(KeyError::UnsupportedAlgorithm {
                    oid: oid.to_string(),
                }),
            }
        }
        KeyFormat::Pkcs1 => rsa_to_pkcs8(der, "PKCS#1"),
        KeyFormat::Sec1 => ec_to_pkcs8(der, None, "SEC1"),
    }
}

fn rsa_to_pkcs8(pkcs1_der: &[u8], format: &'static str) -> Result<SecretBytes, KeyError> {
    let key = pkcs1::RsaPrivateKeyRef::from_der(pkcs1_der).map_err(malformed(format))?;
    let canonical = Zeroizing::new(key.to_der().map_err(malformed(format))?);
    let info = PrivateKeyInfoRef::new(
        AlgorithmIdentifierRef {
            oid: RSA_ENCRYPTION,
            parameters: Some(AnyRef::NULL),
        },
        OctetStringRef::new(&canonical).map_err(malformed(format))?,
    );
    let der = info.to_der().map_err(malformed(format))?;
    Ok(SecretBytes::new(der))
}

fn ec_to_pkcs8(
    sec1_der: &[u8],
    outer_curve: Option<ObjectIdentifier>,
    format: &'static str,
) -> Result<SecretBytes, KeyError> {
    let key = sec1::EcPrivateKey::from_der(sec1_der).map_err(malformed(format))?;
    let inner_curve = key.parameters.and_then(sec1::EcParameters::named_curve);
    let curve = match (outer_curve, inner_curve) {
        (Some(outer), Some(inner)) if outer != inner => {
            return Err(KeyError::Malformed {
                format,
                reason: format!("the algorithm names curve {outer} but the key curve {inner}"),
            });
        }
        (Some(curve), _) | (None, Some(curve)) => curve,
        (None, None) => {
            return Err(KeyError::UnsupportedCurve {
                curve: "not named".into(),
            });
        }
    };
    let invalid = |_| KeyError::Malformed {
        format,
        reason: "the EC key is not valid for its curve (bad scalar or mismatched public key)"
            .into(),
    };
    let document = match curve {
        P256 => p256::SecretKey::try_from(key)
            .map_err(invalid)?
            .to_pkcs8_der(),
        P384 => p384::SecretKey::try_from(key)
            .map_err(invalid)?
            .to_pkcs8_der(),
        P521 => p521::SecretKey::try_from(key)
            .map_err(invalid)?
            .to_pkcs8_der(),
        other => {
            return Err(KeyError::UnsupportedCurve {
                curve: other.to_string(),
            });
        }
    };
    let document = document.map_err(|e| KeyError::Malformed {
        format,
        reason: e.to_string(),
    })?;
    Ok(SecretBytes::new(document.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::pem;

    fn der_of(pem_text: &str) -> (String, Vec<u8>) {
        let blocks = pem::parse_blocks(pem_text.as_bytes()).unwrap_or_default();
        blocks
            .into_iter()
            .next()
            .map(|b| (b.label, b.der.to_vec()))
            .unwrap_or_default()
    }

    fn normalized(pem_text: &str) -> Option<String> {
        let (label, der) = der_of(pem_text);
        let format = match label.as_str() {
            pem::RSA_PRIVATE_KEY => KeyFormat::Pkcs1,
            pem::EC_PRIVATE_KEY => KeyFormat::Sec1,
            _ => KeyFormat::Pkcs8,
        };
        let pkcs8 = to_pkcs8(&der, format).ok()?;
        let text = pem::encode_secret(pem::PRIVATE_KEY, pkcs8.expose()).ok()?;
        String::from_utf8(text.expose().to_vec()).ok()
    }

    #[test]
    fn every_input_format_gives_openssl_pkcs8() {
        let cases = [
            (
                include_str!("../../../tests/fixtures/certs/leaf-rsa.key.pem"),
                include_str!("../../../tests/fixtures/certs/leaf-rsa.pkcs8.pem"),
            ),
            (
                include_str!("../../../tests/fixtures/certs/leaf-rsa.pkcs1.pem"),
                include_str!("../../../tests/fixtures/certs/leaf-rsa.pkcs8.pem"),
            ),
            (
                include_str!("../../../tests/fixtures/certs/leaf-p256.key.pem"),
                include_str!("../../../tests/fixtures/certs/leaf-p256.pkcs8.pem"),
            ),
            (
                include_str!("../../../tests/fixtures/certs/leaf-p256.sec1.pem"),
                include_str!("../../../tests/fixtures/certs/leaf-p256.pkcs8.pem"),
            ),
            (
                include_str!("../../../tests/fixtures/certs/leaf-p384.sec1.pem"),
                include_str!("../../../tests/fixtures/certs/leaf-p384.pkcs8.pem"),
            ),
            (
                include_str!("../../../tests/fixtures/certs/leaf-p521.sec1.pem"),
                include_str!("../../../tests/fixtures/certs/leaf-p521.pkcs8.pem"),
            ),
            (
                include_str!("../../../tests/fixtures/certs/leaf-p521.key.pem"),
                include_str!("../../../tests/fixtures/certs/leaf-p521.pkcs8.pem"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(normalized(input).as_deref(), Some(want), "{input}");
        }
    }

    #[test]
    fn ec_keys_keep_their_curve() {
        let (_, der) = der_of(include_str!(
            "../../../tests/fixtures/certs/leaf-p384.sec1.pem"
        ));
        let pkcs8 = to_pkcs8(&der, KeyFormat::Sec1).ok();
        let info = pkcs8
            .as_ref()
            .and_then(|k| PrivateKeyInfoRef::from_der(k.expose()).ok())
            .and_then(|i| i.algorithm.parameters)
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        assert_eq!(info, Some(P384));
    }

    #[test]
    fn damaged_and_unsupported_keys() {
        let (_, der) = der_of(include_str!(
            "../../../tests/fixtures/certs/leaf-rsa.pkcs8.pem"
        ));
        assert!(matches!(
            to_pkcs8(&der[..der.len() - 7], KeyFormat::Pkcs8),
            Err(KeyError::Malformed {
                format: "PKCS#8",
                ..
            })
        ));
        assert!(matches!(
            to_pkcs8(&der, KeyFormat::Sec1),
            Err(KeyError::Malformed { format: "SEC1", .. })
        ));
        // An Ed25519 key (RFC 8410 example).
        let ed25519 = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20, 0xd4, 0xee, 0x72, 0xdb, 0xf9, 0x13, 0x58, 0x4a, 0xd5, 0xb6, 0xd8, 0xf1,
            0xf7, 0x69, 0xf8, 0xad, 0x3a, 0xfe, 0x7c, 0x28, 0xcb, 0xf1, 0xd4, 0xfb, 0xe0, 0x97,
            0xa8, 0x8f, 0x44, 0x75, 0x58, 0x42,
        ];
        assert_eq!(
            to_pkcs8(&ed25519, KeyFormat::Pkcs8).err(),
            Some(KeyError::UnsupportedAlgorithm {
                oid: "1.3.101.112".into()
            })
        );
        // A P-256 key whose public key belongs to another key.
        let (_, a) = der_of(include_str!(
            "../../../tests/fixtures/certs/leaf-p256.sec1.pem"
        ));
        let (_, b) = der_of(include_str!(
            "../../../tests/fixtures/certs/noid-leaf.pkcs8.pem"
        ));
        let mut mixed = sec1::EcPrivateKey::from_der(&a).ok();
        let other = PrivateKeyInfoRef::from_der(&b)
            .ok()
            .map(|i| i.private_key.as_bytes().to_vec())
            .unwrap_or_default();
        let other_key = sec1::EcPrivateKey::from_der(&other).ok();
        if let (Some(m), Some(o)) = (mixed.as_mut(), other_key) {
            m.public_key = o.public_key;
        }
        let mixed_der = mixed.and_then(|m| m.to_der().ok()).unwrap_or_default();
        assert!(matches!(
            to_pkcs8(&mixed_der, KeyFormat::Sec1),
            Err(KeyError::Malformed { .. })
        ));
    }
}

//! Turning stored Key Vault values into file bytes.
//!
//! * secrets: `objectEncoding` ([`decode`]);
//! * certificate-backed secrets: PKCS#12 to PEM ([`pkcs12_to_pem`], built from [`pkcs12`],
//!   [`private_key`], [`chain`] and [`pem`]) and PEM bundles split into certificates and keys
//!   ([`split_pem`]);
//! * keys: the public key as PEM `PUBLIC KEY` ([`public_key_pem`], [`jwk`]);
//! * certificates: the leaf as PEM `CERTIFICATE` ([`certificate_pem`]).
//!
//! Every output is byte-identical to what `openssl` writes for the same conversion.

pub mod chain;
pub mod json;
pub mod jwk;
pub mod pem;
pub mod pkcs12;
pub mod private_key;

use crate::{sensitive::SecretBytes, spc::ObjectEncoding};
use base64::Engine;
use private_key::KeyFormat;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Largest certificate (`cer`) converted.
pub const MAX_CERTIFICATE_BYTES: usize = 64 * 1024;

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
    /// `objectEncoding` was set for a certificate written as PEM text: a PKCS#12 certificate
    /// without `objectFormat: pfx`, or a PEM-backed certificate, which has no PFX at all.
    #[error(
        "{object} backs a certificate and is written as PEM text, which objectEncoding {encoding} cannot decode: {}",
        if *.stored_as_pem {
            "the certificate is stored as PEM (application/x-pem-file), so it has no PFX to decode; remove objectEncoding (and objectFormat: pfx, which a PEM certificate ignores)"
        } else {
            "remove objectEncoding, or set objectFormat: pfx to get the PFX file"
        }
    )]
    EncodingOfPem {
        /// The object.
        object: String,
        /// `hex` or `base64`.
        encoding: &'static str,
        /// The certificate is stored as PEM (`application/x-pem-file`), not PKCS#12.
        stored_as_pem: bool,
    },
    /// A certificate-backed secret has a content type that is neither PKCS#12 nor PEM.
    #[error(
        "{object} backs a certificate but its content type is \"{content_type}\", not application/x-pkcs12 or application/x-pem-file; fix the certificate's content type in Key Vault"
    )]
    ContentType {
        /// The object.
        object: String,
        /// The content type (cut to 64 characters).
        content_type: String,
    },
    /// The PKCS#12 value cannot be opened.
    #[error("the PKCS#12 (PFX) value of {object} {source}")]
    Pkcs12 {
        /// The object.
        object: String,
        /// Why.
        source: pkcs12::Pkcs12Error,
    },
    /// The PEM value cannot be read.
    #[error("the PEM value of {object} {source}")]
    Pem {
        /// The object.
        object: String,
        /// Why.
        source: pem::PemError,
    },
    /// A certificate of the value is damaged.
    #[error("{object}: {source}")]
    Chain {
        /// The object.
        object: String,
        /// Why.
        source: chain::ChainError,
    },
    /// A private key of the value cannot be converted to PKCS#8.
    #[error("{object}: {source}")]
    PrivateKey {
        /// The object.
        object: String,
        /// Why.
        source: private_key::KeyError,
    },
    /// The key cannot be written as a public key.
    #[error("{object}: {source}")]
    Jwk {
        /// The object.
        object: String,
        /// Why.
        source: jwk::JwkError,
    },
    /// `jsonKeys` were asked for but the secret's value is not JSON.
    #[error(
        "jsonKeys of {object}: the secret's value is not JSON (error at line {line} column {column}); store a JSON value or remove jsonKeys"
    )]
    JsonInvalid {
        /// The object.
        object: String,
        /// Line of the first error.
        line: usize,
        /// Column of the first error.
        column: usize,
    },
    /// A `jsonKeys` path is not in the secret's JSON value.
    #[error(
        "jsonKeys of {object}: key \"{key}\" is not in the secret's JSON value: {reason} (keys are case-sensitive)"
    )]
    JsonKeyMissing {
        /// The object.
        object: String,
        /// The key path as written.
        key: String,
        /// Where the path stopped, e.g. `"db" has no key "port"`.
        reason: String,
    },
    /// The certificate (`cer`) is not valid DER X.509.
    #[error("the certificate of {object} is not a valid X.509 certificate: {reason}")]
    Certificate {
        /// The object.
        object: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConvertError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Decode { .. } => "decode",
            Self::EncodingOfPem { .. } => "encoding_of_pem",
            Self::ContentType { .. } => "unknown_content_type",
            Self::Pkcs12 { source, .. } => source.kind(),
            Self::Pem { source, .. } => source.kind(),
            Self::Chain { source, .. } => source.kind(),
            Self::PrivateKey { source, .. } => source.kind(),
            Self::Jwk { source, .. } => source.kind(),
            Self::Certificate { .. } => "certificate_malformed",
            Self::JsonInvalid { .. } => "json_invalid",
            Self::JsonKeyMissing { .. } => "json_key_missing",
        }
    }

    /// True when the stored object is well-formed but of a kind this provider cannot write
    /// (unsupported key type, curve or algorithm, password-protected PFX, unknown content type);
    /// false when the value is damaged or the request does not fit it.
    pub fn is_unsupported(&self) -> bool {
        match self {
            Self::ContentType { .. } => true,
            Self::Pkcs12 { source, .. } => matches!(
                source,
                pkcs12::Pkcs12Error::PasswordProtected | pkcs12::Pkcs12Error::Unsupported(_)
            ),
            Self::PrivateKey { source, .. } => matches!(
                source,
                private_key::KeyError::UnsupportedAlgorithm { .. }
                    | private_key::KeyError::UnsupportedCurve { .. }
            ),
            Self::Jwk { source, .. } => matches!(
                source,
                jwk::JwkError::UnsupportedKeyType { .. } | jwk::JwkError::UnsupportedCurve { .. }
            ),
            _ => false,
        }
    }
}

/// A certificate with its private keys, each as one PEM block, in output order.
#[derive(Debug, Default)]
pub struct CertificateFiles {
    /// Private keys, one PEM block each: PKCS#8 `PRIVATE KEY` from a PFX; as stored from a PEM
    /// bundle (with any other non-certificate block).
    pub keys: Vec<SecretBytes>,
    /// Certificates as `CERTIFICATE` PEM.
    pub certs: Vec<Vec<u8>>,
}

impl CertificateFiles {
    /// Keys first, then certificates: the single file of a certificate-backed secret.
    pub fn combined(&self) -> SecretBytes {
        let mut out = self.keys_pem().expose().to_vec();
        out.extend(self.certs.iter().flatten());
        SecretBytes::new(out)
    }

    /// All certificates: the `.crt` file.
    pub fn certs_pem(&self) -> SecretBytes {
        SecretBytes::new(self.certs.concat())
    }

    /// All private keys: the `.key` file.
    pub fn keys_pem(&self) -> SecretBytes {
        let mut out = Vec::with_capacity(self.keys.iter().map(SecretBytes::len).sum());
        for key in &self.keys {
            out.extend_from_slice(key.expose());
        }
        SecretBytes::new(out)
    }
}

fn key_pem(der: &[u8], format: KeyFormat, object: &str) -> Result<SecretBytes, ConvertError> {
    let pkcs8 = private_key::to_pkcs8(der, format).map_err(|source| ConvertError::PrivateKey {
        object: object.to_owned(),
        source,
    })?;
    pem::encode_secret(pem::PRIVATE_KEY, pkcs8.expose()).map_err(|source| ConvertError::Pem {
        object: object.to_owned(),
        source,
    })
}

fn pem_error(object: &str) -> impl Fn(pem::PemError) -> ConvertError {
    move |source| ConvertError::Pem {
        object: object.to_owned(),
        source,
    }
}

/// Opens a PKCS#12 secret value (base64 PFX, empty password): keys as PKCS#8, certificates in
/// Key Vault's order or, with `construct_chain`, leaf → root (Key Vault's order kept, with a
/// warning, when the chain cannot be built).
pub fn pkcs12_to_pem(
    value: &SecretBytes,
    construct_chain: bool,
    object: &str,
) -> Result<CertificateFiles, ConvertError> {
    let contents = pkcs12::parse(value.expose()).map_err(|source| ConvertError::Pkcs12 {
        object: object.to_owned(),
        source,
    })?;
    let keys = contents
        .keys
        .iter()
        .map(|der| key_pem(der.expose(), KeyFormat::Pkcs8, object))
        .collect::<Result<Vec<_>, _>>()?;
    let ders: Vec<&[u8]> = contents.certs.iter().map(Vec::as_slice).collect();
    let indices = if construct_chain {
        let order = chain::order(&ders).map_err(|source| ConvertError::Chain {
            object: object.to_owned(),
            source,
        })?;
        match &order {
            chain::Order::Kept(reason) => tracing::warn!(
                object,
                certificates = ders.len(),
                reason = %reason,
                "cannot order the certificate chain; keeping Key Vault's order"
            ),
            chain::Order::Chain { duplicates, .. } if *duplicates > 0 => tracing::warn!(
                object,
                duplicates,
                "left duplicate certificates out of the chain"
            ),
            chain::Order::Chain { .. } => {}
        }
        order.indices(ders.len())
    } else {
        (0..ders.len()).collect()
    };
    let certs = indices
        .into_iter()
        .map(|i| pem::encode(pem::CERTIFICATE, ders[i]).map_err(pem_error(object)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CertificateFiles { keys, certs })
}

/// Splits a PEM secret value into the `.crt` and `.key` files: the certificates (in their order)
/// and every other block as stored (the Go provider's split: a `RSA PRIVATE KEY` or
/// `EC PRIVATE KEY` stays PKCS#1 or SEC1, an `EC PARAMETERS` block stays beside its key). Private
/// keys must parse (a damaged key is an error, not a broken `.key` file).
pub fn split_pem(value: &SecretBytes, object: &str) -> Result<CertificateFiles, ConvertError> {
    let blocks = pem::parse_blocks(value.expose()).map_err(pem_error(object))?;
    let mut files = CertificateFiles::default();
    for (index, block) in blocks.iter().enumerate() {
        let format = match block.label.as_str() {
            pem::CERTIFICATE => {
                check_certificate(&block.der).map_err(|reason| ConvertError::Chain {
                    object: object.to_owned(),
                    source: chain::ChainError::Certificate { index, reason },
                })?;
                files
                    .certs
                    .push(pem::encode(pem::CERTIFICATE, &block.der).map_err(pem_error(object))?);
                continue;
            }
            pem::PRIVATE_KEY => Some(KeyFormat::Pkcs8),
            pem::RSA_PRIVATE_KEY => Some(KeyFormat::Pkcs1),
            pem::EC_PRIVATE_KEY => Some(KeyFormat::Sec1),
            _ => None,
        };
        if let Some(format) = format {
            private_key::to_pkcs8(&block.der, format).map_err(|source| {
                ConvertError::PrivateKey {
                    object: object.to_owned(),
                    source,
                }
            })?;
        }
        files
            .keys
            .push(pem::encode_secret(&block.label, &block.der).map_err(pem_error(object))?);
    }
    Ok(files)
}

fn check_certificate(der: &[u8]) -> Result<(), String> {
    let (rest, _) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!("{} bytes follow the certificate", rest.len()))
    }
}

/// A certificate (`cer`, DER) as one PEM `CERTIFICATE` block.
pub fn certificate_pem(der: &[u8], object: &str) -> Result<SecretBytes, ConvertError> {
    let invalid = |reason: String| ConvertError::Certificate {
        object: object.to_owned(),
        reason,
    };
    if der.len() > MAX_CERTIFICATE_BYTES {
        return Err(invalid(format!(
            "it is {} bytes long; at most {MAX_CERTIFICATE_BYTES} are accepted",
            der.len()
        )));
    }
    check_certificate(der).map_err(invalid)?;
    pem::encode(pem::CERTIFICATE, der)
        .map(SecretBytes::new)
        .map_err(pem_error(object))
}

/// A key's public part as PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
pub fn public_key_pem(key: &jwk::PublicJwk<'_>, object: &str) -> Result<SecretBytes, ConvertError> {
    let der = jwk::spki_der(key).map_err(|source| ConvertError::Jwk {
        object: object.to_owned(),
        source,
    })?;
    pem::encode(pem::PUBLIC_KEY, &der)
        .map(SecretBytes::new)
        .map_err(pem_error(object))
}

/// Why a value is not base64, by offset and kind (never the value itself).
pub(crate) fn base64_reason(e: &base64::DecodeError) -> String {
    match e {
        base64::DecodeError::InvalidByte(offset, _) => {
            format!("an invalid character at offset {offset}")
        }
        base64::DecodeError::InvalidLength(_) => "wrong length".to_owned(),
        base64::DecodeError::InvalidLastSymbol(offset, _) => {
            format!("an invalid last character at offset {offset}")
        }
        base64::DecodeError::InvalidPadding => "wrong padding".to_owned(),
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
                    reason: base64_reason(&e),
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

    macro_rules! fixture {
        ($path:literal) => {
            include_bytes!(concat!("../../../tests/fixtures/certs/", $path))
        };
    }

    /// (case, pfx, with chain construction, without).
    type PfxCase = (&'static str, &'static [u8], &'static [u8], &'static [u8]);

    const PFX_CASES: &[PfxCase] = &[
        (
            "rsa-chain-ordered",
            fixture!("pfx/rsa-chain-ordered.pfx"),
            fixture!("pfx/rsa-chain-ordered.expected.pem"),
            fixture!("pfx/rsa-chain-ordered.kvorder.pem"),
        ),
        (
            "rsa-chain-reversed",
            fixture!("pfx/rsa-chain-reversed.pfx"),
            fixture!("pfx/rsa-chain-reversed.expected.pem"),
            fixture!("pfx/rsa-chain-reversed.kvorder.pem"),
        ),
        (
            "rsa-chain-shuffled",
            fixture!("pfx/rsa-chain-shuffled.pfx"),
            fixture!("pfx/rsa-chain-shuffled.expected.pem"),
            fixture!("pfx/rsa-chain-shuffled.kvorder.pem"),
        ),
        (
            "rsa-chain-legacy",
            fixture!("pfx/rsa-chain-legacy.pfx"),
            fixture!("pfx/rsa-chain-legacy.expected.pem"),
            fixture!("pfx/rsa-chain-legacy.kvorder.pem"),
        ),
        (
            "rsa-chain-3des",
            fixture!("pfx/rsa-chain-3des.pfx"),
            fixture!("pfx/rsa-chain-3des.expected.pem"),
            fixture!("pfx/rsa-chain-3des.kvorder.pem"),
        ),
        (
            "p256-chain",
            fixture!("pfx/p256-chain.pfx"),
            fixture!("pfx/p256-chain.expected.pem"),
            fixture!("pfx/p256-chain.kvorder.pem"),
        ),
        (
            "p384-partial",
            fixture!("pfx/p384-partial.pfx"),
            fixture!("pfx/p384-partial.expected.pem"),
            fixture!("pfx/p384-partial.kvorder.pem"),
        ),
        (
            "p521-chain-legacy",
            fixture!("pfx/p521-chain-legacy.pfx"),
            fixture!("pfx/p521-chain-legacy.expected.pem"),
            fixture!("pfx/p521-chain-legacy.kvorder.pem"),
        ),
        (
            "self-signed",
            fixture!("pfx/self-signed.pfx"),
            fixture!("pfx/self-signed.expected.pem"),
            fixture!("pfx/self-signed.kvorder.pem"),
        ),
        (
            "rsa-leaf-only",
            fixture!("pfx/rsa-leaf-only.pfx"),
            fixture!("pfx/rsa-leaf-only.expected.pem"),
            fixture!("pfx/rsa-leaf-only.kvorder.pem"),
        ),
        (
            "rsa-missing-intermediate",
            fixture!("pfx/rsa-missing-intermediate.pfx"),
            fixture!("pfx/rsa-missing-intermediate.expected.pem"),
            fixture!("pfx/rsa-missing-intermediate.kvorder.pem"),
        ),
        (
            "noid-chain",
            fixture!("pfx/noid-chain.pfx"),
            fixture!("pfx/noid-chain.expected.pem"),
            fixture!("pfx/noid-chain.kvorder.pem"),
        ),
        (
            "rsa-duplicate-root",
            fixture!("pfx/rsa-duplicate-root.pfx"),
            fixture!("pfx/rsa-duplicate-root.expected.pem"),
            fixture!("pfx/rsa-duplicate-root.kvorder.pem"),
        ),
        (
            "certs-only",
            fixture!("pfx/certs-only.pfx"),
            fixture!("pfx/certs-only.expected.pem"),
            fixture!("pfx/certs-only.kvorder.pem"),
        ),
    ];

    fn stored(pfx: &[u8]) -> SecretBytes {
        SecretBytes::new(
            base64::engine::general_purpose::STANDARD
                .encode(pfx)
                .into_bytes(),
        )
    }

    fn text(b: &SecretBytes) -> String {
        String::from_utf8_lossy(b.expose()).into_owned()
    }

    #[test]
    fn pkcs12_to_pem_matches_openssl_for_every_fixture() {
        for (case, pfx, expected, kvorder) in PFX_CASES {
            let files = pkcs12_to_pem(&stored(pfx), true, "secret/x");
            assert_eq!(
                files.as_ref().map(|f| text(&f.combined())).ok().as_deref(),
                Some(String::from_utf8_lossy(expected).as_ref()),
                "{case} with chain construction"
            );
            let files = pkcs12_to_pem(&stored(pfx), false, "secret/x");
            assert_eq!(
                files.as_ref().map(|f| text(&f.combined())).ok().as_deref(),
                Some(String::from_utf8_lossy(kvorder).as_ref()),
                "{case} in Key Vault's order"
            );
        }
    }

    #[test]
    fn split_files_hold_certificates_and_keys() {
        let (_, pfx, expected, _) = PFX_CASES[2];
        let files = pkcs12_to_pem(&stored(pfx), true, "secret/x").unwrap_or_default();
        let expected = String::from_utf8_lossy(expected);
        let key_end = expected
            .find("-----END PRIVATE KEY-----\n")
            .map_or(0, |i| i + 26);
        assert_eq!(text(&files.keys_pem()), expected[..key_end]);
        assert_eq!(text(&files.certs_pem()), expected[key_end..]);
    }

    /// The `.key` file of a PEM-backed certificate holds the key block as stored (byte for byte
    /// what the Go provider writes), PKCS#8, PKCS#1 and SEC1 alike.
    #[test]
    fn pem_bundles_split_with_keys_as_stored() {
        type BundleCase = (&'static [u8], &'static [u8], &'static [&'static [u8]]);
        let cases: [BundleCase; 3] = [
            (
                fixture!("pem-bundle.pem"),
                fixture!("leaf-p384.pkcs8.pem"),
                &[
                    fixture!("leaf-p384.crt.pem"),
                    fixture!("int3.crt.pem"),
                    fixture!("int2.crt.pem"),
                ],
            ),
            (
                fixture!("pem-bundle-sec1.pem"),
                fixture!("leaf-p256.sec1.pem"),
                &[fixture!("leaf-p256.crt.pem"), fixture!("int3.crt.pem")],
            ),
            (
                fixture!("pem-bundle-pkcs1.pem"),
                fixture!("leaf-rsa.pkcs1.pem"),
                &[fixture!("leaf-rsa.crt.pem"), fixture!("int3.crt.pem")],
            ),
        ];
        for (bundle, key, certs) in cases {
            let files =
                split_pem(&SecretBytes::new(bundle.to_vec()), "secret/x").unwrap_or_default();
            assert_eq!(text(&files.keys_pem()), String::from_utf8_lossy(key));
            assert_eq!(files.certs_pem().expose(), certs.concat().as_slice());
            // The bundle is the key block, then the certificates: nothing else.
            assert_eq!(
                [files.keys_pem().expose(), files.certs_pem().expose()].concat(),
                bundle
            );
        }
        // Blocks of other types go to .key as they are (the Go provider's split), certificates
        // to .crt; a damaged private key is an error.
        let params =
            b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
        let mut bundle = params.to_vec();
        bundle.extend_from_slice(fixture!("pem-bundle-sec1.pem"));
        let files = split_pem(&SecretBytes::new(bundle), "secret/x").unwrap_or_default();
        assert_eq!(
            files.keys_pem().expose(),
            [&params[..], fixture!("leaf-p256.sec1.pem")]
                .concat()
                .as_slice()
        );
        let broken = b"-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n";
        let e = split_pem(&SecretBytes::new(broken.to_vec()), "secret/x").err();
        assert!(matches!(e, Some(ConvertError::PrivateKey { .. })), "{e:?}");
    }

    #[test]
    fn certificates_and_errors() {
        let der = fixture!("leaf-p521.der");
        assert_eq!(
            certificate_pem(der, "cert/x")
                .ok()
                .map(|b| b.expose().to_vec()),
            Some(fixture!("leaf-p521.crt.pem").to_vec())
        );
        let e = certificate_pem(&der[..100], "cert/x").err();
        assert!(matches!(e, Some(ConvertError::Certificate { .. })), "{e:?}");
        let e = pkcs12_to_pem(
            &stored(fixture!("pfx/with-password.pfx")),
            true,
            "secret/tls",
        )
        .err();
        assert!(e.as_ref().is_some_and(ConvertError::is_unsupported));
        assert_eq!(
            e.map(|e| e.to_string()),
            Some("the PKCS#12 (PFX) value of secret/tls is protected by a password, or damaged: it does not open with the empty password Key Vault uses for certificates; import the certificate into Key Vault with its password (Key Vault stores it without one), or mount the value unchanged with objectFormat: pfx".to_owned())
        );
        let e = pkcs12_to_pem(&SecretBytes::new(b"!!".to_vec()), true, "secret/tls").err();
        assert_eq!(e.as_ref().map(ConvertError::kind), Some("pkcs12_base64"));
        assert!(!e.is_some_and(|e| e.is_unsupported()));
    }
}

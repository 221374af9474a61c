//! Public keys of Key Vault keys (JSON Web Keys) as SubjectPublicKeyInfo DER, the form
//! `openssl pkey -pubout` writes: RSA with `rsaEncryption` and NULL parameters, EC with
//! `id-ecPublicKey`, the named curve and the uncompressed point.

use der::{
    Encode,
    asn1::{AnyRef, BitStringRef, ObjectIdentifier, UintRef},
};
use p256::pkcs8::EncodePublicKey;
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

/// `rsaEncryption` (1.2.840.113549.1.1.1).
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

/// Largest RSA modulus accepted, in bits (Key Vault's largest is 4096).
pub const MAX_RSA_BITS: usize = 16_384;

/// Largest RSA public exponent accepted, in bytes.
const MAX_RSA_EXPONENT_BYTES: usize = 8;

/// The public part of a JSON Web Key, as read from Key Vault.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicJwk<'a> {
    /// `kty`: `RSA`, `RSA-HSM`, `EC`, `EC-HSM`, `oct`, `oct-HSM`.
    pub kty: &'a str,
    /// `crv` of EC keys: `P-256`, `P-384`, `P-521`, `P-256K`.
    pub crv: Option<&'a str>,
    /// RSA modulus, big-endian.
    pub n: Option<&'a [u8]>,
    /// RSA public exponent, big-endian.
    pub e: Option<&'a [u8]>,
    /// EC x coordinate, big-endian.
    pub x: Option<&'a [u8]>,
    /// EC y coordinate, big-endian.
    pub y: Option<&'a [u8]>,
}

/// Errors turning a JSON Web Key into a public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwkError {
    /// The key type has no public key file (symmetric `oct` keys) or is unknown.
    #[error(
        "key type \"{kty}\" has no public key to write; objectType key supports RSA, RSA-HSM, EC and EC-HSM keys"
    )]
    UnsupportedKeyType {
        /// `kty` as returned by Key Vault.
        kty: String,
    },
    /// The EC curve is not one of P-256, P-384, P-521 (e.g. P-256K).
    #[error("EC curve \"{crv}\" is not supported; objectType key supports P-256, P-384 and P-521")]
    UnsupportedCurve {
        /// `crv` as returned by Key Vault.
        crv: String,
    },
    /// A field is missing or out of range (damaged response).
    #[error("the key is malformed: {0}")]
    Malformed(String),
}

impl JwkError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::UnsupportedKeyType { .. } => "unsupported_key_type",
            Self::UnsupportedCurve { .. } => "unsupported_curve",
            Self::Malformed(_) => "key_malformed",
        }
    }
}

fn field<'a>(value: Option<&'a [u8]>, name: &str, kty: &str) -> Result<&'a [u8], JwkError> {
    let value = value.map(strip_zeros).unwrap_or_default();
    if value.is_empty() {
        return Err(JwkError::Malformed(format!("{kty} key without \"{name}\"")));
    }
    Ok(value)
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn der_error(e: &der::Error) -> JwkError {
    JwkError::Malformed(e.to_string())
}

/// SubjectPublicKeyInfo DER of the key.
pub fn spki_der(jwk: &PublicJwk<'_>) -> Result<Vec<u8>, JwkError> {
    match jwk.kty {
        "RSA" | "RSA-HSM" => rsa_spki(jwk),
        "EC" | "EC-HSM" => ec_spki(jwk),
        other => Err(JwkError::UnsupportedKeyType {
            kty: crate::text::printable(other, 32),
        }),
    }
}

fn rsa_spki(jwk: &PublicJwk<'_>) -> Result<Vec<u8>, JwkError> {
    let n = field(jwk.n, "n", jwk.kty)?;
    let e = field(jwk.e, "e", jwk.kty)?;
    if n.len() * 8 > MAX_RSA_BITS {
        return Err(JwkError::Malformed(format!(
            "the RSA modulus has {} bits; at most {MAX_RSA_BITS} are accepted",
            n.len() * 8
        )));
    }
    if e.len() > MAX_RSA_EXPONENT_BYTES {
        return Err(JwkError::Malformed(format!(
            "the RSA public exponent has {} bytes; at most {MAX_RSA_EXPONENT_BYTES} are accepted",
            e.len()
        )));
    }
    let public_key = pkcs1::RsaPublicKey {
        modulus: UintRef::new(n).map_err(|e| der_error(&e))?,
        public_exponent: UintRef::new(e).map_err(|e| der_error(&e))?,
    }
    .to_der()
    .map_err(|e| der_error(&e))?;
    SubjectPublicKeyInfoRef {
        algorithm: AlgorithmIdentifierRef {
            oid: RSA_ENCRYPTION,
            parameters: Some(AnyRef::NULL),
        },
        subject_public_key: BitStringRef::from_bytes(&public_key).map_err(|e| der_error(&e))?,
    }
    .to_der()
    .map_err(|e| der_error(&e))
}

/// The uncompressed SEC1 point `04 || x || y`, coordinates left-padded to `size` bytes.
fn uncompressed_point(x: &[u8], y: &[u8], size: usize, crv: &str) -> Result<Vec<u8>, JwkError> {
    if x.len() > size || y.len() > size {
        return Err(JwkError::Malformed(format!(
            "a coordinate is longer than the {size} bytes of {crv}"
        )));
    }
    let mut point = vec![0u8; 1 + 2 * size];
    point[0] = 4;
    point[1 + size - x.len()..=size].copy_from_slice(x);
    point[1 + 2 * size - y.len()..].copy_from_slice(y);
    Ok(point)
}

/// An EC coordinate without leading zeros (a zero coordinate keeps one byte).
fn coordinate<'a>(value: Option<&'a [u8]>, name: &str, kty: &str) -> Result<&'a [u8], JwkError> {
    let value = value
        .filter(|v| !v.is_empty())
        .ok_or_else(|| JwkError::Malformed(format!("{kty} key without \"{name}\"")))?;
    let stripped = strip_zeros(value);
    Ok(if stripped.is_empty() {
        &value[value.len() - 1..]
    } else {
        stripped
    })
}

fn ec_spki(jwk: &PublicJwk<'_>) -> Result<Vec<u8>, JwkError> {
    let crv = jwk
        .crv
        .ok_or_else(|| JwkError::Malformed(format!("{} key without \"crv\"", jwk.kty)))?;
    let x = coordinate(jwk.x, "x", jwk.kty)?;
    let y = coordinate(jwk.y, "y", jwk.kty)?;
    let not_on_curve = |_| JwkError::Malformed(format!("the point (x, y) is not on curve {crv}"));
    let der = match crv {
        "P-256" => p256::PublicKey::from_sec1_bytes(&uncompressed_point(x, y, 32, crv)?)
            .map_err(not_on_curve)?
            .to_public_key_der(),
        "P-384" => p384::PublicKey::from_sec1_bytes(&uncompressed_point(x, y, 48, crv)?)
            .map_err(not_on_curve)?
            .to_public_key_der(),
        "P-521" => p521::PublicKey::from_sec1_bytes(&uncompressed_point(x, y, 66, crv)?)
            .map_err(not_on_curve)?
            .to_public_key_der(),
        other => {
            return Err(JwkError::UnsupportedCurve {
                crv: crate::text::printable(other, 32),
            });
        }
    };
    der.map(|d| d.as_bytes().to_vec())
        .map_err(|e| JwkError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::pem;
    use base64::Engine;

    struct Fixture {
        jwk: serde_json::Value,
        pub_pem: &'static str,
    }

    fn fixture(name: &str) -> Fixture {
        let (jwk, pub_pem) = match name {
            "leaf-rsa" => (
                include_str!("../../../tests/fixtures/certs/leaf-rsa.jwk.json"),
                include_str!("../../../tests/fixtures/certs/leaf-rsa.pub.pem"),
            ),
            "leaf-p256" => (
                include_str!("../../../tests/fixtures/certs/leaf-p256.jwk.json"),
                include_str!("../../../tests/fixtures/certs/leaf-p256.pub.pem"),
            ),
            "leaf-p384" => (
                include_str!("../../../tests/fixtures/certs/leaf-p384.jwk.json"),
                include_str!("../../../tests/fixtures/certs/leaf-p384.pub.pem"),
            ),
            _ => (
                include_str!("../../../tests/fixtures/certs/leaf-p521.jwk.json"),
                include_str!("../../../tests/fixtures/certs/leaf-p521.pub.pem"),
            ),
        };
        Fixture {
            jwk: serde_json::from_str(jwk).unwrap_or_default(),
            pub_pem,
        }
    }

    fn bytes(v: &serde_json::Value, name: &str) -> Option<Vec<u8>> {
        v.get(name).and_then(|s| s.as_str()).and_then(|s| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .ok()
        })
    }

    fn convert(value: &serde_json::Value) -> Result<Vec<u8>, JwkError> {
        let fields = ["n", "e", "x", "y"].map(|name| bytes(value, name));
        let jwk = PublicJwk {
            kty: value
                .get("kty")
                .and_then(|s| s.as_str())
                .unwrap_or_default(),
            crv: value.get("crv").and_then(|s| s.as_str()),
            n: fields[0].as_deref(),
            e: fields[1].as_deref(),
            x: fields[2].as_deref(),
            y: fields[3].as_deref(),
        };
        spki_der(&jwk).and_then(|der| {
            pem::encode(pem::PUBLIC_KEY, &der).map_err(|e| JwkError::Malformed(e.to_string()))
        })
    }

    #[test]
    fn public_keys_are_byte_identical_to_openssl() {
        for name in ["leaf-rsa", "leaf-p256", "leaf-p384", "leaf-p521"] {
            let f = fixture(name);
            assert_eq!(
                convert(&f.jwk)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .as_deref(),
                Some(f.pub_pem),
                "{name}"
            );
        }
    }

    #[test]
    fn hsm_types_and_leading_zeros() {
        let mut f = fixture("leaf-rsa");
        f.jwk["kty"] = "RSA-HSM".into();
        // Key Vault may send n with a leading zero byte.
        let n = bytes(&f.jwk, "n").unwrap_or_default();
        let padded = [vec![0u8], n].concat();
        f.jwk["n"] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(padded)
            .into();
        assert_eq!(convert(&f.jwk).ok().as_deref(), Some(f.pub_pem.as_bytes()));
        let mut f = fixture("leaf-p256");
        f.jwk["kty"] = "EC-HSM".into();
        assert_eq!(convert(&f.jwk).ok().as_deref(), Some(f.pub_pem.as_bytes()));
    }

    #[test]
    fn unsupported_types_and_curves_are_named() {
        let oct = serde_json::json!({"kty": "oct-HSM", "k": "AAAA"});
        assert_eq!(
            convert(&oct).err().map(|e| e.to_string()),
            Some("key type \"oct-HSM\" has no public key to write; objectType key supports RSA, RSA-HSM, EC and EC-HSM keys".to_owned())
        );
        let mut f = fixture("leaf-p256");
        f.jwk["crv"] = "P-256K".into();
        assert_eq!(
            convert(&f.jwk).err(),
            Some(JwkError::UnsupportedCurve {
                crv: "P-256K".into()
            })
        );
    }

    #[test]
    fn malformed_keys_are_errors() {
        let mut f = fixture("leaf-p384");
        f.jwk["y"] = f.jwk["x"].clone();
        assert_eq!(
            convert(&f.jwk).err(),
            Some(JwkError::Malformed(
                "the point (x, y) is not on curve P-384".into()
            ))
        );
        let mut f = fixture("leaf-rsa");
        f.jwk.as_object_mut().map(|o| o.remove("e"));
        assert_eq!(
            convert(&f.jwk).err(),
            Some(JwkError::Malformed("RSA key without \"e\"".into()))
        );
        let huge = serde_json::json!({"kty": "RSA", "e": "AQAB", "n": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(vec![0xffu8; 2049])});
        assert!(matches!(convert(&huge), Err(JwkError::Malformed(_))));
        let long = serde_json::json!({"kty": "EC", "crv": "P-256", "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([1u8; 33]), "y": "AQ"});
        assert!(matches!(convert(&long), Err(JwkError::Malformed(_))));
    }
}

//! Opening the PKCS#12 (PFX) files behind certificate-backed secrets, with the empty password Key
//! Vault uses; legacy (RC2/3DES, SHA-1 MAC) and modern (PBES2/AES, SHA-256 MAC) files alike.
//!
//! Limits, checked before any key derivation: the stored (base64) value is at most
//! [`MAX_VALUE_BYTES`]; the key-derivation parameters visible before decryption ask for at most
//! [`MAX_KDF_OPERATIONS`] derivations and [`MAX_KDF_ITERATIONS`] iterations in total (the
//! PKCS#12 library also refuses more than 1,000,000 iterations for any single derivation); scrypt
//! is refused. After opening: at most [`MAX_CERTIFICATES`] certificates and [`MAX_KEYS`] keys.

use crate::sensitive::SecretBytes;
use base64::Engine;
use p12_keystore::{Pkcs12Archive, error::Error as P12Error};
use zeroize::Zeroizing;

/// Largest stored value (base64 text of the PFX) converted. Key Vault stores at most 25 KB.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;
/// Most certificates in one PFX.
pub const MAX_CERTIFICATES: usize = 64;
/// Most private keys in one PFX.
pub const MAX_KEYS: usize = 4;
/// Most key derivations (MAC, encrypted contents, shrouded keys) announced by one PFX.
pub const MAX_KDF_OPERATIONS: usize = 16;
/// Most key-derivation iterations, summed over those derivations (a typical PFX needs 3 × 2048).
pub const MAX_KDF_ITERATIONS: u64 = 2_000_000;

/// How deep the DER pre-scan descends.
const MAX_SCAN_DEPTH: usize = 24;

/// Errors opening a PFX.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs12Error {
    /// The stored value is larger than [`MAX_VALUE_BYTES`].
    #[error(
        "is {size} bytes long; at most {limit} are converted (Key Vault itself stores at most 25 KB)"
    )]
    TooLarge {
        /// Bytes of the stored value.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The stored value is not base64 (content type says PKCS#12, value says otherwise).
    #[error("is not base64-encoded PKCS#12 ({reason}); check the secret's content type")]
    Base64 {
        /// Where decoding failed.
        reason: String,
    },
    /// The PFX structure is damaged or truncated.
    #[error("is not a valid PKCS#12 file: {0}")]
    Malformed(String),
    /// The MAC or the decryption fails with the empty password: a password-protected PFX.
    #[error(
        "is protected by a password, or damaged: it does not open with the empty password Key Vault uses for certificates; import the certificate into Key Vault with its password (Key Vault stores it without one), or mount the value unchanged with objectFormat: pfx"
    )]
    PasswordProtected,
    /// An algorithm or parameter this provider does not support.
    #[error("uses something this provider does not support: {0}")]
    Unsupported(String),
    /// The key-derivation parameters ask for too much work.
    #[error(
        "asks for {operations} key derivations with {iterations} iterations in total; at most {MAX_KDF_OPERATIONS} derivations and {MAX_KDF_ITERATIONS} iterations are accepted"
    )]
    KdfBudget {
        /// Derivations announced.
        operations: usize,
        /// Iterations announced, summed.
        iterations: u64,
    },
    /// More certificates than [`MAX_CERTIFICATES`].
    #[error("holds {count} certificates; at most {limit} are accepted")]
    TooManyCertificates {
        /// Certificates found.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// More private keys than [`MAX_KEYS`].
    #[error("holds {count} private keys; at most {limit} are accepted")]
    TooManyKeys {
        /// Keys found.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// Neither a certificate nor a key.
    #[error("holds neither a certificate nor a private key")]
    Empty,
}

impl Pkcs12Error {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "pkcs12_too_large",
            Self::Base64 { .. } => "pkcs12_base64",
            Self::Malformed(_) => "pkcs12_malformed",
            Self::PasswordProtected => "pkcs12_password_protected",
            Self::Unsupported(_) => "pkcs12_unsupported",
            Self::KdfBudget { .. } => "pkcs12_kdf_budget",
            Self::TooManyCertificates { .. } => "pkcs12_too_many_certificates",
            Self::TooManyKeys { .. } => "pkcs12_too_many_keys",
            Self::Empty => "pkcs12_empty",
        }
    }
}

/// What a PFX holds, in bag order.
#[derive(Debug, Default)]
pub struct Pkcs12Contents {
    /// Each private key as PKCS#8 DER (as stored in its bag).
    pub keys: Vec<SecretBytes>,
    /// Each certificate as DER.
    pub certs: Vec<Vec<u8>>,
}

/// Decodes a stored PFX value (base64 text, whitespace ignored) to its DER bytes.
pub fn decode_base64(value: &[u8]) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Pkcs12Error::TooLarge {
            size: value.len(),
            limit: MAX_VALUE_BYTES,
        });
    }
    let text: Zeroizing<Vec<u8>> = Zeroizing::new(
        value
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect(),
    );
    base64::engine::general_purpose::STANDARD
        .decode(text.as_slice())
        .map(Zeroizing::new)
        .map_err(|e| Pkcs12Error::Base64 {
            reason: super::base64_reason(&e),
        })
}

/// Opens a stored PFX value (base64 text) with the empty password.
pub fn parse(value: &[u8]) -> Result<Pkcs12Contents, Pkcs12Error> {
    let der = decode_base64(value)?;
    check_kdf_budget(&der)?;
    let archive = Pkcs12Archive::from_pkcs12(&der, "").map_err(|e| map_error(&e))?;
    if archive.certs.len() > MAX_CERTIFICATES {
        return Err(Pkcs12Error::TooManyCertificates {
            count: archive.certs.len(),
            limit: MAX_CERTIFICATES,
        });
    }
    if archive.keys.len() > MAX_KEYS {
        return Err(Pkcs12Error::TooManyKeys {
            count: archive.keys.len(),
            limit: MAX_KEYS,
        });
    }
    if archive.certs.is_empty() && archive.keys.is_empty() {
        return Err(Pkcs12Error::Empty);
    }
    Ok(Pkcs12Contents {
        keys: archive
            .keys
            .iter()
            .map(|k| SecretBytes::new(k.key.as_der().to_vec()))
            .collect(),
        certs: archive
            .certs
            .iter()
            .map(|c| c.cert.as_der().to_vec())
            .collect(),
    })
}

fn map_error(e: &P12Error) -> Pkcs12Error {
    match e {
        P12Error::MacError(_) | P12Error::Pkcs5Error(_) | P12Error::UnpadError => {
            Pkcs12Error::PasswordProtected
        }
        P12Error::InvalidParameters => Pkcs12Error::Unsupported(
            "encryption parameters out of range (more than 1,000,000 iterations?)".to_owned(),
        ),
        P12Error::UnsupportedEncryptionScheme
        | P12Error::UnsupportedMacAlgorithm
        | P12Error::UnsupportedContentType
        | P12Error::UnsupportedCertificateType => Pkcs12Error::Unsupported(e.to_string()),
        _ => Pkcs12Error::Malformed(e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Pre-scan of the key-derivation parameters, before any derivation runs.

/// PKCS#12 PBE algorithms (1.2.840.113549.1.12.1.1 - .6), DER content of the OID.
const PKCS12_PBE_PREFIX: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01];
/// PBKDF2 (1.2.840.113549.1.5.12).
const PBKDF2: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0c];
/// scrypt (1.3.6.1.4.1.11591.4.11).
const SCRYPT: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0xda, 0x47, 0x04, 0x0b];

const TAG_INTEGER: u8 = 0x02;
const TAG_OCTET_STRING: u8 = 0x04;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

/// One DER element: tag and content.
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
}

/// Reads one definite-length element; `None` on anything else (left to the real parser).
fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((
        Tlv {
            tag,
            content: &rest[..len],
        },
        &rest[len..],
    ))
}

fn children(content: &[u8]) -> Vec<Tlv<'_>> {
    let mut out = Vec::new();
    let mut rest = content;
    while let Some((tlv, next)) = read_tlv(rest) {
        out.push(tlv);
        rest = next;
    }
    out
}

/// An INTEGER as u64, saturating for absurd values.
fn integer(content: &[u8]) -> u64 {
    let digits = content
        .iter()
        .position(|b| *b != 0)
        .map_or(&[][..], |i| &content[i..]);
    if digits.len() > 8 {
        return u64::MAX;
    }
    digits
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

#[derive(Default)]
struct Budget {
    operations: usize,
    iterations: u64,
    scrypt: bool,
}

impl Budget {
    fn add(&mut self, iterations: u64) {
        self.operations += 1;
        self.iterations = self.iterations.saturating_add(iterations);
    }
}

/// Walks `content` (a sequence of elements), recording PBE / PBKDF2 / scrypt parameters;
/// descends into constructed elements and into OCTET STRINGs holding DER.
fn scan(content: &[u8], depth: usize, budget: &mut Budget) {
    if depth > MAX_SCAN_DEPTH {
        return;
    }
    for tlv in children(content) {
        let constructed = tlv.tag & 0x20 != 0;
        if tlv.tag == TAG_SEQUENCE {
            let inner = children(tlv.content);
            if let [oid, params, ..] = inner.as_slice()
                && oid.tag == TAG_OID
            {
                let is_pbe = oid.content.len() == PKCS12_PBE_PREFIX.len() + 1
                    && oid.content.starts_with(PKCS12_PBE_PREFIX);
                if oid.content == SCRYPT {
                    budget.scrypt = true;
                } else if (is_pbe || oid.content == PBKDF2) && params.tag == TAG_SEQUENCE {
                    let fields = children(params.content);
                    let iterations = fields
                        .iter()
                        .find(|f| f.tag == TAG_INTEGER)
                        .map_or(1, |f| integer(f.content));
                    budget.add(iterations);
                }
            }
        }
        let holds_der = tlv.tag == TAG_OCTET_STRING && tlv.content.first() == Some(&TAG_SEQUENCE);
        if constructed || holds_der {
            scan(tlv.content, depth + 1, budget);
        }
    }
}

/// Refuses files whose announced key derivations exceed the limits, before deriving anything.
fn check_kdf_budget(der: &[u8]) -> Result<(), Pkcs12Error> {
    let mut budget = Budget::default();
    // The MAC: PFX ::= SEQUENCE { version, authSafe ContentInfo, macData MacData OPTIONAL },
    // MacData ::= SEQUENCE { mac DigestInfo, macSalt OCTET STRING, iterations INTEGER DEFAULT 1 }.
    if let Some((pfx, _)) = read_tlv(der)
        && pfx.tag == TAG_SEQUENCE
    {
        let fields = children(pfx.content);
        if let [version, _, mac, ..] = fields.as_slice()
            && version.tag == TAG_INTEGER
            && mac.tag == TAG_SEQUENCE
            && let [digest, salt, rest @ ..] = children(mac.content).as_slice()
            && digest.tag == TAG_SEQUENCE
            && salt.tag == TAG_OCTET_STRING
        {
            let iterations = rest
                .first()
                .filter(|f| f.tag == TAG_INTEGER)
                .map_or(1, |f| integer(f.content));
            budget.add(iterations);
        }
        scan(pfx.content, 1, &mut budget);
    }
    if budget.scrypt {
        return Err(Pkcs12Error::Unsupported("scrypt key derivation".to_owned()));
    }
    if budget.operations > MAX_KDF_OPERATIONS || budget.iterations > MAX_KDF_ITERATIONS {
        return Err(Pkcs12Error::KdfBudget {
            operations: budget.operations,
            iterations: budget.iterations,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(der: &[u8]) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(der)
            .into_bytes()
    }

    const MODERN: &[u8] =
        include_bytes!("../../../tests/fixtures/certs/pfx/rsa-chain-shuffled.pfx");
    const LEGACY: &[u8] = include_bytes!("../../../tests/fixtures/certs/pfx/rsa-chain-legacy.pfx");
    const TRIPLE_DES: &[u8] =
        include_bytes!("../../../tests/fixtures/certs/pfx/rsa-chain-3des.pfx");
    const CERTS_ONLY: &[u8] = include_bytes!("../../../tests/fixtures/certs/pfx/certs-only.pfx");
    const PASSWORD: &[u8] = include_bytes!("../../../tests/fixtures/certs/pfx/with-password.pfx");
    const PASSWORD_LEGACY: &[u8] =
        include_bytes!("../../../tests/fixtures/certs/pfx/with-password-legacy.pfx");

    #[test]
    fn modern_and_legacy_files_open() {
        for pfx in [MODERN, LEGACY, TRIPLE_DES] {
            let contents = parse(&b64(pfx)).ok();
            assert_eq!(
                contents.as_ref().map(|c| (c.keys.len(), c.certs.len())),
                Some((1, 5))
            );
        }
        let contents = parse(&b64(CERTS_ONLY)).ok();
        assert_eq!(
            contents.map(|c| (c.keys.len(), c.certs.len())),
            Some((0, 5))
        );
    }

    #[test]
    fn base64_with_line_breaks_is_accepted() {
        let text = String::from_utf8(b64(MODERN)).unwrap_or_default();
        let wrapped: Vec<u8> = text
            .as_bytes()
            .chunks(76)
            .flat_map(|c| [c, b"\r\n"].concat())
            .collect();
        assert!(parse(&wrapped).is_ok());
    }

    #[test]
    fn password_protected_files_are_refused_clearly() {
        for pfx in [PASSWORD, PASSWORD_LEGACY] {
            assert_eq!(parse(&b64(pfx)).err(), Some(Pkcs12Error::PasswordProtected));
        }
    }

    #[test]
    fn hostile_input() {
        assert!(matches!(
            parse(b"not*base64"),
            Err(Pkcs12Error::Base64 { .. })
        ));
        assert!(matches!(
            parse(&b64(&MODERN[..MODERN.len() / 2])),
            Err(Pkcs12Error::Malformed(_))
        ));
        assert!(matches!(
            parse(&b64(b"hello")),
            Err(Pkcs12Error::Malformed(_))
        ));
        let huge = vec![b'A'; 10 * 1024 * 1024];
        assert_eq!(
            parse(&huge).err(),
            Some(Pkcs12Error::TooLarge {
                size: huge.len(),
                limit: MAX_VALUE_BYTES
            })
        );
    }

    #[test]
    fn kdf_parameters_are_counted_before_deriving() {
        let mut budget = Budget::default();
        let der = decode_base64(&b64(MODERN)).unwrap_or_default();
        if let Some((pfx, _)) = read_tlv(&der) {
            scan(pfx.content, 1, &mut budget);
        }
        // Encrypted certificates (PBES2/PBKDF2) and the shrouded key: 2048 iterations each.
        assert_eq!((budget.operations, budget.iterations), (2, 4096));
        assert!(check_kdf_budget(&der).is_ok());
        let mut with_mac = Budget::default();
        if let Some((pfx, _)) = read_tlv(&der)
            && let [_, _, mac] = children(pfx.content).as_slice()
        {
            with_mac.add(
                children(mac.content)
                    .get(2)
                    .map_or(0, |i| integer(i.content)),
            );
        }
        assert_eq!(with_mac.iterations, 2048);
        let legacy = decode_base64(&b64(LEGACY)).unwrap_or_default();
        let mut budget = Budget::default();
        if let Some((pfx, _)) = read_tlv(&legacy) {
            scan(pfx.content, 1, &mut budget);
        }
        assert_eq!((budget.operations, budget.iterations), (2, 4096));
    }

    /// A PKCS#12 PBE AlgorithmIdentifier with `iterations`.
    fn pbe(iterations: u32) -> Vec<u8> {
        let mut params = vec![TAG_OCTET_STRING, 0x02, 0xaa, 0xbb, TAG_INTEGER, 0x05, 0x00];
        params.extend_from_slice(&iterations.to_be_bytes());
        let mut seq = vec![TAG_OID, 0x0a];
        seq.extend_from_slice(PKCS12_PBE_PREFIX);
        seq.push(0x03);
        seq.push(TAG_SEQUENCE);
        seq.push(u8::try_from(params.len()).unwrap_or(0));
        seq.extend_from_slice(&params);
        [
            vec![TAG_SEQUENCE, u8::try_from(seq.len()).unwrap_or(0)],
            seq,
        ]
        .concat()
    }

    #[test]
    fn excessive_iterations_are_refused_before_deriving() {
        let body: Vec<u8> = (0..3).flat_map(|_| pbe(1_000_000)).collect();
        let len = u16::try_from(body.len()).unwrap_or(0).to_be_bytes();
        let file = [vec![TAG_SEQUENCE, 0x82, len[0], len[1]], body].concat();
        assert_eq!(
            check_kdf_budget(&file).err(),
            Some(Pkcs12Error::KdfBudget {
                operations: 3,
                iterations: 3_000_000
            })
        );
        let body: Vec<u8> = (0..=MAX_KDF_OPERATIONS).flat_map(|_| pbe(1)).collect();
        let len = u16::try_from(body.len()).unwrap_or(0).to_be_bytes();
        let file = [vec![TAG_SEQUENCE, 0x82, len[0], len[1]], body].concat();
        assert!(matches!(
            check_kdf_budget(&file),
            Err(Pkcs12Error::KdfBudget { .. })
        ));
        assert!(matches!(
            parse(&b64(&file)),
            Err(Pkcs12Error::KdfBudget { .. })
        ));
    }
}

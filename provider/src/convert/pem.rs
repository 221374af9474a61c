//! PEM text: writing DER the way `openssl` does (64-column base64, LF line endings, a trailing
//! newline) and reading the blocks of a PEM bundle.

use crate::sensitive::SecretBytes;
use pem_rfc7468::LineEnding;
use std::fmt;
use zeroize::Zeroizing;

/// Label of an X.509 certificate.
pub const CERTIFICATE: &str = "CERTIFICATE";
/// Label of a PKCS#8 private key.
pub const PRIVATE_KEY: &str = "PRIVATE KEY";
/// Label of a SubjectPublicKeyInfo.
pub const PUBLIC_KEY: &str = "PUBLIC KEY";
/// Label of a PKCS#1 ("traditional") RSA private key.
pub const RSA_PRIVATE_KEY: &str = "RSA PRIVATE KEY";
/// Label of a SEC1 ("traditional") EC private key.
pub const EC_PRIVATE_KEY: &str = "EC PRIVATE KEY";

/// Most PEM blocks read from one value (certificates plus keys).
pub const MAX_BLOCKS: usize = 64;

/// Largest PEM text read (Key Vault itself stores at most 25 KB per value).
pub const MAX_TEXT_BYTES: usize = 256 * 1024;

/// Longest label accepted (`-----BEGIN <label>-----`).
const MAX_LABEL_LEN: usize = 64;

const BEGIN: &[u8] = b"-----BEGIN ";
const DASHES: &[u8] = b"-----";

/// Errors reading or writing PEM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PemError {
    /// A block is damaged: truncated, bad base64, no matching END line, or RFC 1421 headers such
    /// as `Proc-Type` (a legacy password-encrypted key).
    #[error("PEM block {index} ({label}) is not valid PEM: {reason}")]
    Malformed {
        /// 0-based position of the block.
        index: usize,
        /// The block's label as written (at most 64 characters).
        label: String,
        /// What is wrong (never key material).
        reason: String,
    },
    /// More blocks than [`MAX_BLOCKS`]: not a certificate with its chain.
    #[error("it holds more than {limit} PEM blocks; a certificate with its chain needs far fewer")]
    TooManyBlocks {
        /// The limit.
        limit: usize,
    },
    /// The text is longer than [`MAX_TEXT_BYTES`].
    #[error(
        "is {size} bytes long; at most {limit} are read (Key Vault itself stores at most 25 KB)"
    )]
    TooLarge {
        /// Bytes of the text.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Encoding failed (only for lengths beyond any limit of this provider).
    #[error("PEM encoding failed: {0}")]
    Encode(String),
}

impl PemError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "pem_malformed",
            Self::TooManyBlocks { .. } => "pem_too_many_blocks",
            Self::TooLarge { .. } => "pem_too_large",
            Self::Encode(_) => "pem_encode",
        }
    }
}

/// One decoded PEM block. The body is zeroized on drop: it may be a private key.
pub struct Block {
    /// The label, e.g. `CERTIFICATE`.
    pub label: String,
    /// The decoded DER.
    pub der: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Block({}, {} bytes)", self.label, self.der.len())
    }
}

fn encode_into(label: &str, der: &[u8]) -> Result<Zeroizing<Vec<u8>>, PemError> {
    let len = pem_rfc7468::encoded_len(label, LineEnding::LF, der)
        .map_err(|e| PemError::Encode(e.to_string()))?;
    let mut buf = Zeroizing::new(vec![0u8; len]);
    let written = pem_rfc7468::encode(label, LineEnding::LF, der, &mut buf)
        .map_err(|e| PemError::Encode(e.to_string()))?
        .len();
    buf.truncate(written);
    Ok(buf)
}

/// PEM of public material (certificates, public keys): 64 columns, LF, trailing newline.
pub fn encode(label: &str, der: &[u8]) -> Result<Vec<u8>, PemError> {
    encode_into(label, der).map(|buf| buf.to_vec())
}

/// PEM of a private key; the text is zeroized when dropped.
pub fn encode_secret(label: &str, der: &[u8]) -> Result<SecretBytes, PemError> {
    let mut buf = encode_into(label, der)?;
    Ok(SecretBytes::new(std::mem::take(&mut *buf)))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads every PEM block of `text`, in order. Text outside blocks is ignored (like `openssl`);
/// a damaged block is an error. At most [`MAX_BLOCKS`] blocks in [`MAX_TEXT_BYTES`].
pub fn parse_blocks(text: &[u8]) -> Result<Vec<Block>, PemError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(PemError::TooLarge {
            size: text.len(),
            limit: MAX_TEXT_BYTES,
        });
    }
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = find(rest, BEGIN) {
        let index = blocks.len();
        if index == MAX_BLOCKS {
            return Err(PemError::TooManyBlocks { limit: MAX_BLOCKS });
        }
        let after_begin = &rest[start + BEGIN.len()..];
        let line_end = after_begin
            .iter()
            .position(|b| *b == b'\n')
            .unwrap_or(after_begin.len());
        let malformed = |label: &str, reason: &str| PemError::Malformed {
            index,
            label: label.to_owned(),
            reason: reason.to_owned(),
        };
        let label = find(&after_begin[..line_end], DASHES)
            .map(|end| &after_begin[..end])
            .filter(|l| l.len() <= MAX_LABEL_LEN && l.iter().all(|b| (0x20..0x7f).contains(b)))
            .and_then(|l| std::str::from_utf8(l).ok())
            .ok_or_else(|| malformed("?", "the BEGIN line is not -----BEGIN <label>-----"))?;
        let end_marker = format!("-----END {label}-----");
        let end = find(after_begin, end_marker.as_bytes()).ok_or_else(|| {
            malformed(
                label,
                &format!("there is no {end_marker} line (is the value truncated?)"),
            )
        })?;
        let block_len = BEGIN.len() + end + end_marker.len();
        let block = &rest[start..start + block_len];
        let mut der = Zeroizing::new(Vec::new());
        pem_rfc7468::Decoder::new_detect_wrap(block)
            .and_then(|mut decoder| decoder.decode_to_end(&mut der).map(|_| ()))
            .map_err(|e| malformed(label, &e.to_string()))?;
        blocks.push(Block {
            label: label.to_owned(),
            der,
        });
        rest = &rest[start + block_len..];
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEAF_PEM: &str = include_str!("../../../tests/fixtures/certs/leaf-rsa.crt.pem");
    const LEAF_DER: &[u8] = include_bytes!("../../../tests/fixtures/certs/leaf-rsa.der");
    const KEY_PEM: &str = include_str!("../../../tests/fixtures/certs/leaf-p256.pkcs8.pem");

    #[test]
    fn encoding_is_byte_identical_to_openssl() {
        // leaf-rsa.crt.pem was written by `openssl x509`.
        assert_eq!(
            encode(CERTIFICATE, LEAF_DER).ok().as_deref(),
            Some(LEAF_PEM.as_bytes())
        );
    }

    #[test]
    fn round_trip_of_a_bundle_with_text_around_blocks() {
        let text =
            format!("Bag Attributes\n    localKeyID: 01\n{KEY_PEM}subject=CN = x\n{LEAF_PEM}\n\n");
        let blocks = parse_blocks(text.as_bytes()).unwrap_or_default();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, PRIVATE_KEY);
        assert_eq!(blocks[1].label, CERTIFICATE);
        assert_eq!(blocks[1].der.as_slice(), LEAF_DER);
        let again = encode_secret(PRIVATE_KEY, &blocks[0].der).ok();
        assert_eq!(
            again.as_ref().map(SecretBytes::expose),
            Some(KEY_PEM.as_bytes())
        );
        assert!(!format!("{:?}", blocks[0]).contains("MIG"));
    }

    #[test]
    fn crlf_and_other_line_widths_are_read() {
        let crlf = LEAF_PEM.replace('\n', "\r\n");
        let blocks = parse_blocks(crlf.as_bytes()).unwrap_or_default();
        assert_eq!(blocks.first().map(|b| b.der.as_slice()), Some(LEAF_DER));
    }

    #[test]
    fn damaged_blocks_are_errors() {
        let truncated = &LEAF_PEM[..LEAF_PEM.len() / 2];
        let e = parse_blocks(truncated.as_bytes()).err();
        assert_eq!(
            e.map(|e| e.to_string()),
            Some("PEM block 0 (CERTIFICATE) is not valid PEM: there is no -----END CERTIFICATE----- line (is the value truncated?)".to_owned())
        );
        let bogus = LEAF_PEM.replacen("MII", "M*I", 1);
        assert!(matches!(
            parse_blocks(bogus.as_bytes()),
            Err(PemError::Malformed { index: 0, .. })
        ));
        let no_label = "-----BEGIN \n";
        assert!(matches!(
            parse_blocks(no_label.as_bytes()),
            Err(PemError::Malformed { .. })
        ));
    }

    #[test]
    fn block_count_is_bounded() {
        let many = LEAF_PEM.repeat(MAX_BLOCKS + 1);
        assert_eq!(
            parse_blocks(many.as_bytes()).err(),
            Some(PemError::TooManyBlocks { limit: MAX_BLOCKS })
        );
        assert_eq!(
            parse_blocks(LEAF_PEM.repeat(MAX_BLOCKS).as_bytes()).map(|b| b.len()),
            Ok(MAX_BLOCKS)
        );
        assert_eq!(parse_blocks(b"no pem here").map(|b| b.len()), Ok(0));
        let huge = vec![b'A'; 10 * 1024 * 1024];
        assert_eq!(
            parse_blocks(&huge).err(),
            Some(PemError::TooLarge {
                size: huge.len(),
                limit: MAX_TEXT_BYTES
            })
        );
    }
}

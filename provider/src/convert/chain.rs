//! Ordering the certificates of a PKCS#12 file as leaf → intermediates → root.
//!
//! A certificate's parent is the first other certificate whose SubjectKeyIdentifier equals its
//! AuthorityKeyIdentifier. The leaf is the one certificate that is nobody's parent; the chain is
//! the walk from it up through the parents. When there is no single leaf, or the walk does not
//! reach every certificate (a missing intermediate, certificates without key identifiers, an
//! unrelated certificate), Key Vault's order is kept and the caller is told why. Exact duplicates
//! are dropped from a constructed chain. The work is O(n²) in the number of certificates, which
//! the callers bound; no input can make it loop.

use std::fmt;
use x509_parser::{
    extensions::ParsedExtension,
    prelude::{FromDer, X509Certificate},
};

/// Errors ordering a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// A certificate is not valid DER X.509 (damaged or truncated).
    #[error("certificate {index} is not a valid X.509 certificate: {reason}")]
    Certificate {
        /// 0-based position in Key Vault's order.
        index: usize,
        /// The parser's words.
        reason: String,
    },
}

impl ChainError {
    /// Stable short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Certificate { .. } => "certificate_malformed",
        }
    }
}

/// Why Key Vault's order was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Every certificate issued another one (a cycle of key identifiers).
    NoLeaf,
    /// Several certificates issued none of the others (missing key identifiers, unrelated
    /// certificates or a missing intermediate).
    SeveralLeaves(usize),
    /// The walk from the leaf reached only `covered` of `total` distinct certificates.
    Incomplete {
        /// Certificates on the walk.
        covered: usize,
        /// Distinct certificates.
        total: usize,
    },
}

impl fmt::Display for Kept {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoLeaf => {
                f.write_str("no certificate is a leaf (the key identifiers form a cycle)")
            }
            Self::SeveralLeaves(n) => write!(
                f,
                "{n} certificates issue none of the others (missing intermediate, or no SubjectKeyId/AuthorityKeyId extensions)"
            ),
            Self::Incomplete { covered, total } => write!(
                f,
                "the chain from the leaf reaches only {covered} of {total} certificates (missing intermediate?)"
            ),
        }
    }
}

/// The result of ordering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// The chain: indices into the input, leaf first; exact duplicates left out.
    Chain {
        /// Leaf, intermediates, root.
        indices: Vec<usize>,
        /// How many exact duplicates were left out.
        duplicates: usize,
    },
    /// Keep the input order.
    Kept(Kept),
}

impl Order {
    /// The indices to emit for `n` input certificates.
    pub fn indices(&self, n: usize) -> Vec<usize> {
        match self {
            Self::Chain { indices, .. } => indices.clone(),
            Self::Kept(_) => (0..n).collect(),
        }
    }
}

/// The key identifiers of one certificate (not secret: they are in every copy of it).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Ids {
    /// SubjectKeyIdentifier, when present and not empty.
    pub(crate) subject: Option<Vec<u8>>,
    /// The key id of AuthorityKeyIdentifier, when present and not empty.
    pub(crate) authority: Option<Vec<u8>>,
}

/// Reads the key identifiers of the certificate at `index` (for the error) of a chain.
pub(crate) fn key_ids(index: usize, der: &[u8]) -> Result<Ids, ChainError> {
    let bad = |reason: String| ChainError::Certificate { index, reason };
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes follow the certificate", rest.len())));
    }
    let mut ids = Ids {
        subject: None,
        authority: None,
    };
    for extension in cert.extensions() {
        match extension.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(ski) => {
                ids.subject = Some(ski.0.to_vec()).filter(|id| !id.is_empty());
            }
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                ids.authority = aki
                    .key_identifier
                    .as_ref()
                    .map(|id| id.0.to_vec())
                    .filter(|id| !id.is_empty());
            }
            _ => {}
        }
    }
    Ok(ids)
}

/// Orders DER certificates (Key Vault's order) leaf → root, or says why the order is kept.
pub fn order(certs: &[&[u8]]) -> Result<Order, ChainError> {
    // Distinct certificates, by first occurrence.
    let mut distinct: Vec<usize> = Vec::with_capacity(certs.len());
    for (i, der) in certs.iter().enumerate() {
        if !distinct.iter().any(|&d| certs[d] == *der) {
            distinct.push(i);
        }
    }
    let duplicates = certs.len() - distinct.len();
    let ids = distinct
        .iter()
        .map(|&i| key_ids(i, certs[i]))
        .collect::<Result<Vec<_>, _>>()?;
    let n = distinct.len();
    if n <= 1 {
        return Ok(Order::Chain {
            indices: distinct,
            duplicates,
        });
    }
    // parent[i]: the first other certificate whose SubjectKeyId is i's AuthorityKeyId.
    let parent: Vec<Option<usize>> = (0..n)
        .map(|i| {
            let authority = ids[i].authority.as_deref()?;
            (0..n).find(|&j| j != i && ids[j].subject.as_deref() == Some(authority))
        })
        .collect();
    let mut is_parent = vec![false; n];
    for p in parent.iter().flatten() {
        is_parent[*p] = true;
    }
    let leaves: Vec<usize> = (0..n).filter(|&i| !is_parent[i]).collect();
    let leaf = match leaves.as_slice() {
        [] => return Ok(Order::Kept(Kept::NoLeaf)),
        [leaf] => *leaf,
        more => return Ok(Order::Kept(Kept::SeveralLeaves(more.len()))),
    };
    let mut visited = vec![false; n];
    let mut walk = Vec::with_capacity(n);
    let mut current = Some(leaf);
    while let Some(c) = current {
        if visited[c] {
            break;
        }
        visited[c] = true;
        walk.push(distinct[c]);
        current = parent[c];
    }
    if walk.len() != n {
        return Ok(Order::Kept(Kept::Incomplete {
            covered: walk.len(),
            total: n,
        }));
    }
    Ok(Order::Chain {
        indices: walk,
        duplicates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ROOT: &[u8] = include_bytes!("../../../tests/fixtures/certs/root.der");
    const INT1: &[u8] = include_bytes!("../../../tests/fixtures/certs/int1.der");
    const INT2: &[u8] = include_bytes!("../../../tests/fixtures/certs/int2.der");
    const INT3: &[u8] = include_bytes!("../../../tests/fixtures/certs/int3.der");
    const LEAF: &[u8] = include_bytes!("../../../tests/fixtures/certs/leaf-rsa.der");
    const SELF_SIGNED: &[u8] = include_bytes!("../../../tests/fixtures/certs/self-signed.der");
    const NOID_ROOT: &[u8] = include_bytes!("../../../tests/fixtures/certs/noid-root.der");
    const NOID_LEAF: &[u8] = include_bytes!("../../../tests/fixtures/certs/noid-leaf.der");

    /// The fixture chain, leaf first.
    const CHAIN: [&[u8]; 5] = [LEAF, INT3, INT2, INT1, ROOT];

    fn ordered(certs: &[&[u8]]) -> Option<Vec<Vec<u8>>> {
        match order(certs).ok()? {
            Order::Chain { indices, .. } => {
                Some(indices.into_iter().map(|i| certs[i].to_vec()).collect())
            }
            Order::Kept(_) => None,
        }
    }

    fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut out = Vec::new();
        for (i, first) in items.iter().enumerate() {
            let mut rest = items.to_vec();
            rest.remove(i);
            for mut tail in permutations(&rest) {
                tail.insert(0, *first);
                out.push(tail);
            }
        }
        out
    }

    #[test]
    fn every_permutation_of_every_sub_chain_is_ordered() {
        // Every contiguous piece of 2..=5 certificates of the chain is itself a chain.
        for len in 2..=CHAIN.len() {
            for start in 0..=CHAIN.len() - len {
                let want: Vec<Vec<u8>> = CHAIN[start..start + len]
                    .iter()
                    .map(|c| c.to_vec())
                    .collect();
                for p in permutations(&(0..len).collect::<Vec<_>>()) {
                    let input: Vec<&[u8]> = p.iter().map(|&i| CHAIN[start + i]).collect();
                    assert_eq!(
                        ordered(&input).as_ref(),
                        Some(&want),
                        "len {len} start {start} perm {p:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn single_and_self_signed() {
        assert_eq!(ordered(&[SELF_SIGNED]), Some(vec![SELF_SIGNED.to_vec()]));
        assert_eq!(ordered(&[]), Some(vec![]));
        assert_eq!(
            order(&[LEAF]).ok(),
            Some(Order::Chain {
                indices: vec![0],
                duplicates: 0
            })
        );
    }

    #[test]
    fn kept_orders() {
        // A missing intermediate: leaf -> int3, and int1 -> root: two leaves.
        assert_eq!(
            order(&[LEAF, ROOT, INT1, INT3]).ok(),
            Some(Order::Kept(Kept::SeveralLeaves(2)))
        );
        // No key identifiers at all.
        assert_eq!(
            order(&[NOID_LEAF, NOID_ROOT]).ok(),
            Some(Order::Kept(Kept::SeveralLeaves(2)))
        );
        // An unrelated certificate next to a chain.
        assert_eq!(
            order(&[LEAF, INT3, SELF_SIGNED]).ok(),
            Some(Order::Kept(Kept::SeveralLeaves(2)))
        );
        assert_eq!(Order::Kept(Kept::NoLeaf).indices(3), vec![0, 1, 2]);
    }

    #[test]
    fn duplicates_are_dropped_from_a_chain() {
        assert_eq!(
            order(&[ROOT, LEAF, INT2, ROOT, INT3, INT1, LEAF]).ok(),
            Some(Order::Chain {
                indices: vec![1, 4, 2, 5, 0],
                duplicates: 2
            })
        );
    }

    #[test]
    fn damaged_certificates_are_errors() {
        let truncated = &INT1[..INT1.len() - 10];
        assert!(matches!(
            order(&[LEAF, truncated]),
            Err(ChainError::Certificate { index: 1, .. })
        ));
        let mut trailing = LEAF.to_vec();
        trailing.push(0);
        assert_eq!(
            order(&[&trailing]).err(),
            Some(ChainError::Certificate {
                index: 0,
                reason: "1 bytes follow the certificate".into()
            })
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Any shuffle of a 2-5 certificate piece of the chain comes out leaf → root.
        #[test]
        fn shuffled_chains_come_out_in_order(
            (want, input) in (2usize..=5)
                .prop_flat_map(|len| (0..=CHAIN.len() - len, Just(len)))
                .prop_flat_map(|(start, len)| {
                    let piece = CHAIN[start..start + len].to_vec();
                    (Just(piece.clone()), Just(piece).prop_shuffle())
                }),
        ) {
            let want: Vec<Vec<u8>> = want.iter().map(|c| c.to_vec()).collect();
            prop_assert_eq!(ordered(&input), Some(want));
        }

        /// Any multiset of fixture certificates (duplicates, unrelated ones, no ids) gives a
        /// permutation of the distinct inputs or the input order, without looping or panicking.
        #[test]
        fn arbitrary_mixtures_terminate_with_a_permutation(
            picks in proptest::collection::vec(0usize..8, 0..12),
        ) {
            let pool: [&[u8]; 8] = [LEAF, INT3, INT2, INT1, ROOT, SELF_SIGNED, NOID_ROOT, NOID_LEAF];
            let input: Vec<&[u8]> = picks.iter().map(|&i| pool[i]).collect();
            let result = order(&input);
            prop_assert!(result.is_ok());
            let indices = result.map(|o| o.indices(input.len())).unwrap_or_default();
            let mut distinct: Vec<&[u8]> = Vec::new();
            for c in &input {
                if !distinct.contains(c) {
                    distinct.push(c);
                }
            }
            let mut got: Vec<&[u8]> = indices.iter().map(|&i| input[i]).collect();
            if got.len() == input.len() {
                let mut all = input.clone();
                all.sort_unstable();
                got.sort_unstable();
                prop_assert_eq!(got, all);
            } else {
                distinct.sort_unstable();
                got.sort_unstable();
                prop_assert_eq!(got, distinct);
            }
        }
    }
}

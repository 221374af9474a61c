//! Entry points of the fuzz targets in `fuzz/` (built with `--cfg fuzzing`), also run over the
//! committed seeds and regressions as unit tests. Each checks invariants, not only "no panic".
//!
//! Untrusted inputs covered: the Mount request (`attributes` JSON, `secrets` JSON, `permission`),
//! the `objects` YAML, file names, `objectEncoding` decoding, Azure Stack cloud files, and what
//! Key Vault returns: PKCS#12 (PFX) values, PEM bundles, certificate chains to order and JSON Web
//! Keys to write as public keys.
//!
//! Panicking on a broken invariant is how a fuzz target reports it.
#![allow(
    clippy::missing_panics_doc,
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used
)]

use crate::{
    cloud::{CloudEnvironment, CloudName},
    convert::{self, ConvertError, chain, jwk, pem, private_key},
    grpc::to_status,
    mount::{self, MountError},
    sensitive::SecretBytes,
    spc::{self, ObjectEncoding, file_name},
    v1alpha1::MountRequest,
};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Largest gRPC status message (bytes).
const MAX_MESSAGE: usize = crate::grpc::MAX_MESSAGE_BYTES;

/// A message a log line or a driver event can carry: bounded, no control characters.
fn check_message(message: &str) {
    assert!(
        message.len() <= MAX_MESSAGE,
        "message of {} bytes",
        message.len()
    );
    assert!(
        !message.chars().any(char::is_control),
        "control character in {message:?}"
    );
}

/// The fuzz input split into the three request fields.
///
/// `S` first: key/value records (`0x1E` between records, `0x1F` between key and value; keys
/// `#secrets` and `#permission` set those fields), so the fuzzer reaches the SPC rules with valid
/// JSON. Anything else: `attributes`, `secrets` and `permission` separated by NUL bytes.
fn request_of(data: &[u8]) -> MountRequest {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if let Some(rest) = data.strip_prefix(b"S") {
        let mut attributes = BTreeMap::new();
        // What the driver sends without a nodePublishSecretRef.
        let mut secrets = String::from("null");
        let mut permission = String::from("420");
        for record in rest.split(|b| *b == 0x1E) {
            let mut kv = record.splitn(2, |b| *b == 0x1F);
            let key = text(kv.next().unwrap_or_default());
            let value = text(kv.next().unwrap_or_default());
            match key.as_str() {
                "#secrets" => secrets = value,
                "#permission" => permission = value,
                _ => {
                    attributes.insert(key, value);
                }
            }
        }
        MountRequest {
            attributes: serde_json::to_string(&attributes).unwrap_or_default(),
            secrets,
            target_path: "/fuzz".into(),
            permission,
            current_object_version: Vec::new(),
        }
    } else {
        let mut parts = data.splitn(3, |b| *b == 0);
        MountRequest {
            attributes: text(parts.next().unwrap_or_default()),
            secrets: text(parts.next().unwrap_or_default()),
            target_path: "/fuzz".into(),
            permission: text(parts.next().unwrap_or_default()),
            current_object_version: Vec::new(),
        }
    }
}

/// The request with every secret value replaced by a unique canary, and the canaries.
///
/// Secret values are the node-publish secret's values (all but `clientid`, which names the
/// identity in messages) and the service-account tokens. A canary keeps what the provider looks
/// at (empty, or blank after trimming, stays as it was), so the canary request takes the same
/// path; it occurs nowhere in the request, so finding one in a message or a plan's
/// `Debug` is a leak, not a secret value that happens to equal a vault name the message quotes.
fn with_canaries(request: &MountRequest) -> (MountRequest, Vec<String>) {
    let given = [&request.attributes, &request.secrets, &request.permission];
    let mut salt = 0u32;
    while given
        .iter()
        .any(|g| g.contains(&format!("Q{salt}Q-canary")))
    {
        salt += 1;
    }
    let mut canaries = Vec::new();
    let mut canary = |value: &mut String, keep: bool| {
        if !keep {
            *value = format!("Q{salt}Q-canary-{}", canaries.len());
            canaries.push(value.clone());
        }
    };
    let mut out = request.clone();
    if let Ok(mut map) = serde_json::from_str::<BTreeMap<String, String>>(&request.secrets) {
        for (key, value) in &mut map {
            let keep = key.trim().eq_ignore_ascii_case("clientid") || value.trim().is_empty();
            canary(value, keep);
        }
        out.secrets = serde_json::to_string(&map).unwrap_or_default();
    }
    if let Ok(mut attrs) = serde_json::from_str::<BTreeMap<String, String>>(&request.attributes)
        && let Some(raw) = attrs.get_mut(mount::request::SERVICE_ACCOUNT_TOKENS)
        && let Ok(mut tokens) = serde_json::from_str::<BTreeMap<String, serde_json::Value>>(raw)
    {
        for entry in tokens.values_mut() {
            if let Some(serde_json::Value::String(token)) = entry.get_mut("token") {
                let keep = token.is_empty();
                canary(token, keep);
            }
        }
        *raw = serde_json::to_string(&tokens).unwrap_or_default();
        out.attributes = serde_json::to_string(&attrs).unwrap_or_default();
    }
    (out, canaries)
}

/// A Mount request through `mount::plan`: no panic; errors bounded and printable; a plan only
/// names files that pass the file-name rules. The same request with canaries for its secret
/// values must not show a canary in its error or its plan.
pub fn mount_request(data: &[u8]) {
    let mut request = request_of(data);
    // No file reads from a fuzzer: the cloud file's bytes go to the cloud file parser instead.
    if let Ok(mut attrs) = serde_json::from_str::<BTreeMap<String, String>>(&request.attributes)
        && let Some(file) = attrs.get_mut("cloudEnvFileName")
    {
        cloud_env(file.as_bytes());
        "/nonexistent/akv-csi-provider-fuzz/cloud.json".clone_into(file);
        request.attributes = serde_json::to_string(&attrs).unwrap_or_default();
    }
    check_plan(&request, &[]);
    let (request, canaries) = with_canaries(&request);
    if !canaries.is_empty() {
        check_plan(&request, &canaries);
    }
}

/// Plans `request` and checks the result, and that none of `secrets` shows in it.
fn check_plan(request: &MountRequest, secrets: &[String]) {
    let shown = match mount::plan(request, CloudName::Public) {
        Ok(plan) => {
            assert!(plan.default_mode <= 0o777);
            assert!(!plan.spc.objects.is_empty() && plan.spc.objects.len() <= spc::MAX_OBJECTS);
            for object in &plan.spc.objects {
                assert_eq!(file_name::check(object.file_name()), Ok(()));
            }
            format!("{plan:?} {}", plan.identity)
        }
        Err(e) => {
            let message = to_status(&e).message().to_owned();
            check_message(&message);
            // The error itself, not only the capped status: its Display is what ends up in
            // logs and in the agent's messages, and every user value in it is quoted (cut).
            let display = e.to_string();
            check_message(&display);
            format!("{message} {display}")
        }
    };
    for secret in secrets {
        assert!(!shown.contains(secret.as_str()), "a secret in {shown:?}");
    }
}

/// The `objects` parameter: no panic; a result is within the limits, its files pass the
/// file-name rules and do not collide; errors are bounded and printable.
pub fn objects_yaml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match spc::parse_objects(&text) {
        Ok(objects) => {
            assert!(!objects.is_empty() && objects.len() <= spc::MAX_OBJECTS);
            let mut paths = Vec::new();
            for object in &objects {
                assert_eq!(file_name::check(object.file_name()), Ok(()));
                assert!((1..=spc::MAX_VERSION_HISTORY).contains(&object.version_history));
                assert!(object.file_permission.is_none_or(|m| m <= 0o777));
                if object.version_history > 1 {
                    paths.extend(
                        (0..object.version_history).map(|i| format!("{}/{i}", object.file_name())),
                    );
                } else {
                    paths.push(object.file_name().to_owned());
                }
            }
            paths.sort();
            for pair in paths.windows(2) {
                assert_ne!(pair[0], pair[1], "two objects write one file");
                assert!(
                    !pair[1].starts_with(&format!("{}/", pair[0])),
                    "a file is another's folder: {} and {}",
                    pair[0],
                    pair[1]
                );
            }
        }
        Err(e) => check_message(&e.to_string()),
    }
}

/// File-name rules against an independent oracle: an accepted name is relative, has only normal
/// path components, none reserved by the atomic writer, and stays below the target folder.
pub fn file_name(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    if file_name::check(name).is_err() {
        return;
    }
    let path = std::path::Path::new(name);
    assert!(path.is_relative());
    assert!(!name.contains('\\') && !name.contains('\0'));
    assert!(!name.chars().any(char::is_control));
    assert!(name.len() <= file_name::MAX_PATH_BYTES);
    for component in path.components() {
        let std::path::Component::Normal(part) = component else {
            panic!("{name:?} has a {component:?} component");
        };
        let part = part.to_string_lossy();
        assert!(!part.starts_with(".."), "{name:?}");
        assert!(part.len() <= file_name::MAX_ELEMENT_BYTES);
    }
    assert_eq!(
        path.components().count(),
        name.split('/').count(),
        "{name:?} normalises to another path"
    );
    let lower = name.to_ascii_lowercase();
    assert!(!lower.contains("%2e") && !lower.contains("%2f") && !lower.contains("%5c"));
}

/// `objectEncoding` decoding: hex and base64 round-trip exactly; errors never repeat the value
/// (a message with its digits removed is one of the fixed forms).
pub fn object_encoding(data: &[u8]) {
    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    let encoding = match selector % 3 {
        0 => ObjectEncoding::Utf8,
        1 => ObjectEncoding::Hex,
        _ => ObjectEncoding::Base64,
    };
    let input = SecretBytes::new(value.to_vec());
    match convert::decode(&input, encoding, "secret/fuzz") {
        Ok(out) => {
            let trimmed = value.trim_ascii();
            match encoding {
                ObjectEncoding::Utf8 => assert_eq!(out.expose(), value),
                ObjectEncoding::Hex => {
                    assert_eq!(
                        hex::encode(out.expose()).as_bytes(),
                        trimmed.to_ascii_lowercase()
                    );
                }
                ObjectEncoding::Base64 => {
                    use base64::Engine;
                    let again = base64::engine::general_purpose::STANDARD.encode(out.expose());
                    assert_eq!(again.as_bytes(), trimmed);
                }
            }
        }
        Err(e) => {
            let shape: String = e
                .to_string()
                .chars()
                .filter(|c| !c.is_ascii_digit())
                .collect();
            let forms = [
                "odd number of digits",
                "a non-hex character at offset ",
                "wrong length",
                "an invalid character at offset ",
                "an invalid last character at offset ",
                "wrong padding",
            ];
            // With the digits gone, base64 reads "base".
            let known = ["hex", "base"].iter().any(|enc| {
                forms.iter().any(|reason| {
                    shape
                        == format!(
                            "the value of secret/fuzz is not valid {enc} ({reason}): check objectEncoding, or store the value {enc}-encoded"
                        )
                })
            });
            assert!(known, "unexpected decode message {shape:?}");
        }
    }
}

/// An Azure Stack cloud environment file: no panic; errors bounded and printable; a result has
/// an https authority and a usable vault suffix.
pub fn cloud_env(data: &[u8]) {
    match CloudEnvironment::from_json("fuzz.json", data) {
        Ok(cloud) => {
            assert_eq!(cloud.authority_host.scheme(), "https");
            let url = cloud.vault_url("kv-fuzz");
            assert!(url.starts_with("https://kv-fuzz."));
        }
        Err(e) => check_message(&e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// What Key Vault returns: PFX values, PEM bundles, certificate chains, JSON Web Keys.

/// The status message a conversion error becomes, checked: a kind, bounded, printable.
fn check_convert_error(error: ConvertError) -> String {
    assert!(!error.kind().is_empty());
    let error = MountError::Convert(error);
    check_message(&error.to_string());
    let message = to_status(&error).message().to_owned();
    check_message(&message);
    message
}

/// The DER of the one PEM block of `text`, which must carry `label` and be written the way
/// `openssl` writes it (BEGIN line, 64-column base64 lines, END line, final newline).
fn one_block(text: &[u8], label: &str) -> Zeroizing<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----\n");
    let end = format!("-----END {label}-----\n");
    assert!(text.starts_with(begin.as_bytes()) && text.ends_with(end.as_bytes()));
    assert!(
        text.split(|b| *b == b'\n').all(|line| line.len() <= 64),
        "a PEM line longer than 64 columns"
    );
    let mut blocks = pem::parse_blocks(text).expect("our own PEM reads back");
    assert_eq!(blocks.len(), 1, "one block expected");
    let block = blocks.pop().expect("one block");
    assert_eq!(block.label, label);
    block.der
}

/// A private key written by the provider is PKCS#8 that converts to itself.
fn check_private_key(text: &SecretBytes) {
    let der = one_block(text.expose(), pem::PRIVATE_KEY);
    let again = private_key::to_pkcs8(&der, private_key::KeyFormat::Pkcs8)
        .expect("a written private key reads back as PKCS#8");
    assert_eq!(
        again.expose(),
        der.as_slice(),
        "PKCS#8 output is not stable"
    );
}

/// Base64 body lines of a PEM text (16 characters or more), except text that also appears on a
/// BEGIN or END line (labels may be quoted in messages).
fn body_lines(data: &[u8]) -> Vec<&str> {
    let lines: Vec<&[u8]> = data.split(|b| *b == b'\n' || *b == b'\r').collect();
    let markers: Vec<&[u8]> = lines
        .iter()
        .copied()
        .filter(|l| l.windows(5).any(|w| w == b"-----"))
        .collect();
    lines
        .iter()
        .copied()
        .filter(|l| {
            l.len() >= 16
                && l.iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        })
        .filter(|l| !markers.iter().any(|m| m.windows(l.len()).any(|w| w == *l)))
        .filter_map(|l| std::str::from_utf8(l).ok())
        .collect()
}

/// A PEM bundle (certificate-backed secret of content type `application/x-pem-file`) through
/// `split_pem`: every certificate block comes out unchanged and in order, every private key as
/// stable PKCS#8, and the combined file reads back to the same files. Errors are bounded,
/// printable and never quote the body (which may be a private key).
pub fn pem_bundle(data: &[u8]) {
    let value = SecretBytes::new(data.to_vec());
    match convert::split_pem(&value, "secret/fuzz") {
        Ok(files) => {
            let blocks = pem::parse_blocks(data).expect("split_pem read these blocks");
            let certs: Vec<&pem::Block> = blocks
                .iter()
                .filter(|b| b.label == pem::CERTIFICATE)
                .collect();
            // Every other block goes to `.key` as stored (the Go provider's split); private
            // keys among them parse.
            let others: Vec<&pem::Block> = blocks
                .iter()
                .filter(|b| b.label != pem::CERTIFICATE)
                .collect();
            assert_eq!(files.certs.len(), certs.len());
            assert_eq!(files.keys.len(), others.len());
            for (out, block) in files.certs.iter().zip(&certs) {
                assert_eq!(*one_block(out, pem::CERTIFICATE), *block.der);
            }
            for (out, block) in files.keys.iter().zip(&others) {
                assert_eq!(*one_block(out.expose(), &block.label), *block.der);
                let format = match block.label.as_str() {
                    pem::PRIVATE_KEY => Some(private_key::KeyFormat::Pkcs8),
                    pem::RSA_PRIVATE_KEY => Some(private_key::KeyFormat::Pkcs1),
                    pem::EC_PRIVATE_KEY => Some(private_key::KeyFormat::Sec1),
                    _ => None,
                };
                if let Some(format) = format {
                    private_key::to_pkcs8(&block.der, format)
                        .expect("split_pem accepted a private key that does not parse");
                }
            }
            let again = convert::split_pem(&files.combined(), "secret/fuzz")
                .expect("the combined file reads back");
            assert_eq!(again.certs, files.certs);
            assert!(same_keys(&again.keys, &files.keys));
        }
        Err(e) => {
            let message = check_convert_error(e);
            for line in body_lines(data) {
                assert!(!message.contains(line), "PEM body text in {message:?}");
            }
        }
    }
}

/// Whether two key lists hold the same bytes in the same order.
fn same_keys(a: &[SecretBytes], b: &[SecretBytes]) -> bool {
    a.iter()
        .map(SecretBytes::expose)
        .eq(b.iter().map(SecretBytes::expose))
}

/// A PFX (the fuzz input is the DER; Key Vault's value is its base64) through `pkcs12_to_pem`:
/// within the limits; keys as stable PKCS#8; certificates valid X.509 in Key Vault's order, or
/// with `construct_chain` exactly in the order `chain::order` gives (checked by
/// [`chain_order`]'s rules); the PEM path reads the written files back to the same files.
pub fn pfx(data: &[u8]) {
    use base64::Engine;
    let value = SecretBytes::new(
        base64::engine::general_purpose::STANDARD
            .encode(data)
            .into_bytes(),
    );
    let files = match convert::pkcs12_to_pem(&value, false, "secret/fuzz") {
        Ok(files) => files,
        Err(e) => {
            check_convert_error(e);
            return;
        }
    };
    assert!(files.keys.len() <= convert::pkcs12::MAX_KEYS);
    assert!(files.certs.len() <= convert::pkcs12::MAX_CERTIFICATES);
    assert!(!files.keys.is_empty() || !files.certs.is_empty());
    files.keys.iter().for_each(check_private_key);
    let ders: Vec<Zeroizing<Vec<u8>>> = files
        .certs
        .iter()
        .map(|c| one_block(c, pem::CERTIFICATE))
        .collect();
    let refs: Vec<&[u8]> = ders.iter().map(|d| d.as_slice()).collect();
    let again = convert::split_pem(&files.combined(), "secret/fuzz")
        .expect("the PEM path reads the PFX path's files (every certificate valid X.509)");
    assert_eq!(again.certs, files.certs);
    match (
        chain::order(&refs),
        convert::pkcs12_to_pem(&value, true, "secret/fuzz"),
    ) {
        (Ok(order), Ok(chained)) => {
            check_order(&refs, &order);
            let want: Vec<&[u8]> = order
                .indices(refs.len())
                .into_iter()
                .map(|i| refs[i])
                .collect();
            let got: Vec<Zeroizing<Vec<u8>>> = chained
                .certs
                .iter()
                .map(|c| one_block(c, pem::CERTIFICATE))
                .collect();
            assert!(got.iter().map(|g| g.as_slice()).eq(want));
            assert!(same_keys(&chained.keys, &files.keys));
        }
        (Err(_), Err(e)) => {
            check_convert_error(e);
        }
        (order, chained) => panic!(
            "ordering alone ({}) and the conversion ({}) disagree",
            order.is_ok(),
            chained.is_ok()
        ),
    }
}

/// Certificates for [`chain_order`]: the fixtures of a five-certificate chain, leaves of each key
/// type, certificates without key identifiers and a self-signed one.
const CERT_POOL: [&[u8]; 12] = [
    include_bytes!("../../tests/fixtures/certs/root.der"),
    include_bytes!("../../tests/fixtures/certs/int1.der"),
    include_bytes!("../../tests/fixtures/certs/int2.der"),
    include_bytes!("../../tests/fixtures/certs/int3.der"),
    include_bytes!("../../tests/fixtures/certs/leaf-rsa.der"),
    include_bytes!("../../tests/fixtures/certs/leaf-p256.der"),
    include_bytes!("../../tests/fixtures/certs/leaf-p384.der"),
    include_bytes!("../../tests/fixtures/certs/leaf-p521.der"),
    include_bytes!("../../tests/fixtures/certs/noid-root.der"),
    include_bytes!("../../tests/fixtures/certs/noid-leaf.der"),
    include_bytes!("../../tests/fixtures/certs/self-signed.der"),
    include_bytes!("../../tests/fixtures/certs/leaf-rsa.der"),
];

/// The certificates a [`chain_order`] input describes. Each byte `b` with `b % 4 != 3` appends
/// pool certificate `b / 4`; `b % 4 == 3` damages the last certificate: the next two bytes give
/// an offset, the third a value XORed there (0 cuts the certificate at that offset). At most
/// as many certificates as one PFX may hold.
fn certs_of(data: &[u8]) -> Vec<Vec<u8>> {
    let mut certs: Vec<Vec<u8>> = Vec::new();
    let mut bytes = data.iter().copied();
    while let Some(b) = bytes.next() {
        if b % 4 != 3 {
            if certs.len() < convert::pkcs12::MAX_CERTIFICATES {
                certs.push(CERT_POOL[usize::from(b / 4) % CERT_POOL.len()].to_vec());
            }
            continue;
        }
        let (Some(hi), Some(lo), Some(x)) = (bytes.next(), bytes.next(), bytes.next()) else {
            break;
        };
        let Some(last) = certs.last_mut().filter(|c| !c.is_empty()) else {
            continue;
        };
        let offset = usize::from(u16::from_be_bytes([hi, lo])) % last.len();
        if x == 0 {
            last.truncate(offset);
        } else {
            last[offset] ^= x;
        }
    }
    certs
}

/// The key identifiers of a certificate, `None` when it does not parse.
fn key_ids_of(der: &[u8]) -> Option<chain::Ids> {
    chain::key_ids(0, der).ok()
}

/// The distinct certificates, in order of first occurrence.
fn distinct<'a>(certs: &[&'a [u8]]) -> Vec<&'a [u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    for cert in certs {
        if !out.contains(cert) {
            out.push(cert);
        }
    }
    out
}

/// Whether no two certificates share a SubjectKeyId (then the issuer of each is unambiguous).
fn unique_subjects(ids: &[chain::Ids]) -> bool {
    let mut subjects: Vec<&Vec<u8>> = ids.iter().filter_map(|i| i.subject.as_ref()).collect();
    let with_subject = subjects.len();
    subjects.sort();
    subjects.dedup();
    subjects.len() == with_subject
}

/// The rules of an ordering: a chain covers every distinct certificate exactly once, each one
/// issued by the next (AuthorityKeyId = next SubjectKeyId), duplicates counted; when subject key
/// ids are unique the leaf issued none of the others. Keeping the order needs two or more.
fn check_order(certs: &[&[u8]], order: &chain::Order) {
    let n = certs.len();
    let distinct = distinct(certs);
    match order {
        chain::Order::Kept(_) => {
            assert!(distinct.len() >= 2, "kept the order of one certificate");
            assert_eq!(order.indices(n), (0..n).collect::<Vec<_>>());
        }
        chain::Order::Chain {
            indices,
            duplicates,
        } => {
            assert_eq!(indices.len() + duplicates, n);
            assert_eq!(indices.len(), distinct.len());
            assert!(indices.iter().all(|&i| i < n));
            let chained: Vec<&[u8]> = indices.iter().map(|&i| certs[i]).collect();
            assert!(distinct.iter().all(|d| chained.contains(d)));
            let ids: Vec<chain::Ids> = chained
                .iter()
                .map(|c| key_ids_of(c).expect("an ordered certificate parses"))
                .collect();
            for pair in ids.windows(2) {
                assert!(
                    pair[0].authority.is_some() && pair[0].authority == pair[1].subject,
                    "a certificate of the chain is not issued by the next one"
                );
            }
            if unique_subjects(&ids)
                && let Some((leaf, others)) = ids.split_first()
            {
                assert!(
                    leaf.subject.is_none() || others.iter().all(|o| o.authority != leaf.subject),
                    "the first certificate issued another one"
                );
            }
        }
    }
}

/// Chain ordering over pool certificates, duplicated, damaged or cut: an error exactly when a
/// certificate does not parse (and it names that one); an ordering that keeps [`check_order`]'s
/// rules; with unique subject key ids, the same result for the input reversed.
pub fn chain_order(data: &[u8]) {
    let certs = certs_of(data);
    let refs: Vec<&[u8]> = certs.iter().map(Vec::as_slice).collect();
    let all_parse = refs.iter().all(|c| key_ids_of(c).is_some());
    let order = match chain::order(&refs) {
        Ok(order) => order,
        Err(e) => {
            let chain::ChainError::Certificate { index, .. } = &e;
            assert!(*index < refs.len() && key_ids_of(refs[*index]).is_none());
            assert!(!all_parse);
            check_convert_error(ConvertError::Chain {
                object: "secret/fuzz".into(),
                source: e,
            });
            return;
        }
    };
    assert!(
        all_parse,
        "ordered certificates of which one does not parse"
    );
    check_order(&refs, &order);
    let ids: Vec<chain::Ids> = distinct(&refs)
        .iter()
        .filter_map(|c| key_ids_of(c))
        .collect();
    if unique_subjects(&ids) {
        let reversed: Vec<&[u8]> = refs.iter().rev().copied().collect();
        let again = chain::order(&reversed).expect("the same certificates parse");
        match (&order, &again) {
            (chain::Order::Kept(a), chain::Order::Kept(b)) => assert_eq!(a, b),
            (chain::Order::Chain { indices: a, .. }, chain::Order::Chain { indices: b, .. }) => {
                assert!(
                    a.iter()
                        .map(|&i| refs[i])
                        .eq(b.iter().map(|&i| reversed[i])),
                    "the chain depends on Key Vault's order"
                );
            }
            _ => panic!("ordering depends on Key Vault's order: {order:?} / {again:?}"),
        }
    }
}

/// Key types and curves a [`jwk`] input chooses from: the ones Key Vault returns, and others.
const KEY_TYPES: [&str; 8] = [
    "RSA",
    "RSA-HSM",
    "EC",
    "EC-HSM",
    "oct",
    "oct-HSM",
    "",
    "EC\n\u{1b}[31m\"x\"",
];
const CURVES: [Option<&str>; 7] = [
    None,
    Some("P-256"),
    Some("P-384"),
    Some("P-521"),
    Some("P-256K"),
    Some("p-256"),
    Some("P-256\r\n\u{0}"),
];

/// A JSON Web Key as Key Vault returns it, to a PEM public key. Input: key type, curve, a bit
/// mask of present fields, then `n`, `e`, `x`, `y` each as a 2-byte length and bytes. A written
/// key is a SubjectPublicKeyInfo of the right algorithm holding exactly the given modulus and
/// exponent, or the uncompressed point padded to the curve size; unknown key types and curves are
/// "unsupported"; errors are bounded and printable.
pub fn jwk(data: &[u8]) {
    use x509_parser::{
        oid_registry::{OID_KEY_TYPE_EC_PUBLIC_KEY, OID_PKCS1_RSAENCRYPTION},
        prelude::FromDer,
        public_key::PublicKey,
        x509::SubjectPublicKeyInfo,
    };
    let [kty, crv, present, tail @ ..] = data else {
        return;
    };
    let mut rest: &[u8] = tail;
    let kty = KEY_TYPES[usize::from(*kty) % KEY_TYPES.len()];
    let crv = CURVES[usize::from(*crv) % CURVES.len()];
    let mut fields: [Option<&[u8]>; 4] = [None; 4];
    for (i, field) in fields.iter_mut().enumerate() {
        let len = match rest {
            [hi, lo, tail @ ..] => {
                rest = tail;
                usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len())
            }
            _ => 0,
        };
        let (value, tail) = rest.split_at(len);
        rest = tail;
        if present & (1 << i) != 0 {
            *field = Some(value);
        }
    }
    let [n, e, x, y] = fields;
    let key = jwk::PublicJwk {
        kty,
        crv,
        n,
        e,
        x,
        y,
    };
    let strip = |b: &[u8]| -> Vec<u8> { b.iter().copied().skip_while(|v| *v == 0).collect() };
    match convert::public_key_pem(&key, "key/fuzz") {
        Ok(text) => {
            let der = one_block(text.expose(), pem::PUBLIC_KEY);
            let (rest, spki) =
                SubjectPublicKeyInfo::from_der(&der).expect("a SubjectPublicKeyInfo");
            assert!(rest.is_empty());
            match kty {
                "RSA" | "RSA-HSM" => {
                    assert_eq!(spki.algorithm.algorithm, OID_PKCS1_RSAENCRYPTION);
                    let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
                        panic!("not an RSA public key");
                    };
                    assert_eq!(strip(rsa.modulus), strip(n.unwrap_or_default()));
                    assert_eq!(strip(rsa.exponent), strip(e.unwrap_or_default()));
                }
                "EC" | "EC-HSM" => {
                    assert_eq!(spki.algorithm.algorithm, OID_KEY_TYPE_EC_PUBLIC_KEY);
                    let size = match crv {
                        Some("P-256") => 32,
                        Some("P-384") => 48,
                        Some("P-521") => 66,
                        other => panic!("accepted curve {other:?}"),
                    };
                    let point = &spki.subject_public_key.data;
                    assert_eq!(point.len(), 1 + 2 * size);
                    assert_eq!(point[0], 4);
                    assert_eq!(strip(&point[1..=size]), strip(x.unwrap_or_default()));
                    assert_eq!(strip(&point[1 + size..]), strip(y.unwrap_or_default()));
                }
                other => panic!("accepted key type {other:?}"),
            }
        }
        Err(e) => {
            if !matches!(kty, "RSA" | "RSA-HSM" | "EC" | "EC-HSM") {
                assert_eq!(e.kind(), "unsupported_key_type");
            }
            if matches!(kty, "EC" | "EC-HSM")
                && crv.is_some_and(|c| !matches!(c, "P-256" | "P-384" | "P-521"))
                && e.kind() != "key_malformed"
            {
                assert_eq!(e.kind(), "unsupported_curve");
            }
            assert_eq!(
                e.is_unsupported(),
                matches!(e.kind(), "unsupported_key_type" | "unsupported_curve")
            );
            check_convert_error(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every committed seed and regression input of every target.
    #[test]
    fn seeds_and_regressions_replay_cleanly() {
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 9] = [
            ("mount_request", mount_request),
            ("objects_yaml", objects_yaml),
            ("file_name", file_name),
            ("object_encoding", object_encoding),
            ("cloud_env", cloud_env),
            ("pfx", pfx),
            ("pem_bundle", pem_bundle),
            ("chain_order", chain_order),
            ("jwk", jwk),
        ];
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut replayed = 0;
        for (target, run) in targets {
            for kind in ["seeds", "regressions"] {
                let dir = root.join(kind).join(target);
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let data = std::fs::read(entry.path()).unwrap_or_default();
                    run(&data);
                    replayed += 1;
                }
            }
        }
        assert!(replayed >= 20, "only {replayed} inputs replayed");
    }

    fn seed(target: &str, name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds")
            .join(target)
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Canaries replace exactly the secret values, keep what the provider looks at, and the
    /// leak check fails when a canary does show.
    #[test]
    fn canaries_replace_the_secret_values() {
        let tokens =
            r#"{"api://AzureADTokenExchange":{"token":"sa-token-1"},"other":{"token":""}}"#;
        let attributes = serde_json::json!({
            "keyvaultName": "kv1",
            "tenantID": "t1",
            "objects": "array:\n  - |\n    objectName: s1\n    objectType: secret\n",
            "csi.storage.k8s.io/pod.name": "web-0",
            "csi.storage.k8s.io/pod.namespace": "shop",
            mount::request::SERVICE_ACCOUNT_TOKENS: tokens,
        });
        let request = MountRequest {
            attributes: attributes.to_string(),
            secrets: r#"{" ClientID ":"app-1","clientsecret":"hunter2-long-value","blank":"  "}"#
                .into(),
            target_path: "/fuzz".into(),
            permission: "420".into(),
            current_object_version: Vec::new(),
        };
        let (planted, canaries) = with_canaries(&request);
        assert_eq!(canaries, ["Q0Q-canary-0", "Q0Q-canary-1"]);
        let secrets: BTreeMap<String, String> =
            serde_json::from_str(&planted.secrets).unwrap_or_default();
        assert_eq!(secrets[" ClientID "], "app-1");
        assert_eq!(secrets["blank"], "  ");
        assert_eq!(secrets["clientsecret"], "Q0Q-canary-0");
        assert!(
            planted
                .attributes
                .contains(r#"{\"token\":\"Q0Q-canary-1\"}"#)
        );
        assert!(planted.attributes.contains(r#"{\"token\":\"\"}"#));
        assert!(!planted.attributes.contains("sa-token-1"));
        // The same identity is chosen for both.
        let identity = |r: &MountRequest| {
            mount::plan(r, CloudName::Public)
                .map(|p| p.identity.to_string())
                .ok()
        };
        assert_eq!(
            identity(&request),
            Some("service principal (clientid app-1, tenant t1)".into())
        );
        assert_eq!(identity(&planted), identity(&request));
        // A salt keeps canaries out of what the attributes already say.
        let mut salted = request.clone();
        salted.attributes = salted.attributes.replace("web-0", "Q0Q-canary");
        assert_eq!(with_canaries(&salted).1[0], "Q1Q-canary-0");
        // The check does fail on a value that shows.
        let shown = std::panic::catch_unwind(|| check_plan(&request, &["app-1".to_owned()]));
        assert!(shown.is_err());
    }

    /// The seeds reach the success paths, where most invariants are checked.
    #[test]
    fn seeds_reach_the_success_paths() {
        use base64::Engine;
        let pfx = seed("pfx", "rsa-chain-shuffled");
        let value = SecretBytes::new(
            base64::engine::general_purpose::STANDARD
                .encode(&pfx)
                .into_bytes(),
        );
        let files = convert::pkcs12_to_pem(&value, true, "o").expect("PFX seed converts");
        assert_eq!((files.keys.len(), files.certs.len()), (1, 5));

        let bundle = SecretBytes::new(seed("pem_bundle", "pem-bundle-sec1"));
        let files = convert::split_pem(&bundle, "o").expect("PEM seed converts");
        assert!(!files.keys.is_empty() && !files.certs.is_empty());

        let certs = certs_of(&seed("chain_order", "shuffled"));
        let refs: Vec<&[u8]> = certs.iter().map(Vec::as_slice).collect();
        assert!(matches!(
            chain::order(&refs),
            Ok(chain::Order::Chain { ref indices, .. }) if indices.len() == 5
        ));
        let damaged = certs_of(&seed("chain_order", "damaged-last"));
        assert_eq!(damaged.len(), 5);
        assert_ne!(damaged[4], CERT_POOL[0], "the damage op changed the root");

        for name in ["leaf-rsa", "leaf-p256", "leaf-p384", "leaf-p521-hsm"] {
            let data = seed("jwk", name);
            let [kty, crv, ..] = data[..] else {
                panic!("short seed {name}")
            };
            assert!(
                usize::from(kty) % KEY_TYPES.len() <= 3 && usize::from(crv) % CURVES.len() <= 3,
                "{name}"
            );
        }
    }

    /// The JWK seeds of the fixtures give the fixtures' public keys.
    #[test]
    fn jwk_seeds_give_the_fixture_keys() {
        for name in ["leaf-rsa", "leaf-p256", "leaf-p384", "leaf-p521"] {
            let data = seed("jwk", name);
            let mut fields: Vec<Vec<u8>> = Vec::new();
            let mut rest = &data[3..];
            for _ in 0..4 {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                fields.push(rest[2..2 + len].to_vec());
                rest = &rest[2 + len..];
            }
            let present = |i: usize| (data[2] & (1 << i) != 0).then(|| fields[i].as_slice());
            let key = jwk::PublicJwk {
                kty: KEY_TYPES[usize::from(data[0])],
                crv: CURVES[usize::from(data[1])],
                n: present(0),
                e: present(1),
                x: present(2),
                y: present(3),
            };
            let pem_text = convert::public_key_pem(&key, "o").expect("fixture key converts");
            let want = std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../tests/fixtures/certs")
                    .join(format!("{name}.pub.pem")),
            )
            .expect("fixture");
            assert_eq!(pem_text.expose(), want.as_slice(), "{name}");
        }
    }
}

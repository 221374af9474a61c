//! Certificates, keys and certificate-backed secrets through the real binary against the fake
//! Key Vault (TLS, challenge auth). Expected bytes are the fixtures `openssl` wrote
//! (tests/fixtures/certs/make-fixtures.sh).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use akv_csi_provider::v1alpha1::{MountResponse, VersionRequest};
use base64::Engine;
use serde_json::Value;
use support::{
    env::{CheckedEnv, SP_ID, versions},
    fake_azure::{CertificateImport, SecretOpts},
};
use tonic::Code;

const PKCS12: &str = "application/x-pkcs12";
const PEM: &str = "application/x-pem-file";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../tests/fixtures/certs/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

fn text(name: &str) -> String {
    String::from_utf8(fixture(name)).expect("UTF-8 fixture")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The first base64 line of every PEM private key in `pem`: must never reach the logs.
fn key_lines(pem: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut iter = pem.lines();
    while let Some(line) = iter.next() {
        if line.starts_with("-----BEGIN") && line.contains("PRIVATE KEY") {
            lines.extend(iter.next().map(str::to_owned));
        }
    }
    lines
}

impl CheckedEnv {
    /// Imports a certificate whose secret is the PFX fixture `pfx/<case>.pfx`.
    fn import_pfx(&mut self, name: &str, case: &str, leaf: &str) -> String {
        let value = b64(&fixture(&format!("pfx/{case}.pfx")));
        self.sensitive.push(value.clone());
        self.sensitive
            .extend(key_lines(&text(&format!("pfx/{case}.expected.pem"))));
        self.import(name, value, PKCS12, leaf)
    }

    fn import(
        &mut self,
        name: &str,
        secret_value: String,
        content_type: &str,
        leaf: &str,
    ) -> String {
        self.base.fake.import_certificate(
            "kv1",
            name,
            &CertificateImport {
                cer: fixture(&format!("{leaf}.der")),
                secret_value,
                content_type: content_type.to_owned(),
                jwk: None,
            },
        )
    }
}

fn files(r: &MountResponse) -> Vec<(String, Vec<u8>)> {
    r.files
        .iter()
        .map(|f| (f.path.clone(), f.contents.clone()))
        .collect()
}

fn file<'a>(r: &'a MountResponse, path: &str) -> &'a [u8] {
    r.files.iter().find(|f| f.path == path).map_or_else(
        || {
            panic!(
                "no file {path} in {:?}",
                files(r).into_iter().map(|f| f.0).collect::<Vec<_>>()
            )
        },
        |f| f.contents.as_slice(),
    )
}

/// PFX fixture cases and the leaf certificate of each.
const PFX_CASES: [(&str, &str); 14] = [
    ("rsa-chain-ordered", "leaf-rsa"),
    ("rsa-chain-reversed", "leaf-rsa"),
    ("rsa-chain-shuffled", "leaf-rsa"),
    ("rsa-chain-legacy", "leaf-rsa"),
    ("rsa-chain-3des", "leaf-rsa"),
    ("p256-chain", "leaf-p256"),
    ("p384-partial", "leaf-p384"),
    ("p521-chain-legacy", "leaf-p521"),
    ("self-signed", "self-signed"),
    ("rsa-leaf-only", "leaf-rsa"),
    ("rsa-missing-intermediate", "leaf-rsa"),
    ("noid-chain", "noid-leaf"),
    ("rsa-duplicate-root", "leaf-rsa"),
    ("certs-only", "leaf-rsa"),
];

async fn mount_every_pfx_case(env: &mut CheckedEnv, suffix: &str) {
    let mut objects = Vec::new();
    let mut want_versions = Vec::new();
    for (case, leaf) in PFX_CASES {
        let version = env.import_pfx(case, case, leaf);
        objects.push(format!("objectName: {case}\nobjectType: secret"));
        want_versions.push((format!("secret/{case}"), version));
    }
    let objects: Vec<&str> = objects.iter().map(String::as_str).collect();
    let resp = env.mount_sp(&objects).await.expect("mount");
    for (case, _) in PFX_CASES {
        assert_eq!(
            String::from_utf8_lossy(file(&resp, case)),
            text(&format!("pfx/{case}.{suffix}.pem")),
            "{case}"
        );
    }
    assert_eq!(versions(&resp), want_versions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs12_secrets_become_pem_chains_like_openssl() {
    let mut env = CheckedEnv::start(&[]).await;
    mount_every_pfx_case(&mut env, "expected").await;
    let logs = env.provider.logs();
    for case in ["rsa-missing-intermediate", "noid-chain"] {
        assert!(
            logs.lines()
                .any(|l| l.contains("keeping Key Vault's order") && l.contains(case)),
            "a warning names {case}:\n{logs}"
        );
    }
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("keeping Key Vault's order") && l.contains("rsa-chain-shuffled"))
    );
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_chain_construction_key_vault_order_is_kept() {
    let mut env = CheckedEnv::start(&["--construct-pem-chain=false"]).await;
    mount_every_pfx_case(&mut env, "kvorder").await;
    assert!(!env.provider.logs().contains("keeping Key Vault's order"));
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pem_passes_through_and_pfx_format_gives_the_stored_pfx() {
    let mut env = CheckedEnv::start(&[]).await;
    let bundle = text("pem-bundle.pem");
    env.sensitive.extend(key_lines(&bundle));
    let pem_version = env.import("pem-cert", bundle.clone(), PEM, "leaf-p384");
    let pfx = fixture("pfx/p256-chain.pfx");
    let pfx_version = env.import_pfx("pfx-cert", "p256-chain", "leaf-p256");
    let resp = env
        .mount_sp(&[
            "objectName: pem-cert\nobjectType: secret",
            // objectFormat does not change a PEM certificate.
            "objectName: pem-cert\nobjectType: secret\nobjectFormat: pfx\nobjectAlias: pem-as-pfx",
            "objectName: pfx-cert\nobjectType: secret\nobjectFormat: pfx",
            "objectName: pfx-cert\nobjectType: secret\nobjectFormat: PFX\nobjectEncoding: base64\nobjectAlias: tls.pfx\nfilePermission: \"0600\"",
        ])
        .await
        .expect("mount");
    assert_eq!(file(&resp, "pem-cert"), bundle.as_bytes());
    assert_eq!(file(&resp, "pem-as-pfx"), bundle.as_bytes());
    assert_eq!(file(&resp, "pfx-cert"), b64(&pfx).as_bytes());
    assert_eq!(file(&resp, "tls.pfx"), pfx.as_slice());
    assert_eq!(resp.files[3].mode, 0o600);
    assert_eq!(
        versions(&resp),
        vec![
            ("secret/pem-cert".to_owned(), pem_version.clone()),
            ("secret/pem-cert".to_owned(), pem_version),
            ("secret/pfx-cert".to_owned(), pfx_version.clone()),
            ("secret/pfx-cert".to_owned(), pfx_version),
        ]
    );

    // objectEncoding cannot decode PEM text.
    let err = env
        .mount_sp(&["objectName: pfx-cert\nobjectType: secret\nobjectEncoding: base64"])
        .await
        .expect_err("encoding of PEM");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("objectEncoding base64")
            && err.message().contains("or set objectFormat: pfx"),
        "{}",
        err.message()
    );
    // A PEM-backed certificate has no PFX: the hint says so instead of "set objectFormat: pfx".
    let err = env
        .mount_sp(&[
            "objectName: pem-cert\nobjectType: secret\nobjectFormat: pfx\nobjectEncoding: base64",
        ])
        .await
        .expect_err("encoding of a PEM certificate");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("stored as PEM (application/x-pem-file), so it has no PFX")
            && !err.message().contains("set objectFormat: pfx"),
        "{}",
        err.message()
    );

    // A password-protected PFX: a clear error, not garbage.
    env.import(
        "locked",
        b64(&fixture("pfx/with-password.pfx")),
        PKCS12,
        "leaf-rsa",
    );
    env.import(
        "locked-legacy",
        b64(&fixture("pfx/with-password-legacy.pfx")),
        PKCS12,
        "leaf-rsa",
    );
    for name in ["locked", "locked-legacy"] {
        let err = env
            .mount_sp(&[&format!("objectName: {name}\nobjectType: secret")])
            .await
            .expect_err("password");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(
            err.message().contains(&format!("secret/{name}"))
                && err.message().contains("protected by a password"),
            "{}",
            err.message()
        );
    }
    // ... which objectFormat: pfx still mounts as stored.
    assert!(
        env.mount_sp(&["objectName: locked\nobjectType: secret\nobjectFormat: pfx"])
            .await
            .is_ok()
    );

    // A certificate-backed secret of another content type.
    env.import("odd", "value".to_owned(), "application/json", "leaf-rsa");
    let err = env
        .mount_sp(&["objectName: odd\nobjectType: secret"])
        .await
        .expect_err("content type");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("\"application/json\""),
        "{}",
        err.message()
    );
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_files_hold_certificates_and_key() {
    let mut env = CheckedEnv::start(&["--write-cert-and-key-in-separate-files"]).await;
    let v = env.import_pfx("tls", "rsa-chain-shuffled", "leaf-rsa");
    let expected = text("pfx/rsa-chain-shuffled.expected.pem");
    let key_end = expected.find("-----END PRIVATE KEY-----\n").expect("key") + 26;
    let (key, certs) = expected.split_at(key_end);
    let sec1_bundle = text("pem-bundle-sec1.pem");
    env.sensitive.extend(key_lines(&sec1_bundle));
    let pem_v = env.import("pem-tls", sec1_bundle.clone(), PEM, "leaf-p256");
    let plain = env
        .fake
        .set_secret("kv1", "plain", "not a certificate", SecretOpts::default());

    let resp = env
        .mount_sp(&[
            "objectName: tls\nobjectType: secret\nfilePermission: \"0640\"",
            "objectName: tls\nobjectType: secret\nobjectFormat: pfx\nobjectAlias: bundle/tls.pfx",
            "objectName: pem-tls\nobjectType: secret",
            "objectName: plain\nobjectType: secret",
        ])
        .await
        .expect("mount");
    let paths: Vec<String> = files(&resp).into_iter().map(|f| f.0).collect();
    assert_eq!(
        paths,
        [
            "tls.crt",
            "tls.key",
            "tls",
            "bundle/tls.pfx.crt",
            "bundle/tls.pfx.key",
            "bundle/tls.pfx",
            "pem-tls.crt",
            "pem-tls.key",
            "pem-tls",
            "plain"
        ]
    );
    assert!(resp.files[..3].iter().all(|f| f.mode == 0o640));
    assert_eq!(file(&resp, "tls"), expected.as_bytes());
    assert_eq!(file(&resp, "tls.crt"), certs.as_bytes());
    assert_eq!(file(&resp, "tls.key"), key.as_bytes());
    // With objectFormat pfx the object's own file is the PFX; .crt and .key are still PEM.
    assert_eq!(
        file(&resp, "bundle/tls.pfx"),
        b64(&fixture("pfx/rsa-chain-shuffled.pfx")).as_bytes()
    );
    assert_eq!(file(&resp, "bundle/tls.pfx.crt"), certs.as_bytes());
    assert_eq!(file(&resp, "bundle/tls.pfx.key"), key.as_bytes());
    // A PEM certificate: unchanged, and its SEC1 key goes into .key as stored (`EC PRIVATE
    // KEY`, byte for byte what the Go provider writes).
    assert_eq!(file(&resp, "pem-tls"), sec1_bundle.as_bytes());
    assert_eq!(
        file(&resp, "pem-tls.key"),
        fixture("leaf-p256.sec1.pem").as_slice()
    );
    assert_eq!(
        file(&resp, "pem-tls.crt"),
        [fixture("leaf-p256.crt.pem"), fixture("int3.crt.pem")]
            .concat()
            .as_slice()
    );
    // Every file has its own entry, with the Go provider's ids.
    let mut want = Vec::new();
    for _ in 0..6 {
        want.push(("secret/tls".to_owned(), v.clone()));
    }
    for _ in 0..3 {
        want.push(("secret/pem-tls".to_owned(), pem_v.clone()));
    }
    want.push(("secret/plain".to_owned(), plain));
    assert_eq!(versions(&resp), want);

    // History: <alias>/<index> plus .crt and .key.
    let v2 = env.import_pfx("tls", "rsa-chain-ordered", "leaf-rsa");
    let resp = env
        .mount_sp(&["objectName: tls\nobjectType: secret\nobjectVersionHistory: 2"])
        .await
        .expect("history");
    let paths: Vec<String> = files(&resp).into_iter().map(|f| f.0).collect();
    assert_eq!(
        paths,
        [
            "tls/0.crt",
            "tls/0.key",
            "tls/0",
            "tls/1.crt",
            "tls/1.key",
            "tls/1"
        ]
    );
    assert_eq!(versions(&resp)[0], ("secret/tls/0".to_owned(), v2));
    assert_eq!(versions(&resp)[5], ("secret/tls/1".to_owned(), v));

    // Another object may not take the name of a .crt file.
    let err = env
        .mount_sp(&[
            "objectName: tls\nobjectType: secret",
            "objectName: plain\nobjectType: secret\nobjectAlias: tls.crt",
        ])
        .await
        .expect_err("conflict");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("\"tls.crt\""), "{}", err.message());
    env.assert_no_leaks();
}

fn jwk(name: &str) -> Value {
    serde_json::from_slice(&fixture(&format!("{name}.jwk.json"))).expect("JWK fixture")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_written_as_public_key_pem() {
    let env = CheckedEnv::start(&[]).await;
    let mut versions_want = Vec::new();
    let mut objects = Vec::new();
    for (name, kty) in [
        ("leaf-rsa", "RSA"),
        ("leaf-rsa", "RSA-HSM"),
        ("leaf-p256", "EC"),
        ("leaf-p384", "EC-HSM"),
        ("leaf-p521", "EC"),
    ] {
        let mut key = jwk(name);
        key["kty"] = kty.into();
        let object = format!("{name}-{}", kty.to_ascii_lowercase());
        let v = env.fake.set_key("kv1", &object, &key);
        objects.push(format!(
            "objectName: {object}\nobjectType: key\nobjectAlias: keys/{object}.pem"
        ));
        versions_want.push((format!("key/{object}"), v));
    }
    let objects: Vec<&str> = objects.iter().map(String::as_str).collect();
    let resp = env.mount_sp(&objects).await.expect("mount");
    for (name, kty) in [
        ("leaf-rsa", "rsa"),
        ("leaf-rsa", "rsa-hsm"),
        ("leaf-p256", "ec"),
        ("leaf-p384", "ec-hsm"),
        ("leaf-p521", "ec"),
    ] {
        assert_eq!(
            file(&resp, &format!("keys/{name}-{kty}.pem")),
            fixture(&format!("{name}.pub.pem")).as_slice(),
            "{name} {kty}"
        );
    }
    assert_eq!(versions(&resp), versions_want);

    // Pinned version and history of keys.
    let old = versions_want[2].1.clone();
    let mut rotated = jwk("leaf-p384");
    rotated["kty"] = "EC".into();
    let new = env.fake.set_key("kv1", "leaf-p256-ec", &rotated);
    let resp = env
        .mount_sp(&[
            &format!("objectName: leaf-p256-ec\nobjectType: key\nobjectVersion: {old}"),
            "objectName: leaf-p256-ec\nobjectType: key\nobjectVersionHistory: 2\nobjectAlias: hist",
        ])
        .await
        .expect("history");
    assert_eq!(
        file(&resp, "leaf-p256-ec"),
        fixture("leaf-p256.pub.pem").as_slice()
    );
    assert_eq!(
        file(&resp, "hist/0"),
        fixture("leaf-p384.pub.pem").as_slice()
    );
    assert_eq!(
        file(&resp, "hist/1"),
        fixture("leaf-p256.pub.pem").as_slice()
    );
    assert_eq!(
        versions(&resp),
        vec![
            ("key/leaf-p256-ec".to_owned(), old.clone()),
            ("key/leaf-p256-ec/0".to_owned(), new),
            ("key/leaf-p256-ec/1".to_owned(), old),
        ]
    );

    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_without_a_public_key_pem_and_key_permissions() {
    let env = CheckedEnv::start(&[]).await;
    env.fake.set_key("kv1", "leaf-rsa-rsa", &jwk("leaf-rsa"));
    // Types and curves without a public key PEM are named.
    env.fake.set_key(
        "kv1",
        "aes",
        &serde_json::json!({"kty": "oct-HSM", "key_ops": ["wrapKey"]}),
    );
    let mut k256 = jwk("leaf-p256");
    k256["crv"] = "P-256K".into();
    env.fake.set_key("kv1", "bitcoin", &k256);
    for (name, what) in [
        ("aes", "key type \"oct-HSM\""),
        ("bitcoin", "EC curve \"P-256K\""),
    ] {
        let err = env
            .mount_sp(&[&format!("objectName: {name}\nobjectType: key")])
            .await
            .expect_err("unsupported");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(
            err.message().contains(what) && err.message().contains(&format!("key/{name}")),
            "{}",
            err.message()
        );
    }

    // A point that is not on its curve is damaged input.
    let mut off = jwk("leaf-p384");
    off["y"] = off["x"].clone();
    env.fake.set_key("kv1", "off-curve", &off);
    let err = env
        .mount_sp(&["objectName: off-curve\nobjectType: key"])
        .await
        .expect_err("off curve");
    assert_eq!(err.code(), Code::InvalidArgument);

    // Missing permission on keys names the keys permission and role.
    env.fake.revoke("kv1", SP_ID);
    env.fake
        .grant("kv1", SP_ID, &["secrets/get", "secrets/list"]);
    let err = env
        .mount_sp(&["objectName: leaf-rsa-rsa\nobjectType: key"])
        .await
        .expect_err("forbidden");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("keys get permission")
            && err.message().contains("Key Vault Crypto User"),
        "{}",
        err.message()
    );
    let err = env
        .mount_sp(&["objectName: missing\nobjectType: key"])
        .await
        .expect_err("forbidden first");
    assert_eq!(err.code(), Code::PermissionDenied);
    env.fake.grant("kv1", SP_ID, &["keys/get"]);
    let err = env
        .mount_sp(&["objectName: missing\nobjectType: key"])
        .await
        .expect_err("not found");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("key/missing"), "{}", err.message());
    env.assert_no_leaks();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_are_the_leaf_as_pem() {
    let mut env = CheckedEnv::start(&[]).await;
    let v1 = env.import_pfx("web", "rsa-chain-shuffled", "leaf-rsa");
    let v2 = env.import_pfx("web", "p521-chain-legacy", "leaf-p521");
    let only = env.fake.set_certificate("kv1", "ca", &fixture("root.der"));
    let resp = env
        .mount_sp(&[
            "objectName: web\nobjectType: cert",
            &format!(
                "objectName: web\nobjectType: cert\nobjectVersion: {v1}\nobjectAlias: web-old.crt"
            ),
            "objectName: web\nobjectType: cert\nobjectVersionHistory: 3\nobjectAlias: hist",
            "objectName: ca\nobjectType: cert\nobjectAlias: ca.crt",
        ])
        .await
        .expect("mount");
    assert_eq!(
        files(&resp),
        vec![
            ("web".to_owned(), fixture("leaf-p521.crt.pem")),
            ("web-old.crt".to_owned(), fixture("leaf-rsa.crt.pem")),
            ("hist/0".to_owned(), fixture("leaf-p521.crt.pem")),
            ("hist/1".to_owned(), fixture("leaf-rsa.crt.pem")),
            ("ca.crt".to_owned(), fixture("root.crt.pem")),
        ]
    );
    assert_eq!(
        versions(&resp),
        vec![
            ("cert/web".to_owned(), v2.clone()),
            ("cert/web".to_owned(), v1.clone()),
            ("cert/web/0".to_owned(), v2),
            ("cert/web/1".to_owned(), v1),
            ("cert/ca".to_owned(), only),
        ]
    );
    let err = env
        .mount_sp(&["objectName: nope\nobjectType: cert"])
        .await
        .expect_err("missing");
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("cert/nope"), "{}", err.message());
    env.assert_no_leaks();
}

/// A PFX (no key, empty password) holding `n` copies of a certificate.
fn truststore(n: usize) -> Vec<u8> {
    let cert = p12_keystore::Certificate::from_der(&fixture("noid-leaf.der")).expect("cert");
    let mut store = p12_keystore::KeyStore::new();
    for i in 0..n {
        store.add_entry(
            &format!("c{i}"),
            p12_keystore::KeyStoreEntry::Certificate(cert.clone()),
        );
    }
    store.writer("").write().expect("write PFX")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_fail_clearly_and_the_provider_keeps_serving() {
    let env = CheckedEnv::start(&["--write-cert-and-key-in-separate-files"]).await;
    let pfx = fixture("pfx/rsa-chain-ordered.pfx");
    let leaf = fixture("leaf-rsa.der");
    let leaf_pem = text("leaf-rsa.crt.pem");
    let import = |name: &str, value: String, content_type: &str, cer: Vec<u8>| {
        env.fake.import_certificate(
            "kv1",
            name,
            &CertificateImport {
                cer,
                secret_value: value,
                content_type: content_type.to_owned(),
                jwk: None,
            },
        )
    };
    import("bogus", "!!not base64!!".to_owned(), PKCS12, leaf.clone());
    import(
        "truncated",
        b64(&pfx[..pfx.len() / 2]),
        PKCS12,
        leaf.clone(),
    );
    import("huge", "A".repeat(10 * 1024 * 1024), PKCS12, leaf.clone());
    import("many-pem", leaf_pem.repeat(1000), PEM, leaf.clone());
    import(
        "bad-pem",
        leaf_pem.replace("-----END CERTIFICATE-----", ""),
        PEM,
        leaf.clone(),
    );
    import(
        "bad-cer",
        b64(&pfx),
        PKCS12,
        leaf[..leaf.len() - 40].to_vec(),
    );
    // 1000 certificates in one PFX, and 65 (over the count limit but under the size limit).
    import("thousand", b64(&truststore(1000)), PKCS12, leaf.clone());
    import("sixty-five", b64(&truststore(65)), PKCS12, leaf.clone());

    let cases = [
        ("bogus", "secret", "is not base64-encoded PKCS#12"),
        ("truncated", "secret", "is not a valid PKCS#12 file"),
        ("huge", "secret", "at most 262144 are converted"),
        ("thousand", "secret", "at most 262144 are converted"),
        ("sixty-five", "secret", "holds 65 certificates; at most 64"),
        ("many-pem", "secret", "at most 262144 are read"),
        (
            "bad-pem",
            "secret",
            "there is no -----END CERTIFICATE----- line",
        ),
        ("bad-cer", "cert", "is not a valid X.509 certificate"),
    ];
    for (name, kind, what) in cases {
        let err = env
            .mount_sp(&[&format!("objectName: {name}\nobjectType: {kind}")])
            .await
            .expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(
            err.message().contains(what) && err.message().contains(&format!("{kind}/{name}")),
            "{name}: {}",
            err.message()
        );
        assert!(
            err.message().len() < 600,
            "{name}: a short message: {}",
            err.message()
        );
    }
    // The process is still healthy and converts good input.
    let mut client = env.provider.client().await;
    assert!(
        client
            .version(VersionRequest {
                version: "v1alpha1".into()
            })
            .await
            .is_ok()
    );
    import("good", b64(&pfx), PKCS12, leaf);
    let resp = env
        .mount_sp(&["objectName: good\nobjectType: secret"])
        .await
        .expect("good");
    assert_eq!(
        String::from_utf8_lossy(file(&resp, "good")),
        text("pfx/rsa-chain-ordered.expected.pem")
    );
}

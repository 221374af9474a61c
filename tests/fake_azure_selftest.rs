//! Exercises the fake Azure services used by the integration tests.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::too_many_lines
)] // one scenario per test

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use support::fake_azure::{
    CertificateImport, ENTRA_ERRORS, FakeAzure, Fault, KEYVAULT_ERRORS, Recorded,
    SYSTEM_ASSIGNED_CLIENT_ID, SecretOpts, Service, VAULT_RESOURCE, fixture_names,
    fixture_placeholders, fixture_template, render_fixture,
};

const TENANT: &str = "11111111-1111-1111-1111-111111111111";
const CLIENT: &str = "22222222-2222-2222-2222-222222222222";
const SECRET: &str = "s3cr3t-value";
const SCOPE: &str = "https://vault.test/.default";

fn client(fake: &FakeAzure) -> reqwest::Client {
    let pem = std::fs::read(fake.ca_file()).expect("read CA file");
    let ca = reqwest::Certificate::from_pem(&pem).expect("parse CA");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, fake.port()));
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .no_proxy()
        .resolve("login.test", addr)
        .resolve("kv1.vault.test", addr)
        .build()
        .expect("build client")
}

async fn json_of(response: reqwest::Response) -> Value {
    let text = response.text().await.expect("read body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

async fn token_request(
    http: &reqwest::Client,
    fake: &FakeAzure,
    tenant: &str,
    pairs: &[(&str, &str)],
) -> reqwest::Response {
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    http.post(format!(
        "{}{tenant}/oauth2/v2.0/token",
        fake.authority_url()
    ))
    .header("content-type", "application/x-www-form-urlencoded")
    .body(body)
    .send()
    .await
    .expect("token request")
}

async fn secret_token(http: &reqwest::Client, fake: &FakeAzure, client_id: &str) -> String {
    let response = token_request(
        http,
        fake,
        TENANT,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", SECRET),
            ("scope", SCOPE),
        ],
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = json_of(response).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

async fn kv_get(
    http: &reqwest::Client,
    fake: &FakeAzure,
    path: &str,
    token: &str,
) -> reqwest::Response {
    let url = format!("{}{path}", fake.vault_url("kv1").trim_end_matches('/'));
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("vault request")
}

async fn setup() -> (FakeAzure, reqwest::Client) {
    let fake = FakeAzure::start().await;
    fake.add_service_principal(TENANT, CLIENT, SECRET);
    fake.add_vault("kv1", TENANT);
    fake.grant("kv1", CLIENT, &["get", "list"]);
    let http = client(&fake);
    (fake, http)
}

#[tokio::test]
async fn cloud_env_and_ca_file() {
    let fake = FakeAzure::start().await;
    let port = fake.port();
    let env: Value = serde_json::from_str(&fake.cloud_env_json()).expect("cloud env JSON");
    assert_eq!(env["name"], "AzureStackCloud");
    assert_eq!(
        env["activeDirectoryEndpoint"],
        format!("https://login.test:{port}/")
    );
    assert_eq!(env["keyVaultEndpoint"], "https://vault.test/");
    assert_eq!(env["keyVaultDNSSuffix"], format!("vault.test:{port}"));
    let file = fake.write_cloud_env_file();
    assert_eq!(
        std::fs::read_to_string(file).expect("read env"),
        fake.cloud_env_json()
    );
    assert!(fake.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert_ne!(fake.port(), fake.http_port());
}

/// Token request for the registered client with extra form fields.
async fn token_with(
    http: &reqwest::Client,
    fake: &FakeAzure,
    tenant: &str,
    extra: &[(&str, &str)],
) -> (u16, String) {
    let mut pairs = vec![("grant_type", "client_credentials"), ("scope", SCOPE)];
    pairs.extend_from_slice(extra);
    let response = token_request(http, fake, tenant, &pairs).await;
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// GET on vault `kv1`; returns the status and the JSON body.
async fn kv_json(
    http: &reqwest::Client,
    fake: &FakeAzure,
    path: &str,
    token: &str,
) -> (u16, Value) {
    let response = kv_get(http, fake, path, token).await;
    let status = response.status().as_u16();
    (status, json_of(response).await)
}

#[tokio::test]
async fn token_authority_client_secret() {
    let (fake, http) = setup().await;
    let token = secret_token(&http, &fake, CLIENT).await;
    assert!(!token.is_empty());
    assert_ne!(
        token,
        secret_token(&http, &fake, CLIENT).await,
        "tokens are fresh"
    );

    // Wrong secret: 401 without echoing the secret.
    let (status, text) = token_with(
        &http,
        &fake,
        TENANT,
        &[("client_id", CLIENT), ("client_secret", "wrong-guess")],
    )
    .await;
    assert_eq!(status, 401);
    assert!(!text.contains("wrong-guess"));
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"][0], 7_000_215);

    // Unknown tenant.
    let (status, text) = token_with(
        &http,
        &fake,
        "nope",
        &[("client_id", CLIENT), ("client_secret", SECRET)],
    )
    .await;
    assert_eq!(status, 400);
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["error"], "invalid_request");
    assert_eq!(body["error_codes"][0], 90_002);
    let description = body["error_description"].as_str().expect("description");
    assert!(description.starts_with("AADSTS90002: Tenant 'nope' not found"));

    // Unknown client.
    let (status, text) = token_with(
        &http,
        &fake,
        TENANT,
        &[("client_id", "ghost"), ("client_secret", SECRET)],
    )
    .await;
    assert_eq!(status, 400);
    assert!(text.contains("AADSTS700016"));

    // Scope without /.default.
    let pairs = [
        ("grant_type", "client_credentials"),
        ("scope", "https://vault.test"),
        ("client_id", CLIENT),
        ("client_secret", SECRET),
    ];
    let response = token_request(&http, &fake, TENANT, &pairs).await;
    assert_eq!(response.status(), 400);
    assert_eq!(json_of(response).await["error"], "invalid_scope");

    let authority: Vec<Recorded> = fake
        .requests()
        .into_iter()
        .filter(|r| r.service == Service::Authority)
        .collect();
    assert_eq!(authority.len(), 6);
    assert_eq!(authority[0].principal.as_deref(), Some(CLIENT));
    assert_eq!(authority[0].method, "POST");
    assert_eq!(authority[0].path, format!("/{TENANT}/oauth2/v2.0/token"));
}

#[tokio::test]
async fn token_authority_federated_identity() {
    let (fake, http) = setup().await;
    fake.add_federated_identity(TENANT, "fed-app", "the-sa-token");
    let assertion_type = (
        "client_assertion_type",
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    );

    let (status, text) = token_with(
        &http,
        &fake,
        TENANT,
        &[
            ("client_id", "fed-app"),
            ("client_assertion", "the-sa-token"),
            assertion_type,
        ],
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["token_type"], "Bearer");

    let (status, text) = token_with(
        &http,
        &fake,
        TENANT,
        &[
            ("client_id", "fed-app"),
            ("client_assertion", "forged"),
            assertion_type,
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(!text.contains("forged"));
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"][0], 700_213);

    // A client secret is no substitute for the assertion.
    let (status, _) = token_with(
        &http,
        &fake,
        TENANT,
        &[("client_id", "fed-app"), ("client_secret", "the-sa-token")],
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn vault_challenge() {
    let (fake, http) = setup().await;
    fake.set_secret("kv1", "db-password", "one", SecretOpts::default());
    let url = format!(
        "{}secrets/db-password/?api-version=7.4",
        fake.vault_url("kv1")
    );
    let response = http.get(&url).send().await.expect("request");
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .expect("header")
        .to_owned();
    let expected = format!(
        r#"Bearer authorization="https://login.test:{}/{TENANT}", resource="https://vault.test""#,
        fake.port()
    );
    assert_eq!(challenge, expected);
    let body = json_of(response).await;
    assert_eq!(body["error"]["code"], "Unauthorized");
    assert_eq!(
        body["error"]["message"],
        "AKV10000: Request is missing a Bearer or PoP token."
    );

    // A made-up token gets the same challenge, and so does an expired one.
    let (status, _) = kv_json(
        &http,
        &fake,
        "/secrets/db-password/?api-version=7.4",
        "made-up",
    )
    .await;
    assert_eq!(status, 401);
    let token = secret_token(&http, &fake, CLIENT).await;
    let (status, _) = kv_json(
        &http,
        &fake,
        "/secrets/db-password/?api-version=7.4",
        &token,
    )
    .await;
    assert_eq!(status, 200);
    fake.expire_all_tokens();
    let (status, _) = kv_json(
        &http,
        &fake,
        "/secrets/db-password/?api-version=7.4",
        &token,
    )
    .await;
    assert_eq!(status, 401);

    // A token for another audience or from another tenant is rejected.
    let wrong_audience = fake.issue_token(CLIENT, Some(TENANT), "https://management.test");
    let (status, body) = kv_json(
        &http,
        &fake,
        "/secrets/db-password/?api-version=7.4",
        &wrong_audience,
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("AKV10022")
    );
    let other_tenant = fake.issue_token(CLIENT, Some("other-tenant"), VAULT_RESOURCE);
    let (status, _) = kv_json(
        &http,
        &fake,
        "/secrets/db-password/?api-version=7.4",
        &other_tenant,
    )
    .await;
    assert_eq!(status, 401);

    let recorded = fake.requests();
    assert_eq!(fake.count(|r| r.is_vault("kv1") && r.status == 401), 5);
    let ok = recorded
        .iter()
        .find(|r| r.is_vault("kv1") && r.status == 200)
        .expect("a 200");
    assert_eq!(ok.principal.as_deref(), Some(CLIENT));
    assert_eq!(ok.query_param("api-version").as_deref(), Some("7.4"));
    assert_eq!(ok.path, "/secrets/db-password/");
    fake.clear_requests();
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn vault_get_latest_and_pinned() {
    let (fake, http) = setup().await;
    let v1 = fake.set_secret("kv1", "db-password", "one", SecretOpts::default());
    let opts = SecretOpts {
        content_type: Some("text/plain".to_owned()),
        tags: [("env".to_owned(), "test".to_owned())].into(),
        ..SecretOpts::default()
    };
    let v2 = fake.set_secret("kv1", "db-password", "two", opts);
    assert_eq!(v1.len(), 32);
    assert!(
        v1.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    assert_eq!(
        fake.versions("kv1", "db-password"),
        vec![v1.clone(), v2.clone()]
    );
    let token = secret_token(&http, &fake, CLIENT).await;

    let (status, body) = kv_json(
        &http,
        &fake,
        "/secrets/db-password/?api-version=7.4",
        &token,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["value"], "two");
    assert_eq!(
        body["id"],
        format!("{}secrets/db-password/{v2}", fake.vault_url("kv1"))
    );
    assert_eq!(body["contentType"], "text/plain");
    assert_eq!(body["tags"]["env"], "test");
    assert_eq!(body["attributes"]["enabled"], true);
    assert!(body.get("kid").is_none());
    let created2 = body["attributes"]["created"].as_i64().expect("created");

    let (status, body) = kv_json(
        &http,
        &fake,
        &format!("/secrets/db-password/{v1}?api-version=7.4"),
        &token,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["value"], "one");
    assert!(body.get("contentType").is_none());
    assert!(body.get("tags").is_none());
    assert!(body["attributes"]["created"].as_i64().expect("created") < created2);

    // Latest without the trailing slash.
    let (_, body) = kv_json(&http, &fake, "/secrets/db-password?api-version=7.4", &token).await;
    assert_eq!(body["value"], "two");

    // Certificate-backed secret.
    let opts = SecretOpts {
        kid: Some("https://kv1.vault.test/keys/cert/abc".to_owned()),
        ..SecretOpts::default()
    };
    fake.set_secret("kv1", "cert", "PEM", opts);
    let (_, body) = kv_json(&http, &fake, "/secrets/cert/?api-version=7.4", &token).await;
    assert_eq!(body["kid"], "https://kv1.vault.test/keys/cert/abc");
    assert_eq!(body["managed"], true);
}

#[tokio::test]
async fn vault_errors() {
    let (fake, http) = setup().await;
    let v1 = fake.set_secret("kv1", "db-password", "one", SecretOpts::default());
    let v2 = fake.set_secret("kv1", "db-password", "two", SecretOpts::default());
    let token = secret_token(&http, &fake, CLIENT).await;

    // 404s.
    let (status, body) = kv_json(&http, &fake, "/secrets/nope/?api-version=7.4", &token).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "SecretNotFound");
    let missing = format!("/secrets/db-password/{}?api-version=7.4", "0".repeat(32));
    let (status, body) = kv_json(&http, &fake, &missing, &token).await;
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .starts_with("A secret with (name/id) db-password/000")
    );

    // Disabled: pinned, then latest.
    fake.disable_version("kv1", "db-password", &v1);
    let (status, body) = kv_json(
        &http,
        &fake,
        &format!("/secrets/db-password/{v1}?api-version=7.4"),
        &token,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["innererror"]["code"], "SecretDisabled");
    assert_eq!(
        body["error"]["message"],
        "Operation get is not allowed on a disabled secret."
    );
    let (status, _) = kv_json(
        &http,
        &fake,
        "/secrets/db-password/?api-version=7.4",
        &token,
    )
    .await;
    assert_eq!(status, 200);
    fake.disable_version("kv1", "db-password", &v2);
    let (status, _) = kv_json(
        &http,
        &fake,
        "/secrets/db-password/?api-version=7.4",
        &token,
    )
    .await;
    assert_eq!(status, 403);

    // Missing api-version.
    let (status, _) = kv_json(&http, &fake, "/secrets/db-password/", &token).await;
    assert_eq!(status, 400);

    // Principal without a grant.
    fake.add_service_principal(TENANT, "no-grant", SECRET);
    let other = secret_token(&http, &fake, "no-grant").await;
    let (status, body) = kv_json(
        &http,
        &fake,
        "/secrets/db-password/?api-version=7.4",
        &other,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "Forbidden");
    assert_eq!(body["error"]["innererror"]["code"], "AccessDenied");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("appid=no-grant;"), "{message}");
    assert!(
        message.contains("does not have secrets get permission on key vault 'kv1;location=eastus'"),
        "{message}"
    );
    assert_eq!(fake.count(|r| r.is_vault("kv1")), 7);
}

#[tokio::test]
async fn list_versions_pages_unsorted() {
    let (fake, http) = setup().await;
    let ids: Vec<String> = (0..7)
        .map(|i| fake.set_secret("kv1", "rotating", &format!("v{i}"), SecretOpts::default()))
        .collect();
    fake.set_page_size(3);
    let token = secret_token(&http, &fake, CLIENT).await;

    let mut url = format!(
        "{}secrets/rotating/versions?api-version=7.4",
        fake.vault_url("kv1")
    );
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        let response = http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("list");
        assert_eq!(response.status(), 200);
        let body = json_of(response).await;
        let items = body["value"].as_array().expect("value array");
        assert!(items.len() <= 3);
        for item in items {
            assert!(item.get("value").is_none());
            let id = item["id"].as_str().expect("id");
            let created = item["attributes"]["created"].as_i64().expect("created");
            seen.push((id.rsplit('/').next().expect("version").to_owned(), created));
        }
        match &body["nextLink"] {
            Value::Null => break,
            Value::String(next) => {
                assert!(next.starts_with(&fake.vault_url("kv1")));
                assert!(next.contains("$skiptoken="));
                url.clone_from(next);
            }
            other => panic!("bad nextLink {other}"),
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 7);
    let created: Vec<i64> = seen.iter().map(|(_, c)| *c).collect();
    let mut sorted = created.clone();
    sorted.sort_unstable();
    assert_ne!(created, sorted, "must not be sorted oldest first");
    sorted.reverse();
    assert_ne!(created, sorted, "must not be sorted newest first");
    let mut listed: Vec<String> = seen.iter().map(|(id, _)| id.clone()).collect();
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected);
    // The newest version has the largest created timestamp.
    let newest = seen.iter().max_by_key(|(_, c)| *c).expect("newest");
    assert_eq!(newest.0, ids[6]);

    // maxresults below the page size wins.
    let url = format!(
        "{}secrets/rotating/versions?api-version=7.4&maxresults=2",
        fake.vault_url("kv1")
    );
    let body = json_of(
        http.get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("list"),
    )
    .await;
    assert_eq!(body["value"].as_array().expect("array").len(), 2);
    assert!(
        body["nextLink"]
            .as_str()
            .expect("next")
            .contains("maxresults=2")
    );

    // Unknown secret and missing list permission.
    let response = kv_get(
        &http,
        &fake,
        "/secrets/ghost/versions?api-version=7.4",
        &token,
    )
    .await;
    assert_eq!(response.status(), 404);
    fake.add_service_principal(TENANT, "getter", SECRET);
    fake.grant("kv1", "getter", &["get"]);
    let getter = secret_token(&http, &fake, "getter").await;
    let response = kv_get(
        &http,
        &fake,
        "/secrets/rotating/versions?api-version=7.4",
        &getter,
    )
    .await;
    assert_eq!(response.status(), 403);
    let message = json_of(response).await["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(message.contains("secrets list permission"), "{message}");
}

#[tokio::test]
async fn injected_faults() {
    let (fake, http) = setup().await;
    fake.set_secret("kv1", "flaky", "value", SecretOpts::default());
    let token = secret_token(&http, &fake, CLIENT).await;

    fake.inject("kv1", "flaky", Fault::throttled(7).times(2));
    for _ in 0..2 {
        let response = kv_get(&http, &fake, "/secrets/flaky/?api-version=7.4", &token).await;
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()["retry-after"], "7");
        assert_eq!(json_of(response).await["error"]["code"], "Throttled");
    }
    let response = kv_get(&http, &fake, "/secrets/flaky/?api-version=7.4", &token).await;
    assert_eq!(response.status(), 200);

    // Faults apply only after authentication.
    fake.inject("kv1", "*", Fault::status(503).with_body("down").times(1));
    let response = http
        .get(format!(
            "{}secrets/flaky/?api-version=7.4",
            fake.vault_url("kv1")
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    let response = kv_get(&http, &fake, "/secrets/flaky/?api-version=7.4", &token).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.text().await.expect("body"), "down");

    // A slow but otherwise normal answer.
    fake.inject(
        "kv1",
        "flaky",
        Fault::slow(Duration::from_millis(300)).times(1),
    );
    let started = std::time::Instant::now();
    let response = kv_get(&http, &fake, "/secrets/flaky/?api-version=7.4", &token).await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Permanent fault until cleared.
    fake.inject("kv1", "flaky", Fault::status(500));
    for _ in 0..3 {
        assert_eq!(
            kv_get(&http, &fake, "/secrets/flaky/?api-version=7.4", &token)
                .await
                .status(),
            500
        );
    }
    fake.clear_faults();
    assert_eq!(
        kv_get(&http, &fake, "/secrets/flaky/?api-version=7.4", &token)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn imds_tokens() {
    let fake = FakeAzure::start().await;
    fake.add_vault("kv1", TENANT);
    let http = client(&fake);
    let imds = |query: &str| {
        format!(
            "{}?api-version=2019-08-01&resource=https%3A%2F%2Fvault.test{query}",
            fake.imds_url()
        )
    };

    // Missing Metadata header.
    let response = http.get(imds("")).send().await.expect("imds");
    assert_eq!(response.status(), 400);
    // No identity assigned yet.
    let response = http
        .get(imds(""))
        .header("Metadata", "true")
        .send()
        .await
        .expect("imds");
    assert_eq!(response.status(), 400);
    assert_eq!(
        json_of(response).await["error_description"],
        "Identity not found"
    );

    let system = fake.add_managed_identity(None);
    assert_eq!(system, SYSTEM_ASSIGNED_CLIENT_ID);
    fake.add_managed_identity(Some("uami-1"));
    fake.grant("kv1", "uami-1", &["get"]);
    fake.set_secret("kv1", "s", "v", SecretOpts::default());

    let response = http
        .get(imds(""))
        .header("Metadata", "true")
        .send()
        .await
        .expect("imds");
    assert_eq!(response.status(), 200);
    let body = json_of(response).await;
    assert_eq!(body["client_id"], SYSTEM_ASSIGNED_CLIENT_ID);
    for key in ["expires_in", "expires_on", "ext_expires_in", "not_before"] {
        body[key]
            .as_str()
            .expect("string")
            .parse::<u64>()
            .expect("numeric string");
    }
    assert_eq!(body["resource"], VAULT_RESOURCE);
    assert_eq!(body["token_type"], "Bearer");

    let response = http
        .get(imds("&client_id=uami-1"))
        .header("Metadata", "true")
        .send()
        .await
        .expect("imds");
    let body = json_of(response).await;
    assert_eq!(body["client_id"], "uami-1");
    let token = body["access_token"].as_str().expect("token").to_owned();
    let response = kv_get(&http, &fake, "/secrets/s?api-version=7.4", &token).await;
    assert_eq!(response.status(), 200);

    let response = http
        .get(imds("&client_id=unknown"))
        .header("Metadata", "true")
        .send()
        .await
        .expect("imds");
    assert_eq!(response.status(), 400);
    assert_eq!(
        json_of(response).await,
        serde_json::json!({"error": "invalid_request", "error_description": "Identity not found"})
    );
    assert_eq!(fake.count(|r| r.service == Service::Imds), 5);
}

#[tokio::test]
async fn nmi_tokens() {
    let fake = FakeAzure::start().await;
    fake.add_pod_identity("default", "nginx", "pod-client");
    let http = client(&fake);
    let url = format!("{}?resource=https%3A%2F%2Fvault.test", fake.nmi_url());

    let response = http
        .get(&url)
        .header("podns", "default")
        .header("podname", "nginx")
        .send()
        .await
        .expect("nmi");
    assert_eq!(response.status(), 200);
    let body = json_of(response).await;
    assert_eq!(body["clientid"], "pod-client");
    assert_eq!(body["token"]["token_type"], "Bearer");
    assert_eq!(body["token"]["resource"], VAULT_RESOURCE);
    body["token"]["expires_on"]
        .as_str()
        .expect("string")
        .parse::<u64>()
        .expect("unix seconds");
    assert!(
        body["token"]["access_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    let response = http
        .get(&url)
        .header("podns", "default")
        .header("podname", "other")
        .send()
        .await
        .expect("nmi");
    assert_eq!(response.status(), 404);
    let response = http
        .get(&url)
        .header("podns", "default")
        .send()
        .await
        .expect("nmi");
    assert_eq!(response.status(), 400);
    let recorded = fake.requests();
    assert_eq!(recorded[0].service, Service::Nmi);
    assert_eq!(recorded[0].principal.as_deref(), Some("pod-client"));
}

#[tokio::test]
async fn connect_proxy_reaches_fake_hosts() {
    let (fake, _) = setup().await;
    fake.set_secret("kv1", "via-proxy", "tunnelled", SecretOpts::default());
    let pem = std::fs::read(fake.ca_file()).expect("read CA file");
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("CA")])
        .proxy(reqwest::Proxy::https(fake.proxy_url()).expect("proxy"))
        .build()
        .expect("client");
    let token = secret_token(&http, &fake, CLIENT).await;
    let response = http
        .get(format!(
            "{}secrets/via-proxy?api-version=7.4",
            fake.vault_url("kv1")
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request through proxy");
    assert_eq!(response.status(), 200);
    assert_eq!(json_of(response).await["value"], "tunnelled");
    assert!(fake.count(|r| r.service == Service::Proxy && r.status == 200) >= 1);
}

#[tokio::test]
async fn servers_stop_on_drop() {
    let fake = FakeAzure::start().await;
    let (port, http_port) = (fake.port(), fake.http_port());
    drop(fake);
    for port in [port, http_port] {
        let connected = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await;
        assert!(connected.is_err(), "port {port} still open");
    }
}

#[tokio::test]
async fn vault_keys_and_certificates() {
    let (fake, http) = setup().await;
    let jwk =
        serde_json::json!({"kty": "EC", "crv": "P-256", "x": "AQ", "y": "Ag", "key_ops": ["sign"]});
    let k1 = fake.set_key("kv1", "signing", &jwk);
    let k2 = fake.set_key(
        "kv1",
        "signing",
        &serde_json::json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
    );
    let cer = b"\x30\x03\x02\x01\x01".to_vec();
    let c1 = fake.set_certificate("kv1", "web", &cer);
    let imported = fake.import_certificate(
        "kv1",
        "tls",
        &CertificateImport {
            cer: cer.clone(),
            secret_value: "UEZY".to_owned(),
            content_type: "application/x-pkcs12".to_owned(),
            jwk: Some(jwk.clone()),
        },
    );
    let token = secret_token(&http, &fake, CLIENT).await;
    let base = fake.vault_url("kv1");

    let (status, body) = kv_json(
        &http,
        &fake,
        "/keys/signing/?api-version=2025-07-01",
        &token,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["key"]["kty"], "RSA");
    assert_eq!(body["key"]["kid"], format!("{base}keys/signing/{k2}"));
    assert_eq!(body["attributes"]["enabled"], true);
    let (_, body) = kv_json(
        &http,
        &fake,
        &format!("/keys/signing/{k1}?api-version=2025-07-01"),
        &token,
    )
    .await;
    assert_eq!(body["key"]["crv"], "P-256");
    let (status, body) = kv_json(
        &http,
        &fake,
        "/keys/signing/versions?api-version=2025-07-01",
        &token,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["value"].as_array().map(Vec::len), Some(2));
    assert!(
        body["value"][0]["kid"]
            .as_str()
            .is_some_and(|k| k.starts_with(&format!("{base}keys/signing/")))
    );

    let (status, body) = kv_json(
        &http,
        &fake,
        "/certificates/web?api-version=2025-07-01",
        &token,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], format!("{base}certificates/web/{c1}"));
    assert_eq!(body["cer"], "MAMCAQE=");
    assert_eq!(body["x5t"].as_str().map(str::len), Some(27));
    assert_eq!(body["sid"], format!("{base}secrets/web/{c1}"));

    // An imported certificate has a secret and a key with the same version.
    let (_, body) = kv_json(&http, &fake, "/secrets/tls/?api-version=2025-07-01", &token).await;
    assert_eq!(body["value"], "UEZY");
    assert_eq!(body["contentType"], "application/x-pkcs12");
    assert_eq!(body["kid"], format!("{base}keys/tls/{imported}"));
    let (_, body) = kv_json(&http, &fake, "/keys/tls/?api-version=2025-07-01", &token).await;
    assert_eq!(body["key"]["kid"], format!("{base}keys/tls/{imported}"));
    assert_eq!(body["managed"], true);
    fake.disable_version("kv1", "tls", &imported);
    let (status, body) = kv_json(
        &http,
        &fake,
        "/certificates/tls/?api-version=2025-07-01",
        &token,
    )
    .await;
    assert_eq!(
        (status, body["error"]["innererror"]["code"].as_str()),
        (403, Some("CertificateDisabled"))
    );

    let (status, body) =
        kv_json(&http, &fake, "/keys/missing?api-version=2025-07-01", &token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("KeyNotFound"))
    );
}

#[tokio::test]
async fn vault_permissions_per_collection() {
    let (fake, http) = setup().await;
    fake.set_key(
        "kv1",
        "signing",
        &serde_json::json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"}),
    );
    fake.set_certificate("kv1", "web", b"\x30\x03\x02\x01\x01");
    let token = secret_token(&http, &fake, CLIENT).await;
    // Permissions can be scoped to one collection.
    fake.revoke("kv1", CLIENT);
    fake.grant("kv1", CLIENT, &["secrets/get", "certificates/get"]);
    let (status, body) =
        kv_json(&http, &fake, "/keys/signing?api-version=2025-07-01", &token).await;
    assert_eq!(status, 403);
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not have keys get permission"))
    );
    let (status, _) = kv_json(
        &http,
        &fake,
        "/certificates/web?api-version=2025-07-01",
        &token,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = kv_json(
        &http,
        &fake,
        "/certificates/web/versions?api-version=2025-07-01",
        &token,
    )
    .await;
    assert_eq!(status, 403);
}

/// A fixture's placeholder values.
type Vars<'a> = &'a [(&'a str, &'a str)];
/// A token request case: fixture, its values, HTTP status, tenant, form.
type TokenCase<'a> = (&'a str, Vars<'a>, u16, &'a str, Vec<(&'a str, &'a str)>);

/// Key Vault error fixtures the fake has no fault for: it accepts every api-version.
const KEYVAULT_NOT_MODELLED: &[&str] = &["api-version-unsupported"];
/// Entra error fixtures the fake has no fault for: it compares client assertions as strings, so
/// it never checks an assertion's issuer, audience, signature, time range or form.
const ENTRA_NOT_MODELLED: &[&str] = &[
    "assertion-audience-mismatch",
    "assertion-issuer-mismatch",
    "assertion-malformed",
    "assertion-signature-invalid",
    "assertion-time-range",
    "issuer-discovery-failed",
];

/// Checks that a fixture list and the fixtures a fake served cover each other.
fn assert_all_served(folder: &str, served: &[&str], not_modelled: &[&str]) {
    let names = fixture_names(folder);
    assert!(!names.is_empty(), "no fixtures in {folder}");
    for name in &names {
        let is_served = served.contains(&name.as_str());
        let is_excused = not_modelled.contains(&name.as_str());
        assert!(
            is_served || is_excused,
            "{folder}/{name} is neither served by the fake nor listed as not modelled"
        );
        assert!(
            !(is_served && is_excused),
            "{folder}/{name} is served but listed as not modelled"
        );
    }
}

/// Every Key Vault error the fake answers is a fixture of `tests/fixtures/keyvault-errors/`, byte
/// for byte after substitution, and every fixture is served (or listed as not modelled).
#[tokio::test]
async fn every_keyvault_error_is_a_fixture() {
    let (fake, http) = setup().await;
    let token = secret_token(&http, &fake, CLIENT).await;
    let stranger = fake.issue_token("no-grant", Some(TENANT), VAULT_RESOURCE);
    fake.set_secret("kv1", "on", "value", SecretOpts::default());
    let off = fake.set_secret("kv1", "off", "value", SecretOpts::default());
    fake.disable_version("kv1", "off", &off);
    let cert = fake.import_certificate(
        "kv1",
        "tls",
        &CertificateImport {
            cer: vec![0x30, 0x03, 0x02, 0x01, 0x01],
            secret_value: "UEZY".to_owned(),
            content_type: "application/x-pkcs12".to_owned(),
            jwk: Some(serde_json::json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"})),
        },
    );
    fake.disable_version("kv1", "tls", &cert);
    let issuer = format!("https://login.test:{}/{TENANT}/", fake.port());
    let mut served = Vec::new();
    let mut check =
        |fixture: &'static str, vars: &[(&str, &str)], want: u16, got: (u16, String)| {
            let body = render_fixture(KEYVAULT_ERRORS, fixture, vars);
            assert_eq!(got, (want, body), "{fixture}");
            served.push(fixture);
        };
    let text = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        (status, r.text().await.expect("body"))
    };
    let unauthenticated = http
        .get(format!(
            "{}secrets/on?api-version=7.4",
            fake.vault_url("kv1")
        ))
        .send()
        .await
        .expect("request");
    check(
        "unauthorized-missing-token",
        &[],
        401,
        text(unauthenticated).await,
    );
    check(
        "api-version-missing",
        &[],
        400,
        text(kv_get(&http, &fake, "/secrets/on", &token).await).await,
    );
    let on = "/secrets/on?api-version=7.4";
    check(
        "unauthorized-unknown-signing-key",
        &[("jwt_header", "eyJhbGciOiJSUzI1NiJ9")],
        401,
        text(kv_get(&http, &fake, on, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln").await).await,
    );
    check(
        "unauthorized-unknown-signing-key",
        &[("jwt_header", "")],
        401,
        text(kv_get(&http, &fake, on, "made-up").await).await,
    );
    let wrong_audience = fake.issue_token(CLIENT, Some(TENANT), "https://management.test");
    check(
        "unauthorized-wrong-audience",
        &[
            ("expected", VAULT_RESOURCE),
            ("found", "https://management.test"),
        ],
        401,
        text(kv_get(&http, &fake, on, &wrong_audience).await).await,
    );
    let other_tenant = fake.issue_token(CLIENT, Some("other-tenant"), VAULT_RESOURCE);
    let found = format!("https://login.test:{}/other-tenant/", fake.port());
    check(
        "unauthorized-wrong-issuer",
        &[("expected", &issuer), ("found", &found)],
        401,
        text(kv_get(&http, &fake, on, &other_tenant).await).await,
    );
    let cases: [(&str, &str, Vars, u16); 8] = [
        (
            "/secrets/nope?api-version=7.4",
            "secret-not-found",
            &[("name", "nope")],
            404,
        ),
        (
            "/secrets/on/0123abcd?api-version=7.4",
            "secret-not-found",
            &[("name", "on/0123abcd")],
            404,
        ),
        (
            "/keys/nope?api-version=7.4",
            "key-not-found",
            &[("name", "nope")],
            404,
        ),
        (
            "/certificates/nope?api-version=7.4",
            "certificate-not-found",
            &[("name", "nope")],
            404,
        ),
        ("/secrets/off?api-version=7.4", "secret-disabled", &[], 403),
        ("/secrets/tls?api-version=7.4", "secret-disabled", &[], 403),
        ("/keys/tls?api-version=7.4", "key-disabled", &[], 403),
        (
            "/certificates/tls?api-version=7.4",
            "certificate-disabled",
            &[],
            403,
        ),
    ];
    for (path, fixture, vars, status) in cases {
        check(
            fixture,
            vars,
            status,
            text(kv_get(&http, &fake, path, &token).await).await,
        );
    }
    check(
        "forbidden-by-access-policy",
        &[
            ("client_id", "no-grant"),
            ("object_id", "no-grant"),
            ("issuer", &issuer),
            ("collection", "secrets"),
            ("permission", "get"),
            ("vault", "kv1"),
        ],
        403,
        text(kv_get(&http, &fake, "/secrets/on?api-version=7.4", &stranger).await).await,
    );
    fake.inject("kv1", "on", Fault::throttled(1).times(1));
    check(
        "throttled",
        &[],
        429,
        text(kv_get(&http, &fake, "/secrets/on?api-version=7.4", &token).await).await,
    );
    for name in [
        "forbidden-by-connection",
        "forbidden-by-firewall",
        "forbidden-by-rbac",
    ] {
        fake.inject("kv1", "on", Fault::keyvault_error(name).times(1));
        check(
            name,
            &[],
            403,
            text(kv_get(&http, &fake, "/secrets/on?api-version=7.4", &token).await).await,
        );
    }
    let expiring = secret_token(&http, &fake, CLIENT).await;
    fake.expire_all_tokens();
    check(
        "unauthorized-token-expired",
        &[],
        401,
        text(kv_get(&http, &fake, on, &expiring).await).await,
    );
    assert_all_served(KEYVAULT_ERRORS, &served, KEYVAULT_NOT_MODELLED);
}

/// A JWT-shaped client assertion with claim `sub` (unsigned: the fake only compares strings).
fn assertion_with_subject(sub: &str) -> String {
    use base64::Engine as _;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2ln",
        b64(serde_json::json!({"alg": "RS256", "typ": "JWT"})),
        b64(serde_json::json!({"sub": sub, "aud": "api://AzureADTokenExchange"}))
    )
}

/// Every error the token authority answers is a fixture of `tests/fixtures/entra-errors/`, byte
/// for byte once its generated ids and timestamp are filled in, and every fixture is served (or
/// listed as not modelled).
#[tokio::test]
async fn every_entra_error_is_a_fixture() {
    let (fake, http) = setup().await;
    fake.add_federated_identity(TENANT, "wi", "the-expected-assertion");
    let stranger = assertion_with_subject("system:serviceaccount:ns:intruder");
    let timestamp = regex::Regex::new(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}Z$").expect("regex");
    let jwt = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
    let cases: Vec<TokenCase> = vec![
        (
            "invalid-client-secret",
            &[("client_id", CLIENT)],
            401,
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("scope", SCOPE),
                ("client_id", CLIENT),
                ("client_secret", "wrong"),
            ],
        ),
        (
            "application-not-found",
            &[("client_id", "ghost"), ("tenant", TENANT)],
            400,
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("scope", SCOPE),
                ("client_id", "ghost"),
                ("client_secret", "x"),
            ],
        ),
        (
            "tenant-not-found",
            &[("tenant", "no-such-tenant")],
            400,
            "no-such-tenant",
            vec![
                ("grant_type", "client_credentials"),
                ("scope", SCOPE),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
            ],
        ),
        (
            "unsupported-grant-type",
            &[("grant_type", "password")],
            400,
            TENANT,
            vec![
                ("grant_type", "password"),
                ("scope", SCOPE),
                ("client_id", CLIENT),
            ],
        ),
        (
            "missing-parameter",
            &[("parameter", "grant_type")],
            400,
            TENANT,
            vec![
                ("scope", SCOPE),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
            ],
        ),
        (
            "missing-parameter",
            &[("parameter", "client_id")],
            400,
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("scope", SCOPE),
                ("client_secret", SECRET),
            ],
        ),
        (
            "missing-parameter",
            &[("parameter", "scope")],
            400,
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
            ],
        ),
        (
            "scope-without-default",
            &[("scope", "https://vault.test")],
            400,
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("scope", "https://vault.test"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
            ],
        ),
        (
            "invalid-scope",
            &[("scope", "a/.default b/.default")],
            400,
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("scope", "a/.default b/.default"),
                ("client_id", CLIENT),
                ("client_secret", SECRET),
            ],
        ),
        (
            "missing-client-credential",
            &[],
            400,
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("scope", SCOPE),
                ("client_id", CLIENT),
            ],
        ),
        (
            "invalid-client-assertion-type",
            &[],
            400,
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("scope", SCOPE),
                ("client_id", "wi"),
                ("client_assertion", "x"),
                ("client_assertion_type", "other"),
            ],
        ),
        (
            "assertion-subject-mismatch",
            &[("subject", "system:serviceaccount:ns:intruder")],
            400,
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("scope", SCOPE),
                ("client_id", "wi"),
                ("client_assertion", &stranger),
                ("client_assertion_type", jwt),
            ],
        ),
        (
            "assertion-subject-mismatch",
            &[("subject", "")],
            400,
            TENANT,
            vec![
                ("grant_type", "client_credentials"),
                ("scope", SCOPE),
                ("client_id", "wi"),
                ("client_assertion", "not-a-jwt"),
                ("client_assertion_type", jwt),
            ],
        ),
    ];
    let mut served = Vec::new();
    for (fixture, vars, status, tenant, form) in cases {
        let response = token_request(&http, &fake, tenant, &form).await;
        let got_status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let body: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{fixture}: {e}: {text}"));
        let field = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
        let (trace, correlation, stamp) = (
            field("trace_id"),
            field("correlation_id"),
            field("timestamp"),
        );
        assert!(timestamp.is_match(&stamp), "{fixture}: timestamp {stamp}");
        let mut all = vec![
            ("trace_id", trace.as_str()),
            ("correlation_id", correlation.as_str()),
            ("timestamp", stamp.as_str()),
            ("authority", "https://login.test"),
        ];
        all.extend_from_slice(vars);
        let want = render_fixture(ENTRA_ERRORS, fixture, &all);
        assert_eq!((got_status, text), (status, want), "{fixture}");
        served.push(fixture);
    }
    assert_all_served(ENTRA_ERRORS, &served, ENTRA_NOT_MODELLED);
}

/// Fixtures are one line of JSON in the service's shape; substitution escapes values as JSON and
/// does not substitute inside substituted values.
#[test]
fn fixtures_are_well_formed() {
    for folder in [KEYVAULT_ERRORS, ENTRA_ERRORS] {
        for name in fixture_names(folder) {
            let template = fixture_template(folder, &name);
            assert!(
                !template.contains('\n'),
                "{folder}/{name}: more than one line"
            );
            let hostile: Vec<(String, String)> = fixture_placeholders(&template)
                .into_iter()
                .map(|p| {
                    let value = format!("a\"b\\c<d>\r\n{{{p}}}");
                    (p, value)
                })
                .collect();
            let vars: Vec<(&str, &str)> = hostile
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let rendered = render_fixture(folder, &name, &vars);
            let body: Value = serde_json::from_str(&rendered)
                .unwrap_or_else(|e| panic!("{folder}/{name}: {e}: {rendered}"));
            if folder == KEYVAULT_ERRORS {
                assert!(body["error"]["code"].is_string(), "{folder}/{name}");
                assert!(body["error"]["message"].is_string(), "{folder}/{name}");
            } else {
                for key in [
                    "error",
                    "error_description",
                    "error_codes",
                    "timestamp",
                    "trace_id",
                    "correlation_id",
                    "error_uri",
                ] {
                    assert!(body.get(key).is_some(), "{folder}/{name}: no {key}");
                }
                let code = body["error_codes"][0].as_u64().expect("error_codes");
                let description = body["error_description"].as_str().expect("description");
                assert!(
                    description.starts_with(&format!("AADSTS{code}: ")),
                    "{folder}/{name}"
                );
            }
            for (p, value) in &hostile {
                let quoted = Value::String(value.clone()).to_string();
                assert!(
                    rendered.contains(&quoted[1..quoted.len() - 1]),
                    "{folder}/{name}: {{{p}}} not substituted verbatim: {rendered}"
                );
            }
        }
    }
}

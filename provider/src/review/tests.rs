use super::*;
use crate::{auth::Identity, cloud::CloudEnvironment};
use base64::Engine;
use std::sync::atomic::{AtomicUsize, Ordering};

const WI: &str = crate::auth::WORKLOAD_IDENTITY_AUDIENCE;

/// A TokenReview API that answers what the test says and counts calls.
struct FakeApi {
    calls: AtomicUsize,
    answer: Mutex<Result<ReviewStatus, ApiError>>,
    delay: Duration,
}

impl FakeApi {
    fn new(answer: Result<ReviewStatus, ApiError>) -> Arc<Self> {
        Arc::new(Self {
            calls: AtomicUsize::new(0),
            answer: Mutex::new(answer),
            delay: Duration::ZERO,
        })
    }

    fn set(&self, answer: Result<ReviewStatus, ApiError>) {
        *self.answer.lock().unwrap() = answer;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl ReviewApi for FakeApi {
    async fn review(&self, _token: &str, audience: &str) -> Result<ReviewStatus, ApiError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        assert_eq!(audience, WI);
        self.answer.lock().unwrap().clone()
    }
}

/// A JWT-shaped token with these claims (the fake API does not check signatures).
fn token(claims: &serde_json::Value) -> SecretString {
    let b64 = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    SecretString::new(format!(
        "{}.{}.c2ln",
        b64(br#"{"alg":"RS256","kid":"k1"}"#),
        b64(claims.to_string().as_bytes())
    ))
}

fn pod_token(n: u32) -> SecretString {
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    token(&serde_json::json!({"iss": "https://kubernetes.default.svc", "exp": exp, "n": n}))
}

fn vouched_for(pod: &str, uid: &str) -> ReviewStatus {
    ReviewStatus {
        authenticated: true,
        error: String::new(),
        username: "system:serviceaccount:shop:web".into(),
        pod_name: Some(pod.into()),
        pod_uid: Some(uid.into()),
        audiences: vec![WI.into()],
    }
}

const POD: PodRef<'static> = PodRef {
    namespace: "shop",
    name: "web-0",
    uid: "uid-0",
    service_account: "web",
};

fn reviewer(api: &Arc<FakeApi>, ttl: Duration) -> TokenReviewer {
    TokenReviewer::new(
        api.clone(),
        ReviewerConfig { cache_ttl: ttl },
        Arc::new(Metrics::new(10)),
    )
}

fn shared(subject: &str) -> Sharing {
    Sharing::Shared(VouchedSubject {
        issuer: "https://kubernetes.default.svc".into(),
        subject: subject.into(),
        audience: WI.into(),
    })
}

#[tokio::test]
async fn a_vouched_token_of_the_pod_shares_its_service_account() {
    let api = FakeApi::new(Ok(vouched_for("web-0", "uid-0")));
    let r = reviewer(&api, Duration::from_mins(1));
    let got = r.vouch("workload_identity", &pod_token(1), WI, POD).await;
    assert_eq!(got.unwrap(), shared("system:serviceaccount:shop:web"));
    let text = r.metrics.encode();
    assert!(
        text.contains(
            r#"akv_token_reviews_total{mode="workload_identity",outcome="authenticated"} 1"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"akv_identity_sharing_total{mode="workload_identity",result="shared"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn another_pods_or_service_accounts_token_is_refused() {
    let cases = [
        (
            ReviewStatus {
                username: "system:serviceaccount:shop:admin".into(),
                ..vouched_for("web-0", "uid-0")
            },
            "belongs to \"system:serviceaccount:shop:admin\"",
        ),
        (
            vouched_for("web-1", "uid-1"),
            "\"system:serviceaccount:shop:web\" of pod \"shop/web-1\" (uid \"uid-1\")",
        ),
        // Same name, recreated pod: another uid.
        (vouched_for("web-0", "uid-9"), "(uid \"uid-9\")"),
    ];
    for (status, needle) in cases {
        let api = FakeApi::new(Ok(status));
        let r = reviewer(&api, Duration::from_mins(1));
        let err = r
            .vouch("workload_identity", &pod_token(1), WI, POD)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "token_review_wrong_subject");
        let text = err.to_string();
        assert!(text.contains(needle), "{text}");
        assert!(text.contains("TokenReview"), "{text}");
        assert!(
            text.contains("presented for pod \"shop/web-0\" (service account \"web\")"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn an_unauthenticated_token_is_refused_and_not_remembered() {
    let api = FakeApi::new(Ok(ReviewStatus {
        error: "[invalid bearer token, service account token has expired]".into(),
        ..ReviewStatus::default()
    }));
    let r = reviewer(&api, Duration::from_mins(1));
    let t = pod_token(1);
    for _ in 0..2 {
        let err = r.vouch("workload_identity", &t, WI, POD).await.unwrap_err();
        assert_eq!(err.kind(), "token_review_unauthenticated");
        assert!(
            err.to_string()
                .contains("did not authenticate the service account token of pod \"shop/web-0\" for audience api://AzureADTokenExchange: [invalid bearer token, service account token has expired]"),
            "{err}"
        );
    }
    assert_eq!(api.calls(), 2, "a refusal is asked again, not cached");
}

#[tokio::test]
async fn tokens_kubernetes_cannot_tie_to_a_pod_are_not_shared() {
    let not_bound = ReviewStatus {
        pod_name: None,
        pod_uid: None,
        ..vouched_for("web-0", "uid-0")
    };
    let other_audience = ReviewStatus {
        audiences: vec![],
        ..vouched_for("web-0", "uid-0")
    };
    for (status, pod, token, reason) in [
        (not_bound, POD, pod_token(1), "not_pod_bound"),
        (other_audience, POD, pod_token(1), "audience_not_confirmed"),
        (
            vouched_for("web-0", "uid-0"),
            PodRef {
                service_account: "",
                ..POD
            },
            pod_token(1),
            "no_service_account_attribute",
        ),
        (
            vouched_for("web-0", "uid-0"),
            POD,
            SecretString::from("opaque"),
            "undecodable_token",
        ),
    ] {
        let api = FakeApi::new(Ok(status));
        let r = reviewer(&api, Duration::from_mins(1));
        let got = r.vouch("workload_identity", &token, WI, pod).await.unwrap();
        assert_eq!(got, Sharing::PerToken(reason));
    }
}

#[tokio::test(start_paused = true)]
async fn reviews_are_cached_for_the_ttl_and_never_past_the_tokens_expiry() {
    let api = FakeApi::new(Ok(vouched_for("web-0", "uid-0")));
    let r = reviewer(&api, Duration::from_secs(30));
    let t = pod_token(1);
    r.vouch("workload_identity", &t, WI, POD).await.unwrap();
    tokio::time::advance(Duration::from_secs(29)).await;
    r.vouch("workload_identity", &t, WI, POD).await.unwrap();
    assert_eq!(api.calls(), 1, "within the TTL: one review");
    tokio::time::advance(Duration::from_secs(2)).await;
    r.vouch("workload_identity", &t, WI, POD).await.unwrap();
    assert_eq!(api.calls(), 2, "after the TTL: asked again");
    // Another token of the same pod is another review.
    r.vouch("workload_identity", &pod_token(2), WI, POD)
        .await
        .unwrap();
    assert_eq!(api.calls(), 3);

    // A token with 5 s left is kept 5 s, not 30.
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 5;
    let short = token(&serde_json::json!({"iss": "https://kubernetes.default.svc", "exp": exp}));
    r.vouch("workload_identity", &short, WI, POD).await.unwrap();
    tokio::time::advance(Duration::from_secs(6)).await;
    r.vouch("workload_identity", &short, WI, POD).await.unwrap();
    assert_eq!(api.calls(), 5);

    // TTL 0: every Mount asks.
    let api = FakeApi::new(Ok(vouched_for("web-0", "uid-0")));
    let r = reviewer(&api, Duration::ZERO);
    for _ in 0..3 {
        r.vouch("workload_identity", &t, WI, POD).await.unwrap();
    }
    assert_eq!(api.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn concurrent_mounts_with_one_token_share_one_review() {
    let api = Arc::new(FakeApi {
        calls: AtomicUsize::new(0),
        answer: Mutex::new(Ok(vouched_for("web-0", "uid-0"))),
        delay: Duration::from_millis(50),
    });
    let r = Arc::new(reviewer(&api, Duration::from_mins(1)));
    let t = pod_token(1);
    let all = (0..10).map(|_| {
        let (r, t) = (r.clone(), t.clone());
        tokio::spawn(async move { r.vouch("workload_identity", &t, WI, POD).await })
    });
    for got in futures::future::join_all(all).await {
        assert_eq!(
            got.unwrap().unwrap(),
            shared("system:serviceaccount:shop:web")
        );
    }
    assert_eq!(api.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_api_that_fails_means_per_token_identities_with_a_backoff() {
    let api = FakeApi::new(Err(ApiError::Forbidden(
        "HTTP 403: tokenreviews.authentication.k8s.io is forbidden".into(),
    )));
    let r = reviewer(&api, Duration::from_mins(1));
    let t = pod_token(1);
    let got = r.vouch("workload_identity", &t, WI, POD).await.unwrap();
    assert_eq!(got, Sharing::PerToken("forbidden"));
    // Within the backoff nothing is asked.
    let got = r.vouch("workload_identity", &t, WI, POD).await.unwrap();
    assert_eq!(got, Sharing::PerToken("backoff"));
    assert_eq!(api.calls(), 1);
    // After it, asked again: still failing, the wait doubles.
    tokio::time::advance(BACKOFF_MIN + Duration::from_millis(1)).await;
    api.set(Err(ApiError::Unavailable("connection refused".into())));
    let got = r.vouch("workload_identity", &t, WI, POD).await.unwrap();
    assert_eq!(got, Sharing::PerToken("unavailable"));
    tokio::time::advance(BACKOFF_MIN + Duration::from_millis(1)).await;
    let got = r.vouch("workload_identity", &t, WI, POD).await.unwrap();
    assert_eq!(
        got,
        Sharing::PerToken("backoff"),
        "the second wait is longer"
    );
    // Once the API answers, tokens are shared again.
    tokio::time::advance(BACKOFF_MIN * 2).await;
    api.set(Ok(vouched_for("web-0", "uid-0")));
    let got = r.vouch("workload_identity", &t, WI, POD).await.unwrap();
    assert_eq!(got, shared("system:serviceaccount:shop:web"));
    assert_eq!(api.calls(), 3);
    let text = r.metrics.encode();
    for line in [
        r#"akv_token_reviews_total{mode="workload_identity",outcome="forbidden"} 1"#,
        r#"akv_token_reviews_total{mode="workload_identity",outcome="unavailable"} 1"#,
        r#"akv_identity_sharing_total{mode="workload_identity",result="per_token"} 4"#,
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
}

#[test]
fn the_shared_key_is_the_vouched_subject_not_the_token() {
    let cloud = CloudEnvironment::resolve(crate::cloud::CloudName::Public, None).unwrap();
    let wi = |client: &str, token: &str| Identity::WorkloadIdentity {
        tenant_id: "t".into(),
        client_id: client.into(),
        token: SecretString::from(token),
    };
    let subject = VouchedSubject {
        issuer: "https://issuer".into(),
        subject: "system:serviceaccount:shop:web".into(),
        audience: WI.into(),
    };
    let a = wi("c", "token-of-pod-a");
    let b = wi("c", "token-of-pod-b");
    assert_ne!(a.key(&cloud), b.key(&cloud));
    assert_eq!(
        a.shared_key(&cloud, &subject),
        b.shared_key(&cloud, &subject)
    );
    assert_ne!(a.shared_key(&cloud, &subject), Some(a.key(&cloud)));
    let other = |f: fn(&mut VouchedSubject)| {
        let mut s = subject.clone();
        f(&mut s);
        a.shared_key(&cloud, &s)
    };
    let base = a.shared_key(&cloud, &subject);
    assert_ne!(
        other(|s| s.subject = "system:serviceaccount:shop:admin".into()),
        base
    );
    assert_ne!(other(|s| s.issuer = "https://other".into()), base);
    assert_ne!(
        other(|s| s.audience = "api://AKSIdentityBinding".into()),
        base
    );
    assert_ne!(
        wi("c2", "token-of-pod-a").shared_key(&cloud, &subject),
        base
    );
    let binding = Identity::IdentityBinding {
        tenant_id: "t".into(),
        client_id: "c".into(),
        token: SecretString::from("token-of-pod-a"),
    };
    assert_ne!(binding.shared_key(&cloud, &subject), base);
    let managed = Identity::ManagedIdentity {
        user_assigned_client_id: None,
    };
    assert_eq!(managed.shared_key(&cloud, &subject), None);
}

package entra

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"akv-csi-provider/e2e/internal/fixtures"
	"akv-csi-provider/e2e/internal/jwt"
)

// notModelled are the Entra error fixtures the token service has no fault for: every tenant
// exists for it (an unknown one is an unknown app), the Rust fake serves tenant-not-found.
var notModelled = []string{"tenant-not-found"}

// Every error the token service answers is a fixture of tests/fixtures/entra-errors, byte for
// byte once the ids and timestamp it generated are filled in, and every fixture is served (or
// listed in notModelled).
func TestEveryEntraErrorIsAFixture(t *testing.T) {
	is, err := StartIssuer()
	if err != nil {
		t.Fatal(err)
	}
	defer is.Close()
	ts, err := NewTokenService("https://login.test", &http.Client{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(ts)
	defer srv.Close()
	ts.AddApp(App{Tenant: "t1", ClientID: "wi", Federated: []FederatedCredential{
		{Issuer: is.URL, Subject: Subject("ns", "sa"), Audiences: []string{WorkloadIdentityAudience}},
		{Issuer: "http://127.0.0.1:1", Subject: Subject("ns", "sa"), Audiences: []string{WorkloadIdentityAudience}},
	}})
	ts.AddApp(App{Tenant: "t1", ClientID: "sp", Secrets: []string{"s3cret"}})

	expired, _, _ := is.Mint("ns", "sa", WorkloadIdentityAudience, -time.Minute)
	forged, _ := is.Forge("ns", "sa", WorkloadIdentityAudience, time.Hour)
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherIssuer, _ := jwt.Sign(otherKey, "k", map[string]any{"iss": "https://elsewhere", "sub": Subject("ns", "sa"), "aud": WorkloadIdentityAudience, "exp": time.Now().Add(time.Hour).Unix()})
	unreachable, _ := jwt.Sign(otherKey, "k", map[string]any{"iss": "http://127.0.0.1:1", "sub": Subject("ns", "sa"), "aud": WorkloadIdentityAudience, "exp": time.Now().Add(time.Hour).Unix()})
	wrongSub, _, _ := is.Mint("ns", "other", WorkloadIdentityAudience, time.Hour)
	wrongAud, _, _ := is.Mint("ns", "sa", "api://other", time.Hour)

	form := func(kv ...string) url.Values {
		v := url.Values{"grant_type": {"client_credentials"}, "scope": {"https://vault.test/.default"}}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				v.Del(kv[i])
			} else {
				v.Set(kv[i], kv[i+1])
			}
		}
		return v
	}
	assertion := func(a string) url.Values {
		return form("client_id", "wi", "client_assertion_type", jwtBearer, "client_assertion", a)
	}
	cases := []struct {
		fixture string
		vars    map[string]string
		status  int
		form    url.Values
	}{
		{"invalid-client-secret", map[string]string{"client_id": "sp"}, 401, form("client_id", "sp", "client_secret", "nope")},
		{"application-not-found", map[string]string{"client_id": "ghost", "tenant": "t1"}, 400, form("client_id", "ghost", "client_secret", "x")},
		{"unsupported-grant-type", map[string]string{"grant_type": "password"}, 400, form("grant_type", "password", "client_id", "sp")},
		{"missing-parameter", map[string]string{"parameter": "grant_type"}, 400, form("grant_type", "", "client_id", "sp")},
		{"missing-parameter", map[string]string{"parameter": "client_id"}, 400, form("client_secret", "s3cret")},
		{"missing-parameter", map[string]string{"parameter": "scope"}, 400, form("scope", "", "client_id", "sp", "client_secret", "s3cret")},
		{"scope-without-default", map[string]string{"scope": "https://vault.test"}, 400, form("scope", "https://vault.test", "client_id", "sp", "client_secret", "s3cret")},
		{"invalid-scope", map[string]string{"scope": "a/.default b/.default"}, 400, form("scope", "a/.default b/.default", "client_id", "sp", "client_secret", "s3cret")},
		{"missing-client-credential", nil, 400, form("client_id", "sp")},
		{"invalid-client-assertion-type", nil, 400, form("client_id", "wi", "client_assertion", "x", "client_assertion_type", "other")},
		{"assertion-malformed", nil, 400, assertion("not.a.jwt")},
		{"assertion-issuer-mismatch", map[string]string{"issuer": "https://elsewhere"}, 400, assertion(otherIssuer)},
		{"assertion-signature-invalid", nil, 401, assertion(forged)},
		{"assertion-time-range", nil, 400, assertion(expired)},
		{"assertion-subject-mismatch", map[string]string{"subject": Subject("ns", "other")}, 400, assertion(wrongSub)},
		{"assertion-audience-mismatch", map[string]string{"audience": "api://other"}, 400, assertion(wrongAud)},
		{"issuer-discovery-failed", nil, 400, assertion(unreachable)},
	}
	served := map[string]bool{}
	for _, c := range cases {
		resp, err := http.PostForm(srv.URL+"/t1/oauth2/v2.0/token", c.form)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var got struct {
			Description string `json:"error_description"`
			Trace       string `json:"trace_id"`
			Correlation string `json:"correlation_id"`
			Timestamp   string `json:"timestamp"`
		}
		_ = json.Unmarshal(raw, &got)
		vars := map[string]string{"trace_id": got.Trace, "correlation_id": got.Correlation, "timestamp": got.Timestamp, "authority": "https://login.test"}
		for k, v := range c.vars {
			vars[k] = v
		}
		if c.fixture == "issuer-discovery-failed" {
			// The cause is the Go HTTP client's own text: take it from the answer.
			cause, _, _ := strings.Cut(strings.TrimPrefix(got.Description, "AADSTS50166: Request to External OIDC endpoint failed: "), "\r\nTrace ID:")
			vars["cause"] = cause
		}
		want, err := fixtures.Render(fixtures.Entra, c.fixture, vars)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != c.status || string(raw) != string(want) {
			t.Errorf("%s: HTTP %d %s\nwant HTTP %d %s", c.fixture, resp.StatusCode, raw, c.status, want)
		}
		served[c.fixture] = true
	}
	names, err := fixtures.Names(fixtures.Entra)
	if err != nil || len(names) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, name := range names {
		notM := false
		for _, n := range notModelled {
			notM = notM || n == name
		}
		if !served[name] && !notM {
			t.Errorf("fixture %s is neither served by the token service nor listed as not modelled", name)
		}
	}
}

package entra

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"akv-csi-provider/e2e/internal/jwt"
)

func post(t *testing.T, srv *httptest.Server, tenant string, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := http.PostForm(srv.URL+"/"+tenant+"/oauth2/v2.0/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func TestAssertionChecks(t *testing.T) {
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
	ts.AddApp(App{Tenant: "t1", ClientID: "wi", Federated: []FederatedCredential{{Issuer: is.URL, Subject: Subject("ns", "sa"), Audiences: []string{WorkloadIdentityAudience}}}})
	ts.AddApp(App{Tenant: "t1", ClientID: "sp", Secrets: []string{"s3cret"}})

	good, _, _ := is.Mint("ns", "sa", WorkloadIdentityAudience, time.Hour)
	expired, _, _ := is.Mint("ns", "sa", WorkloadIdentityAudience, -time.Minute)
	forged, _ := is.Forge("ns", "sa", WorkloadIdentityAudience, time.Hour)
	otherKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherIssuer, _ := jwt.Sign(otherKey, "k", map[string]any{"iss": "https://elsewhere", "sub": Subject("ns", "sa"), "aud": WorkloadIdentityAudience, "exp": time.Now().Add(time.Hour).Unix()})
	wrongSub, _, _ := is.Mint("ns", "other", WorkloadIdentityAudience, time.Hour)
	wrongAud, _, _ := is.Mint("ns", "sa", "api://other", time.Hour)

	assertion := func(a string) url.Values {
		return url.Values{"grant_type": {"client_credentials"}, "client_id": {"wi"}, "scope": {"https://vault.test/.default"},
			"client_assertion_type": {jwtBearer}, "client_assertion": {a}}
	}
	cases := []struct {
		name   string
		form   url.Values
		status int
		code   int
	}{
		{"good assertion", assertion(good), 200, 0},
		{"expired", assertion(expired), 400, 700024},
		{"forged signature", assertion(forged), 401, 50013},
		{"unknown issuer", assertion(otherIssuer), 400, 700211},
		{"wrong subject", assertion(wrongSub), 400, 700213},
		{"wrong audience", assertion(wrongAud), 400, 700212},
		{"malformed", assertion("not.a.jwt"), 400, 50027},
		{"good secret", url.Values{"grant_type": {"client_credentials"}, "client_id": {"sp"}, "scope": {"https://vault.test/.default"}, "client_secret": {"s3cret"}}, 200, 0},
		{"wrong secret", url.Values{"grant_type": {"client_credentials"}, "client_id": {"sp"}, "scope": {"https://vault.test/.default"}, "client_secret": {"nope"}}, 401, 7000215},
		{"unknown app", url.Values{"grant_type": {"client_credentials"}, "client_id": {"ghost"}, "scope": {"https://vault.test/.default"}, "client_secret": {"x"}}, 400, 700016},
		{"scope without /.default", url.Values{"grant_type": {"client_credentials"}, "client_id": {"sp"}, "scope": {"https://vault.test"}, "client_secret": {"s3cret"}}, 400, 1002012},
	}
	for _, c := range cases {
		status, body := post(t, srv, "t1", c.form)
		if status != c.status {
			t.Errorf("%s: HTTP %d, want %d (%v)", c.name, status, c.status, body)
			continue
		}
		if c.code == 0 {
			tok, _ := body["access_token"].(string)
			p, err := ts.VerifyAccessToken(tok, "https://vault.test")
			if err != nil || p.Tenant != "t1" {
				t.Errorf("%s: issued token does not verify: %v %+v", c.name, err, p)
			}
			if _, err := ts.VerifyAccessToken(tok, "https://other.test"); err == nil {
				t.Errorf("%s: token accepted for another resource", c.name)
			}
			continue
		}
		desc, _ := body["error_description"].(string)
		if !strings.HasPrefix(desc, "AADSTS") || !strings.Contains(desc, "AADSTS"+itoa(c.code)+":") {
			t.Errorf("%s: %q, want AADSTS%d", c.name, desc, c.code)
		}
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// An identity-binding token (audience api://AKSIdentityBinding) is accepted by an app whose
// federated credential lists that audience, refused by one federated for workload identity
// only, and the outcome records the assertion's claims.
func TestIdentityBindingAudience(t *testing.T) {
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
	ts.AddApp(App{Tenant: "t1", ClientID: "wi", Federated: []FederatedCredential{{Issuer: is.URL, Subject: Subject("ns", "sa"), Audiences: []string{WorkloadIdentityAudience}}}})
	ts.AddApp(App{Tenant: "t1", ClientID: "ib", Federated: []FederatedCredential{{Issuer: is.URL, Subject: Subject("ns", "sa"), Audiences: []string{IdentityBindingAudience}}}})
	tok, _, err := is.Mint("ns", "sa", IdentityBindingAudience, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	form := func(client string) url.Values {
		return url.Values{"grant_type": {"client_credentials"}, "client_id": {client}, "scope": {"https://vault.test/.default"},
			"client_assertion_type": {jwtBearer}, "client_assertion": {tok}}
	}
	if status, body := post(t, srv, "t1", form("ib")); status != 200 {
		t.Errorf("identity-binding app: HTTP %d (%v), want 200", status, body)
	}
	if status, body := post(t, srv, "t1", form("wi")); status != 400 || !strings.Contains(body["error_description"].(string), "AADSTS700212:") {
		t.Errorf("workload-identity app: HTTP %d (%v), want 400 AADSTS700212", status, body)
	}
	out := ts.Outcomes()
	if len(out) != 2 {
		t.Fatalf("%d outcomes, want 2", len(out))
	}
	want := AssertionClaims{Issuer: is.URL, Subject: Subject("ns", "sa"), Audiences: []string{IdentityBindingAudience}}
	for _, o := range out {
		if o.Assertion.Issuer != want.Issuer || o.Assertion.Subject != want.Subject || strings.Join(o.Assertion.Audiences, ",") != IdentityBindingAudience {
			t.Errorf("%s: recorded claims %+v, want %+v", o.ClientID, o.Assertion, want)
		}
	}
	if out[0].Code != 0 || out[1].Code != 700212 {
		t.Errorf("codes %d, %d, want 0, 700212", out[0].Code, out[1].Code)
	}
}

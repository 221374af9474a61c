// Package entra is a Microsoft Entra ID look-alike for tests: the OAuth 2.0 v2 token endpoint
// with client secrets and federated credentials (workload identity, and AKS identity binding
// through the token proxy stand-in of package tokenproxy). A client assertion is
// really validated: the issuer must be one the app federates with, the signature is checked
// against the issuer's JWKS fetched through OIDC discovery, then time range, subject and
// audience. Errors carry the AADSTS codes Entra uses.
package entra

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"akv-csi-provider/e2e/internal/fixtures"
	"akv-csi-provider/e2e/internal/jwt"
)

// WorkloadIdentityAudience is the audience of tokens exchanged for Entra tokens.
const WorkloadIdentityAudience = "api://AzureADTokenExchange"

// IdentityBindingAudience is the audience of the service account tokens of AKS identity binding
// (useAzureTokenProxy), which reach Entra through the cluster's token proxy. An app accepts them
// when one of its federated credentials lists this audience (the audience check is per
// credential: an app federated only for WorkloadIdentityAudience refuses them with AADSTS700212).
const IdentityBindingAudience = "api://AKSIdentityBinding"

const jwtBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// FederatedCredential is a trust on an external issuer's subject, as on an app registration.
type FederatedCredential struct {
	Issuer    string
	Subject   string
	Audiences []string
}

// App is an app registration (or user-assigned identity) in a tenant.
type App struct {
	Tenant    string
	ClientID  string
	Secrets   []string
	Federated []FederatedCredential
}

// Outcome records one token request: who asked and what Entra said.
type Outcome struct {
	Tenant   string
	ClientID string
	Grant    string // "client_secret" or "client_assertion"
	Status   int
	Code     int // AADSTS code, 0 on success
	// Assertion is what a client assertion claimed (zero for client secrets and for an
	// assertion that does not parse).
	Assertion AssertionClaims
}

// AssertionClaims are the claims of a client assertion Entra matched against the app's
// federated credentials.
type AssertionClaims struct {
	Issuer    string
	Subject   string
	Audiences []string
}

// TokenService is the token endpoint. Serve it over TLS at the cloud's activeDirectoryEndpoint.
type TokenService struct {
	// Authority is the base URL clients use, e.g. https://login.localhost:1234
	Authority string
	Lifetime  time.Duration

	key *rsa.PrivateKey
	kid string

	mu       sync.Mutex
	apps     map[string]*App // tenant/clientID
	outcomes []Outcome
	issued   []string
	client   *http.Client
}

// NewTokenService creates a token service with a fresh signing key. client fetches issuers'
// discovery documents and keys (loopback only in tests).
func NewTokenService(authority string, client *http.Client) (*TokenService, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	return &TokenService{
		Authority: strings.TrimRight(authority, "/"),
		Lifetime:  time.Hour,
		key:       key,
		kid:       "entra-key-1",
		apps:      map[string]*App{},
		client:    client,
	}, nil
}

// TrustIssuerRoots makes the service fetch issuers' discovery documents and keys over HTTPS
// verified against roots, for an issuer with its own CA such as a kube-apiserver
// (--service-account-issuer https://127.0.0.1:<port>).
func (t *TokenService) TrustIssuerRoots(roots *x509.CertPool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
	}}
}

// AddApp registers an app.
func (t *TokenService) AddApp(a App) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.apps[a.Tenant+"/"+a.ClientID] = &a
}

// Outcomes returns the token requests seen so far.
func (t *TokenService) Outcomes() []Outcome {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.outcomes)
}

// Issued returns every access token handed out.
func (t *TokenService) Issued() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.issued)
}

// Issue mints an access token for clientID in tenant for resource, without a request
// (the harness uses it to seed the vault as an administrator).
func (t *TokenService) Issue(tenant, clientID, resource string) (string, time.Time, error) {
	exp := time.Now().Add(t.Lifetime)
	now := time.Now().Unix()
	tok, err := jwt.Sign(t.key, t.kid, map[string]any{
		"iss":   t.Authority + "/" + tenant + "/v2.0",
		"aud":   strings.TrimRight(resource, "/"),
		"tid":   tenant,
		"appid": clientID,
		"azp":   clientID,
		"oid":   clientID,
		"sub":   clientID,
		"iat":   now,
		"nbf":   now,
		"exp":   exp.Unix(),
		"uti":   randomHex(8),
	})
	if err == nil {
		t.mu.Lock()
		t.issued = append(t.issued, tok)
		t.mu.Unlock()
	}
	return tok, exp, err
}

// Principal is who an access token was issued to.
type Principal struct {
	Tenant   string
	ClientID string
}

// ErrTokenExpired is an access token past its exp.
var ErrTokenExpired = errors.New("token expired")

// AudienceError is an access token for another resource.
type AudienceError struct{ Found, Want string }

func (e *AudienceError) Error() string {
	return fmt.Sprintf("audience %s is not %s", e.Found, e.Want)
}

// VerifyAccessToken checks an access token presented to a resource (signature, expiry, audience).
func (t *TokenService) VerifyAccessToken(token, resource string) (Principal, error) {
	tok, err := jwt.Parse(token)
	if err != nil {
		return Principal{}, err
	}
	if err := tok.Verify(&t.key.PublicKey); err != nil {
		return Principal{}, fmt.Errorf("signature: %w", err)
	}
	if exp, ok := tok.Number("exp"); !ok || time.Now().Unix() >= exp {
		return Principal{}, ErrTokenExpired
	}
	if !slices.Contains(tok.Audiences(), strings.TrimRight(resource, "/")) {
		return Principal{}, &AudienceError{Found: strings.Join(tok.Audiences(), ","), Want: resource}
	}
	return Principal{Tenant: tok.String("tid"), ClientID: tok.String("appid")}, nil
}

// ServeHTTP serves POST /{tenant}/oauth2/v2.0/token.
func (t *TokenService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) != 4 || parts[1] != "oauth2" || parts[2] != "v2.0" || parts[3] != "token" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "the token endpoint only accepts POST", http.StatusMethodNotAllowed)
		return
	}
	tenant := parts[0]
	if err := r.ParseForm(); err != nil {
		t.fail(w, Outcome{Tenant: tenant}, 400, "missing-parameter", map[string]string{"parameter": "grant_type"})
		return
	}
	f := r.PostForm
	out := Outcome{Tenant: tenant, ClientID: f.Get("client_id")}
	if f.Get("grant_type") != "client_credentials" {
		if !f.Has("grant_type") {
			t.fail(w, out, 400, "missing-parameter", map[string]string{"parameter": "grant_type"})
			return
		}
		t.fail(w, out, 400, "unsupported-grant-type", map[string]string{"grant_type": f.Get("grant_type")})
		return
	}
	if out.ClientID == "" {
		t.fail(w, out, 400, "missing-parameter", map[string]string{"parameter": "client_id"})
		return
	}
	scopes := strings.Fields(f.Get("scope"))
	switch {
	case !f.Has("scope"):
		t.fail(w, out, 400, "missing-parameter", map[string]string{"parameter": "scope"})
		return
	case len(scopes) != 1:
		t.fail(w, out, 400, "invalid-scope", map[string]string{"scope": f.Get("scope")})
		return
	case !strings.HasSuffix(scopes[0], "/.default"):
		t.fail(w, out, 400, "scope-without-default", map[string]string{"scope": scopes[0]})
		return
	}
	resource := strings.TrimSuffix(scopes[0], "/.default")
	t.mu.Lock()
	app, ok := t.apps[tenant+"/"+out.ClientID]
	t.mu.Unlock()
	if !ok {
		t.fail(w, out, 400, "application-not-found", map[string]string{"client_id": out.ClientID, "tenant": tenant})
		return
	}
	switch {
	case f.Has("client_secret"):
		out.Grant = "client_secret"
		secret := f.Get("client_secret")
		if !slices.ContainsFunc(app.Secrets, func(s string) bool { return subtle.ConstantTimeCompare([]byte(s), []byte(secret)) == 1 }) {
			t.fail(w, out, 401, "invalid-client-secret", map[string]string{"client_id": out.ClientID})
			return
		}
	case f.Has("client_assertion"):
		out.Grant = "client_assertion"
		if f.Get("client_assertion_type") != jwtBearer {
			t.fail(w, out, 400, "invalid-client-assertion-type", nil)
			return
		}
		if tok, err := jwt.Parse(f.Get("client_assertion")); err == nil {
			out.Assertion = AssertionClaims{Issuer: tok.String("iss"), Subject: tok.String("sub"), Audiences: tok.Audiences()}
		}
		if status, fixture, vars := t.checkAssertion(app, f.Get("client_assertion")); fixture != "" {
			t.fail(w, out, status, fixture, vars)
			return
		}
	default:
		t.fail(w, out, 400, "missing-client-credential", nil)
		return
	}
	tok, exp, err := t.Issue(tenant, out.ClientID, resource)
	if err != nil {
		out.Status = 500
		t.record(out)
		http.Error(w, "signing failed", http.StatusInternalServerError)
		return
	}
	out.Status = 200
	t.record(out)
	secs := int(time.Until(exp).Seconds())
	writeJSON(w, 200, map[string]any{"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": tok})
}

// checkAssertion validates a federated credential's client assertion; it returns the status and
// the Entra error fixture (with its placeholders) of a refusal, no fixture when accepted.
func (t *TokenService) checkAssertion(app *App, assertion string) (int, string, map[string]string) {
	tok, err := jwt.Parse(assertion)
	if err != nil {
		return 400, "assertion-malformed", nil
	}
	iss := tok.String("iss")
	var byIssuer []FederatedCredential
	for _, fc := range app.Federated {
		if fc.Issuer == iss {
			byIssuer = append(byIssuer, fc)
		}
	}
	if len(byIssuer) == 0 {
		return 400, "assertion-issuer-mismatch", map[string]string{"issuer": iss}
	}
	keys, err := t.issuerKeys(iss)
	if err != nil {
		return 400, "issuer-discovery-failed", map[string]string{"cause": err.Error()}
	}
	kid, _ := tok.Header["kid"].(string)
	var verified bool
	for _, k := range keys {
		if k.Kid != kid {
			continue
		}
		if pub, err := k.PublicKey(); err == nil && tok.Verify(pub) == nil {
			verified = true
		}
	}
	if !verified {
		return 401, "assertion-signature-invalid", nil
	}
	now := time.Now().Unix()
	exp, hasExp := tok.Number("exp")
	nbf, hasNbf := tok.Number("nbf")
	if !hasExp || now >= exp || (hasNbf && now+300 < nbf) {
		return 400, "assertion-time-range", nil
	}
	sub := tok.String("sub")
	var bySubject []FederatedCredential
	for _, fc := range byIssuer {
		if fc.Subject == sub {
			bySubject = append(bySubject, fc)
		}
	}
	if len(bySubject) == 0 {
		return 400, "assertion-subject-mismatch", map[string]string{"subject": sub}
	}
	for _, fc := range bySubject {
		for _, aud := range tok.Audiences() {
			if slices.Contains(fc.Audiences, aud) {
				return 0, "", nil
			}
		}
	}
	return 400, "assertion-audience-mismatch", map[string]string{"audience": strings.Join(tok.Audiences(), ",")}
}

// issuerKeys fetches the issuer's JWKS through OIDC discovery, like Entra does.
func (t *TokenService) issuerKeys(issuer string) ([]jwt.JWK, error) {
	var disc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := t.getJSON(strings.TrimRight(issuer, "/")+"/.well-known/openid-configuration", &disc); err != nil {
		return nil, err
	}
	if disc.Issuer != issuer {
		return nil, fmt.Errorf("discovery names issuer %q, not %q", disc.Issuer, issuer)
	}
	var set struct {
		Keys []jwt.JWK `json:"keys"`
	}
	if err := t.getJSON(disc.JWKSURI, &set); err != nil {
		return nil, err
	}
	return set.Keys, nil
}

func (t *TokenService) getJSON(url string, v any) error {
	t.mu.Lock()
	client := t.client
	t.mu.Unlock()
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// fail answers with Entra error fixture name of tests/fixtures/entra-errors: vars fill its
// placeholders, the service adds {trace_id}, {correlation_id}, {timestamp} and {authority}. The
// outcome records the fixture's AADSTS code.
func (t *TokenService) fail(w http.ResponseWriter, out Outcome, status int, name string, vars map[string]string) {
	all := map[string]string{"trace_id": guid(), "correlation_id": guid(), "timestamp": time.Now().UTC().Format("2006-01-02 15:04:05Z"), "authority": t.Authority}
	for k, v := range vars {
		all[k] = v
	}
	body := fixtures.MustRender(fixtures.Entra, name, all)
	var parsed struct {
		Codes []int `json:"error_codes"`
	}
	if err := json.Unmarshal(body, &parsed); err != nil || len(parsed.Codes) == 0 {
		panic(fmt.Sprintf("entra: fixture %s has no error_codes: %v", name, err))
	}
	out.Status, out.Code = status, parsed.Codes[0]
	t.record(out)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func (t *TokenService) record(o Outcome) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.outcomes = append(t.outcomes, o)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func guid() string {
	h := randomHex(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

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
		return Principal{}, errors.New("token expired")
	}
	if !slices.Contains(tok.Audiences(), strings.TrimRight(resource, "/")) {
		return Principal{}, fmt.Errorf("audience %v is not %s", tok.Audiences(), resource)
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
		t.fail(w, Outcome{Tenant: tenant}, 400, "invalid_request", 900144, "The request body must be form encoded.")
		return
	}
	f := r.PostForm
	out := Outcome{Tenant: tenant, ClientID: f.Get("client_id")}
	if f.Get("grant_type") != "client_credentials" {
		t.fail(w, out, 400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type '"+f.Get("grant_type")+"'.")
		return
	}
	if out.ClientID == "" {
		t.fail(w, out, 400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
		return
	}
	scopes := strings.Fields(f.Get("scope"))
	if len(scopes) != 1 || !strings.HasSuffix(scopes[0], "/.default") {
		t.fail(w, out, 400, "invalid_scope", 1002012, "The provided value for scope "+f.Get("scope")+" is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).")
		return
	}
	resource := strings.TrimSuffix(scopes[0], "/.default")
	t.mu.Lock()
	app, ok := t.apps[tenant+"/"+out.ClientID]
	t.mu.Unlock()
	if !ok {
		t.fail(w, out, 400, "unauthorized_client", 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'.", out.ClientID, tenant))
		return
	}
	switch {
	case f.Has("client_secret"):
		out.Grant = "client_secret"
		secret := f.Get("client_secret")
		if !slices.ContainsFunc(app.Secrets, func(s string) bool { return subtle.ConstantTimeCompare([]byte(s), []byte(secret)) == 1 }) {
			t.fail(w, out, 401, "invalid_client", 7000215, fmt.Sprintf("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '%s'.", out.ClientID))
			return
		}
	case f.Has("client_assertion"):
		out.Grant = "client_assertion"
		if f.Get("client_assertion_type") != jwtBearer {
			t.fail(w, out, 400, "invalid_request", 900144, "The request body must contain the following parameter: 'client_assertion_type' equal to '"+jwtBearer+"'.")
			return
		}
		if tok, err := jwt.Parse(f.Get("client_assertion")); err == nil {
			out.Assertion = AssertionClaims{Issuer: tok.String("iss"), Subject: tok.String("sub"), Audiences: tok.Audiences()}
		}
		if status, code, msg := t.checkAssertion(app, f.Get("client_assertion")); code != 0 {
			t.fail(w, out, status, "invalid_client", code, msg)
			return
		}
	default:
		t.fail(w, out, 400, "invalid_client", 7000218, "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
		return
	}
	tok, exp, err := t.Issue(tenant, out.ClientID, resource)
	if err != nil {
		t.fail(w, out, 500, "server_error", 50000, "signing failed")
		return
	}
	out.Status = 200
	t.record(out)
	secs := int(time.Until(exp).Seconds())
	writeJSON(w, 200, map[string]any{"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": tok})
}

// checkAssertion validates a federated credential's client assertion; code 0 means accepted.
func (t *TokenService) checkAssertion(app *App, assertion string) (int, int, string) {
	tok, err := jwt.Parse(assertion)
	if err != nil {
		return 400, 50027, "JWT token is invalid or malformed."
	}
	iss := tok.String("iss")
	var byIssuer []FederatedCredential
	for _, fc := range app.Federated {
		if fc.Issuer == iss {
			byIssuer = append(byIssuer, fc)
		}
	}
	if len(byIssuer) == 0 {
		return 400, 700211, fmt.Sprintf("No matching federated identity record found for presented assertion issuer '%s'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.", iss)
	}
	keys, err := t.issuerKeys(iss)
	if err != nil {
		return 400, 50166, fmt.Sprintf("Request to External OIDC endpoint failed: %v", err)
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
		return 401, 50013, "Assertion failed signature validation."
	}
	now := time.Now().Unix()
	exp, hasExp := tok.Number("exp")
	nbf, hasNbf := tok.Number("nbf")
	if !hasExp || now >= exp || (hasNbf && now+300 < nbf) {
		return 400, 700024, "Client assertion is not within its valid time range."
	}
	sub := tok.String("sub")
	var bySubject []FederatedCredential
	for _, fc := range byIssuer {
		if fc.Subject == sub {
			bySubject = append(bySubject, fc)
		}
	}
	if len(bySubject) == 0 {
		return 400, 700213, fmt.Sprintf("No matching federated identity record found for presented assertion subject '%s'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.", sub)
	}
	for _, fc := range bySubject {
		for _, aud := range tok.Audiences() {
			if slices.Contains(fc.Audiences, aud) {
				return 0, 0, ""
			}
		}
	}
	return 400, 700212, fmt.Sprintf("No matching federated identity record found for presented assertion audience '%s'. Please check your federated identity credential Subject, Audience and Issuer against the presented assertion.", strings.Join(tok.Audiences(), ","))
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

func (t *TokenService) fail(w http.ResponseWriter, out Outcome, status int, errName string, code int, description string) {
	out.Status, out.Code = status, code
	t.record(out)
	trace, corr := guid(), guid()
	writeJSON(w, status, map[string]any{
		"error":             errName,
		"error_description": fmt.Sprintf("AADSTS%d: %s Trace ID: %s Correlation ID: %s Timestamp: %s", code, description, trace, corr, time.Now().UTC().Format("2006-01-02 15:04:05Z")),
		"error_codes":       []int{code},
		"timestamp":         time.Now().UTC().Format("2006-01-02 15:04:05Z"),
		"trace_id":          trace,
		"correlation_id":    corr,
		"error_uri":         t.Authority + "/error?code=" + fmt.Sprint(code),
	})
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

// Package kvemu is a Key Vault data-plane emulator for end-to-end tests: secrets, keys and
// certificates over HTTPS, with Key Vault's challenge authentication (401 + WWW-Authenticate
// naming the authority and resource), access tokens verified against the token service,
// api-version checks, paged version lists with nextLink, and Key Vault's error bodies.
//
// The harness seeds it through Microsoft's Go SDK clients and the provider reads it through
// Microsoft's Rust SDK, so its wire format is checked from both sides.
package kvemu

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Verifier checks an access token presented for resource and returns who it was issued to.
// A *TokenError says why a token was refused in Key Vault's terms; any other error is a token
// whose signature cannot be checked (Key Vault's AKV10046).
type Verifier func(token, resource string) (tenant, clientID string, err error)

// Reasons of a TokenError: each is one of Key Vault's 401 answers.
const (
	TokenExpired       = "expired"        // [TokenExpired]
	TokenWrongAudience = "wrong-audience" // AKV10022
)

// TokenError is a refused token: Reason (TokenExpired, TokenWrongAudience) and, for a wrong
// audience, the audience Found.
type TokenError struct {
	Reason string
	Found  string
}

func (e *TokenError) Error() string { return "token refused: " + e.Reason + " " + e.Found }

// Options configure the emulator.
type Options struct {
	// DNSSuffix without port: vault "kv1" answers at kv1.<DNSSuffix>.
	DNSSuffix string
	// Resource named in the challenge and required as the token audience (https://<suffix>).
	Resource string
	// Authority (https://host:port) named in the challenge, followed by /<tenant>.
	Authority string
	Verify    Verifier
	// PageSize caps every version list page (Key Vault's own maximum is 25).
	PageSize int
}

// APIVersions are the api-version values accepted; anything else is a 400 as in Key Vault.
var APIVersions = []string{"7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01", "2026-04-01"}

// Request is one request the emulator answered.
type Request struct {
	Vault      string
	Method     string
	Path       string
	APIVersion string
	ClientID   string
	Status     int
}

// Server is the emulator. It is an http.Handler; serve it over TLS.
type Server struct {
	opts Options

	mu       sync.Mutex
	vaults   map[string]*vault
	requests []Request
	clock    int64
}

// New creates an emulator with no vaults.
func New(opts Options) *Server {
	if opts.PageSize <= 0 || opts.PageSize > 25 {
		opts.PageSize = 25
	}
	return &Server{opts: opts, vaults: map[string]*vault{}}
}

// AddVault creates an empty vault owned by tenant.
func (s *Server) AddVault(name, tenant string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vaults[strings.ToLower(name)] = &vault{tenant: tenant, secrets: map[string]*object{}, keys: map[string]*object{}, certs: map[string]*object{}}
}

// Requests returns the requests answered so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// now returns a strictly increasing Unix time, so versions created in the same second still
// have distinct, ordered "created" attributes (as they would a second apart in Key Vault).
func (s *Server) now() int64 {
	t := time.Now().Unix()
	if t <= s.clock {
		t = s.clock + 1
	}
	s.clock = t
	return t
}

// SecretValues returns every secret value stored in any vault, certificate-backed ones too (for
// scanning logs for leaks).
func (s *Server) SecretValues() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, v := range s.vaults {
		for _, o := range v.secrets {
			for _, ver := range o.versions {
				if ver.value != "" {
					out = append(out, ver.value)
				}
			}
		}
	}
	return out
}

type vault struct {
	tenant  string
	secrets map[string]*object
	keys    map[string]*object
	certs   map[string]*object
	// networkDenial, when set, is the 403 body answered after authentication (DenyNetwork).
	networkDenial []byte
}

type object struct {
	versions []*version // in creation order
}

func (o *object) find(id string) *version {
	for _, v := range o.versions {
		if strings.EqualFold(v.id, id) {
			return v
		}
	}
	return nil
}

func (o *object) latest() *version { return o.versions[len(o.versions)-1] }

type version struct {
	id               string
	created, updated int64
	enabled          bool
	nbf, exp         *int64
	contentType      string
	tags             map[string]string
	managed          bool

	value    string         // secret value
	keyID    string         // for a certificate's secret and certificate: "<name>/<version>" of the key
	jwk      map[string]any // key: public JWK without kid
	keyOps   []string
	private  any            // key: private key (for certificates)
	cer      []byte         // certificate: DER of the leaf
	policy   map[string]any // certificate policy
	x509Subj string
}

func newVersionID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

var nameRe = regexp.MustCompile(`^[0-9a-zA-Z-]{1,127}$`)

type ctx struct {
	w        http.ResponseWriter
	r        *http.Request
	base     string // https://host[:port]
	vault    *vault
	name     string
	status   int
	clientID string
}

func (c *ctx) json(status int, v any) {
	c.status = status
	c.w.Header().Set("Content-Type", "application/json; charset=utf-8")
	c.w.Header().Set("x-ms-keyvault-service-version", "1.9.0.0")
	c.w.WriteHeader(status)
	_ = json.NewEncoder(c.w).Encode(v)
}

func (c *ctx) fail(status int, code, message, inner string) {
	e := map[string]any{"code": code, "message": message}
	if inner != "" {
		e["innererror"] = map[string]any{"code": inner}
	}
	c.json(status, map[string]any{"error": e})
}

// ServeHTTP authenticates the request, checks api-version and dispatches it.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	hostname := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		hostname = h
	}
	c := &ctx{w: w, r: r, base: "https://" + host}
	vaultName, ok := strings.CutSuffix(strings.ToLower(hostname), "."+s.opts.DNSSuffix)
	apiVersion := r.URL.Query().Get("api-version")
	defer func() {
		s.mu.Lock()
		s.requests = append(s.requests, Request{Vault: vaultName, Method: r.Method, Path: r.URL.Path, APIVersion: apiVersion, ClientID: c.clientID, Status: c.status})
		s.mu.Unlock()
	}()
	s.mu.Lock()
	v := s.vaults[vaultName]
	s.mu.Unlock()
	if !ok || v == nil {
		c.fail(404, "VaultNotFound", fmt.Sprintf("No vault answers at %s.", hostname), "")
		return
	}
	c.vault = v
	if apiVersion == "" {
		c.fixture(400, "api-version-missing", nil)
		return
	}
	if !slices.Contains(APIVersions, apiVersion) {
		c.fixture(400, "api-version-unsupported", map[string]string{"api_version": apiVersion, "latest": "2025-07-01"})
		return
	}
	challenge := fmt.Sprintf(`Bearer authorization="%s/%s", resource="%s"`, s.opts.Authority, v.tenant, s.opts.Resource)
	token, isBearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !isBearer || token == "" {
		w.Header().Set("WWW-Authenticate", challenge)
		c.fixture(401, "unauthorized-missing-token", nil)
		return
	}
	tenant, clientID, err := s.opts.Verify(token, s.opts.Resource)
	if err != nil {
		w.Header().Set("WWW-Authenticate", challenge)
		var refused *TokenError
		switch {
		case errors.As(err, &refused) && refused.Reason == TokenExpired:
			c.fixture(401, "unauthorized-token-expired", nil)
		case errors.As(err, &refused) && refused.Reason == TokenWrongAudience:
			c.fixture(401, "unauthorized-wrong-audience", map[string]string{"expected": s.opts.Resource, "found": refused.Found})
		default:
			// Key Vault names the JWT header whose signing key it could not find.
			header, _, _ := strings.Cut(token, ".")
			if !strings.Contains(token, ".") {
				header = ""
			}
			c.fixture(401, "unauthorized-unknown-signing-key", map[string]string{"jwt_header": header})
		}
		return
	}
	if tenant != v.tenant {
		w.Header().Set("WWW-Authenticate", challenge)
		c.fixture(401, "unauthorized-wrong-issuer", map[string]string{
			"expected": s.opts.Authority + "/" + v.tenant + "/", "found": s.opts.Authority + "/" + tenant + "/"})
		return
	}
	c.clientID = clientID
	s.mu.Lock()
	denial := v.networkDenial
	s.mu.Unlock()
	if denial != nil {
		// Key Vault checks the network after authenticating (the firewall's message names the caller).
		c.raw(403, denial)
		return
	}

	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) == 1 && parts[0] == "secrets" && r.Method == http.MethodGet {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.listSecrets(c)
		return
	}
	if len(parts) < 2 || !nameRe.MatchString(parts[1]) {
		c.fail(400, "BadParameter", "The request URI is not valid for Key Vault: "+r.URL.Path, "")
		return
	}
	c.name = parts[1]
	rest := parts[2:]
	s.mu.Lock()
	defer s.mu.Unlock()
	switch parts[0] {
	case "secrets":
		s.secrets(c, rest)
	case "keys":
		s.keysRoute(c, rest)
	case "certificates":
		s.certificates(c, rest)
	default:
		c.fail(400, "BadParameter", "Unknown collection "+parts[0], "")
	}
}

func (c *ctx) decode(v any) bool {
	if err := json.NewDecoder(c.r.Body).Decode(v); err != nil {
		c.fail(400, "BadParameter", "The request body is not valid JSON: "+err.Error(), "")
		return false
	}
	return true
}

// attributes is the JSON shape of object attributes in requests and responses.
type attributes struct {
	Enabled *bool  `json:"enabled,omitempty"`
	NBF     *int64 `json:"nbf,omitempty"`
	Exp     *int64 `json:"exp,omitempty"`
}

func (v *version) apply(a *attributes) {
	if a == nil {
		return
	}
	if a.Enabled != nil {
		v.enabled = *a.Enabled
	}
	if a.NBF != nil {
		v.nbf = a.NBF
	}
	if a.Exp != nil {
		v.exp = a.Exp
	}
}

func (v *version) attributesJSON() map[string]any {
	a := map[string]any{
		"enabled":         v.enabled,
		"created":         v.created,
		"updated":         v.updated,
		"recoveryLevel":   "Recoverable+Purgeable",
		"recoverableDays": 90,
	}
	if v.nbf != nil {
		a["nbf"] = *v.nbf
	}
	if v.exp != nil {
		a["exp"] = *v.exp
	}
	return a
}

func tagsOrEmpty(t map[string]string) map[string]string {
	if t == nil {
		return map[string]string{}
	}
	return t
}

// listVersions answers GET /<kind>/<name>/versions with paging through $skiptoken.
func (s *Server) listVersions(c *ctx, kind string, o *object, item func(*version) map[string]any) {
	page := s.opts.PageSize
	if m := c.r.URL.Query().Get("maxresults"); m != "" {
		n, err := strconv.Atoi(m)
		if err != nil || n < 1 || n > 25 {
			c.fail(400, "BadParameter", "Invalid maxresults: it must be an integer between 1 and 25.", "")
			return
		}
		page = min(page, n)
	}
	skip := 0
	if t := c.r.URL.Query().Get("$skiptoken"); t != "" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			c.fail(400, "BadParameter", "Invalid $skiptoken.", "")
			return
		}
		skip = n
	}
	// Key Vault lists versions in no particular order: sort by version id, which is random.
	sorted := slices.Clone(o.versions)
	slices.SortFunc(sorted, func(a, b *version) int { return strings.Compare(a.id, b.id) })
	value := []map[string]any{}
	for i := skip; i < len(sorted) && i < skip+page; i++ {
		value = append(value, item(sorted[i]))
	}
	var next any
	if skip+page < len(sorted) {
		link := fmt.Sprintf("%s/%s/%s/versions?api-version=%s&$skiptoken=%d", c.base, kind, c.name, c.r.URL.Query().Get("api-version"), skip+page)
		if m := c.r.URL.Query().Get("maxresults"); m != "" {
			link += "&maxresults=" + m
		}
		next = link
	}
	c.json(200, map[string]any{"value": value, "nextLink": next})
}

// notFound answers Key Vault's 404 for object c.name of kind (secret, key, certificate).
func notFound(c *ctx, kind string) {
	c.fixture(404, kind+"-not-found", map[string]string{"name": c.name})
}

// pick returns the version the path names after the object name (rest: none for the latest, or
// the version id), answering 404 itself.
func pick(c *ctx, o *object, rest []string, kind string) *version {
	if o == nil || len(o.versions) == 0 {
		notFound(c, kind)
		return nil
	}
	if len(rest) == 0 {
		return o.latest()
	}
	id := rest[0]
	v := o.find(id)
	if v == nil {
		c.fixture(404, kind+"-not-found", map[string]string{"name": c.name + "/" + id})
	}
	return v
}

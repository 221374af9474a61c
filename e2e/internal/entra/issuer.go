package entra

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"akv-csi-provider/e2e/internal/jwt"
)

// Issuer plays a cluster's service account token issuer: it mints projected service account
// tokens and publishes its keys through OIDC discovery on loopback, as a cluster's issuer does.
type Issuer struct {
	URL string
	key *rsa.PrivateKey
	kid string
	srv *http.Server

	mu     sync.Mutex
	minted []string
}

// Minted returns every token minted or forged so far (to check none reaches a log).
func (i *Issuer) Minted() []string {
	i.mu.Lock()
	defer i.mu.Unlock()
	return slices.Clone(i.minted)
}

func (i *Issuer) remember(tok string) string {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.minted = append(i.minted, tok)
	return tok
}

// StartIssuer serves discovery and JWKS on 127.0.0.1 over plain HTTP.
func StartIssuer() (*Issuer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	is := &Issuer{URL: "http://" + ln.Addr().String(), key: key, kid: "sa-key-1"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, map[string]any{
			"issuer":                                is.URL,
			"jwks_uri":                              is.URL + "/openid/v1/jwks",
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("GET /openid/v1/jwks", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, 200, map[string]any{"keys": []jwt.JWK{jwt.PublicJWK(is.kid, &key.PublicKey)}})
	})
	is.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = is.srv.Serve(ln) }()
	return is, nil
}

// Close stops serving.
func (i *Issuer) Close() { _ = i.srv.Close() }

// Subject is the subject a cluster gives a service account's tokens.
func Subject(namespace, serviceAccount string) string {
	return fmt.Sprintf("system:serviceaccount:%s:%s", namespace, serviceAccount)
}

// Mint returns a projected service account token as kubelet would get it for a pod.
func (i *Issuer) Mint(namespace, serviceAccount, audience string, ttl time.Duration) (string, time.Time, error) {
	exp := time.Now().Add(ttl).Truncate(time.Second)
	tok, err := jwt.Sign(i.key, i.kid, i.claims(namespace, serviceAccount, audience, exp))
	return i.remember(tok), exp, err
}

// Forge returns a token with the same claims as Mint but signed with another key that has the
// same key id: only a signature check tells it apart.
func (i *Issuer) Forge(namespace, serviceAccount, audience string, ttl time.Duration) (string, error) {
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	tok, err := jwt.Sign(other, i.kid, i.claims(namespace, serviceAccount, audience, time.Now().Add(ttl)))
	return i.remember(tok), err
}

func (i *Issuer) claims(namespace, serviceAccount, audience string, exp time.Time) map[string]any {
	now := time.Now().Unix()
	return map[string]any{
		"iss": i.URL,
		"sub": Subject(namespace, serviceAccount),
		"aud": []string{audience},
		"iat": now,
		"nbf": now,
		"exp": exp.Unix(),
		"kubernetes.io": map[string]any{
			"namespace":      namespace,
			"serviceaccount": map[string]any{"name": serviceAccount, "uid": "0d3c2e5a-5b7e-4a57-9c43-6f2f1b6f3a10"},
		},
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

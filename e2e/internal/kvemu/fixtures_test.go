package kvemu

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"akv-csi-provider/e2e/internal/fixtures"
)

// notModelled are the Key Vault error fixtures the emulator has no fault for (the Rust fake
// serves them): it has no permission model (access policy, RBAC) and no throttling, and it
// serves disabled certificates.
var notModelled = []string{"certificate-disabled", "forbidden-by-access-policy", "forbidden-by-rbac", "throttled"}

// Every Key Vault error the emulator answers is a fixture of tests/fixtures/keyvault-errors,
// byte for byte after substitution, and every fixture is served (or listed in notModelled).
func TestEveryKeyVaultErrorIsAFixture(t *testing.T) {
	kv := New(Options{DNSSuffix: "vault.test", Resource: "https://vault.test", Authority: "https://login.test",
		Verify: func(token, resource string) (string, string, error) {
			switch token {
			case "good":
				return "t1", "app", nil
			case "stranger":
				return "t2", "app", nil
			case "expired":
				return "", "", &TokenError{Reason: TokenExpired}
			case "management":
				return "", "", &TokenError{Reason: TokenWrongAudience, Found: "https://management.test"}
			}
			return "", "", errors.New("bad token")
		}})
	kv.AddVault("kv1", "t1")
	srv := httptest.NewServer(kv)
	t.Cleanup(srv.Close)
	do := func(method, path, token, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Host = "kv1.vault.test"
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	const api = "?api-version=2025-07-01"
	if status, _ := do("PUT", "/secrets/off"+api, "good", `{"value":"v","attributes":{"enabled":false}}`); status != 200 {
		t.Fatalf("seed secret: %d", status)
	}
	if status, _ := do("POST", "/keys/off/create"+api, "good", `{"kty":"EC","attributes":{"enabled":false}}`); status != 200 {
		t.Fatalf("seed key: %d", status)
	}
	if status, _ := do("PUT", "/secrets/on"+api, "good", `{"value":"v"}`); status != 200 {
		t.Fatalf("seed secret: %d", status)
	}

	served := map[string]bool{}
	check := func(fixture string, vars map[string]string, wantStatus, status int, body string) {
		t.Helper()
		want, err := fixtures.Render(fixtures.KeyVault, fixture, vars)
		if err != nil {
			t.Fatal(err)
		}
		if status != wantStatus || body != string(want) {
			t.Errorf("%s: HTTP %d %s\nwant HTTP %d %s", fixture, status, body, wantStatus, want)
		}
		served[fixture] = true
	}
	cases := []struct {
		fixture      string
		vars         map[string]string
		status       int
		method, path string
		token        string
	}{
		{"unauthorized-missing-token", nil, 401, "GET", "/secrets/on" + api, ""},
		{"unauthorized-unknown-signing-key", map[string]string{"jwt_header": "eyJhbGciOiJSUzI1NiJ9"}, 401, "GET", "/secrets/on" + api, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"},
		{"unauthorized-unknown-signing-key", map[string]string{"jwt_header": ""}, 401, "GET", "/secrets/on" + api, "made-up"},
		{"unauthorized-token-expired", nil, 401, "GET", "/secrets/on" + api, "expired"},
		{"unauthorized-wrong-audience", map[string]string{"expected": "https://vault.test", "found": "https://management.test"}, 401, "GET", "/secrets/on" + api, "management"},
		{"unauthorized-wrong-issuer", map[string]string{"expected": "https://login.test/t1/", "found": "https://login.test/t2/"}, 401, "GET", "/secrets/on" + api, "stranger"},
		{"api-version-missing", nil, 400, "GET", "/secrets/on", "good"},
		{"api-version-unsupported", map[string]string{"api_version": "1999-01-01", "latest": "2025-07-01"}, 400, "GET", "/secrets/on?api-version=1999-01-01", "good"},
		{"secret-not-found", map[string]string{"name": "nope"}, 404, "GET", "/secrets/nope" + api, "good"},
		{"secret-not-found", map[string]string{"name": "on/0123abcd"}, 404, "GET", "/secrets/on/0123abcd" + api, "good"},
		{"key-not-found", map[string]string{"name": "nope"}, 404, "GET", "/keys/nope" + api, "good"},
		{"certificate-not-found", map[string]string{"name": "nope"}, 404, "GET", "/certificates/nope" + api, "good"},
		{"secret-disabled", nil, 403, "GET", "/secrets/off" + api, "good"},
		{"key-disabled", nil, 403, "GET", "/keys/off" + api, "good"},
	}
	for _, c := range cases {
		status, body := do(c.method, c.path, c.token, "")
		check(c.fixture, c.vars, c.status, status, body)
	}
	for _, fixture := range []string{ForbiddenByConnection, ForbiddenByFirewall} {
		if err := kv.DenyNetwork("kv1", fixture); err != nil {
			t.Fatal(err)
		}
		status, body := do("GET", "/secrets/on"+api, "good", "")
		check(fixture, nil, 403, status, body)
	}

	names, err := fixtures.Names(fixtures.KeyVault)
	if err != nil || len(names) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, name := range names {
		if !served[name] && !slices.Contains(notModelled, name) {
			t.Errorf("fixture %s is neither served by the emulator nor listed as not modelled", name)
		}
		if served[name] && slices.Contains(notModelled, name) {
			t.Errorf("fixture %s is served but listed as not modelled", name)
		}
	}
}

package kvemu

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// The network refusals are served byte for byte from the shared fixtures, after authentication.
func TestDenyNetworkServesTheSharedFixture(t *testing.T) {
	kv := New(Options{DNSSuffix: "vault.test", Resource: "https://vault.test", Authority: "https://login.test",
		Verify: func(token, resource string) (string, string, error) {
			if token != "good" {
				return "", "", errors.New("bad token")
			}
			return "t1", "app", nil
		}})
	kv.AddVault("kv1", "t1")
	srv := httptest.NewServer(kv)
	t.Cleanup(srv.Close)
	get := func(token string) (int, string) {
		req, _ := http.NewRequest("GET", srv.URL+"/secrets/a?api-version=2025-07-01", nil)
		req.Host = "kv1.vault.test"
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, fixture := range []string{ForbiddenByConnection, ForbiddenByFirewall} {
		want, err := ErrorBody(fixture)
		if err != nil {
			t.Fatal(err)
		}
		if err := kv.DenyNetwork("kv1", fixture); err != nil {
			t.Fatal(err)
		}
		if status, _ := get(""); status != 401 {
			t.Errorf("%s: unauthenticated: %d, want the challenge first", fixture, status)
		}
		if status, body := get("good"); status != 403 || body != string(want) {
			t.Errorf("%s: %d %s", fixture, status, body)
		}
	}
	if err := kv.DenyNetwork("kv1", ""); err != nil {
		t.Fatal(err)
	}
	if status, _ := get("good"); status != 404 {
		t.Errorf("lifted: %d, want 404 for a missing secret", status)
	}
}

package kvemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func newTestServer(t *testing.T) (*httptest.Server, func(method, path, token, body string) (*http.Response, map[string]any)) {
	t.Helper()
	kv := New(Options{DNSSuffix: "vault.test", Resource: "https://vault.test", Authority: "https://login.test", PageSize: 2,
		Verify: func(token, resource string) (string, string, error) {
			if token != "good" || resource != "https://vault.test" {
				return "", "", errors.New("bad token")
			}
			return "t1", "app", nil
		}})
	kv.AddVault("kv1", "t1")
	srv := httptest.NewServer(kv)
	t.Cleanup(srv.Close)
	do := func(method, path, token, body string) (*http.Response, map[string]any) {
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
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp, out
	}
	return srv, do
}

func TestChallengeAndAPIVersion(t *testing.T) {
	_, do := newTestServer(t)
	resp, _ := do("GET", "/secrets/a?api-version=2025-07-01", "", "")
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer authorization="https://login.test/t1", resource="https://vault.test"` {
		t.Errorf("challenge: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	if resp, _ := do("GET", "/secrets/a?api-version=2025-07-01", "forged", ""); resp.StatusCode != 401 {
		t.Errorf("bad token: %d", resp.StatusCode)
	}
	if resp, body := do("GET", "/secrets/a?api-version=1999-01-01", "good", ""); resp.StatusCode != 400 {
		t.Errorf("unknown api-version: %d %v", resp.StatusCode, body)
	}
	if resp, body := do("GET", "/secrets/a?api-version=2025-07-01", "good", ""); resp.StatusCode != 404 || body["error"].(map[string]any)["code"] != "SecretNotFound" {
		t.Errorf("missing secret: %d %v", resp.StatusCode, body)
	}
}

func TestVersionsArePagedAndDisabledIsForbidden(t *testing.T) {
	_, do := newTestServer(t)
	var ids []string
	for i := range 5 {
		_, body := do("PUT", "/secrets/s?api-version=2025-07-01", "good", fmt.Sprintf(`{"value":"v%d"}`, i))
		ids = append(ids, body["id"].(string))
	}
	seen := map[string]bool{}
	path := "/secrets/s/versions?api-version=2025-07-01"
	for pages := 0; path != ""; pages++ {
		if pages > 5 {
			t.Fatal("too many pages")
		}
		_, body := do("GET", path, "good", "")
		for _, v := range body["value"].([]any) {
			item := v.(map[string]any)
			if _, hasValue := item["value"]; hasValue {
				t.Error("a version list item carries the value")
			}
			seen[item["id"].(string)] = true
		}
		path = ""
		if next, ok := body["nextLink"].(string); ok {
			path = next[strings.Index(next, "/secrets"):]
		}
	}
	if len(seen) != 5 {
		t.Errorf("listed %d versions", len(seen))
	}
	last := ids[4][strings.LastIndex(ids[4], "/")+1:]
	do("PATCH", "/secrets/s/"+last+"?api-version=2025-07-01", "good", `{"attributes":{"enabled":false}}`)
	resp, body := do("GET", "/secrets/s?api-version=2025-07-01", "good", "")
	if resp.StatusCode != 403 || body["error"].(map[string]any)["innererror"].(map[string]any)["code"] != "SecretDisabled" {
		t.Errorf("disabled latest: %d %v", resp.StatusCode, body)
	}
}

func TestSecretListIsPagedWithTagsAndNoValues(t *testing.T) {
	_, do := newTestServer(t) // PageSize 2
	do("PUT", "/secrets/b-two?api-version=2025-07-01", "good", `{"value":"old"}`)
	do("PUT", "/secrets/b-two?api-version=2025-07-01", "good", `{"value":"x","tags":{"team":"pay"},"contentType":"text/plain"}`)
	do("PUT", "/secrets/a-one?api-version=2025-07-01", "good", `{"value":"x","attributes":{"enabled":false}}`)
	do("PUT", "/secrets/C-three?api-version=2025-07-01", "good", `{"value":"x"}`)
	if resp, _ := do("GET", "/secrets?api-version=2025-07-01", "", ""); resp.StatusCode != 401 {
		t.Errorf("unauthenticated list: %d", resp.StatusCode)
	}
	if resp, _ := do("GET", "/secrets?api-version=2025-07-01&maxresults=26", "good", ""); resp.StatusCode != 400 {
		t.Errorf("maxresults 26: %d", resp.StatusCode)
	}
	var ids []string
	items := map[string]map[string]any{}
	path := "/secrets?api-version=2025-07-01"
	pages := 0
	for ; path != ""; pages++ {
		if pages > 5 {
			t.Fatal("too many pages")
		}
		resp, body := do("GET", path, "good", "")
		if resp.StatusCode != 200 {
			t.Fatalf("list: %d %v", resp.StatusCode, body)
		}
		for _, v := range body["value"].([]any) {
			item := v.(map[string]any)
			if _, hasValue := item["value"]; hasValue {
				t.Error("a secret list item carries the value")
			}
			id := item["id"].(string)
			ids = append(ids, id[strings.LastIndex(id, "/")+1:])
			items[id[strings.LastIndex(id, "/")+1:]] = item
		}
		path = ""
		if next, ok := body["nextLink"].(string); ok {
			path = next[strings.Index(next, "/secrets"):]
		}
	}
	if pages != 2 || strings.Join(ids, ",") != "a-one,b-two,C-three" {
		t.Errorf("%d pages, ids %v (want 2 pages, ids without version, by name)", pages, ids)
	}
	if tags := items["b-two"]["tags"].(map[string]any); tags["team"] != "pay" || items["b-two"]["contentType"] != "text/plain" {
		t.Errorf("b-two: latest version's tags and contentType expected: %v", items["b-two"])
	}
	if items["a-one"]["attributes"].(map[string]any)["enabled"] != false {
		t.Errorf("a-one: disabled expected: %v", items["a-one"])
	}
}

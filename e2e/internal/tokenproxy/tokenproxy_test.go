package tokenproxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"akv-csi-provider/e2e/internal/pki"
)

// The expected names were computed independently in Python:
// "a" + base64.b32hexencode(hashlib.sha256(b"identity-binding" + id).digest()).decode().rstrip("=").lower() + ".ests.aks"
func TestServerNameForCluster(t *testing.T) {
	for id, want := range map[string]string{
		"6543210fedcba9876543210f": "ajvpouph2u7rsj4ltdkmb91oin0aff4cc4bsns100sbptg6upk900.ests.aks",
		"abc":                      "ar47lgcnhtn52tohpbtporqbc5cjfjah6gmfdpri09hpae1b0v370.ests.aks",
	} {
		if got := ServerNameForCluster(id); got != want {
			t.Errorf("ServerNameForCluster(%q) = %q, want %q", id, got, want)
		}
	}
	if got := APIServerSAN("6543210fedcba9876543210f"); got != "hcp-kubernetes.6543210fedcba9876543210f.svc.cluster.local" {
		t.Errorf("APIServerSAN = %q", got)
	}
}

// start runs the proxy for cluster "abc" in front of an upstream that echoes what it got.
func start(t *testing.T) (*Proxy, *pki.Authority, string) {
	t.Helper()
	ca, err := pki.NewAuthority("test cluster CA")
	if err != nil {
		t.Fatal(err)
	}
	name := ServerNameForCluster("abc")
	conf, err := ca.ServerTLS(name)
	if err != nil {
		t.Fatal(err)
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTeapot)
		_, _ = io.WriteString(w, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("Content-Type")+" "+string(body))
	}))
	t.Cleanup(upstream.Close)
	p, err := Start(Options{ServerName: name, Certificate: conf.Certificates[0], Upstream: upstream.URL + "/", Client: upstream.Client()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, ca, name
}

// client dials the proxy's port whatever the host, with serverName as SNI.
func client(p *Proxy, ca *pki.Authority, serverName string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: serverName, MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, strings.TrimPrefix(p.URL, "https://"))
		},
	}}
}

func TestForwardsUnderItsOwnNameOnly(t *testing.T) {
	p, ca, name := start(t)
	resp, err := client(p, ca, name).Post("https://kubernetes.default.svc.cluster.local:8443/tenant-1/oauth2/v2.0/token?x=1&y=%2F",
		"application/x-www-form-urlencoded", strings.NewReader("client_id=a&client_assertion=b"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTeapot || resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("answer %d %q, want the upstream's 418 application/json", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if want := "POST /tenant-1/oauth2/v2.0/token?x=1&y=%2F application/x-www-form-urlencoded client_id=a&client_assertion=b"; string(body) != want {
		t.Errorf("upstream saw %q, want %q", body, want)
	}
	reqs := p.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests recorded, want 1", len(reqs))
	}
	want := Request{SNI: name, Host: "kubernetes.default.svc.cluster.local:8443", Method: "POST", PathQuery: "/tenant-1/oauth2/v2.0/token?x=1&y=%2F", ContentType: "application/x-www-form-urlencoded", Status: http.StatusTeapot}
	if reqs[0] != want {
		t.Errorf("recorded %+v, want %+v", reqs[0], want)
	}

	for _, other := range []string{"kubernetes.default.svc.cluster.local", "aother.ests.aks"} {
		_, err := client(p, ca, other).Get("https://" + other + "/")
		if err == nil || !strings.Contains(err.Error(), "unrecognized name") {
			t.Errorf("server name %s: %v, want the handshake to fail with unrecognized_name", other, err)
		}
	}
	// A client that does not trust the cluster CA: the certificate was served, then refused.
	otherCA, _ := pki.NewAuthority("other CA")
	if _, err := client(p, otherCA, name).Get("https://" + name + "/"); err == nil {
		t.Error("a client trusting another CA accepted the proxy's certificate")
	}
	if len(p.Requests()) != 1 {
		t.Errorf("%d requests recorded after the refused handshakes, want still 1", len(p.Requests()))
	}
	deadline := time.Now().Add(2 * time.Second)
	var hs []Handshake
	for time.Now().Before(deadline) {
		if hs = p.Handshakes(); len(hs) == 4 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(hs) != 4 {
		t.Fatalf("handshakes %+v, want 4", hs)
	}
	if hs[0] != (Handshake{SNI: name, Served: true}) {
		t.Errorf("first handshake %+v", hs[0])
	}
	for i, other := range []string{"kubernetes.default.svc.cluster.local", "aother.ests.aks"} {
		if h := hs[i+1]; h.SNI != other || h.Served || h.Err == "" {
			t.Errorf("handshake for %s recorded as %+v", other, h)
		}
	}
	if h := hs[3]; h.SNI != name || !h.Served || h.Err == "" {
		t.Errorf("handshake refused by the client recorded as %+v", h)
	}
}

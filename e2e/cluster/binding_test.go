//go:build cluster

package cluster

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"akv-csi-provider/e2e/cluster/controlplane"
	"akv-csi-provider/e2e/cluster/stack"
	"akv-csi-provider/e2e/internal/entra"
	"akv-csi-provider/e2e/internal/harness"
	"akv-csi-provider/e2e/internal/tokenproxy"
)

// bindingSPC creates a SecretProviderClass of identity binding (useAzureTokenProxy) for the
// binding identity, with one secret.
func bindingSPC(t *testing.T, name, object string) {
	t.Helper()
	createSPC(t, stack.BindingNamespace, name, spcParams(harness.Objects(harness.Object("objectName", object, "objectType", "secret")),
		map[string]string{"clientID": stack.BindingClientID, "useAzureTokenProxy": "true"}), nil)
}

// proxyRequestsSince returns the token proxy's requests after the first n.
func proxyRequestsSince(n int) []tokenproxy.Request { return st.TokenProxy.Requests()[n:] }

// bindingOutcomesSince returns Entra's answers to the binding identity after the first n
// outcomes of all.
func bindingOutcomesSince(n int) []entra.Outcome {
	var out []entra.Outcome
	for _, o := range st.Azure.Tokens.Outcomes()[n:] {
		if o.ClientID == stack.BindingClientID {
			out = append(out, o)
		}
	}
	return out
}

// wantProxyRequests checks that every request the proxy got came with the computed server name
// and the proxy URL's Host, was the tenant's token POST, and that Entra answered status.
func wantProxyRequests(t *testing.T, reqs []tokenproxy.Request, status int) {
	t.Helper()
	if len(reqs) == 0 {
		t.Fatal("the token proxy received no request during the mount")
	}
	want := tokenproxy.Request{
		SNI:         tokenproxy.ServerNameForCluster(controlplane.ClusterID),
		Host:        fmt.Sprintf("%s:%d", controlplane.APIServerHost, st.TokenProxy.Port),
		Method:      http.MethodPost,
		PathQuery:   "/" + harness.Tenant + "/oauth2/v2.0/token",
		ContentType: "application/x-www-form-urlencoded",
		Status:      status,
	}
	for _, r := range reqs {
		if r != want {
			t.Errorf("the token proxy saw %+v, want %+v", r, want)
		}
	}
	t.Logf("token proxy saw %d request(s): SNI %s, Host %s, %s %s, Entra answered %d", len(reqs), want.SNI, want.Host, want.Method, want.PathQuery, status)
}

// wantBindingAssertions checks that each of Entra's answers is to a client assertion the API
// server issued for sub with audience api://AKSIdentityBinding, with the AADSTS code.
func wantBindingAssertions(t *testing.T, outs []entra.Outcome, sub string, code int) {
	t.Helper()
	if len(outs) == 0 {
		t.Fatalf("Entra saw no token request of %s", stack.BindingClientID)
	}
	for _, o := range outs {
		a := o.Assertion
		if o.Grant != "client_assertion" || o.Code != code || a.Issuer != st.CP.URL || a.Subject != sub || !slices.Equal(a.Audiences, []string{entra.IdentityBindingAudience}) {
			t.Errorf("Entra's outcome %+v, want a client assertion of %s issued by %s with audience [%s], AADSTS code %d", o, sub, st.CP.URL, entra.IdentityBindingAudience, code)
		}
	}
	t.Logf("Entra answered %d assertion(s) of %s, issuer %s, audience %s: AADSTS code %d", len(outs), sub, st.CP.URL, entra.IdentityBindingAudience, code)
}

// A pod whose SecretProviderClass sets useAzureTokenProxy mounts through the token proxy: the
// provider reads the cluster id from the real API server's certificate, computes the proxy's
// server name, and sends the pod's api://AKSIdentityBinding token (from the CSIDriver's
// tokenRequests, set through the driver's chart) to the proxy, which hands it to Entra.
func TestIdentityBindingThroughTokenProxy(t *testing.T) {
	for _, a := range st.ProviderArgs {
		if strings.HasPrefix(a, "--sni-name") {
			t.Fatalf("the provider runs with %s: the server name must be computed from the API server's certificate", a)
		}
	}
	bindingMount(t, "checkout-0")
}

// bindingMount mounts one secret through identity binding for a pod of the binding service
// account and checks the proxy's and Entra's records, the file and the SPCPS.
func bindingMount(t *testing.T, podName string) {
	ns, sa := stack.BindingNamespace, stack.BindingServiceAccount
	ensureNamespace(t, ns, sa)
	value := randomValue("bound")
	object, spc := "bound-"+podName, "spc-bound-"+podName
	version := setSecret(t, object, value)
	bindingSPC(t, spc, object)
	before := driverErrors(t)
	reqs, outs := len(st.TokenProxy.Requests()), len(st.Azure.Tokens.Outcomes())
	pod := createPod(t, podSpec{namespace: ns, name: podName, serviceAccount: sa, spc: spc})
	mustPublish(t, pod)

	accepted := bindingOutcomesSince(outs)
	wantBindingAssertions(t, accepted, entra.Subject(ns, sa), 0)
	// Every request Entra saw for this identity came through the proxy (the proxy records a
	// request once Entra has answered it).
	eventually(t, rotationPoll, "the token proxy recorded every request Entra answered", func() (bool, string) {
		n := len(proxyRequestsSince(reqs))
		return n >= len(accepted), fmt.Sprintf("%d proxied, %d answered by Entra", n, len(accepted))
	})
	wantProxyRequests(t, proxyRequestsSince(reqs), http.StatusOK)
	if !isMounted(pod) {
		t.Errorf("%s is not a mount point after NodePublishVolume", target(pod))
	}
	if got := readMounted(t, pod, object); got != value {
		t.Errorf("file %s holds %d bytes, not the stored value", object, len(got))
	}
	eventually(t, rotationPoll*3, "the SPCPS records the object version", func() (bool, string) {
		u, err := spcps(t, pod, spc)
		if err != nil {
			return false, err.Error()
		}
		got := spcpsObjects(u)["secret/"+object]
		return got == version, fmt.Sprintf("%s records version %q", u.GetName(), got)
	})
	noNewDriverErrors(t, before)
}

// A pod of another service account asks for the binding identity: the proxy forwards its token,
// Entra refuses it (no federated credential for its subject), the provider answers
// PermissionDenied and nothing is mounted or recorded.
func TestIdentityBindingOtherServiceAccountRefused(t *testing.T) {
	ns := stack.BindingNamespace
	ensureNamespace(t, ns, "stranger")
	setSecret(t, "bound-guarded", randomValue("bound-guarded"))
	bindingSPC(t, "spc-bound-stranger", "bound-guarded")
	reqs, outs := len(st.TokenProxy.Requests()), len(st.Azure.Tokens.Outcomes())
	pod := createPod(t, podSpec{namespace: ns, name: "stranger-0", serviceAccount: "stranger", spc: "spc-bound-stranger"})
	err := publish(t, pod)
	if err == nil {
		t.Fatal("the volume of a pod of service account stranger was published with checkout's identity")
	}
	if !strings.Contains(err.Error(), "PermissionDenied") {
		t.Errorf("NodePublishVolume failed without PermissionDenied: %v", err)
	}
	// AADSTS700213: no federated credential for system:serviceaccount:orders:stranger.
	wantBindingAssertions(t, bindingOutcomesSince(outs), entra.Subject(ns, "stranger"), 700213)
	wantProxyRequests(t, proxyRequestsSince(reqs), http.StatusBadRequest)
	assertNothingMounted(t, pod, "spc-bound-stranger")
}

// The cluster CA file (the materialised kube-root-ca.crt volume) holds another CA, as after a
// wrong rotation: the provider re-reads it, the proxy's certificate is refused, the Mount fails
// with Unavailable naming the proxy and the file, and nothing reaches Entra. (The driver retries
// an Unavailable Mount, so this takes about 14 s.)
func TestIdentityBindingUntrustedClusterCA(t *testing.T) {
	if len(st.TokenProxy.Requests()) == 0 {
		// Run alone: the provider computes the proxy's name at its first identity-binding Mount,
		// with the CA file as it is then; compute it with the cluster's CA first.
		bindingMount(t, "checkout-warm-up")
	}
	var caFile string
	for _, a := range st.ProviderArgs {
		if v, ok := strings.CutPrefix(a, "--token-proxy-ca-file="); ok {
			caFile = v
		}
	}
	if !strings.HasPrefix(caFile, st.Sandbox) {
		t.Fatalf("the provider's --token-proxy-ca-file %q is not the chart's materialised %s volume", caFile, stack.RootCAConfigMap)
	}
	clusterCA, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	other, err := os.ReadFile(st.Azure.CAFile) // a CA, but not the cluster's
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caFile, other, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(caFile, clusterCA, 0o644); err != nil {
			t.Errorf("restoring the cluster CA file: %v", err)
		}
	})
	// An identity of its own: with TokenReview, the access token an earlier pod of the binding
	// service account got is shared with every pod of it, and no proxy connection is needed.
	const untrustedClientID = "77777777-8888-4999-aaaa-cccccccccccc"
	ns, sa := stack.BindingNamespace, "checkout-canary"
	st.Azure.Tokens.AddApp(entra.App{Tenant: harness.Tenant, ClientID: untrustedClientID, Federated: []entra.FederatedCredential{{
		Issuer: st.CP.URL, Subject: entra.Subject(ns, sa), Audiences: []string{entra.IdentityBindingAudience},
	}}})
	ensureNamespace(t, ns, sa)
	setSecret(t, "bound-untrusted", randomValue("bound-untrusted"))
	createSPC(t, ns, "spc-bound-untrusted", spcParams(harness.Objects(harness.Object("objectName", "bound-untrusted", "objectType", "secret")),
		map[string]string{"clientID": untrustedClientID, "useAzureTokenProxy": "true"}), nil)
	hs, outs := len(st.TokenProxy.Handshakes()), len(st.Azure.Tokens.Outcomes())
	reqs := len(st.TokenProxy.Requests())
	pod := createPod(t, podSpec{namespace: ns, name: "checkout-untrusted", serviceAccount: sa, spc: "spc-bound-untrusted"})
	err = publish(t, pod)
	if err == nil {
		t.Fatal("the volume was published although the cluster CA file does not hold the proxy's CA")
	}
	// The message names the proxy, the TLS cause, the flag to check and the CA file.
	for _, want := range []string{"code = Unavailable", "identity-binding token proxy", "certificate rejected", "check --sni-name", caFile + " is the cluster's CA"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("NodePublishVolume failed without %q: %v", want, err)
		}
	}
	t.Logf("NodePublishVolume: %v", err)
	name := tokenproxy.ServerNameForCluster(controlplane.ClusterID)
	// The proxy records a handshake when it ends; the provider's refusal is long back by now.
	eventually(t, rotationPoll, "the token proxy recorded the refused handshake", func() (bool, string) {
		n := len(st.TokenProxy.Handshakes()) - hs
		return n > 0, fmt.Sprintf("%d handshakes", n)
	})
	refused := 0
	for _, h := range st.TokenProxy.Handshakes()[hs:] {
		if h.SNI == name && h.Served && h.Err != "" {
			refused++
		} else {
			t.Errorf("handshake %+v, want the proxy's certificate served for %s and refused by the provider", h, name)
		}
	}
	if refused == 0 {
		t.Error("the provider made no handshake with the token proxy")
	}
	t.Logf("%d handshake(s) with SNI %s: certificate served, refused by the provider", refused, name)
	if n := len(proxyRequestsSince(reqs)); n != 0 {
		t.Errorf("the token proxy received %d request(s) over connections the provider should have refused", n)
	}
	if n := len(bindingOutcomesSince(outs)); n != 0 {
		t.Errorf("Entra saw %d token request(s) of the binding identity", n)
	}
	for _, o := range st.Azure.Tokens.Outcomes()[outs:] {
		if o.ClientID == untrustedClientID {
			t.Errorf("Entra saw a token request of %s: %+v", untrustedClientID, o)
		}
	}
	assertNothingMounted(t, pod, "spc-bound-untrusted")
}

// assertNothingMounted checks that a refused pod has no mount, no files and no SPCPS.
func assertNothingMounted(t *testing.T, pod *corev1.Pod, spc string) {
	t.Helper()
	if isMounted(pod) {
		t.Errorf("%s is still mounted after the refusal", target(pod))
	}
	if entries, err := os.ReadDir(target(pod)); err == nil && len(entries) > 0 {
		t.Errorf("%s holds %d entries after the refusal", target(pod), len(entries))
	}
	if _, err := spcps(t, pod, spc); !apierrors.IsNotFound(err) {
		t.Errorf("a SecretProviderClassPodStatus exists for the refused pod (err %v)", err)
	}
}

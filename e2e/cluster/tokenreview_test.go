//go:build cluster

package cluster

// TokenReview (issue 17): the provider resolves a workload-identity Mount's service account
// token through the real API server's TokenReview API, with the RBAC our chart grants its
// ServiceAccount (stack.ProviderAPIAccess gives the host process a kubeconfig of that
// ServiceAccount), and pods of one service account then share one identity: one Entra token
// request and one Key Vault read per object within --latest-cache-window. A token the API
// server does not vouch for, or one of another pod or service account than the Mount's, is
// refused with PermissionDenied and gets nothing from the shared caches; without the RBAC the
// provider falls back to one identity per token.

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	secretsstore "sigs.k8s.io/secrets-store-csi-driver/pkg/secrets-store"

	"akv-csi-provider/e2e/cluster/controlplane"
	"akv-csi-provider/e2e/cluster/stack"
	"akv-csi-provider/e2e/internal/entra"
	"akv-csi-provider/e2e/internal/harness"
	"akv-csi-provider/e2e/internal/jwt"
)

// The TokenReview scenarios' workloads: service account frontend of namespace reviews has a
// workload identity of its own (so Entra's and the vault's records of it are these scenarios'
// alone); backend is another service account of the namespace; batch has another identity, for
// the provider without RBAC.
const (
	reviewNamespace       = "reviews"
	reviewServiceAccount  = "frontend"
	reviewOtherAccount    = "backend"
	reviewClientID        = "a1a1a1a1-0000-4000-8000-0000000000a1"
	noRBACServiceAccount  = "batch"
	noRBACClientID        = "b2b2b2b2-0000-4000-8000-0000000000b2"
	noRBACProviderAccount = "akv-no-rbac"
	reviewWindow          = 60 * time.Second
)

// Volume context keys of kubelet and the driver.
const (
	attrTokens        = "csi.storage.k8s.io/serviceAccount.tokens"
	reviewFailMessage = "TokenReview"
)

var (
	reviewMu     sync.Mutex
	reviewMinted []string
)

// reviewTokens are the tokens these scenarios minted or forged, and every token the control
// plane issued to the stack's processes (kubeconfigs, automounted service account volumes), for
// the leak scan of main_test.go.
func reviewTokens() []string {
	reviewMu.Lock()
	out := slices.Clone(reviewMinted)
	reviewMu.Unlock()
	if st != nil && st.CP != nil {
		out = append(out, st.CP.Tokens()...)
	}
	return out
}

func remember(tok string) string {
	reviewMu.Lock()
	reviewMinted = append(reviewMinted, tok)
	reviewMu.Unlock()
	return tok
}

// registerReviewApps registers the scenarios' workload identities with Entra: each federates
// with the API server's issuer for one service account, audience api://AzureADTokenExchange.
func registerReviewApps() {
	for _, a := range []struct{ clientID, sa string }{{reviewClientID, reviewServiceAccount}, {noRBACClientID, noRBACServiceAccount}} {
		st.Azure.Tokens.AddApp(entra.App{Tenant: harness.Tenant, ClientID: a.clientID, Federated: []entra.FederatedCredential{{
			Issuer: st.CP.URL, Subject: entra.Subject(reviewNamespace, a.sa), Audiences: []string{entra.WorkloadIdentityAudience},
		}}})
	}
}

// --- the provider's arguments and processes ---

// setFlag returns args with --name=value: the existing --name=... replaced in place, else
// appended (the binary refuses a flag given twice).
func setFlag(args []string, name, value string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		if strings.HasPrefix(a, name+"=") || a == name {
			out[i] = name + "=" + value
			return out
		}
	}
	return append(out, name+"="+value)
}

func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v, true
		}
	}
	return "", false
}

func socketOf(args []string) string {
	v, _ := flagValue(args, "--endpoint")
	return strings.TrimPrefix(v, "unix://")
}

// requireChartTokenReview fails the test unless the stack's provider runs as the chart means it
// to: the rendered args ask for --token-review=auto, the pod would get its service account
// token (so the harness gave the host process a kubeconfig of that ServiceAccount), and that
// ServiceAccount may create TokenReviews (the chart's ClusterRole and binding).
func requireChartTokenReview(t *testing.T) {
	t.Helper()
	if !slices.Contains(st.ProviderArgs, "--token-review=auto") {
		t.Fatalf("our chart's DaemonSet does not render --token-review=auto (args %q): the provider reviews no token", st.ProviderArgs)
	}
	if st.ProviderKubeconfig == "" {
		t.Fatalf("our chart renders --token-review=auto, but its pod gets no service account token (automountServiceAccountToken false on the pod or on %s): in a cluster the provider would find no in-cluster config and review nothing", st.ProviderServiceAccount)
	}
	requireReviewRBAC(t, st.ProviderServiceAccount)
}

// requireReviewRBAC fails the test unless service account ns/name may create TokenReviews.
func requireReviewRBAC(t *testing.T, nsName string) {
	t.Helper()
	ns, name, _ := strings.Cut(nsName, "/")
	var last string
	// RBAC objects reach the authorizer's cache within a moment of their creation.
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		sar, err := st.CP.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx(t), &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User:               "system:serviceaccount:" + ns + ":" + name,
			Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Group: "authentication.k8s.io", Resource: "tokenreviews", Verb: "create"},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SubjectAccessReview: %v", err)
		}
		if sar.Status.Allowed {
			return
		}
		last = sar.Status.Reason
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("service account %s may not create tokenreviews.authentication.k8s.io (RBAC: %q): our chart renders no ClusterRole/ClusterRoleBinding granting TokenReview to its ServiceAccount", nsName, last)
}

// chartKubeconfig is a kubeconfig of the chart's ServiceAccount: the stack provider's, or one
// minted here when the chart did not ask for TokenReview.
func chartKubeconfig(t *testing.T) string {
	t.Helper()
	if st.ProviderKubeconfig != "" {
		return st.ProviderKubeconfig
	}
	ns, name, _ := strings.Cut(st.ProviderServiceAccount, "/")
	path := filepath.Join(st.Dir, "chart-sa.kubeconfig")
	if err := st.CP.ServiceAccountKubeconfig(ctx(t), ns, name, path, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	return path
}

// restartStackProvider replaces the stack's provider (the one the driver calls) with our binary
// run with its args and flags set, on the same socket and ports, until the test ends; then one
// with the stack's args takes over again.
func restartStackProvider(t *testing.T, name string, flags map[string]string) {
	t.Helper()
	args := st.ProviderArgs
	for _, k := range slices.Sorted(maps.Keys(flags)) {
		args = setFlag(args, k, flags[k])
	}
	sock := socketOf(st.ProviderArgs)
	st.Provider.Stop()
	_ = os.Remove(sock)
	p, err := st.StartProviderWith("provider-"+name, args)
	if err != nil {
		t.Fatalf("restarting the provider with %v: %v", flags, err)
	}
	st.Provider = p
	t.Cleanup(func() {
		p.Stop()
		_ = os.Remove(sock)
		q, err := st.StartProviderWith("provider-"+name+"-restored", st.ProviderArgs)
		if err != nil {
			t.Errorf("restoring the stack's provider: %v", err)
			return
		}
		st.Provider = q
	})
}

// ownProvider is a provider process of a test's own: the stack provider's args with another
// socket, other ports and the given flags. The driver does not know it; tests call its socket
// with the driver's client package.
type ownProvider struct {
	proc      *controlplane.Process
	socketDir string
	metrics   string
}

func startOwnProvider(t *testing.T, name string, flags map[string]string) *ownProvider {
	t.Helper()
	// Short: a unix socket path has at most 107 bytes.
	dir, err := os.MkdirTemp("", "akvtr-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	healthz, err := controlplane.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metrics, err := controlplane.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	args := setFlag(st.ProviderArgs, "--endpoint", "unix://"+filepath.Join(dir, harness.ProviderName+".sock"))
	args = setFlag(args, "--healthz-port", strconv.Itoa(healthz))
	args = setFlag(args, "--prometheus-port", strconv.Itoa(metrics))
	for _, k := range slices.Sorted(maps.Keys(flags)) {
		args = setFlag(args, k, flags[k])
	}
	p, err := st.StartProviderWith("provider-"+name, args)
	if err != nil {
		t.Fatalf("starting a provider with %v: %v", flags, err)
	}
	t.Cleanup(p.Stop)
	return &ownProvider{proc: p, socketDir: dir, metrics: fmt.Sprintf("http://127.0.0.1:%d/metrics", metrics)}
}

// --- Mount requests as the driver sends them ---

// podTokens asks TokenRequest for the pod's tokens as kubelet does for the driver's CSIDriver
// (one per audience of its tokenRequests, bound to the pod).
func podTokens(t *testing.T, pod *corev1.Pod) map[string]authenticationv1.TokenRequestStatus {
	t.Helper()
	out := map[string]authenticationv1.TokenRequestStatus{}
	for _, aud := range []string{entra.WorkloadIdentityAudience, entra.IdentityBindingAudience} {
		out[aud] = boundToken(t, pod, aud)
	}
	return out
}

// boundToken is a TokenRequest token of the pod's service account bound to the pod.
func boundToken(t *testing.T, pod *corev1.Pod, audience string) authenticationv1.TokenRequestStatus {
	t.Helper()
	tr, err := st.CP.Client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx(t), pod.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:      []string{audience},
			BoundObjectRef: &authenticationv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s bound to pod %s (audience %s): %v", pod.Namespace, pod.Spec.ServiceAccountName, pod.Name, audience, err)
	}
	remember(tr.Status.Token)
	return tr.Status
}

// mountRequest builds the Mount's attributes and secrets exactly as the driver v1.6.0 does for
// the pod's volume of SPC spc: the SPC parameters, then the volume context kubelet sends
// (volumeAttributes, the pod info, ephemeral, the tokens JSON), the tokens also in secrets when
// the CSIDriver has serviceAccountTokenInSecrets (else secrets is "null").
func mountRequest(t *testing.T, pod *corev1.Pod, spc string, params map[string]string, tokens map[string]authenticationv1.TokenRequestStatus) (string, string) {
	t.Helper()
	raw, err := json.Marshal(tokens)
	if err != nil {
		t.Fatal(err)
	}
	attrs := maps.Clone(params)
	maps.Copy(attrs, map[string]string{
		"secretProviderClass":                    spc,
		"csi.storage.k8s.io/pod.name":            pod.Name,
		"csi.storage.k8s.io/pod.namespace":       pod.Namespace,
		"csi.storage.k8s.io/pod.uid":             string(pod.UID),
		"csi.storage.k8s.io/serviceAccount.name": pod.Spec.ServiceAccountName,
		"csi.storage.k8s.io/ephemeral":           "true",
		attrTokens:                               string(raw),
	})
	a, err := json.Marshal(attrs)
	if err != nil {
		t.Fatal(err)
	}
	secrets := harness.NoSecretRef
	if v := tokenInSecrets(t); v != nil && *v {
		secrets = harness.NodePublishSecrets(map[string]string{attrTokens: string(raw)})
	}
	return string(a), secrets
}

// mountVia calls the provider on socketDir through the driver's client package and writes the
// reply into target with the driver's atomic writer.
func mountVia(t *testing.T, socketDir, attrs, secrets, target string) (map[string]string, error) {
	t.Helper()
	b := secretsstore.NewPluginClientBuilder([]string{socketDir})
	defer b.Cleanup()
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := b.Get(c, harness.ProviderName)
	if err != nil {
		t.Fatalf("connecting to the provider in %s: %v", socketDir, err)
	}
	versions, _, err := secretsstore.MountContent(c, client, attrs, secrets, target, harness.FilePermission, nil)
	return versions, err
}

// publishRetrying publishes through the kubelet stand-in, retrying while the driver's
// connection to a just restarted provider comes back (Unavailable).
func publishRetrying(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := publish(t, pod)
		if err == nil {
			return
		}
		if !strings.Contains(err.Error(), "Unavailable") || time.Now().After(deadline) {
			t.Fatalf("publishing the volume of pod %s/%s: %v\n--- driver log:\n%s\n--- provider log:\n%s", pod.Namespace, pod.Name, err, tailLog("driver.log"), tailLog(filepath.Base(st.Provider.Log())))
		}
		time.Sleep(time.Second)
	}
}

// --- what Entra, the vault and the provider's metrics saw ---

// entraRequests returns Entra's answers to clientID after the first n outcomes of all.
func entraRequests(clientID string, n int) []entra.Outcome {
	var out []entra.Outcome
	for _, o := range st.Azure.Tokens.Outcomes()[n:] {
		if o.ClientID == clientID {
			out = append(out, o)
		}
	}
	return out
}

// vaultReads counts the vault's answered GETs of secret name after the first n requests.
func vaultReads(name string, n int) int {
	c := 0
	for _, r := range st.Azure.Vault.Requests()[n:] {
		if r.Method == "GET" && r.Status == 200 && (r.Path == "/secrets/"+name || strings.HasPrefix(r.Path, "/secrets/"+name+"/")) {
			c++
		}
	}
	return c
}

// metric sums the samples of the Prometheus page at url named name whose labels include every
// one of labels (each `key="value"`).
func metric(t *testing.T, url, name string, labels ...string) float64 {
	t.Helper()
	page, err := stack.Metrics(url)
	if err != nil {
		t.Fatalf("reading the provider's metrics at %s: %v", url, err)
	}
	var sum float64
	sc := bufio.NewScanner(strings.NewReader(page))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		series, value, ok := cutLast(line)
		if !ok {
			continue
		}
		n, lbls, _ := strings.Cut(series, "{")
		if n != name {
			continue
		}
		if !allLabels(lbls, labels) {
			continue
		}
		f, err := strconv.ParseFloat(value, 64)
		if err == nil {
			sum += f
		}
	}
	return sum
}

func cutLast(line string) (string, string, bool) {
	i := strings.LastIndexByte(line, ' ')
	if i < 0 {
		return "", "", false
	}
	series, value := strings.TrimSpace(line[:i]), strings.TrimSpace(line[i+1:])
	// An OpenMetrics timestamp after the value.
	if j := strings.LastIndexByte(series, ' '); j > 0 && !strings.Contains(series[j:], "}") {
		series, value = strings.TrimSpace(series[:j]), strings.TrimSpace(series[j+1:])
	}
	return series, value, true
}

func allLabels(lbls string, want []string) bool {
	for _, w := range want {
		if !strings.Contains(lbls, w) {
			return false
		}
	}
	return true
}

// sharedMounts is the stack provider's count of workload-identity Mounts that shared an
// identity (akv_identity_sharing_total{mode="workload_identity",result="shared"}).
func sharedMounts(t *testing.T) float64 {
	t.Helper()
	return metric(t, st.ProviderMetrics, "akv_identity_sharing_total", `mode="workload_identity"`, `result="shared"`)
}

// reviewMetrics is a snapshot of the provider's TokenReview metrics.
type reviewMetrics struct {
	authenticated, unauthenticated, forbidden, unavailable float64
	hits, misses                                           float64
	shared, perToken, refused                              float64
}

func (m reviewMetrics) reviews() float64 {
	return m.authenticated + m.unauthenticated + m.forbidden + m.unavailable
}

func (m reviewMetrics) String() string {
	return fmt.Sprintf("reviews authenticated=%v unauthenticated=%v forbidden=%v unavailable=%v; review cache hit=%v miss=%v; sharing shared=%v per_token=%v refused=%v",
		m.authenticated, m.unauthenticated, m.forbidden, m.unavailable, m.hits, m.misses, m.shared, m.perToken, m.refused)
}

func readReviewMetrics(t *testing.T, url string) reviewMetrics {
	t.Helper()
	r := func(outcome string) float64 {
		return metric(t, url, "akv_token_reviews_total", `outcome="`+outcome+`"`)
	}
	l := func(result string) float64 {
		return metric(t, url, "akv_cache_lookups_total", `cache="token_review"`, `result="`+result+`"`)
	}
	s := func(result string) float64 {
		return metric(t, url, "akv_identity_sharing_total", `mode="workload_identity"`, `result="`+result+`"`)
	}
	return reviewMetrics{
		authenticated: r("authenticated"), unauthenticated: r("unauthenticated"), forbidden: r("forbidden"), unavailable: r("unavailable"),
		hits: l("hit"), misses: l("miss"),
		shared: s("shared"), perToken: s("per_token"), refused: s("refused"),
	}
}

func (m reviewMetrics) minus(o reviewMetrics) reviewMetrics {
	return reviewMetrics{
		authenticated: m.authenticated - o.authenticated, unauthenticated: m.unauthenticated - o.unauthenticated,
		forbidden: m.forbidden - o.forbidden, unavailable: m.unavailable - o.unavailable,
		hits: m.hits - o.hits, misses: m.misses - o.misses,
		shared: m.shared - o.shared, perToken: m.perToken - o.perToken, refused: m.refused - o.refused,
	}
}

// --- the scenarios ---

// Two pods of one service account mount through the driver; then requests shaped like the
// driver's for the first pod, but with a token the API server does not vouch for the Mount's
// pod and service account, are refused with the caches full.
//
// The stack's provider runs with the chart's args (TokenReview through the chart's RBAC) and
// --latest-cache-window=60s for the scenario. The two pods' Mounts share one identity: Entra
// sees one token request for the pair and the vault one read per object, the latest version
// and a pinned one. Then each refusal case calls the provider's socket directly with pod A's
// SPC, after pod A's Mount filled the shared caches: PermissionDenied, nothing written.
func TestTokenReviewSharedIdentity(t *testing.T) {
	requireChartTokenReview(t)
	registerReviewApps()
	ns := reviewNamespace
	ensureNamespace(t, ns, reviewServiceAccount, reviewOtherAccount)
	latestValue, pinnedValue := randomValue("shared-latest"), randomValue("shared-pinned")
	setSecret(t, "shared-latest", latestValue)
	pinned := setSecret(t, "shared-pinned", pinnedValue)
	setSecret(t, "shared-pinned", randomValue("shared-pinned-newer"))
	spc := "spc-shared"
	params := spcParams(harness.Objects(
		harness.Object("objectName", "shared-latest", "objectType", "secret"),
		harness.Object("objectName", "shared-pinned", "objectType", "secret", "objectVersion", pinned),
	), map[string]string{"clientID": reviewClientID})
	createSPC(t, ns, spc, params, nil)

	restartStackProvider(t, "token-review", map[string]string{"--latest-cache-window": reviewWindow.String()})
	before := readReviewMetrics(t, st.ProviderMetrics)
	outs, reqs := len(st.Azure.Tokens.Outcomes()), len(st.Azure.Vault.Requests())
	podA := createPod(t, podSpec{namespace: ns, name: "frontend-a", serviceAccount: reviewServiceAccount, spc: spc})
	podB := createPod(t, podSpec{namespace: ns, name: "frontend-b", serviceAccount: reviewServiceAccount, spc: spc})
	start := time.Now()
	publishRetrying(t, podA)
	publishRetrying(t, podB)
	elapsed := time.Since(start)
	for _, pod := range []*corev1.Pod{podA, podB} {
		if got := readMounted(t, pod, "shared-latest"); got != latestValue {
			t.Errorf("pod %s: shared-latest holds %d bytes, not the latest value", pod.Name, len(got))
		}
		if got := readMounted(t, pod, "shared-pinned"); got != pinnedValue {
			t.Errorf("pod %s: shared-pinned holds %d bytes, not the pinned version's value", pod.Name, len(got))
		}
	}
	t.Run("two pods share one token request and one read per object", func(t *testing.T) {
		if elapsed >= reviewWindow {
			t.Fatalf("the two mounts took %s, longer than the window %s", elapsed, reviewWindow)
		}
		got := entraRequests(reviewClientID, outs)
		if len(got) != 1 || got[0].Status != 200 || got[0].Grant != "client_assertion" || got[0].Assertion.Subject != entra.Subject(ns, reviewServiceAccount) {
			t.Errorf("Entra saw %d token request(s) of %s for the two pods' Mounts: %+v; want one accepted client assertion of %s", len(got), reviewClientID, got, entra.Subject(ns, reviewServiceAccount))
		}
		for _, name := range []string{"shared-latest", "shared-pinned"} {
			if n := vaultReads(name, reqs); n != 1 {
				t.Errorf("the vault answered %d reads of %s for the two pods' Mounts within %s, want 1", n, name, reviewWindow)
			}
		}
		d := readReviewMetrics(t, st.ProviderMetrics).minus(before)
		t.Logf("provider metrics over the two Mounts (and any republish): %s", d)
		if d.authenticated < 2 {
			t.Errorf("akv_token_reviews_total{outcome=\"authenticated\"} grew by %v over two pods' Mounts, want >= 2 (%s)", d.authenticated, d)
		}
		if d.shared < 1 {
			t.Errorf("akv_identity_sharing_total{mode=\"workload_identity\",result=\"shared\"} grew by %v, want >= 1 (%s)", d.shared, d)
		}
		if d.refused != 0 || d.forbidden != 0 || d.unavailable != 0 {
			t.Errorf("refusals or failed reviews during two valid Mounts: %s", d)
		}
	})

	// The refusal cases present pod A's SPC to the provider's socket with a token that must not
	// open pod A's (or its service account's) shared identity.
	aTokens := podTokens(t, podA)
	aToken := aTokens[entra.WorkloadIdentityAudience].Token
	sock := filepath.Dir(socketOf(st.ProviderArgs))
	refuse := func(t *testing.T, pod *corev1.Pod, tokens map[string]authenticationv1.TokenRequestStatus, belongs bool) {
		t.Helper()
		attrs, secrets := mountRequest(t, pod, spc, params, tokens)
		m0 := readReviewMetrics(t, st.ProviderMetrics)
		outs := len(st.Azure.Tokens.Outcomes())
		target := t.TempDir()
		_, err := mountVia(t, sock, attrs, secrets, target)
		if err == nil {
			t.Fatal("the Mount succeeded")
		}
		if s, _ := status.FromError(err); s.Code() != codes.PermissionDenied {
			t.Errorf("the Mount failed with %v, want PermissionDenied", err)
		}
		if !strings.Contains(err.Error(), reviewFailMessage) {
			t.Errorf("the refusal does not name the %s: %v", reviewFailMessage, err)
		}
		if belongs && !strings.Contains(err.Error(), "belongs to") {
			t.Errorf("the refusal does not say whom the token belongs to: %v", err)
		}
		t.Logf("refused: %v", err)
		if entries, err := os.ReadDir(target); err != nil || len(entries) != 0 {
			t.Errorf("the refused Mount left %d entries in its target (err %v)", len(entries), err)
		}
		if got := entraRequests(reviewClientID, outs); len(got) != 0 {
			t.Errorf("the refused Mount reached Entra: %+v", got)
		}
		d := readReviewMetrics(t, st.ProviderMetrics).minus(m0)
		t.Logf("provider metrics over the refused Mount: %s", d)
		if d.refused < 1 {
			t.Errorf("akv_identity_sharing_total{mode=\"workload_identity\",result=\"refused\"} did not grow (%s)", d)
		}
		// (Pods A and B keep being republished by the kubelet stand-in meanwhile, so shared
		// Mounts may be counted too.)
	}
	withWI := func(tok string) map[string]authenticationv1.TokenRequestStatus {
		out := maps.Clone(aTokens)
		s := out[entra.WorkloadIdentityAudience]
		s.Token = remember(tok)
		out[entra.WorkloadIdentityAudience] = s
		return out
	}

	t.Run("refused: pod of another service account presenting pod A's token", func(t *testing.T) {
		podB := createPod(t, podSpec{namespace: ns, name: "backend-b", serviceAccount: reviewOtherAccount, spc: spc})
		refuse(t, podB, aTokens, true)
	})
	t.Run("refused: another pod of the same service account presenting pod A's token", func(t *testing.T) {
		podC := createPod(t, podSpec{namespace: ns, name: "frontend-c", serviceAccount: reviewServiceAccount, spc: spc})
		refuse(t, podC, aTokens, true)
	})
	t.Run("refused: forged signature", func(t *testing.T) {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		forged := resign(t, aToken, key, nil)
		refuse(t, podA, withWI(forged), false)
	})
	t.Run("refused: token for another audience", func(t *testing.T) {
		other := boundToken(t, podA, "other-audience")
		refuse(t, podA, withWI(other.Token), false)
	})
	t.Run("refused: token of a deleted pod", func(t *testing.T) {
		gone := createPod(t, podSpec{namespace: ns, name: "frontend-gone", serviceAccount: reviewServiceAccount, spc: spc})
		tokens := podTokens(t, gone)
		zero := int64(0)
		if err := st.CP.Client.CoreV1().Pods(ns).Delete(ctx(t), gone.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
			t.Fatal(err)
		}
		// The API server's token authenticator looks the bound pod up through its informer
		// cache: wait until it no longer vouches for the token (this review is the test's own,
		// the provider has not seen the token).
		eventually(t, 30*time.Second, "the API server stops authenticating the deleted pod's token", func() (bool, string) {
			r, err := st.CP.Client.AuthenticationV1().TokenReviews().Create(ctx(t), &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{
				Token: tokens[entra.WorkloadIdentityAudience].Token, Audiences: []string{entra.WorkloadIdentityAudience},
			}}, metav1.CreateOptions{})
			if err != nil {
				return false, err.Error()
			}
			return !r.Status.Authenticated, fmt.Sprintf("authenticated=%v error=%q", r.Status.Authenticated, r.Status.Error)
		})
		refuse(t, gone, tokens, false)
	})
	t.Run("refused: expired token signed with the cluster's key", func(t *testing.T) {
		key, err := st.CP.ServiceAccountSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		expired := resign(t, aToken, key, func(c map[string]any) {
			c["iat"] = now.Add(-2 * time.Hour).Unix()
			c["nbf"] = now.Add(-2 * time.Hour).Unix()
			c["exp"] = now.Add(-time.Hour).Unix()
			if k8s, ok := c["kubernetes.io"].(map[string]any); ok {
				if _, ok := k8s["warnafter"]; ok {
					k8s["warnafter"] = now.Add(-90 * time.Minute).Unix()
				}
			}
		})
		// The API server itself refuses it for its expiry alone.
		r, err := st.CP.Client.AuthenticationV1().TokenReviews().Create(ctx(t), &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{
			Token: expired, Audiences: []string{entra.WorkloadIdentityAudience},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Authenticated || !strings.Contains(r.Status.Error, "expire") {
			t.Fatalf("the API server's own review of the expired token: authenticated=%v error=%q, want refused as expired", r.Status.Authenticated, r.Status.Error)
		}
		refuse(t, podA, withWI(expired), false)
	})
	// Pod A's shared identity still serves pod A afterwards.
	t.Run("pod A's own token still mounts", func(t *testing.T) {
		attrs, secrets := mountRequest(t, podA, spc, params, aTokens)
		target := t.TempDir()
		if _, err := mountVia(t, sock, attrs, secrets, target); err != nil {
			t.Fatalf("pod A's own Mount after the refusals: %v", err)
		}
		if b, err := os.ReadFile(filepath.Join(target, "shared-latest")); err != nil || string(b) != latestValue {
			t.Errorf("shared-latest: %d bytes (err %v), not the latest value", len(b), err)
		}
	})
}

// resign returns token's claims (changed by edit) signed with key under the token's own key id.
func resign(t *testing.T, token string, key *rsa.PrivateKey, edit func(map[string]any)) string {
	t.Helper()
	tok, err := jwt.Parse(token)
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := tok.Header["kid"].(string)
	claims := tok.Claims
	if edit != nil {
		edit(claims)
	}
	out, err := jwt.Sign(key, kid, claims)
	if err != nil {
		t.Fatal(err)
	}
	return remember(out)
}

// A provider with --token-review-cache-ttl=3s: a second Mount with the same token within 3 s is
// answered from the review cache (one TokenReview for both); 4 s after the first review the
// token is reviewed again.
func TestTokenReviewCacheExpires(t *testing.T) {
	requireReviewRBAC(t, st.ProviderServiceAccount)
	registerReviewApps()
	ns := reviewNamespace
	ensureNamespace(t, ns, reviewServiceAccount)
	value := randomValue("ttl")
	setSecret(t, "review-ttl", value)
	spc := "spc-review-ttl"
	params := spcParams(harness.Objects(harness.Object("objectName", "review-ttl", "objectType", "secret")), map[string]string{"clientID": reviewClientID})
	createSPC(t, ns, spc, params, nil)
	p := startOwnProvider(t, "review-ttl", map[string]string{
		"--token-review":           "auto",
		"--kubeconfig":             chartKubeconfig(t),
		"--token-review-cache-ttl": "3s",
	})
	pod := createPod(t, podSpec{namespace: ns, name: "frontend-ttl", serviceAccount: reviewServiceAccount, spc: spc})
	attrs, secrets := mountRequest(t, pod, spc, params, podTokens(t, pod))
	mount := func(n int) {
		t.Helper()
		target := t.TempDir()
		if _, err := mountVia(t, p.socketDir, attrs, secrets, target); err != nil {
			t.Fatalf("Mount %d: %v\n--- provider log:\n%s", n, err, controlplane.Tail(p.proc.Log(), 20))
		}
		if b, err := os.ReadFile(filepath.Join(target, "review-ttl")); err != nil || string(b) != value {
			t.Errorf("Mount %d: review-ttl holds %d bytes (err %v), not the stored value", n, len(b), err)
		}
	}
	start := time.Now()
	mount(1)
	firstDone := time.Now()
	mount(2)
	if d := time.Since(start); d >= 3*time.Second {
		t.Fatalf("the first two Mounts took %s: too slow to show the 3 s review cache", d)
	}
	m := readReviewMetrics(t, p.metrics)
	t.Logf("after two Mounts with one token within 3 s: %s", m)
	if m.reviews() != 1 || m.authenticated != 1 {
		t.Errorf("%v TokenReview call(s) (%v authenticated) for two Mounts with one token within 3 s, want 1 authenticated", m.reviews(), m.authenticated)
	}
	if m.hits != 1 || m.misses != 1 {
		t.Errorf("review cache hit=%v miss=%v after two Mounts with one token, want 1 and 1", m.hits, m.misses)
	}
	time.Sleep(time.Until(firstDone.Add(4 * time.Second)))
	mount(3)
	m = readReviewMetrics(t, p.metrics)
	t.Logf("after a third Mount 4 s later: %s", m)
	if m.reviews() != 2 || m.authenticated != 2 {
		t.Errorf("%v TokenReview call(s) (%v authenticated) after a Mount 4 s past the first review with --token-review-cache-ttl=3s, want 2 authenticated", m.reviews(), m.authenticated)
	}
	if m.misses != 2 {
		t.Errorf("review cache miss=%v after the cached review expired, want 2", m.misses)
	}
}

// A provider whose kubeconfig names a service account without the TokenReview role: every
// review is forbidden (403), and Mounts still succeed with today's per-token identity, so two
// pods of one service account make two Entra token requests.
func TestTokenReviewWithoutRBACFallsBack(t *testing.T) {
	registerReviewApps()
	ns := reviewNamespace
	ensureNamespace(t, ns, noRBACServiceAccount)
	ensureNamespace(t, stack.ProviderNamespace, noRBACProviderAccount)
	kubeconfig := filepath.Join(st.Dir, "no-rbac.kubeconfig")
	if err := st.CP.ServiceAccountKubeconfig(ctx(t), stack.ProviderNamespace, noRBACProviderAccount, kubeconfig, time.Hour); err != nil {
		t.Fatal(err)
	}
	value := randomValue("no-rbac")
	setSecret(t, "review-no-rbac", value)
	spc := "spc-review-no-rbac"
	params := spcParams(harness.Objects(harness.Object("objectName", "review-no-rbac", "objectType", "secret")), map[string]string{"clientID": noRBACClientID})
	createSPC(t, ns, spc, params, nil)
	p := startOwnProvider(t, "review-no-rbac", map[string]string{
		"--token-review":        "auto",
		"--kubeconfig":          kubeconfig,
		"--latest-cache-window": reviewWindow.String(),
	})
	outs := len(st.Azure.Tokens.Outcomes())
	for i := range 2 {
		pod := createPod(t, podSpec{namespace: ns, name: fmt.Sprintf("batch-%d", i), serviceAccount: noRBACServiceAccount, spc: spc})
		attrs, secrets := mountRequest(t, pod, spc, params, podTokens(t, pod))
		target := t.TempDir()
		if _, err := mountVia(t, p.socketDir, attrs, secrets, target); err != nil {
			t.Fatalf("Mount of pod %s without TokenReview RBAC: %v\n--- provider log:\n%s", pod.Name, err, controlplane.Tail(p.proc.Log(), 20))
		}
		if b, err := os.ReadFile(filepath.Join(target, "review-no-rbac")); err != nil || string(b) != value {
			t.Errorf("pod %s: review-no-rbac holds %d bytes (err %v), not the stored value", pod.Name, len(b), err)
		}
	}
	got := entraRequests(noRBACClientID, outs)
	accepted := 0
	for _, o := range got {
		if o.Status == 200 {
			accepted++
		}
	}
	if accepted != 2 || len(got) != 2 {
		t.Errorf("Entra saw %d token request(s) (%d accepted) for two pods' Mounts without review, want 2 accepted (one per token): %+v", len(got), accepted, got)
	}
	m := readReviewMetrics(t, p.metrics)
	t.Logf("provider metrics: %s", m)
	if m.forbidden < 1 {
		t.Errorf("akv_token_reviews_total{outcome=\"forbidden\"} = %v, want >= 1 (%s)", m.forbidden, m)
	}
	if m.authenticated != 0 || m.shared != 0 {
		t.Errorf("reviews authenticated or identities shared without the RBAC: %s", m)
	}
	if m.perToken < 1 {
		t.Errorf("akv_identity_sharing_total{mode=\"workload_identity\",result=\"per_token\"} = %v, want >= 1 (%s)", m.perToken, m)
	}
}

// Identity binding (useAzureTokenProxy): the pods' api://AKSIdentityBinding tokens are reviewed
// too, so two pods of one service account share one token request through the token proxy; a
// pod of another service account presenting the first pod's token is refused.
func TestTokenReviewIdentityBindingShares(t *testing.T) {
	requireChartTokenReview(t)
	// An identity of its own, so Entra's and the proxy's records of it are this scenario's.
	const clientID = "77777777-8888-4999-aaaa-dddddddddddd"
	ns, sa, other := stack.BindingNamespace, "checkout-shared", "checkout-other"
	st.Azure.Tokens.AddApp(entra.App{Tenant: harness.Tenant, ClientID: clientID, Federated: []entra.FederatedCredential{{
		Issuer: st.CP.URL, Subject: entra.Subject(ns, sa), Audiences: []string{entra.IdentityBindingAudience},
	}}})
	ensureNamespace(t, ns, sa, other)
	value := randomValue("bound-shared")
	setSecret(t, "bound-shared", value)
	spc := "spc-bound-shared"
	params := spcParams(harness.Objects(harness.Object("objectName", "bound-shared", "objectType", "secret")),
		map[string]string{"clientID": clientID, "useAzureTokenProxy": "true"})
	createSPC(t, ns, spc, params, nil)
	shared := func() float64 {
		return metric(t, st.ProviderMetrics, "akv_identity_sharing_total", `mode="identity_binding"`, `result="shared"`)
	}
	reviewed := func() float64 {
		return metric(t, st.ProviderMetrics, "akv_token_reviews_total", `mode="identity_binding"`, `outcome="authenticated"`)
	}
	shared0, reviewed0 := shared(), reviewed()
	outs, reqs := len(st.Azure.Tokens.Outcomes()), len(st.TokenProxy.Requests())
	podA := createPod(t, podSpec{namespace: ns, name: "checkout-shared-a", serviceAccount: sa, spc: spc})
	podB := createPod(t, podSpec{namespace: ns, name: "checkout-shared-b", serviceAccount: sa, spc: spc})
	mustPublish(t, podA)
	mustPublish(t, podB)
	for _, pod := range []*corev1.Pod{podA, podB} {
		if got := readMounted(t, pod, "bound-shared"); got != value {
			t.Errorf("pod %s: bound-shared holds %d bytes, not the stored value", pod.Name, len(got))
		}
	}
	got := entraRequests(clientID, outs)
	if len(got) != 1 || got[0].Status != 200 || !slices.Equal(got[0].Assertion.Audiences, []string{entra.IdentityBindingAudience}) {
		t.Errorf("Entra saw %d token request(s) of %s for two pods' identity-binding Mounts: %+v; want one accepted assertion with audience %s", len(got), clientID, got, entra.IdentityBindingAudience)
	}
	eventually(t, rotationPoll, "the token proxy recorded the request Entra answered", func() (bool, string) {
		n := len(proxyRequestsSince(reqs))
		return n >= 1, fmt.Sprintf("%d proxied", n)
	})
	if n := len(proxyRequestsSince(reqs)); n != 1 {
		t.Errorf("the token proxy forwarded %d request(s) for two pods of one service account, want 1", n)
	}
	if d := reviewed() - reviewed0; d < 2 {
		t.Errorf("akv_token_reviews_total{mode=\"identity_binding\",outcome=\"authenticated\"} grew by %v over two pods' Mounts, want >= 2", d)
	}
	if d := shared() - shared0; d < 1 {
		t.Errorf("akv_identity_sharing_total{mode=\"identity_binding\",result=\"shared\"} grew by %v, want >= 1", d)
	}

	// A pod of another service account presents pod A's tokens on the provider's socket.
	intruder := createPod(t, podSpec{namespace: ns, name: "checkout-other-0", serviceAccount: other, spc: spc})
	attrs, secrets := mountRequest(t, intruder, spc, params, podTokens(t, podA))
	target := t.TempDir()
	outs = len(st.Azure.Tokens.Outcomes())
	_, err := mountVia(t, filepath.Dir(socketOf(st.ProviderArgs)), attrs, secrets, target)
	if err == nil {
		t.Fatal("a pod of another service account mounted with pod A's identity-binding token")
	}
	if s, _ := status.FromError(err); s.Code() != codes.PermissionDenied || !strings.Contains(err.Error(), reviewFailMessage) || !strings.Contains(err.Error(), "belongs to") {
		t.Errorf("the Mount failed with %v, want PermissionDenied naming the %s and whom the token belongs to", err, reviewFailMessage)
	}
	if entries, err := os.ReadDir(target); err != nil || len(entries) != 0 {
		t.Errorf("the refused Mount left %d entries in its target (err %v)", len(entries), err)
	}
	if got := entraRequests(clientID, outs); len(got) != 0 {
		t.Errorf("the refused Mount reached Entra: %+v", got)
	}
}

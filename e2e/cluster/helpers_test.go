//go:build cluster

package cluster

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"

	"akv-csi-provider/e2e/cluster/kubelet"
	"akv-csi-provider/e2e/cluster/stack"
	"akv-csi-provider/e2e/internal/harness"
	"akv-csi-provider/e2e/internal/jwt"
)

// volumeName is the pods' inline CSI volume.
const volumeName = "secrets-store"

var (
	storedMu     sync.Mutex
	storedValues []string
)

func issuedTokens() []string {
	if st == nil || st.Kubelet == nil {
		return nil
	}
	return st.Kubelet.Tokens()
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// setSecret stores a new version of a secret in the vault (Microsoft's Go SDK) and returns its
// version id.
func setSecret(t *testing.T, name, value string) string {
	t.Helper()
	storedMu.Lock()
	storedValues = append(storedValues, value)
	storedMu.Unlock()
	r, err := st.Azure.Secrets(harness.VaultName).SetSecret(ctx(t), name, azsecrets.SetSecretParameters{Value: to.Ptr(value)}, nil)
	if err != nil {
		t.Fatalf("seeding secret %s: %v", name, err)
	}
	return r.ID.Version()
}

// randomValue is a fresh secret value.
func randomValue(prefix string) string { return prefix + "-" + rand.Text()[:16] }

// ensureNamespace creates a namespace and service accounts in it (there is no controller-manager
// to create "default").
func ensureNamespace(t *testing.T, ns string, serviceAccounts ...string) {
	t.Helper()
	c := st.CP.Client
	if _, err := c.CoreV1().Namespaces().Create(ctx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	for _, sa := range serviceAccounts {
		if _, err := c.CoreV1().ServiceAccounts(ns).Create(ctx(t), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
}

// spcParams are SecretProviderClass parameters for the emulated cloud.
func spcParams(objects string, extra map[string]string) map[string]string {
	return st.Azure.Params(objects, extra)
}

// createSPC creates a SecretProviderClass with provider azure.
func createSPC(t *testing.T, ns, name string, params map[string]string, secretObjects []any) {
	t.Helper()
	p := map[string]any{}
	for k, v := range params {
		p[k] = v
	}
	spec := map[string]any{"provider": "azure", "parameters": p}
	if secretObjects != nil {
		spec["secretObjects"] = secretObjects
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "secrets-store.csi.x-k8s.io/v1",
		"kind":       "SecretProviderClass",
		"metadata":   map[string]any{"name": name, "namespace": ns},
		"spec":       spec,
	}}
	if _, err := st.Dynamic.Resource(stack.SPCResource).Namespace(ns).Create(ctx(t), obj, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating SecretProviderClass %s/%s: %v", ns, name, err)
	}
}

// podSpec describes a test pod.
type podSpec struct {
	namespace, name, serviceAccount, spc string
	// nodePublishSecret names the volume's nodePublishSecretRef Secret.
	nodePublishSecret string
}

// createPod creates the pod bound to the kubelet stand-in's node with the inline volume and
// reports it Running (what kubelet would do once its containers start), then returns it.
func createPod(t *testing.T, p podSpec) *corev1.Pod {
	t.Helper()
	c := st.CP.Client.CoreV1().Pods(p.namespace)
	vol := &corev1.CSIVolumeSource{
		Driver:           stack.DriverName,
		ReadOnly:         to.Ptr(true),
		VolumeAttributes: map[string]string{"secretProviderClass": p.spc},
	}
	if p.nodePublishSecret != "" {
		vol.NodePublishSecretRef = &corev1.LocalObjectReference{Name: p.nodePublishSecret}
	}
	pod, err := c.Create(ctx(t), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: p.namespace, Labels: map[string]string{"app": p.name}},
		Spec: corev1.PodSpec{
			NodeName:           st.Kubelet.NodeName(),
			ServiceAccountName: p.serviceAccount,
			Containers: []corev1.Container{{
				Name:         "app",
				Image:        "example.invalid/app:1",
				VolumeMounts: []corev1.VolumeMount{{Name: volumeName, MountPath: "/mnt/secrets-store", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: volumeName, VolumeSource: corev1.VolumeSource{CSI: vol}}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating pod %s/%s: %v", p.namespace, p.name, err)
	}
	pod.Status.Phase = corev1.PodRunning
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	if pod, err = c.UpdateStatus(ctx(t), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("reporting pod %s/%s Running: %v", p.namespace, p.name, err)
	}
	return pod
}

// publish has the kubelet stand-in publish the pod's volume; on success the volume is
// unpublished when the test ends.
func publish(t *testing.T, pod *corev1.Pod) error {
	t.Helper()
	err := st.Kubelet.Publish(ctx(t), pod.Namespace, pod.Name, volumeName)
	if err == nil {
		t.Cleanup(func() { _ = st.Kubelet.Unpublish(context.Background(), string(pod.UID), volumeName) })
	}
	return err
}

func mustPublish(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if err := publish(t, pod); err != nil {
		t.Fatalf("publishing the volume of pod %s/%s: %v\n--- driver log:\n%s\n--- provider log:\n%s", pod.Namespace, pod.Name, err, tailLog("driver.log"), tailLog("provider.log"))
	}
}

func tailLog(name string) string {
	b, _ := os.ReadFile(filepath.Join(st.Dir, name))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

func target(pod *corev1.Pod) string { return st.Kubelet.TargetPath(string(pod.UID), volumeName) }

// readMounted reads a file of the pod's volume (through the driver's ..data symlinks).
func readMounted(t *testing.T, pod *corev1.Pod, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(target(pod), rel))
	if err != nil {
		t.Fatalf("reading %s of pod %s: %v", rel, pod.Name, err)
	}
	return string(b)
}

// eventually polls cond until it holds or limit passes; cond returns what it saw.
func eventually(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var seen string
	for time.Now().Before(deadline) {
		var ok bool
		if ok, seen = cond(); ok {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s (last seen: %s)", what, limit, seen)
}

// spcps returns the pod's SecretProviderClassPodStatus (named <pod>-<namespace>-<spc>).
func spcps(t *testing.T, pod *corev1.Pod, spc string) (*unstructured.Unstructured, error) {
	t.Helper()
	return st.Dynamic.Resource(stack.SPCPSResource).Namespace(pod.Namespace).Get(ctx(t), pod.Name+"-"+pod.Namespace+"-"+spc, metav1.GetOptions{})
}

// spcpsObjects returns the SPCPS status objects as id -> version.
func spcpsObjects(u *unstructured.Unstructured) map[string]string {
	out := map[string]string{}
	objs, _, _ := unstructured.NestedSlice(u.Object, "status", "objects")
	for _, o := range objs {
		m, _ := o.(map[string]any)
		id, _ := m["id"].(string)
		v, _ := m["version"].(string)
		out[id] = v
	}
	return out
}

// driverErrors reads the driver's error counters (node_publish_error, rotation_reconcile_error
// and every other series whose name has "_error"), keyed by series with its labels.
func driverErrors(t *testing.T) map[string]float64 {
	t.Helper()
	page, err := stack.Metrics(st.DriverMetrics)
	if err != nil {
		t.Fatalf("reading the driver's metrics at %s: %v", st.DriverMetrics, err)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(page))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		name, rest, _ := strings.Cut(line, "{")
		if !strings.Contains(name, "_error") {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		out[name+"{"+labels+"}"] += f
	}
	return out
}

// noNewDriverErrors fails the test if any driver error counter grew since before.
func noNewDriverErrors(t *testing.T, before map[string]float64) {
	t.Helper()
	for k, v := range driverErrors(t) {
		if v > before[k] {
			t.Errorf("the driver's metric %s grew from %v to %v during a passing scenario", k, before[k], v)
		}
	}
}

// driverErrorTotal sums the driver's error counters whose name contains part.
func driverErrorTotal(t *testing.T, part string) float64 {
	var sum float64
	for k, v := range driverErrors(t) {
		if strings.Contains(k, part) {
			sum += v
		}
	}
	return sum
}

// secret reads a Kubernetes Secret.
func secret(t *testing.T, ns, name string) (*corev1.Secret, error) {
	return st.CP.Client.CoreV1().Secrets(ns).Get(ctx(t), name, metav1.GetOptions{})
}

// setTokenInSecrets sets the CSIDriver's serviceAccountTokenInSecrets (nil: unset).
func setTokenInSecrets(t *testing.T, v *bool) {
	t.Helper()
	val := "null"
	if v != nil {
		val = strconv.FormatBool(*v)
	}
	patch := fmt.Sprintf(`{"spec":{"serviceAccountTokenInSecrets":%s}}`, val)
	if _, err := st.CP.Client.StorageV1().CSIDrivers().Patch(ctx(t), stack.DriverName, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patching CSIDriver %s: %v", stack.DriverName, err)
	}
}

// tokenInSecrets reads the CSIDriver's serviceAccountTokenInSecrets.
func tokenInSecrets(t *testing.T) *bool {
	t.Helper()
	raw, err := st.CP.Client.StorageV1().RESTClient().Get().AbsPath("/apis/storage.k8s.io/v1/csidrivers", stack.DriverName).DoRaw(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	switch {
	case strings.Contains(s, `"serviceAccountTokenInSecrets":true`):
		return to.Ptr(true)
	case strings.Contains(s, `"serviceAccountTokenInSecrets":false`):
		return to.Ptr(false)
	}
	return nil
}

// entraOutcomes counts Entra's answers to clientID's requests of the grant with AADSTS code
// (0: accepted).
func entraOutcomes(clientID, grant string, code int) int {
	n := 0
	for _, o := range st.Azure.Tokens.Outcomes() {
		if o.ClientID == clientID && o.Grant == grant && o.Code == code && (code != 0 || o.Status == 200) {
			n++
		}
	}
	return n
}

// lastTokenIssuer is the iss claim of the last token TokenRequest issued to the kubelet.
func lastTokenIssuer(t *testing.T) string {
	t.Helper()
	toks := st.Kubelet.Tokens()
	if len(toks) == 0 {
		t.Fatal("the kubelet stand-in was issued no service account token")
	}
	tok, err := jwt.Parse(toks[len(toks)-1])
	if err != nil {
		t.Fatal(err)
	}
	return tok.String("iss")
}

func isMounted(pod *corev1.Pod) bool { return kubelet.IsMounted(target(pod)) }

//go:build cluster

package cluster

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"akv-csi-provider/e2e/internal/harness"
)

// workloadIdentity mounts one secret through workload identity with the token issued by the
// API server for the pod, and checks the file, the SPCPS and the driver's metrics.
func workloadIdentity(t *testing.T, podName string) {
	ns, sa := harness.Namespace, harness.ServiceAccount
	ensureNamespace(t, ns, sa)
	value := randomValue("wi")
	version := setSecret(t, "wi-"+podName, value)
	spc := "spc-" + podName
	createSPC(t, ns, spc, spcParams(harness.Objects(harness.Object("objectName", "wi-"+podName, "objectType", "secret")),
		map[string]string{"clientID": harness.WIClientID}), nil)
	before := driverErrors(t)
	exchanges := entraOutcomes(harness.WIClientID, "client_assertion", 0)
	shared := sharedMounts(t)
	pod := createPod(t, podSpec{namespace: ns, name: podName, serviceAccount: sa, spc: spc})
	mustPublish(t, pod)
	if n := entraOutcomes(harness.WIClientID, "client_assertion", 0); n <= exchanges {
		// With TokenReview, the pods of one service account share one Entra token: a Mount
		// after another of the same identity exchanges nothing and is counted as shared.
		if now := sharedMounts(t); exchanges == 0 || now <= shared {
			t.Errorf("Entra accepted no client assertion for %s during the mount, and the Mount shared no earlier accepted one (%d before; akv_identity_sharing_total shared %v -> %v)", harness.WIClientID, exchanges, shared, now)
		}
	}
	if iss := lastTokenIssuer(t); iss != st.CP.URL {
		t.Errorf("the pod's token was issued by %q, not by the API server %s", iss, st.CP.URL)
	}
	if !isMounted(pod) {
		t.Errorf("%s is not a mount point after NodePublishVolume", target(pod))
	}
	if got := readMounted(t, pod, "wi-"+podName); got != value {
		t.Errorf("file wi-%s holds %d bytes, not the stored value", podName, len(got))
	}
	eventually(t, rotationPoll*3, "the SPCPS records the object version", func() (bool, string) {
		u, err := spcps(t, pod, spc)
		if err != nil {
			return false, err.Error()
		}
		got := spcpsObjects(u)["secret/wi-"+podName]
		return got == version, fmt.Sprintf("%s records version %q", u.GetName(), got)
	})
	noNewDriverErrors(t, before)
}

// The CSIDriver as the driver's chart renders it for Kubernetes >= 1.35: kubelet puts the
// pod's token in NodePublishVolumeRequest.secrets.
func TestWorkloadIdentityTokenInSecrets(t *testing.T) {
	if v := tokenInSecrets(t); v == nil || !*v {
		t.Skip("the driver's chart sets serviceAccountTokenInSecrets only on Kubernetes >= 1.35")
	}
	workloadIdentity(t, "wi-secrets")
}

// The default before Kubernetes 1.35 and of every CSIDriver without the field: the token is in
// the volume context and NodePublishVolumeRequest.secrets is empty, so the driver sends the
// provider secrets = "null". This is the scenario that caught the null-secrets bug.
func TestWorkloadIdentityTokenInVolumeContext(t *testing.T) {
	was := tokenInSecrets(t)
	if was != nil && *was {
		setTokenInSecrets(t, to.Ptr(false))
		t.Cleanup(func() { setTokenInSecrets(t, was) })
	}
	workloadIdentity(t, "wi-context")
}

// A pod of another service account asks for the same identity: Entra refuses its token (no
// federated credential for its subject), the provider answers PermissionDenied and nothing is
// mounted, recorded or synced.
func TestOtherServiceAccountRefused(t *testing.T) {
	ns := harness.Namespace
	ensureNamespace(t, ns, "intruder")
	setSecret(t, "guarded", randomValue("guarded"))
	spc := "spc-intruder"
	createSPC(t, ns, spc, spcParams(harness.Objects(harness.Object("objectName", "guarded", "objectType", "secret")),
		map[string]string{"clientID": harness.WIClientID}),
		[]any{map[string]any{"secretName": "intruder-synced", "type": "Opaque", "data": []any{map[string]any{"objectName": "guarded", "key": "value"}}}})
	pod := createPod(t, podSpec{namespace: ns, name: "intruder", serviceAccount: "intruder", spc: spc})
	err := publish(t, pod)
	if err == nil {
		t.Fatal("the volume of a pod of service account intruder was published with web's identity")
	}
	if !strings.Contains(err.Error(), "PermissionDenied") {
		t.Errorf("NodePublishVolume failed without PermissionDenied: %v", err)
	}
	// AADSTS700213: no federated credential for system:serviceaccount:shop:intruder.
	if entraOutcomes(harness.WIClientID, "client_assertion", 700213) == 0 {
		t.Errorf("Entra did not refuse the intruder's token for its subject (AADSTS700213)")
	}
	if isMounted(pod) {
		t.Errorf("%s is still mounted after the refusal", target(pod))
	}
	if entries, err := os.ReadDir(target(pod)); err == nil && len(entries) > 0 {
		t.Errorf("%s holds %d entries after the refusal", target(pod), len(entries))
	}
	if _, err := spcps(t, pod, spc); !apierrors.IsNotFound(err) {
		t.Errorf("a SecretProviderClassPodStatus exists for the refused pod (err %v)", err)
	}
	if _, err := secret(t, ns, "intruder-synced"); !apierrors.IsNotFound(err) {
		t.Errorf("the Secret of the refused pod was synced (err %v)", err)
	}
}

// Service principal credentials from a real Secret named by nodePublishSecretRef, which
// kubelet reads and sends as NodePublishVolumeRequest.secrets.
func TestServicePrincipalNodePublishSecret(t *testing.T) {
	ns := "payments"
	ensureNamespace(t, ns, "api")
	if _, err := st.CP.Client.CoreV1().Secrets(ns).Create(ctx(t), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "sp-creds", Labels: map[string]string{"secrets-store.csi.k8s.io/used": "true"}},
		StringData: map[string]string{"clientid": harness.SPClientID, "clientsecret": harness.SPClientSecret},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	value := randomValue("sp")
	setSecret(t, "sp-secret", value)
	createSPC(t, ns, "spc-sp", spcParams(harness.Objects(harness.Object("objectName", "sp-secret", "objectType", "secret", "objectAlias", "config/sp.txt")), nil), nil)
	before := driverErrors(t)
	pod := createPod(t, podSpec{namespace: ns, name: "api-0", serviceAccount: "api", spc: "spc-sp", nodePublishSecret: "sp-creds"})
	mustPublish(t, pod)
	if got := readMounted(t, pod, "config/sp.txt"); got != value {
		t.Errorf("config/sp.txt holds %d bytes, not the stored value", len(got))
	}
	noNewDriverErrors(t, before)
}

// Unpublish removes the mount and the files.
func TestUnpublishRemovesMount(t *testing.T) {
	ns, sa := harness.Namespace, harness.ServiceAccount
	ensureNamespace(t, ns, sa)
	setSecret(t, "short-lived", randomValue("short"))
	createSPC(t, ns, "spc-unpublish", spcParams(harness.Objects(harness.Object("objectName", "short-lived", "objectType", "secret")),
		map[string]string{"clientID": harness.WIClientID}), nil)
	pod := createPod(t, podSpec{namespace: ns, name: "unpublish", serviceAccount: sa, spc: "spc-unpublish"})
	mustPublish(t, pod)
	if !isMounted(pod) {
		t.Fatalf("%s is not mounted after publish", target(pod))
	}
	if err := st.Kubelet.Unpublish(ctx(t), string(pod.UID), volumeName); err != nil {
		t.Fatal(err)
	}
	if isMounted(pod) {
		t.Errorf("%s is still mounted after NodeUnpublishVolume", target(pod))
	}
	if _, err := os.Stat(target(pod)); !os.IsNotExist(err) {
		t.Errorf("%s still exists after unpublish (err %v)", target(pod), err)
	}
}

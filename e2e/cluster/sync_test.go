//go:build cluster

package cluster

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates"
	corev1 "k8s.io/api/core/v1"

	"akv-csi-provider/e2e/internal/harness"
)

// syncedPod mounts a secret and a PEM-backed certificate with secretObjects for an Opaque and a
// kubernetes.io/tls Secret, and returns the pod, the SPC name and the secret's value.
func syncedPod(t *testing.T, name string) (*corev1.Pod, string, string) {
	t.Helper()
	ns, sa := harness.Namespace, harness.ServiceAccount
	ensureNamespace(t, ns, sa)
	value := randomValue("db")
	setSecret(t, name+"-db", value)
	if _, err := st.Azure.Certificates(harness.VaultName).CreateCertificate(ctx(t), name+"-tls", azcertificates.CreateCertificateParameters{CertificatePolicy: &azcertificates.CertificatePolicy{
		IssuerParameters:          &azcertificates.IssuerParameters{Name: to.Ptr("Self")},
		KeyProperties:             &azcertificates.KeyProperties{KeyType: to.Ptr(azcertificates.KeyTypeEC), Curve: to.Ptr(azcertificates.CurveNameP256), Exportable: to.Ptr(true)},
		SecretProperties:          &azcertificates.SecretProperties{ContentType: to.Ptr("application/x-pem-file")},
		X509CertificateProperties: &azcertificates.X509CertificateProperties{Subject: to.Ptr("CN=" + name + ".shop.example"), ValidityInMonths: to.Ptr[int32](12)},
	}}, nil); err != nil {
		t.Fatalf("creating certificate %s-tls: %v", name, err)
	}
	spc := "spc-" + name
	createSPC(t, ns, spc, spcParams(harness.Objects(
		harness.Object("objectName", name+"-db", "objectType", "secret", "objectAlias", "db-password"),
		harness.Object("objectName", name+"-tls", "objectType", "secret", "objectAlias", "tls.pem"),
	), map[string]string{"clientID": harness.WIClientID}), []any{
		map[string]any{
			"secretName": name + "-opaque", "type": "Opaque",
			"labels": map[string]any{"team": "shop"},
			"data":   []any{map[string]any{"objectName": "db-password", "key": "password"}},
		},
		map[string]any{
			"secretName": name + "-tls", "type": "kubernetes.io/tls",
			"data": []any{
				map[string]any{"objectName": "tls.pem", "key": "tls.crt"},
				map[string]any{"objectName": "tls.pem", "key": "tls.key"},
			},
		},
	})
	pod := createPod(t, podSpec{namespace: ns, name: name, serviceAccount: sa, spc: spc})
	mustPublish(t, pod)
	return pod, spc, value
}

// waitSecret waits for a synced Secret whose data satisfies ok.
func waitSecret(t *testing.T, ns, name string, limit time.Duration, ok func(*corev1.Secret) bool) *corev1.Secret {
	t.Helper()
	var got *corev1.Secret
	eventually(t, limit, "Secret "+ns+"/"+name+" synced", func() (bool, string) {
		s, err := secret(t, ns, name)
		if err != nil {
			return false, err.Error()
		}
		got = s
		return ok(s), fmt.Sprintf("type %s, %d keys, %d owners", s.Type, len(s.Data), len(s.OwnerReferences))
	})
	return got
}

// checkManaged checks the labels and owner the driver sets on a synced Secret.
func checkManaged(t *testing.T, s *corev1.Secret, spcps string) {
	t.Helper()
	if s.Labels["secrets-store.csi.k8s.io/managed"] != "true" {
		t.Errorf("Secret %s lacks label secrets-store.csi.k8s.io/managed=true: %v", s.Name, s.Labels)
	}
	if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].Kind != "SecretProviderClassPodStatus" || s.OwnerReferences[0].Name != spcps {
		t.Errorf("Secret %s is owned by %+v, want the SecretProviderClassPodStatus %s", s.Name, s.OwnerReferences, spcps)
	}
}

// secretObjects synced into an Opaque Secret (with its labels) and a kubernetes.io/tls Secret
// whose tls.crt and tls.key are the certificate and its key.
func TestSecretObjectsSynced(t *testing.T) {
	before := driverErrors(t)
	pod, spc, value := syncedPod(t, "synced")
	owner := pod.Name + "-" + pod.Namespace + "-" + spc
	opaque := waitSecret(t, pod.Namespace, "synced-opaque", 30*time.Second, func(s *corev1.Secret) bool {
		return len(s.OwnerReferences) == 1 && string(s.Data["password"]) == value
	})
	if opaque.Type != corev1.SecretTypeOpaque {
		t.Errorf("synced-opaque has type %s", opaque.Type)
	}
	if opaque.Labels["team"] != "shop" {
		t.Errorf("synced-opaque lacks the SPC's label team=shop: %v", opaque.Labels)
	}
	checkManaged(t, opaque, owner)
	tlsSecret := waitSecret(t, pod.Namespace, "synced-tls", 30*time.Second, func(s *corev1.Secret) bool {
		return len(s.OwnerReferences) == 1 && len(s.Data["tls.crt"]) > 0 && len(s.Data["tls.key"]) > 0
	})
	if tlsSecret.Type != corev1.SecretTypeTLS {
		t.Errorf("synced-tls has type %s", tlsSecret.Type)
	}
	checkManaged(t, tlsSecret, owner)
	pair, err := tls.X509KeyPair(tlsSecret.Data["tls.crt"], tlsSecret.Data["tls.key"])
	if err != nil {
		t.Fatalf("tls.crt and tls.key of synced-tls are not a matching certificate and key: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil || leaf.Subject.CommonName != "synced.shop.example" {
		t.Errorf("tls.crt is not the vault's certificate (err %v)", err)
	}
	if blk, _ := pem.Decode(tlsSecret.Data["tls.crt"]); blk == nil || blk.Type != "CERTIFICATE" {
		t.Errorf("tls.crt does not start with a CERTIFICATE block")
	}
	if !bytes.Contains([]byte(readMounted(t, pod, "tls.pem")), tlsSecret.Data["tls.crt"][:40]) {
		t.Errorf("the mounted tls.pem does not hold tls.crt's certificate")
	}
	noNewDriverErrors(t, before)
}

// Rotation: a new version in the vault reaches the file and the synced Secret after the poll
// interval, through kubelet's periodic republish and the driver's rotation.
func TestRotation(t *testing.T) {
	before := driverErrors(t)
	pod, spc, value := syncedPod(t, "rotating")
	waitSecret(t, pod.Namespace, "rotating-opaque", 30*time.Second, func(s *corev1.Secret) bool { return string(s.Data["password"]) == value })
	u, err := spcps(t, pod, spc)
	if err != nil {
		t.Fatal(err)
	}
	oldVersion := spcpsObjects(u)["secret/rotating-db"]
	next := randomValue("db2")
	newVersion := setSecret(t, "rotating-db", next)
	start := time.Now()
	eventually(t, rotationPoll*6, "the file db-password holds the new version", func() (bool, string) {
		got := readMounted(t, pod, "db-password")
		return got == next, "old value"
	})
	t.Logf("file rotated %s after the new version was stored (poll interval %s)", time.Since(start).Round(100*time.Millisecond), rotationPoll)
	s := waitSecret(t, pod.Namespace, "rotating-opaque", rotationPoll*6, func(s *corev1.Secret) bool {
		return string(s.Data["password"]) == next && len(s.OwnerReferences) == 1
	})
	checkManaged(t, s, pod.Name+"-"+pod.Namespace+"-"+spc)
	eventually(t, rotationPoll*3, "the SPCPS records the new version", func() (bool, string) {
		u, err := spcps(t, pod, spc)
		if err != nil {
			return false, err.Error()
		}
		v := spcpsObjects(u)["secret/rotating-db"]
		return v == newVersion && v != oldVersion, v
	})
	noNewDriverErrors(t, before)
}

// A Mount that fails during rotation (the secret was deleted from the vault) leaves the files,
// the synced Secret and the SecretProviderClassPodStatus as they were.
func TestFailedRotationKeepsPrevious(t *testing.T) {
	pod, spc, value := syncedPod(t, "failing")
	waitSecret(t, pod.Namespace, "failing-opaque", 30*time.Second, func(s *corev1.Secret) bool {
		return string(s.Data["password"]) == value && len(s.OwnerReferences) == 1
	})
	status, err := spcps(t, pod, spc)
	if err != nil {
		t.Fatal(err)
	}
	tlsBefore := readMounted(t, pod, "tls.pem")
	errorsBefore := driverErrorTotal(t, "rotation")
	if _, err := st.Azure.Secrets(harness.VaultName).DeleteSecret(ctx(t), "failing-db", nil); err != nil {
		t.Fatalf("deleting failing-db from the vault: %v", err)
	}
	eventually(t, rotationPoll*6, "the driver counts a failed rotation", func() (bool, string) {
		n := driverErrorTotal(t, "rotation")
		return n > errorsBefore, "rotation errors unchanged"
	})
	if got := readMounted(t, pod, "db-password"); got != value {
		t.Errorf("db-password changed after a failed rotation (%d bytes)", len(got))
	}
	if got := readMounted(t, pod, "tls.pem"); got != tlsBefore {
		t.Errorf("tls.pem changed after a failed rotation")
	}
	s, err := secret(t, pod.Namespace, "failing-opaque")
	if err != nil || string(s.Data["password"]) != value {
		t.Errorf("the synced Secret changed after a failed rotation (err %v)", err)
	}
	after, err := spcps(t, pod, spc)
	if err != nil {
		t.Fatal(err)
	}
	if after.GetResourceVersion() != status.GetResourceVersion() {
		t.Errorf("the SecretProviderClassPodStatus changed after a failed rotation (resourceVersion %s -> %s)", status.GetResourceVersion(), after.GetResourceVersion())
	}
	// Stop the failing republishes so later scenarios see no new driver errors.
	if err := st.Kubelet.Unpublish(ctx(t), string(pod.UID), volumeName); err != nil {
		t.Fatal(err)
	}
}

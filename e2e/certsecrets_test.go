package e2e

import (
	"bytes"
	"encoding/base64"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates"

	"akv-csi-provider/e2e/internal/harness"
)

// TestCertificateBackedSecretsAsStored covers what needs no conversion: a PEM-backed
// certificate's secret passes through, and objectFormat pfx gives the PKCS#12 as stored
// (base64 text, or binary with objectEncoding base64). The rest is in certs_test.go.
func TestCertificateBackedSecretsAsStored(t *testing.T) {
	createCertificate(t, "pem-backed", "application/x-pem-file", &azcertificates.KeyProperties{KeyType: to.Ptr(azcertificates.KeyTypeEC), Curve: to.Ptr(azcertificates.CurveNameP256), Exportable: to.Ptr(true)})
	createCertificate(t, "pfx-backed", "application/x-pkcs12", &azcertificates.KeyProperties{KeyType: to.Ptr(azcertificates.KeyTypeRSA), KeySize: to.Ptr[int32](2048), Exportable: to.Ptr(true)})
	sc := env.Secrets(harness.VaultName)
	pemSecret, err := sc.GetSecret(ctx(t), "pem-backed", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	pfxSecret, err := sc.GetSecret(ctx(t), "pfx-backed", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	pfx, err := base64.StdEncoding.DecodeString(*pfxSecret.Value)
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	versions, err := spMount(t, target,
		harness.Object("objectName", "pem-backed", "objectType", "secret", "objectAlias", "tls.pem"),
		harness.Object("objectName", "pfx-backed", "objectType", "secret", "objectFormat", "pfx", "objectAlias", "tls.pfx.b64"),
		harness.Object("objectName", "pfx-backed", "objectType", "secret", "objectFormat", "pfx", "objectEncoding", "base64", "objectAlias", "tls.pfx"),
	)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	snap := takeSnapshot(t, target)
	if got := snap.Files["tls.pem"].Data; string(got) != *pemSecret.Value {
		t.Errorf("tls.pem is not the PEM as stored:\n%s", got)
	}
	if bs := blocks(snap.Files["tls.pem"].Data); len(bs) != 2 || bs[0].Type != "PRIVATE KEY" || bs[1].Type != "CERTIFICATE" {
		t.Errorf("tls.pem blocks %d", len(bs))
	}
	if got := snap.Files["tls.pfx.b64"].Data; string(got) != *pfxSecret.Value {
		t.Error("tls.pfx.b64 is not the base64 PKCS#12 as stored")
	}
	if got := snap.Files["tls.pfx"].Data; !bytes.Equal(got, pfx) {
		t.Error("tls.pfx is not the binary PKCS#12")
	}
	// openssl opens the binary PKCS#12 with the empty password.
	openssl(t, snap.Files["tls.pfx"].Data, "pkcs12", "-noout", "-passin", "pass:")
	if versions["secret/pfx-backed"] != pfxSecret.ID.Version() || versions["secret/pem-backed"] != pemSecret.ID.Version() {
		t.Errorf("versions %v", versions)
	}
	assertNoLeaks(t, *pemSecret.Value, *pfxSecret.Value)
}

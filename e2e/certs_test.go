// Keys and certificates: objectType key and cert, certificate-backed secrets in PEM and PKCS#12,
// objectFormat pfx, and --write-cert-and-key-in-separate-files. Expectations follow COMPAT.md and are cross-checked
// with openssl where practical.
package e2e

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"os"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"software.sslmate.com/src/go-pkcs12"

	"akv-csi-provider/e2e/internal/harness"
)

func TestKeys(t *testing.T) {
	kc := env.Keys(harness.VaultName)
	cases := []struct {
		name   string
		params azkeys.CreateKeyParameters
	}{
		{"rsa-key", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeRSA), KeySize: to.Ptr[int32](2048)}},
		{"ec-key", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeEC), Curve: to.Ptr(azkeys.CurveNameP256)}},
		{"ec384-key", azkeys.CreateKeyParameters{Kty: to.Ptr(azkeys.KeyTypeEC), Curve: to.Ptr(azkeys.CurveNameP384)}},
	}
	var objs []string
	want := map[string][]byte{}
	wantVersions := map[string]string{}
	for _, c := range cases {
		resp, err := kc.CreateKey(ctx(t), c.name, c.params, nil)
		if err != nil {
			t.Fatalf("creating %s: %v", c.name, err)
		}
		der, err := x509.MarshalPKIXPublicKey(publicKeyOf(t, resp.Key))
		if err != nil {
			t.Fatal(err)
		}
		want[c.name] = pemOf("PUBLIC KEY", der)
		// openssl agrees on the SPKI PEM.
		if got := openssl(t, want[c.name], "pkey", "-pubin", "-pubout"); !bytes.Equal(got, want[c.name]) {
			t.Fatalf("openssl normalises the expected %s differently:\n%s", c.name, got)
		}
		wantVersions["key/"+c.name] = resp.Key.KID.Version()
		objs = append(objs, harness.Object("objectName", c.name, "objectType", "key"))
	}
	target := t.TempDir()
	versions, err := spMount(t, target, objs...)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	snap := takeSnapshot(t, target)
	for name, w := range want {
		if !bytes.Equal(snap.Files[name].Data, w) {
			t.Errorf("%s:\n%s\nwant\n%s", name, snap.Files[name].Data, w)
		}
		if versions["key/"+name] != wantVersions["key/"+name] {
			t.Errorf("version of %s: %v", name, versions)
		}
	}
}

func TestCertificates(t *testing.T) {
	cc := env.Certificates(harness.VaultName)
	sc := env.Secrets(harness.VaultName)
	create := func(name, contentType string, kp *azcertificates.KeyProperties) {
		createCertificate(t, name, contentType, kp)
	}
	create("web-tls", "application/x-pkcs12", &azcertificates.KeyProperties{KeyType: to.Ptr(azcertificates.KeyTypeRSA), KeySize: to.Ptr[int32](2048), Exportable: to.Ptr(true)})
	create("api-tls", "application/x-pem-file", &azcertificates.KeyProperties{KeyType: to.Ptr(azcertificates.KeyTypeEC), Curve: to.Ptr(azcertificates.CurveNameP256), Exportable: to.Ptr(true)})

	// Imported PFX with a chain stored root first (shuffled), modern encryption, empty password.
	leafKey, leaf, inter, root := makeChain(t)
	pfx, err := pkcs12.Modern.Encode(leafKey, leaf, []*x509.Certificate{root, inter}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cc.ImportCertificate(ctx(t), "imported-pfx", azcertificates.ImportCertificateParameters{
		Base64EncodedCertificate: to.Ptr(base64.StdEncoding.EncodeToString(pfx)),
		CertificatePolicy:        &azcertificates.CertificatePolicy{SecretProperties: &azcertificates.SecretProperties{ContentType: to.Ptr("application/x-pkcs12")}},
	}, nil); err != nil {
		t.Fatalf("importing PFX: %v", err)
	}
	// Imported PEM: key, leaf, intermediate, passed through as stored.
	keyDER, _ := x509.MarshalPKCS8PrivateKey(leafKey)
	pemBundle := string(pemOf("PRIVATE KEY", keyDER)) + string(pemOf("CERTIFICATE", leaf.Raw)) + string(pemOf("CERTIFICATE", inter.Raw))
	if _, err := cc.ImportCertificate(ctx(t), "imported-pem", azcertificates.ImportCertificateParameters{
		Base64EncodedCertificate: to.Ptr(pemBundle),
		CertificatePolicy:        &azcertificates.CertificatePolicy{SecretProperties: &azcertificates.SecretProperties{ContentType: to.Ptr("application/x-pem-file")}},
	}, nil); err != nil {
		t.Fatalf("importing PEM: %v", err)
	}

	// What Key Vault holds, read back through Microsoft's SDK.
	webCert, err := cc.GetCertificate(ctx(t), "web-tls", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	webSecret, err := sc.GetSecret(ctx(t), "web-tls", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if *webSecret.ContentType != "application/x-pkcs12" || webSecret.KID == nil {
		t.Fatalf("web-tls backing secret: content type %v, kid %v", webSecret.ContentType, webSecret.KID)
	}
	webPFX, _ := base64.StdEncoding.DecodeString(*webSecret.Value)
	webKey, webLeaf, _, err := pkcs12.DecodeChain(webPFX, "")
	if err != nil {
		t.Fatalf("the backing PFX: %v", err)
	}
	if !bytes.Equal(webLeaf.Raw, webCert.CER) {
		t.Fatal("the backing PFX's certificate is not the certificate's cer")
	}
	// openssl reads the same certificate out of the PFX.
	if got := blocks(openssl(t, webPFX, "pkcs12", "-nokeys", "-passin", "pass:")); len(got) != 1 || !bytes.Equal(got[0].Bytes, webLeaf.Raw) {
		t.Fatalf("openssl sees %d certificates in web-tls's PFX", len(got))
	}
	apiSecret, err := sc.GetSecret(ctx(t), "api-tls", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	importedPEM, err := sc.GetSecret(ctx(t), "imported-pem", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	importedCert, err := cc.GetCertificate(ctx(t), "imported-pfx", "", nil)
	if err != nil {
		t.Fatal(err)
	}

	target := t.TempDir()
	versions, err := spMount(t, target,
		harness.Object("objectName", "web-tls", "objectType", "cert", "objectAlias", "web.crt"),
		harness.Object("objectName", "web-tls", "objectType", "secret", "objectAlias", "web.pem"),
		harness.Object("objectName", "web-tls", "objectType", "secret", "objectFormat", "pfx", "objectAlias", "web.pfx.b64"),
		harness.Object("objectName", "web-tls", "objectType", "secret", "objectFormat", "pfx", "objectEncoding", "base64", "objectAlias", "web.pfx"),
		harness.Object("objectName", "web-tls", "objectType", "key", "objectAlias", "web.pub"),
		harness.Object("objectName", "api-tls", "objectType", "secret", "objectAlias", "api.pem"),
		harness.Object("objectName", "imported-pfx", "objectType", "secret", "objectAlias", "imported.pem"),
		harness.Object("objectName", "imported-pfx", "objectType", "cert", "objectAlias", "imported.crt"),
		harness.Object("objectName", "imported-pem", "objectType", "secret", "objectAlias", "imported-pem.pem"),
	)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	snap := takeSnapshot(t, target)
	get := func(p string) []byte { return snap.Files[p].Data }

	if w := pemOf("CERTIFICATE", webCert.CER); !bytes.Equal(get("web.crt"), w) {
		t.Errorf("web.crt:\n%s\nwant the leaf:\n%s", get("web.crt"), w)
	}
	checkKeyThenChain(t, "web.pem", get("web.pem"), webKey.(crypto.Signer), []*x509.Certificate{webLeaf})
	if string(get("web.pfx.b64")) != *webSecret.Value {
		t.Error("web.pfx.b64 is not the base64 PFX as stored")
	}
	if !bytes.Equal(get("web.pfx"), webPFX) {
		t.Error("web.pfx is not the binary PFX")
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(webLeaf.PublicKey)
	if w := pemOf("PUBLIC KEY", pubDER); !bytes.Equal(get("web.pub"), w) {
		t.Errorf("web.pub:\n%s\nwant\n%s", get("web.pub"), w)
	}
	if string(get("api.pem")) != *apiSecret.Value {
		t.Errorf("api.pem is not the PEM as stored:\n%s", get("api.pem"))
	}
	checkKeyThenChain(t, "imported.pem", get("imported.pem"), leafKey, []*x509.Certificate{leaf, inter, root})
	if w := pemOf("CERTIFICATE", importedCert.CER); !bytes.Equal(get("imported.crt"), w) || !bytes.Equal(importedCert.CER, leaf.Raw) {
		t.Errorf("imported.crt is not the leaf")
	}
	if string(get("imported-pem.pem")) != *importedPEM.Value {
		t.Errorf("imported-pem.pem is not the PEM as stored")
	}
	for _, id := range []string{"cert/web-tls", "secret/web-tls", "key/web-tls"} {
		if versions[id] != webCert.ID.Version() {
			t.Errorf("%s version %q, want %s (one version id for the certificate, its key and secret)", id, versions[id], webCert.ID.Version())
		}
	}
	assertNoLeaks(t, *webSecret.Value, *apiSecret.Value)
}

// TestCertAndKeyInSeparateFiles runs a provider with --write-cert-and-key-in-separate-files.
func TestCertAndKeyInSeparateFiles(t *testing.T) {
	sep, err := harness.Start(harness.Options{ProviderBin: providerBin(), ProviderArgs: []string{"--write-cert-and-key-in-separate-files"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		sep.Close()
		if !scanLeaks(sep) {
			t.Error("the provider log of this environment leaks a credential (lines above)")
		}
		if !t.Failed() {
			_ = os.RemoveAll(sep.Dir)
		}
	}()
	leafKey, leaf, inter, root := makeChain(t)
	pfx, err := pkcs12.LegacyDES.Encode(leafKey, leaf, []*x509.Certificate{inter, root}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sep.Certificates(harness.VaultName).ImportCertificate(ctx(t), "tls", azcertificates.ImportCertificateParameters{
		Base64EncodedCertificate: to.Ptr(base64.StdEncoding.EncodeToString(pfx)),
	}, nil); err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	attrs := harness.Attributes(sep.Params(harness.Objects(harness.Object("objectName", "tls", "objectType", "secret")), nil), harness.DefaultPod, "")
	if _, _, err := sep.Mount(ctx(t), attrs, harness.SPSecrets(harness.SPClientID, harness.SPClientSecret), target); err != nil {
		t.Fatalf("mount: %v\n%s", err, tail(sep.ProviderLog(), 20))
	}
	snap := takeSnapshot(t, target)
	if got := strings.Join(snap.paths(), " "); got != "tls tls.crt tls.key" {
		t.Fatalf("files %s, want tls tls.crt tls.key", got)
	}
	checkKeyThenChain(t, "tls", snap.Files["tls"].Data, leafKey, []*x509.Certificate{leaf, inter, root})
	var chain bytes.Buffer
	for _, c := range []*x509.Certificate{leaf, inter, root} {
		chain.Write(pemOf("CERTIFICATE", c.Raw))
	}
	if !bytes.Equal(snap.Files["tls.crt"].Data, chain.Bytes()) {
		t.Errorf("tls.crt is not the chain:\n%s", snap.Files["tls.crt"].Data)
	}
	kb := blocks(snap.Files["tls.key"].Data)
	if len(kb) != 1 || kb[0].Type != "PRIVATE KEY" {
		t.Fatalf("tls.key:\n%s", snap.Files["tls.key"].Data)
	}
	openssl(t, snap.Files["tls.key"].Data, "pkey", "-noout")
}

package e2e

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os/exec"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"akv-csi-provider/e2e/internal/harness"
)

func pemOf(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// publicKeyOf rebuilds the public key from Key Vault's JSON web key.
func publicKeyOf(t *testing.T, k *azkeys.JSONWebKey) crypto.PublicKey {
	t.Helper()
	switch *k.Kty {
	case azkeys.KeyTypeRSA, azkeys.KeyTypeRSAHSM:
		return &rsa.PublicKey{N: new(big.Int).SetBytes(k.N), E: int(new(big.Int).SetBytes(k.E).Int64())}
	case azkeys.KeyTypeEC, azkeys.KeyTypeECHSM:
		curves := map[azkeys.CurveName]elliptic.Curve{azkeys.CurveNameP256: elliptic.P256(), azkeys.CurveNameP384: elliptic.P384(), azkeys.CurveNameP521: elliptic.P521()}
		return &ecdsa.PublicKey{Curve: curves[*k.Crv], X: new(big.Int).SetBytes(k.X), Y: new(big.Int).SetBytes(k.Y)}
	}
	t.Fatalf("unexpected kty %v", *k.Kty)
	return nil
}

// openssl runs openssl with stdin and returns stdout, failing the test on error.
func openssl(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// blocks splits PEM data (ignoring text between blocks, such as openssl's Bag Attributes).
func blocks(data []byte) []*pem.Block {
	var out []*pem.Block
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		out = append(out, b)
	}
}

// checkKeyThenChain asserts a PRIVATE KEY (PKCS#8) block equal to key, then exactly the
// certificates in chain order, byte for byte.
func checkKeyThenChain(t *testing.T, name string, got []byte, key crypto.Signer, chain []*x509.Certificate) {
	t.Helper()
	bs := blocks(got)
	if len(bs) != 1+len(chain) {
		t.Fatalf("%s: %d PEM blocks, want a key and %d certificates:\n%s", name, len(bs), len(chain), got)
	}
	if bs[0].Type != "PRIVATE KEY" {
		t.Fatalf("%s: first block is %s, want PRIVATE KEY (PKCS#8)", name, bs[0].Type)
	}
	k, err := x509.ParsePKCS8PrivateKey(bs[0].Bytes)
	if err != nil {
		t.Fatalf("%s: key: %v", name, err)
	}
	if !key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k.(crypto.Signer).Public()) {
		t.Errorf("%s: the private key is not the certificate's", name)
	}
	var want bytes.Buffer
	for _, c := range chain {
		want.Write(pemOf("CERTIFICATE", c.Raw))
	}
	var gotCerts bytes.Buffer
	for _, b := range bs[1:] {
		gotCerts.Write(pem.EncodeToMemory(b))
	}
	if !bytes.Equal(gotCerts.Bytes(), want.Bytes()) {
		t.Errorf("%s: certificates are not the chain leaf -> root:\n%s", name, gotCerts.String())
	}
	// The file must be plain PEM openssl reads.
	openssl(t, got, "pkey", "-noout")
	openssl(t, got, "x509", "-noout")
}

// makeChain builds root -> intermediate -> leaf (EC P-384 leaf) for import.
func makeChain(t *testing.T) (leafKey crypto.Signer, leaf, inter, root *x509.Certificate) {
	t.Helper()
	mk := func(cn string, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer, ca bool) *x509.Certificate {
		n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		tmpl := &x509.Certificate{
			SerialNumber: n, Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
			IsCA: ca, BasicConstraintsValid: true,
		}
		if ca {
			tmpl.KeyUsage = x509.KeyUsageCertSign
		} else {
			tmpl.DNSNames = []string{cn}
		}
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	rootKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	interKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	lk, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	root = mk("e2e root", rootKey.Public(), nil, rootKey, true)
	inter = mk("e2e intermediate", interKey.Public(), root, rootKey, true)
	leaf = mk("imported.example", lk.Public(), inter, interKey, false)
	return lk, leaf, inter, root
}

// createCertificate creates a self-signed certificate in the vault through Microsoft's SDK.
func createCertificate(t *testing.T, name, contentType string, kp *azcertificates.KeyProperties) {
	t.Helper()
	_, err := env.Certificates(harness.VaultName).CreateCertificate(ctx(t), name, azcertificates.CreateCertificateParameters{CertificatePolicy: &azcertificates.CertificatePolicy{
		IssuerParameters:          &azcertificates.IssuerParameters{Name: to.Ptr("Self")},
		KeyProperties:             kp,
		SecretProperties:          &azcertificates.SecretProperties{ContentType: to.Ptr(contentType)},
		X509CertificateProperties: &azcertificates.X509CertificateProperties{Subject: to.Ptr("CN=" + name + ".example"), ValidityInMonths: to.Ptr[int32](12)},
	}}, nil)
	if err != nil {
		t.Fatalf("creating certificate %s: %v", name, err)
	}
}

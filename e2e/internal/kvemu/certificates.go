package kvemu

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // x5t is a SHA-1 thumbprint by definition
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"time"

	"software.sslmate.com/src/go-pkcs12"
)

// Content types of a certificate's backing secret.
const (
	ContentTypePKCS12 = "application/x-pkcs12"
	ContentTypePEM    = "application/x-pem-file"
)

type certPolicy struct {
	KeyProps *struct {
		Exportable bool   `json:"exportable"`
		Kty        string `json:"kty"`
		KeySize    int    `json:"key_size"`
		Crv        string `json:"crv"`
	} `json:"key_props"`
	SecretProps *struct {
		ContentType string `json:"contentType"`
	} `json:"secret_props"`
	X509Props *struct {
		Subject string `json:"subject"`
		SANs    *struct {
			DNSNames []string `json:"dns_names"`
		} `json:"sans"`
		ValidityMonths int `json:"validity_months"`
	} `json:"x509_props"`
	Issuer *struct {
		Name string `json:"name"`
	} `json:"issuer"`
}

func (p *certPolicy) contentType(fallback string) string {
	if p != nil && p.SecretProps != nil && p.SecretProps.ContentType != "" {
		return p.SecretProps.ContentType
	}
	return fallback
}

func parseSubject(s string) pkix.Name {
	var n pkix.Name
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch strings.ToUpper(k) {
		case "CN":
			n.CommonName = v
		case "O":
			n.Organization = append(n.Organization, v)
		case "OU":
			n.OrganizationalUnit = append(n.OrganizationalUnit, v)
		case "C":
			n.Country = append(n.Country, v)
		}
	}
	return n
}

func (s *Server) certJSON(c *ctx, v *version) map[string]any {
	sum := sha1.Sum(v.cer) //nolint:gosec // thumbprint
	cert, _ := x509.ParseCertificate(v.cer)
	attrs := v.attributesJSON()
	if cert != nil {
		attrs["nbf"] = cert.NotBefore.Unix()
		attrs["exp"] = cert.NotAfter.Unix()
	}
	out := map[string]any{
		"id":         c.base + "/certificates/" + c.name + "/" + v.id,
		"kid":        c.base + "/keys/" + v.keyID,
		"sid":        c.base + "/secrets/" + c.name + "/" + v.id,
		"x5t":        base64.RawURLEncoding.EncodeToString(sum[:]),
		"cer":        base64.StdEncoding.EncodeToString(v.cer),
		"attributes": attrs,
		"tags":       tagsOrEmpty(v.tags),
	}
	if v.policy != nil {
		out["policy"] = v.policy
	}
	return out
}

func (s *Server) certItemJSON(c *ctx, v *version) map[string]any {
	sum := sha1.Sum(v.cer) //nolint:gosec // thumbprint
	return map[string]any{
		"id":         c.base + "/certificates/" + c.name + "/" + v.id,
		"x5t":        base64.RawURLEncoding.EncodeToString(sum[:]),
		"attributes": v.attributesJSON(),
		"tags":       tagsOrEmpty(v.tags),
	}
}

// backingSecret renders key + chain the way Key Vault stores a certificate's secret.
func backingSecret(contentType string, key crypto.Signer, leaf *x509.Certificate, chain []*x509.Certificate) (string, error) {
	switch contentType {
	case ContentTypePKCS12:
		pfx, err := pkcs12.LegacyDES.Encode(key, leaf, chain, "")
		if err != nil {
			return "", err
		}
		return base64.StdEncoding.EncodeToString(pfx), nil
	case ContentTypePEM:
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return "", err
		}
		var b bytes.Buffer
		_ = pem.Encode(&b, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
		for _, c := range append([]*x509.Certificate{leaf}, chain...) {
			_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
		return b.String(), nil
	}
	return "", fmt.Errorf("content type %q is neither %s nor %s", contentType, ContentTypePKCS12, ContentTypePEM)
}

// store adds matching certificate, key and secret versions (one version id for all three).
func (s *Server) storeCertificate(c *ctx, key crypto.Signer, leaf *x509.Certificate, secretValue, contentType string, policy map[string]any, attrs *attributes, tags map[string]string) (*version, error) {
	id := newVersionID()
	kty := "RSA"
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		kty = "EC"
	}
	if _, err := s.addKey(c.vault, c.name, id, kty, key, nil, true); err != nil {
		return nil, err
	}
	now := s.now()
	sec := &version{id: id, created: now, updated: now, enabled: true, value: secretValue, contentType: contentType, managed: true, keyID: c.name + "/" + id}
	if o := c.vault.secrets[c.name]; o != nil {
		o.versions = append(o.versions, sec)
	} else {
		c.vault.secrets[c.name] = &object{versions: []*version{sec}}
	}
	cert := &version{id: id, created: now, updated: now, enabled: true, cer: leaf.Raw, keyID: c.name + "/" + id, policy: policy, tags: tags}
	cert.apply(attrs)
	if o := c.vault.certs[c.name]; o != nil {
		o.versions = append(o.versions, cert)
	} else {
		c.vault.certs[c.name] = &object{versions: []*version{cert}}
	}
	return cert, nil
}

func (s *Server) certificates(c *ctx, rest []string) {
	o := c.vault.certs[c.name]
	m := c.r.Method
	switch {
	case m == http.MethodPost && len(rest) == 1 && rest[0] == "create":
		var body struct {
			Policy     map[string]any    `json:"policy"`
			Attributes *attributes       `json:"attributes"`
			Tags       map[string]string `json:"tags"`
		}
		if !c.decode(&body) {
			return
		}
		var p certPolicy
		if err := remarshal(body.Policy, &p); err != nil || p.X509Props == nil || p.X509Props.Subject == "" {
			c.fail(400, "BadParameter", "policy.x509_props.subject is required.", "")
			return
		}
		if p.Issuer == nil || !strings.EqualFold(p.Issuer.Name, "Self") {
			c.fail(400, "BadParameter", "The emulator only issues self-signed certificates (issuer name Self).", "")
			return
		}
		kty, size, crv := "RSA", 2048, ""
		if p.KeyProps != nil {
			if p.KeyProps.Kty != "" {
				kty = p.KeyProps.Kty
			}
			if p.KeyProps.KeySize != 0 {
				size = p.KeyProps.KeySize
			}
			crv = p.KeyProps.Crv
		}
		key, err := newKey(kty, size, crv)
		if err != nil {
			c.fail(400, "BadParameter", err.Error(), "")
			return
		}
		months := 12
		if p.X509Props.ValidityMonths > 0 {
			months = p.X509Props.ValidityMonths
		}
		tmpl := &x509.Certificate{
			SerialNumber: randomSerial(),
			Subject:      parseSubject(p.X509Props.Subject),
			NotBefore:    time.Now().Add(-time.Minute).Truncate(time.Second),
			NotAfter:     time.Now().AddDate(0, months, 0).Truncate(time.Second),
			KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		if p.X509Props.SANs != nil {
			tmpl.DNSNames = p.X509Props.SANs.DNSNames
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			c.fail(500, "InternalError", err.Error(), "")
			return
		}
		leaf, _ := x509.ParseCertificate(der)
		ct := p.contentType(ContentTypePKCS12)
		value, err := backingSecret(ct, key, leaf, nil)
		if err != nil {
			c.fail(400, "BadParameter", err.Error(), "")
			return
		}
		if _, err := s.storeCertificate(c, key, leaf, value, ct, body.Policy, body.Attributes, body.Tags); err != nil {
			c.fail(500, "InternalError", err.Error(), "")
			return
		}
		c.json(202, s.operationJSON(c))
	case m == http.MethodPost && len(rest) == 1 && rest[0] == "import":
		var body struct {
			Value      string            `json:"value"`
			Password   string            `json:"pwd"`
			Policy     map[string]any    `json:"policy"`
			Attributes *attributes       `json:"attributes"`
			Tags       map[string]string `json:"tags"`
		}
		if !c.decode(&body) {
			return
		}
		var p certPolicy
		_ = remarshal(body.Policy, &p)
		isPEM := strings.HasPrefix(strings.TrimSpace(body.Value), "-----BEGIN")
		fallback := ContentTypePKCS12
		if isPEM {
			fallback = ContentTypePEM
		}
		ct := p.contentType(fallback)
		var (
			key  crypto.Signer
			leaf *x509.Certificate
			err  error
		)
		if ct == ContentTypePEM {
			key, leaf, err = parsePEMBundle([]byte(body.Value))
		} else {
			key, leaf, err = parsePFX(body.Value, body.Password)
		}
		if err != nil {
			c.fail(400, "BadParameter", "The specified certificate content could not be read: "+err.Error(), "")
			return
		}
		if body.Policy == nil {
			body.Policy = map[string]any{"secret_props": map[string]any{"contentType": ct}, "issuer": map[string]any{"name": "Unknown"}}
		}
		v, err := s.storeCertificate(c, key, leaf, body.Value, ct, body.Policy, body.Attributes, body.Tags)
		if err != nil {
			c.fail(500, "InternalError", err.Error(), "")
			return
		}
		c.json(200, s.certJSON(c, v))
	case m == http.MethodGet && len(rest) == 1 && rest[0] == "pending":
		if o == nil {
			notFound(c, "certificate")
			return
		}
		c.json(200, s.operationJSON(c))
	case m == http.MethodGet && len(rest) == 1 && rest[0] == "versions":
		if o == nil {
			notFound(c, "certificate")
			return
		}
		s.listVersions(c, "certificates", o, func(v *version) map[string]any { return s.certItemJSON(c, v) })
	case m == http.MethodGet && len(rest) <= 1:
		v := pick(c, o, rest, "certificate")
		if v == nil {
			return
		}
		c.json(200, s.certJSON(c, v))
	default:
		c.fail(405, "MethodNotAllowed", m+" is not supported on "+c.r.URL.Path, "")
	}
}

func (s *Server) operationJSON(c *ctx) map[string]any {
	return map[string]any{
		"id":                     c.base + "/certificates/" + c.name + "/pending",
		"issuer":                 map[string]any{"name": "Self"},
		"cancellation_requested": false,
		"status":                 "completed",
		"status_details":         "",
		"target":                 c.base + "/certificates/" + c.name,
		"request_id":             newVersionID(),
	}
}

func parsePFX(value, password string) (crypto.Signer, *x509.Certificate, error) {
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value))
	if err != nil {
		return nil, nil, fmt.Errorf("value is not base64: %w", err)
	}
	key, leaf, _, err := pkcs12.DecodeChain(raw, password)
	if err != nil {
		return nil, nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, errors.New("the PFX key cannot sign")
	}
	return signer, leaf, nil
}

// parsePEMBundle finds the private key and the certificate whose public key matches it.
func parsePEMBundle(data []byte) (crypto.Signer, *x509.Certificate, error) {
	var (
		key   crypto.Signer
		certs []*x509.Certificate
	)
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		switch block.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, nil, err
			}
			certs = append(certs, c)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, nil, err
			}
			key, _ = k.(crypto.Signer)
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
			if err != nil {
				return nil, nil, err
			}
			key = k
		case "EC PRIVATE KEY":
			k, err := x509.ParseECPrivateKey(block.Bytes)
			if err != nil {
				return nil, nil, err
			}
			key = k
		}
	}
	if key == nil || len(certs) == 0 {
		return nil, nil, errors.New("a PEM certificate needs a private key and at least one certificate")
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	for _, c := range certs {
		if pub, ok := c.PublicKey.(equaler); ok && pub.Equal(key.Public()) {
			return key, c, nil
		}
	}
	return nil, nil, errors.New("no certificate matches the private key")
}

func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	return n
}

package kvemu

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"math/big"
	"net/http"
	"strings"
)

var b64url = base64.RawURLEncoding

// newKey generates a key of Key Vault type kty ("RSA", "RSA-HSM", "EC", "EC-HSM").
func newKey(kty string, size int, crv string) (crypto.Signer, error) {
	switch strings.TrimSuffix(kty, "-HSM") {
	case "RSA":
		if size == 0 {
			size = 2048
		}
		return rsa.GenerateKey(rand.Reader, size)
	case "EC":
		c, err := curve(crv)
		if err != nil {
			return nil, err
		}
		return ecdsa.GenerateKey(c, rand.Reader)
	}
	return nil, fmt.Errorf("key type %q is not supported by the emulator", kty)
}

func curve(crv string) (elliptic.Curve, error) {
	switch crv {
	case "", "P-256":
		return elliptic.P256(), nil
	case "P-384":
		return elliptic.P384(), nil
	case "P-521":
		return elliptic.P521(), nil
	}
	return nil, fmt.Errorf("curve %q is not supported by the emulator", crv)
}

// publicJWK describes the public half of key as Key Vault's JSON web key (without kid).
func publicJWK(kty string, key crypto.PublicKey) (map[string]any, error) {
	switch k := key.(type) {
	case *rsa.PublicKey:
		if !strings.HasPrefix(kty, "RSA") {
			kty = "RSA"
		}
		return map[string]any{"kty": kty, "n": b64url.EncodeToString(k.N.Bytes()), "e": b64url.EncodeToString(big.NewInt(int64(k.E)).Bytes())}, nil
	case *ecdsa.PublicKey:
		if !strings.HasPrefix(kty, "EC") {
			kty = "EC"
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		x, y := make([]byte, size), make([]byte, size)
		k.X.FillBytes(x)
		k.Y.FillBytes(y)
		return map[string]any{"kty": kty, "crv": k.Curve.Params().Name, "x": b64url.EncodeToString(x), "y": b64url.EncodeToString(y)}, nil
	}
	return nil, fmt.Errorf("unsupported public key %T", key)
}

func defaultKeyOps(kty string) []string {
	if strings.HasPrefix(kty, "EC") {
		return []string{"sign", "verify"}
	}
	return []string{"encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"}
}

func (s *Server) keyJSON(c *ctx, name string, v *version) map[string]any {
	jwk := map[string]any{"kid": c.base + "/keys/" + name + "/" + v.id, "key_ops": v.keyOps}
	for k, val := range v.jwk {
		jwk[k] = val
	}
	out := map[string]any{"key": jwk, "attributes": v.attributesJSON(), "tags": tagsOrEmpty(v.tags)}
	if v.managed {
		out["managed"] = true
	}
	return out
}

func (s *Server) keyItemJSON(c *ctx, v *version) map[string]any {
	out := map[string]any{"kid": c.base + "/keys/" + c.name + "/" + v.id, "attributes": v.attributesJSON(), "tags": tagsOrEmpty(v.tags)}
	if v.managed {
		out["managed"] = true
	}
	return out
}

// addKey stores a new key version for name and returns it.
func (s *Server) addKey(vlt *vault, name, id, kty string, key crypto.Signer, ops []string, managed bool) (*version, error) {
	jwk, err := publicJWK(kty, key.Public())
	if err != nil {
		return nil, err
	}
	if len(ops) == 0 {
		ops = defaultKeyOps(kty)
	}
	now := s.now()
	v := &version{id: id, created: now, updated: now, enabled: true, jwk: jwk, keyOps: ops, private: key, managed: managed}
	o := vlt.keys[name]
	if o == nil {
		o = &object{}
		vlt.keys[name] = o
	}
	o.versions = append(o.versions, v)
	return v, nil
}

func (s *Server) keysRoute(c *ctx, rest []string) {
	o := c.vault.keys[c.name]
	m := c.r.Method
	switch {
	case m == http.MethodPost && len(rest) == 1 && rest[0] == "create":
		var body struct {
			Kty        string            `json:"kty"`
			KeySize    int               `json:"key_size"`
			Crv        string            `json:"crv"`
			KeyOps     []string          `json:"key_ops"`
			Attributes *attributes       `json:"attributes"`
			Tags       map[string]string `json:"tags"`
		}
		if !c.decode(&body) {
			return
		}
		key, err := newKey(body.Kty, body.KeySize, body.Crv)
		if err != nil {
			c.fail(400, "BadParameter", err.Error(), "")
			return
		}
		v, err := s.addKey(c.vault, c.name, newVersionID(), body.Kty, key, body.KeyOps, false)
		if err != nil {
			c.fail(500, "InternalError", err.Error(), "")
			return
		}
		v.apply(body.Attributes)
		v.tags = body.Tags
		c.json(200, s.keyJSON(c, c.name, v))
	case m == http.MethodGet && len(rest) == 1 && rest[0] == "versions":
		if o == nil {
			notFound(c, "key")
			return
		}
		s.listVersions(c, "keys", o, func(v *version) map[string]any { return s.keyItemJSON(c, v) })
	case m == http.MethodGet && len(rest) <= 1:
		v := pick(c, o, rest, "key")
		if v == nil {
			return
		}
		if !v.enabled {
			c.fixture(403, "key-disabled", nil)
			return
		}
		c.json(200, s.keyJSON(c, c.name, v))
	default:
		c.fail(405, "MethodNotAllowed", m+" is not supported on "+c.r.URL.Path, "")
	}
}

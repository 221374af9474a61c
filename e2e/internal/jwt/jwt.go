// Package jwt is the small part of JWS/JWT the harness needs: RS256 signing and verification,
// and RSA public keys as JWK. Written here to keep the checks visible and the module small.
package jwt

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

var b64 = base64.RawURLEncoding

// Sign returns a compact RS256 JWS of claims with the given key id.
func Sign(key *rsa.PrivateKey, kid string, claims map[string]any) (string, error) {
	header, err := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": kid})
	if err != nil {
		return "", err
	}
	body, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := b64.EncodeToString(header) + "." + b64.EncodeToString(body)
	digest := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest[:])
	if err != nil {
		return "", err
	}
	return input + "." + b64.EncodeToString(sig), nil
}

// Token is a parsed, not yet verified, compact JWS.
type Token struct {
	Header       map[string]any
	Claims       map[string]any
	signingInput string
	signature    []byte
}

// ErrMalformed is returned for anything that is not a compact JWS with JSON header and claims.
var ErrMalformed = errors.New("malformed JWT")

// Parse splits and decodes a compact JWS without verifying it.
func Parse(token string) (*Token, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, ErrMalformed
	}
	var t Token
	for i, dst := range []*map[string]any{&t.Header, &t.Claims} {
		raw, err := b64.DecodeString(parts[i])
		if err != nil {
			return nil, ErrMalformed
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			return nil, ErrMalformed
		}
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return nil, ErrMalformed
	}
	t.signingInput = parts[0] + "." + parts[1]
	t.signature = sig
	return &t, nil
}

// Verify checks the RS256 signature with pub.
func (t *Token) Verify(pub *rsa.PublicKey) error {
	if alg, _ := t.Header["alg"].(string); alg != "RS256" {
		return fmt.Errorf("unsupported alg %q", alg)
	}
	digest := sha256.Sum256([]byte(t.signingInput))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], t.signature)
}

// String returns a string claim or "".
func (t *Token) String(name string) string {
	s, _ := t.Claims[name].(string)
	return s
}

// Audiences returns the aud claim as a list (it may be a string or an array).
func (t *Token) Audiences() []string {
	switch v := t.Claims["aud"].(type) {
	case string:
		return []string{v}
	case []any:
		out := make([]string, 0, len(v))
		for _, a := range v {
			if s, ok := a.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// Number returns a numeric claim (exp, nbf, iat) and whether it was present.
func (t *Token) Number(name string) (int64, bool) {
	f, ok := t.Claims[name].(float64)
	return int64(f), ok
}

// JWK is an RSA public key as a JSON Web Key.
type JWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	N   string `json:"n"`
	E   string `json:"e"`
}

// PublicJWK describes pub as a JWK.
func PublicJWK(kid string, pub *rsa.PublicKey) JWK {
	return JWK{
		Kty: "RSA", Kid: kid, Use: "sig", Alg: "RS256",
		N: b64.EncodeToString(pub.N.Bytes()),
		E: b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}
}

// PublicKey turns the JWK back into a key.
func (j JWK) PublicKey() (*rsa.PublicKey, error) {
	if j.Kty != "RSA" {
		return nil, fmt.Errorf("kty %q is not RSA", j.Kty)
	}
	n, err := b64.DecodeString(j.N)
	if err != nil {
		return nil, err
	}
	e, err := b64.DecodeString(j.E)
	if err != nil {
		return nil, err
	}
	return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}, nil
}

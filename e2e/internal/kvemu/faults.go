package kvemu

import (
	"fmt"
	"strings"

	"akv-csi-provider/e2e/internal/fixtures"
)

// Network refusals Key Vault answers with 403 before looking at permissions. The bodies are the
// files of tests/fixtures/keyvault-errors/ in the repository, served byte for byte: the Rust
// fake (tests/support/fake_azure.rs) serves the same files, so each fault is modelled once.
const (
	// ForbiddenByConnection: public network access is disabled and the request did not come
	// through a private endpoint.
	ForbiddenByConnection = "forbidden-by-connection"
	// ForbiddenByFirewall: the vault's firewall does not list the client's address.
	ForbiddenByFirewall = "forbidden-by-firewall"
)

// ErrorBody returns the Key Vault error body of fixture name (without .json, one without
// placeholders).
func ErrorBody(name string) ([]byte, error) {
	return fixtures.Render(fixtures.KeyVault, name, nil)
}

// DenyNetwork makes vault answer every authenticated request with the 403 of fixture
// (ForbiddenByConnection or ForbiddenByFirewall); an empty fixture lifts the refusal.
func (s *Server) DenyNetwork(vaultName, fixture string) error {
	var body []byte
	if fixture != "" {
		b, err := ErrorBody(fixture)
		if err != nil {
			return err
		}
		body = b
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vaults[strings.ToLower(vaultName)]
	if v == nil {
		return fmt.Errorf("kvemu: no vault %s", vaultName)
	}
	v.networkDenial = body
	return nil
}

// raw answers with a body as stored (a fixture), as JSON.
func (c *ctx) raw(status int, body []byte) {
	c.status = status
	c.w.Header().Set("Content-Type", "application/json; charset=utf-8")
	c.w.Header().Set("x-ms-keyvault-service-version", "1.9.0.0")
	c.w.WriteHeader(status)
	_, _ = c.w.Write(body)
}

// fixture answers with Key Vault error fixture name of tests/fixtures/keyvault-errors, its
// placeholders filled from vars.
func (c *ctx) fixture(status int, name string, vars map[string]string) {
	c.raw(status, fixtures.MustRender(fixtures.KeyVault, name, vars))
}

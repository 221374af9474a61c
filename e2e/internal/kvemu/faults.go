package kvemu

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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

// fixtureDir is tests/fixtures/keyvault-errors, found from this source file (the emulator runs
// from the repository: go test, go run).
func fixtureDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "tests", "fixtures", "keyvault-errors")
}

// ErrorBody returns the Key Vault error body of fixture name (without .json).
func ErrorBody(name string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(fixtureDir(), name+".json"))
	if err != nil {
		return nil, fmt.Errorf("kvemu: Key Vault error fixture %s: %w", name, err)
	}
	return []byte(strings.TrimRight(string(data), "\n")), nil
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

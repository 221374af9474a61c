package harness

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLeakFindingsNameLinesNotSecrets(t *testing.T) {
	const value = "stored-secret-value-42"
	log := strings.Join([]string{
		`{"level":"INFO","message":"mounted","objects":3}`,
		`{"level":"DEBUG","message":"token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2ln"}`,
		`{"level":"DEBUG","message":"value ` + value + `"}`,
		`-----BEGIN EC PRIVATE KEY-----`,
		`{"level":"DEBUG","message":"client ` + SPClientSecret + `"}`,
		`{"level":"INFO","message":"WWW-Authenticate: Bearer authorization=\"https://login.test/t\""}`,
	}, "\n")
	e := &Env{LogFile: filepath.Join(t.TempDir(), "provider.log")}
	if err := os.WriteFile(e.LogFile, []byte(log), 0o600); err != nil {
		t.Fatal(err)
	}
	findings, err := e.LeakFindings(value, "short")
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, f := range findings {
		if strings.Contains(f, value) || strings.Contains(f, SPClientSecret) {
			t.Errorf("a finding repeats the secret: %s", f)
		}
		parts := strings.Split(f, ":")
		lines[parts[1]] = true
	}
	for _, want := range []string{"2", "3", "4", "5"} {
		if !lines[want] {
			t.Errorf("line %s not reported; findings: %q", want, findings)
		}
	}
	if lines["1"] || lines["6"] {
		t.Errorf("a clean line was reported: %q", findings)
	}
}

func TestNeedlesSkipShortValuesAndPEMMarkers(t *testing.T) {
	got := needles([]string{"short", "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n", "long-enough"})
	want := []string{"MIIBszCCAVmgAwIBAgIU", "long-enough"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("needles = %q, want %q", got, want)
	}
}

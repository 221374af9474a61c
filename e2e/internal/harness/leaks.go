package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// minNeedle is the shortest secret value searched for: shorter ones occur in logs by chance.
const minNeedle = 8

// needles are the secret strings to look for: each value, or for a multi-line value (PEM) each
// of its lines but the BEGIN/END markers; at least minNeedle bytes.
func needles(values []string) []string {
	var out []string
	for _, v := range values {
		for _, line := range strings.Split(v, "\n") {
			line = strings.TrimSpace(line)
			if len(line) >= minNeedle && !strings.HasPrefix(line, "-----") {
				out = append(out, line)
			}
		}
	}
	return out
}

// LeakFindings runs scripts/leak-scan.sh (the credential shapes of tests/leak-patterns.txt, as
// the Rust integration tests use them) over the provider's log, with every secret this
// environment handed out as known values: the stored secret values (certificate-backed ones
// too), the access tokens issued, the service-account tokens minted, the service principal's
// secret and extra. A finding names the log line and what matched, never the secret itself.
func (e *Env) LeakFindings(extra ...string) ([]string, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return nil, fmt.Errorf("cannot locate the harness source to find scripts/leak-scan.sh")
	}
	script := filepath.Join(filepath.Dir(self), "..", "..", "..", "scripts", "leak-scan.sh")
	values := append([]string{SPClientSecret}, extra...)
	if e.Vault != nil {
		values = append(values, e.Vault.SecretValues()...)
	}
	if e.Tokens != nil {
		values = append(values, e.Tokens.Issued()...)
	}
	if e.Issuer != nil {
		values = append(values, e.Issuer.Minted()...)
	}
	file, err := os.CreateTemp(e.Dir, "leak-values-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(file.Name())
	_, err = file.WriteString(strings.Join(needles(values), "\n") + "\n")
	if cerr := file.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	out, err := exec.Command("bash", script, "--values", file.Name(), e.LogFile).CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		return nil, fmt.Errorf("%s: %v: %s", script, err, out)
	}
	var findings []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, e.LogFile+":") {
			findings = append(findings, line)
		}
	}
	if err != nil && len(findings) == 0 {
		return nil, fmt.Errorf("%s failed without findings: %s", script, out)
	}
	return findings, nil
}

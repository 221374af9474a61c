package harness

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
)

// minNeedle is the shortest secret value searched for: shorter ones occur in logs by chance.
const minNeedle = 8

// leakPatterns reads the credential shapes the Rust integration tests scan for
// (tests/leak-patterns.txt: JWTs, bearer headers, OAuth form fields, token JSON, PEM private keys).
func leakPatterns() ([]*regexp.Regexp, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return nil, fmt.Errorf("cannot locate the harness source to find tests/leak-patterns.txt")
	}
	path := filepath.Join(filepath.Dir(self), "..", "..", "..", "tests", "leak-patterns.txt")
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*regexp.Regexp
	for _, line := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		re, err := regexp.Compile(line)
		if err != nil {
			return nil, fmt.Errorf("%s: pattern %q: %w", path, line, err)
		}
		out = append(out, re)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no patterns", path)
	}
	return out, nil
}

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

// LeakFindings scans the provider's log for credential shapes and for every secret this
// environment handed out: the stored secret values (certificate-backed ones too), the access
// tokens issued, the service-account tokens minted, the service principal's secret and extra.
// A finding names the log line and what matched, never the secret itself.
func (e *Env) LeakFindings(extra ...string) ([]string, error) {
	patterns, err := leakPatterns()
	if err != nil {
		return nil, err
	}
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
	secrets := needles(values)
	f, err := os.Open(e.LogFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var findings []string
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for n := 1; scanner.Scan(); n++ {
		line := scanner.Text()
		for _, re := range patterns {
			if re.MatchString(line) {
				findings = append(findings, fmt.Sprintf("%s:%d: matches the credential pattern %q", e.LogFile, n, re.String()))
			}
		}
		for i, s := range secrets {
			if strings.Contains(line, s) {
				findings = append(findings, fmt.Sprintf("%s:%d: contains secret #%d (%d bytes)", e.LogFile, n, i, len(s)))
			}
		}
	}
	return findings, scanner.Err()
}

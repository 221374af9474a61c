// End-to-end tests: the provider binary, called through the Secrets Store CSI Driver's own client
// package (sigs.k8s.io/secrets-store-csi-driver/pkg/secrets-store), reading from a Key Vault
// emulator over TLS with challenge authentication and tokens from an Entra-like token service.
//
// Run with e2e/run.sh, or: cargo build -p akv-csi-provider && cd e2e && go test ./...
// AKV_PROVIDER_BIN overrides the binary (default ../target/debug/akv-csi-provider).
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"akv-csi-provider/e2e/internal/harness"
)

var env *harness.Env

func providerBin() string {
	if b := os.Getenv("AKV_PROVIDER_BIN"); b != "" {
		return b
	}
	return filepath.Join("..", "target", "debug", "akv-csi-provider")
}

func TestMain(m *testing.M) {
	var err error
	env, err = harness.Start(harness.Options{ProviderBin: providerBin()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cannot start the environment:", err)
		os.Exit(1)
	}
	code := m.Run()
	env.Close()
	if !scanLeaks(env) && code == 0 {
		code = 1
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "e2e: provider log (%s):\n%s\n", env.LogFile, tail(env.ProviderLog(), 60))
	} else {
		_ = os.RemoveAll(env.Dir)
	}
	os.Exit(code)
}

// scanLeaks runs the log-leak scan over e's provider log (credential shapes and every secret e
// handed out) and reports whether it is clean.
func scanLeaks(e *harness.Env) bool {
	findings, err := e.LeakFindings()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: leak scan:", err)
		return false
	}
	for _, f := range findings {
		fmt.Fprintln(os.Stderr, "e2e: leak:", f)
	}
	if len(findings) == 0 {
		fmt.Fprintf(os.Stderr, "e2e: leak scan of %s: clean\n", e.LogFile)
	}
	return len(findings) == 0
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return c
}

// spMount mounts objects as the service principal into target.
func spMount(t *testing.T, target string, objects ...string) (map[string]string, error) {
	t.Helper()
	attrs := harness.Attributes(env.Params(harness.Objects(objects...), nil), harness.DefaultPod, "")
	versions, _, err := env.Mount(ctx(t), attrs, harness.SPSecrets(harness.SPClientID, harness.SPClientSecret), target)
	return versions, err
}

// setSecret stores a new version through Microsoft's Go SDK and returns its version id.
func setSecret(t *testing.T, name, value string) string {
	t.Helper()
	return setSecretTyped(t, name, value, "")
}

func setSecretTyped(t *testing.T, name, value, contentType string) string {
	t.Helper()
	params := azsecretsSet(value, contentType)
	resp, err := env.Secrets(harness.VaultName).SetSecret(ctx(t), name, params, nil)
	if err != nil {
		t.Fatalf("seeding secret %s: %v", name, err)
	}
	return resp.ID.Version()
}

// file is one file as the pod sees it.
type file struct {
	Mode fs.FileMode
	Data []byte
}

// snapshot is the target folder as the driver's atomic writer left it.
type snapshot struct {
	DataLink string          // where ..data points
	Files    map[string]file // path relative to target -> file (followed through the symlinks)
}

func takeSnapshot(t *testing.T, target string) snapshot {
	t.Helper()
	s := snapshot{Files: map[string]file{}}
	link, err := os.Readlink(filepath.Join(target, "..data"))
	if err != nil {
		t.Fatalf("%s has no ..data symlink: %v", target, err)
	}
	s.DataLink = link
	entries, err := os.ReadDir(target)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		if e.Type()&fs.ModeSymlink == 0 {
			t.Errorf("%s is not a symlink into ..data (the driver's atomic writer makes one per top-level entry)", e.Name())
		}
		collect(t, target, e.Name(), s.Files)
	}
	return s
}

// collect reads rel (following symlinks, as a pod does) into files.
func collect(t *testing.T, target, rel string, files map[string]file) {
	t.Helper()
	p := filepath.Join(target, rel)
	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if info.IsDir() {
		entries, err := os.ReadDir(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			collect(t, target, rel+"/"+e.Name(), files)
		}
		return
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	files[rel] = file{Mode: info.Mode().Perm(), Data: data}
}

func (s snapshot) paths() []string {
	var p []string
	for k := range s.Files {
		p = append(p, k)
	}
	slices.Sort(p)
	return p
}

func sameSnapshot(t *testing.T, before, after snapshot) {
	t.Helper()
	if before.DataLink != after.DataLink {
		t.Errorf("..data moved from %s to %s", before.DataLink, after.DataLink)
	}
	if !slices.Equal(before.paths(), after.paths()) {
		t.Errorf("files changed: %v -> %v", before.paths(), after.paths())
	}
	for p, f := range before.Files {
		g := after.Files[p]
		if g.Mode != f.Mode || !bytes.Equal(g.Data, f.Data) {
			t.Errorf("%s changed", p)
		}
	}
}

// wantCode asserts a gRPC error code from the driver's client.
func wantCode(t *testing.T, err error, codesOK ...codes.Code) *status.Status {
	t.Helper()
	if err == nil {
		t.Fatalf("mount succeeded; want one of %v", codesOK)
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("not a gRPC status: %v", err)
	}
	if !slices.Contains(codesOK, st.Code()) {
		t.Fatalf("code %v (%s); want one of %v", st.Code(), st.Message(), codesOK)
	}
	return st
}

// assertNoLeaks checks the provider never logged a secret value or credential.
func assertNoLeaks(t *testing.T, needles ...string) {
	t.Helper()
	logs := env.ProviderLog()
	for _, n := range append(needles, harness.SPClientSecret) {
		if len(n) >= 8 && strings.Contains(logs, n) { // shorter needles match by chance
			t.Errorf("the provider log contains a secret: %q", n)
		}
	}
	for _, tok := range env.Tokens.Issued() {
		if strings.Contains(logs, tok) {
			t.Errorf("the provider log contains an access token")
		}
	}
	for _, tok := range env.Issuer.Minted() {
		if strings.Contains(logs, tok) {
			t.Errorf("the provider log contains a service account token")
		}
	}
}

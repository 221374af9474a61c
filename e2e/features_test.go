package e2e

// Scenarios for the provider's opt-in features (README "Beyond the Go provider"), through the
// driver's client: optional objects, jsonKeys, per-object keyvaultName, objectNamePrefix /
// objectTags; then the validate command and the standalone agent run as the binary.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	"google.golang.org/grpc/codes"

	"akv-csi-provider/e2e/internal/harness"
	"akv-csi-provider/e2e/internal/kvemu"
)

// seed stores a secret version in vault with optional tags and enabled flag; returns its version.
func seed(t *testing.T, vault, name, value string, tags map[string]string, enabled bool) string {
	t.Helper()
	p := azsecrets.SetSecretParameters{Value: &value, SecretAttributes: &azsecrets.SecretAttributes{Enabled: &enabled}}
	if tags != nil {
		p.Tags = map[string]*string{}
		for k, v := range tags {
			p.Tags[k] = &v
		}
	}
	resp, err := env.Secrets(vault).SetSecret(ctx(t), name, p, nil)
	if err != nil {
		t.Fatalf("seeding %s/%s: %v", vault, name, err)
	}
	return resp.ID.Version()
}

// wantFiles checks the mounted paths and their contents (and mode, when mode != 0).
func wantFiles(t *testing.T, snap snapshot, want map[string]string, mode os.FileMode) {
	t.Helper()
	if got, w := snap.paths(), slices.Sorted(maps.Keys(want)); !slices.Equal(got, w) {
		t.Errorf("files %v, want %v", got, w)
	}
	for p, v := range want {
		f, ok := snap.Files[p]
		if !ok {
			continue
		}
		if string(f.Data) != v {
			t.Errorf("%s = %q, want %q", p, f.Data, v)
		}
		if mode != 0 && f.Mode != mode {
			t.Errorf("%s has mode %04o, want %04o", p, f.Mode, mode)
		}
	}
}

func wantVersions(t *testing.T, got, want map[string]string) {
	t.Helper()
	if !maps.Equal(got, want) {
		t.Errorf("object versions %v, want %v", got, want)
	}
}

// TestOptionalObjects: a missing and a disabled optional object are skipped (no file, no object
// version) while the required object mounts; without optional the missing one fails NotFound.
func TestOptionalObjects(t *testing.T) {
	v := seed(t, harness.VaultName, "feat-opt-present", "present value", nil, true)
	seed(t, harness.VaultName, "feat-opt-disabled", "disabled value", nil, false)
	target := t.TempDir()
	versions, err := spMount(t, target,
		harness.Object("objectName", "feat-opt-present", "objectType", "secret"),
		"objectName: feat-opt-missing\nobjectType: secret\noptional: true\n",
		"objectName: feat-opt-disabled\nobjectType: secret\noptional: true\n",
	)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	wantFiles(t, takeSnapshot(t, target), map[string]string{"feat-opt-present": "present value"}, 0o644)
	wantVersions(t, versions, map[string]string{"secret/feat-opt-present": v})
	if !strings.Contains(env.ProviderLog(), "optional object skipped") {
		t.Errorf("the provider did not log the skipped optional objects")
	}

	t.Run("required missing object still fails", func(t *testing.T) {
		before := takeSnapshot(t, target)
		_, err := spMount(t, target,
			harness.Object("objectName", "feat-opt-present", "objectType", "secret"),
			harness.Object("objectName", "feat-opt-missing", "objectType", "secret"),
		)
		wantCode(t, err, codes.NotFound)
		sameSnapshot(t, before, takeSnapshot(t, target))
	})
}

// TestNetworkRefusalsAreNotSkipped: a vault that refuses the node's network (Key Vault's 403
// ForbiddenByConnection / ForbiddenByFirewall, served by the stand-in from the shared fixtures)
// fails the mount with FailedPrecondition naming the private endpoint or the firewall, even for an
// optional object: a sync must not "succeed" with no files.
func TestNetworkRefusalsAreNotSkipped(t *testing.T) {
	networkVault.Do(func() { env.Vault.AddVault("kv3", harness.Tenant) })
	seed(t, harness.VaultName, "feat-net-present", "present value", nil, true)
	for fixture, want := range map[string]string{
		kvemu.ForbiddenByConnection: "reach it through a private endpoint",
		kvemu.ForbiddenByFirewall:   "the vault's firewall does not allow this node's address",
	} {
		t.Run(fixture, func(t *testing.T) {
			if err := env.Vault.DenyNetwork("kv3", fixture); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = env.Vault.DenyNetwork("kv3", "") }()
			_, err := spMount(t, t.TempDir(),
				harness.Object("objectName", "feat-net-present", "objectType", "secret"),
				"objectName: feat-net-behind-rules\nobjectType: secret\nkeyvaultName: kv3\noptional: true\n",
			)
			st := wantCode(t, err, codes.FailedPrecondition)
			if !strings.Contains(st.Message(), want) {
				t.Errorf("message %q lacks %q", st.Message(), want)
			}
		})
	}
}

var networkVault sync.Once

const jsonValue = `{"username":"app","password":"p@ss-json-7f2c1a","conn":{"port":5432,"hosts":["a.example","b.example"],"tls":true}}`

// TestJSONKeys: chosen keys of a JSON secret as separate files (path, alias, list index,
// non-string as compact JSON), version ids secret/<name>#<file>, the object's filePermission;
// the same object listed again without jsonKeys gives the whole value. A missing key or a value
// that is not JSON fails with InvalidArgument, without quoting the value.
func TestJSONKeys(t *testing.T) {
	v := seed(t, harness.VaultName, "feat-json", jsonValue, nil, true)
	seed(t, harness.VaultName, "feat-json-plain", "plain-text-not-json-4d1e", nil, true)
	target := t.TempDir()
	versions, err := spMount(t, target,
		`objectName: feat-json
objectType: secret
filePermission: "0600"
jsonKeys:
  - username
  - key: password
    alias: db/password
  - key: conn.port
    alias: db/port
  - key: conn.hosts.1
    alias: db/host
  - key: conn
    alias: conn.json
`,
		harness.Object("objectName", "feat-json", "objectType", "secret", "objectAlias", "whole.json"),
	)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	snap := takeSnapshot(t, target)
	wantFiles(t, snap, map[string]string{
		"username":    "app",
		"db/password": "p@ss-json-7f2c1a",
		"db/port":     "5432",
		"db/host":     "b.example",
		"conn.json":   snap.Files["conn.json"].String(), // compared as JSON below
		"whole.json":  jsonValue,
	}, 0)
	// A non-string value is compact JSON (key order is the provider's choice).
	var gotConn, wantConn any
	if raw := snap.Files["conn.json"].Data; bytes.ContainsAny(raw, " \n") || json.Unmarshal(raw, &gotConn) != nil {
		t.Errorf("conn.json = %q; want compact JSON", raw)
	}
	_ = json.Unmarshal([]byte(`{"port":5432,"hosts":["a.example","b.example"],"tls":true}`), &wantConn)
	if !reflect.DeepEqual(gotConn, wantConn) {
		t.Errorf("conn.json = %v, want %v", gotConn, wantConn)
	}
	for _, p := range []string{"username", "db/password", "db/port", "db/host", "conn.json"} {
		if m := snap.Files[p].Mode; m != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", p, m)
		}
	}
	wantVersions(t, versions, map[string]string{
		"secret/feat-json#username":    v,
		"secret/feat-json#db/password": v,
		"secret/feat-json#db/port":     v,
		"secret/feat-json#db/host":     v,
		"secret/feat-json#conn.json":   v,
		"secret/feat-json":             v,
	})

	for _, c := range []struct{ name, object, want string }{
		{"missing key", "objectName: feat-json\nobjectType: secret\njsonKeys:\n  - conn.user\n", `key "conn.user" is not in the secret's JSON value`},
		{"value is not JSON", "objectName: feat-json-plain\nobjectType: secret\njsonKeys:\n  - a\n", "is not JSON"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := takeSnapshot(t, target)
			_, err := spMount(t, target, c.object)
			st := wantCode(t, err, codes.InvalidArgument)
			if !strings.Contains(st.Message(), c.want) {
				t.Errorf("message %q does not contain %q", st.Message(), c.want)
			}
			if strings.Contains(st.Message(), "p@ss-json") || strings.Contains(st.Message(), "plain-text-not-json") {
				t.Errorf("the message quotes the value: %q", st.Message())
			}
			sameSnapshot(t, before, takeSnapshot(t, target))
		})
	}
	assertNoLeaks(t, "p@ss-json-7f2c1a", "plain-text-not-json-4d1e")
}

var secondVault sync.Once

// addSecondVault registers kv2 (same tenant; the emulator grants every token of the tenant).
func addSecondVault() { secondVault.Do(func() { env.Vault.AddVault("kv2", harness.Tenant) }) }

// TestPerObjectVault: objects from two vaults in one SPC; the same name in both stays distinct
// (ids <type>/<name>@<vault> for the other vault); an optional object missing in kv2 is skipped;
// both vaults were actually read.
func TestPerObjectVault(t *testing.T) {
	addSecondVault()
	v1 := seed(t, harness.VaultName, "feat-shared", "from kv1", nil, true)
	v2 := seed(t, "kv2", "feat-shared", "from kv2", nil, true)
	v3 := seed(t, "kv2", "feat-kv2-only", "only in kv2", nil, true)
	target := t.TempDir()
	versions, err := spMount(t, target,
		harness.Object("objectName", "feat-shared", "objectType", "secret"),
		harness.Object("objectName", "feat-shared", "objectType", "secret", "keyvaultName", "kv2", "objectAlias", "shared-kv2"),
		harness.Object("objectName", "feat-kv2-only", "objectType", "secret", "keyvaultName", "kv2"),
		"objectName: feat-kv2-missing\nobjectType: secret\nkeyvaultName: kv2\noptional: true\n",
	)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	wantFiles(t, takeSnapshot(t, target), map[string]string{
		"feat-shared":   "from kv1",
		"shared-kv2":    "from kv2",
		"feat-kv2-only": "only in kv2",
	}, 0o644)
	wantVersions(t, versions, map[string]string{
		"secret/feat-shared":       v1,
		"secret/feat-shared@kv2":   v2,
		"secret/feat-kv2-only@kv2": v3,
	})
	read := map[string]bool{}
	for _, r := range env.Vault.Requests() {
		if r.ClientID == harness.SPClientID && r.Status == 200 && strings.HasPrefix(r.Path, "/secrets/feat-") {
			read[r.Vault+strings.TrimSuffix(r.Path, "/")] = true
		}
	}
	for _, p := range []string{"kv1/secrets/feat-shared", "kv2/secrets/feat-shared", "kv2/secrets/feat-kv2-only"} {
		if !read[p] {
			t.Errorf("the provider did not read %s (reads: %v)", p, slices.Sorted(maps.Keys(read)))
		}
	}
}

// TestPrefixAndTags: bulk entries select enabled secrets by name prefix (case-insensitive) and by
// tags (all of them; names case-insensitive, values exact), at their latest version, as
// <objectAlias>/<name>, with ids secret/<name>; the vault listing spans several pages. No match
// fails NotFound unless the entry is optional.
func TestPrefixAndTags(t *testing.T) {
	for i := range 26 { // with these, the listing has more than one page (25 a page)
		seed(t, harness.VaultName, fmt.Sprintf("featfill-%02d", i), "filler", nil, true)
	}
	seed(t, harness.VaultName, "featpfx-a", "a old", nil, true)
	va := seed(t, harness.VaultName, "featpfx-a", "a new", nil, true)
	vb := seed(t, harness.VaultName, "featpfx-b", "b", nil, true)
	vu := seed(t, harness.VaultName, "FeatPfx-Upper", "upper", nil, true)
	seed(t, harness.VaultName, "featpfx-off", "value-of-a-disabled-secret", nil, false)
	prod := map[string]string{"team": "payments", "env": "prod"}
	t1 := seed(t, harness.VaultName, "feattag-1", "tag one", prod, true)
	seed(t, harness.VaultName, "feattag-2", "tag two", map[string]string{"team": "payments"}, true)
	t3 := seed(t, harness.VaultName, "feattag-3", "tag three", map[string]string{"Team": "payments", "env": "prod"}, true)
	seed(t, harness.VaultName, "feattag-4", "tag four", map[string]string{"team": "Payments", "env": "prod"}, true)

	target := t.TempDir()
	seen := len(env.Vault.Requests())
	versions, err := spMount(t, target,
		"objectNamePrefix: featpfx-\nobjectType: secret\nobjectAlias: pfx\n",
		"objectTags:\n  team: payments\n  env: prod\nobjectType: secret\nobjectAlias: tagged\nfilePermission: \"0600\"\n",
		"objectNamePrefix: featnomatch-\nobjectType: secret\noptional: true\n",
	)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	snap := takeSnapshot(t, target)
	wantFiles(t, snap, map[string]string{
		"pfx/featpfx-a":     "a new",
		"pfx/featpfx-b":     "b",
		"pfx/FeatPfx-Upper": "upper",
		"tagged/feattag-1":  "tag one",
		"tagged/feattag-3":  "tag three",
	}, 0)
	for p, f := range snap.Files {
		want := os.FileMode(0o644)
		if strings.HasPrefix(p, "tagged/") {
			want = 0o600
		}
		if f.Mode != want {
			t.Errorf("%s has mode %04o, want %04o", p, f.Mode, want)
		}
	}
	wantVersions(t, versions, map[string]string{
		"secret/featpfx-a":     va,
		"secret/featpfx-b":     vb,
		"secret/FeatPfx-Upper": vu,
		"secret/feattag-1":     t1,
		"secret/feattag-3":     t3,
	})
	pages := 0
	for _, r := range env.Vault.Requests()[seen:] {
		if strings.TrimSuffix(r.Path, "/") == "/secrets" && r.ClientID == harness.SPClientID && r.Status == 200 {
			pages++
		}
	}
	if pages < 2 || pages > 4 { // listed once per mount; 35 to ~100 secrets by now: 2 to 4 pages
		t.Errorf("the provider read %d pages of the secret list; want the whole list (2 to 4 pages of 25), once", pages)
	}

	t.Run("no match without optional", func(t *testing.T) {
		before := takeSnapshot(t, target)
		_, err := spMount(t, target, "objectNamePrefix: featnomatch-\nobjectType: secret\n")
		wantCode(t, err, codes.NotFound)
		sameSnapshot(t, before, takeSnapshot(t, target))
	})
}

// TestValidateCommand runs `akv-csi-provider validate` on a valid and an invalid manifest.
func TestValidateCommand(t *testing.T) {
	run := func(files ...string) (int, string, string) {
		cmd := exec.Command(providerBin(), append([]string{"validate"}, files...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, stdout.String(), stderr.String()
	}
	t.Run("valid", func(t *testing.T) {
		code, stdout, stderr := run("testdata/spc-valid.yaml")
		if code != 0 || stdout != "" {
			t.Errorf("exit %d, stdout %q, stderr %q; want exit 0 and no problems", code, stdout, stderr)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		code, stdout, stderr := run("testdata/spc-valid.yaml", "testdata/spc-invalid.yaml")
		if code != 1 {
			t.Errorf("exit %d; want 1 (stdout %q, stderr %q)", code, stdout, stderr)
		}
		for _, want := range validateWant {
			if !strings.Contains(stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, stdout)
			}
		}
		if strings.Contains(stdout, "spc-valid.yaml") {
			t.Errorf("problems reported for the valid file:\n%s", stdout)
		}
	})
}

var validateWant = []string{
	"testdata/spc-invalid.yaml:doc 1: spec.parameters.usePodIdentity: is a boolean",
	"testdata/spc-invalid.yaml:doc 1: spec.parameters.keyVaultName: is not a parameter of this provider",
	`testdata/spc-invalid.yaml:doc 1: spec.parameters.objects.array[1]: object "tls": objectType "Cert" is not one of secret, key, cert`,
	`testdata/spc-invalid.yaml:doc 2: spec.parameters.objects: objects "db-creds" and "password" both write "password"`,
}

// TestAgentOnceMatchesMount: `akv-csi-provider agent --once` with a service principal secret
// file publishes the same files (paths, bytes, modes) as MountContent for the same SPC, in the
// driver's ..data layout, and logs no secret.
func TestAgentOnceMatchesMount(t *testing.T) {
	seed(t, harness.VaultName, "feat-agent-plain", "agent plain value", nil, true)
	seed(t, harness.VaultName, "feat-agent-json", `{"url":"https://api.example","key":"agent-api-key-93b1"}`, nil, true)
	seed(t, harness.VaultName, "featagent-x", "bulk x", nil, true)
	seed(t, harness.VaultName, "featagent-y", "bulk y", nil, true)
	objects := []string{
		"objectName: feat-agent-plain\nobjectType: secret\nfilePermission: \"0600\"\n",
		"objectName: feat-agent-json\nobjectType: secret\njsonKeys:\n  - key: url\n    alias: api/url\n  - key: key\n    alias: api/key\n",
		"objectNamePrefix: featagent-\nobjectType: secret\nobjectAlias: shared\n",
		"objectName: feat-agent-absent\nobjectType: secret\noptional: true\n",
	}
	mounted := t.TempDir()
	versions, err := spMount(t, mounted, objects...)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	if len(versions) != 5 {
		t.Errorf("mount versions %v; want 5", versions)
	}

	dir := t.TempDir()
	var spc strings.Builder
	spc.WriteString("apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\nmetadata:\n  name: " + harness.SPCName + "\nspec:\n  provider: azure\n  parameters:\n")
	params := env.Params(harness.Objects(objects...), nil)
	for _, k := range slices.Sorted(maps.Keys(params)) {
		if k == "objects" {
			continue
		}
		fmt.Fprintf(&spc, "    %s: %q\n", k, params[k])
	}
	spc.WriteString("    objects: |\n")
	for _, line := range strings.Split(strings.TrimRight(params["objects"], "\n"), "\n") {
		spc.WriteString("      " + line + "\n")
	}
	spcFile := filepath.Join(dir, "spc.yaml")
	secretFile := filepath.Join(dir, "client-secret")
	if err := os.WriteFile(spcFile, []byte(spc.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secretFile, []byte(harness.SPClientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "secrets")
	cmd := exec.CommandContext(ctx(t), providerBin(), "agent", "--once",
		"--spc="+spcFile, "--target-dir="+target,
		"--client-id="+harness.SPClientID, "--client-secret-file="+secretFile,
		"--ca-file="+env.CAFile,
		"--resolve=*."+harness.VaultDNSSuffix+"=127.0.0.1", "--resolve="+harness.AuthorityHost+"=127.0.0.1",
		"-v=2")
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(e string) bool {
		return strings.HasPrefix(e, "AZURE_") || strings.HasPrefix(e, "RUST_LOG=")
	}), "NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("agent --once: %v\n%s", err, out)
	}
	for _, s := range []string{harness.SPClientSecret, "agent plain value", "agent-api-key-93b1"} {
		if bytes.Contains(out, []byte(s)) {
			t.Errorf("the agent log contains a secret: %q", s)
		}
	}

	want, got := takeSnapshot(t, mounted), takeSnapshot(t, target)
	if !strings.HasPrefix(got.DataLink, "..") {
		t.Errorf("..data points at %q; want a hidden timestamped folder", got.DataLink)
	}
	if !slices.Equal(got.paths(), want.paths()) {
		t.Fatalf("agent files %v, mount files %v", got.paths(), want.paths())
	}
	for p, f := range want.Files {
		g := got.Files[p]
		if !bytes.Equal(g.Data, f.Data) || g.Mode != f.Mode {
			t.Errorf("%s: agent %04o %q, mount %04o %q", p, g.Mode, g.Data, f.Mode, f.Data)
		}
	}
	wantFiles(t, got, map[string]string{
		"feat-agent-plain":   "agent plain value",
		"api/url":            "https://api.example",
		"api/key":            "agent-api-key-93b1",
		"shared/featagent-x": "bulk x",
		"shared/featagent-y": "bulk y",
	}, 0)
}

func (f file) String() string { return string(f.Data) }

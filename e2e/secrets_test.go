package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"akv-csi-provider/e2e/internal/harness"
)

// expectations mirrors tests/fixtures/expectations/secrets.json.
type expectations struct {
	Cases []struct {
		Name           string            `json:"name"`
		Versions       []string          `json:"versions"`
		Pin            *int              `json:"pin"`
		Object         map[string]string `json:"object"`
		Files          []expectedFile    `json:"files"`
		ObjectVersions map[string]int    `json:"objectVersions"`
	} `json:"cases"`
}

type expectedFile struct {
	Path string  `json:"path"`
	Mode string  `json:"mode"`
	UTF8 *string `json:"utf8"`
	Hex  *string `json:"hex"`
}

func (f expectedFile) bytes(t *testing.T) []byte {
	switch {
	case f.UTF8 != nil:
		return []byte(*f.UTF8)
	case f.Hex != nil:
		b, err := hex.DecodeString(*f.Hex)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	t.Fatalf("expected file %s has no content", f.Path)
	return nil
}

func loadExpectations(t *testing.T) expectations {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "tests", "fixtures", "expectations", "secrets.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e expectations
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatal(err)
	}
	if len(e.Cases) == 0 {
		t.Fatal("no cases in secrets.json")
	}
	return e
}

// objectYAML renders an expectation's object with its pinned version filled in; keys sorted.
func objectYAML(object map[string]string, pinned string) string {
	o := maps.Clone(object)
	if pinned != "" {
		o["objectVersion"] = pinned
	}
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(o)) {
		kv = append(kv, k, o[k])
	}
	return harness.Object(kv...)
}

// TestSecretsMatchSharedExpectations seeds every case of the shared expectations file, mounts
// each alone and then all together, and compares files, modes (stat through the driver's
// symlinks) and object versions.
func TestSecretsMatchSharedExpectations(t *testing.T) {
	exp := loadExpectations(t)
	type seeded struct {
		object string
		ids    []string
	}
	var all []seeded
	for _, c := range exp.Cases {
		obj := c.Object
		var ids []string
		for _, v := range c.Versions {
			ids = append(ids, setSecret(t, obj["objectName"], v))
		}
		pinned := ""
		if c.Pin != nil {
			pinned = ids[*c.Pin]
		}
		all = append(all, seeded{objectYAML(obj, pinned), ids})
	}
	check := func(t *testing.T, target string, versions map[string]string, idx []int) {
		t.Helper()
		snap := takeSnapshot(t, target)
		var wantPaths []string
		wantVersions := map[string]string{}
		for _, i := range idx {
			c := exp.Cases[i]
			for _, f := range c.Files {
				wantPaths = append(wantPaths, f.Path)
				got, ok := snap.Files[f.Path]
				if !ok {
					t.Errorf("%s: file %s missing; have %v", c.Name, f.Path, snap.paths())
					continue
				}
				mode, _ := strconv.ParseUint(f.Mode, 8, 32)
				if got.Mode != fs.FileMode(mode) {
					t.Errorf("%s: %s has mode %04o, want %s", c.Name, f.Path, got.Mode, f.Mode)
				}
				if want := f.bytes(t); !bytes.Equal(got.Data, want) {
					t.Errorf("%s: %s = %q, want %q", c.Name, f.Path, got.Data, want)
				}
			}
			for id, vi := range c.ObjectVersions {
				wantVersions[id] = all[i].ids[vi]
			}
		}
		slices.Sort(wantPaths)
		if !slices.Equal(snap.paths(), wantPaths) {
			t.Errorf("files %v, want %v", snap.paths(), wantPaths)
		}
		if !maps.Equal(versions, wantVersions) {
			t.Errorf("object versions %v, want %v", versions, wantVersions)
		}
	}
	for i, c := range exp.Cases {
		t.Run(c.Name, func(t *testing.T) {
			target := t.TempDir()
			versions, err := spMount(t, target, all[i].object)
			if err != nil {
				t.Fatalf("mount: %v", err)
			}
			check(t, target, versions, []int{i})
		})
	}
	t.Run("all cases in one SecretProviderClass", func(t *testing.T) {
		target := t.TempDir()
		var objs []string
		var idx []int
		for i, s := range all {
			objs = append(objs, s.object)
			idx = append(idx, i)
		}
		versions, err := spMount(t, target, objs...)
		if err != nil {
			t.Fatalf("mount: %v", err)
		}
		check(t, target, versions, idx)
	})
	var values []string
	for _, c := range exp.Cases {
		values = append(values, c.Versions...)
	}
	assertNoLeaks(t, values...)
}

// TestOneMebibyteSecret: a 1 MiB value travels through gRPC (the driver logs above 1 MiB and
// caps replies at 4 MiB) and lands byte for byte.
func TestOneMebibyteSecret(t *testing.T) {
	raw := make([]byte, 768*1024)
	_, _ = rand.Read(raw)
	value := base64.StdEncoding.EncodeToString(raw) // exactly 1 MiB of text
	if len(value) != 1<<20 {
		t.Fatalf("value is %d bytes", len(value))
	}
	ver := setSecret(t, "big-secret", value)
	target := t.TempDir()
	versions, err := spMount(t, target,
		harness.Object("objectName", "big-secret", "objectType", "secret"),
		harness.Object("objectName", "big-secret", "objectType", "secret", "objectEncoding", "base64", "objectAlias", "big.bin"),
	)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	snap := takeSnapshot(t, target)
	if got := snap.Files["big-secret"].Data; string(got) != value {
		t.Errorf("big-secret: %d bytes differ from the 1 MiB stored", len(got))
	}
	if got := snap.Files["big.bin"].Data; !bytes.Equal(got, raw) {
		t.Errorf("big.bin: %d bytes, want the %d decoded bytes", len(got), len(raw))
	}
	if versions["secret/big-secret"] != ver {
		t.Errorf("versions %v", versions)
	}
}

// TestFiftyObjects: one SecretProviderClass with 50 objects (the provider fetches them
// concurrently); every file and version comes back in order.
func TestFiftyObjects(t *testing.T) {
	const n = 50
	var objs []string
	want := map[string]string{}
	for i := range n {
		name := fmt.Sprintf("bulk-%02d", i)
		want["secret/"+name] = setSecret(t, name, "value of "+name)
		objs = append(objs, harness.Object("objectName", name, "objectType", "secret", "objectAlias", "bulk/"+name))
	}
	target := t.TempDir()
	versions, err := spMount(t, target, objs...)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	if !maps.Equal(versions, want) {
		t.Errorf("got %d versions, want %d", len(versions), len(want))
	}
	snap := takeSnapshot(t, target)
	if len(snap.Files) != n {
		t.Fatalf("%d files, want %d", len(snap.Files), n)
	}
	for i := range n {
		name := fmt.Sprintf("bulk-%02d", i)
		if got := string(snap.Files["bulk/"+name].Data); got != "value of "+name {
			t.Errorf("%s = %q", name, got)
		}
	}
}

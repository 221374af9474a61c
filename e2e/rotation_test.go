package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"

	"akv-csi-provider/e2e/internal/harness"
)

// TestRotation: a new version in the vault shows up on the next Mount (what the driver does
// every --rotation-poll-interval): new version id, new bytes, written by swapping ..data, and the
// old timestamped folder is gone.
func TestRotation(t *testing.T) {
	v1 := setSecret(t, "rotating", "first-value-xyz")
	objs := []string{
		harness.Object("objectName", "rotating", "objectType", "secret"),
		harness.Object("objectName", "rotating", "objectType", "secret", "objectAlias", "nested/rotating.txt", "filePermission", "0400"),
	}
	target := t.TempDir()
	versions, err := spMount(t, target, objs...)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	if versions["secret/rotating"] != v1 {
		t.Fatalf("versions %v, want %s", versions, v1)
	}
	before := takeSnapshot(t, target)

	v2 := setSecret(t, "rotating", "second-value-xyz")
	versions, err = spMount(t, target, objs...)
	if err != nil {
		t.Fatalf("rotation mount: %v", err)
	}
	if versions["secret/rotating"] != v2 || v2 == v1 {
		t.Fatalf("versions after rotation %v, want %s (was %s)", versions, v2, v1)
	}
	after := takeSnapshot(t, target)
	if after.DataLink == before.DataLink {
		t.Errorf("..data still points to %s: the files were not swapped atomically", before.DataLink)
	}
	for _, p := range []string{"rotating", "nested/rotating.txt"} {
		if string(after.Files[p].Data) != "second-value-xyz" {
			t.Errorf("%s = %q after rotation", p, after.Files[p].Data)
		}
	}
	if m := after.Files["nested/rotating.txt"].Mode; m != 0o400 {
		t.Errorf("mode after rotation %04o", m)
	}
	if _, err := os.Stat(filepath.Join(target, before.DataLink)); !os.IsNotExist(err) {
		t.Errorf("the old payload folder %s is still there (%v)", before.DataLink, err)
	}
	assertNoLeaks(t, "first-value-xyz", "second-value-xyz")
}

// TestMissingSecretKeepsPreviousFiles: a Mount naming a secret that does not exist fails with
// NotFound, and what the pod already has stays exactly as it was (no partial write).
func TestMissingSecretKeepsPreviousFiles(t *testing.T) {
	setSecret(t, "present", "present-value")
	present := harness.Object("objectName", "present", "objectType", "secret")
	target := t.TempDir()
	if _, err := spMount(t, target, present); err != nil {
		t.Fatalf("mount: %v", err)
	}
	before := takeSnapshot(t, target)

	_, err := spMount(t, target, present, harness.Object("objectName", "does-not-exist", "objectType", "secret"))
	st := wantCode(t, err, codes.NotFound)
	t.Logf("message: %s", st.Message())
	sameSnapshot(t, before, takeSnapshot(t, target))

	// Deleted from the vault after the first mount: the next rotation fails the same way.
	if _, err := env.Secrets(harness.VaultName).DeleteSecret(ctx(t), "present", nil); err != nil {
		t.Fatal(err)
	}
	_, err = spMount(t, target, present)
	wantCode(t, err, codes.NotFound)
	sameSnapshot(t, before, takeSnapshot(t, target))
}

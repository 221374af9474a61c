package e2e

import (
	"regexp"
	"testing"
)

func TestVersion(t *testing.T) {
	v, err := env.Version(ctx(t))
	if err != nil {
		t.Fatalf("Version through the driver's client: %v", err)
	}
	if !regexp.MustCompile(`^v?\d+\.\d+\.\d+`).MatchString(v) {
		t.Errorf("runtime version %q is not semver", v)
	}
}

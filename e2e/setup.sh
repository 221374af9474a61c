#!/usr/bin/env bash
# Fetches what the end-to-end tests and the demo need: the Go modules of e2e/ (the Secrets Store
# CSI Driver's client, Microsoft's Go SDK for Key Vault, go-pkcs12), pinned by e2e/go.mod and
# e2e/go.sum. Idempotent; once the module cache is filled it needs no network.
# The Key Vault emulator and the token service are Go code in e2e/internal (see e2e/README.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly

fail() { echo "e2e/setup.sh: $*" >&2; exit 1; }
command -v go >/dev/null || fail "go is not installed (Go >= 1.25.9 is needed; the machines have Go 1.26)"
command -v openssl >/dev/null || fail "openssl is not installed (the certificate scenarios compare with it): apt-get install openssl"
command -v cargo >/dev/null || fail "cargo is not installed (the provider is built with cargo)"
want=1.25.9
have=$(go env GOVERSION | sed 's/^go//')
if [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -1)" != "$want" ]; then
  fail "Go $have is older than $want, which e2e/go.mod (sigs.k8s.io/secrets-store-csi-driver v1.6.0) requires"
fi

start=$(date +%s)
if GOPROXY=off go list -deps -test -tags certs ./... >/dev/null 2>&1; then
  echo "e2e/setup.sh: Go modules already in $(go env GOMODCACHE); no download needed"
else
  echo "e2e/setup.sh: downloading the Go modules e2e/ needs (first run only)"
  go list -deps -test -tags certs ./... >/dev/null
fi
fetched=$(date +%s)
echo "e2e/setup.sh: modules ready in $(( fetched - start ))s; compiling e2e/ once to warm the build cache"
go build ./... && go vet -tags certs ./... >/dev/null
echo "e2e/setup.sh: done in $(( $(date +%s) - start ))s (download $(( fetched - start ))s, compile $(( $(date +%s) - fetched ))s)"

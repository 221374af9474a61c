#!/usr/bin/env bash
# Runs the end-to-end tests: builds the provider if needed, compiles the e2e module, runs `go test`. The tests start and stop the Key Vault
# emulator, the token service, the service account issuer and the provider themselves.
# Exits non-zero on any failure and prints per-stage timings.
#   AKV_PROVIDER_BIN=path  use this binary instead of building target/debug/akv-csi-provider
#   E2E_TAGS=<tags>        extra go build tags
#   E2E_RUN=regexp         only the matching tests
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly
timings=()
stage() {
  local name=$1; shift
  local s=$(date +%s)
  printf '\n=== e2e: %s\n' "$name"
  "$@"
  timings+=("$(printf '%-40s %4ss' "$name" $(( $(date +%s) - s )))")
}
report() {
  local rc=$?
  printf '\n=== e2e stage timings\n'
  for t in "${timings[@]}"; do echo "  $t"; done
  [ $rc -eq 0 ] && echo "=== e2e: passed" || echo "=== e2e: FAILED (exit $rc)"
}
trap report EXIT

if [ -z "${AKV_PROVIDER_BIN:-}" ]; then
  stage "build provider (cargo, incremental)" cargo build --manifest-path "$root/Cargo.toml" -p akv-csi-provider --locked
  export AKV_PROVIDER_BIN="$root/target/debug/akv-csi-provider"
  if [ -n "${CARGO_TARGET_DIR:-}" ]; then export AKV_PROVIDER_BIN="$CARGO_TARGET_DIR/debug/akv-csi-provider"; fi
fi
cd "$root/e2e"
stage "compile e2e (go vet)" go vet ./...
args=(-count=1 -v -timeout 10m)
[ -n "${E2E_TAGS:-}" ] && args+=(-tags "$E2E_TAGS")
[ -n "${E2E_RUN:-}" ] && args+=(-run "$E2E_RUN")
stage "run e2e scenarios (go test)" go test "${args[@]}" ./...

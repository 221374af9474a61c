#!/usr/bin/env bash
# The quickstart: builds the provider and the demo, then runs it. The demo starts a Key Vault
# emulator and an Entra-like token service on loopback, seeds a secret and a certificate, starts
# the provider, mounts into ./demo-mount through the Secrets Store CSI Driver's own client,
# prints the tree (values masked), rotates the secret and shows the new file. Ctrl-C stops
# everything it started.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly
demo_pid=""
cleanup() {
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill -TERM "$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

t() { local s=$(date +%s); "$@"; printf '    (%ss)\n' $(( $(date +%s) - s )); }
echo "==> setup (Go modules; offline after the first run)"
t bash e2e/setup.sh
echo "==> build the provider (cargo build -p akv-csi-provider; 3-5 minutes the first time)"
t cargo build -p akv-csi-provider --locked
bin="${CARGO_TARGET_DIR:-$root/target}/debug/akv-csi-provider"
echo "==> build the demo"
mkdir -p .cache
t go -C e2e build -o "$root/.cache/akv-demo" ./cmd/demo
./.cache/akv-demo -provider "$bin" -target demo-mount &
demo_pid=$!
wait "$demo_pid"

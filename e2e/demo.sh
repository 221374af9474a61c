#!/usr/bin/env bash
# The quickstart: builds the provider and the demo, then runs it. The demo starts a Key Vault
# emulator and an Entra-like token service on loopback, seeds a secret and a certificate, starts
# the provider, mounts into ./demo-mount through the Secrets Store CSI Driver's own client,
# prints the tree (values masked), rotates the secret and shows the new file. Ctrl-C stops
# everything it started.
#
# bash e2e/demo.sh --cluster: the cluster quickstart instead. A real etcd and kube-apiserver, the
# Secrets Store CSI Driver's own node plugin installed with its own Helm chart, our provider
# installed with our chart, a pod's volume published by the kubelet stand-in, `kubectl get
# secret` showing the synced Secret (values masked), then a rotation. It must run as root (the
# driver mounts a tmpfs); the first run builds the components (e2e/cluster/setup.sh, about
# 6-10 minutes on two cores, cached under .cache/cluster/). AKV_PROVIDER_BIN=path skips cargo.
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
if [ "${1:-}" = "--cluster" ]; then
  [ "$(id -u)" = 0 ] || { echo "e2e/demo.sh --cluster: must run as root (the driver mounts a tmpfs per volume)" >&2; exit 1; }
  echo "==> setup: etcd, kube-apiserver, kubectl, the driver and its chart, helm (cached under .cache/cluster)"
  mkdir -p .cache
  cluster_setup() { bash e2e/cluster/setup.sh --print-env > .cache/cluster.env; }
  t cluster_setup
  set -a; . .cache/cluster.env; set +a
  bin="${AKV_PROVIDER_BIN:-}"
  if [ -z "$bin" ]; then
    echo "==> build the provider (cargo build -p akv-csi-provider; 3-5 minutes the first time)"
    t cargo build -p akv-csi-provider --locked
    bin="${CARGO_TARGET_DIR:-$root/target}/debug/akv-csi-provider"
  fi
  export AKV_PROVIDER_BIN="$bin"
  echo "==> build the cluster demo"
  t go -C e2e build -tags cluster -o "$root/.cache/akv-cluster-demo" ./cluster/cmd/clusterdemo
  ./.cache/akv-cluster-demo &
  demo_pid=$!
  wait "$demo_pid"
  exit
fi
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

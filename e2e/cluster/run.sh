#!/usr/bin/env bash
# Runs the cluster-true end-to-end scenarios (e2e/cluster, build tag "cluster"): builds or reuses
# the real surroundings (setup.sh: etcd, kube-apiserver, kubectl, the driver's node plugin and
# chart, helm, the Prometheus Operator CRDs, cached under .cache/cluster/), builds the provider
# if needed, then runs `go test` once per Kubernetes version. Exits non-zero on any failing
# scenario and prints per-stage timings (the tests print their own start-up phases).
#   AKV_PROVIDER_BIN=path                  test this binary instead of building it
#   CLUSTER_K8S_VERSIONS="1.35.4 1.30.14"  Kubernetes versions (this default: the newest, and the
#                                          oldest the driver's chart v1.6.0 accepts, >=1.30.0-0)
#   CLUSTER_RUN=regexp                     only the matching tests
#   CLUSTER_KEEP=1                         keep the run folder (logs) even when all pass
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
timings=()
stage() {
  local name=$1; shift
  local s; s=$(date +%s)
  printf '\n=== e2e/cluster: %s (%s)\n' "$name" "$(date -u +%H:%M:%S)"
  "$@"
  timings+=("$(printf '%-58s %4ss' "$name" $(( $(date +%s) - s )))")
}
envfile=$(mktemp)
report() {
  local rc=$?
  rm -f "$envfile"
  printf '\n=== e2e/cluster stage timings\n'
  for t in "${timings[@]}"; do echo "  $t"; done
  [ $rc -eq 0 ] && echo "=== e2e/cluster: passed" || echo "=== e2e/cluster: FAILED (exit $rc)"
}
trap report EXIT

export CLUSTER_K8S_VERSIONS="${CLUSTER_K8S_VERSIONS:-1.35.4 1.30.14}"
[ "$(id -u)" = 0 ] || { echo "e2e/cluster/run.sh: must run as root (the driver mounts a tmpfs per volume)" >&2; exit 1; }
stage "setup: real components (cached under .cache/cluster)" bash -c 'bash "$1/e2e/cluster/setup.sh" --print-env > "$2"' _ "$root" "$envfile"
set -a
# shellcheck disable=SC1090
. "$envfile"
set +a

if [ -z "${AKV_PROVIDER_BIN:-}" ]; then
  stage "build provider (cargo, incremental)" cargo build --manifest-path "$root/Cargo.toml" -p akv-csi-provider --locked
  export AKV_PROVIDER_BIN="${CARGO_TARGET_DIR:-$root/target}/debug/akv-csi-provider"
fi
echo "provider: $AKV_PROVIDER_BIN ($("$AKV_PROVIDER_BIN" --version 2>/dev/null || echo '?'))"

cd "$root/e2e"
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly
stage "compile cluster scenarios (go vet -tags cluster)" go vet -tags cluster ./cluster/...
args=(-tags cluster -count=1 -v -timeout 15m)
[ -n "${CLUSTER_RUN:-}" ] && args+=(-run "$CLUSTER_RUN")
for v in $CLUSTER_K8S_VERSIONS; do
  export CLUSTER_KUBERNETES="$CLUSTER_BIN/kubernetes-v$v"
  stage "scenarios on Kubernetes v$v (go test)" go test "${args[@]}" ./cluster/
done

#!/usr/bin/env bash
# Every test: the workspace's unit and integration tests, then the end-to-end tests
# (the provider binary through the Secrets Store CSI Driver's client against a Key Vault
# emulator and an Entra-like token service over TLS on loopback), then the cluster end to end
# (etcd + kube-apiserver, the driver's own binary and chart; AKV_CLUSTER_E2E=0 skips it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
s=$(date +%s)
cargo test --workspace --locked
cargo_s=$(( $(date +%s) - s ))
s=$(date +%s)
bash e2e/setup.sh
bash e2e/run.sh
e2e_s=$(( $(date +%s) - s ))
cluster_s=skipped
if [ "${AKV_CLUSTER_E2E:-1}" = 1 ]; then
  s=$(date +%s)
  # A real kube-apiserver, the driver's own binary and chart; as root; builds once into .cache/cluster.
  bash e2e/cluster/run.sh
  cluster_s="$(( $(date +%s) - s ))s"
fi
printf '\ncargo test: %ss, e2e (setup + run): %ss, cluster e2e: %s\n' "$cargo_s" "$e2e_s" "$cluster_s"

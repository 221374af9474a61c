#!/usr/bin/env bash
# CI stage: the cluster-true end to end. A real etcd and kube-apiserver, the Secrets Store CSI
# Driver's own node plugin installed through its own Helm chart, our provider installed through
# our chart and run with its DaemonSet's args, a kubelet stand-in, our Key Vault and Entra
# stand-ins (e2e/README.md says which parts are real). The components are built from the
# registries by e2e/cluster/setup.sh and cached under .cache/cluster/ (cold: several minutes on
# two cores; warm: seconds). Any failing scenario fails the stage.
#   AKV_PROVIDER_BIN=path  test this binary (otherwise cargo build -p akv-csi-provider --locked)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)
bash e2e/cluster/run.sh
echo "cluster stage done in $(( $(date +%s) - start ))s"

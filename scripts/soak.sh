#!/usr/bin/env bash
# Soak figures against the release binary: ROTATIONS sequential Mounts of one pod's volume
# (rotation as the driver does it: same request again; the secret gets a new version in Key
# Vault every 500 Mounts and the next Mount must return it). Prints a SOAK line with latency and
# RSS at the end of the warm-up and at the end (VmRSS), and fails if RSS grew more than 8 MiB.
#
#   scripts/soak.sh [ROTATIONS]       default 10000
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export SOAK_ROTATIONS=${1:-10000}
echo "machine: $(nproc) cores, $(rustc --version)"
cargo test --release --locked --test load -- --ignored --nocapture --test-threads=1 \
    sequential_rotations

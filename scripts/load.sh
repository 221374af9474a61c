#!/usr/bin/env bash
# Load figures against the release binary: MOUNTS concurrent mixed Mounts (1-5 objects, three
# identities, aliases, base64, version history) over one connection, then the same load with a
# SIGTERM in the middle. Prints a LOAD line (latency percentiles, peak RSS from VmHWM) and a
# SHUTDOWN line (what finished, what failed and how, exit code, socket removed).
#
#   scripts/load.sh [MOUNTS]          default 1000
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export LOAD_MOUNTS=${1:-1000}
echo "machine: $(nproc) cores, $(rustc --version)"
cargo test --release --locked --test load -- --ignored --nocapture --test-threads=1 \
    concurrent_mounts graceful_shutdown_under_load

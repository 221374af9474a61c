#!/usr/bin/env bash
# Every test: the workspace's unit and integration tests, then the end-to-end tests
# (the provider binary through the Secrets Store CSI Driver's client against a Key Vault
# emulator and an Entra-like token service over TLS on loopback).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
s=$(date +%s)
cargo test --workspace --locked
cargo_s=$(( $(date +%s) - s ))
s=$(date +%s)
bash e2e/setup.sh
bash e2e/run.sh
printf '\ncargo test: %ss, e2e (setup + run): %ss\n' "$cargo_s" $(( $(date +%s) - s ))

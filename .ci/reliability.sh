#!/usr/bin/env bash
# Reliability checks beyond `cargo test --workspace`, which already runs the fault matrix
# (tests/faults.rs), hostile input (tests/hostile.rs), secrets hygiene (tests/hygiene.rs), the
# leak scan of every provider log, and every fuzz seed and regression input (fuzz::tests).
#
# Here: reduced load and soak (debug build, reusing the test build; well under 60 s), and a short
# run of every fuzz target when cargo-fuzz and its build are cached in .cache/. Installing
# cargo-fuzz (~2 min) and building the targets with the sanitizer (~12 min on 2 cores) do not fit
# this stage's budget, so a clean clone skips the fuzz runs unless RELIABILITY_FUZZ=1.
#
# Env: RELIABILITY_FUZZ=1 installs and builds cargo-fuzz into .cache/ when missing;
#      RELIABILITY_FUZZ_SECONDS (default 10) per target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

stage() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }
start=$(date +%s)

stage "load: 200 concurrent Mounts, shutdown under load; soak: 1000 rotations"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
rc=0
LOAD_MOUNTS=200 SOAK_ROTATIONS=1000 cargo test --locked --test load -- --ignored --nocapture \
    --test-threads=1 >"$log" 2>&1 || rc=$?
grep -oE '(LOAD|SHUTDOWN|SOAK) .*|test result.*' "$log" || true
if [ "$rc" != 0 ]; then
    cat "$log"
    exit "$rc"
fi

stage "fuzz smoke"
fuzz_ready=0
if [ -x .cache/cargo-fuzz/bin/cargo-fuzz ] || command -v cargo-fuzz >/dev/null; then
    if [ -d .cache/fuzz-target ] || [ "${RELIABILITY_FUZZ:-0}" = 1 ]; then
        fuzz_ready=1
    fi
elif [ "${RELIABILITY_FUZZ:-0}" = 1 ]; then
    fuzz_ready=1
fi
if [ "$fuzz_ready" = 1 ]; then
    FUZZ_INSTALL=1 scripts/fuzz.sh "${RELIABILITY_FUZZ_SECONDS:-10}"
else
    echo "skipped: cargo-fuzz and its build are not cached in .cache/ (RELIABILITY_FUZZ=1 installs"
    echo "and builds them, about 14 minutes on 2 cores). The seeds and regressions of every target"
    echo "ran as unit tests (fuzz::tests) in cargo test."
fi

stage "reliability done in $(( $(date +%s) - start ))s"

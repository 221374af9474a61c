#!/usr/bin/env bash
# Reliability checks beyond `cargo test --workspace`, which already runs the fault matrix
# (tests/faults.rs), hostile input (tests/hostile.rs), secrets hygiene (tests/hygiene.rs), the
# leak scan of every provider log, and every fuzz seed and regression input (fuzz::tests).
#
# Here: reduced load and soak (debug build, reusing the test build; well under 60 s), and a short
# run of every fuzz target (scripts/fuzz.sh). On a clean clone that installs cargo-fuzz into
# .cache/ (~2 min) and builds the targets with AddressSanitizer (~12 min on 2 cores); when
# cargo-fuzz cannot be installed (no registry), the fuzz runs are skipped with a message and the
# seeds and regressions still ran as unit tests. A crash or a failed build fails the stage.
#
# Env: RELIABILITY_FUZZ=0 skips the fuzz runs; RELIABILITY_FUZZ_SECONDS (default 10) per target.
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

stage "fuzz smoke: every target ${RELIABILITY_FUZZ_SECONDS:-10} s"
if [ "${RELIABILITY_FUZZ:-1}" = 0 ]; then
    echo "skipped: RELIABILITY_FUZZ=0. The seeds and regressions of every target ran as unit"
    echo "tests (fuzz::tests) in cargo test."
else
    export PATH="$PWD/.cache/cargo-fuzz/bin:$PATH"
    if ! command -v cargo-fuzz >/dev/null; then
        install_log=$(mktemp)
        if ! cargo install cargo-fuzz --locked --root .cache/cargo-fuzz >"$install_log" 2>&1; then
            tail -20 "$install_log"
            echo "SKIPPED: cargo-fuzz cannot be installed here (above), so no fuzz runs. The seeds"
            echo "and regressions of every target ran as unit tests (fuzz::tests) in cargo test."
        fi
        rm -f "$install_log"
    fi
    if command -v cargo-fuzz >/dev/null; then
        fuzz_log=$(mktemp)
        rc=0
        scripts/fuzz.sh "${RELIABILITY_FUZZ_SECONDS:-10}" 2>"$fuzz_log" || rc=$?
        grep -E '^ *Finished|error' "$fuzz_log" || true
        if [ "$rc" != 0 ]; then
            tail -50 "$fuzz_log"
            rm -f "$fuzz_log"
            exit "$rc"
        fi
        rm -f "$fuzz_log"
    fi
fi

stage "reliability done in $(( $(date +%s) - start ))s"

#!/usr/bin/env bash
# Runs every cargo-fuzz target for a set time and prints one FUZZ line per target
# (executions, speed, coverage, corpus, outcome). Crashes are kept in fuzz/artifacts/<target>/;
# copy them to fuzz/regressions/<target>/ (replayed by `cargo test`, fuzz::tests) and fix.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      default: 600 s, every target
#
# Stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass libFuzzer's -Z flags (sanitizer).
# cargo-fuzz comes from PATH or .cache/cargo-fuzz (cargo install cargo-fuzz --locked --root .cache/cargo-fuzz).
# Env: FUZZ_SANITIZER (address, default; none is about twice as fast), FUZZ_INSTALL=1 installs
# cargo-fuzz when missing. The build lives in .cache/fuzz-target, the growing corpus in
# .cache/fuzz-corpus/<target> (the committed seeds in fuzz/seeds/<target> are read too).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(mount_request objects_yaml file_name object_encoding cloud_env pfx pem_bundle chain_order jwk)
fi
sanitizer=${FUZZ_SANITIZER:-address}

export PATH="$PWD/.cache/cargo-fuzz/bin:$PATH"
if ! command -v cargo-fuzz >/dev/null; then
    if [ "${FUZZ_INSTALL:-0}" = 1 ]; then
        cargo install cargo-fuzz --locked --root .cache/cargo-fuzz
    else
        echo "cargo-fuzz is not installed: cargo install cargo-fuzz --locked --root .cache/cargo-fuzz (or FUZZ_INSTALL=1)" >&2
        exit 2
    fi
fi
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$PWD/.cache/fuzz-target"

cargo fuzz build --fuzz-dir fuzz -s "$sanitizer" >&2
bin_dir="$CARGO_TARGET_DIR/$(rustc -vV | sed -n 's/^host: //p')/release"

status=0
for target in "${targets[@]}"; do
    corpus=".cache/fuzz-corpus/$target"
    artifacts="fuzz/artifacts/$target"
    log=".cache/fuzz-logs/$target.log"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    dict=()
    case "$target" in
        mount_request | objects_yaml) dict=(-dict=fuzz/dict/spc.dict) ;;
        pem_bundle) dict=(-dict=fuzz/dict/pem.dict) ;;
    esac
    started=$(mktemp)
    # The binaries run directly: no cargo process competes with the fuzzer.
    set +e
    "$bin_dir/$target" "$corpus" "fuzz/seeds/$target" "${dict[@]}" \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=30 -rss_limit_mb=2048 \
        -artifact_prefix="$artifacts/" >"$log" 2>&1
    rc=$?
    set -e
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    features=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    if [ "$rc" = 0 ]; then
        outcome="no-crash"
    else
        outcome="CRASH(exit $rc, see $log and $artifacts)"
        status=1
        # The broken invariant first (the backtrace below it is long), then the end of the log.
        grep -m1 -A3 'panicked at' "$log" >&2 || true
        grep -vE '^#[0-9]+' "$log" | tail -40 >&2
        # A CI clone is gone after the run: print the inputs so the crash can be replayed anywhere
        # (echo ... | base64 -d > fuzz/regressions/<target>/<what-was-wrong>; cargo test --lib fuzz).
        find "$artifacts" -type f -newer "$started" -size -64k | while read -r input; do
            echo "FUZZ-INPUT target=$target file=$(basename "$input") base64=$(base64 -w0 "$input")" >&2
        done
    fi
    rm -f "$started"
    echo "FUZZ target=$target seconds=$seconds sanitizer=$sanitizer execs=$(stat number_of_executed_units) execs_per_s=$(stat average_exec_per_sec) coverage=${cov:-?} features=${features:-?} corpus=$(find "$corpus" -type f | wc -l) peak_rss_mb=$(stat peak_rss_mb) outcome=$outcome"
done
exit "$status"

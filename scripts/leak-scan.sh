#!/usr/bin/env bash
# Scans log files for credentials: the shapes in tests/leak-patterns.txt (JWTs, bearer headers,
# OAuth form fields, token JSON, PEM private keys) and, with --values FILE, every line of FILE
# (known secret values, 8 characters or more). Exit 1 and a line number per finding; the leaked
# text itself is not printed. The integration tests do the same for every provider they start
# (tests/support/leaks.rs); use this for e2e runs and cluster logs.
#
#   scripts/leak-scan.sh [--values FILE] LOG...
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
values=""
if [ "${1:-}" = "--values" ]; then
    values=$2
    shift 2
fi
if [ $# -eq 0 ]; then
    echo "usage: $0 [--values FILE] LOG..." >&2
    exit 2
fi
patterns=$(mktemp)
trap 'rm -f "$patterns"' EXIT
grep -v -e '^#' -e '^[[:space:]]*$' "$here/tests/leak-patterns.txt" >"$patterns"
found=0
for log in "$@"; do
    while IFS=: read -r line _; do
        echo "$log:$line: matches a credential pattern"
        found=1
    done < <(grep -n -E -f "$patterns" "$log" || true)
    if [ -n "$values" ]; then
        while IFS= read -r value; do
            [ ${#value} -ge 8 ] || continue
            while IFS=: read -r line _; do
                echo "$log:$line: contains a known secret value (${#value} characters)"
                found=1
            done < <(grep -n -F -e "$value" "$log" || true)
        done <"$values"
    fi
done
if [ "$found" = 0 ]; then
    echo "leak-scan: $# file(s) clean"
fi
exit "$found"

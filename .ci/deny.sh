#!/usr/bin/env bash
# Dependency checks: cargo-deny's bans, licenses and sources (deny.toml), and every pre-release
# crate in Cargo.lock listed with its reason in deny.toml ("# prerelease: NAME VERSION: reason").
# cargo-deny is built from crates.io into .cache/tools on the first run (about 4 minutes on two
# cores), then reused. Advisories are not checked: the RustSec database is not reachable here.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
version=0.20.2
deny=.cache/tools/bin/cargo-deny
if ! "$deny" --version 2>/dev/null | grep -qx "cargo-deny $version"; then
  echo "deny: building cargo-deny $version into .cache/tools (first run only)"
  cargo install --locked --quiet --root .cache/tools cargo-deny --version "$version" --no-default-features
fi
# cargo-deny reads the metadata of every target's dependencies (Windows and wasm ones too),
# which a build on this machine never downloads: fetch them first (the crate registry only).
cargo fetch --locked --quiet
"$deny" --offline check bans licenses sources

fail=0
while read -r name version; do
  if ! grep -qE "^# prerelease: ${name} ${version//./\\.}: .+" deny.toml; then
    echo "deny: pre-release crate $name $version is not listed with a reason in deny.toml (# prerelease: $name $version: why)" >&2
    fail=1
  fi
done < <(awk '/^name = /{n=$3} /^version = /{v=$3; gsub(/"/,"",n); gsub(/"/,"",v); sub(/\+.*/, "", v); if (v ~ /-/) print n, v}' Cargo.lock)
[ "$fail" -eq 0 ] && echo "deny: every pre-release crate has a written reason"
exit "$fail"

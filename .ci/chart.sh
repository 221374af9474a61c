#!/usr/bin/env bash
# Chart checks (issue 6): helm lint --strict and render for several values files, strict
# Kubernetes schema validation for the oldest and newest version we claim, values that must be
# rejected, deploy/manifests/ in sync with the chart, example SecretProviderClasses, yamllint.
#
#   bash .ci/chart.sh            check (fails on any problem, including manifest drift)
#   bash .ci/chart.sh --update   also rewrite deploy/manifests/ from the chart
#
# Tools come from PyPI, pinned in .ci/chart-requirements.txt, into .cache/venv-chart. The venv is
# reused while that file is unchanged, so after the first run everything works offline.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv=.cache/venv-chart
requirements=.ci/chart-requirements.txt
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)

if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
  echo "chart: installing the pinned tools into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # --no-deps: the file pins every transitive dependency; wheels only: nothing compiles.
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    -r "$requirements"
  "$venv/bin/pip" check --disable-pip-version-check
  echo "$want" >"$stamp"
fi

exec "$venv/bin/python" .ci/chart_check.py "$@"

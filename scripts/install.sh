#!/usr/bin/env bash
# Install everything the pipeline and its tests need into the project virtual environment
# (.venv beside pyproject.toml, or $VENV): the package in editable mode with its test and
# PostgreSQL extras, Debian's Chromium for Playwright, and PostgreSQL for the catalog test.
# Never runs `playwright install` (its CDN is unreachable here); Debian's browser is used.
# Never touches the global Python: an unrelated package there cannot conflict.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
BASE_PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating the virtual environment $VENV ($("$BASE_PY" --version))"
  "$BASE_PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test,postgres]'

need_apt=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ "${ASTRO_PIPELINE_SKIP_POSTGRES:-0}" != "1" ]; then
  command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ]; then
    echo "installing ${need_apt[*]} from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "warning: ${need_apt[*]} missing and not root: install them with your package manager" >&2
  fi
fi
echo "installed into $VENV: activate it with 'source $VENV/bin/activate' (make targets use it without that)"

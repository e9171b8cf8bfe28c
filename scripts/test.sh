#!/usr/bin/env bash
# Run the test suite in the project virtual environment, with the PostgreSQL server the install
# put on this machine when there is one (the PostgreSQL test skips, saying why, when there is not).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || { echo "no virtual environment at $VENV: run 'make install' first" >&2; exit 2; }
export PATH="$PWD/$VENV/bin:$PATH" VIRTUAL_ENV="$PWD/$VENV"
if [ "${ASTRO_PIPELINE_SKIP_POSTGRES:-0}" != "1" ] && [ -z "${ASTRO_PIPELINE_TEST_POSTGRES_URL:-}" ]; then
  if url=$(bash scripts/start_postgres.sh 2>/tmp/astro-pipeline-postgres.err); then
    export ASTRO_PIPELINE_TEST_POSTGRES_URL="$url"
  else
    echo "PostgreSQL not started ($(tr '\n' ' ' </tmp/astro-pipeline-postgres.err)); its test will skip" >&2
  fi
fi
exec "$VENV/bin/python" -m pytest "$@"

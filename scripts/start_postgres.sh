#!/usr/bin/env bash
# Start Debian's PostgreSQL cluster and make a role + database for the catalog's PostgreSQL test.
# Prints the SQLAlchemy URL on stdout (for ASTRO_PIPELINE_TEST_POSTGRES_URL); exits non-zero,
# with the reason on stderr, when it cannot (the test then skips and says why).
set -euo pipefail
command -v pg_lsclusters >/dev/null 2>&1 || { echo "postgresql is not installed" >&2; exit 1; }
if [ "$(id -u)" = "0" ]; then as_pg=(runuser -u postgres --); elif command -v sudo >/dev/null 2>&1; then as_pg=(sudo -n -u postgres); else
  echo "need root or sudo to start PostgreSQL" >&2; exit 1; fi
read -r ver name port _ < <(pg_lsclusters -h | head -n1) || true
if [ -z "${ver:-}" ]; then
  ver=$(ls /usr/lib/postgresql | sort -V | tail -n1); name=main
  pg_createcluster "$ver" "$name" >/dev/null
  read -r ver name port _ < <(pg_lsclusters -h | head -n1)
fi
pg_ctlcluster "$ver" "$name" start >/dev/null 2>&1 || true
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p "$port" && break; sleep 0.5; done
pg_isready -q -h 127.0.0.1 -p "$port" || { echo "PostgreSQL $ver/$name did not start on port $port" >&2; exit 1; }
user=astro_test; pass=astro_test; db=astro_test
"${as_pg[@]}" psql -q -p "$port" -v ON_ERROR_STOP=1 >/dev/null <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$user') THEN
    CREATE ROLE $user LOGIN PASSWORD '$pass' CREATEDB;
  END IF;
END \$\$;
SQL
"${as_pg[@]}" psql -q -p "$port" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
  || "${as_pg[@]}" createdb -p "$port" -O "$user" "$db"
echo "postgresql+psycopg://$user:$pass@127.0.0.1:$port/$db"

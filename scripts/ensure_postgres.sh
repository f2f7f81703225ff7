#!/usr/bin/env bash
# PostgreSQL 15 server binaries for tests/integration/test_postgres.py (a throwaway server):
# installs Debian's postgresql-15 with apt-get when they are missing, else does nothing.
set -euo pipefail
BIN=/usr/lib/postgresql/15/bin
if [ -x "$BIN/initdb" ] && [ -x "$BIN/pg_ctl" ] && [ -x "$BIN/postgres" ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "PostgreSQL 15 server binaries missing in $BIN: install Debian's postgresql-15" \
        "package (as root: apt-get update && apt-get install postgresql-15)" >&2
    exit 1
fi
echo "installing postgresql-15 (server binaries for the Postgres checkpoint test)" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15

#!/bin/bash
# Run once by the postgres image's entrypoint when it creates the primary's data folder:
# the role replicas connect as, and pg_hba's leave for it to stream (a "replication"
# connection matches no "all" line).
set -euo pipefail

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v password="$POSTGRES_PASSWORD" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SQL

echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"

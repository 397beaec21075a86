#!/bin/bash
# A streaming replica of the primary. On its first start its data folder is made by
# pg_basebackup -R (a copy of the primary, with standby.signal and primary_conninfo
# written); from then on the postgres image's own entrypoint starts it as it is.
set -euo pipefail

# The replication password, for pg_basebackup now and the WAL receiver later; written at
# each start, since it lives outside the data volume.
pgpass=/var/lib/postgresql/.pgpass
echo "*:*:*:replicator:${REPLICATION_PASSWORD}" > "$pgpass"
chown postgres:postgres "$pgpass"
chmod 600 "$pgpass"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    until gosu postgres pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT"; do
        sleep 1
    done
    gosu postgres pg_basebackup --pgdata="$PGDATA" --write-recovery-conf \
        --wal-method=stream --checkpoint=fast \
        --host="$PRIMARY_HOST" --port="$PRIMARY_PORT" --username=replicator --no-password
fi

exec docker-entrypoint.sh "$@"

#!/bin/sh
# Hand the WAL spool (a named volume PostgreSQL writes into as uid 999) to postgres, then drop
# root for good: the agent itself never runs as root.
set -eu
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$WAL_SPOOL_DIR" "$BACKUP_STATE_DIR"
  chown postgres:postgres "$WAL_SPOOL_DIR" "$BACKUP_STATE_DIR"
  chmod 0700 "$WAL_SPOOL_DIR"
  # the state is what the healthcheck reads (as root without DAC capabilities): no secret in it
  chmod 0755 "$BACKUP_STATE_DIR"
  exec setpriv --reuid=postgres --regid=postgres --clear-groups --inh-caps=-all \
    python3 -m deploysuite.backup.agent "$@"
fi
exec python3 -m deploysuite.backup.agent "$@"

#!/usr/bin/env bash
# Restore a database from S3 (thin wrapper of `inv restore` and `inv backup.list`).
#   scripts/restore.sh -l [-e ENV]                      list the backups
#   scripts/restore.sh -d 20240115 [-b DB] [-e ENV] [-y] restore the newest backup of that day
#   scripts/restore.sh -i BACKUP_ID [-b DB] [-e ENV] [-y]  restore one backup by its id
#   scripts/restore.sh -t 2024-01-15T10:42:00Z [-b DB] [-e ENV] [-y]  point-in-time recovery
set -euo pipefail
cd "$(dirname "$0")/.."
env=local db="" date="" id="" time="" list=0 yes=()
while getopts "le:b:d:i:t:yh" opt; do
  case "$opt" in
    l) list=1 ;;
    e) env=$OPTARG ;;
    b) db=$OPTARG ;;
    d) date=$OPTARG ;;
    i) id=$OPTARG ;;
    t) time=$OPTARG ;;
    y) yes=(--yes) ;;
    h) sed -n '2,6p' "$0"; exit 0 ;;
    *) sed -n '2,6p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
if [ "$list" = 1 ]; then
  exec .venv/bin/inv backup.list --env="$env" ${db:+--db="$db"} "$@"
fi
if [ -z "$date" ] && [ -z "$id" ] && [ -z "$time" ]; then
  echo "error: give -d YYYYMMDD, -i BACKUP_ID or -t TIME (fix: scripts/restore.sh -l lists the backups)" >&2
  exit 2
fi
exec .venv/bin/inv restore --env="$env" ${db:+--db="$db"} ${date:+--date="$date"} \
  ${id:+--backup-id="$id"} ${time:+--target-time="$time"} "${yes[@]}" "$@"

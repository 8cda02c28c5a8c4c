#!/usr/bin/env bash
# Back up the stack's PostgreSQL databases to S3 (thin wrapper of `inv backup`).
#   scripts/backup.sh [-e ENV] [-b DB|all] [-- extra inv flags such as --json]
set -euo pipefail
cd "$(dirname "$0")/.."
env=local db=all
while getopts "e:b:h" opt; do
  case "$opt" in
    e) env=$OPTARG ;;
    b) db=$OPTARG ;;
    h) sed -n '2,3p' "$0"; exit 0 ;;
    *) sed -n '2,3p' "$0" >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
exec .venv/bin/inv backup --env="$env" --db="$db" "$@"

#!/usr/bin/env bash
# new-migration.sh FOLDER NAME [simple|reversible]
#
# Adds a migration in sqlx-cli's layout: <UTC timestamp>_<NAME>.sql, or for
# `reversible` the pair <timestamp>_<NAME>.up.sql and .down.sql. Written here
# rather than with `sqlx migrate add -r` because sqlx-cli 0.8 makes every
# new migration the kind of the folder's first one, ignoring -r in a folder
# that starts with plain files, as ours does.
set -euo pipefail
folder=$1 name=$2 kind=${3:-simple}
if [[ ! $name =~ ^[A-Za-z0-9_]+$ ]]; then
  echo "error: migration name '$name': use letters, digits and _ only" >&2
  exit 2
fi
if [[ $kind != simple && $kind != reversible ]]; then
  echo "error: kind '$kind': use simple or reversible" >&2
  exit 2
fi
version=$(date -u +%Y%m%d%H%M%S)
if compgen -G "$folder/${version}_*" >/dev/null; then
  echo "error: a migration with version $version already exists in $folder; wait a second and retry" >&2
  exit 2
fi
case $kind in
  simple)
    printf -- '-- Add migration script here\n' >"$folder/${version}_${name}.sql"
    echo "created $folder/${version}_${name}.sql"
    ;;
  reversible)
    printf -- '-- Add up migration script here\n' >"$folder/${version}_${name}.up.sql"
    printf -- '-- Add down migration script here: undo exactly what the up script did\n' >"$folder/${version}_${name}.down.sql"
    echo "created $folder/${version}_${name}.up.sql and .down.sql"
    ;;
esac

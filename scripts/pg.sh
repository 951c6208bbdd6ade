#!/usr/bin/env bash
# Starts a throw-away PostgreSQL cluster for the tests, as an unprivileged
# user in a temp dir on a free port with trust auth on 127.0.0.1, and prints
# `TFSFS_TEST_PG=postgres://...` and `PG_DIR=...`. `scripts/pg.sh stop DIR`
# stops it and removes DIR. Installs Debian's postgresql when missing.
set -euo pipefail

bin_dir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

if [ "${1:-}" = stop ]; then
  dir=$2
  runuser -u nobody -- "$(bin_dir)/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  exit 0
fi

if [ -z "$(bin_dir)" ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
bin=$(bin_dir)
dir=$(mktemp -d /tmp/tfsfs-pg.XXXXXX)
chown nobody "$dir"
chmod 700 "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
runuser -u nobody -- "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --locale=C -E UTF8 >/dev/null
runuser -u nobody -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=500 -c fsync=off" start >/dev/null
echo "TFSFS_TEST_PG=postgres://postgres@127.0.0.1:$port/postgres"
echo "PG_DIR=$dir"

#!/usr/bin/env bash
# Starts (or stops) a private PostgreSQL server for tests, owned by the `postgres` user, on
# 127.0.0.1:PORT with trust authentication and its data under DIR. Prints the URL to use
# (postgres://postgres@127.0.0.1:PORT). Needs Debian's postgresql package (scripts/deps.sh).
# `crash` stops it as a crash would (no checkpoint, asynchronous commits not yet on disk lost).
#
# Usage: scripts/postgres.sh start DIR PORT | stop DIR | crash DIR
set -euo pipefail
cmd="${1:?usage: postgres.sh start DIR PORT | stop DIR | crash DIR}"
dir="${2:?data directory}"
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[[ -x "$bin/initdb" ]] || { echo "postgres.sh: PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 2; }
as_pg() { if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
case "$cmd" in
start)
    port="${3:?port}"
    mkdir -p "$dir"
    chown postgres: "$dir" 2>/dev/null || true
    chmod 700 "$dir"
    if [[ ! -f "$dir/PG_VERSION" ]]; then
        as_pg "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >"$dir.initdb.log" 2>&1 ||
            { cat "$dir.initdb.log" >&2; exit 1; }
    fi
    as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=on -c max_connections=300" start >/dev/null
    echo "postgres://postgres@127.0.0.1:$port"
    ;;
stop)
    as_pg "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
    ;;
crash)
    as_pg "$bin/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null 2>&1 || true
    ;;
*)
    echo "usage: postgres.sh start DIR PORT | stop DIR | crash DIR" >&2
    exit 2
    ;;
esac

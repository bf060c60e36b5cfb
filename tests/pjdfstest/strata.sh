#!/usr/bin/env bash
# Runs pjdfstest on a fresh Strata mount: starts a server and a mount with the given `strata`
# binary, runs tests/pjdfstest/run.sh on it, checks the store with `strata fsck`, tears
# everything down, and fails on any ERROR line in the service logs or any fsck problem.
#
# Usage: tests/pjdfstest/strata.sh STRATA_BIN [run.sh options...]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="$(realpath "${1:?usage: strata.sh STRATA_BIN}")"
shift
WORK="$(mktemp -d /tmp/strata-pjd.XXXXXX)"
# pjdfstest switches to other users, who must be able to reach the mount point.
chmod 755 "$WORK"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SERVER_PID="" MOUNT_PID=""
cleanup() {
    set +e
    [[ -n "$MOUNT_PID" ]] && kill -TERM "$MOUNT_PID" 2>/dev/null && wait "$MOUNT_PID" 2>/dev/null
    mountpoint -q "$WORK/mnt" && umount -l "$WORK/mnt"
    [[ -n "$SERVER_PID" ]] && kill -TERM "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK/mnt"
"$BIN" server --data "$WORK/data" --listen "127.0.0.1:$PORT" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do [[ -s "$WORK/data/admin.token" ]] && break; sleep 0.1; done
export STRATA_SERVER="127.0.0.1:$PORT" STRATA_TOKEN_FILE="$WORK/data/admin.token"
"$BIN" volume create pjd >/dev/null
"$BIN" mount pjd "$WORK/mnt" >"$WORK/mount.log" 2>&1 &
MOUNT_PID=$!
for _ in $(seq 100); do mountpoint -q "$WORK/mnt" && break; sleep 0.1; done
mountpoint -q "$WORK/mnt" || { cat "$WORK/mount.log" >&2; echo "strata.sh: mount did not come up" >&2; exit 2; }
rc=0
bash "$HERE/run.sh" "$@" "$WORK/mnt" || rc=$?
# The store pjdfstest leaves behind (every kind of inode, hard links, renames, permissions,
# truncations) must be consistent: `strata fsck` online, with the mount still up.
if ! "$BIN" fsck >"$WORK/fsck.log" 2>&1; then
    cat "$WORK/fsck.log" >&2
    echo "strata.sh: strata fsck found problems after pjdfstest (above)" >&2
    rc=1
else
    tail -n 1 "$WORK/fsck.log"
fi
if grep -E ' ERROR ' "$WORK/server.log" "$WORK/mount.log"; then
    echo "strata.sh: ERROR lines in the service logs (above)" >&2
    rc=1
fi
exit "$rc"

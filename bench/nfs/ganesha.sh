#!/usr/bin/env bash
# A private nfs-ganesha (NFSv3 only, VFS FSAL) for the NFS benchmark.
#
#   bench/nfs/ganesha.sh start DIR EXPORT_DIR NFS_PORT   # prints the URL of the export root
#   bench/nfs/ganesha.sh stop DIR
#
# DIR holds the generated config, log, pid file and recovery directory. EXPORT_DIR is exported
# read-write without root squashing. NFS is served on 127.0.0.1:NFS_PORT and MOUNT on
# 127.0.0.1:NFS_PORT+1 (TCP only; NLM, RQUOTA and UDP off; no grace period). Clients reach it
# without the portmapper: nfs://127.0.0.1/export/...?nfsport=NFS_PORT&mountport=NFS_PORT+1&version=3
#
# ganesha 4.3 exits when it cannot register with rpcbind ("Cannot register NFS V3 on TCP"), and
# Debian's rpcbind binds 0.0.0.0:111 whatever it is told. So ganesha runs in a private mount
# namespace whose /run is DIR/run, next to an rpcbind in its own network namespace (loopback
# only): ganesha registers through the unix socket /run/rpcbind.sock (unix sockets are not bound
# to a network namespace), while ganesha itself stays in the host's network namespace, bound to
# 127.0.0.1. Nothing listens on port 111 of the host and no file outside DIR is touched.
# Needs root (namespaces, and ganesha's VFS FSAL uses open_by_handle_at).
set -euo pipefail

usage() { echo "usage: $0 start DIR EXPORT_DIR NFS_PORT | stop DIR" >&2; exit 2; }
die() { echo "ganesha.sh: $*" >&2; exit 1; }

cmd=${1:-}; dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || usage

stop() {
    local d=$1 pg
    [ -f "$d/pgid" ] || return 0
    pg=$(cat "$d/pgid")
    # wait (briefly) for setsid to have made the group, so that kill reaches all of it
    for _ in $(seq 50); do
        [ "$(ps -o pgid= -p "$pg" 2>/dev/null | tr -d ' ')" != "$pg" ] && kill -0 "$pg" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 -- "-$pg" 2>/dev/null; then
        kill -TERM -- "-$pg" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 -- "-$pg" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$pg" 2>/dev/null || true
    fi
    rm -f "$d/pgid"
}

case "$cmd" in
start)
    [ $# -eq 4 ] || usage
    export_dir=$(realpath -m "$3"); port=$4; mport=$((port + 1))
    command -v ganesha.nfsd >/dev/null || die "ganesha.nfsd not found (apt-get install nfs-ganesha nfs-ganesha-vfs)"
    command -v rpcbind >/dev/null || die "rpcbind not found (apt-get install rpcbind)"
    command -v nfs-ls >/dev/null || die "nfs-ls not found (apt-get install libnfs-utils)"
    [ "$(id -u)" = 0 ] || die "must run as root"
    mkdir -p "$dir/run" "$dir/recovery" "$export_dir"
    dir=$(realpath "$dir")
    stop "$dir"
    if ss -Hltn "sport = :$port or sport = :$mport" | grep -q .; then
        die "port $port or $mport already in use"
    fi
    cat > "$dir/ganesha.conf" <<CONF
NFS_CORE_PARAM {
    Protocols = 3;              # NFSv3 only (no NFSv4 state, so no NFSv4 grace period)
    NFS_Port = $port;
    MNT_Port = $mport;
    Bind_Addr = 127.0.0.1;
    Enable_NLM = false;         # no lock manager (would need statd)
    Enable_RQUOTA = false;
    Enable_UDP = false;
    Mount_Path_Pseudo = true;   # MOUNT takes /export/..., not the local path
}
NFSV4 {
    Graceless = true;           # no grace period at start (else 90 s, lifted at once only when no client is on record)
    RecoveryBackend = fs;
    RecoveryRoot = "$dir/recovery";
}
NFS_KRB5 { Active_krb5 = false; }
EXPORT_DEFAULTS { SecType = sys; }
EXPORT {
    Export_Id = 1;
    Path = "$export_dir";
    Pseudo = "/export";
    Protocols = 3;
    Transports = TCP;
    Access_Type = RW;
    Squash = No_Root_Squash;    # the benchmark client writes as uid 0
    SecType = sys;
    FSAL { Name = VFS; }
}
LOG { Default_Log_Level = WARN; }
CONF
    cat > "$dir/inner.sh" <<INNER
set -e
mount --make-rprivate /
mount --bind "$dir/run" /run
mkdir -p /run/rpcbind; chown _rpc /run/rpcbind 2>/dev/null || true
rm -f /run/rpcbind.sock /run/rpcbind.lock
unshare --net sh -c 'ip link set lo up 2>/dev/null || true; exec rpcbind -f' &
for i in \$(seq 100); do [ -S /run/rpcbind.sock ] && break; sleep 0.05; done
[ -S /run/rpcbind.sock ] || { echo "rpcbind did not start" >&2; exit 1; }
exec ganesha.nfsd -F -f "$dir/ganesha.conf" -L "$dir/ganesha.log" -p "$dir/ganesha.pid"
INNER
    : > "$dir/ganesha.log"
    setsid unshare --mount bash "$dir/inner.sh" >"$dir/stdout.log" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$dir/pgid"  # setsid makes the pid the process group id (once it has run)
    url="nfs://127.0.0.1/export/?nfsport=$port&mountport=$mport&version=3"
    why="did not answer on 127.0.0.1:$port within 20 s"
    for _ in $(seq 200); do
        if nfs-ls "$url" >/dev/null 2>&1; then
            echo "nfs://127.0.0.1/export?nfsport=$port&mountport=$mport&version=3"
            exit 0
        fi
        # the pid, not the group: right after the fork the child may not have called setsid yet
        kill -0 "$pid" 2>/dev/null || { why="exited before answering"; break; }
        sleep 0.1
    done
    echo "--- $dir/stdout.log" >&2; tail -5 "$dir/stdout.log" >&2 || true
    echo "--- $dir/ganesha.log" >&2; tail -20 "$dir/ganesha.log" >&2 || true
    stop "$dir"
    die "ganesha $why"
    ;;
stop)
    [ $# -eq 2 ] || usage
    stop "$dir"
    ;;
*) usage ;;
esac

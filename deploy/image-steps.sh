#!/usr/bin/env bash
# The steps of the image build (deploy/Dockerfile), shared by the Dockerfile's RUN lines and by
# deploy/docker-build-steps.sh, which runs them on this machine without a container engine so
# that CI exercises the recipe. One script, two callers: the recipe cannot drift between them.
#
#   image-steps.sh build                  the release binary, target/release/strata (builder stage)
#   image-steps.sh check STRATA SUPERVISE  runtime checks of the installed files (runtime stage)
set -euo pipefail

case "${1:-}" in
build)
    # Only the `strata` binary: one binary for the server, the CSI driver and its FUSE workers.
    cargo build --release --locked -p strata-cli
    ;;
check)
    strata=$2 supervise=$3
    "$strata" --version
    # The CSI driver is in the binary and knows the flags the Helm chart passes it.
    help=$("$strata" csi --help)
    for flag in --mode --endpoint --node-id --server --token-file --state-dir --max-volumes --worker-bin --worker-arg; do
        grep -q -- "$flag" <<<"$help" || { echo "image-steps: strata csi --help names no $flag" >&2; exit 1; }
    done
    "$strata" server --help >/dev/null
    "$strata" mount --help >/dev/null
    # FUSE's mount helper (the workers' mounts need fusermount3 where they are not root).
    command -v fusermount3 >/dev/null || { echo "image-steps: fusermount3 is missing (Debian fuse3)" >&2; exit 1; }
    # The node plugin's PID 1: starts the plugin again when it exits, passes SIGTERM on and
    # exits with the plugin's status.
    tmp=$(mktemp -d)
    "$supervise" sh -c "echo run >>$tmp/runs; trap 'exit 7' TERM; [ \$(wc -l <$tmp/runs) -ge 2 ] && { sleep 5 & wait; }; exit 3" \
        >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 50); do
        [[ -f $tmp/runs && $(wc -l <"$tmp/runs") -ge 2 ]] && break
        sleep 0.1
    done
    sleep 0.2
    kill -TERM "$pid"
    rc=0
    wait "$pid" || rc=$?
    runs=$(wc -l <"$tmp/runs")
    rm -rf "$tmp"
    if [[ $runs -ne 2 || $rc -ne 7 ]]; then
        echo "image-steps: strata-supervise ran the command $runs times (want 2) and exited $rc (want 7)" >&2
        exit 1
    fi
    echo "image-steps: the runtime checks passed"
    ;;
*)
    echo "usage: image-steps.sh build | check STRATA_BIN SUPERVISE_BIN" >&2
    exit 2
    ;;
esac

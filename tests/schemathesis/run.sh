#!/usr/bin/env bash
# Runs schemathesis (PyPI) against the OpenAPI document a fresh `strata server` serves: every
# operation with generated valid and invalid input, with the admin token. Fails on any 5xx
# answer, on a response that breaks the document, or on an ERROR line / panic in the server log.
# Usage: tests/schemathesis/run.sh STRATA_BINARY [MAX_SECONDS]
# ST_EXTRA adds arguments to `st run` (`--seed N` replays a run's cases). A request may take 30 s:
# scripts/test runs this beside the lints and the fuzzers on two cores, where a store listing
# of fsck once took longer than 10 s.
set -euo pipefail
bin=$(realpath "${1:?usage: run.sh STRATA_BINARY [MAX_SECONDS]}")
budget=${2:-120}
command -v st >/dev/null 2>&1 || { echo "schemathesis: 'st' is missing (pip install schemathesis)" >&2; exit 2; }

work=$(mktemp -d /tmp/strata-schemathesis.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
addr=127.0.0.1:$port
"$bin" server --data "$work/data" --listen "$addr" >"$work/server.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do
    [[ -s $work/data/admin.token ]] && curl -sf "http://$addr/openapi.json" -o /dev/null && break
    sleep 0.1
done
token=$(cat "$work/data/admin.token")
# Something to act on: a department, a project and a volume besides the defaults.
api() { curl -sf -X "$1" "http://$addr$2" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' ${3:+-d "$3"} >/dev/null; }
api POST /v1/scopes '{"path":"ml"}'
api POST /v1/scopes '{"path":"ml/vision"}'
api POST /v1/volumes '{"name":"data","scope":"ml/vision","capacity":1073741824}'
# A snapshot, a clone and a shared data volume, for the snapshot and data volume operations.
api POST /v1/volumes/data/snapshots '{"name":"s1"}'
api POST /v1/volumes '{"name":"data-clone","from":"data@s1"}'
api POST /v1/datavolumes '{"name":"ds","from":"data","scope":"ml/vision"}'
api PUT /v1/datavolumes/ds/shares/ml

rc=0
(cd "$work" && st run "http://$addr/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-time "$budget" --workers 1 --request-timeout 30 \
    --suppress-health-check all --no-color ${ST_EXTRA:-}) || rc=$?
if grep -E ' ERROR |panicked' "$work/server.log" >&2; then
    echo "schemathesis: the server logged errors (above)" >&2
    rc=1
fi
kill -0 "$pid" 2>/dev/null || { echo "schemathesis: the server died" >&2; tail -20 "$work/server.log" >&2; rc=1; }
[[ $rc == 0 ]] && rm -rf "$work" || echo "schemathesis: logs kept in $work" >&2
exit $rc

#!/usr/bin/env bash
# Strata side-by-side benchmark: local disk vs Strata vs JuiceFS in one run, one markdown table.
# Usage: bench/run.sh [--targets local,strata,juicefs] [--out FILE] [--keep] ...  (see --help)
# The work is done by bench/run.py (Python 3.11+, standard library only), which makes its
# workspace in a temporary directory and unmounts and removes everything on exit or signal.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-python3}"
if ! command -v "$py" >/dev/null 2>&1; then
    echo "bench/run.sh: error: $py not found; Python 3.11 or newer is required" >&2
    exit 2
fi
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
    echo "bench/run.sh: error: $("$py" --version 2>&1) is too old; Python 3.11 or newer is required" >&2
    exit 2
fi
exec "$py" "$here/run.py" "$@"

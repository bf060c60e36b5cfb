#!/usr/bin/env bash
# Install the pinned pjdfstest (Rust rewrite) from crates.io.
#
# Usage: tests/pjdfstest/install.sh [ROOT]
#   ROOT  install prefix for `cargo install --root` (default: $PJDFSTEST_ROOT,
#         else $CARGO_TARGET_DIR/pjdfstest-root, else <repo>/target/pjdfstest-root).
#         The binary lands in ROOT/bin.
#         Put ROOT under a cached directory in CI: a second call with the same
#         ROOT and version is a no-op (~0 s) instead of a ~30 s build.
# Prints the path of the binary on the last line of stdout.
set -euo pipefail

PJDFSTEST_VERSION="${PJDFSTEST_VERSION:-0.2.2}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROOT="${1:-${PJDFSTEST_ROOT:-${CARGO_TARGET_DIR:-$REPO/target}/pjdfstest-root}}"
BIN="$ROOT/bin/pjdfstest"

if [[ -x "$BIN" ]] && [[ "$("$BIN" --version 2>/dev/null)" == "pjdfstest $PJDFSTEST_VERSION" ]]; then
    echo "pjdfstest $PJDFSTEST_VERSION already installed in $ROOT" >&2
else
    echo "installing pjdfstest $PJDFSTEST_VERSION into $ROOT" >&2
    start=$SECONDS
    # --locked: use the crate's own Cargo.lock (reproducible, and it builds with
    # Rust 1.95). --force: replace an older version already in ROOT.
    cargo install pjdfstest --version "=$PJDFSTEST_VERSION" --locked --force --root "$ROOT" >&2
    echo "installed in $((SECONDS - start)) s" >&2
fi
echo "$BIN"

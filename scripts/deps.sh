#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test Strata (idempotent, quick when
# everything is present). Needs root for apt-get.
set -euo pipefail

need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v mount >/dev/null 2>&1 || need+=(mount)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1 || need+=(python3-pip)
if ((${#need[@]})); then
    echo "deps: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [[ ! -e /dev/fuse ]]; then
    modprobe fuse 2>/dev/null || true
fi
[[ -e /dev/fuse ]] || { echo "deps: /dev/fuse is missing: FUSE tests cannot run here" >&2; exit 2; }
# user_allow_other lets non-root users mount with allow_other too.
if [[ -f /etc/fuse.conf ]] && ! grep -q '^user_allow_other' /etc/fuse.conf; then
    echo user_allow_other >>/etc/fuse.conf
fi
# schemathesis checks the REST API against its OpenAPI document.
if ! command -v st >/dev/null 2>&1; then
    echo "deps: installing schemathesis (PyPI)" >&2
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore schemathesis==4.32.5 >&2
fi

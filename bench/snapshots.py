#!/usr/bin/env python3
"""Snapshot and clone cost versus the number of files in a volume, in one run.

Starts a private `strata server` (SQLite metadata, blocks in its directory), and for each size
creates a volume, fills it through a FUSE mount with that many small files, then times
`strata snapshot create` (REPEAT times, median) while the volume stays mounted, and one
`strata volume create --from VOLUME@SNAPSHOT` (a clone). Prints a markdown table: the
snapshot's time at each size and its ratio to the smallest size (a constant-time snapshot
stays near 1.0 whatever the size), and the clone's time (which copies metadata, no data).

Usage: bench/snapshots.py [--strata PATH] [--sizes 10,1000,10000,100000] [--repeat 7]
Run as root (FUSE). Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[snapshots {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float, what: str) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_bin = REPO / "target/release/strata"
    if not default_bin.exists():
        default_bin = REPO / "target/debug/strata"
    ap.add_argument("--strata", default=str(default_bin), help="the strata binary")
    ap.add_argument("--sizes", default="10,1000,10000,100000", help="file counts, comma-separated")
    ap.add_argument("--repeat", type=int, default=7, help="snapshots timed per size (median reported)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    strata = args.strata
    work = Path(tempfile.mkdtemp(prefix="strata-bench-snap-"))
    data, addr = work / "data", f"127.0.0.1:{free_port()}"
    server = subprocess.Popen([strata, "server", "--data", str(data), "--listen", addr],
                              stdout=open(work / "server.log", "w"), stderr=subprocess.STDOUT)
    mounts: list[Path] = []
    rows = []
    try:
        wait_for(lambda: (data / "admin.token").exists(), 30, "the server")
        token = str(data / "admin.token")
        common = ["--server", addr, "--token-file", token]

        def cli(*a: str) -> float:
            t = time.perf_counter()
            subprocess.run([strata, *a, *common], check=True, stdout=subprocess.DEVNULL)
            return time.perf_counter() - t

        for n in sizes:
            vol = f"files{n}"
            cli("volume", "create", vol)
            mp = work / f"mnt-{n}"
            mp.mkdir()
            subprocess.run([strata, "mount", vol, str(mp), "-d", "--log-file", str(work / f"mount-{n}.log"),
                            *common], check=True)
            mounts.append(mp)
            wait_for(lambda: os.path.ismount(mp), 30, "the mount")
            log(f"creating {n} files")
            started = time.perf_counter()
            per_dir = 1000
            payload = b"x" * 1024
            for i in range(n):
                d = mp / f"d{i // per_dir}"
                if i % per_dir == 0:
                    d.mkdir()
                with open(d / f"f{i}", "wb") as f:
                    f.write(payload)
            log(f"  {n} files in {time.perf_counter() - started:.1f}s")
            times = [cli("snapshot", "create", vol, f"s{k}") for k in range(args.repeat)]
            clone = cli("volume", "create", f"clone{n}", "--from", f"{vol}@s0")
            rows.append((n, statistics.median(times), min(times), clone))
            log(f"  snapshot median {statistics.median(times) * 1000:.1f} ms, clone {clone:.2f} s")
    finally:
        for mp in mounts:
            subprocess.run(["umount", "-l", str(mp)], check=False)
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)
    base = rows[0][1] if rows else 1.0
    print("| files | snapshot (median of %d) | min | ratio to %d files | clone |" % (args.repeat, sizes[0]))
    print("|---:|---:|---:|---:|---:|")
    for n, med, mn, clone in rows:
        print(f"| {n:,} | {med * 1000:.1f} ms | {mn * 1000:.1f} ms | {med / base:.2f} | {clone:.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

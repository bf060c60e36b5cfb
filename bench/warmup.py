#!/usr/bin/env python3
"""Warm-up throughput: `strata warmup` on a cold mount against `cat` of the same files cold.

A server and a mount on the embedded engines (as bench/run.sh's Strata target: SQLite, blocks
in a local directory of the workspace), a dataset of --files files of --size-mib MiB each,
then, each from cold (the mount restarted, so its caches are empty, and
`echo 3 > /proc/sys/vm/drop_caches`, so the block files come off the disk):

1. `cat` every file to /dev/null, one after the other (what a job's first epoch does);
2. `strata warmup DIR --threads N`, then `strata warmup --check DIR` (must be 100%), then
   `cat` again: the read of warmed data, from the mount's memory cache.

Prints a markdown table: MB/s of each (file bytes / wall time) and warmup/cat. Run as root from
the repository (it builds the release `strata` unless --bin is given); see bench/README.md.
Python 3.11, standard library only; reuses bench/run.py's Strata target.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402  (bench/run.py)


def mbps(nbytes: int, secs: float) -> float:
    return nbytes / 1e6 / max(secs, 1e-9)


def timed(cmd: list[str], log_file: Path) -> float:
    t0 = time.monotonic()
    harness.run_cmd(cmd, timeout=harness.CMD_TIMEOUT, log_file=log_file)
    return time.monotonic() - t0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=32, help="files in the dataset (default 32)")
    ap.add_argument("--size-mib", type=int, default=32, help="MiB per file (default 32: 1 GiB in all)")
    ap.add_argument("--threads", type=int, default=8, help="strata warmup --threads (default 8)")
    ap.add_argument("--cache-size", default="4G", help="the mount's --cache-size (default 4G; must hold the data)")
    ap.add_argument("--bin", help="the strata binary (default: build target/release/strata)")
    ap.add_argument("--workdir", help="parent of the temporary workspace (default: the system's)")
    ap.add_argument("--out", help="also write the table to this file")
    ap.add_argument("--keep", action="store_true", help="keep the workspace (logs)")
    o = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/warmup.py: run as root (drop_caches, FUSE mounts)", file=sys.stderr)
        return 2
    binary = o.bin
    if not binary:
        subprocess.run(["cargo", "build", "--release", "-p", "strata-cli"], cwd=harness.REPO, check=True)
        binary = str(harness.REPO / "target" / "release" / "strata")
    ws = Path(tempfile.mkdtemp(prefix="strata-warmup-bench-", dir=o.workdir))
    engines = harness.Engines(None, None, "")
    t = harness.Strata(ws, binary, [], ["--cache-size", o.cache_size], engines)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt("SIGTERM")))
    code = 0
    try:
        t.setup()
        data = t.mnt / "warm"
        data.mkdir()
        chunk = 4 << 20
        block = os.urandom(chunk)
        files = [data / f"f{i:04}" for i in range(o.files)]
        for i, f in enumerate(files):
            with open(f, "wb") as fh:
                for j in range(o.size_mib * (1 << 20) // chunk):
                    # Distinct bytes per block (no two blocks alike), cheaply.
                    fh.write(i.to_bytes(4, "little") + j.to_bytes(4, "little") + block[8:])
        total = sum(f.stat().st_size for f in files)
        harness.log(f"dataset: {len(files)} files, {total / 1e6:.0f} MB")
        cat = ["sh", "-c", f"cat {data}/* > /dev/null"]
        warm = [binary, "warmup", str(data), "--threads", str(o.threads)]

        t.make_cold()
        cold_cat = timed(cat, t.log_file)
        harness.log(f"cold cat: {cold_cat:.2f} s, {mbps(total, cold_cat):.0f} MB/s")

        t.make_cold()
        warm_s = timed(warm, t.log_file)
        harness.log(f"strata warmup: {warm_s:.2f} s, {mbps(total, warm_s):.0f} MB/s")
        check = harness.run_cmd([binary, "warmup", "--check", str(data)], log_file=t.log_file)
        if "100.0% cached" not in check:
            raise harness.StepError(f"not all cached after the warm-up: {check.strip()}")
        warm_cat = timed(cat, t.log_file)
        harness.log(f"cat after warmup: {warm_cat:.2f} s, {mbps(total, warm_cat):.0f} MB/s")

        table = "\n".join([
            f"Warm-up of {len(files)} files x {o.size_mib} MiB ({total / 1e6:.0f} MB), "
            f"mount --cache-size {o.cache_size}, strata warmup --threads {o.threads}:",
            "",
            "| cold `cat` MB/s | `strata warmup` MB/s | warmup / cat | `cat` after warmup MB/s |",
            "| ---: | ---: | ---: | ---: |",
            f"| {mbps(total, cold_cat):.0f} | {mbps(total, warm_s):.0f} | "
            f"{cold_cat / warm_s:.2f}x | {mbps(total, warm_cat):.0f} |",
        ])
        print(table)
        if o.out:
            Path(o.out).write_text(table + "\n")
    except (harness.StepError, subprocess.CalledProcessError, OSError) as e:
        print(f"bench/warmup.py: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt as e:
        print(f"bench/warmup.py: interrupted ({e}); cleaning up", file=sys.stderr)
        code = 130
    finally:
        try:
            t.teardown()
        finally:
            harness.force_unmount(t.mnt)
        if o.keep or harness.is_mounted(t.mnt):
            harness.log(f"workspace kept: {ws}")
        else:
            shutil.rmtree(ws, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

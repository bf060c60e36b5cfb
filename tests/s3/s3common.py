"""Shared helpers of the S3 gateway scenarios: argument parsing, a boto3 client, assertions.

Every scenario script takes --endpoint, --key, --secret and --bucket (and its own extras),
asserts, and exits non-zero with a message on the first failure."""

import argparse
import hashlib
import os
import sys

import boto3
import botocore.config
import botocore.exceptions


def parser(doc):
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--endpoint", required=True)
    p.add_argument("--key", required=True, help="access key id: the token's public id")
    p.add_argument("--secret", required=True, help="secret access key: the token secret")
    p.add_argument("--bucket", required=True)
    return p


def client(endpoint, key, secret):
    cfg = botocore.config.Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        # One attempt: a failure must show, not be retried away.
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=5,
        read_timeout=60,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=cfg,
    )


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def eq(got, want, what):
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")


def same_bytes(got, want, what):
    if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        fail(f"{what}: {len(got)} bytes, want {len(want)}; first difference at byte {at}")


def error_code(fn, *args, **kwargs):
    """Calls fn and returns the S3 error code it failed with (fails if it succeeded)."""
    try:
        fn(*args, **kwargs)
    except botocore.exceptions.ClientError as e:
        return e.response.get("Error", {}).get("Code")
    fail(f"{getattr(fn, '__name__', fn)}{args or ''} {kwargs or ''} succeeded, an error was expected")


def expect_error(want, fn, *args, **kwargs):
    got = error_code(fn, *args, **kwargs)
    if isinstance(want, str):
        want = (want,)
    check(got in want, f"{getattr(fn, '__name__', fn)} {kwargs}: error {got!r}, want one of {want}")


def data(n, seed):
    """n deterministic pseudo-random bytes."""
    out = bytearray()
    block = seed.to_bytes(8, "little")
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def md5(b):
    return hashlib.md5(b).hexdigest()


def keys_of(s3, bucket, prefix=""):
    """Every key under prefix, following continuation tokens."""
    keys, token = [], None
    while True:
        kw = {"Bucket": bucket, "Prefix": prefix}
        if token:
            kw["ContinuationToken"] = token
        r = s3.list_objects_v2(**kw)
        keys += [o["Key"] for o in r.get("Contents", [])]
        if not r.get("IsTruncated"):
            return keys
        token = r["NextContinuationToken"]


def ok():
    print(f"ok: {os.path.basename(sys.argv[0])}")


# Checksums S3 defines, computed here independently of the gateway (Python has CRC32 and the
# SHAs; CRC32C and CRC64NVME are table-driven CRCs, checked against their standard check values).
def _crc_table(poly, width):
    mask = (1 << width) - 1
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c & mask)
    return table


_CRC32C = _crc_table(0x82F63B78, 32)
_CRC64NVME = _crc_table(0x9A6C9329AC4BC9B5, 64)


def _crc(table, width, b):
    mask = (1 << width) - 1
    c = mask
    for x in b:
        c = table[(c ^ x) & 0xFF] ^ (c >> 8)
    return (c ^ mask).to_bytes(width // 8, "big")


def checksum(algo, b):
    """S3's base64 checksum value of b."""
    import base64
    import zlib
    raw = {
        "CRC32": lambda: zlib.crc32(b).to_bytes(4, "big"),
        "CRC32C": lambda: _crc(_CRC32C, 32, b),
        "CRC64NVME": lambda: _crc(_CRC64NVME, 64, b),
        "SHA1": lambda: hashlib.sha1(b).digest(),
        "SHA256": lambda: hashlib.sha256(b).digest(),
    }[algo]()
    return base64.b64encode(raw).decode()


ALGOS = ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"]
assert _crc(_CRC32C, 32, b"123456789").hex() == "e3069283"
assert _crc(_CRC64NVME, 64, b"123456789").hex() == "ae8b14860a799888"


class Raw:
    """Hand-made SigV4 requests (what an SDK sends, built here so each part can be chosen):
    plain, `Date`-dated, and aws-chunked bodies with trailers, signed or unsigned."""

    def __init__(self, endpoint, key, secret, region="us-east-1"):
        import urllib.parse
        self.endpoint, self.key, self.secret, self.region = endpoint, key, secret, region
        u = urllib.parse.urlparse(endpoint)
        self.host, self.port = u.hostname, u.port

    def _sign(self, method, path, headers, payload_hash, query=""):
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials
        url = f"{self.endpoint}{path}" + (f"?{query}" if query else "")
        req = AWSRequest(method=method, url=url, headers=dict(headers))
        req.headers["X-Amz-Content-SHA256"] = payload_hash
        SigV4Auth(Credentials(self.key, self.secret), "s3", self.region).add_auth(req)
        return dict(req.headers.items())

    def send(self, method, path, headers, body=b"", query=""):
        import http.client
        c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        c.request(method, path + (f"?{query}" if query else ""), body=body, headers=headers)
        r = c.getresponse()
        out = (r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read())
        c.close()
        return out

    def put(self, path, body, headers=None, dated=False, query=""):
        """A PUT with a signed payload (dated by `Date` instead of X-Amz-Date if asked)."""
        return self.request("PUT", path, body, headers, dated, query)

    def request(self, method, path, body=b"", headers=None, dated=False, query=""):
        h = dict(headers or {})
        if dated:
            h["Date"] = "now"  # botocore replaces it with the signing time
        signed = self._sign(method, path, h, hashlib.sha256(body).hexdigest(), query)
        return self.send(method, path, signed, body, query)

    def chunked(self, path, body, algo, value, signed, headers=None, chunk=64 * 1024, send=None):
        """A PUT of an aws-chunked body whose checksum `algo` comes as the trailer `value`
        (without `algo`: signed chunks and no trailer, STREAMING-AWS4-HMAC-SHA256-PAYLOAD)."""
        import hmac
        h = dict(headers or {})
        h.update({"Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": str(len(body))})
        if algo:
            trailer = f"x-amz-checksum-{algo.lower()}"
            h["X-Amz-Trailer"] = trailer
            mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" if signed else "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
            trailer_line = f"{trailer}:{value}".encode()
        else:
            mode, trailer_line = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", None
        pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)] + [b""]
        # `send`: other bytes of the same length in place of the body, under the body's signatures.
        sent = [send[i:i + chunk] for i in range(0, len(send), chunk)] + [b""] if send else pieces
        # The length is part of what is signed: computed with placeholder signatures of the same size.
        sig_len = len(";chunk-signature=") + 64 if signed else 0
        length = sum(len(f"{len(p):x}") + sig_len + 2 + len(p) + 2 for p in pieces)
        if trailer_line is not None:
            length += len(trailer_line) + 2
            if signed:
                length += len("x-amz-trailer-signature:") + 64 + 2
            length += 2
        h["Content-Length"] = str(length)
        s = self._sign("PUT", path, h, mode)
        if not signed:
            out = b"".join(f"{len(p):x}".encode() + b"\r\n" + p + b"\r\n" for p in pieces)
            out += trailer_line + b"\r\n\r\n"
            return self.send("PUT", path, s, out)
        auth = s["Authorization"]
        prev = auth.split("Signature=")[1]
        date = s["X-Amz-Date"]
        scope = f"{date[:8]}/{self.region}/s3/aws4_request"
        k = ("AWS4" + self.secret).encode()
        for part in (date[:8], self.region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        empty = hashlib.sha256(b"").hexdigest()
        out = b""
        for p, q in zip(pieces, sent):
            sts = f"AWS4-HMAC-SHA256-PAYLOAD\n{date}\n{scope}\n{prev}\n{empty}\n{hashlib.sha256(p).hexdigest()}"
            prev = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
            out += f"{len(p):x};chunk-signature={prev}\r\n".encode() + q + b"\r\n"
        if trailer_line is None:
            check(len(out) == length, f"chunked body is {len(out)} bytes, announced {length}")
            return self.send("PUT", path, s, out)
        trailer_hash = hashlib.sha256(trailer_line + b"\n").hexdigest()
        sts = f"AWS4-HMAC-SHA256-TRAILER\n{date}\n{scope}\n{prev}\n{trailer_hash}"
        tsig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
        out += trailer_line + b"\r\n" + f"x-amz-trailer-signature:{tsig}\r\n".encode() + b"\r\n"
        check(len(out) == length, f"chunked body is {len(out)} bytes, announced {length}")
        return self.send("PUT", path, s, out)


def xml_code(body):
    import re
    m = re.search(rb"<Code>([^<]*)</Code>", body)
    return m.group(1).decode() if m else None

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

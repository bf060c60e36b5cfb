"""Conditional requests: If-None-Match/If-Match on PUT and CompleteMultipartUpload (atomic:
of two racing conditional PUTs exactly one wins, also against a mount creating the same key),
GET/HEAD conditions with S3's precedence and a 304 carrying the ETag, DELETE If-Match,
CopyObject's x-amz-copy-source-if-* and destination If-None-Match."""

import datetime
import os
import threading

import botocore.exceptions

from s3common import check, client, data, eq, expect_error, fail, md5, ok, parser

p = parser(__doc__)
p.add_argument("--mount", required=True, help="where the bucket's volume is mounted")
a = p.parse_args()
s3 = client(a.endpoint, a.key, a.secret)
b = a.bucket


def status(fn, **kw):
    try:
        fn(**kw)
        return 200
    except botocore.exceptions.ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"]


# Create-if-absent: the first PUT wins, the second is 412 and changes nothing.
s3.put_object(Bucket=b, Key="cond/a", Body=b"one", IfNoneMatch="*")
expect_error("PreconditionFailed", s3.put_object, Bucket=b, Key="cond/a", Body=b"two", IfNoneMatch="*")
eq(s3.get_object(Bucket=b, Key="cond/a")["Body"].read(), b"one", "object after a refused If-None-Match PUT")
# Compare-and-swap: If-Match with the current ETag replaces, with a stale one is 412.
s3.put_object(Bucket=b, Key="cond/a", Body=b"three", IfMatch=md5(b"one"))
expect_error("PreconditionFailed", s3.put_object, Bucket=b, Key="cond/a", Body=b"four", IfMatch=md5(b"one"))
eq(s3.get_object(Bucket=b, Key="cond/a")["Body"].read(), b"three", "object after a stale If-Match PUT")
expect_error("PreconditionFailed", s3.put_object, Bucket=b, Key="cond/missing", Body=b"x", IfMatch=md5(b"x"))
expect_error(("NoSuchKey", "404"), s3.head_object, Bucket=b, Key="cond/missing")
# If-None-Match with an ETag (RFC 9110; S3 itself takes only "*"): write unless it is current.
expect_error("PreconditionFailed", s3.put_object, Bucket=b, Key="cond/a", Body=b"x", IfNoneMatch=md5(b"three"))
s3.put_object(Bucket=b, Key="cond/a", Body=b"three", IfNoneMatch='"0000"')

# Racing writers: of N conditional PUTs of one key, exactly one wins.
for round_, cond in enumerate(["create", "swap"]):
    key = f"cond/race-{cond}"
    if cond == "swap":
        s3.put_object(Bucket=b, Key=key, Body=b"base")
    results = {}

    def put(i):
        kw = {"IfNoneMatch": "*"} if cond == "create" else {"IfMatch": md5(b"base")}
        results[i] = status(s3.put_object, Bucket=b, Key=key, Body=data(300_000, 100 + i), **kw)

    ts = [threading.Thread(target=put, args=(i,)) for i in range(6)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    winners = [i for i, s in results.items() if s == 200]
    eq(len(winners), 1, f"winners of 6 racing {cond} PUTs ({results})")
    check(all(s == 412 for i, s in results.items() if i not in winners), f"losers answer 412: {results}")
    got = s3.get_object(Bucket=b, Key=key)["Body"].read()
    eq(md5(got), md5(data(300_000, 100 + winners[0])), f"content after the {cond} race is the winner's")

# A mount creating the key (O_EXCL) races a gateway create-if-absent: exactly one wins.
for i in range(4):
    key = f"cond/mount-race-{i}"
    path = os.path.join(a.mount, key)
    res = {}

    def from_mount():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, b"mount")
            os.close(fd)
            res["mount"] = True
        except FileExistsError:
            res["mount"] = False

    def from_s3():
        res["s3"] = status(s3.put_object, Bucket=b, Key=key, Body=b"gateway", IfNoneMatch="*") == 200

    os.makedirs(os.path.dirname(path), exist_ok=True)
    ts = [threading.Thread(target=from_mount), threading.Thread(target=from_s3)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    eq(sorted(res.values()), [False, True], f"exactly one of mount and gateway created {key} ({res})")
    want = b"mount" if res["mount"] else b"gateway"
    eq(s3.get_object(Bucket=b, Key=key)["Body"].read(), want, f"content of {key}")
# A write through the mount between a client's read and its If-Match PUT makes the PUT fail.
s3.put_object(Bucket=b, Key="cond/mounted", Body=b"v1")
tag = s3.head_object(Bucket=b, Key="cond/mounted")["ETag"]
with open(os.path.join(a.mount, "cond/mounted"), "r+b") as f:
    f.write(b"V")
expect_error("PreconditionFailed", s3.put_object, Bucket=b, Key="cond/mounted", Body=b"v2", IfMatch=tag)
eq(open(os.path.join(a.mount, "cond/mounted"), "rb").read(), b"V1", "the mount's write stays")

# Reads: precedence of If-Match / If-None-Match / If-Modified-Since / If-Unmodified-Since.
s3.put_object(Bucket=b, Key="cond/r", Body=b"read me")
h = s3.head_object(Bucket=b, Key="cond/r")
tag, lm = h["ETag"], h["LastModified"]
before, after = lm - datetime.timedelta(hours=1), lm + datetime.timedelta(hours=1)
cases = [
    ({"IfMatch": tag}, 200), ({"IfMatch": '"0000"'}, 412),
    ({"IfNoneMatch": tag}, 304), ({"IfNoneMatch": '"0000"'}, 200),
    ({"IfModifiedSince": before}, 200), ({"IfModifiedSince": after}, 304),
    ({"IfUnmodifiedSince": after}, 200), ({"IfUnmodifiedSince": before}, 412),
    # S3: If-Match true + If-Unmodified-Since false -> 200.
    ({"IfMatch": tag, "IfUnmodifiedSince": before}, 200),
    # S3: If-None-Match false (no match) + If-Modified-Since false -> 200 (the ETag decides).
    ({"IfNoneMatch": '"0000"', "IfModifiedSince": after}, 200),
    ({"IfNoneMatch": tag, "IfModifiedSince": before}, 304),
]
for kw, want in cases:
    eq(status(s3.get_object, Bucket=b, Key="cond/r", **kw), want, f"GET with {kw}")
    eq(status(s3.head_object, Bucket=b, Key="cond/r", **kw), want, f"HEAD with {kw}")
# A 304 carries the ETag and Last-Modified.
try:
    s3.get_object(Bucket=b, Key="cond/r", IfNoneMatch=tag)
    fail("If-None-Match with the current ETag did not answer 304")
except botocore.exceptions.ClientError as e:
    hs = e.response["ResponseMetadata"]["HTTPHeaders"]
    eq(hs.get("etag"), tag, "ETag of a 304")
    check("last-modified" in hs, f"a 304 has Last-Modified: {hs}")

# DELETE If-Match: a stale ETag is 412 and deletes nothing; the current one deletes.
expect_error("PreconditionFailed", s3.delete_object, Bucket=b, Key="cond/r", IfMatch='"0000"')
s3.head_object(Bucket=b, Key="cond/r")
s3.delete_object(Bucket=b, Key="cond/r", IfMatch=tag)
expect_error(("404", "NoSuchKey"), s3.head_object, Bucket=b, Key="cond/r")
expect_error("PreconditionFailed", s3.delete_object, Bucket=b, Key="cond/r", IfMatch=tag)

# CopyObject: the source's conditions, and the destination's If-None-Match.
src = {"Bucket": b, "Key": "cond/a"}
stag = s3.head_object(Bucket=b, Key="cond/a")["ETag"]
for kw, want in [
    ({"CopySourceIfMatch": stag}, 200), ({"CopySourceIfMatch": '"0000"'}, 412),
    ({"CopySourceIfNoneMatch": stag}, 412), ({"CopySourceIfNoneMatch": '"0000"'}, 200),
    ({"CopySourceIfModifiedSince": after}, 412), ({"CopySourceIfUnmodifiedSince": before}, 412),
    ({"CopySourceIfMatch": stag, "CopySourceIfUnmodifiedSince": before}, 200),
]:
    eq(status(s3.copy_object, Bucket=b, Key="cond/copy", CopySource=src, **kw), want, f"copy with {kw}")


def no_overwrite(params, **_):
    params["headers"]["If-None-Match"] = "*"


s3.meta.events.register("before-call.s3.CopyObject", no_overwrite)
expect_error("PreconditionFailed", s3.copy_object, Bucket=b, Key="cond/copy", CopySource=src)
s3.copy_object(Bucket=b, Key="cond/copy-new", CopySource=src)
s3.meta.events.unregister("before-call.s3.CopyObject", no_overwrite)

# CompleteMultipartUpload If-None-Match: refused when the key appeared meanwhile.
up = s3.create_multipart_upload(Bucket=b, Key="cond/mpu")
e1 = s3.upload_part(Bucket=b, Key="cond/mpu", UploadId=up["UploadId"], PartNumber=1, Body=b"part")["ETag"]
s3.put_object(Bucket=b, Key="cond/mpu", Body=b"came first")
parts = {"Parts": [{"PartNumber": 1, "ETag": e1}]}
expect_error("PreconditionFailed", s3.complete_multipart_upload, Bucket=b, Key="cond/mpu", UploadId=up["UploadId"],
             MultipartUpload=parts, IfNoneMatch="*")
eq(s3.get_object(Bucket=b, Key="cond/mpu")["Body"].read(), b"came first", "object after a refused completion")
s3.abort_multipart_upload(Bucket=b, Key="cond/mpu", UploadId=up["UploadId"])
ok()

"""Objects: byte-exact put/get (multi-MiB and empty), ranged and conditional gets, head,
content type and user metadata, copy (within and across buckets), delete and delete-objects,
refused keys, an oversized PUT."""

import os
import urllib.error
import urllib.request

from s3common import (check, client, data, eq, error_code, expect_error, fail, keys_of, md5, ok, parser,
                      same_bytes)

p = parser(__doc__)
p.add_argument("--other-bucket", required=True, help="a second bucket the key may write")
p.add_argument("--max-object-size", type=int, required=True)
p.add_argument("--mount", help="where the bucket's volume is mounted, to check what is left behind")
a = p.parse_args()
s3 = client(a.endpoint, a.key, a.secret)
b = a.bucket

# Byte-exact round trips, ETag = MD5 for simple puts.
big = data(9 * 1024 * 1024 + 123, 1)
r = s3.put_object(Bucket=b, Key="obj/big.bin", Body=big)
eq(r["ETag"].strip('"'), md5(big), "ETag of a put")
got = s3.get_object(Bucket=b, Key="obj/big.bin")
same_bytes(got["Body"].read(), big, "get of a 9 MiB object")
eq(got["ContentLength"], len(big), "Content-Length")
eq(got["ETag"].strip('"'), md5(big), "ETag of a get")
s3.put_object(Bucket=b, Key="obj/empty", Body=b"")
got = s3.get_object(Bucket=b, Key="obj/empty")
same_bytes(got["Body"].read(), b"", "get of an empty object")
eq(got["ContentLength"], 0, "Content-Length of an empty object")
eq(s3.head_object(Bucket=b, Key="obj/empty")["ETag"].strip('"'), md5(b""), "ETag of the empty object")

# An overwrite replaces the content.
small = data(1000, 2)
s3.put_object(Bucket=b, Key="obj/small", Body=data(5000, 3))
s3.put_object(Bucket=b, Key="obj/small", Body=small)
same_bytes(s3.get_object(Bucket=b, Key="obj/small")["Body"].read(), small, "overwritten object")

# A presigned URL works without credentials of its own; a tampered one does not.
url = s3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "obj/small"}, ExpiresIn=60)
same_bytes(urllib.request.urlopen(url, timeout=10).read(), small, "get through a presigned URL")
try:
    urllib.request.urlopen(url.replace("obj/small", "obj/big.bin"), timeout=10)
    fail("a presigned URL for another key was served")
except urllib.error.HTTPError as e:
    eq(e.code, 403, "status of a tampered presigned URL")

# A body that does not match its Content-MD5 is refused and replaces nothing.
expect_error("BadDigest", s3.put_object, Bucket=b, Key="obj/small", Body=b"other", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")
same_bytes(s3.get_object(Bucket=b, Key="obj/small")["Body"].read(), small, "object after a bad digest")

# Content-Type and user metadata are kept with the object, and by a copy unless replaced.
s3.put_object(Bucket=b, Key="obj/typed.json", Body=b"{}", ContentType="application/json",
              Metadata={"origin": "camera-7", "note": "a b:c"})
h = s3.head_object(Bucket=b, Key="obj/typed.json")
eq((h["ContentType"], h["Metadata"]), ("application/json", {"origin": "camera-7", "note": "a b:c"}), "head metadata")
g = s3.get_object(Bucket=b, Key="obj/typed.json")
eq((g["ContentType"], g["Metadata"]), ("application/json", {"origin": "camera-7", "note": "a b:c"}), "get metadata")
s3.copy_object(Bucket=b, Key="obj/typed-copy", CopySource={"Bucket": b, "Key": "obj/typed.json"})
eq(s3.head_object(Bucket=b, Key="obj/typed-copy")["Metadata"], {"origin": "camera-7", "note": "a b:c"}, "copied metadata")
s3.copy_object(Bucket=b, Key="obj/typed-copy", CopySource={"Bucket": b, "Key": "obj/typed.json"},
               MetadataDirective="REPLACE", ContentType="text/plain", Metadata={"new": "1"})
h = s3.head_object(Bucket=b, Key="obj/typed-copy")
eq((h["ContentType"], h["Metadata"]), ("text/plain", {"new": "1"}), "replaced metadata")
expect_error("MetadataTooLarge", s3.put_object, Bucket=b, Key="obj/fat", Body=b"x", Metadata={"k": "v" * 3000})

# Atomic replacement: while two versions are put over each other, every get returns one of
# them whole.
import threading

versions = [data(3 * 1024 * 1024 + 1, 41), data(2 * 1024 * 1024 + 7, 42)]
s3.put_object(Bucket=b, Key="obj/atomic", Body=versions[0])
stop = threading.Event()


def writer():
    w = client(a.endpoint, a.key, a.secret)
    i = 0
    while not stop.is_set():
        i += 1
        w.put_object(Bucket=b, Key="obj/atomic", Body=versions[i % 2])


t = threading.Thread(target=writer)
t.start()
try:
    tags = {md5(v): len(v) for v in versions}
    for _ in range(15):
        got = s3.get_object(Bucket=b, Key="obj/atomic")["Body"].read()
        check(got in versions, f"a get during overwrites returned {len(got)} bytes that are neither version")
        h = s3.head_object(Bucket=b, Key="obj/atomic")
        check(tags.get(h["ETag"].strip('"')) == h["ContentLength"], f"head during overwrites: {h['ETag']}")
finally:
    stop.set()
    t.join()

# Puts and deletes of keys sharing a directory, which each delete may remove when it empties,
# and listings meanwhile: no put or listing fails because a directory went away under it.
errors = []


def churn(name):
    w = client(a.endpoint, a.key, a.secret)
    try:
        for _ in range(15):
            w.put_object(Bucket=b, Key=f"race/d/{name}", Body=name.encode())
            w.delete_object(Bucket=b, Key=f"race/d/{name}")
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        errors.append(f"{name}: {e}")


def lister():
    w = client(a.endpoint, a.key, a.secret)
    try:
        for _ in range(20):
            w.list_objects_v2(Bucket=b, Prefix="race/")
            w.list_objects_v2(Bucket=b, Prefix="race/", Delimiter="/")
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        errors.append(f"lister: {e}")


threads = [threading.Thread(target=churn, args=(n,)) for n in ("j", "k", "l")] + [threading.Thread(target=lister)]
for t in threads:
    t.start()
for t in threads:
    t.join()
eq(errors, [], "puts, deletes and listings in one directory")
eq(keys_of(s3, b, "race/"), [], "keys after the churn")

# Head.
h = s3.head_object(Bucket=b, Key="obj/big.bin")
eq(h["ContentLength"], len(big), "head Content-Length")
eq(h["ETag"].strip('"'), md5(big), "head ETag")
check(h.get("LastModified") is not None, "head has Last-Modified")
expect_error(("404", "NoSuchKey"), s3.head_object, Bucket=b, Key="obj/missing")
expect_error("NoSuchKey", s3.get_object, Bucket=b, Key="obj/missing")
# A directory is no object.
expect_error("NoSuchKey", s3.get_object, Bucket=b, Key="obj")

# Conditional reads against the ETag.
tag = h["ETag"]
eq(s3.get_object(Bucket=b, Key="obj/big.bin", IfMatch=tag, Range="bytes=0-3")["Body"].read(), big[:4], "If-Match")
expect_error(("412", "PreconditionFailed"), s3.get_object, Bucket=b, Key="obj/big.bin", IfMatch='"0000"')
expect_error(("304", "NotModified"), s3.head_object, Bucket=b, Key="obj/big.bin", IfNoneMatch=tag)

# Ranges: first bytes, middle, open end, suffix, past the end (416).
for rng, want in [
    ("bytes=0-9", big[0:10]),
    ("bytes=4194300-4194400", big[4194300:4194401]),
    (f"bytes={len(big) - 5}-", big[-5:]),
    ("bytes=-7", big[-7:]),
    (f"bytes=5-{len(big) + 100}", big[5:]),
]:
    r = s3.get_object(Bucket=b, Key="obj/big.bin", Range=rng)
    same_bytes(r["Body"].read(), want, f"range {rng}")
    eq(r["ResponseMetadata"]["HTTPStatusCode"], 206, f"status of range {rng}")
    eq(r["ContentLength"], len(want), f"Content-Length of range {rng}")
    check(r["ContentRange"].endswith(f"/{len(big)}"), f"Content-Range of {rng}: {r['ContentRange']}")
expect_error("InvalidRange", s3.get_object, Bucket=b, Key="obj/big.bin", Range=f"bytes={len(big)}-")
expect_error("InvalidRange", s3.get_object, Bucket=b, Key="obj/empty", Range="bytes=0-0")

# Copy within the bucket and into another one.
r = s3.copy_object(Bucket=b, Key="copy/of-small", CopySource={"Bucket": b, "Key": "obj/small"})
eq(r["CopyObjectResult"]["ETag"].strip('"'), md5(small), "ETag of a copy")
same_bytes(s3.get_object(Bucket=b, Key="copy/of-small")["Body"].read(), small, "copy in the bucket")
s3.copy_object(Bucket=a.other_bucket, Key="from-other/big", CopySource={"Bucket": b, "Key": "obj/big.bin"})
same_bytes(s3.get_object(Bucket=a.other_bucket, Key="from-other/big")["Body"].read(), big, "copy across buckets")
expect_error("NoSuchKey", s3.copy_object, Bucket=b, Key="copy/x", CopySource={"Bucket": b, "Key": "obj/missing"})
expect_error("NoSuchBucket", s3.copy_object, Bucket=b, Key="copy/x",
             CopySource={"Bucket": "no-such-volume", "Key": "x"})

# Delete: the key goes, its emptied directories do not linger as prefixes, deleting a missing
# key succeeds.
s3.put_object(Bucket=b, Key="del/deep/er/one", Body=b"1")
s3.delete_object(Bucket=b, Key="del/deep/er/one")
expect_error("NoSuchKey", s3.get_object, Bucket=b, Key="del/deep/er/one")
r = s3.list_objects_v2(Bucket=b, Prefix="del", Delimiter="/")
eq(r.get("CommonPrefixes", []), [], "prefixes left by a delete")
s3.delete_object(Bucket=b, Key="del/never-was")
for i in range(5):
    s3.put_object(Bucket=b, Key=f"multi/{i}", Body=b"x")
r = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": f"multi/{i}"} for i in range(4)] + [{"Key": "../bad"}]})
eq(sorted(d["Key"] for d in r.get("Deleted", [])), [f"multi/{i}" for i in range(4)], "delete_objects deleted")
eq([(e["Key"], e["Code"]) for e in r.get("Errors", [])], [("../bad", "InvalidArgument")], "delete_objects errors")
eq(keys_of(s3, b, "multi/"), ["multi/4"], "keys left after delete_objects")

# Keys that cannot be paths are refused with a clear error, and create nothing.
for bad in ["../x", "a//b", "a/../b", "/lead", "trail/", "./x", "n" * 256, "a/.strata-s3-uploads/x"]:
    code = error_code(s3.put_object, Bucket=b, Key=bad, Body=b"x")
    check(code in ("InvalidArgument", "KeyTooLongError"), f"put of key {bad!r}: {code}")

# A key whose directory is an object, or a key that is a directory of other keys, cannot be
# a file: refused with a message, nothing changes.
s3.put_object(Bucket=b, Key="conf/inner", Body=b"1")
expect_error("InvalidRequest", s3.put_object, Bucket=b, Key="conf", Body=b"2")
expect_error("InvalidRequest", s3.put_object, Bucket=b, Key="conf/inner/deeper", Body=b"3")
expect_error("InvalidRequest", s3.copy_object, Bucket=b, Key="conf", CopySource={"Bucket": b, "Key": "obj/small"})
eq(s3.get_object(Bucket=b, Key="conf/inner")["Body"].read(), b"1", "object beside refused conflicting puts")
expect_error("NoSuchKey", s3.get_object, Bucket=b, Key="conf/inner/deeper")

# A PUT larger than --max-object-size is refused and leaves nothing behind.
before = keys_of(s3, b)
code = error_code(s3.put_object, Bucket=b, Key="too/big", Body=b"\0" * (a.max_object_size + 1))
eq(code, "EntityTooLarge", "oversized put")
eq(keys_of(s3, b), before, "keys after an oversized put")
if a.mount:
    check(not os.path.exists(os.path.join(a.mount, "too")), "directory made for a refused put stays")
expect_error("NoSuchKey", s3.get_object, Bucket=b, Key="too/big")
ok()

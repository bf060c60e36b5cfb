"""Additional checksums (CRC32, CRC32C, SHA1, SHA256, CRC64NVME): from headers and from
aws-chunked trailers (unsigned and signed); a corrupted body stores nothing and answers
BadDigest; malformed or contradictory checksums answer InvalidRequest; stored values come back
with x-amz-checksum-mode (GET, HEAD, GetObjectAttributes); multipart per-part and composite
checksums; the SDK's own default checksums on put and upload."""

import base64
import hashlib
import io

from s3common import ALGOS, Raw, check, checksum, client, data, eq, expect_error, ok, parser, xml_code

p = parser(__doc__)
a = p.parse_args()
s3 = client(a.endpoint, a.key, a.secret)
raw = Raw(a.endpoint, a.key, a.secret)
b = a.bucket
body = data(200_000, 7)
bad = bytearray(body)
bad[1234] ^= 0x01
bad = bytes(bad)


def absent(key):
    try:
        s3.head_object(Bucket=b, Key=key)
        return False
    except Exception:
        return True


for algo in ALGOS:
    good = checksum(algo, body)
    hdr = f"x-amz-checksum-{algo.lower()}"
    # Header form, through boto3 (its own checksum of the body where it computes this algorithm
    # without the optional CRT, else the value given).
    key = f"ck/{algo}/sdk"
    own = {"ChecksumAlgorithm": algo} if algo in ("CRC32", "SHA1", "SHA256") else {f"Checksum{algo}": good}
    r = s3.put_object(Bucket=b, Key=key, Body=body, **own)
    eq(r.get(f"Checksum{algo}"), good, f"PutObject's {algo}")
    h = s3.head_object(Bucket=b, Key=key, ChecksumMode="ENABLED")
    eq(h.get(f"Checksum{algo}"), good, f"HEAD's {algo}")
    g = s3.get_object(Bucket=b, Key=key, ChecksumMode="ENABLED")
    eq(g.get(f"Checksum{algo}"), good, f"GET's {algo}")
    g["Body"].read()
    check(f"Checksum{algo}" not in s3.head_object(Bucket=b, Key=key), "no checksum without x-amz-checksum-mode")
    attrs = s3.get_object_attributes(Bucket=b, Key=key, ObjectAttributes=["Checksum", "ObjectSize", "ETag"])
    eq(attrs["Checksum"].get(f"Checksum{algo}"), good, f"GetObjectAttributes' {algo}")
    # Header form, by hand: a corrupted body with the original's checksum stores nothing.
    key = f"ck/{algo}/header"
    st, _, out = raw.put(f"/{b}/{key}", bad, {hdr: good})
    eq((st, xml_code(out)), (400, "BadDigest"), f"corrupted body with a {algo} header")
    check(absent(key), f"nothing stored after a bad {algo} header")
    st, _, out = raw.put(f"/{b}/{key}", body, {hdr: "not base64!"})
    eq((st, xml_code(out)), (400, "InvalidRequest"), f"malformed {algo} header")
    st, hs, _ = raw.put(f"/{b}/{key}", body, {hdr: good})
    eq((st, hs.get(hdr)), (200, good), f"correct {algo} header")
    # Trailer forms: unsigned (what SDKs send by default over TLS) and signed.
    for signed in (False, True):
        key = f"ck/{algo}/trailer-{'signed' if signed else 'unsigned'}"
        st, _, out = raw.chunked(f"/{b}/{key}", bad, algo, good, signed)
        eq((st, xml_code(out)), (400, "BadDigest"), f"corrupted body with a {algo} trailer (signed={signed})")
        check(absent(key), f"nothing stored after a bad {algo} trailer")
        st, _, out = raw.chunked(f"/{b}/{key}", body, algo, good, signed)
        eq(st, 200, f"correct {algo} trailer (signed={signed}): {out[:300]!r}")
        h = s3.head_object(Bucket=b, Key=key, ChecksumMode="ENABLED")
        eq(h.get(f"Checksum{algo}"), good, f"stored {algo} of a trailer upload")
        eq(h.get("ContentEncoding"), None, "aws-chunked is how the body came, not the object's encoding")
        eq(s3.get_object(Bucket=b, Key=key)["Body"].read(), body, "content of a chunked upload")

# Signed chunks without a trailer (what SDKs stream when the length is known but the payload
# is not hashed up front): a tampered chunk breaks its signature.
st, _, out = raw.chunked(f"/{b}/ck/signed-chunks", body, None, None, True)
eq(st, 200, f"signed aws-chunked upload: {out[:300]!r}")
eq(s3.get_object(Bucket=b, Key="ck/signed-chunks")["Body"].read(), body, "content of a signed chunked upload")
st, _, out = raw.chunked(f"/{b}/ck/tampered-chunks", body, None, None, True, send=bad)
check(st in (400, 403), f"a tampered signed chunk is refused: {st} {out[:200]!r}")
check(absent("ck/tampered-chunks"), "nothing stored from a tampered signed chunk")

# Two checksum headers, or one that contradicts the declared algorithm: InvalidRequest.
st, _, out = raw.put(f"/{b}/ck/two", body, {"x-amz-checksum-crc32": checksum("CRC32", body),
                                           "x-amz-checksum-sha1": checksum("SHA1", body)})
eq((st, xml_code(out)), (400, "InvalidRequest"), "two checksum headers")
st, _, out = raw.put(f"/{b}/ck/two", body, {"x-amz-checksum-crc32": checksum("CRC32", body),
                                           "x-amz-sdk-checksum-algorithm": "SHA256"})
eq((st, xml_code(out)), (400, "InvalidRequest"), "a checksum of another algorithm than declared")

# Multipart, composite: parts carry checksums, the object the checksum of theirs.
key = "ck/mpu-composite"
up = s3.create_multipart_upload(Bucket=b, Key=key, ChecksumAlgorithm="SHA256")
p1, p2 = data(5 * 1024 * 1024, 8), data(1000, 9)
r1 = s3.upload_part(Bucket=b, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=p1, ChecksumAlgorithm="SHA256")
eq(r1.get("ChecksumSHA256"), checksum("SHA256", p1), "part 1's SHA256")
r2 = s3.upload_part(Bucket=b, Key=key, UploadId=up["UploadId"], PartNumber=2, Body=p2, ChecksumAlgorithm="SHA256")
parts = [{"PartNumber": 1, "ETag": r1["ETag"], "ChecksumSHA256": r1["ChecksumSHA256"]},
         {"PartNumber": 2, "ETag": r2["ETag"], "ChecksumSHA256": r2["ChecksumSHA256"]}]
done = s3.complete_multipart_upload(Bucket=b, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": parts})
composite = base64.b64encode(hashlib.sha256(base64.b64decode(r1["ChecksumSHA256"]) +
                                            base64.b64decode(r2["ChecksumSHA256"])).digest()).decode()
eq(done.get("ChecksumSHA256"), f"{composite}-2", "composite checksum of the completion")
h = s3.head_object(Bucket=b, Key=key, ChecksumMode="ENABLED")
eq((h.get("ChecksumSHA256"), h.get("ChecksumType")), (f"{composite}-2", "COMPOSITE"), "HEAD of a composite object")
# A part whose body does not match its checksum is refused.
up = s3.create_multipart_upload(Bucket=b, Key="ck/mpu-bad", ChecksumAlgorithm="CRC32C")
st, _, out = raw.put(f"/{b}/ck/mpu-bad", bad, {"x-amz-checksum-crc32c": checksum("CRC32C", body)},
                    query=f"partNumber=1&uploadId={up['UploadId']}")
eq((st, xml_code(out)), (400, "BadDigest"), "a corrupted part")
eq(s3.list_parts(Bucket=b, Key="ck/mpu-bad", UploadId=up["UploadId"]).get("Parts", []), [], "no part stored")
s3.abort_multipart_upload(Bucket=b, Key="ck/mpu-bad", UploadId=up["UploadId"])

# Full-object CRC over a multipart upload: the CRC of the whole object.
key = "ck/mpu-full"
up = s3.create_multipart_upload(Bucket=b, Key=key, ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT")
r1 = s3.upload_part(Bucket=b, Key=key, UploadId=up["UploadId"], PartNumber=1, Body=p1, ChecksumAlgorithm="CRC32")
r2 = s3.upload_part(Bucket=b, Key=key, UploadId=up["UploadId"], PartNumber=2, Body=p2, ChecksumAlgorithm="CRC32")
done = s3.complete_multipart_upload(
    Bucket=b, Key=key, UploadId=up["UploadId"], ChecksumCRC32=checksum("CRC32", p1 + p2), ChecksumType="FULL_OBJECT",
    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r1["ETag"]}, {"PartNumber": 2, "ETag": r2["ETag"]}]})
eq(done.get("ChecksumCRC32"), checksum("CRC32", p1 + p2), "full-object CRC32 of a multipart object")
# boto3's managed transfer with its default checksums round-trips.
s3.upload_fileobj(io.BytesIO(p1 + p2), b, "ck/transfer")
eq(s3.get_object(Bucket=b, Key="ck/transfer")["Body"].read(), p1 + p2, "managed upload")
ok()

"""What S3 tools rely on beyond bytes: GET/HEAD ?partNumber with x-amz-mp-parts-count,
UploadPartCopy with ranges, an idempotent CompleteMultipartUpload, GetObjectAttributes, the
standard headers kept and a default Content-Type, S3's limits (DeleteObjects of more than 1000
keys, presigned URLs beyond 7 days, a copy onto itself), listing details (v1 Prefix, empty
ContinuationToken, FetchOwner, MaxBuckets, ListObjectVersions), RequestId in error bodies,
read-only ACL answers, object tags, SigV4 dated by `Date`."""

import datetime
import urllib.error
import urllib.request

from s3common import Raw, check, client, data, eq, expect_error, fail, md5, ok, parser, xml_code

p = parser(__doc__)
a = p.parse_args()
s3 = client(a.endpoint, a.key, a.secret)
raw = Raw(a.endpoint, a.key, a.secret)
b = a.bucket
MiB = 1024 * 1024

# A three-part object: each part by number, with the part count; out of range is 416.
parts_data = [data(5 * MiB, 21), data(5 * MiB, 22), data(123_456, 23)]
up = s3.create_multipart_upload(Bucket=b, Key="f/parts")
tags = [s3.upload_part(Bucket=b, Key="f/parts", UploadId=up["UploadId"], PartNumber=i + 1, Body=d)["ETag"]
        for i, d in enumerate(parts_data)]
done_parts = {"Parts": [{"PartNumber": i + 1, "ETag": t} for i, t in enumerate(tags)]}
done = s3.complete_multipart_upload(Bucket=b, Key="f/parts", UploadId=up["UploadId"], MultipartUpload=done_parts)
# Completion again (a client that lost the answer retries): 200 with the same ETag.
again = s3.complete_multipart_upload(Bucket=b, Key="f/parts", UploadId=up["UploadId"], MultipartUpload=done_parts)
eq(again["ETag"], done["ETag"], "ETag of a repeated completion")
expect_error("InvalidDigest", s3.put_object, Bucket=b, Key="f/md5", Body=b"x", ContentMD5="AAAA")
expect_error("BadDigest", s3.put_object, Bucket=b, Key="f/md5", Body=b"x", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")
expect_error("NoSuchUpload", s3.complete_multipart_upload, Bucket=b, Key="f/parts", UploadId="0" * 32,
             MultipartUpload=done_parts)
for n, d in enumerate(parts_data, start=1):
    g = s3.get_object(Bucket=b, Key="f/parts", PartNumber=n)
    eq((g["PartsCount"], g["ContentLength"], g["ETag"]), (3, len(d), done["ETag"]), f"GET part {n}")
    eq(md5(g["Body"].read()), md5(d), f"bytes of part {n}")
    h = s3.head_object(Bucket=b, Key="f/parts", PartNumber=n)
    eq((h["PartsCount"], h["ContentLength"]), (3, len(d)), f"HEAD part {n}")
expect_error(("InvalidPartNumber", "416"), s3.get_object, Bucket=b, Key="f/parts", PartNumber=4)
expect_error(("InvalidPartNumber", "416"), s3.head_object, Bucket=b, Key="f/parts", PartNumber=4)
expect_error("InvalidRequest", s3.get_object, Bucket=b, Key="f/parts", PartNumber=1, Range="bytes=0-1")
s3.put_object(Bucket=b, Key="f/single", Body=b"single")
eq(s3.get_object(Bucket=b, Key="f/single", PartNumber=1)["Body"].read(), b"single", "part 1 of a simple object")
expect_error(("InvalidPartNumber", "416"), s3.get_object, Bucket=b, Key="f/single", PartNumber=2)
attrs = s3.get_object_attributes(Bucket=b, Key="f/parts", ObjectAttributes=["ObjectParts", "ObjectSize", "ETag",
                                                                           "StorageClass"])
eq((attrs["ObjectSize"], attrs["ObjectParts"]["TotalPartsCount"], attrs["StorageClass"]),
   (sum(map(len, parts_data)), 3, "STANDARD"), "GetObjectAttributes")
eq([p["Size"] for p in attrs["ObjectParts"]["Parts"]], list(map(len, parts_data)), "sizes of parts")

# UploadPartCopy: whole objects and byte ranges, from this and another key.
whole = b"".join(parts_data)
up = s3.create_multipart_upload(Bucket=b, Key="f/copied")
c1 = s3.upload_part_copy(Bucket=b, Key="f/copied", UploadId=up["UploadId"], PartNumber=1,
                         CopySource={"Bucket": b, "Key": "f/parts"}, CopySourceRange=f"bytes=100-{100 + 5 * MiB - 1}")
c2 = s3.upload_part_copy(Bucket=b, Key="f/copied", UploadId=up["UploadId"], PartNumber=2,
                         CopySource={"Bucket": b, "Key": "f/single"})
expect_error("InvalidRange", s3.upload_part_copy, Bucket=b, Key="f/copied", UploadId=up["UploadId"], PartNumber=3,
             CopySource={"Bucket": b, "Key": "f/single"}, CopySourceRange="bytes=0-100")
expect_error("PreconditionFailed", s3.upload_part_copy, Bucket=b, Key="f/copied", UploadId=up["UploadId"],
             PartNumber=3, CopySource={"Bucket": b, "Key": "f/single"}, CopySourceIfMatch='"0000"')
s3.complete_multipart_upload(Bucket=b, Key="f/copied", UploadId=up["UploadId"], MultipartUpload={"Parts": [
    {"PartNumber": 1, "ETag": c1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": c2["CopyPartResult"]["ETag"]}]})
eq(md5(s3.get_object(Bucket=b, Key="f/copied")["Body"].read()), md5(whole[100:100 + 5 * MiB] + b"single"),
   "object assembled from copied parts")

# Standard headers round trip (PUT, HEAD, GET, copy, multipart); a default Content-Type.
std = {"CacheControl": "max-age=3600", "ContentDisposition": 'attachment; filename="x.gz"',
       "ContentEncoding": "gzip", "ContentLanguage": "de-DE"}
exp = datetime.datetime(2037, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
s3.put_object(Bucket=b, Key="f/hdr", Body=b"\x1f\x8b", Expires=exp, **std)
for what, r in [("HEAD", s3.head_object(Bucket=b, Key="f/hdr")), ("GET", s3.get_object(Bucket=b, Key="f/hdr"))]:
    eq({k: r.get(k) for k in std}, std, f"standard headers on {what}")
    eq(r["ResponseMetadata"]["HTTPHeaders"].get("expires"), "Fri, 02 Jan 2037 03:04:05 GMT", f"Expires on {what}")
    eq(r["ContentType"], "binary/octet-stream", f"default Content-Type on {what}")
s3.copy_object(Bucket=b, Key="f/hdr-copy", CopySource={"Bucket": b, "Key": "f/hdr"})
eq(s3.head_object(Bucket=b, Key="f/hdr-copy").get("ContentEncoding"), "gzip", "headers kept by a copy")
g = s3.get_object(Bucket=b, Key="f/hdr", ResponseContentType="text/plain", ResponseCacheControl="no-cache")
eq((g["ContentType"], g["CacheControl"]), ("text/plain", "no-cache"), "response-* overrides")
up = s3.create_multipart_upload(Bucket=b, Key="f/hdr-mpu", ContentEncoding="gzip", ContentType="application/x-tar")
t = s3.upload_part(Bucket=b, Key="f/hdr-mpu", UploadId=up["UploadId"], PartNumber=1, Body=b"x")["ETag"]
s3.complete_multipart_upload(Bucket=b, Key="f/hdr-mpu", UploadId=up["UploadId"],
                             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": t}]})
h = s3.head_object(Bucket=b, Key="f/hdr-mpu")
eq((h.get("ContentEncoding"), h["ContentType"]), ("gzip", "application/x-tar"), "multipart headers")

# Limits: DeleteObjects of more than 1000 keys, a presigned URL beyond 7 days, a self-copy.
expect_error("MalformedXML", s3.delete_objects, Bucket=b,
             Delete={"Objects": [{"Key": f"k{i}"} for i in range(1001)], "Quiet": True})
r = s3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": f"nothing/k{i}"} for i in range(1000)], "Quiet": True})
eq(r.get("Errors", []), [], "DeleteObjects of 1000 keys")
for secs, want in [(7 * 86400, 200), (7 * 86400 + 1, 400)]:
    url = s3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "f/single"}, ExpiresIn=secs)
    try:
        got = urllib.request.urlopen(url, timeout=10).status
    except urllib.error.HTTPError as e:
        got = e.code
        check(b"AuthorizationQueryParametersError" in e.read(), "code of a too-long presign")
    eq(got, want, f"presigned URL valid {secs} s")
expect_error("InvalidRequest", s3.copy_object, Bucket=b, Key="f/single", CopySource={"Bucket": b, "Key": "f/single"})
s3.copy_object(Bucket=b, Key="f/single", CopySource={"Bucket": b, "Key": "f/single"}, MetadataDirective="REPLACE",
               ContentType="text/plain")
eq(s3.head_object(Bucket=b, Key="f/single")["ContentType"], "text/plain", "self-copy with REPLACE")

# Listings.
s3.put_object(Bucket=b, Key="f/sp ace/a+b", Body=b"1")
r = s3.list_objects(Bucket=b, Prefix="f/sp ace/")
eq((r["Prefix"], [o["Key"] for o in r["Contents"]]), ("f/sp ace/", ["f/sp ace/a+b"]), "v1 prefix and keys")
check("Owner" in r["Contents"][0], "v1 listing names owners")
r = s3.list_objects_v2(Bucket=b, Prefix="f/sp ace/", ContinuationToken="")
eq([o["Key"] for o in r["Contents"]], ["f/sp ace/a+b"], "empty ContinuationToken")
r = s3.list_objects_v2(Bucket=b, Prefix="f/sp ace/", FetchOwner=True)
eq(r["Contents"][0]["Owner"]["ID"], a.key, "FetchOwner")
check("Owner" not in s3.list_objects_v2(Bucket=b, Prefix="f/sp ace/")["Contents"][0], "no owner unless fetched")
r = s3.list_buckets(MaxBuckets=1)
eq(len(r["Buckets"]), 1, "MaxBuckets=1")
check(r.get("ContinuationToken"), "a continuation token when more buckets follow")
r2 = s3.list_buckets(MaxBuckets=1000, ContinuationToken=r["ContinuationToken"])
check(r["Buckets"][0]["Name"] not in [x["Name"] for x in r2["Buckets"]], "the next page of buckets")
v = s3.list_object_versions(Bucket=b, Prefix="f/sp ace/")
eq([(x["Key"], x["VersionId"], x["IsLatest"]) for x in v["Versions"]], [("f/sp ace/a+b", "null", True)],
   "ListObjectVersions of an unversioned bucket")
eq(s3.get_bucket_versioning(Bucket=b).get("Status"), None, "GetBucketVersioning")
eq(s3.get_object(Bucket=b, Key="f/single", VersionId="null")["Body"].read(), b"single", "GET of version null")
expect_error("NoSuchVersion", s3.get_object, Bucket=b, Key="f/single", VersionId="3HL4kqtJlcpXroDTDmJ")
expect_error("AccessDenied", s3.get_object, Bucket=b, Key="f/single", ExpectedBucketOwner="123456789012")
s3.head_object(Bucket=b, Key="f/single", ExpectedBucketOwner=a.key)
expect_error("NotImplemented", s3.put_bucket_versioning, Bucket=b, VersioningConfiguration={"Status": "Enabled"})

# Errors carry a RequestId (body and header).
st, hs, out = raw.request("GET", f"/{b}/f/does-not-exist")
eq((st, xml_code(out)), (404, "NoSuchKey"), "GET of a missing key")
check(b"<RequestId>" in out and hs.get("x-amz-request-id"), f"RequestId in an error: {out!r} {hs}")
check(hs["x-amz-request-id"].encode() in out, "the same RequestId in header and body")

# ACLs: the owner's full control is read; other ACLs are refused, not ignored.
acl = s3.get_bucket_acl(Bucket=b)
eq([(g["Grantee"]["ID"], g["Permission"]) for g in acl["Grants"]], [(a.key, "FULL_CONTROL")], "GetBucketAcl")
acl = s3.get_object_acl(Bucket=b, Key="f/single")
eq([g["Permission"] for g in acl["Grants"]], ["FULL_CONTROL"], "GetObjectAcl")
expect_error("NotImplemented", s3.put_bucket_acl, Bucket=b, ACL="public-read")
expect_error("NotImplemented", s3.put_object_acl, Bucket=b, Key="f/single", ACL="public-read")
expect_error("NotImplemented", s3.put_object, Bucket=b, Key="f/acl", Body=b"x", ACL="public-read")
s3.put_object(Bucket=b, Key="f/acl", Body=b"x", ACL="private")
expect_error("NotImplemented", s3.put_object, Bucket=b, Key="f/sse", Body=b"x", ServerSideEncryption="AES256")

# Object tags: with the upload, set and deleted later (the ETag stays), kept or replaced by a copy.
tags = lambda k: {t["Key"]: t["Value"] for t in s3.get_object_tagging(Bucket=b, Key=k)["TagSet"]}  # noqa: E731
s3.put_object(Bucket=b, Key="f/tagged", Body=b"t", Tagging="team=vision&stage=raw%20data")
eq(tags("f/tagged"), {"team": "vision", "stage": "raw data"}, "tags given with the upload")
eq(s3.get_object(Bucket=b, Key="f/tagged")["TagCount"], 2, "x-amz-tagging-count")
etag_before = s3.head_object(Bucket=b, Key="f/tagged")["ETag"]
s3.put_object_tagging(Bucket=b, Key="f/tagged", Tagging={"TagSet": [{"Key": "k", "Value": "v"}]})
eq(tags("f/tagged"), {"k": "v"}, "tags after PutObjectTagging")
eq(s3.head_object(Bucket=b, Key="f/tagged")["ETag"], etag_before, "ETag after tagging")
s3.copy_object(Bucket=b, Key="f/tagged-copy", CopySource={"Bucket": b, "Key": "f/tagged"})
eq(tags("f/tagged-copy"), {"k": "v"}, "tags kept by a copy")
s3.copy_object(Bucket=b, Key="f/tagged-copy", CopySource={"Bucket": b, "Key": "f/tagged"},
               TaggingDirective="REPLACE", Tagging="new=1")
eq(tags("f/tagged-copy"), {"new": "1"}, "tags replaced by a copy")
expect_error("InvalidTag", s3.put_object_tagging, Bucket=b, Key="f/tagged",
             Tagging={"TagSet": [{"Key": f"k{i}", "Value": "v"} for i in range(11)]})
expect_error("InvalidTag", s3.put_object, Bucket=b, Key="f/tagged2", Body=b"t", Tagging="a=1&a=2")
s3.delete_object_tagging(Bucket=b, Key="f/tagged")
eq(tags("f/tagged"), {}, "tags after DeleteObjectTagging")

# SigV4 dated by `Date` instead of X-Amz-Date.
st, _, out = raw.put(f"/{b}/f/dated", b"dated", dated=True)
eq(st, 200, f"PUT signed with a Date header: {out!r}")
eq(s3.get_object(Bucket=b, Key="f/dated")["Body"].read(), b"dated", "object put with a Date header")
ok()

"""Multipart uploads: three parts uploaded out of order and completed (byte-exact, S3's
multipart ETag), ListParts, ListMultipartUploads, bad completions refused, an aborted upload
leaves nothing."""

import hashlib

from s3common import check, client, data, eq, expect_error, keys_of, ok, parser, same_bytes

p = parser(__doc__)
a = p.parse_args()
s3 = client(a.endpoint, a.key, a.secret)
b = a.bucket
MiB = 1024 * 1024
parts = {1: data(5 * MiB, 11), 2: data(5 * MiB + 17, 12), 3: data(MiB // 3, 13)}

up = s3.create_multipart_upload(Bucket=b, Key="mp/assembled.bin", ContentType="application/x-tar",
                                Metadata={"shard": "7"})["UploadId"]
etags = {}
for n in (3, 1, 2):
    etags[n] = s3.upload_part(Bucket=b, Key="mp/assembled.bin", UploadId=up, PartNumber=n, Body=parts[n])["ETag"]
    eq(etags[n].strip('"'), hashlib.md5(parts[n]).hexdigest(), f"ETag of part {n}")
# Nothing is visible before completion, and the parts are hidden from listings.
eq(keys_of(s3, b, "mp/"), [], "keys before completion")
check(not any(k.startswith(".strata-s3") for k in keys_of(s3, b)), "hidden upload directory listed")
listed = s3.list_parts(Bucket=b, Key="mp/assembled.bin", UploadId=up)
eq([(x["PartNumber"], x["Size"]) for x in listed["Parts"]], [(n, len(parts[n])) for n in (1, 2, 3)], "ListParts")
# Bad completions: wrong order, unknown part, wrong ETag, small middle part.
comp = lambda ns, tags=etags: {"Parts": [{"PartNumber": n, "ETag": tags[n]} for n in ns]}
expect_error("InvalidPartOrder", s3.complete_multipart_upload, Bucket=b, Key="mp/assembled.bin", UploadId=up,
             MultipartUpload=comp([2, 1, 3]))
expect_error("InvalidPart", s3.complete_multipart_upload, Bucket=b, Key="mp/assembled.bin", UploadId=up,
             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etags[1]}, {"PartNumber": 4, "ETag": etags[1]}]})
expect_error("InvalidPart", s3.complete_multipart_upload, Bucket=b, Key="mp/assembled.bin", UploadId=up,
             MultipartUpload=comp([1, 2], {1: etags[2], 2: etags[2]}))
expect_error("InvalidArgument", s3.upload_part, Bucket=b, Key="mp/assembled.bin", UploadId=up, PartNumber=10001,
             Body=b"x")
expect_error("NoSuchUpload", s3.upload_part, Bucket=b, Key="mp/other-key", UploadId=up, PartNumber=1, Body=b"x")
r = s3.complete_multipart_upload(Bucket=b, Key="mp/assembled.bin", UploadId=up, MultipartUpload=comp([1, 2, 3]))
digests = b"".join(hashlib.md5(parts[n]).digest() for n in (1, 2, 3))
want_etag = f"{hashlib.md5(digests).hexdigest()}-3"
eq(r["ETag"].strip('"'), want_etag, "multipart ETag")
whole = parts[1] + parts[2] + parts[3]
got = s3.get_object(Bucket=b, Key="mp/assembled.bin")
same_bytes(got["Body"].read(), whole, "assembled object")
eq(got["ETag"].strip('"'), want_etag, "ETag of the assembled object")
eq((got["ContentType"], got["Metadata"]), ("application/x-tar", {"shard": "7"}), "metadata of the assembled object")
expect_error("NoSuchUpload", s3.list_parts, Bucket=b, Key="mp/assembled.bin", UploadId=up)

# A small part in the middle is refused at completion.
up = s3.create_multipart_upload(Bucket=b, Key="mp/small-parts")["UploadId"]
t1 = s3.upload_part(Bucket=b, Key="mp/small-parts", UploadId=up, PartNumber=1, Body=b"tiny")["ETag"]
t2 = s3.upload_part(Bucket=b, Key="mp/small-parts", UploadId=up, PartNumber=2, Body=b"tail")["ETag"]
expect_error("EntityTooSmall", s3.complete_multipart_upload, Bucket=b, Key="mp/small-parts", UploadId=up,
             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": t1}, {"PartNumber": 2, "ETag": t2}]})

# Uploads in progress are listed, with their keys.
other = s3.create_multipart_upload(Bucket=b, Key="mp/z-second")["UploadId"]
listed = s3.list_multipart_uploads(Bucket=b, Prefix="mp/")
eq(sorted((u["Key"], u["UploadId"]) for u in listed.get("Uploads", [])),
   sorted([("mp/small-parts", up), ("mp/z-second", other)]), "ListMultipartUploads")
page = s3.list_multipart_uploads(Bucket=b, Prefix="mp/", MaxUploads=1)
check(page["IsTruncated"] and len(page["Uploads"]) == 1, f"a page of one upload: {page.get('Uploads')}")
rest = s3.list_multipart_uploads(Bucket=b, Prefix="mp/", KeyMarker=page["NextKeyMarker"],
                                 UploadIdMarker=page["NextUploadIdMarker"])
eq(len(page["Uploads"]) + len(rest.get("Uploads", [])), 2, "uploads over two pages")
s3.abort_multipart_upload(Bucket=b, Key="mp/z-second", UploadId=other)

# Abort: nothing of the upload stays visible.
s3.abort_multipart_upload(Bucket=b, Key="mp/small-parts", UploadId=up)
expect_error("NoSuchUpload", s3.list_parts, Bucket=b, Key="mp/small-parts", UploadId=up)
expect_error("NoSuchKey", s3.get_object, Bucket=b, Key="mp/small-parts")
eq(keys_of(s3, b, "mp/"), ["mp/assembled.bin"], "keys after abort")
eq(s3.list_multipart_uploads(Bucket=b).get("Uploads", []), [], "uploads after abort")
expect_error("NoSuchUpload", s3.abort_multipart_upload, Bucket=b, Key="mp/x", UploadId="0" * 32)
expect_error("NoSuchUpload", s3.abort_multipart_upload, Bucket=b, Key="mp/x", UploadId="../../etc")
ok()

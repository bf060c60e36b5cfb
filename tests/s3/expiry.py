"""Multipart uploads expire: against a gateway run with --multipart-expiry 1s, an upload left
alone is removed with its parts (it no longer counts against the volume's quota) by the
gateway's background sweep; a fresh one stays."""

import time

from s3common import check, client, eq, expect_error, ok, parser

p = parser(__doc__)
a = p.parse_args()
s3 = client(a.endpoint, a.key, a.secret)
b = a.bucket

old = s3.create_multipart_upload(Bucket=b, Key="exp/old")["UploadId"]
s3.upload_part(Bucket=b, Key="exp/old", UploadId=old, PartNumber=1, Body=b"x" * 100_000)
time.sleep(3.5)
# Gone before any upload is started or listed: the background sweep removed it.
expect_error("NoSuchUpload", s3.list_parts, Bucket=b, Key="exp/old", UploadId=old)
new = s3.create_multipart_upload(Bucket=b, Key="exp/new")["UploadId"]
ids = [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=b, Prefix="exp/").get("Uploads", [])]
eq(ids, [new], "uploads after the expiry")
s3.abort_multipart_upload(Bucket=b, Key="exp/new", UploadId=new)
check(not s3.list_multipart_uploads(Bucket=b, Prefix="exp/").get("Uploads"), "no upload left")
ok()

"""A second, independent client (MinIO's Python SDK: its own signing, streaming and encoding):
bucket creation and deletion, puts (single and multipart), ranged and conditional gets, stat
with headers and metadata, conditional copy, listing, removal."""

import io

from minio import Minio
from minio.commonconfig import CopySource
from minio.error import S3Error

from s3common import check, data, eq, fail, md5, ok, parser

p = parser(__doc__)
a = p.parse_args()
host = a.endpoint.split("://", 1)[1]
m = Minio(host, access_key=a.key, secret_key=a.secret, secure=False, region="us-east-1")
b = a.bucket


def code(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except S3Error as e:
        return e.code
    fail(f"{fn.__name__} succeeded, an error was expected")


check(not m.bucket_exists(b), "the bucket does not exist yet")
m.make_bucket(b)
check(m.bucket_exists(b), "bucket made by minio")
small = data(100_000, 31)
r = m.put_object(b, "m/small", io.BytesIO(small), len(small), content_type="text/csv",
                 metadata={"x-amz-meta-origin": "minio", "Cache-Control": "no-store"})
eq(r.etag, md5(small), "ETag of a minio put")
big = data(12 * 1024 * 1024 + 5, 32)
# Unknown length: minio streams it as a multipart upload of 5 MiB parts.
m.put_object(b, "m/big", io.BytesIO(big), -1, part_size=5 * 1024 * 1024)
got = m.get_object(b, "m/big")
eq(md5(got.read()), md5(big), "multipart object through minio")
got.close()
got = m.get_object(b, "m/big", offset=1000, length=5000)
eq(got.read(), big[1000:6000], "ranged get through minio")
got.close()
st = m.stat_object(b, "m/small")
eq((st.size, st.content_type, st.metadata.get("x-amz-meta-origin"), st.metadata.get("Cache-Control")),
   (len(small), "text/csv", "minio", "no-store"), "stat through minio")
eq(code(m.get_object, b, "m/small", request_headers={"If-Match": '"0000"'}), "PreconditionFailed",
   "If-Match through minio")
m.copy_object(b, "m/copy", CopySource(b, "m/small", match_etag=st.etag))
eq(code(m.copy_object, b, "m/copy2", CopySource(b, "m/small", not_match_etag=st.etag)), "PreconditionFailed",
   "copy-source-if-none-match through minio")
eq(sorted(o.object_name for o in m.list_objects(b, prefix="m/", recursive=True)),
   ["m/big", "m/copy", "m/small"], "listing through minio")
eq(code(m.remove_bucket, b), "BucketNotEmpty", "remove_bucket of a bucket with objects")
for k in ["m/big", "m/copy", "m/small"]:
    m.remove_object(b, k)
m.remove_bucket(b)
check(not m.bucket_exists(b), "bucket removed by minio")
ok()

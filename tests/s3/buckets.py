"""Buckets: CreateBucket makes a volume in the signing token's scope (S3's naming rules, the
scope's policies: a size cap taken as the capacity, a quota refusing a bucket without one, a
viewer refused), DeleteBucket (BucketNotEmpty; refused while the volume is mounted elsewhere),
and two scopes' tokens as two S3 accounts that cannot reach each other's buckets."""

from s3common import check, client, eq, expect_error, ok, parser

p = parser(__doc__)
for who in ("other", "capped", "quota", "viewer"):
    p.add_argument(f"--{who}-key", required=True)
    p.add_argument(f"--{who}-secret", required=True)
p.add_argument("--mounted-bucket", required=True, help="an empty bucket of ours mounted elsewhere")
a = p.parse_args()
s3 = client(a.endpoint, a.key, a.secret)
other = client(a.endpoint, a.other_key, a.other_secret)
b = a.bucket  # a new bucket name

for bad in ["a", "Bad_Name", "192.168.5.123", "ab", "-leading", "two..dots", "x" * 64]:
    expect_error("InvalidBucketName", s3.create_bucket, Bucket=bad)
expect_error("InvalidLocationConstraint", s3.create_bucket, Bucket=b,
             CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
expect_error("NotImplemented", s3.create_bucket, Bucket=b, ACL="public-read")
expect_error("NotImplemented", s3.create_bucket, Bucket=b, ObjectOwnership="ObjectWriter")
s3.create_bucket(Bucket=b)
s3.head_bucket(Bucket=b)
check(b in [x["Name"] for x in s3.list_buckets()["Buckets"]], "a new bucket is listed")
s3.create_bucket(Bucket=b)  # the owner's re-creation: 200 in us-east-1, as S3 answers
expect_error("BucketAlreadyExists", other.create_bucket, Bucket=b)
s3.put_object(Bucket=b, Key="dir/obj", Body=b"mine")

# The other account sees nothing of it.
check(b not in [x["Name"] for x in other.list_buckets()["Buckets"]], "another account does not list the bucket")
other_bucket = b + "-other"
other.create_bucket(Bucket=other_bucket)
for fn, kw in [
    (other.head_bucket, {"Bucket": b}),
    (other.list_objects_v2, {"Bucket": b}),
    (other.get_object, {"Bucket": b, "Key": "dir/obj"}),
    (other.put_object, {"Bucket": b, "Key": "dir/obj", "Body": b"theirs"}),
    (other.delete_object, {"Bucket": b, "Key": "dir/obj"}),
    (other.delete_bucket, {"Bucket": b}),
    (other.copy_object, {"Bucket": other_bucket, "Key": "stolen", "CopySource": {"Bucket": b, "Key": "dir/obj"}}),
    (s3.copy_object, {"Bucket": b, "Key": "pushed", "CopySource": {"Bucket": other_bucket, "Key": "x"}}),
    (s3.put_object, {"Bucket": other_bucket, "Key": "x", "Body": b"x"}),
]:
    expect_error(("NoSuchBucket", "404", "AccessDenied", "403"), fn, **kw)
eq(s3.get_object(Bucket=b, Key="dir/obj")["Body"].read(), b"mine", "object after the other account's attempts")
eq(other.list_objects_v2(Bucket=other_bucket).get("KeyCount"), 0, "nothing copied into the other account")

# DeleteBucket: not while it holds objects; then it is gone.
expect_error("BucketNotEmpty", s3.delete_bucket, Bucket=b)
s3.delete_object(Bucket=b, Key="dir/obj")
s3.delete_bucket(Bucket=b)
expect_error(("404", "NoSuchBucket"), s3.head_bucket, Bucket=b)
other.delete_bucket(Bucket=other_bucket)
# A bucket mounted elsewhere is not deleted under its users.
expect_error("OperationAborted", s3.delete_bucket, Bucket=a.mounted_bucket)
s3.head_bucket(Bucket=a.mounted_bucket)

# Policies: a size cap becomes the capacity; a quota refuses a bucket without a size; a viewer
# may not create.
client(a.endpoint, a.capped_key, a.capped_secret).create_bucket(Bucket=b + "-capped")
expect_error("AccessDenied", client(a.endpoint, a.quota_key, a.quota_secret).create_bucket, Bucket=b + "-quota")
expect_error("AccessDenied", client(a.endpoint, a.viewer_key, a.viewer_secret).create_bucket, Bucket=b + "-viewer")
ok()

"""Access control: each key pair acts with its token's rights. Another project's key sees no
such bucket (absent from ListBuckets too), a viewer may get but not put, a wrong secret fails
the signature, an unknown key id is refused."""

from s3common import check, client, eq, expect_error, ok, parser

p = parser(__doc__)
p.add_argument("--readable-key", required=True, help="an object the editor puts and the viewer reads")
p.add_argument("--viewer-key", required=True)
p.add_argument("--viewer-secret", required=True)
p.add_argument("--other-key", required=True, help="a token of another project")
p.add_argument("--other-secret", required=True)
p.add_argument("--other-bucket", required=True, help="the other project's own volume")
a = p.parse_args()
b = a.bucket

editor = client(a.endpoint, a.key, a.secret)
editor.put_object(Bucket=b, Key=a.readable_key, Body=b"for every reader of the project")
names = [x["Name"] for x in editor.list_buckets()["Buckets"]]
check(b in names and a.other_bucket not in names, f"the project's buckets: {names}")

editor.head_bucket(Bucket=b)
eq(editor.get_bucket_location(Bucket=b).get("LocationConstraint"), None, "location of a us-east-1 bucket")

other = client(a.endpoint, a.other_key, a.other_secret)
names = [x["Name"] for x in other.list_buckets()["Buckets"]]
eq(names, [a.other_bucket], "the other project's buckets")
expect_error(("404", "NoSuchBucket"), other.head_bucket, Bucket=b)
expect_error("NoSuchBucket", other.get_object, Bucket=b, Key=a.readable_key)
expect_error("NoSuchBucket", other.put_object, Bucket=b, Key="intruder", Body=b"x")
expect_error("NoSuchBucket", other.list_objects_v2, Bucket=b)
expect_error("NoSuchBucket", other.get_bucket_location, Bucket=b)
expect_error("NoSuchBucket", other.copy_object, Bucket=a.other_bucket, Key="stolen",
             CopySource={"Bucket": b, "Key": a.readable_key})

viewer = client(a.endpoint, a.viewer_key, a.viewer_secret)
want = editor.get_object(Bucket=b, Key=a.readable_key)["Body"].read()
eq(viewer.get_object(Bucket=b, Key=a.readable_key)["Body"].read(), want, "viewer get")
expect_error("AccessDenied", viewer.put_object, Bucket=b, Key="viewer-wrote", Body=b"x")
expect_error("AccessDenied", viewer.delete_object, Bucket=b, Key=a.readable_key)
expect_error("AccessDenied", viewer.create_multipart_upload, Bucket=b, Key="viewer-mp")
eq(viewer.get_object(Bucket=b, Key=a.readable_key)["Body"].read(), want, "object after the viewer's delete")
expect_error("NoSuchKey", editor.get_object, Bucket=b, Key="viewer-wrote")

wrong = client(a.endpoint, a.key, a.secret[:-1] + ("0" if a.secret[-1] != "0" else "1"))
expect_error("SignatureDoesNotMatch", wrong.list_objects_v2, Bucket=b)
expect_error("SignatureDoesNotMatch", wrong.put_object, Bucket=b, Key="forged", Body=b"x")
unknown = client(a.endpoint, "0123456789ab", a.secret)
expect_error("InvalidAccessKeyId", unknown.list_buckets)
expect_error("InvalidAccessKeyId", unknown.get_object, Bucket=b, Key=a.readable_key)
ok()

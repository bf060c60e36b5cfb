"""A token revoked on the server: its key pair is refused at the next request; the other
pairs of the gateway go on working."""

from s3common import client, expect_error, ok, parser

p = parser(__doc__)
p.add_argument("--readable-key", required=True)
p.add_argument("--other-key", required=True, help="a pair of another token, still valid")
p.add_argument("--other-secret", required=True)
a = p.parse_args()
s3 = client(a.endpoint, a.key, a.secret)
expect_error("AccessDenied", s3.get_object, Bucket=a.bucket, Key=a.readable_key)
expect_error("AccessDenied", s3.put_object, Bucket=a.bucket, Key="after-revoke", Body=b"x")
expect_error("AccessDenied", s3.list_buckets)
# The gateway's other key pairs are unaffected.
other = client(a.endpoint, a.other_key, a.other_secret)
other.get_object(Bucket=a.bucket, Key=a.readable_key)["Body"].read()
ok()

"""A volume whose quota is smaller than the object: QuotaExceeded, and nothing left behind."""

from s3common import client, data, eq, expect_error, keys_of, ok, parser

p = parser(__doc__)
p.add_argument("--size", type=int, required=True, help="bytes of the object to put (over the quota)")
a = p.parse_args()
s3 = client(a.endpoint, a.key, a.secret)
s3.put_object(Bucket=a.bucket, Key="small", Body=b"fits")
expect_error("QuotaExceeded", s3.put_object, Bucket=a.bucket, Key="dir/too-big", Body=data(a.size, 31))
eq(keys_of(s3, a.bucket), ["small"], "keys after a put over the quota")
ok()

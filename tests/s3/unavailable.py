"""With the server gone, requests fail with ServiceUnavailable (503), not a hang or a 4xx."""

from s3common import client, expect_error, ok, parser

p = parser(__doc__)
a = p.parse_args()
s3 = client(a.endpoint, a.key, a.secret)
expect_error("ServiceUnavailable", s3.get_object, Bucket=a.bucket, Key="small")
expect_error("ServiceUnavailable", s3.list_buckets)
ok()

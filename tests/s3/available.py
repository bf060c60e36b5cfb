"""After the server is back, the same attachment serves again."""

from s3common import client, eq, ok, parser

p = parser(__doc__)
a = p.parse_args()
s3 = client(a.endpoint, a.key, a.secret)
eq(s3.get_object(Bucket=a.bucket, Key="small")["Body"].read(), b"fits", "object after the server came back")
s3.put_object(Bucket=a.bucket, Key="after-restart", Body=b"ok")
ok()

"""Bad input over the wire: malformed HTTP, non-S3 requests, unsigned and badly signed
requests get a 4xx answer (or a closed connection for bytes that are not HTTP), never a crash;
the gateway answers a proper request afterwards."""

import socket
import time
import urllib.parse

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from s3common import check, client, expect_error, ok, parser

p = parser(__doc__)
a = p.parse_args()
u = urllib.parse.urlparse(a.endpoint)
HOST, PORT = u.hostname, u.port


def raw(payload, what):
    """Sends bytes and returns the status of the answer (None if the connection just closed)."""
    with socket.create_connection((HOST, PORT), timeout=10) as s:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            return None
        buf = b""
        try:
            while len(buf) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    if not buf:
        return None
    line = buf.split(b"\r\n", 1)[0].decode("latin-1")
    check(line.startswith("HTTP/1."), f"{what}: answer starts {line!r}")
    return int(line.split()[1])


def want_4xx(payload, what, closed_ok=False):
    st = raw(payload, what)
    if st is None and closed_ok:
        return
    check(st is not None and 400 <= st < 500, f"{what}: status {st}, want 4xx")


# Half-closing the socket could make the server drop the request unanswered: ask it to close.
host = f"Host: {HOST}:{PORT}\r\nConnection: close\r\n".encode()
want_4xx(b"\x00\x01\x02garbage\xff\xfe\r\n\r\n", "binary junk", closed_ok=True)
want_4xx(b"NOT-HTTP\r\n\r\n", "not HTTP", closed_ok=True)
want_4xx(b"GET / HTTP/1.1\r\n" + host + b"\r\n", "unsigned list buckets")
want_4xx(b"GET /" + a.bucket.encode() + b"/x HTTP/1.1\r\n" + host + b"\r\n", "unsigned get")
want_4xx(b"PUT /" + a.bucket.encode() + b"/x HTTP/1.1\r\n" + host + b"Content-Length: 3\r\n\r\nabc", "unsigned put")
want_4xx(b"GET /index.html HTTP/1.1\r\n" + host + b"Authorization: Basic Zm9vOmJhcg==\r\n\r\n", "basic auth")
want_4xx(b"GET / HTTP/1.1\r\n" + host + b"Authorization: AWS4-HMAC-SHA256 Credential=garbage\r\n\r\n",
         "mangled SigV4 header")
want_4xx(b"POST /" + a.bucket.encode() + b"?delete HTTP/1.1\r\n" + host + b"Content-Length: 5\r\n\r\n<<<<<",
         "unsigned delete with bad XML")
want_4xx(b"GET /../../etc/passwd HTTP/1.1\r\n" + host + b"\r\n", "path traversal")
want_4xx(b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n" + host + b"\r\n", "huge request line", closed_ok=True)
want_4xx(b"GET / HTTP/1.1\r\n" + host + b"Content-Length: -5\r\n\r\n", "negative length", closed_ok=True)

# A signed PUT whose client goes away halfway through the body: nothing is published (the
# test then checks on a mount that no temporary file stays behind).
req = AWSRequest(method="PUT", url=f"{a.endpoint}/{a.bucket}/cut/short", data=b"")
S3SigV4Auth(Credentials(a.key, a.secret), "s3", "us-east-1").add_auth(req)
head = f"PUT /{a.bucket}/cut/short HTTP/1.1\r\n".encode()
for k, v in req.headers.items():
    if k.lower() != "content-length":
        head += f"{k}: {v}\r\n".encode()
head += f"Host: {HOST}:{PORT}\r\nContent-Length: {1 << 20}\r\n\r\n".encode()
with socket.create_connection((HOST, PORT), timeout=10) as sock:
    sock.sendall(head + b"\0" * (300 << 10))
    time.sleep(0.3)
expect_error(("404", "NoSuchKey"), client(a.endpoint, a.key, a.secret).head_object, Bucket=a.bucket, Key="cut/short")

# Signed but odd: a query the gateway does not serve, a bucket name no volume can have.
s3 = client(a.endpoint, a.key, a.secret)
try:
    s3.list_objects_v2(Bucket="Bad_Name!")
    raise SystemExit("FAIL: a bad bucket name was listed")
except Exception as e:  # botocore validates some names itself; either way nothing was served
    check("Bad_Name" in str(e) or "Invalid" in str(e) or "NoSuchBucket" in str(e), f"bad bucket name: {e}")
s3.list_buckets()
ok()

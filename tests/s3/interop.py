"""The same data over S3 and a FUSE mount of the volume: an object put over S3 is read
byte-exact from the mount, a file written on the mount is got over S3, a rename on the mount
shows in the listing."""

import os
import time

from s3common import client, data, eq, keys_of, ok, parser, same_bytes

p = parser(__doc__)
p.add_argument("--mount", required=True, help="where the bucket's volume is mounted")
a = p.parse_args()
s3 = client(a.endpoint, a.key, a.secret)
b = a.bucket
mnt = a.mount

blob = data(3 * 1024 * 1024 + 5, 21)
s3.put_object(Bucket=b, Key="shared/from-s3/obj.bin", Body=blob)
with open(os.path.join(mnt, "shared/from-s3/obj.bin"), "rb") as f:
    same_bytes(f.read(), blob, "S3 object read on the mount")

os.makedirs(os.path.join(mnt, "shared/from-fuse"), exist_ok=True)
written = data(2 * 1024 * 1024 + 9, 22)
with open(os.path.join(mnt, "shared/from-fuse/file.bin"), "wb") as f:
    f.write(written)
eq(s3.head_object(Bucket=b, Key="shared/from-fuse/file.bin")["ContentLength"], len(written), "head of a mount file")
got = s3.get_object(Bucket=b, Key="shared/from-fuse/file.bin")
same_bytes(got["Body"].read(), written, "mount file got over S3")
eq(got["ContentLength"], len(written), "Content-Length of a mount file")
r = s3.get_object(Bucket=b, Key="shared/from-fuse/file.bin", Range="bytes=-100")
same_bytes(r["Body"].read(), written[-100:], "suffix range of a mount file")

# The ETag recorded by the gateway does not outlive a change made on the mount.
etag_before = s3.head_object(Bucket=b, Key="shared/from-s3/obj.bin")["ETag"]
time.sleep(0.01)
with open(os.path.join(mnt, "shared/from-s3/obj.bin"), "r+b") as f:
    f.write(b"changed")
head = s3.head_object(Bucket=b, Key="shared/from-s3/obj.bin")
if head["ETag"] == etag_before:
    raise SystemExit("FAIL: the ETag did not change after the file changed on the mount")

os.rename(os.path.join(mnt, "shared/from-fuse/file.bin"), os.path.join(mnt, "shared/renamed.bin"))
eq(keys_of(s3, b, "shared/"), ["shared/from-s3/obj.bin", "shared/renamed.bin"], "listing after a rename on the mount")
# Non-file entries made on the mount (a symlink, an empty directory) are no objects.
os.symlink("renamed.bin", os.path.join(mnt, "shared/link"))
os.makedirs(os.path.join(mnt, "shared/empty-dir"))
r = s3.list_objects_v2(Bucket=b, Prefix="shared/", Delimiter="/")
eq([o["Key"] for o in r.get("Contents", [])], ["shared/renamed.bin"], "objects beside a link and an empty dir")
eq([c["Prefix"] for c in r.get("CommonPrefixes", [])], ["shared/from-s3/"], "prefixes beside an empty dir")
ok()

"""ListObjectsV2 against the listing S3 gives: lexicographic key order across directories,
prefix, delimiter (common prefixes), small max-keys paging with continuation tokens, and
start-after; ListObjects (version 1) paging with markers."""

from s3common import check, client, eq, ok, parser

p = parser(__doc__)
a = p.parse_args()
s3 = client(a.endpoint, a.key, a.secret)
b = a.bucket
ROOT = "ls/"
# '-' and '0' sort around '/': a plain walk of directories would get this order wrong.
keys = [
    "a-c", "a/b", "a/c/d", "a/c/e", "a0", "b", "photos/2024/feb.jpg", "photos/2024/jan.jpg", "photos/index",
    "sp ace/x+y", "z/y/x", "ü/1",
]
for k in keys:
    s3.put_object(Bucket=b, Key=ROOT + k, Body=k.encode())


def model(prefix, delimiter):
    out = []
    for k in sorted((ROOT + k for k in keys), key=lambda s: s.encode()):
        if not k.startswith(prefix):
            continue
        rest = k[len(prefix):]
        if delimiter and delimiter in rest:
            cp = prefix + rest[: rest.index(delimiter) + len(delimiter)]
            if not out or out[-1] != ("P", cp):
                out.append(("P", cp))
        else:
            out.append(("K", k))
    return out


def listing(prefix, delimiter, max_keys, start_after=None):
    out, token, pages = [], None, 0
    while True:
        kw = {"Bucket": b, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            kw["Delimiter"] = delimiter
        if token:
            kw["ContinuationToken"] = token
        elif start_after:
            kw["StartAfter"] = start_after
        r = s3.list_objects_v2(**kw)
        pages += 1
        items = [("K", o["Key"]) for o in r.get("Contents", [])] + [("P", c["Prefix"]) for c in
                                                                     r.get("CommonPrefixes", [])]
        check(len(items) <= max_keys, f"page of {len(items)} items with MaxKeys={max_keys}")
        eq(r["KeyCount"], len(items), "KeyCount")
        out += sorted(items, key=lambda i: i[1].encode())
        if not r["IsTruncated"]:
            return out, pages
        token = r["NextContinuationToken"]


for prefix, delimiter in [(ROOT, ""), (ROOT, "/"), (ROOT + "a", ""), (ROOT + "a", "/"), (ROOT + "photos/", "/"),
                          (ROOT + "photos/2024/j", "/"), (ROOT + "a", "-"), (ROOT + "nothing", "/")]:
    want = model(prefix, delimiter)
    for max_keys in (1000, 2, 1):
        got, pages = listing(prefix, delimiter, max_keys)
        eq(got, want, f"listing prefix={prefix!r} delimiter={delimiter!r} max_keys={max_keys}")
        if max_keys < len(want):
            check(pages > 2 or len(want) <= 2 * max_keys, f"{pages} pages for {len(want)} items")

def listing_v1(prefix, delimiter, max_keys):
    """ListObjects (version 1): resumes at NextMarker, or at the last key when there is none."""
    out, marker = [], None
    while True:
        kw = {"Bucket": b, "Prefix": prefix, "MaxKeys": max_keys}
        if delimiter:
            kw["Delimiter"] = delimiter
        if marker:
            kw["Marker"] = marker
        r = s3.list_objects(**kw)
        items = sorted([("K", o["Key"]) for o in r.get("Contents", [])] +
                       [("P", c["Prefix"]) for c in r.get("CommonPrefixes", [])], key=lambda i: i[1].encode())
        check(len(items) <= max_keys, f"v1 page of {len(items)} items with MaxKeys={max_keys}")
        out += items
        if not r["IsTruncated"]:
            return out
        marker = r.get("NextMarker") or items[-1][1]


for prefix, delimiter in [(ROOT, ""), (ROOT, "/"), (ROOT + "a", "-"), (ROOT + "photos/", "/")]:
    eq(listing_v1(prefix, delimiter, 2), model(prefix, delimiter), f"v1 listing {prefix!r} {delimiter!r}")

got, _ = listing(ROOT, "", 3, start_after=ROOT + "a/c/d")
eq(got, [i for i in model(ROOT, "") if i[1] > ROOT + "a/c/d"], "start-after")
# Sizes and ETags come with the keys.
r = s3.list_objects_v2(Bucket=b, Prefix=ROOT + "photos/index")
eq([(o["Key"], o["Size"]) for o in r["Contents"]], [(ROOT + "photos/index", len("photos/index"))], "size")
ok()

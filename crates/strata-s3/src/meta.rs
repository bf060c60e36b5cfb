//! What S3 keeps with an object besides its bytes (content type and the other standard headers,
//! `x-amz-meta-*`, its additional checksum, the sizes of its parts), stored with its ETag in
//! one extended attribute so a GET reads all of it in one call.

use std::collections::BTreeMap;

use crate::checksum::Algo;
use crate::error::{GatewayError, Result};

/// The content type S3 gives an object uploaded without one.
pub const DEFAULT_CONTENT_TYPE: &str = "binary/octet-stream";

fn decode_checksum(v: &str) -> Option<StoredChecksum> {
    let mut it = v.splitn(3, ':');
    let algo = Algo::parse(it.next()?)?;
    let composite = it.next()? == "COMPOSITE";
    Some(StoredChecksum { algo, value: it.next()?.to_string(), composite })
}

fn decode_parts(v: &str) -> Vec<(u64, u32)> {
    v.split(',')
        .filter_map(|r| {
            let (size, n) = r.split_once('*')?;
            Some((size.parse().ok()?, n.parse().ok()?))
        })
        .collect()
}

/// S3's limit on user metadata; also keeps the attribute small.
pub const MAX_USER_META: usize = 2048;

/// The standard headers S3 keeps with an object and returns on GET and HEAD.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    /// `Cache-Control`.
    pub cache_control: Option<String>,
    /// `Content-Disposition`.
    pub content_disposition: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// `Content-Language`.
    pub content_language: Option<String>,
    /// `Expires`, as the HTTP date it was given as.
    pub expires: Option<String>,
}

/// An object's additional checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChecksum {
    /// Algorithm.
    pub algo: Algo,
    /// Base64 value (for a composite one, without the `-N` suffix).
    pub value: String,
    /// A composite of its parts' checksums (S3's `COMPOSITE`), else of the whole object.
    pub composite: bool,
}

/// An object's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// `Content-Type` given at upload.
    pub content_type: Option<String>,
    /// `x-amz-meta-*` headers given at upload, by name without the prefix.
    pub user: BTreeMap<String, String>,
    /// The other standard headers.
    pub headers: Headers,
    /// The additional checksum, if one was asked for.
    pub checksum: Option<StoredChecksum>,
    /// Sizes of the parts of a multipart object, run-length coded: (size, count).
    pub parts: Vec<(u64, u32)>,
    /// The checksum algorithm of a multipart upload in progress, and whether its object gets
    /// a full-object (else composite) checksum.
    pub upload_checksum: Option<(Algo, bool)>,
    /// The multipart upload that made the object (a repeated completion answers it again).
    pub upload_id: Option<String>,
    /// Object tags, in the order given.
    pub tags: Vec<(String, String)>,
}

/// Most tags an object may have, as in S3.
pub const MAX_TAGS: usize = 10;

/// Checks a tag set against S3's limits (`InvalidTag` otherwise).
pub fn check_tags(tags: &[(String, String)]) -> Result<()> {
    let bad = |m: String| Err(GatewayError::InvalidTag(m));
    if tags.len() > MAX_TAGS {
        return bad(format!("an object may have at most {MAX_TAGS} tags, not {}", tags.len()));
    }
    for (i, (k, v)) in tags.iter().enumerate() {
        if k.is_empty() || k.chars().count() > 128 {
            return bad(format!("tag key {k:?} must be 1 to 128 characters"));
        }
        if v.chars().count() > 256 {
            return bad(format!("the value of tag {k:?} is longer than 256 characters"));
        }
        if tags[..i].iter().any(|(other, _)| other == k) {
            return bad(format!("tag key {k:?} is given twice"));
        }
    }
    Ok(())
}

/// Tags of an `x-amz-tagging` header (`k1=v1&k2=v2`, URL-encoded).
pub fn parse_tagging(h: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in h.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_decode(&s.replace('+', " "))
                .ok_or_else(|| GatewayError::InvalidTag(format!("x-amz-tagging is not URL-encoded: {pair:?}")))
        };
        out.push((dec(k)?, dec(v)?));
    }
    check_tags(&out)?;
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl ObjectMeta {
    /// Metadata from an upload's headers, refusing more than S3 allows.
    pub fn new(
        content_type: Option<String>,
        user: Option<std::collections::HashMap<String, String>>,
    ) -> Result<ObjectMeta> {
        let user: BTreeMap<String, String> = user.unwrap_or_default().into_iter().collect();
        let size: usize = user.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > MAX_USER_META {
            return Err(GatewayError::MetadataTooLarge(size));
        }
        Ok(ObjectMeta { content_type: content_type.filter(|c| !c.is_empty()), user, ..Default::default() })
    }

    /// Keeps the standard headers given at upload.
    pub fn with_headers(mut self, h: Headers) -> Self {
        let keep = |v: Option<String>| v.filter(|v| !v.is_empty() && !v.contains(['\n', '\r']));
        // `aws-chunked` describes how the request's body was sent, not the object.
        let encoding = h.content_encoding.map(|e| {
            e.split(',')
                .map(str::trim)
                .filter(|c| !c.eq_ignore_ascii_case("aws-chunked"))
                .collect::<Vec<_>>()
                .join(", ")
        });
        self.headers = Headers {
            cache_control: keep(h.cache_control),
            content_disposition: keep(h.content_disposition),
            content_encoding: keep(encoding),
            content_language: keep(h.content_language),
            expires: keep(h.expires),
        };
        self
    }

    /// The number of parts of a multipart object (none for a single PUT).
    pub fn parts_count(&self) -> u32 {
        self.parts.iter().map(|p| p.1).sum()
    }

    /// The byte range `[from, to)` of part `n` (1-based), if the object has it.
    pub fn part_range(&self, n: u32) -> Option<(u64, u64)> {
        let mut start = 0u64;
        let mut seen = 0u32;
        for &(size, count) in &self.parts {
            if n <= seen + count {
                let from = start + u64::from(n - seen - 1) * size;
                return Some((from, from + size));
            }
            seen += count;
            start += size * u64::from(count);
        }
        None
    }

    /// Run-length codes part sizes.
    pub fn set_parts(&mut self, sizes: &[u64]) {
        self.parts.clear();
        for &s in sizes {
            match self.parts.last_mut() {
                Some(last) if last.0 == s => last.1 += 1,
                _ => self.parts.push((s, 1)),
            }
        }
    }

    /// The lines stored after the ETag line. Header values hold no line breaks (HTTP forbids
    /// them), so one line per field is unambiguous.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        if let Some(t) = &self.content_type {
            s.push_str(&format!("t:{t}\n"));
        }
        for (k, v) in &self.user {
            s.push_str(&format!("m:{k}:{v}\n"));
        }
        let h = &self.headers;
        for (tag, v) in [
            ("cc", &h.cache_control),
            ("cd", &h.content_disposition),
            ("ce", &h.content_encoding),
            ("cl", &h.content_language),
            ("ex", &h.expires),
        ] {
            if let Some(v) = v {
                s.push_str(&format!("{tag}:{v}\n"));
            }
        }
        if let Some(c) = &self.checksum {
            let kind = if c.composite { "COMPOSITE" } else { "FULL_OBJECT" };
            s.push_str(&format!("k:{}:{kind}:{}\n", c.algo.name(), c.value));
        }
        if !self.parts.is_empty() {
            let runs: Vec<String> = self.parts.iter().map(|(size, n)| format!("{size}*{n}")).collect();
            s.push_str(&format!("p:{}\n", runs.join(",")));
        }
        if let Some(id) = &self.upload_id {
            s.push_str(&format!("i:{id}\n"));
        }
        for (k, v) in &self.tags {
            s.push_str(&format!("g:{}={}\n", percent_encode(k), percent_encode(v)));
        }
        if let Some((a, full)) = self.upload_checksum {
            s.push_str(&format!("u:{}:{}\n", a.name(), if full { "FULL_OBJECT" } else { "COMPOSITE" }));
        }
        s
    }

    /// Parses what [`ObjectMeta::encode`] wrote; lines it does not know are skipped.
    pub fn decode(lines: &str) -> ObjectMeta {
        let mut m = ObjectMeta::default();
        for l in lines.lines() {
            if let Some(t) = l.strip_prefix("t:") {
                m.content_type = Some(t.to_string());
            } else if let Some((k, v)) = l.strip_prefix("m:").and_then(|kv| kv.split_once(':')) {
                m.user.insert(k.to_string(), v.to_string());
            } else if let Some((tag, v)) = l.split_once(':') {
                let v = Some(v.to_string());
                match tag {
                    "cc" => m.headers.cache_control = v,
                    "cd" => m.headers.content_disposition = v,
                    "ce" => m.headers.content_encoding = v,
                    "cl" => m.headers.content_language = v,
                    "ex" => m.headers.expires = v,
                    "k" => m.checksum = v.as_deref().and_then(decode_checksum),
                    "i" => m.upload_id = v,
                    "g" => {
                        if let Some((k, v)) = v.as_deref().and_then(|kv| kv.split_once('='))
                            && let (Some(k), Some(v)) = (percent_decode(k), percent_decode(v))
                        {
                            m.tags.push((k, v));
                        }
                    }
                    "p" => m.parts = v.as_deref().map(decode_parts).unwrap_or_default(),
                    "u" => {
                        m.upload_checksum = v.as_deref().and_then(|v| {
                            let (a, kind) = v.split_once(':')?;
                            Some((Algo::parse(a)?, kind == "FULL_OBJECT"))
                        })
                    }
                    _ => {}
                }
            }
        }
        m
    }

    /// The content type to answer: the one given, or S3's default.
    pub fn content_type_or_default(&self) -> String {
        self.content_type.clone().unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string())
    }

    /// The user metadata as s3s returns it (none when empty).
    pub fn user_map(&self) -> Option<std::collections::HashMap<String, String>> {
        (!self.user.is_empty()).then(|| self.user.clone().into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let user = [("a".to_string(), "x:y z".to_string()), ("b".to_string(), String::new())].into_iter().collect();
        let m = ObjectMeta::new(Some("text/plain; charset=utf-8".into()), Some(user)).expect("meta");
        assert_eq!(ObjectMeta::decode(&m.encode()), m);
        assert_eq!(ObjectMeta::decode(""), ObjectMeta::default());
        assert_eq!(ObjectMeta::new(Some(String::new()), None).expect("meta").content_type, None);
    }

    #[test]
    fn headers_checksums_and_parts_round_trip() {
        let mut m = ObjectMeta::new(None, None).expect("meta").with_headers(Headers {
            cache_control: Some("max-age=60".into()),
            content_encoding: Some("gzip".into()),
            expires: Some("Thu, 01 Jan 2037 00:00:00 GMT".into()),
            content_language: Some("bad\nvalue".into()),
            ..Default::default()
        });
        assert_eq!(m.headers.content_language, None);
        let chunked = Headers { content_encoding: Some("aws-chunked".into()), ..Default::default() };
        assert_eq!(ObjectMeta::default().with_headers(chunked).headers.content_encoding, None);
        let both = Headers { content_encoding: Some("aws-chunked, gzip".into()), ..Default::default() };
        assert_eq!(ObjectMeta::default().with_headers(both).headers.content_encoding.as_deref(), Some("gzip"));
        m.checksum = Some(StoredChecksum { algo: Algo::Crc32c, value: "yZRlqg==".into(), composite: true });
        m.set_parts(&[5, 5, 5, 2]);
        m.upload_checksum = Some((Algo::Sha256, false));
        m.upload_id = Some("0123".into());
        m.tags = vec![("a b".into(), "x=y&z%".into()), ("k".into(), String::new())];
        assert_eq!(m.parts, vec![(5, 3), (2, 1)]);
        assert_eq!(ObjectMeta::decode(&m.encode()), m);
        assert_eq!(m.parts_count(), 4);
        assert_eq!((m.part_range(1), m.part_range(3), m.part_range(4)), (Some((0, 5)), Some((10, 15)), Some((15, 17))));
        assert_eq!(m.part_range(5), None);
        assert_eq!(m.content_type_or_default(), DEFAULT_CONTENT_TYPE);
    }

    #[test]
    fn tag_limits() {
        assert_eq!(
            parse_tagging("a=1&b%20c=d+e").unwrap(),
            vec![("a".into(), "1".into()), ("b c".into(), "d e".into())]
        );
        assert!(parse_tagging("a=1&a=2").is_err());
        let many: Vec<String> = (0..11).map(|i| format!("k{i}=v")).collect();
        assert!(parse_tagging(&many.join("&")).is_err());
        assert!(parse_tagging(&many[..10].join("&")).is_ok());
        assert!(check_tags(&[("k".repeat(129), String::new())]).is_err());
        assert!(check_tags(&[("k".into(), "v".repeat(257))]).is_err());
    }

    #[test]
    fn too_much_user_metadata() {
        let user = [("k".to_string(), "v".repeat(MAX_USER_META))].into_iter().collect();
        assert!(matches!(ObjectMeta::new(None, Some(user)), Err(GatewayError::MetadataTooLarge(_))));
    }
}

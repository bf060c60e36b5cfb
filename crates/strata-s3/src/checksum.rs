//! S3's additional checksums (CRC32, CRC32C, SHA1, SHA256, CRC64NVME): which one a request
//! asks for (a header, or a trailer of an `aws-chunked` body), computing it while the body is
//! written, and the verdict once the body has ended.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::Checksum as _;
use s3s::dto::Checksum;

use crate::error::{GatewayError, Result};

/// A checksum algorithm of S3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algo {
    /// CRC-32 (ISO-HDLC).
    Crc32,
    /// CRC-32C (Castagnoli).
    Crc32c,
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// CRC-64/NVME.
    Crc64Nvme,
}

/// Every algorithm, in the order S3 documents them.
pub const ALL: [Algo; 5] = [Algo::Crc32, Algo::Crc32c, Algo::Sha1, Algo::Sha256, Algo::Crc64Nvme];

impl Algo {
    /// The name S3 uses (`x-amz-checksum-algorithm` values).
    pub fn name(self) -> &'static str {
        match self {
            Algo::Crc32 => "CRC32",
            Algo::Crc32c => "CRC32C",
            Algo::Sha1 => "SHA1",
            Algo::Sha256 => "SHA256",
            Algo::Crc64Nvme => "CRC64NVME",
        }
    }

    /// The header (or trailer) carrying its value.
    pub fn header(self) -> String {
        format!("x-amz-checksum-{}", self.name().to_ascii_lowercase())
    }

    /// The algorithm of a name, in any case.
    pub fn parse(s: &str) -> Option<Algo> {
        ALL.into_iter().find(|a| a.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Bytes of a digest.
    pub fn digest_len(self) -> usize {
        match self {
            Algo::Crc32 | Algo::Crc32c => 4,
            Algo::Sha1 => 20,
            Algo::Sha256 => 32,
            Algo::Crc64Nvme => 8,
        }
    }

    /// Whether S3 can combine it over a whole multipart object (the CRCs).
    pub fn is_crc(self) -> bool {
        matches!(self, Algo::Crc32 | Algo::Crc32c | Algo::Crc64Nvme)
    }

    /// A hasher computing this algorithm only.
    pub fn hasher(self) -> Hasher {
        let mut h = ChecksumHasher::default();
        match self {
            Algo::Crc32 => h.crc32 = Some(s3s::crypto::Crc32::new()),
            Algo::Crc32c => h.crc32c = Some(s3s::crypto::Crc32c::new()),
            Algo::Sha1 => h.sha1 = Some(s3s::crypto::Sha1::new()),
            Algo::Sha256 => h.sha256 = Some(s3s::crypto::Sha256::new()),
            Algo::Crc64Nvme => h.crc64nvme = Some(s3s::crypto::Crc64Nvme::new()),
        }
        Hasher { algo: self, h }
    }

    /// Whether `v` is a well-formed base64 value of this algorithm's digest.
    pub fn well_formed(self, v: &str) -> bool {
        B64.decode(v.trim()).is_ok_and(|d| d.len() == self.digest_len())
    }

    /// The composite checksum of parts' checksums (S3's `COMPOSITE` type): the digest of
    /// their concatenated raw digests, without the `-N` suffix.
    pub fn composite(self, parts: &[String]) -> Result<String> {
        let mut h = self.hasher();
        for p in parts {
            let raw = B64
                .decode(p.trim())
                .map_err(|_| GatewayError::InvalidPart(format!("a part's {} checksum is damaged", self.name())))?;
            h.update(&raw);
        }
        Ok(h.finish())
    }
}

/// One algorithm's running digest.
pub struct Hasher {
    algo: Algo,
    h: ChecksumHasher,
}

impl Hasher {
    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.h.update(data);
    }

    /// The digest, base64 as S3 shows it.
    pub fn finish(self) -> String {
        let c = self.h.finalize();
        get(&c, self.algo).unwrap_or_default()
    }
}

/// The value of `algo` in a set of checksums.
pub fn get(c: &Checksum, algo: Algo) -> Option<String> {
    match algo {
        Algo::Crc32 => c.checksum_crc32.clone(),
        Algo::Crc32c => c.checksum_crc32c.clone(),
        Algo::Sha1 => c.checksum_sha1.clone(),
        Algo::Sha256 => c.checksum_sha256.clone(),
        Algo::Crc64Nvme => c.checksum_crc64nvme.clone(),
    }
}

/// A set of checksums holding `value` as `algo`.
pub fn set(algo: Algo, value: String) -> Checksum {
    let mut c = Checksum::default();
    match algo {
        Algo::Crc32 => c.checksum_crc32 = Some(value),
        Algo::Crc32c => c.checksum_crc32c = Some(value),
        Algo::Sha1 => c.checksum_sha1 = Some(value),
        Algo::Sha256 => c.checksum_sha256 = Some(value),
        Algo::Crc64Nvme => c.checksum_crc64nvme = Some(value),
    }
    c
}

/// Where the expected value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A header sent with the request.
    Header(String),
    /// A trailer of the `aws-chunked` body, read once the body has ended.
    Trailer,
    /// None: the client only asked for the checksum to be computed and stored.
    Compute,
}

/// The checksum a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    /// Algorithm.
    pub algo: Algo,
    /// Where its expected value is.
    pub source: Source,
}

fn invalid(m: impl Into<String>) -> GatewayError {
    GatewayError::InvalidRequest(m.into())
}

/// What checksum a request asks for, from its headers (`x-amz-checksum-*`, `x-amz-trailer`,
/// `x-amz-sdk-checksum-algorithm`) and the algorithm its operation declared
/// (`x-amz-checksum-algorithm`), refusing contradictions and malformed values as S3 does.
pub fn wanted(headers: &hyper::HeaderMap, declared: Option<&str>) -> Result<Option<Wanted>> {
    let mut sent = Vec::new();
    for a in ALL {
        if let Some(v) = headers.get(a.header()) {
            let v = v.to_str().map_err(|_| invalid(format!("Value for {} header is invalid.", a.header())))?;
            sent.push((a, v.trim().to_string()));
        }
    }
    if sent.len() > 1 {
        return Err(invalid("Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."));
    }
    let trailer = match headers.get("x-amz-trailer") {
        None => None,
        Some(t) => {
            let name = t.to_str().unwrap_or("").trim().to_ascii_lowercase();
            let algo = ALL.into_iter().find(|a| a.header() == name);
            match algo {
                Some(a) => Some(a),
                None => {
                    return Err(invalid(format!(
                        "The value specified in the x-amz-trailer header is not supported: {name:?}"
                    )));
                }
            }
        }
    };
    let sdk = headers.get("x-amz-sdk-checksum-algorithm").and_then(|v| v.to_str().ok()).map(str::to_string);
    let declared = match declared.map(str::to_string).or(sdk) {
        None => None,
        Some(d) => Some(Algo::parse(&d).ok_or_else(|| invalid(format!("Checksum algorithm {d:?} is not supported")))?),
    };
    let w = match (sent.pop(), trailer) {
        (Some(_), Some(_)) => {
            return Err(invalid("Expecting a single x-amz-checksum- header or trailer, not both."));
        }
        (Some((a, v)), None) => {
            if !a.well_formed(&v) {
                return Err(invalid(format!("Value for {} header is invalid.", a.header())));
            }
            Wanted { algo: a, source: Source::Header(v) }
        }
        (None, Some(a)) => Wanted { algo: a, source: Source::Trailer },
        (None, None) => match declared {
            Some(a) => return Ok(Some(Wanted { algo: a, source: Source::Compute })),
            None => return Ok(None),
        },
    };
    if declared.is_some_and(|d| d != w.algo) {
        return Err(invalid(format!(
            "Value for x-amz-sdk-checksum-algorithm header is invalid: the checksum sent is {}",
            w.algo.name()
        )));
    }
    Ok(Some(w))
}

/// Checks a computed value against what the client sent (its header, or the trailer now that
/// the body has ended); `BadDigest` when they differ.
pub fn verify(w: &Wanted, computed: &str, trailers: Option<&s3s::TrailingHeaders>) -> Result<()> {
    let expected = match &w.source {
        Source::Compute => return Ok(()),
        Source::Header(v) => v.clone(),
        Source::Trailer => {
            let name = w.algo.header();
            let got = trailers.and_then(|t| t.read(|h| h.get(&name).and_then(|v| v.to_str().ok()).map(str::to_string)));
            match got.flatten() {
                Some(v) => v.trim().to_string(),
                None => return Err(invalid(format!("The {name} trailer announced by x-amz-trailer was not sent."))),
            }
        }
    };
    if !w.algo.well_formed(&expected) {
        return Err(invalid(format!("Value for {} trailing header is invalid.", w.algo.header())));
    }
    if expected != computed {
        return Err(GatewayError::BadChecksum(w.algo.name()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(pairs: &[(&str, &str)]) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn sum(a: Algo, data: &[u8]) -> String {
        let mut h = a.hasher();
        h.update(data);
        h.finish()
    }

    #[test]
    fn known_values() {
        // Values S3's documentation and SDKs agree on for "hello world".
        assert_eq!(sum(Algo::Crc32, b"hello world"), "DUoRhQ==");
        assert_eq!(sum(Algo::Crc32c, b"hello world"), "yZRlqg==");
        assert_eq!(sum(Algo::Sha256, b"hello world"), "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=");
        for a in ALL {
            assert!(a.well_formed(&sum(a, b"x")), "{a:?}");
            assert_eq!(Algo::parse(&a.name().to_lowercase()), Some(a));
        }
    }

    #[test]
    fn what_a_request_asks_for() {
        let v = sum(Algo::Crc32, b"abc");
        let w = wanted(&hs(&[("x-amz-checksum-crc32", &v)]), None).unwrap().unwrap();
        assert_eq!(w, Wanted { algo: Algo::Crc32, source: Source::Header(v.clone()) });
        assert!(verify(&w, &v, None).is_ok());
        assert!(matches!(verify(&w, &sum(Algo::Crc32, b"abd"), None), Err(GatewayError::BadChecksum(_))));
        let t = wanted(&hs(&[("x-amz-trailer", "x-amz-checksum-sha1")]), None).unwrap().unwrap();
        assert_eq!(t, Wanted { algo: Algo::Sha1, source: Source::Trailer });
        assert!(matches!(verify(&t, &sum(Algo::Sha1, b""), None), Err(GatewayError::InvalidRequest(_))));
        assert_eq!(wanted(&hs(&[]), None).unwrap(), None);
        assert_eq!(wanted(&hs(&[]), Some("sha256")).unwrap().unwrap().source, Source::Compute);
        let bad = [
            hs(&[("x-amz-checksum-crc32", "nope")]),
            hs(&[("x-amz-checksum-crc32", &v), ("x-amz-checksum-sha1", &sum(Algo::Sha1, b""))]),
            hs(&[("x-amz-trailer", "x-amz-checksum-md5")]),
            hs(&[("x-amz-checksum-crc32", &v), ("x-amz-sdk-checksum-algorithm", "SHA256")]),
        ];
        for h in bad {
            assert!(matches!(wanted(&h, None), Err(GatewayError::InvalidRequest(_))), "{h:?}");
        }
    }

    #[test]
    fn composite_of_parts() {
        let parts = [sum(Algo::Crc32, b"a"), sum(Algo::Crc32, b"b")];
        let mut raw = B64.decode(&parts[0]).unwrap();
        raw.extend(B64.decode(&parts[1]).unwrap());
        assert_eq!(Algo::Crc32.composite(&parts).unwrap(), sum(Algo::Crc32, &raw));
    }
}

//! Conditional requests: `If-Match`, `If-None-Match`, `If-Modified-Since` and
//! `If-Unmodified-Since` (and CopyObject's `x-amz-copy-source-if-*`), with S3's precedence.
//!
//! Reads follow RFC 9110 as S3 does: a true `If-Match` makes `If-Unmodified-Since` moot, and a
//! present `If-None-Match` makes `If-Modified-Since` moot. Dates compare at whole seconds (what
//! an HTTP date holds).

use s3s::dto::{ETagCondition, Timestamp, TimestampFormat};
use strata_types::Timespec;

use crate::error::{GatewayError, Result};

/// The conditions of one request.
#[derive(Clone, Debug, Default)]
pub struct Conditions {
    /// `If-Match`.
    pub if_match: Option<ETagCondition>,
    /// `If-None-Match`.
    pub if_none_match: Option<ETagCondition>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<Timestamp>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<Timestamp>,
}

/// What a failed condition answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// GET and HEAD: a matched `If-None-Match` / unmet `If-Modified-Since` is 304.
    Read,
    /// CopyObject's source: every failure is 412.
    CopySource,
}

fn etag_matches(c: &ETagCondition, tag: &str) -> bool {
    c.is_any() || c.as_etag().is_some_and(|e| e.value() == tag)
}

/// Seconds since the epoch of a timestamp.
pub fn seconds(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

/// An mtime as an HTTP date (Last-Modified).
pub fn http_date(t: Timespec) -> String {
    let ts =
        Timestamp::from(time::OffsetDateTime::from_unix_timestamp(t.sec).unwrap_or(time::OffsetDateTime::UNIX_EPOCH));
    let mut out = Vec::new();
    match ts.format(TimestampFormat::HttpDate, &mut out) {
        Ok(()) => String::from_utf8(out).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

impl Conditions {
    /// Whether there is any condition.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none()
            && self.if_none_match.is_none()
            && self.if_modified_since.is_none()
            && self.if_unmodified_since.is_none()
    }

    /// Checks the conditions against an object with ETag `tag` last modified at `mtime`.
    pub fn check(&self, kind: Kind, tag: &str, mtime: Timespec) -> Result<()> {
        let modified = mtime.sec;
        match &self.if_match {
            Some(c) if !etag_matches(c, tag) => return Err(GatewayError::PreconditionFailed),
            Some(_) => {}
            None => {
                if self.if_unmodified_since.as_ref().is_some_and(|t| modified > seconds(t)) {
                    return Err(GatewayError::PreconditionFailed);
                }
            }
        }
        let not_modified = match &self.if_none_match {
            Some(c) => etag_matches(c, tag),
            None => self.if_modified_since.as_ref().is_some_and(|t| modified <= seconds(t)),
        };
        if not_modified {
            return Err(match kind {
                Kind::Read => GatewayError::NotModified { etag: tag.to_string(), last_modified: http_date(mtime) },
                Kind::CopySource => GatewayError::PreconditionFailed,
            });
        }
        Ok(())
    }
}

/// What a write's conditions ask of the key's current object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteIf {
    /// Nothing: write whatever is there.
    Always,
    /// `If-None-Match: *`: only if there is no object.
    Absent,
    /// `If-Match: "etag"` (or `*`: any object).
    Matches(Option<String>),
    /// `If-None-Match: "etag"`: no object, or one with another ETag.
    NotMatching(String),
}

/// The condition of a PUT, CopyObject or CompleteMultipartUpload. Besides S3's `*`, a write's
/// `If-None-Match` may name an ETag (RFC 9110: write unless the object has that ETag).
pub fn write_if(if_match: Option<&ETagCondition>, if_none_match: Option<&ETagCondition>) -> Result<WriteIf> {
    match (if_match, if_none_match) {
        (Some(_), Some(_)) => {
            Err(GatewayError::NotImplemented("If-Match and If-None-Match together on a write are not supported".into()))
        }
        (None, Some(c)) if c.is_any() => Ok(WriteIf::Absent),
        (None, Some(c)) => Ok(WriteIf::NotMatching(c.as_etag().map(|e| e.value().to_string()).unwrap_or_default())),
        (Some(c), None) => Ok(WriteIf::Matches(c.as_etag().map(|e| e.value().to_string()))),
        (None, None) => Ok(WriteIf::Always),
    }
}

#[cfg(test)]
mod tests {
    use s3s::dto::ETag;

    use super::*;

    fn tag(t: &str) -> Option<ETagCondition> {
        Some(ETagCondition::ETag(ETag::Strong(t.into())))
    }

    fn at(sec: i64) -> Option<Timestamp> {
        Some(Timestamp::from(time::OffsetDateTime::from_unix_timestamp(sec).unwrap()))
    }

    fn code(r: Result<()>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(GatewayError::PreconditionFailed) => "412",
            Err(GatewayError::NotModified { .. }) => "304",
            Err(_) => "other",
        }
    }

    #[test]
    fn read_precedence() {
        let m = Timespec { sec: 1000, nsec: 500 };
        let c = |c: Conditions| code(c.check(Kind::Read, "abc", m));
        assert_eq!(c(Conditions::default()), "ok");
        assert_eq!(c(Conditions { if_match: tag("abc"), ..Default::default() }), "ok");
        assert_eq!(c(Conditions { if_match: tag("x"), ..Default::default() }), "412");
        assert_eq!(c(Conditions { if_none_match: tag("abc"), ..Default::default() }), "304");
        assert_eq!(c(Conditions { if_none_match: Some(ETagCondition::Any), ..Default::default() }), "304");
        assert_eq!(c(Conditions { if_modified_since: at(1000), ..Default::default() }), "304");
        assert_eq!(c(Conditions { if_modified_since: at(999), ..Default::default() }), "ok");
        assert_eq!(c(Conditions { if_unmodified_since: at(999), ..Default::default() }), "412");
        assert_eq!(c(Conditions { if_unmodified_since: at(1000), ..Default::default() }), "ok");
        // S3: If-Match true and If-Unmodified-Since false: 200.
        assert_eq!(c(Conditions { if_match: tag("abc"), if_unmodified_since: at(1), ..Default::default() }), "ok");
        // S3: If-None-Match false (no match) and If-Modified-Since false: 200.
        assert_eq!(c(Conditions { if_none_match: tag("x"), if_modified_since: at(5000), ..Default::default() }), "ok");
        // If-Match failing wins over a 304.
        assert_eq!(c(Conditions { if_match: tag("x"), if_none_match: tag("abc"), ..Default::default() }), "412");
        let copy = Conditions { if_none_match: tag("abc"), ..Default::default() };
        assert_eq!(code(copy.check(Kind::CopySource, "abc", m)), "412");
    }

    #[test]
    fn write_conditions() {
        assert_eq!(write_if(None, None).unwrap(), WriteIf::Always);
        assert_eq!(write_if(None, Some(&ETagCondition::Any)).unwrap(), WriteIf::Absent);
        assert_eq!(write_if(tag("e").as_ref(), None).unwrap(), WriteIf::Matches(Some("e".into())));
        assert_eq!(write_if(None, tag("e").as_ref()).unwrap(), WriteIf::NotMatching("e".into()));
        assert!(matches!(write_if(tag("e").as_ref(), tag("e").as_ref()), Err(GatewayError::NotImplemented(_))));
        assert!(http_date(Timespec { sec: 0, nsec: 0 }).starts_with("Thu, 01 Jan 1970 00:00:00"));
    }
}

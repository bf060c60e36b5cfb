//! What S3 keeps with an object besides its bytes (content type, `x-amz-meta-*`), stored with
//! its ETag in one extended attribute so a GET reads both in one call.

use std::collections::BTreeMap;

use crate::error::{GatewayError, Result};

/// S3's limit on user metadata; also keeps the attribute small.
pub const MAX_USER_META: usize = 2048;

/// An object's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectMeta {
    /// `Content-Type` given at upload.
    pub content_type: Option<String>,
    /// `x-amz-meta-*` headers given at upload, by name without the prefix.
    pub user: BTreeMap<String, String>,
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
        Ok(ObjectMeta { content_type: content_type.filter(|c| !c.is_empty()), user })
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
            }
        }
        m
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
    fn too_much_user_metadata() {
        let user = [("k".to_string(), "v".repeat(MAX_USER_META))].into_iter().collect();
        assert!(matches!(ObjectMeta::new(None, Some(user)), Err(GatewayError::MetadataTooLarge(_))));
    }
}

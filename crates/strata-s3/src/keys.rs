//! Object keys as paths inside a volume: which keys are accepted and how they split into names.

use strata_types::NameError;

/// Names the gateway keeps for itself (temporary files, multipart parts): never objects, never
/// listed, and refused as key segments so no client can collide with them.
pub const HIDDEN_PREFIX: &str = ".strata-s3-";

/// Longest name of one path segment (a file system name).
pub const MAX_NAME: usize = strata_types::NAME_MAX;

/// Longest key S3 allows.
pub const MAX_KEY: usize = 1024;

/// Why a key cannot name a file in a volume.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is empty.
    #[error("the key is empty")]
    Empty,
    /// Longer than S3's 1024 bytes.
    #[error("the key is longer than {MAX_KEY} bytes")]
    TooLong,
    /// A NUL byte cannot be part of a file name.
    #[error("the key contains a NUL byte")]
    Nul,
    /// A leading, trailing or doubled '/' would name a directory or nothing.
    #[error("the key has an empty path segment (a leading, trailing or doubled '/')")]
    EmptySegment,
    /// "." and ".." are not names in a directory.
    #[error("the key has a '.' or '..' path segment")]
    DotSegment,
    /// A segment longer than a file name may be.
    #[error("a path segment of the key is longer than {MAX_NAME} bytes")]
    NameTooLong,
    /// A segment starting with the gateway's reserved prefix.
    #[error("path segments starting with {HIDDEN_PREFIX:?} are reserved by the gateway")]
    Reserved,
}

/// Splits a key into the names of its directories and file ("a/b/c.txt" → a, b, c.txt),
/// refusing keys that cannot be a path of a regular file.
pub fn split_key(key: &str) -> Result<Vec<&str>, KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY {
        return Err(KeyError::TooLong);
    }
    if key.contains('\0') {
        return Err(KeyError::Nul);
    }
    let segs: Vec<&str> = key.split('/').collect();
    for s in &segs {
        // Each segment is a file name: the one rule every front-end and the server apply.
        strata_types::check_name(s.as_bytes()).map_err(|e| match e {
            NameError::Empty => KeyError::EmptySegment,
            NameError::Dot => KeyError::DotSegment,
            NameError::TooLong => KeyError::NameTooLong,
            // '/' splits segments and NUL was refused above.
            NameError::BadByte => KeyError::Nul,
        })?;
        if is_hidden(s) {
            return Err(KeyError::Reserved);
        }
    }
    Ok(segs)
}

/// Whether a directory entry is the gateway's own and must not show as an object or prefix.
pub fn is_hidden(name: &str) -> bool {
    name.starts_with(HIDDEN_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_paths() {
        assert_eq!(split_key("a/b/c.txt"), Ok(vec!["a", "b", "c.txt"]));
        assert_eq!(split_key("x"), Ok(vec!["x"]));
        assert_eq!(split_key("..a/b.."), Ok(vec!["..a", "b.."]));
        assert_eq!(split_key("spaces and ünïcode"), Ok(vec!["spaces and ünïcode"]));
    }

    #[test]
    fn refuses_what_is_not_a_file_path() {
        assert_eq!(split_key(""), Err(KeyError::Empty));
        assert_eq!(split_key("../x"), Err(KeyError::DotSegment));
        assert_eq!(split_key("a/./b"), Err(KeyError::DotSegment));
        assert_eq!(split_key("a//b"), Err(KeyError::EmptySegment));
        assert_eq!(split_key("/a"), Err(KeyError::EmptySegment));
        assert_eq!(split_key("dir/"), Err(KeyError::EmptySegment));
        assert_eq!(split_key("a\0b"), Err(KeyError::Nul));
        assert_eq!(split_key(&"n".repeat(256)), Err(KeyError::NameTooLong));
        assert!(split_key(&"n".repeat(255)).is_ok());
        assert_eq!(split_key(&"a/".repeat(600)), Err(KeyError::TooLong));
        assert_eq!(split_key("a/.strata-s3-uploads/x"), Err(KeyError::Reserved));
    }
}

//! Which names may be entries of a directory: one rule for the server and every front-end.

use crate::limits::NAME_MAX;

/// Why a name cannot be a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Longer than [`NAME_MAX`] bytes.
    #[error("the name is longer than {NAME_MAX} bytes")]
    TooLong,
    /// Empty.
    #[error("the name is empty")]
    Empty,
    /// Contains '/' or a NUL byte.
    #[error("the name contains '/' or a NUL byte")]
    BadByte,
    /// "." or "..": every directory has these already.
    #[error("\".\" and \"..\" name the directory itself and its parent")]
    Dot,
}

/// Checks that `name` can be an entry of a directory. The length is checked first, as the
/// kernel does for a path component.
pub fn check_name(name: &[u8]) -> Result<(), NameError> {
    if name.len() > NAME_MAX {
        return Err(NameError::TooLong);
    }
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.contains(&b'/') || name.contains(&0) {
        return Err(NameError::BadByte);
    }
    if name == b"." || name == b".." {
        return Err(NameError::Dot);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(check_name(b"a"), Ok(()));
        assert_eq!(check_name(&[b'n'; NAME_MAX]), Ok(()));
        assert_eq!(check_name(&[b'n'; NAME_MAX + 1]), Err(NameError::TooLong));
        assert_eq!(check_name(b""), Err(NameError::Empty));
        assert_eq!(check_name(b"a/b"), Err(NameError::BadByte));
        assert_eq!(check_name(b"a\0"), Err(NameError::BadByte));
        assert_eq!(check_name(b"."), Err(NameError::Dot));
        assert_eq!(check_name(b".."), Err(NameError::Dot));
        assert_eq!(check_name(b"..."), Ok(()));
    }
}

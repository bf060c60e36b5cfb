//! How a volume may be attached: the Kubernetes access modes.

use serde::{Deserialize, Serialize};

/// How a volume may be attached (the Kubernetes access modes).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccessMode {
    /// Read-write by many nodes at once.
    ReadWriteMany,
    /// Read-only by many nodes.
    ReadOnlyMany,
    /// Read-write by one node.
    ReadWriteOnce,
}

/// A name that is not an access mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("access mode {0:?} is not one of ReadWriteMany, ReadOnlyMany, ReadWriteOnce")]
pub struct ParseAccessModeError(pub String);

impl AccessMode {
    /// Every mode.
    pub const ALL: [AccessMode; 3] = [AccessMode::ReadWriteMany, AccessMode::ReadOnlyMany, AccessMode::ReadWriteOnce];

    /// The mode for its name (case-insensitive, `RWX`/`ROX`/`RWO` accepted).
    pub fn parse(s: &str) -> Result<AccessMode, ParseAccessModeError> {
        match s.to_ascii_lowercase().as_str() {
            "readwritemany" | "rwx" => Ok(AccessMode::ReadWriteMany),
            "readonlymany" | "rox" => Ok(AccessMode::ReadOnlyMany),
            "readwriteonce" | "rwo" => Ok(AccessMode::ReadWriteOnce),
            _ => Err(ParseAccessModeError(s.to_string())),
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::ReadWriteMany => "ReadWriteMany",
            AccessMode::ReadOnlyMany => "ReadOnlyMany",
            AccessMode::ReadWriteOnce => "ReadWriteOnce",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_short_names_parse_back() {
        for m in AccessMode::ALL {
            assert_eq!(AccessMode::parse(m.as_str()), Ok(m));
            assert_eq!(AccessMode::parse(&m.as_str().to_uppercase()), Ok(m));
        }
        assert_eq!(AccessMode::parse("rox"), Ok(AccessMode::ReadOnlyMany));
        assert!(AccessMode::parse("ReadWriteOncePod").is_err());
    }
}

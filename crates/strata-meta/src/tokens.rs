//! Access tokens: random secrets handed to clients, stored only as SHA-256 hashes.

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::prefix_end;
use crate::meta::Meta;
use crate::types::Timespec;

/// What a token may do.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything in its scope, including tokens and volumes.
    Admin,
    /// Read and write data, create volumes.
    Editor,
    /// Read only.
    Viewer,
    /// A mount client: data access to the volumes of its scope.
    Node,
}

/// A token as stored (the secret itself is never stored).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public id: the first 12 hex digits of the hash; safe to print and to revoke by.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Scope it acts in.
    pub scope: String,
    /// Creation time.
    pub created: Timespec,
    /// Expiry, if any.
    #[serde(default)]
    pub expires: Option<Timespec>,
}

pub use strata_types::hash_token;

fn new_secret() -> String {
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    format!("strata_{}", hex::encode(b))
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| MetaError::Corrupt(e.to_string()))
}

impl Meta {
    /// Issues a token; returns the secret (shown once) and its record.
    pub fn create_token(
        &self,
        name: &str,
        role: Role,
        scope: &str,
        expires: Option<Timespec>,
    ) -> Result<(String, TokenRecord)> {
        let secret = new_secret();
        let h = hash_token(&secret);
        let rec = TokenRecord {
            id: hex::encode(&h[..6]),
            name: name.to_string(),
            role,
            scope: scope.to_string(),
            created: Timespec::now(),
            expires,
        };
        self.write(true, |t| t.put(&keys::token(&h), &json(&rec)?))?;
        Ok((secret, rec))
    }

    /// Creates the first admin token if no token exists yet; returns its secret then.
    pub fn bootstrap_admin_token(&self) -> Result<Option<String>> {
        let any = self.read(|t| Ok(!t.scan(keys::TOKEN_PREFIX, &prefix_end(keys::TOKEN_PREFIX), 1)?.is_empty()))?;
        if any {
            return Ok(None);
        }
        Ok(Some(self.create_token("admin", Role::Admin, "cluster", None)?.0))
    }

    /// The record of a valid (known, unexpired) token.
    pub fn verify_token(&self, secret: &str) -> Result<Option<TokenRecord>> {
        let h = hash_token(secret);
        let rec: Option<TokenRecord> = self.read_latest(|t| match t.get(&keys::token(&h))? {
            Some(v) => Ok(Some(serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(e.to_string()))?)),
            None => Ok(None),
        })?;
        Ok(rec.filter(|r| r.expires.is_none_or(|e| e > Timespec::now())))
    }

    /// All token records.
    pub fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        self.read(|t| {
            t.scan(keys::TOKEN_PREFIX, &prefix_end(keys::TOKEN_PREFIX), usize::MAX)?
                .into_iter()
                .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(e.to_string())))
                .collect()
        })
    }

    /// Revokes a token by its public id.
    pub fn revoke_token(&self, id: &str) -> Result<TokenRecord> {
        self.write(true, |t| {
            for (k, v) in t.scan(keys::TOKEN_PREFIX, &prefix_end(keys::TOKEN_PREFIX), usize::MAX)? {
                let rec: TokenRecord = serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(e.to_string()))?;
                if rec.id == id {
                    t.delete(&k)?;
                    return Ok(rec);
                }
            }
            Err(MetaError::NotFound)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::sqlite::SqliteEngine;
    use std::sync::Arc;

    #[test]
    fn bootstrap_verify_revoke() -> Result<()> {
        let m = Meta::new(Arc::new(SqliteEngine::memory()?))?;
        let secret = m.bootstrap_admin_token()?.ok_or(MetaError::NotFound)?;
        assert_eq!(m.bootstrap_admin_token()?, None, "only the first start creates one");
        let rec = m.verify_token(&secret)?.ok_or(MetaError::NotFound)?;
        assert_eq!(rec.role, Role::Admin);
        assert_eq!(m.verify_token("strata_wrong")?, None);
        m.revoke_token(&rec.id)?;
        assert_eq!(m.verify_token(&secret)?, None);
        Ok(())
    }

    #[test]
    fn expired_token_is_refused() -> Result<()> {
        let m = Meta::new(Arc::new(SqliteEngine::memory()?))?;
        let (s, _) = m.create_token("old", Role::Viewer, "cluster", Some(Timespec { sec: 1, nsec: 0 }))?;
        assert_eq!(m.verify_token(&s)?, None);
        Ok(())
    }
}

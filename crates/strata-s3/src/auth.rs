//! Credentials: each Strata token the gateway was given is one S3 key pair.

use std::collections::HashMap;
use std::sync::Arc;

use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Result, s3_error};

/// A Strata token the gateway acts with.
#[derive(Clone)]
pub struct Token {
    /// Public id: the access key id of the pair.
    pub id: String,
    /// The secret: the secret access key of the pair, and what the gateway presents to the
    /// server for requests signed with it.
    pub secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("id", &self.id).finish_non_exhaustive()
    }
}

/// The public id of a token secret, as `strata token list` shows it: the first 12 hex digits
/// of its SHA-256.
pub fn public_id(secret: &str) -> String {
    strata_types::token_id(secret.trim())
}

/// The tokens the gateway holds, by access key id.
#[derive(Debug, Default)]
pub struct Keyring {
    tokens: HashMap<String, Arc<Token>>,
}

impl Keyring {
    /// A keyring of the given token secrets.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let tokens = secrets
            .into_iter()
            .map(|s| {
                let secret = s.trim().to_string();
                let id = public_id(&secret);
                (id.clone(), Arc::new(Token { id, secret }))
            })
            .collect();
        Keyring { tokens }
    }

    /// The token whose public id is `access_key`.
    pub fn get(&self, access_key: &str) -> Option<Arc<Token>> {
        self.tokens.get(access_key).cloned()
    }

    /// Access key ids, sorted (for the log at start).
    pub fn ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tokens.keys().cloned().collect();
        v.sort();
        v
    }
}

/// The keyring as s3s's source of secrets for SigV4 checks.
pub struct KeyringAuth(pub Arc<Keyring>);

#[async_trait::async_trait]
impl S3Auth for KeyringAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.get(access_key) {
            Some(t) => Ok(SecretKey::from(t.secret.as_str())),
            None => Err(s3_error!(InvalidAccessKeyId, "the access key id is not one of this gateway's tokens")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hash_prefixes() {
        let s = "strata_000000000000000000000000000000000000000000000000".to_string();
        let k = Keyring::new([s.clone(), format!(" {s}\n")]);
        let id = public_id(&s);
        assert_eq!(id.len(), 12);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(k.ids(), vec![id.clone()]);
        assert_eq!(k.get(&id).map(|t| t.secret.clone()), Some(s));
        assert!(k.get("000000000000").is_none());
    }
}

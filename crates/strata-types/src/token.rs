//! Token secrets as the server stores and names them.

use sha2::{Digest, Sha256};

/// SHA-256 of a token secret: the only form in which the server stores it.
pub fn hash_token(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A token's public id: the first 12 hex digits of its hash; safe to print and to revoke by.
pub fn token_id(secret: &str) -> String {
    hex::encode(&hash_token(secret)[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_the_start_of_the_hash() {
        let h = hash_token("strata_abc");
        assert_eq!(token_id("strata_abc"), hex::encode(&h[..6]));
        assert_eq!(token_id("strata_abc").len(), 12);
        assert_ne!(token_id("strata_abc"), token_id("strata_abd"));
    }
}

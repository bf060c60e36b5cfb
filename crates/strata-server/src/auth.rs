//! Token authentication for every RPC: the bearer token is hashed and looked up, with a short
//! cache so a busy client does not cost a database read per call.
//!
//! A revocation must hold everywhere once it returns. With local state this server is the only
//! one that can revoke, and revocation clears the cache. When several servers share the store,
//! each trusts a verification for at most [`SHARED_TTL`], counted from before its read of the
//! record, and a revocation answers only [`SHARED_TTL`] after its commit: every verification a
//! server still trusts by then read the record after the revocation, and found nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_meta::Meta;
use strata_meta::tokens::{Role, TokenRecord, hash_token};
use tonic::{Request, Status};

/// How long a verified token is trusted before it is looked up again with local state, where
/// this server is the only one that can revoke, and revocation clears the cache.
const CACHE_TTL: Duration = Duration::from_secs(2);

/// How long a verified token is trusted with shared state; a revocation waits this long after
/// its commit before it answers ([`Auth::settle_revocation`]).
pub const SHARED_TTL: Duration = Duration::from_secs(1);

/// Beyond this many cached verifications, the stale ones are dropped.
const CACHE_MAX: usize = 4096;

/// The authenticated caller of a request, stored in its extensions.
#[derive(Clone, Debug)]
pub struct Principal(pub TokenRecord);

/// Verifies bearer tokens.
pub struct Auth {
    meta: Arc<Meta>,
    ttl: Duration,
    /// Verifications by token hash, with when the read that made each started.
    cache: Mutex<HashMap<[u8; 32], (TokenRecord, Instant)>>,
    /// Bumped by [`Auth::clear`]: a read that started before a clear is not cached.
    generation: AtomicU64,
}

/// Runs a metadata call that may wait on the network from synchronous code: on a worker of the
/// multi-threaded runtime (or a thread inside `Handle::block_on`) through `block_in_place`, which
/// moves the worker's other tasks elsewhere and leaves the runtime context, so the PostgreSQL
/// client may drive its own; on any other thread directly.
pub(crate) fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl Auth {
    /// A verifier over the namespace's token records.
    pub fn new(meta: Arc<Meta>) -> Self {
        let ttl = if meta.is_shared() { SHARED_TTL } else { CACHE_TTL };
        Auth { meta, ttl, cache: Mutex::new(HashMap::new()), generation: AtomicU64::new(0) }
    }

    /// Forgets cached verifications (after a revocation).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// After a revocation committed: waits until no server trusts a verification of the token
    /// made before (see the module's comment).
    pub async fn settle_revocation(&self) {
        self.clear();
        if self.meta.is_shared() {
            tokio::time::sleep(SHARED_TTL).await;
        }
    }

    /// The caller a token secret stands for, or the status refusing it.
    pub fn principal(&self, secret: &str) -> Result<Principal, Status> {
        self.verify(secret).map(Principal)
    }

    fn verify(&self, secret: &str) -> Result<TokenRecord, Status> {
        let h = hash_token(secret);
        if let Ok(c) = self.cache.lock()
            && let Some((rec, at)) = c.get(&h)
            && at.elapsed() < self.ttl
            && rec.expires.is_none_or(|e| e > strata_meta::Timespec::now())
        {
            return Ok(rec.clone());
        }
        // Taken before the read: the trust runs from a moment before the record was seen.
        let (asked, generation) = (Instant::now(), self.generation.load(Ordering::SeqCst));
        // A read of the local SQLite file takes microseconds, acceptable on this thread; one of
        // PostgreSQL leaves the runtime's worker first.
        let read = || self.meta.verify_token(secret);
        let rec = if self.meta.is_shared() { off_worker(read) } else { read() }
            .map_err(|e| Status::unavailable(format!("token check failed: {e}")))?
            .ok_or_else(|| Status::unauthenticated("invalid, expired or revoked token"))?;
        if let Ok(mut c) = self.cache.lock()
            && self.generation.load(Ordering::SeqCst) == generation
        {
            if c.len() >= CACHE_MAX {
                let ttl = self.ttl;
                c.retain(|_, (_, at)| at.elapsed() < ttl);
            }
            // Still full of fresh ones: this one is read again next time, rather than the map
            // growing (and each miss scanning it).
            if c.len() < CACHE_MAX {
                c.insert(h, (rec.clone(), asked));
            }
        }
        Ok(rec)
    }

    /// Checks the request's bearer token and records the caller in its extensions.
    pub fn check<T>(&self, mut req: Request<T>) -> Result<Request<T>, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("no token: pass --token, STRATA_TOKEN or --token-file"))?;
        let value = header.to_str().map_err(|_| Status::unauthenticated("malformed authorization header"))?;
        let secret = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| Status::unauthenticated("authorization must be 'Bearer <token>'"))?;
        let rec = self.verify(secret.trim())?;
        req.extensions_mut().insert(Principal(rec));
        Ok(req)
    }
}

/// The caller of a request, which the interceptor put there.
pub fn principal<T>(req: &Request<T>) -> Result<&TokenRecord, Status> {
    req.extensions().get::<Principal>().map(|p| &p.0).ok_or_else(|| Status::unauthenticated("unauthenticated call"))
}

/// Refuses callers that are not admins.
pub fn require_admin<T>(req: &Request<T>) -> Result<(), Status> {
    match principal(req)?.role {
        Role::Admin => Ok(()),
        _ => Err(Status::permission_denied("this call needs an admin token")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_meta::StateMode;
    use strata_meta::kv::sqlite::SqliteEngine;

    fn server(path: &std::path::Path) -> Arc<Meta> {
        let kv = Arc::new(SqliteEngine::open(path).expect("open the store"));
        Arc::new(Meta::with_mode(kv, StateMode::Shared).expect("metadata"))
    }

    /// With shared state, a token another server revoked is trusted here for at most
    /// `SHARED_TTL` more; the revoking server answers only once that has passed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revocation_through_another_server_holds_here_once_it_returns() {
        let dir = tempfile::tempdir().expect("scratch directory");
        let (a, b) = (server(&dir.path().join("m.db")), server(&dir.path().join("m.db")));
        let (secret, rec) = a.create_token("t", Role::Editor, "cluster", None).expect("token");
        let (auth_a, auth_b) = (Auth::new(a.clone()), Auth::new(b));
        auth_b.principal(&secret).expect("valid on B");

        let started = Instant::now();
        a.revoke_token(&rec.id).expect("revoke through A");
        assert!(auth_b.principal(&secret).is_ok(), "B still trusts its recent verification");
        auth_a.settle_revocation().await;
        assert!(started.elapsed() >= SHARED_TTL, "the revocation answered after the trust ran out");
        assert!(auth_a.principal(&secret).is_err());
        let e = auth_b.principal(&secret).expect_err("B refuses it once the revocation returned");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
    }
}

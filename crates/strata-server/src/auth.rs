//! Token authentication for every RPC: the bearer token is hashed and looked up, with a short
//! cache so a busy client does not cost a database read per call — only with local state. When
//! several servers share the store, a revocation through one must take effect on all of them at
//! once, so every call reads the token record (one indexed read).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_meta::Meta;
use strata_meta::tokens::{Role, TokenRecord, hash_token};
use tonic::{Request, Status};

/// How long a verified token is trusted before it is looked up again (local state only, where
/// this server is the only one that can revoke, and revocation clears the cache).
const CACHE_TTL: Duration = Duration::from_secs(2);

/// The authenticated caller of a request, stored in its extensions.
#[derive(Clone, Debug)]
pub struct Principal(pub TokenRecord);

/// Verifies bearer tokens.
pub struct Auth {
    meta: Arc<Meta>,
    /// Off with shared state: a revocation by another server could not clear it.
    cached: bool,
    cache: Mutex<HashMap<[u8; 32], (TokenRecord, Instant)>>,
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
        Auth { cached: !meta.is_shared(), meta, cache: Mutex::new(HashMap::new()) }
    }

    /// Forgets cached verifications (after a revocation).
    pub fn clear(&self) {
        if let Ok(mut c) = self.cache.lock() {
            c.clear();
        }
    }

    /// The caller a token secret stands for, or the status refusing it.
    pub fn principal(&self, secret: &str) -> Result<Principal, Status> {
        self.verify(secret).map(Principal)
    }

    fn verify(&self, secret: &str) -> Result<TokenRecord, Status> {
        let h = hash_token(secret);
        if !self.cached {
            return off_worker(|| self.meta.verify_token(secret))
                .map_err(|e| Status::unavailable(format!("token check failed: {e}")))?
                .ok_or_else(|| Status::unauthenticated("invalid, expired or revoked token"));
        }
        if let Ok(c) = self.cache.lock()
            && let Some((rec, at)) = c.get(&h)
            && at.elapsed() < CACHE_TTL
            && rec.expires.is_none_or(|e| e > strata_meta::Timespec::now())
        {
            return Ok(rec.clone());
        }
        // A read of the local SQLite file: microseconds, acceptable on this thread.
        let rec = self
            .meta
            .verify_token(secret)
            .map_err(|e| Status::unavailable(format!("token check failed: {e}")))?
            .ok_or_else(|| Status::unauthenticated("invalid, expired or revoked token"))?;
        if let Ok(mut c) = self.cache.lock() {
            c.insert(h, (rec.clone(), Instant::now()));
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

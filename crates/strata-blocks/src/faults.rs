//! A fault-injecting `ObjectStore` for tests, in the spirit of Neon's `simulate_failures`:
//! wraps any store and, on the calls that match a [`Rule`] (an operation and optionally a key
//! prefix, every time or the next N times), fails them, refuses them, delays them, or writes
//! only the first bytes of a put and then fails (a torn write). Everything else goes through
//! to the wrapped store untouched. Wrap it in a [`BlockStore`] with [`FaultyStore::block_store`]
//! to see how the block layer (and what is built on it) meets a store that misbehaves without
//! stopping a real one.
//!
//! Compiled with the `testing` feature (dev-dependencies turn it on); not a stable API.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

use crate::BlockStore;

/// The name injected errors give this store.
const STORE: &str = "faults";

/// The kinds of store call a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Puts, whole or multipart.
    Put,
    /// Gets, whole, ranged or head.
    Get,
    /// Deletes (each location of a delete stream).
    Delete,
    /// Listings.
    List,
    /// Copies and renames.
    Copy,
}

/// What happens to a call a rule matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The call fails as if the store were unreachable (a generic store error: EIO above).
    Fail,
    /// The call is refused (`PermissionDenied`: EACCES above).
    Deny,
    /// The call waits this long, then goes through.
    Delay(Duration),
    /// A put stores only its first bytes (this many at most), then fails like [`Fault::Fail`]:
    /// a writer that died or lost its connection mid-write, on a store whose writes are not
    /// atomic (a plain directory). Other calls it matches fail.
    Torn(usize),
}

/// Which calls get which fault: see the constructors.
#[derive(Clone, Debug)]
pub struct Rule {
    op: Op,
    prefix: Option<String>,
    remaining: Option<u64>,
    fault: Fault,
}

impl Rule {
    /// Every call of kind `op` gets `fault` (narrow it with [`Rule::under`], [`Rule::times`]).
    pub fn new(op: Op, fault: Fault) -> Rule {
        Rule { op, prefix: None, remaining: None, fault }
    }

    /// Calls of kind `op` fail.
    pub fn fail(op: Op) -> Rule {
        Rule::new(op, Fault::Fail)
    }

    /// Calls of kind `op` are refused.
    pub fn deny(op: Op) -> Rule {
        Rule::new(op, Fault::Deny)
    }

    /// Calls of kind `op` wait `by` first.
    pub fn delay(op: Op, by: Duration) -> Rule {
        Rule::new(op, Fault::Delay(by))
    }

    /// Puts store their first `keep` bytes, then fail.
    pub fn torn_put(keep: usize) -> Rule {
        Rule::new(Op::Put, Fault::Torn(keep))
    }

    /// Only calls on keys under `prefix` (for a listing, whose prefix is under it).
    pub fn under(mut self, prefix: &str) -> Rule {
        self.prefix = Some(prefix.to_string());
        self
    }

    /// Only the next `n` matching calls; the rule is spent after them.
    pub fn times(mut self, n: u64) -> Rule {
        self.remaining = Some(n);
        self
    }

    fn matches(&self, op: Op, key: &str) -> bool {
        self.op == op && self.remaining != Some(0) && self.prefix.as_deref().is_none_or(|p| key.starts_with(p))
    }
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    calls: HashMap<Op, u64>,
    injected: u64,
}

/// What to do with one call: the fault of the first rule that matches it, if any (counting
/// the call and, for a fault, the injection).
fn decide(state: &Mutex<State>, op: Op, key: &str) -> Option<Fault> {
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    *s.calls.entry(op).or_default() += 1;
    let rule = s.rules.iter_mut().find(|r| r.matches(op, key))?;
    if let Some(n) = &mut rule.remaining {
        *n -= 1;
    }
    let fault = rule.fault;
    s.injected += 1;
    Some(fault)
}

fn injected(op: Op, key: &str, fault: Fault) -> object_store::Error {
    let what = format!("injected fault: {op:?} of {key:?}: {fault:?}");
    match fault {
        Fault::Deny => object_store::Error::PermissionDenied { path: key.to_string(), source: what.into() },
        _ => object_store::Error::Generic { store: STORE, source: what.into() },
    }
}

/// Waits out a delay, or turns any other fault into the call's error.
async fn apply(op: Op, key: &str, fault: Option<Fault>) -> Result<()> {
    match fault {
        None => Ok(()),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            Ok(())
        }
        Some(f) => Err(injected(op, key, f)),
    }
}

/// What a listing's prefix is matched as: with a trailing `/` (paths drop it), so that a rule
/// under `v1/` matches a listing of `v1/` and one under `v1/chunks/` does not.
fn list_key(prefix: Option<&Path>) -> String {
    prefix.map(|p| format!("{}/", p.as_ref())).unwrap_or_default()
}

/// A store that injects faults into the calls of another.
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore").field("inner", &self.inner).finish()
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

impl FaultyStore {
    /// `inner`, with no faults until rules are added.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<FaultyStore> {
        Arc::new(FaultyStore { inner, state: Arc::default() })
    }

    /// A block store over this one (blocks uncompressed; see [`BlockStore::with_codec`]).
    pub fn block_store(self: &Arc<Self>, url: &str) -> BlockStore {
        BlockStore::from_store(self.clone(), url)
    }

    /// Adds a rule after those already there (the first rule that matches a call applies).
    pub fn inject(&self, rule: Rule) -> &Self {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).rules.push(rule);
        self
    }

    /// Removes every rule: the store works again.
    pub fn heal(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).rules.clear();
    }

    /// Calls of kind `op` made so far (faulty or not).
    pub fn calls(&self, op: Op) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).calls.get(&op).copied().unwrap_or(0)
    }

    /// Faults injected so far (delays included).
    pub fn injected(&self) -> u64 {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).injected
    }

    fn decide(&self, op: Op, key: &str) -> Option<Fault> {
        decide(&self.state, op, key)
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        let key = location.as_ref();
        match self.decide(Op::Put, key) {
            Some(Fault::Torn(keep)) => {
                let mut data = Bytes::from(payload);
                data.truncate(keep);
                self.inner.put_opts(location, PutPayload::from_bytes(data), opts).await?;
                Err(injected(Op::Put, key, Fault::Torn(keep)))
            }
            fault => {
                apply(Op::Put, key, fault).await?;
                self.inner.put_opts(location, payload, opts).await
            }
        }
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        apply(Op::Put, location.as_ref(), self.decide(Op::Put, location.as_ref())).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        apply(Op::Get, location.as_ref(), self.decide(Op::Get, location.as_ref())).await?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[std::ops::Range<u64>]) -> Result<Vec<Bytes>> {
        apply(Op::Get, location.as_ref(), self.decide(Op::Get, location.as_ref())).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let (inner, state) = (self.inner.clone(), self.state.clone());
        locations
            .and_then(move |location| {
                let (inner, state) = (inner.clone(), state.clone());
                async move {
                    let key = location.as_ref();
                    apply(Op::Delete, key, decide(&state, Op::Delete, key)).await?;
                    inner.delete(&location).await.map(|()| location)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let key = list_key(prefix);
        let fault = self.decide(Op::List, &key);
        let listing = self.inner.list(prefix);
        futures::stream::once(async move { apply(Op::List, &key, fault).await.map(|()| listing) }).try_flatten().boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let key = list_key(prefix);
        apply(Op::List, &key, self.decide(Op::List, &key)).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        apply(Op::Copy, from.as_ref(), self.decide(Op::Copy, from.as_ref())).await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        apply(Op::Copy, from.as_ref(), self.decide(Op::Copy, from.as_ref())).await?;
        self.inner.rename_opts(from, to, options).await
    }
}

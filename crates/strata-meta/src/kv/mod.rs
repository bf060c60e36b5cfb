//! The key-value transaction interface every metadata engine implements.
//!
//! The file system logic (in `fs.rs`) is written once against [`KvTxn`]; an engine only has to
//! provide ordered keys and serialisable transactions. This keeps SQLite and (later) PostgreSQL
//! behaviourally identical and lets one conformance suite cover both.

pub mod postgres;
pub mod sqlite;
pub mod timed;

use crate::error::Result;

/// Opens the engine a metadata URL names: `sqlite:///path/meta.db` (or a plain path) or
/// `postgres://user:password@host:port/database`.
pub fn open(url: &str) -> Result<std::sync::Arc<dyn KvEngine>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let pg: std::sync::Arc<dyn KvEngine> = std::sync::Arc::new(postgres::PostgresEngine::open(url)?);
        return Ok(std::sync::Arc::new(timed::Timed::new(pg)));
    }
    let path = url.strip_prefix("sqlite://").unwrap_or(url);
    if path.is_empty() {
        return Err(crate::error::MetaError::Invalid(format!("metadata URL {url:?} names no file")));
    }
    let lite: std::sync::Arc<dyn KvEngine> =
        std::sync::Arc::new(sqlite::SqliteEngine::open(std::path::Path::new(path))?);
    Ok(std::sync::Arc::new(timed::Timed::new(lite)))
}

/// Ordered key/value pairs returned by a range scan.
pub type KvPairs = Vec<(Vec<u8>, Vec<u8>)>;

/// One transaction: reads see a consistent snapshot, writes commit together or not at all.
pub trait KvTxn {
    /// Reads one key.
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Reads several keys, each answer at its key's place; engines override it to save the
    /// per-key cost of a statement (or a round trip).
    fn get_many(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(k)).collect()
    }
    /// Writes one key (insert or replace).
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Writes several keys (insert or replace); engines override it to save the per-key
    /// cost of a statement (or a round trip).
    fn put_many(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        pairs.iter().try_for_each(|(k, v)| self.put(k, v))
    }
    /// Deletes one key; deleting a missing key is not an error.
    fn delete(&mut self, key: &[u8]) -> Result<()>;
    /// Keys in `[start, end)` in ascending order, at most `limit` of them.
    fn scan(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<KvPairs>;
    /// Deletes every key in `[start, end)`, returning how many went.
    fn delete_range(&mut self, start: &[u8], end: &[u8]) -> Result<usize>;
    /// Whether a read costs a round trip and the transaction keeps what it read, so that
    /// reading keys the transaction will want anyway together with an earlier read saves
    /// round trips (PostgreSQL); an embedded engine's reads are cheap and not kept.
    fn caches_reads(&self) -> bool {
        false
    }
    /// Says that the reads from here on must see one point in time with those before (in a
    /// [`KvEngine::read_latest`] closure, which an engine may then run again as a
    /// transaction: the call fails).
    fn need_snapshot(&mut self) -> Result<()> {
        Ok(())
    }
    /// Sends `payload` on the engine's notification channel ([`NOTE_CHANNEL`]) if, and when,
    /// this transaction commits: listeners hear it in commit order with other transactions'.
    /// Engines without listeners (one process per store) ignore it.
    fn notify(&mut self, _payload: &str) {}
    /// [`KvTxn::notify`] of `item` in a note of items joined by commas after `prefix`: the
    /// items of one transaction under one prefix go out in as few notes as fit, once each
    /// (a transaction that frees thousands of slices sends a handful of notes, not thousands).
    fn notify_item(&mut self, _prefix: &str, _item: &str) {}
}

/// How long a note's payload may grow (PostgreSQL refuses 8,000 bytes or more).
pub const NOTE_MAX: usize = 7_000;

/// The notification channel of [`KvTxn::notify`] (PostgreSQL `LISTEN`/`NOTIFY`), shared with
/// the servers' relay of changes.
pub const NOTE_CHANNEL: &str = "strata_changes";

/// A closure run inside one transaction.
pub type TxnFn<'a> = &'a mut dyn FnMut(&mut dyn KvTxn) -> Result<()>;

/// A transactional engine. Closures may run more than once when the engine retries a conflict,
/// so they must not have side effects outside the transaction.
pub trait KvEngine: Send + Sync {
    /// Runs a read-only transaction.
    fn read(&self, f: TxnFn<'_>) -> Result<()>;
    /// Runs a read-only closure whose reads need not see one point in time: each may see what
    /// was committed when it runs (a lookup, attributes, a chunk's slices). Engines may run
    /// its statements without a transaction around them; a closure that needs one snapshot
    /// after all says so with [`KvTxn::need_snapshot`]. The default is [`KvEngine::read`].
    fn read_latest(&self, f: TxnFn<'_>) -> Result<()> {
        self.read(f)
    }
    /// Runs a read-write transaction. With `durable`, the commit (and every commit before it)
    /// is on stable storage when this returns; otherwise it survives a process crash but may be
    /// lost with the machine, like a local file system's unsynced metadata.
    fn write(&self, durable: bool, f: TxnFn<'_>) -> Result<()>;
    /// Runs a read-write transaction that other servers rely on once it returns (an open of
    /// an existing file, a lock): it must survive a crash of the engine's own process, which
    /// an engine's non-durable commits may not (PostgreSQL's asynchronous commits). The
    /// default is a non-durable [`KvEngine::write`], which an embedded engine keeps across
    /// any process crash.
    fn write_kept(&self, f: TxnFn<'_>) -> Result<()> {
        self.write(false, f)
    }
    /// Runs a long read-only transaction that sees one point in time from start to end, on a
    /// connection of its own, without holding up writers (dumps and checks of a live store).
    /// Never retried: the closure may have streamed what it read. Engines override it; the
    /// default is [`KvEngine::read`].
    fn read_snapshot(&self, f: TxnFn<'_>) -> Result<()> {
        self.read(f)
    }
    /// A short name for logs and status ("sqlite").
    fn name(&self) -> &'static str;
    /// How many times this process found the engine restarted (a separate database server
    /// that may have lost its last non-durable commits); embedded engines never do.
    fn restarts(&self) -> u64 {
        0
    }
}

/// The smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: no finite upper bound; 0xff repeated is past anything we store.
    vec![0xff; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"ab"), b"ac".to_vec());
        assert_eq!(prefix_end(&[1, 0xff]), vec![2]);
    }
}

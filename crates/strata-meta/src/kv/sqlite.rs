//! SQLite engine: one `kv` table in WAL mode, one writer connection and a small reader pool.
//!
//! Commits run with `synchronous=NORMAL` (durable against process crashes, one fsync per WAL
//! checkpoint). A durable commit switches the writer to `synchronous=FULL` for that commit, which
//! syncs the WAL and therefore every commit before it.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::{KvEngine, KvPairs, KvTxn, TxnFn};
use crate::error::{MetaError, Result};

const READERS: usize = 8;

/// The SQLite key-value engine.
pub struct SqliteEngine {
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    path: Option<std::path::PathBuf>,
}

impl SqliteEngine {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let writer = open_conn(Some(path))?;
        writer.execute_batch("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;")?;
        Ok(Self { writer: Mutex::new(writer), readers: Mutex::new(Vec::new()), path: Some(path.to_path_buf()) })
    }

    /// An in-memory database (one connection shared by readers and the writer), for tests.
    pub fn memory() -> Result<Self> {
        let writer = open_conn(None)?;
        writer.execute_batch("CREATE TABLE kv (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID;")?;
        Ok(Self { writer: Mutex::new(writer), readers: Mutex::new(Vec::new()), path: None })
    }

    fn take_reader(&self) -> Result<Option<Connection>> {
        let Some(path) = &self.path else { return Ok(None) };
        if let Some(c) = lock(&self.readers)?.pop() {
            return Ok(Some(c));
        }
        Ok(Some(open_conn(Some(path))?))
    }

    fn return_reader(&self, c: Connection) {
        if let Ok(mut pool) = self.readers.lock()
            && pool.len() < READERS
        {
            pool.push(c);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| MetaError::Engine("sqlite connection lock poisoned".into()))
}

fn open_conn(path: Option<&Path>) -> Result<Connection> {
    let conn = match path {
        Some(p) => Connection::open_with_flags(
            p,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?,
        None => Connection::open_in_memory()?,
    };
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536; \
         PRAGMA temp_store=MEMORY;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

struct SqliteTxn<'c> {
    conn: &'c Connection,
    /// Whether this transaction changed anything (so its commit touches the WAL).
    wrote: bool,
}

impl KvTxn for SqliteTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut st = self.conn.prepare_cached("SELECT v FROM kv WHERE k = ?1")?;
        Ok(st.query_row(params![key], |r| r.get::<_, Vec<u8>>(0)).optional()?)
    }

    fn get_many(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut st = self.conn.prepare_cached("SELECT v FROM kv WHERE k = ?1")?;
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            out.push(st.query_row(params![k], |r| r.get::<_, Vec<u8>>(0)).optional()?);
        }
        Ok(out)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut st = self.conn.prepare_cached("INSERT OR REPLACE INTO kv (k, v) VALUES (?1, ?2)")?;
        st.execute(params![key, value])?;
        self.wrote = true;
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        let mut st = self.conn.prepare_cached("DELETE FROM kv WHERE k = ?1")?;
        self.wrote |= st.execute(params![key])? > 0;
        Ok(())
    }

    fn scan(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<KvPairs> {
        let mut st = self.conn.prepare_cached("SELECT k, v FROM kv WHERE k >= ?1 AND k < ?2 ORDER BY k LIMIT ?3")?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = st.query_map(params![start, end, limit], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn delete_range(&mut self, start: &[u8], end: &[u8]) -> Result<usize> {
        let mut st = self.conn.prepare_cached("DELETE FROM kv WHERE k >= ?1 AND k < ?2")?;
        let n = st.execute(params![start, end])?;
        self.wrote |= n > 0;
        Ok(n)
    }
}

impl KvEngine for SqliteEngine {
    fn read(&self, f: TxnFn<'_>) -> Result<()> {
        // The writer's page cache is always current (nobody else writes), while a pooled
        // reader must reload every page it touches after any commit: so reads use the writer
        // whenever it is idle, and the pool only while it is busy.
        if let Ok(mut conn) = self.writer.try_lock() {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
            f(&mut SqliteTxn { conn: &tx, wrote: false })?;
            tx.finish()?;
            return Ok(());
        }
        match self.take_reader()? {
            Some(mut conn) => {
                let res = (|| {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
                    f(&mut SqliteTxn { conn: &tx, wrote: false })?;
                    tx.finish()?;
                    Ok(())
                })();
                self.return_reader(conn);
                res
            }
            None => {
                let mut conn = lock(&self.writer)?;
                let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
                f(&mut SqliteTxn { conn: &tx, wrote: false })?;
                tx.finish()?;
                Ok(())
            }
        }
    }

    fn write(&self, durable: bool, f: TxnFn<'_>) -> Result<()> {
        let mut conn = lock(&self.writer)?;
        if durable && self.path.is_some() {
            conn.prepare_cached("PRAGMA synchronous=FULL")?.execute([])?;
        }
        let res = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut txn = SqliteTxn { conn: &tx, wrote: false };
            f(&mut txn)?;
            if durable && !txn.wrote {
                // A commit with nothing written would not touch (or sync) the WAL.
                tx.prepare_cached("INSERT OR REPLACE INTO kv (k, v) VALUES (x'00', x'00')")?.execute([])?;
            }
            tx.commit()?;
            Ok(())
        })();
        if durable && self.path.is_some() {
            conn.prepare_cached("PRAGMA synchronous=NORMAL")?.execute([])?;
        }
        res
    }

    fn read_snapshot(&self, f: TxnFn<'_>) -> Result<()> {
        // A connection of its own: a WAL reader's transaction keeps the snapshot its first read
        // took while the writer goes on committing (only checkpoints wait for it).
        let Some(path) = &self.path else { return self.read(f) };
        let mut conn = open_conn(Some(path))?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        f(&mut SqliteTxn { conn: &tx, wrote: false })?;
        tx.finish()?;
        Ok(())
    }

    fn name(&self) -> &'static str {
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_scan_delete() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| MetaError::Engine(e.to_string()))?;
        let e = SqliteEngine::open(&dir.path().join("m.db"))?;
        e.write(false, &mut |t| {
            t.put(b"a1", b"x")?;
            t.put(b"a2", b"y")?;
            t.put(b"b1", b"z")
        })?;
        let mut got = Vec::new();
        e.read(&mut |t| {
            got = t.scan(b"a", b"b", 10)?;
            Ok(())
        })?;
        assert_eq!(got, vec![(b"a1".to_vec(), b"x".to_vec()), (b"a2".to_vec(), b"y".to_vec())]);
        e.write(true, &mut |t| t.delete_range(b"a", b"b").map(|n| assert_eq!(n, 2)))?;
        e.read(&mut |t| {
            assert_eq!(t.get(b"a1")?, None);
            assert_eq!(t.get(b"b1")?, Some(b"z".to_vec()));
            let keys = [b"b1".to_vec(), b"a1".to_vec(), b"b1".to_vec(), Vec::new()];
            assert_eq!(t.get_many(&keys)?, vec![Some(b"z".to_vec()), None, Some(b"z".to_vec()), None]);
            assert_eq!(t.get_many(&[])?, Vec::<Option<Vec<u8>>>::new());
            Ok(())
        })
    }

    #[test]
    fn failed_closure_rolls_back() -> Result<()> {
        let e = SqliteEngine::memory()?;
        let r = e.write(false, &mut |t| {
            t.put(b"k", b"v")?;
            Err(MetaError::Exists)
        });
        assert_eq!(r, Err(MetaError::Exists));
        e.read(&mut |t| {
            assert_eq!(t.get(b"k")?, None);
            Ok(())
        })
    }
}

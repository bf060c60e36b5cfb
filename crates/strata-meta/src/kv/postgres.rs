//! PostgreSQL engine: one `strata_kv` table, serializable transactions retried on conflict, a
//! small pool of connections. Several `strata server` processes can share one database.
//!
//! Every commit is durable (PostgreSQL's own `synchronous_commit`), so `durable` needs nothing
//! extra here.

use std::sync::Mutex;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, IsolationLevel, NoTls, Transaction};

use super::{KvEngine, KvPairs, KvTxn, TxnFn};
use crate::error::{MetaError, Result};

/// Connections kept open for reuse.
const POOL: usize = 16;
/// Attempts of a transaction that keeps hitting serialization conflicts.
const ATTEMPTS: usize = 64;

/// Schema migrations, applied in order at start; the version is kept in `strata_schema`.
const MIGRATIONS: &[&str] = &["CREATE TABLE IF NOT EXISTS strata_kv (k BYTEA PRIMARY KEY, v BYTEA NOT NULL)"];

/// The PostgreSQL key-value engine.
pub struct PostgresEngine {
    url: String,
    pool: Mutex<Vec<Client>>,
}

fn engine_err(what: &str, e: postgres::Error) -> MetaError {
    // The error's Display is only "db error": the server's message, detail and code are in
    // its `DbError`, and an operator needs them.
    match e.as_db_error() {
        Some(db) => {
            let detail = db.detail().map(|d| format!(" ({d})")).unwrap_or_default();
            MetaError::Engine(format!(
                "postgres {what}: {} {}{detail} [{}]",
                db.severity(),
                db.message(),
                db.code().code()
            ))
        }
        None => MetaError::Engine(format!("postgres {what}: {e}")),
    }
}

fn retryable(e: &postgres::Error) -> bool {
    matches!(e.code(), Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
        || e.is_closed()
}

impl PostgresEngine {
    /// Connects to `url` (`postgres://user:pass@host:port/db`) and applies migrations.
    pub fn open(url: &str) -> Result<Self> {
        outside_runtime(|| Self::open_here(url))
    }

    fn open_here(url: &str) -> Result<Self> {
        let e = PostgresEngine { url: url.to_string(), pool: Mutex::new(Vec::new()) };
        let mut c = e.connect()?;
        c.batch_execute("CREATE TABLE IF NOT EXISTS strata_schema (version INT NOT NULL)")
            .map_err(|err| engine_err("create schema table", err))?;
        // One migrator at a time when several servers start together.
        let mut tx = c.transaction().map_err(|err| engine_err("begin migration", err))?;
        tx.batch_execute("LOCK TABLE strata_schema IN EXCLUSIVE MODE").map_err(|err| engine_err("lock schema", err))?;
        let row =
            tx.query_opt("SELECT version FROM strata_schema", &[]).map_err(|err| engine_err("read schema", err))?;
        let have: i32 = match row {
            Some(r) => r.get(0),
            None => {
                tx.execute("INSERT INTO strata_schema (version) VALUES (0)", &[])
                    .map_err(|err| engine_err("init schema", err))?;
                0
            }
        };
        if have > MIGRATIONS.len() as i32 {
            // Written by a newer Strata: its tables may mean something this build misreads.
            return Err(MetaError::NewerStore {
                what: "PostgreSQL tables",
                found: have as u32,
                supported: MIGRATIONS.len() as u32,
            });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(have.max(0) as usize) {
            tx.batch_execute(m).map_err(|err| engine_err(&format!("migration {}", i + 1), err))?;
        }
        tx.execute("UPDATE strata_schema SET version = $1", &[&(MIGRATIONS.len() as i32)])
            .map_err(|err| engine_err("record schema version", err))?;
        tx.commit().map_err(|err| engine_err("commit migration", err))?;
        e.put_back(c);
        Ok(e)
    }

    fn connect(&self) -> Result<Client> {
        let mut cfg: postgres::Config =
            self.url.parse().map_err(|e| MetaError::Engine(format!("bad PostgreSQL URL: {e}")))?;
        cfg.connect_timeout(Duration::from_secs(10));
        cfg.connect(NoTls).map_err(|e| engine_err("connect", e))
    }

    fn take(&self) -> Result<Client> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        match pooled {
            Some(c) if !c.is_closed() => Ok(c),
            _ => self.connect(),
        }
    }

    fn put_back(&self, c: Client) {
        if let Ok(mut p) = self.pool.lock()
            && p.len() < POOL
            && !c.is_closed()
        {
            p.push(c);
        }
    }

    fn run(&self, read_only: bool, f: TxnFn<'_>) -> Result<()> {
        let mut delay = Duration::from_millis(1);
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let mut client = match self.take() {
                Ok(c) => c,
                Err(e) => {
                    // The database may be restarting: wait a little and reconnect.
                    last = Some(e);
                    super::timed::metrics("postgres").restarts.inc();
                    std::thread::sleep(delay.max(Duration::from_millis(100)));
                    delay = (delay * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let outcome = (|| {
                let tx = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::Serializable)
                    .read_only(read_only)
                    .start()?;
                let mut txn = PgTxn { tx, failed: None };
                let res = f(&mut txn);
                if let Some(e) = txn.failed.take() {
                    return Err(e);
                }
                match res {
                    Ok(()) => {
                        txn.tx.commit()?;
                        Ok(Ok(()))
                    }
                    Err(e) => Ok(Err(e)),
                }
            })();
            match outcome {
                Ok(r) => {
                    self.put_back(client);
                    return r;
                }
                Err(e) if retryable(&e) => {
                    let m = super::timed::metrics("postgres");
                    m.restarts.inc();
                    if e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) {
                        m.conflicts.inc();
                    }
                    if !client.is_closed() {
                        self.put_back(client);
                    }
                    last = Some(engine_err("transaction", e));
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
                Err(e) => return Err(engine_err("transaction", e)),
            }
        }
        Err(last.unwrap_or_else(|| MetaError::Engine("postgres: transaction kept conflicting".into())))
    }
}

impl Drop for PostgresEngine {
    fn drop(&mut self) {
        // A `postgres::Client` closes itself by blocking on its own runtime, which panics when
        // the engine goes away inside a tokio runtime (a server shutting down): close the
        // pooled connections on a plain thread.
        let clients = self.pool.get_mut().map(std::mem::take).unwrap_or_default();
        if !clients.is_empty() {
            let _ = std::thread::spawn(move || drop(clients)).join();
        }
    }
}

struct PgTxn<'a> {
    tx: Transaction<'a>,
    /// A database error inside the closure: the transaction is aborted and must be retried or
    /// reported as such, not as the closure's own error.
    failed: Option<postgres::Error>,
}

impl PgTxn<'_> {
    fn note(&mut self, e: postgres::Error) -> MetaError {
        let msg = e.to_string();
        self.failed = Some(e);
        MetaError::Engine(format!("postgres query: {msg}"))
    }
}

impl KvTxn for PgTxn<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.tx.query_opt("SELECT v FROM strata_kv WHERE k = $1", &[&key]) {
            Ok(r) => Ok(r.map(|r| r.get(0))),
            Err(e) => Err(self.note(e)),
        }
    }

    fn get_many(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        // One round trip: a listing's attributes would otherwise cost one per entry.
        let rows = match self.tx.query("SELECT k, v FROM strata_kv WHERE k = ANY($1)", &[&keys]) {
            Ok(rows) => rows,
            Err(e) => return Err(self.note(e)),
        };
        let found: std::collections::HashMap<Vec<u8>, Vec<u8>> =
            rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
        // A key may be asked for twice (two names of one inode).
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        match self.tx.execute(
            "INSERT INTO strata_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
            &[&key, &value],
        ) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.note(e)),
        }
    }

    fn put_many(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        // One round trip for the lot (a load's batch would otherwise cost one per record).
        let (ks, vs): (Vec<&[u8]>, Vec<&[u8]>) = pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).unzip();
        match self.tx.execute(
            "INSERT INTO strata_kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
             ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
            &[&ks, &vs],
        ) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.note(e)),
        }
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        match self.tx.execute("DELETE FROM strata_kv WHERE k = $1", &[&key]) {
            Ok(_) => Ok(()),
            Err(e) => Err(self.note(e)),
        }
    }

    fn scan(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<KvPairs> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        match self
            .tx
            .query("SELECT k, v FROM strata_kv WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3", &[&start, &end, &limit])
        {
            Ok(rows) => Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect()),
            Err(e) => Err(self.note(e)),
        }
    }

    fn delete_range(&mut self, start: &[u8], end: &[u8]) -> Result<usize> {
        match self.tx.execute("DELETE FROM strata_kv WHERE k >= $1 AND k < $2", &[&start, &end]) {
            Ok(n) => Ok(n as usize),
            Err(e) => Err(self.note(e)),
        }
    }
}

/// Runs `f`, which drives the `postgres` crate's own runtime, so that it works when called from
/// inside an async runtime too (that crate's `block_on` panics there): on a multi-threaded
/// runtime the calling thread leaves it for the duration (`block_in_place`).
fn outside_runtime<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Err(_) => f(),
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        Ok(_) => Err(MetaError::Engine(
            "the PostgreSQL engine cannot run on a single-threaded async runtime's thread; use spawn_blocking".into(),
        )),
    }
}

impl KvEngine for PostgresEngine {
    fn read(&self, f: TxnFn<'_>) -> Result<()> {
        outside_runtime(|| self.run(true, f))
    }

    fn write(&self, _durable: bool, f: TxnFn<'_>) -> Result<()> {
        outside_runtime(|| self.run(false, f))
    }

    fn read_snapshot(&self, f: TxnFn<'_>) -> Result<()> {
        outside_runtime(|| {
            let mut client = self.take()?;
            // SERIALIZABLE READ ONLY DEFERRABLE (as pg_dump --serializable-deferrable): it waits
            // for a snapshot no concurrent writer can contradict, then runs without predicate
            // locks, so it can neither fail nor make writers fail however long it lasts.
            let res = (|| {
                let tx = client
                    .build_transaction()
                    .isolation_level(IsolationLevel::Serializable)
                    .read_only(true)
                    .deferrable(true)
                    .start()
                    .map_err(|e| engine_err("begin snapshot", e))?;
                let mut txn = PgTxn { tx, failed: None };
                let res = f(&mut txn);
                if let Some(e) = txn.failed.take() {
                    return Err(engine_err("snapshot read", e));
                }
                res?;
                txn.tx.commit().map_err(|e| engine_err("end snapshot", e))
            })();
            res?;
            self.put_back(client);
            Ok(())
        })
    }

    fn name(&self) -> &'static str {
        "postgres"
    }
}

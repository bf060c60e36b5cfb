//! PostgreSQL engine: one `strata_kv` table, serializable transactions retried on conflict, a
//! small pool of connections. Several `strata server` processes can share one database.
//!
//! Commits are synchronous (on disk when they return) except those of lazy writes
//! (`synchronous_commit = off`), which a crash of PostgreSQL itself may lose: every new
//! connection reads the database's start time, so a restart is noticed
//! ([`KvEngine::restarts`]) and what rests on those commits can be recorded again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::{Client, NoTls, Statement};

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
    pool: Mutex<Vec<Conn>>,
    /// The database's start time as a new connection last saw it.
    started: Mutex<Option<String>>,
    /// How many times a new connection found the database started anew.
    restarts: AtomicU64,
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
        let e = PostgresEngine {
            url: url.to_string(),
            pool: Mutex::new(Vec::new()),
            started: Mutex::new(None),
            restarts: AtomicU64::new(0),
        };
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
        e.put_back(Conn { client: c, stmts: None });
        Ok(e)
    }

    fn connect(&self) -> Result<Client> {
        let mut cfg: postgres::Config =
            self.url.parse().map_err(|e| MetaError::Engine(format!("bad PostgreSQL URL: {e}")))?;
        cfg.connect_timeout(Duration::from_secs(10));
        let mut c = cfg.connect(NoTls).map_err(|e| engine_err("connect", e))?;
        let row = c
            .query_one("SELECT pg_postmaster_start_time()::text", &[])
            .map_err(|e| engine_err("read the database's start time", e))?;
        self.note_start(row.get(0));
        Ok(c)
    }

    /// Counts a restart when the database's start time differs from the one seen before.
    fn note_start(&self, at: String) {
        let Ok(mut seen) = self.started.lock() else { return };
        if seen.as_ref().is_some_and(|s| *s != at) {
            self.restarts.fetch_add(1, Ordering::Relaxed);
        }
        *seen = Some(at);
    }

    fn take(&self) -> Result<Conn> {
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        match pooled {
            Some(c) if !c.client.is_closed() => Ok(c),
            _ => Ok(Conn { client: self.connect()?, stmts: None }),
        }
    }

    fn put_back(&self, c: Conn) {
        if let Ok(mut p) = self.pool.lock()
            && p.len() < POOL
            && !c.client.is_closed()
        {
            p.push(c);
        }
    }

    /// Runs `f` as a transaction of kind `mode`, retried on serialization conflicts and lost
    /// connections.
    fn run(&self, mut mode: Mode, f: TxnFn<'_>) -> Result<()> {
        let mut delay = Duration::from_millis(1);
        let mut last = None;
        let mut attempt = 0;
        while attempt < ATTEMPTS {
            attempt += 1;
            let mut conn = match self.take() {
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
            let outcome = conn.attempt(mode, f);
            match outcome {
                Ok(Attempt::Done(r)) => {
                    self.put_back(conn);
                    return r;
                }
                Ok(Attempt::Escalate) => {
                    // Reads that turned out to need one snapshot: again as a transaction, at once.
                    self.put_back(conn);
                    mode = Mode::Read;
                    attempt -= 1;
                }
                Err(e) if retryable(&e) => {
                    let m = super::timed::metrics("postgres");
                    m.restarts.inc();
                    if e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE) {
                        m.conflicts.inc();
                    }
                    if !conn.client.is_closed() {
                        self.put_back(conn);
                    }
                    last = Some(engine_err("transaction", e));
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
                Err(e) => {
                    if !conn.client.is_closed() {
                        self.put_back(conn);
                    }
                    return Err(engine_err("transaction", e));
                }
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
        let conns = self.pool.get_mut().map(std::mem::take).unwrap_or_default();
        if !conns.is_empty() {
            let _ = std::thread::spawn(move || drop(conns)).join();
        }
    }
}

/// What kind of transaction a closure runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Reads that need not see one point in time: each statement on its own, without BEGIN
    /// and COMMIT; [`KvTxn::need_snapshot`] turns it into [`Mode::Read`].
    Latest,
    /// A read of several statements: one snapshot for all (`REPEATABLE READ READ ONLY`).
    Read,
    /// A read-write transaction (`SERIALIZABLE`) whose commit, and every one before it, is on
    /// disk when it returns.
    Write,
    /// A read-write transaction whose own writes are on disk when it returns (nothing to do
    /// when it wrote nothing).
    Kept,
    /// A read-write transaction whose commit returns before it is on disk
    /// (`synchronous_commit = off`): a crash of the database's machine or process may lose
    /// the last few, never part of one, and the next synchronous commit flushes them all.
    Lazy,
    /// A long read of one point in time that neither fails nor holds up writers.
    Snapshot,
}

impl Mode {
    fn begin(self) -> &'static str {
        match self {
            Mode::Latest | Mode::Read => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            Mode::Write | Mode::Kept => "BEGIN ISOLATION LEVEL SERIALIZABLE",
            Mode::Lazy => "BEGIN ISOLATION LEVEL SERIALIZABLE; SET LOCAL synchronous_commit = off",
            // As pg_dump --serializable-deferrable: it waits for a snapshot no concurrent
            // writer can contradict, then runs without predicate locks.
            Mode::Snapshot => "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE",
        }
    }
}

/// How one attempt of a transaction ended.
enum Attempt {
    /// Committed (or the closure's own error, rolled back).
    Done(Result<()>),
    /// Reads of [`Mode::Latest`] need a transaction.
    Escalate,
}

/// The statements every connection prepares once, so a call is one Bind/Execute round trip
/// instead of a Parse/Describe round trip more.
struct Statements {
    get: Statement,
    get_many: Statement,
    scan: Statement,
    delete_range: Statement,
    put_many: Statement,
    delete_many: Statement,
}

/// A pooled connection and its prepared statements.
struct Conn {
    client: Client,
    stmts: Option<Statements>,
}

/// A statement that writes WAL and changes nothing, committed synchronously (see
/// [`Conn::commit`]).
const FLUSH: &str = "UPDATE strata_kv SET v = v WHERE k = decode('21736368656d61', 'hex')";

/// Values this large or more are flushed as binary parameters rather than inline in the text
/// of the commit (hex doubles them, and the server parses the text).
const INLINE_BYTES: usize = 32 * 1024;

impl Conn {
    fn prepared(&mut self) -> std::result::Result<&Statements, postgres::Error> {
        if self.stmts.is_none() {
            let c = &mut self.client;
            self.stmts = Some(Statements {
                get: c.prepare("SELECT k, v FROM strata_kv WHERE k = $1")?,
                get_many: c.prepare("SELECT k, v FROM strata_kv WHERE k = ANY($1)")?,
                scan: c.prepare("SELECT k, v FROM strata_kv WHERE k >= $1 AND k < $2 ORDER BY k LIMIT $3")?,
                delete_range: c.prepare("DELETE FROM strata_kv WHERE k >= $1 AND k < $2 RETURNING k, v")?,
                put_many: c.prepare(
                    "INSERT INTO strata_kv (k, v) SELECT * FROM unnest($1::bytea[], $2::bytea[]) \
                     ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
                )?,
                delete_many: c.prepare("DELETE FROM strata_kv WHERE k = ANY($1)")?,
            });
        }
        Ok(self.stmts.as_ref().expect("prepared above"))
    }

    /// One attempt of `f` in `mode`: `Err` is a database error (the caller retries or reports
    /// it), the transaction already rolled back.
    fn attempt(&mut self, mode: Mode, f: TxnFn<'_>) -> std::result::Result<Attempt, postgres::Error> {
        self.prepared()?;
        let mut txn = PgTxn {
            conn: self,
            mode,
            begun: false,
            writes: BTreeMap::new(),
            seen: HashMap::new(),
            failed: None,
            statements: 0,
            escalate: false,
            notes: Vec::new(),
            items: BTreeMap::new(),
        };
        let res = f(&mut txn);
        let (begun, escalate, failed) = (txn.begun, txn.escalate, txn.failed.take());
        let writes = std::mem::take(&mut txn.writes);
        let mut notes = std::mem::take(&mut txn.notes);
        for (prefix, items) in std::mem::take(&mut txn.items) {
            let mut note = prefix.clone();
            for item in items {
                if note.len() > prefix.len() && note.len() + 1 + item.len() > super::NOTE_MAX {
                    notes.push(std::mem::replace(&mut note, prefix.clone()));
                }
                if note.len() > prefix.len() {
                    note.push(',');
                }
                note.push_str(&item);
            }
            notes.push(note);
        }
        if escalate {
            return Ok(Attempt::Escalate);
        }
        if let Some(e) = failed {
            if begun {
                self.rollback();
            }
            return Err(e);
        }
        match res {
            Ok(()) => match self.commit(mode, begun, &writes, &notes) {
                Ok(()) => Ok(Attempt::Done(Ok(()))),
                Err(e) => {
                    self.rollback();
                    Err(e)
                }
            },
            Err(e) => {
                if begun {
                    self.rollback();
                }
                Ok(Attempt::Done(Err(e)))
            }
        }
    }

    /// Ends a transaction: the buffered writes and COMMIT in one round trip where they are
    /// small; nothing at all for a transaction that never reached the database.
    fn commit(
        &mut self,
        mode: Mode,
        begun: bool,
        writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
        notes: &[String],
    ) -> std::result::Result<(), postgres::Error> {
        // Notifications go out at the COMMIT that follows them, or not at all.
        let mut notify = String::new();
        for n in notes {
            notify.push_str("SELECT pg_notify('");
            notify.push_str(super::NOTE_CHANNEL);
            notify.push_str("', '");
            notify.push_str(&n.replace('\'', "''"));
            notify.push_str("'); ");
        }
        if writes.is_empty() && !notify.is_empty() {
            let begin = if begun { String::new() } else { format!("{}; ", mode.begin()) };
            let flush = if mode == Mode::Write { format!("; {FLUSH}") } else { String::new() };
            return self.client.batch_execute(&format!("{begin}{notify}COMMIT{flush}"));
        }
        if writes.is_empty() {
            match (begun, mode == Mode::Write) {
                (false, false) => {}
                (true, false) => self.client.batch_execute("COMMIT")?,
                // A synchronous commit that wrote nothing writes no WAL and flushes nothing:
                // rewrite the schema mark as it is, so that every earlier (lazy) commit is
                // on disk when this returns.
                (false, true) => self.client.batch_execute(FLUSH)?,
                (true, true) => self.client.batch_execute(&format!("COMMIT; {FLUSH}"))?,
            }
            return Ok(());
        }
        let mut sql = String::new();
        if !begun {
            sql.push_str(mode.begin());
            sql.push_str("; ");
        }
        let big = writes.values().flatten().map(Vec::len).sum::<usize>() >= INLINE_BYTES;
        if big {
            if !begun {
                self.client.batch_execute(mode.begin())?;
            }
            let (puts, dels) = split_writes(writes);
            let stmts = self.prepared()?;
            let (put_many, delete_many) = (stmts.put_many.clone(), stmts.delete_many.clone());
            if !puts.is_empty() {
                let (ks, vs): (Vec<&[u8]>, Vec<&[u8]>) = puts.into_iter().unzip();
                self.client.execute(&put_many, &[&ks, &vs])?;
            }
            if !dels.is_empty() {
                self.client.execute(&delete_many, &[&dels])?;
            }
            self.client.batch_execute(&format!("{notify}COMMIT"))?;
            return Ok(());
        }
        let (puts, dels) = split_writes(writes);
        if !puts.is_empty() {
            sql.push_str("INSERT INTO strata_kv (k, v) VALUES ");
            for (i, (k, v)) in puts.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                push_bytea(&mut sql, k);
                sql.push(',');
                push_bytea(&mut sql, v);
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v; ");
        }
        if !dels.is_empty() {
            sql.push_str("DELETE FROM strata_kv WHERE k IN (");
            for (i, k) in dels.iter().enumerate() {
                if i > 0 {
                    sql.push(',');
                }
                push_bytea(&mut sql, k);
            }
            sql.push_str("); ");
        }
        sql.push_str(&notify);
        sql.push_str("COMMIT");
        self.client.batch_execute(&sql)
    }

    fn rollback(&mut self) {
        if !self.client.is_closed() {
            // A failed ROLLBACK leaves a connection that is closed or broken; the pool drops
            // closed ones and the next statement on a broken one fails and is retried.
            let _ = self.client.batch_execute("ROLLBACK");
        }
    }
}

/// The puts and deletes of a write buffer.
#[allow(clippy::type_complexity)]
fn split_writes(writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> (Vec<(&[u8], &[u8])>, Vec<&[u8]>) {
    let mut puts = Vec::new();
    let mut dels = Vec::new();
    for (k, v) in writes {
        match v {
            Some(v) => puts.push((k.as_slice(), v.as_slice())),
            None => dels.push(k.as_slice()),
        }
    }
    (puts, dels)
}

/// Appends `b` as an SQL bytea expression (hex digits only: nothing to escape).
fn push_bytea(sql: &mut String, b: &[u8]) {
    use std::fmt::Write;
    sql.push_str("decode('");
    for x in b {
        let _ = write!(sql, "{x:02x}");
    }
    sql.push_str("','hex')");
}

/// A bytea in PostgreSQL's text output (`\x` and hex digits).
fn unhex(s: &str) -> Result<Vec<u8>> {
    let h = s.strip_prefix("\\x").ok_or_else(|| MetaError::Engine(format!("postgres: bytea text {s:.16}")))?;
    let h = h.as_bytes();
    if !h.len().is_multiple_of(2) {
        return Err(MetaError::Engine("postgres: odd bytea text".into()));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(MetaError::Engine("postgres: bytea text is not hex".into())),
    };
    h.chunks(2).map(|p| Ok(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

/// A read statement of a transaction.
enum Query<'p> {
    Get(&'p [u8]),
    Many(&'p [Vec<u8>]),
    Scan(&'p [u8], &'p [u8], i64),
    DeleteRange(&'p [u8], &'p [u8]),
}

impl Query<'_> {
    /// The statement as text with its arguments inline, to follow BEGIN in one round trip.
    fn text(&self) -> String {
        let mut sql = String::from("SELECT k, v FROM strata_kv WHERE ");
        match self {
            Query::Get(k) => {
                sql.push_str("k = ");
                push_bytea(&mut sql, k);
            }
            Query::Many(keys) => {
                sql.push_str("k IN (");
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        sql.push(',');
                    }
                    push_bytea(&mut sql, k);
                }
                sql.push(')');
            }
            Query::Scan(start, end, limit) => {
                sql.push_str("k >= ");
                push_bytea(&mut sql, start);
                sql.push_str(" AND k < ");
                push_bytea(&mut sql, end);
                sql.push_str(&format!(" ORDER BY k LIMIT {limit}"));
            }
            Query::DeleteRange(start, end) => {
                sql = String::from("DELETE FROM strata_kv WHERE k >= ");
                push_bytea(&mut sql, start);
                sql.push_str(" AND k < ");
                push_bytea(&mut sql, end);
                sql.push_str(" RETURNING k, v");
            }
        }
        sql
    }
}

/// One transaction on a connection. Writes are kept here (reads see them) and reach the
/// database with the COMMIT, in its round trip; BEGIN goes with the first read.
struct PgTxn<'a> {
    conn: &'a mut Conn,
    mode: Mode,
    /// BEGIN was sent.
    begun: bool,
    /// Buffered writes: a value, or `None` for a deletion.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Values read (`None`: absent): the transaction's snapshot does not change, so a key is
    /// read from the database once.
    seen: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// A database error inside the closure: the transaction is aborted and must be retried or
    /// reported as such, not as the closure's own error.
    failed: Option<postgres::Error>,
    /// Statements sent.
    statements: usize,
    /// Reads of [`Mode::Latest`] asked for one snapshot too late.
    escalate: bool,
    /// Notifications sent with the COMMIT ([`KvTxn::notify`]).
    notes: Vec<String>,
    /// Items of notes by prefix ([`KvTxn::notify_item`]), joined at the COMMIT.
    items: BTreeMap<String, std::collections::BTreeSet<String>>,
}

impl PgTxn<'_> {
    fn note(&mut self, e: postgres::Error) -> MetaError {
        let msg = e.to_string();
        self.failed = Some(e);
        MetaError::Engine(format!("postgres query: {msg}"))
    }

    /// Runs a read statement: the first of a transaction together with BEGIN (as text), the
    /// others as prepared statements; those of [`Mode::Latest`] each on its own.
    fn query(&mut self, q: Query<'_>) -> Result<KvPairs> {
        if self.failed.is_some() || self.escalate {
            return Err(MetaError::Engine("postgres: statement after a failed one".into()));
        }
        if self.mode == Mode::Latest {
            self.statements += 1;
            return self.prepared_query(&q);
        }
        self.statements += 1;
        if !self.begun {
            let sql = format!("{}; {}", self.mode.begin(), q.text());
            self.begun = true;
            let msgs = match self.conn.client.simple_query(&sql) {
                Ok(m) => m,
                Err(e) => return Err(self.note(e)),
            };
            let mut out = Vec::new();
            for m in msgs {
                if let postgres::SimpleQueryMessage::Row(r) = m {
                    let k = unhex(r.get(0).unwrap_or_default())?;
                    let v = unhex(r.get(1).unwrap_or_default())?;
                    out.push((k, v));
                }
            }
            return Ok(out);
        }
        self.prepared_query(&q)
    }

    fn prepared_query(&mut self, q: &Query<'_>) -> Result<KvPairs> {
        let stmts = match self.conn.prepared() {
            Ok(s) => s,
            Err(e) => return Err(self.note(e)),
        };
        let res = match q {
            Query::Get(k) => {
                let st = stmts.get.clone();
                self.conn.client.query(&st, &[k])
            }
            Query::Many(keys) => {
                let st = stmts.get_many.clone();
                self.conn.client.query(&st, &[keys])
            }
            Query::Scan(start, end, limit) => {
                let st = stmts.scan.clone();
                self.conn.client.query(&st, &[start, end, limit])
            }
            Query::DeleteRange(start, end) => {
                let st = stmts.delete_range.clone();
                self.conn.client.query(&st, &[start, end])
            }
        };
        match res {
            Ok(rows) => Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect()),
            Err(e) => Err(self.note(e)),
        }
    }

    fn check_writable(&self) -> Result<()> {
        match self.mode {
            Mode::Write | Mode::Kept | Mode::Lazy => Ok(()),
            _ => Err(MetaError::Engine("postgres: a write in a read-only transaction".into())),
        }
    }
}

impl KvTxn for PgTxn<'_> {
    fn caches_reads(&self) -> bool {
        true
    }

    fn notify(&mut self, payload: &str) {
        if !self.notes.iter().any(|n| n == payload) {
            self.notes.push(payload.to_string());
        }
    }

    fn notify_item(&mut self, prefix: &str, item: &str) {
        self.items.entry(prefix.to_string()).or_default().insert(item.to_string());
    }

    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(v) = self.writes.get(key).or_else(|| self.seen.get(key)) {
            return Ok(v.clone());
        }
        let v = self.query(Query::Get(key))?.pop().map(|(_, v)| v);
        self.seen.insert(key.to_vec(), v.clone());
        Ok(v)
    }

    fn get_many(&mut self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        // One round trip: a listing's attributes would otherwise cost one per entry.
        let mut ask: Vec<Vec<u8>> =
            keys.iter().filter(|k| !self.writes.contains_key(*k) && !self.seen.contains_key(*k)).cloned().collect();
        // A key may be asked for twice (two names of one inode).
        ask.sort();
        ask.dedup();
        if !ask.is_empty() {
            let mut found: HashMap<Vec<u8>, Vec<u8>> = self.query(Query::Many(&ask))?.into_iter().collect();
            for k in ask {
                let v = found.remove(&k);
                self.seen.insert(k, v);
            }
        }
        Ok(keys.iter().map(|k| self.writes.get(k).or_else(|| self.seen.get(k)).cloned().flatten()).collect())
    }

    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.writes.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    fn put_many(&mut self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        self.check_writable()?;
        for (k, v) in pairs {
            self.writes.insert(k.clone(), Some(v.clone()));
        }
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.writes.insert(key.to_vec(), None);
        Ok(())
    }

    fn scan(&mut self, start: &[u8], end: &[u8], limit: usize) -> Result<KvPairs> {
        if start >= end || limit == 0 {
            return Ok(Vec::new());
        }
        let mine: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            self.writes.range(start.to_vec()..end.to_vec()).map(|(k, v)| (k.clone(), v.clone())).collect();
        // Each buffered deletion hides at most one stored row: ask for that many more.
        let hidden = mine.iter().filter(|(_, v)| v.is_none()).count();
        let want = i64::try_from(limit.saturating_add(hidden)).unwrap_or(i64::MAX);
        let stored = self.query(Query::Scan(start, end, want))?;
        if mine.is_empty() {
            return Ok(stored);
        }
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = stored.into_iter().collect();
        for (k, v) in mine {
            match v {
                Some(v) => merged.insert(k, v),
                None => merged.remove(&k),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    fn need_snapshot(&mut self) -> Result<()> {
        if self.mode != Mode::Latest {
            return Ok(());
        }
        if self.statements == 0 {
            self.mode = Mode::Read;
            return Ok(());
        }
        self.escalate = true;
        Err(MetaError::Engine("postgres: reads that need one snapshot".into()))
    }

    fn delete_range(&mut self, start: &[u8], end: &[u8]) -> Result<usize> {
        self.check_writable()?;
        if start >= end {
            return Ok(0);
        }
        // Stored rows go now (one round trip, as a scan would cost); buffered writes in the
        // range are dropped.
        let stored = self.query(Query::DeleteRange(start, end))?;
        let mine: Vec<(Vec<u8>, bool)> =
            self.writes.range(start.to_vec()..end.to_vec()).map(|(k, v)| (k.clone(), v.is_some())).collect();
        let buffered: std::collections::HashSet<&[u8]> = mine.iter().map(|(k, _)| k.as_slice()).collect();
        let n = stored.iter().filter(|(k, _)| !buffered.contains(k.as_slice())).count()
            + mine.iter().filter(|(_, put)| *put).count();
        for (k, _) in &mine {
            self.writes.remove(k);
        }
        self.seen.retain(|k, _| k.as_slice() < start || k.as_slice() >= end);
        Ok(n)
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
        outside_runtime(|| self.run(Mode::Read, f))
    }

    fn read_latest(&self, f: TxnFn<'_>) -> Result<()> {
        outside_runtime(|| self.run(Mode::Latest, f))
    }

    fn write(&self, durable: bool, f: TxnFn<'_>) -> Result<()> {
        outside_runtime(|| self.run(if durable { Mode::Write } else { Mode::Lazy }, f))
    }

    fn write_kept(&self, f: TxnFn<'_>) -> Result<()> {
        outside_runtime(|| self.run(Mode::Kept, f))
    }

    fn read_snapshot(&self, f: TxnFn<'_>) -> Result<()> {
        // Never retried: the closure may have streamed what it read.
        outside_runtime(|| {
            let mut conn = self.take()?;
            let res = match conn.attempt(Mode::Snapshot, f) {
                Ok(Attempt::Done(r)) => r,
                Ok(Attempt::Escalate) => Err(MetaError::Engine("postgres: snapshot read escalated".into())),
                Err(e) => Err(engine_err("snapshot read", e)),
            };
            self.put_back(conn);
            res
        })
    }

    fn name(&self) -> &'static str {
        "postgres"
    }

    fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }
}

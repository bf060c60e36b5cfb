//! Metadata backup and restore: every record of the store as JSON lines, read from one
//! point in time of a live store ([`Meta::dump`]) and written into an empty store of either
//! engine ([`load`]).
//!
//! The format (version [`DUMP_VERSION`]), one JSON object per line:
//!
//! ```text
//! {"format":"strata-dump","version":1,"schema":1,"engine":"sqlite","created":1765051200}
//! {"t":"volume","k":"5600000001","v":"7b226964223a312c..."}
//! ...                                       one line per record, in key order
//! {"end":true,"records":1234}
//! ```
//!
//! Records are the store's own key-value pairs (key and value in lower-case hex), so a dump
//! holds everything the namespace is, whatever it is: inodes, entries, chunks, snapshots and
//! their saved versions, clones, data volumes, classes, scopes, policies, token hashes,
//! quotas, usage and id counters. `t` names the record's table (see [`table_name`]) for
//! people and tools reading a dump; a load does not need it. What live clients hold (sessions,
//! their open files and locks) is left out: it means nothing once they are gone. The trailer
//! tells a whole dump from a cut one.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{KvEngine, KvTxn};
use crate::meta::{Meta, SCHEMA_VERSION};

/// The `format` of a dump's header.
pub const DUMP_FORMAT: &str = "strata-dump";
/// The dump format this build writes and reads.
pub const DUMP_VERSION: u32 = 1;

/// Records read per scan of a dump, and written per transaction of a load: what bounds memory.
const PAGE: usize = 1000;
/// Journaled blocks read per scan of a dump (each up to `MAX_JOURNAL_BYTES`).
const JOURNAL_PAGE: usize = 16;
/// Most bytes of records a load writes per transaction.
const LOAD_BATCH_BYTES: usize = 8 << 20;

/// Marks a store a load is writing; a server refuses such a store, and a load clears it and
/// starts over.
pub const LOADING: &[u8] = b"!loading";

/// The first line of a dump.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DumpHeader {
    /// Always [`DUMP_FORMAT`].
    pub format: String,
    /// The dump format's version ([`DUMP_VERSION`]).
    pub version: u32,
    /// The schema version of the records ([`SCHEMA_VERSION`] of the writer).
    pub schema: u32,
    /// The engine dumped ("sqlite", "postgres").
    pub engine: String,
    /// When the dump's point in time was taken (Unix seconds).
    pub created: i64,
}

/// One record line.
#[derive(Serialize, Deserialize, Debug)]
struct RecordLine<'a> {
    t: &'a str,
    k: String,
    v: String,
}

/// Any line after the header: a record or the trailer.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct AnyLine {
    #[serde(default)]
    t: Option<String>,
    #[serde(default)]
    k: Option<String>,
    #[serde(default)]
    v: Option<String>,
    #[serde(default)]
    end: Option<bool>,
    #[serde(default)]
    records: Option<u64>,
}

/// What a dump or a load went through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DumpStats {
    /// Records written or read.
    pub records: u64,
    /// Bytes of keys and values.
    pub bytes: u64,
}

/// The table a record key belongs to, by its first byte.
pub fn table_name(key: &[u8]) -> &'static str {
    match key.first() {
        Some(b'A') => "inode",
        Some(b'D') => "entry",
        Some(b'C') => "chunk",
        Some(b'X') => "xattr",
        Some(b'L') => "symlink",
        Some(b'N') => "counter",
        Some(b'V') => "volume",
        Some(b'v') => "volume_name",
        Some(b'U') => "usage",
        Some(b'Q') => "volume_qos",
        Some(b'G') => "pending_slice",
        Some(b'R') => "slice_refs",
        Some(b'J') => "journaled_block",
        Some(b'O') => "unlinked_open",
        Some(b'T') => "token",
        Some(b'K') => "storage_class",
        Some(b'P') => "scope",
        Some(b'Y') => "policy",
        Some(b'W') => "snapshot",
        Some(b'w') => "snapshot_volume",
        Some(b'Z') => "saved_version",
        Some(b'z') => "version_index",
        Some(b'E') => "datavolume",
        Some(b'!') => "store",
        _ => "other",
    }
}

/// Whether a record is state of live clients (sessions, their opens and locks) or servers
/// (their presence records), or the SQLite engine's sync filler: left out of dumps.
fn is_client_state(key: &[u8]) -> bool {
    matches!(key.first(), Some(b'S' | b'H' | b'h' | b'F' | b'f' | b'I')) || key == [0u8] || key == LOADING
}

fn io_err(what: &str, e: impl std::fmt::Display) -> MetaError {
    MetaError::Engine(format!("{what}: {e}"))
}

impl Meta {
    /// Writes every record of the store, as one point in time, to `out` as JSON lines (each
    /// call one or more whole lines). Reads in pages inside one snapshot transaction, so
    /// memory stays bounded and writers are not held up. An error from `out` ends the dump.
    pub fn dump(&self, out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<DumpStats> {
        dump_engine(self.kv.as_ref(), out)
    }
}

/// [`Meta::dump`] of an engine.
pub fn dump_engine(kv: &dyn KvEngine, out: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<DumpStats> {
    let mut stats = DumpStats::default();
    let engine = kv.name();
    kv.read_snapshot(&mut |t: &mut dyn KvTxn| {
        // The whole body runs inside the snapshot; nothing is retried (see `read_snapshot`).
        stats = DumpStats::default();
        let header = DumpHeader {
            format: DUMP_FORMAT.into(),
            version: DUMP_VERSION,
            schema: schema_of(t)?,
            engine: engine.into(),
            created: crate::types::Timespec::now().sec,
        };
        let mut line = serde_json::to_vec(&header).map_err(|e| io_err("encode dump header", e))?;
        line.push(b'\n');
        out(&line)?;
        // Journaled blocks are large records (up to 256 KiB): read in small pages of their own.
        let journal_end = crate::kv::prefix_end(keys::JOURNAL_PREFIX);
        let ranges = [
            (Vec::new(), keys::JOURNAL_PREFIX.to_vec(), PAGE),
            (keys::JOURNAL_PREFIX.to_vec(), journal_end.clone(), JOURNAL_PAGE),
            (journal_end, vec![0xffu8], PAGE),
        ];
        let mut buf = Vec::with_capacity(256 << 10);
        for (mut from, end, limit) in ranges {
            loop {
                let page = t.scan(&from, &end, limit)?;
                let Some((last, _)) = page.last() else { break };
                from = last.clone();
                from.push(0);
                buf.clear();
                for (k, v) in &page {
                    if is_client_state(k) {
                        continue;
                    }
                    let rec = RecordLine { t: table_name(k), k: hex::encode(k), v: hex::encode(v) };
                    serde_json::to_writer(&mut buf, &rec).map_err(|e| io_err("encode dump record", e))?;
                    buf.push(b'\n');
                    stats.records += 1;
                    stats.bytes += (k.len() + v.len()) as u64;
                }
                out(&buf)?;
            }
        }
        let trailer = serde_json::json!({"end": true, "records": stats.records});
        let mut line = serde_json::to_vec(&trailer).map_err(|e| io_err("encode dump trailer", e))?;
        line.push(b'\n');
        out(&line)
    })?;
    Ok(stats)
}

fn schema_of(t: &mut dyn KvTxn) -> Result<u32> {
    match t.get(keys::SCHEMA)? {
        Some(v) => std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| MetaError::Corrupt("schema version record".into())),
        None => Ok(SCHEMA_VERSION),
    }
}

/// What an empty store may hold: the schema marker a server or an earlier load wrote, the
/// SQLite sync filler, and the mark of a load cut short.
fn ignorable_in_empty(key: &[u8]) -> bool {
    key == keys::SCHEMA || key == [0u8] || key == LOADING
}

/// Loads a dump read from `input` into the empty store at `url` (either engine). Refused
/// when the store holds any record (a server started on it already bootstraps some), or
/// when the dump is of a newer format or schema, malformed or cut short. A load that fails
/// leaves the store marked as loading: servers refuse it, and the next load starts over.
pub fn load(url: &str, input: &mut dyn BufRead) -> Result<DumpStats> {
    let kv = crate::kv::open(url)?;
    load_engine(kv.as_ref(), input)
}

/// [`load`] into an opened engine.
pub fn load_engine(kv: &dyn KvEngine, input: &mut dyn BufRead) -> Result<DumpStats> {
    let bad = |line: u64, why: String| MetaError::Invalid(format!("dump line {line}: {why}"));
    let mut line = String::new();
    let read_line = |input: &mut dyn BufRead, line: &mut String| -> Result<usize> {
        line.clear();
        input.read_line(line).map_err(|e| io_err("reading the dump", e))
    };
    if read_line(input, &mut line)? == 0 {
        return Err(MetaError::Invalid("the dump is empty".into()));
    }
    let header: DumpHeader =
        serde_json::from_str(line.trim_end()).map_err(|e| bad(1, format!("not a Strata dump header ({e})")))?;
    if header.format != DUMP_FORMAT {
        return Err(bad(1, format!("format {:?} is not {DUMP_FORMAT:?}", header.format)));
    }
    if header.version > DUMP_VERSION {
        return Err(MetaError::NewerStore { what: "dump format", found: header.version, supported: DUMP_VERSION });
    }
    if header.schema > SCHEMA_VERSION {
        return Err(MetaError::NewerStore { what: "schema", found: header.schema, supported: SCHEMA_VERSION });
    }
    // Empty, or a load cut short: then it starts over.
    let mut found: Option<Vec<u8>> = None;
    let mut interrupted = false;
    kv.read(&mut |t| {
        found = None;
        interrupted = t.get(LOADING)?.is_some();
        for (k, _) in t.scan(&[], &[0xff], 16)? {
            if !ignorable_in_empty(&k) {
                found = Some(k);
                break;
            }
        }
        Ok(())
    })?;
    if let Some(k) = found
        && !interrupted
    {
        return Err(MetaError::Invalid(format!(
            "the store is not empty (it holds {} records): load into a new store that no server has used",
            table_name(&k)
        )));
    }
    kv.write(true, &mut |t| {
        t.delete_range(&[], &[0xff])?;
        t.put(LOADING, b"1")
    })?;
    let mut stats = DumpStats::default();
    let mut batch: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(PAGE);
    let mut batch_bytes = 0usize;
    let mut lineno = 1u64;
    let mut ended = None;
    let mut last_key: Option<Vec<u8>> = None;
    let flush = |batch: &mut Vec<(Vec<u8>, Vec<u8>)>, bytes: &mut usize| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        kv.write(false, &mut |t| t.put_many(batch))?;
        batch.clear();
        *bytes = 0;
        Ok(())
    };
    loop {
        if read_line(input, &mut line)? == 0 {
            break;
        }
        lineno += 1;
        if !line.ends_with('\n') {
            return Err(MetaError::Invalid(format!(
                "the dump is cut short: line {lineno} is incomplete (the store stays marked as loading)"
            )));
        }
        let text = line.trim_end();
        if text.is_empty() {
            continue;
        }
        if ended.is_some() {
            return Err(bad(lineno, "records after the trailer".into()));
        }
        let l: AnyLine = serde_json::from_str(text).map_err(|e| bad(lineno, format!("not a dump record ({e})")))?;
        if l.end == Some(true) {
            ended = Some(l.records.ok_or_else(|| bad(lineno, "trailer without a record count".into()))?);
            continue;
        }
        let (Some(k), Some(v)) = (l.k, l.v) else {
            return Err(bad(lineno, "a record needs \"k\" and \"v\"".into()));
        };
        let _ = l.t;
        let k = hex::decode(&k).map_err(|e| bad(lineno, format!("key: {e}")))?;
        let v = hex::decode(&v).map_err(|e| bad(lineno, format!("value: {e}")))?;
        if k.is_empty() || k == LOADING || k.first() == Some(&0xff) {
            return Err(bad(lineno, "a key no store holds".into()));
        }
        // Dumps are in key order: anything else was edited or spliced.
        if last_key.as_ref().is_some_and(|l| *l >= k) {
            return Err(bad(lineno, "records out of key order (or repeated)".into()));
        }
        last_key = Some(k.clone());
        stats.records += 1;
        stats.bytes += (k.len() + v.len()) as u64;
        batch_bytes += k.len() + v.len();
        batch.push((k, v));
        if batch.len() >= PAGE || batch_bytes >= LOAD_BATCH_BYTES {
            flush(&mut batch, &mut batch_bytes)?;
        }
    }
    let Some(declared) = ended else {
        return Err(MetaError::Invalid(format!(
            "the dump is cut short: no trailer after {} records (the store stays marked as loading)",
            stats.records
        )));
    };
    if declared != stats.records {
        return Err(MetaError::Invalid(format!(
            "the dump's trailer counts {declared} records but it holds {}",
            stats.records
        )));
    }
    flush(&mut batch, &mut batch_bytes)?;
    // The mark goes last, in a durable commit: a store without it holds the whole dump.
    kv.write(true, &mut |t| {
        if t.get(keys::SCHEMA)?.is_none() {
            t.put(keys::SCHEMA, SCHEMA_VERSION.to_string().as_bytes())?;
        }
        t.delete(LOADING)
    })?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::sqlite::SqliteEngine;

    fn dump_of(kv: &dyn KvEngine) -> Vec<u8> {
        let mut out = Vec::new();
        dump_engine(kv, &mut |b| {
            out.extend_from_slice(b);
            Ok(())
        })
        .expect("dump");
        out
    }

    fn all(kv: &dyn KvEngine) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut got = Vec::new();
        kv.read(&mut |t| {
            got = t.scan(&[], &[0xff], usize::MAX)?;
            Ok(())
        })
        .expect("scan");
        got
    }

    #[test]
    fn round_trip_skips_client_state_and_refuses_a_full_store() {
        let src = SqliteEngine::memory().expect("engine");
        src.write(false, &mut |t| {
            t.put(keys::SCHEMA, b"1")?;
            for i in 0..2500u64 {
                t.put(&keys::attr(i), &i.to_be_bytes())?;
            }
            t.put(&keys::session(7), b"live")?;
            t.put(&keys::open(3, 7), b"1")?;
            t.put(&keys::volume_name("a"), &[0, 1, 0xff])
        })
        .expect("fill");
        let dump = dump_of(&src);
        let text = String::from_utf8(dump.clone()).expect("utf-8");
        assert!(text.starts_with("{\"format\":\"strata-dump\",\"version\":1,"), "{}", &text[..80]);
        assert!(text.trim_end().ends_with("{\"end\":true,\"records\":2502}"));
        assert!(text.contains("\"t\":\"volume_name\""));

        let dst = SqliteEngine::memory().expect("engine");
        let stats = load_engine(&dst, &mut &dump[..]).expect("load");
        assert_eq!(stats.records, 2502);
        let want: Vec<_> = all(&src).into_iter().filter(|(k, _)| !is_client_state(k)).collect();
        assert_eq!(all(&dst), want);

        let err = load_engine(&dst, &mut &dump[..]).expect_err("refused");
        assert!(err.to_string().contains("not empty"), "{err}");
    }

    #[test]
    fn cut_or_bad_dumps_are_refused_and_the_next_load_starts_over() {
        let src = SqliteEngine::memory().expect("engine");
        src.write(false, &mut |t| {
            for i in 0..10u64 {
                t.put(&keys::attr(i), b"x")?;
            }
            Ok(())
        })
        .expect("fill");
        let dump = dump_of(&src);
        let text = String::from_utf8(dump.clone()).expect("utf-8");
        let dst = SqliteEngine::memory().expect("engine");
        let cut = &text[..text.rfind("{\"end\"").expect("trailer")];
        let err = load_engine(&dst, &mut cut.as_bytes()).expect_err("cut");
        assert!(err.to_string().contains("cut short"), "{err}");
        // A cut load leaves the mark; the next load clears it and succeeds.
        load_engine(&dst, &mut &dump[..]).expect("load after a cut one");
        // The ten records and the schema marker a load adds when the dump has none.
        assert_eq!(all(&dst).len(), 11);

        for (bad, why) in [
            ("", "empty"),
            ("{\"format\":\"tar\",\"version\":1,\"schema\":1,\"engine\":\"x\",\"created\":0}\n", "format"),
            ("{\"format\":\"strata-dump\",\"version\":9,\"schema\":1,\"engine\":\"x\",\"created\":0}\n", "newer"),
            (
                "{\"format\":\"strata-dump\",\"version\":1,\"schema\":1,\"engine\":\"x\",\"created\":0}\n{\"k\":\"zz\",\"v\":\"\"}\n",
                "key",
            ),
            (
                "{\"format\":\"strata-dump\",\"version\":1,\"schema\":1,\"engine\":\"x\",\"created\":0}\n{\"k\":\"42\",\"v\":\"\"}\n{\"k\":\"41\",\"v\":\"\"}\n",
                "order",
            ),
        ] {
            let dst = SqliteEngine::memory().expect("engine");
            let err = load_engine(&dst, &mut bad.as_bytes()).expect_err(why);
            assert!(err.to_string().to_lowercase().contains(why), "{why}: {err}");
        }
    }
}

//! `strata fsck` and `strata gc` on a live server: the namespace checked against itself
//! (`strata_meta::check`) and against the block stores, each problem reported as it is found,
//! with the path it affects, and the safe repairs.
//!
//! The order of the reads is what makes the check sound while clients write. The stores are
//! listed *before* the namespace's snapshot is taken, so a block deleted before the listing
//! belonged to a slice unreferenced in the snapshot too; a block listed but unreferenced may
//! have been committed since, so it is an orphan only when older than the grace period (the
//! server's `--orphan-block-age`, an hour by default: clients commit within seconds) and when
//! a fresh read of the namespace still does not reference it, just before it is deleted. A
//! referenced block missing from the listing may have been uploaded since: it is missing only
//! when the store still does not have it and a fresh read still references it. A block whose
//! listed length is wrong may have been listed while its file was being written (a client's
//! direct write, the journal's flush): it is reported only when the store, asked again,
//! still gives a wrong length.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use strata_blocks::codec::HEADER;
use strata_blocks::layout::{block_key, slice_blocks, slice_of_key, volume_of_block_key};
use strata_meta::check::{NsCheck, NsProblem};
use strata_meta::{FileType, Volume};

use crate::gc::meta_task;
use crate::state::State;

/// What `strata fsck` asks.
#[derive(Serialize, Deserialize, Clone, Debug, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FsckRequest {
    /// Fix what is safe to fix: usage counters, link counts, entries whose inode is missing
    /// (rebuilt from what is left), orphaned blocks older than the grace period.
    #[serde(default)]
    pub repair: bool,
    /// Unreferenced blocks younger than this many seconds are not orphans (their client may
    /// still commit them). Default: 3600.
    #[serde(default)]
    pub grace_secs: Option<u64>,
}

/// What `strata gc` asks.
#[derive(Serialize, Deserialize, Clone, Debug, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GcRequest {
    /// Delete the leaked blocks and collect the pending slices now (default: only report).
    #[serde(default)]
    pub delete: bool,
    /// Unreferenced blocks younger than this many seconds are not leaked. Default: 3600.
    #[serde(default)]
    pub grace_secs: Option<u64>,
}

/// How long a store's listing may go without an answer before the run stops with an error.
const STORE_STALL: Duration = Duration::from_secs(15);

/// The grace period when none is asked for: the server's default `--orphan-block-age`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// One line of a report.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReportLine {
    /// A problem.
    Problem(Problem),
    /// The totals, last.
    Summary(Summary),
    /// The check could not go on.
    Error {
        /// Why.
        message: String,
    },
}

/// A problem found.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, utoipa::ToSchema)]
pub struct Problem {
    /// What kind: `missing_block`, `bad_block_length`, `orphan_block`, `dangling_entry`,
    /// `link_count`, `usage`, `unreachable_inode`, `leftover_records`, `type_mismatch`,
    /// `missing_root`.
    pub kind: String,
    /// The path it affects (`VOLUME:/dir/file`), or the block key (`STORE KEY`).
    pub path: String,
    /// What is wrong.
    pub detail: String,
    /// What a repair does about it; absent when nothing can be done safely.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fix: Option<String>,
    /// With a repair: whether it was done (a failure's reason is in `detail`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub fixed: Option<bool>,
}

/// Totals of a run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, utoipa::ToSchema)]
pub struct Summary {
    /// Volumes (deleted ones kept for clones included).
    pub volumes: u64,
    /// Inodes checked.
    pub inodes: u64,
    /// Directory entries checked.
    pub entries: u64,
    /// Slices referenced (live files and snapshots).
    pub slices: u64,
    /// Blocks found in the stores.
    pub blocks: u64,
    /// Their stored bytes.
    pub block_bytes: u64,
    /// Problems reported.
    pub problems: u64,
    /// Problems repaired.
    pub fixed: u64,
    /// Unreferenced blocks left alone because they are younger than the grace period.
    pub young_blocks: u64,
    /// Slices waiting for their blocks to be deleted.
    pub pending_slices: u64,
    /// Their bytes.
    pub pending_bytes: u64,
    /// Pending slices collected by this run.
    pub collected_slices: u64,
    /// Blocks this run deleted.
    pub deleted_blocks: u64,
}

type Tx = tokio::sync::mpsc::Sender<ReportLine>;

/// A block as listed: its store, key, stored length and age.
struct Listed {
    size: u64,
    age: Duration,
}

/// Sends a line; false when the client went away (the run stops).
async fn send(tx: &Tx, line: ReportLine) -> bool {
    tx.send(line).await.is_ok()
}

/// Runs `strata fsck`, sending report lines to `tx` as it goes.
pub async fn fsck(st: &State, req: FsckRequest, tx: Tx) {
    let grace = req.grace_secs.map_or(DEFAULT_GRACE, Duration::from_secs);
    if let Err(message) = run(st, Mode::Fsck { repair: req.repair }, grace, &tx).await {
        if message == GONE {
            tracing::info!("fsck stopped: {GONE}");
            return;
        }
        tracing::warn!(error = %message, "fsck stopped");
        let _ = send(&tx, ReportLine::Error { message }).await;
    }
}

/// Runs `strata gc`, sending report lines to `tx` as it goes.
pub async fn gc(st: &State, req: GcRequest, tx: Tx) {
    let grace = req.grace_secs.map_or(DEFAULT_GRACE, Duration::from_secs);
    if let Err(message) = run(st, Mode::Gc { delete: req.delete }, grace, &tx).await {
        if message == GONE {
            tracing::info!("gc stopped: {GONE}");
            return;
        }
        tracing::warn!(error = %message, "gc stopped");
        let _ = send(&tx, ReportLine::Error { message }).await;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Fsck { repair: bool },
    Gc { delete: bool },
}

impl Mode {
    /// Whether orphaned blocks are deleted.
    fn deletes(self) -> bool {
        matches!(self, Mode::Fsck { repair: true } | Mode::Gc { delete: true })
    }
}

/// The end of a run cut short by the client leaving.
const GONE: &str = "the client stopped reading the report";

async fn run(st: &State, mode: Mode, grace: Duration, tx: &Tx) -> Result<(), String> {
    let mut sum = Summary::default();
    // 1. The stores, listed before the namespace is read (see the module's comment).
    let meta = st.meta.clone();
    let vols = meta_task(move || meta.all_volumes()).await?;
    let mut urls: Vec<String> = vols.iter().map(|v| v.store.clone()).collect();
    urls.push(st.default_store.clone());
    urls.sort();
    urls.dedup();
    let mut listed: HashMap<String, HashMap<String, Listed>> = HashMap::new();
    let now = SystemTime::now();
    for url in &urls {
        let store = st.store(url).map_err(|e| format!("block store {url}: {e}"))?;
        let mut blocks = HashMap::new();
        let mut listing = store.list("");
        // A store that does not answer (gone, or a class naming an unreachable endpoint) ends
        // the run with that error, rather than after the store client's long retries.
        while let Some(obj) = tokio::time::timeout(STORE_STALL, listing.try_next())
            .await
            .map_err(|_| format!("listing block store {url}: no answer for {} s", STORE_STALL.as_secs()))?
            .map_err(|e| format!("listing block store {url}: {e}"))?
        {
            let key = obj.location.to_string();
            if volume_of_block_key(&key).is_none() {
                continue;
            }
            let age = now.duration_since(obj.last_modified.into()).unwrap_or_default();
            sum.blocks += 1;
            sum.block_bytes += obj.size;
            blocks.insert(key, Listed { size: obj.size, age });
        }
        listed.insert(url.clone(), blocks);
    }
    // 2. The namespace, as one point in time.
    let meta = st.meta.clone();
    let check = meta_task(move || meta.check_namespace()).await?;
    sum.volumes = check.volumes.len() as u64;
    sum.inodes = check.inodes;
    sum.entries = check.entries;
    sum.slices = check.slices.len() as u64;
    sum.pending_slices = check.pending.len() as u64;
    sum.pending_bytes = check.pending.values().map(|p| u64::from(p.size)).sum();
    if let Mode::Fsck { repair } = mode {
        namespace(st, &check, repair, tx, &mut sum).await?;
    }
    // 3. Blocks against slices.
    let mut expected: HashSet<(String, String)> = HashSet::new();
    let mut missing: Vec<(String, String, u64)> = Vec::new();
    let mut ids: Vec<&u64> = check.slices.keys().collect();
    ids.sort();
    for id in ids {
        let u = &check.slices[id];
        let Some(vol) = u.volume.and_then(|v| check.volumes.get(&v)) else { continue };
        let pending = check.pending.contains_key(id);
        for (i, len) in slice_blocks(u.size, vol.block_size) {
            let key = block_key(vol.id, *id, i, len);
            match listed.get(&vol.store).and_then(|b| b.get(&key)) {
                Some(b) => {
                    if matches!(mode, Mode::Fsck { .. })
                        && !length_ok(vol, len, b.size)
                        && let Some(size) = wrong_length_now(st, vol, &key, len).await?
                    {
                        let p = Problem {
                            kind: "bad_block_length".into(),
                            path: slice_path(&check, u.ino, u.in_snapshot_only),
                            detail: format!(
                                "block {key} is {size} bytes in {}, its key says {len}{}",
                                vol.store,
                                if compressed(vol) { " (before compression)" } else { "" }
                            ),
                            fix: None,
                            fixed: None,
                        };
                        sum.problems += 1;
                        if !send(tx, ReportLine::Problem(p)).await {
                            return Err(GONE.into());
                        }
                    }
                }
                None if pending || check.journaled.contains(&key) => {}
                None => missing.push((vol.store.clone(), key.clone(), *id)),
            }
            expected.insert((vol.store.clone(), key));
        }
    }
    if matches!(mode, Mode::Fsck { .. }) && !missing.is_empty() {
        report_missing(st, &check, missing, tx, &mut sum).await?;
    }
    // 4. Blocks no slice needs.
    let mut orphans: Vec<(String, String, u64, u64)> = Vec::new();
    for (url, blocks) in &listed {
        for (key, b) in blocks {
            if expected.contains(&(url.clone(), key.clone())) {
                continue;
            }
            let Some(id) = slice_of_key(key) else { continue };
            // A referenced slice's blocks are never orphans, even under a name the check did
            // not expect (a slice whose inode is missing has no known volume).
            if check.slices.contains_key(&id) || check.pending.contains_key(&id) || check.journaled.contains(key) {
                continue;
            }
            if b.age < grace {
                sum.young_blocks += 1;
                continue;
            }
            orphans.push((url.clone(), key.clone(), id, b.size));
        }
    }
    orphans.sort();
    orphan_blocks(st, mode, orphans, tx, &mut sum).await?;
    // 5. gc --delete: the pending slices' blocks, now.
    if mode == (Mode::Gc { delete: true }) {
        for _ in 0..10_000 {
            let n = crate::gc::collect_round(st).await?;
            if n == 0 {
                break;
            }
            sum.collected_slices += n as u64;
        }
    }
    if !send(tx, ReportLine::Summary(sum)).await {
        return Err(GONE.into());
    }
    Ok(())
}

fn compressed(v: &Volume) -> bool {
    !matches!(v.compression.as_str(), "" | "none")
}

/// Whether a stored block of a block key naming `len` bytes may be `size` bytes long: exactly
/// `len` unless the volume compresses, then a 16-byte frame header and at most `len` bytes.
fn length_ok(v: &Volume, len: u32, size: u64) -> bool {
    let len = u64::from(len);
    size == len || (compressed(v) && size > HEADER as u64 && size <= HEADER as u64 + len)
}

/// A block's length asked of its store again, after its listing gave a wrong one: `None`
/// when it is right now (or the block is gone: the slice went meanwhile, or it is reported
/// missing on the next run), the wrong length otherwise.
async fn wrong_length_now(st: &State, vol: &Volume, key: &str, len: u32) -> Result<Option<u64>, String> {
    Ok(stored_size(st, &vol.store, key).await?.filter(|&n| !length_ok(vol, len, n)))
}

/// A block's size as its store says it now (`None`: not there), asked of the store again
/// after its listing; a store that does not answer ends the run, as a stalled listing does.
async fn stored_size(st: &State, url: &str, key: &str) -> Result<Option<u64>, String> {
    let store = st.store(url).map_err(|e| e.to_string())?;
    let path = object_store::path::Path::from(key);
    match tokio::time::timeout(STORE_STALL, store.object_store().head(&path)).await {
        Err(_) => Err(format!("block store {url}: no answer for {} s", STORE_STALL.as_secs())),
        Ok(Ok(m)) => Ok(Some(m.size)),
        Ok(Err(object_store::Error::NotFound { .. })) => Ok(None),
        Ok(Err(e)) => Err(format!("block store {url}: {e}")),
    }
}

fn slice_path(check: &NsCheck, ino: u64, snapshot_only: bool) -> String {
    if snapshot_only { format!("{} (as a snapshot keeps it)", check.path(ino)) } else { check.path(ino) }
}

/// Reports the blocks still missing after a second look (the store asked again, the
/// namespace read again).
async fn report_missing(
    st: &State,
    check: &NsCheck,
    missing: Vec<(String, String, u64)>,
    tx: &Tx,
    sum: &mut Summary,
) -> Result<(), String> {
    let meta = st.meta.clone();
    let live = meta_task(move || meta.referenced_slices()).await?;
    for (url, key, id) in missing {
        if !live.contains(&id) {
            continue;
        }
        if stored_size(st, &url, &key).await?.is_some() {
            continue;
        }
        let u = &check.slices[&id];
        let p = Problem {
            kind: "missing_block".into(),
            path: slice_path(check, u.ino, u.in_snapshot_only),
            detail: format!("block {key} is missing from {url}: those bytes of the file cannot be read"),
            fix: None,
            fixed: None,
        };
        sum.problems += 1;
        if !send(tx, ReportLine::Problem(p)).await {
            return Err(GONE.into());
        }
    }
    Ok(())
}

/// Reports (and, when asked, deletes) blocks no slice needs, after reading again which
/// slices the namespace references and which blocks are journaled.
async fn orphan_blocks(
    st: &State,
    mode: Mode,
    orphans: Vec<(String, String, u64, u64)>,
    tx: &Tx,
    sum: &mut Summary,
) -> Result<(), String> {
    if orphans.is_empty() {
        return Ok(());
    }
    let meta = st.meta.clone();
    let live = meta_task(move || meta.referenced_slices()).await?;
    let keys: Vec<String> = orphans.iter().map(|o| o.1.clone()).collect();
    let meta = st.meta.clone();
    let journaled: HashSet<String> = meta_task(move || meta.journaled_among(&keys)).await?.into_iter().collect();
    let kind = if matches!(mode, Mode::Gc { .. }) { "leaked_block" } else { "orphan_block" };
    for (url, key, id, size) in orphans {
        if live.contains(&id) || journaled.contains(&key) {
            continue;
        }
        let mut p = Problem {
            kind: kind.into(),
            path: format!("{url} {key}"),
            detail: format!("{size} bytes that no file, snapshot or pending slice references"),
            fix: Some("delete the block".into()),
            fixed: None,
        };
        if mode.deletes() {
            let store = st.store(&url).map_err(|e| e.to_string())?;
            match store.delete(&key).await {
                Ok(()) => {
                    p.fixed = Some(true);
                    sum.fixed += 1;
                    sum.deleted_blocks += 1;
                    tracing::info!(store = %url, key, "deleted an orphaned block");
                }
                Err(e) => {
                    p.fixed = Some(false);
                    p.detail = format!("{}; deleting it failed: {e}", p.detail);
                }
            }
        }
        sum.problems += 1;
        if !send(tx, ReportLine::Problem(p)).await {
            return Err(GONE.into());
        }
    }
    Ok(())
}

/// Reports the namespace's problems and, with `repair`, fixes the safe ones: each repair
/// recomputes from the records as they are in its own transaction.
async fn namespace(st: &State, check: &NsCheck, repair: bool, tx: &Tx, sum: &mut Summary) -> Result<(), String> {
    let mut usage_vols: Vec<u32> = Vec::new();
    for prob in &check.problems {
        let mut p = describe(check, prob);
        if repair && p.fix.is_some() {
            let meta = st.meta.clone();
            let done: Result<String, String> = match prob.clone() {
                NsProblem::DanglingEntry { parent, name, .. } => {
                    let vol = check.inode_volume(parent);
                    match meta_task(move || meta.repair_dangling_entry(parent, &name)).await {
                        Ok(Some(a)) => {
                            usage_vols.extend(vol);
                            Ok(format!("inode rebuilt: {} bytes, mode {:o}, owner root", a.size, a.mode))
                        }
                        Ok(None) => Ok("fixed meanwhile".into()),
                        Err(e) => Err(e),
                    }
                }
                NsProblem::LinkCount { ino, .. } => match meta_task(move || meta.repair_link_count(ino)).await {
                    Ok(Some((have, want))) => Ok(format!("link count set from {have} to {want}")),
                    Ok(None) => Ok("fixed meanwhile".into()),
                    Err(e) => Err(e),
                },
                NsProblem::Usage { volume, .. } => {
                    // Rebuilt once, after the other repairs (which may change it).
                    usage_vols.push(volume);
                    Ok(String::new())
                }
                _ => Ok(String::new()),
            };
            match done {
                Ok(what) if what.is_empty() => {}
                Ok(what) => {
                    p.fixed = Some(true);
                    p.detail = format!("{}; {what}", p.detail);
                    sum.fixed += 1;
                }
                Err(e) => {
                    p.fixed = Some(false);
                    p.detail = format!("{}; repair failed: {e}", p.detail);
                }
            }
        }
        if matches!(prob, NsProblem::Usage { .. }) && repair {
            // Reported when rebuilt, below.
            continue;
        }
        sum.problems += 1;
        if !send(tx, ReportLine::Problem(p)).await {
            return Err(GONE.into());
        }
    }
    usage_vols.sort();
    usage_vols.dedup();
    if repair {
        for vol in usage_vols {
            let meta = st.meta.clone();
            let reported =
                check.problems.iter().find(|p| matches!(p, NsProblem::Usage { volume, .. } if *volume == vol));
            let res = meta_task(move || meta.repair_usage(vol)).await;
            let mut p = match reported {
                Some(prob) => describe(check, prob),
                // A volume whose inode a repair rebuilt: reported when its counters change.
                None => match &res {
                    Ok((have, want)) if have != want => Problem {
                        kind: "usage".into(),
                        path: format!("{}:/", check.volume_name(vol)),
                        detail: "usage counters changed by a rebuilt inode".into(),
                        fix: Some("rebuild the counters from the inodes".into()),
                        fixed: None,
                    },
                    _ => continue,
                },
            };
            match res {
                Ok((have, want)) => {
                    p.fixed = Some(true);
                    p.detail = format!(
                        "{}; rebuilt: {} bytes and {} inodes (was {} and {})",
                        p.detail, want.bytes, want.inodes, have.bytes, have.inodes
                    );
                    sum.fixed += 1;
                }
                Err(e) => {
                    p.fixed = Some(false);
                    p.detail = format!("{}; repair failed: {e}", p.detail);
                }
            }
            sum.problems += 1;
            if !send(tx, ReportLine::Problem(p)).await {
                return Err(GONE.into());
            }
        }
    }
    Ok(())
}

fn kind_name(k: FileType) -> &'static str {
    match k {
        FileType::File => "file",
        FileType::Dir => "directory",
        FileType::Symlink => "symlink",
        _ => "special file",
    }
}

/// A namespace problem as reported, with what a repair does about it.
fn describe(check: &NsCheck, p: &NsProblem) -> Problem {
    let (kind, path, detail, fix): (&str, String, String, Option<&str>) = match p {
        NsProblem::DanglingEntry { parent, name, ino, kind } => (
            "dangling_entry",
            check.entry_path(*parent, name),
            format!("the entry names {} inode {ino}, which does not exist", kind_name(*kind)),
            Some("rebuild the inode from what is left of it (chunks, target, entries)"),
        ),
        NsProblem::KindMismatch { parent, name, ino } => {
            ("type_mismatch", check.entry_path(*parent, name), format!("the entry's type is not inode {ino}'s"), None)
        }
        NsProblem::LinkCount { ino, have, want } => (
            "link_count",
            check.path(*ino),
            format!("link count {have}, but {want} by its entries"),
            Some("set the link count from the entries"),
        ),
        NsProblem::Unreachable { ino, kind, size } => (
            "unreachable_inode",
            check.path(*ino),
            format!("{} inode {ino} ({size} bytes) that no entry names", kind_name(*kind)),
            None,
        ),
        NsProblem::LeftoverRecords { ino } => (
            "leftover_records",
            format!("<inode {ino}>"),
            format!("chunks, xattrs or a symlink target of inode {ino}, which does not exist"),
            None,
        ),
        NsProblem::Usage { volume, have, want } => (
            "usage",
            format!("{}:/", check.volume_name(*volume)),
            format!(
                "usage counters say {} bytes and {} inodes, the inodes add up to {} bytes and {} inodes",
                have.bytes, have.inodes, want.bytes, want.inodes
            ),
            Some("rebuild the counters from the inodes"),
        ),
        NsProblem::MissingRoot { volume } => (
            "missing_root",
            format!("{}:/", check.volume_name(*volume)),
            "the volume's root directory is missing".into(),
            None,
        ),
    };
    Problem { kind: kind.into(), path, detail, fix: fix.map(str::to_string), fixed: None }
}

//! The namespace: every file system operation as one transaction over the key-value engine.
//!
//! Invariants kept by every operation (and checked by the property tests):
//! - a directory's `nlink` is 2 plus its subdirectories; a file's is its number of entries;
//! - an inode with `nlink == 0` exists only while some session has it open (`O` marker);
//! - every slice id referenced by a chunk is either live or recorded as pending deletion once
//!   its last reference goes, never both;
//! - a volume's usage equals the sum over its inodes (count, and file sizes rounded to 4 KiB).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::codec::{dec, dec_entry, dec_slices, enc, enc_entry, push_slice};
use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{KvEngine, KvTxn, prefix_end};
use crate::types::*;

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_ISVTX: u32 = 0o1000;
const IDS_PER_BATCH: u64 = 1024;
const XATTR_NAME_MAX: usize = 255;
const XATTR_SIZE_MAX: usize = 65536;

/// `rename` flag: fail if the target exists.
pub const RENAME_NOREPLACE: u32 = 1;
/// `rename` flag: swap source and target atomically.
pub const RENAME_EXCHANGE: u32 = 2;
/// `setxattr` flag: fail if the attribute exists.
pub const XATTR_CREATE: u32 = 1;
/// `setxattr` flag: fail if the attribute does not exist.
pub const XATTR_REPLACE: u32 = 2;

/// Who has which inode open, per session: unlinked inodes live on while open anywhere, and the
/// collector keeps blocks an open file may still read.
#[derive(Default)]
struct OpenTable {
    by_ino: HashMap<Ino, u32>,
    by_session: HashMap<u64, HashMap<Ino, u32>>,
}

/// Where the state of live clients (open files, sessions, advisory locks) is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateMode {
    /// In this process's memory: fastest, correct while one server uses the store.
    Local,
    /// As records in the key-value engine: every server on the store sees the same opens,
    /// sessions and locks (several `strata server` processes on one PostgreSQL database).
    Shared,
}

/// The metadata service's view of the namespace.
pub struct Meta {
    kv: Arc<dyn KvEngine>,
    mode: StateMode,
    /// Local state only.
    opens: Mutex<OpenTable>,
    /// Local state only.
    pub(crate) local_sessions: Mutex<crate::sessions::LocalSessions>,
    /// Local state only.
    pub(crate) local_locks: Mutex<crate::locks::LockTable>,
    /// Shared state only: when this process last stored each session's heartbeat.
    pub(crate) touched: Mutex<HashMap<u64, std::time::Instant>>,
    inos: Mutex<(u64, u64)>,
    /// Local state only: whether unlinks leave destruction to [`Meta::reap_doomed`].
    defer_destroy: std::sync::atomic::AtomicBool,
    /// Unlinked inodes open nowhere, waiting for [`Meta::reap_doomed`].
    doomed: Mutex<Vec<Ino>>,
}

/// Options of a new volume.
#[derive(Clone, Debug, Default)]
pub struct NewVolume {
    /// Storage class.
    pub class: String,
    /// Byte quota, 0 for none.
    pub capacity: u64,
    /// Inode quota, 0 for none.
    pub inode_limit: u64,
    /// Block size (0 for the default).
    pub block_size: u32,
    /// Block store URL.
    pub store: String,
    /// Compression.
    pub compression: String,
    /// Reclaim policy.
    pub reclaim: Reclaim,
    /// Owning scope.
    pub scope: String,
}

fn now() -> Timespec {
    Timespec::now()
}

fn check_name(name: &[u8]) -> Result<()> {
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(MetaError::Invalid("bad file name".into()));
    }
    if name == b"." || name == b".." {
        // Every directory has these already; an entry by that name would be shadowed.
        return Err(MetaError::Exists);
    }
    if name.len() > NAME_MAX {
        return Err(MetaError::NameTooLong);
    }
    Ok(())
}

/// Checks `mask` (4 read, 2 write, 1 exec) against an inode for the caller.
pub fn access(ctx: &Ctx, attr: &Attr, mask: u32) -> Result<()> {
    if !ctx.check || mask == 0 {
        return Ok(());
    }
    if ctx.uid == 0 {
        // Root may do anything except execute a file that nobody may execute.
        if mask & 1 != 0 && !attr.is_dir() && attr.mode & 0o111 == 0 {
            return Err(MetaError::Access);
        }
        return Ok(());
    }
    let bits = if ctx.uid == attr.uid {
        attr.mode >> 6
    } else if ctx.in_group(attr.gid) {
        attr.mode >> 3
    } else {
        attr.mode
    } & 7;
    if bits & mask == mask { Ok(()) } else { Err(MetaError::Access) }
}

fn sticky_ok(ctx: &Ctx, dir: &Attr, victim: &Attr) -> Result<()> {
    if ctx.check && dir.mode & S_ISVTX != 0 && ctx.uid != 0 && ctx.uid != dir.uid && ctx.uid != victim.uid {
        return Err(MetaError::Perm);
    }
    Ok(())
}

fn load_attr(t: &mut dyn KvTxn, ino: Ino) -> Result<Attr> {
    match t.get(&keys::attr(ino))? {
        Some(v) => dec(&v),
        None => Err(MetaError::NotFound),
    }
}

fn store_attr(t: &mut dyn KvTxn, ino: Ino, a: &Attr) -> Result<()> {
    t.put(&keys::attr(ino), &enc(a)?)
}

fn load_dir(t: &mut dyn KvTxn, ino: Ino) -> Result<Attr> {
    let a = load_attr(t, ino)?;
    if !a.is_dir() {
        return Err(MetaError::NotDir);
    }
    Ok(a)
}

fn get_entry(t: &mut dyn KvTxn, parent: Ino, name: &[u8]) -> Result<Option<(Ino, FileType)>> {
    match t.get(&keys::dentry(parent, name))? {
        Some(v) => Ok(Some(dec_entry(&v)?)),
        None => Ok(None),
    }
}

fn dir_is_empty(t: &mut dyn KvTxn, ino: Ino) -> Result<bool> {
    let p = keys::dentry_prefix(ino);
    Ok(t.scan(&p, &prefix_end(&p), 1)?.is_empty())
}

fn load_volume(t: &mut dyn KvTxn, id: u32) -> Result<Volume> {
    match t.get(&keys::volume(id))? {
        Some(v) => serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(format!("volume {id}: {e}"))),
        None => Err(MetaError::NoVolume(format!("#{id}"))),
    }
}

fn load_usage(t: &mut dyn KvTxn, vol: u32) -> Result<Usage> {
    match t.get(&keys::usage(vol))? {
        Some(v) => dec(&v),
        None => Ok(Usage::default()),
    }
}

/// Applies a usage change, refusing growth past the volume's quotas.
fn charge(t: &mut dyn KvTxn, vol: u32, bytes: i64, inodes: i64) -> Result<()> {
    if bytes == 0 && inodes == 0 {
        return Ok(());
    }
    let mut u = load_usage(t, vol)?;
    if bytes > 0 || inodes > 0 {
        let v = load_volume(t, vol)?;
        if bytes > 0 && v.capacity > 0 && u.bytes.saturating_add(bytes as u64) > v.capacity {
            return Err(MetaError::Quota);
        }
        if inodes > 0 && v.inode_limit > 0 && u.inodes.saturating_add(inodes as u64) > v.inode_limit {
            return Err(MetaError::Quota);
        }
    }
    u.bytes = u.bytes.saturating_add_signed(bytes);
    u.inodes = u.inodes.saturating_add_signed(inodes);
    t.put(&keys::usage(vol), &enc(&u)?)
}

/// Drops one reference to a slice; the last one queues its blocks for deletion.
fn free_slice(t: &mut dyn KvTxn, vol: u32, ino: Ino, s: &Slice) -> Result<()> {
    if s.id == 0 {
        return Ok(());
    }
    let rk = keys::slice_refs(s.id);
    if let Some(v) = t.get(&rk)? {
        let n: u64 = dec(&v)?;
        if n > 1 {
            t.put(&rk, &enc(&(n - 1))?)?;
        } else {
            t.delete(&rk)?;
        }
        return Ok(());
    }
    t.put(&keys::pending(s.id), &enc(&Pending { volume: vol, size: s.size, ino })?)
}

/// Frees every distinct slice of an encoded chunk list.
fn free_chunk(t: &mut dyn KvTxn, vol: u32, ino: Ino, raw: &[u8]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for s in dec_slices(raw)? {
        if s.id != 0 && seen.insert(s.id) {
            free_slice(t, vol, ino, &s)?;
        }
    }
    Ok(())
}

/// Removes an inode and everything hanging off it.
fn destroy(t: &mut dyn KvTxn, ino: Ino, a: &Attr) -> Result<()> {
    destroy_rest(t, ino, a)?;
    charge(t, a.volume, -(a.charged_bytes() as i64), -1)
}

/// [`destroy`] of an inode whose unlink gave `given` bytes and the inode back to the volume;
/// what it was charged since (a commit of writes buffered before the unlink) goes back now.
fn destroy_uncharged(t: &mut dyn KvTxn, ino: Ino, a: &Attr, given: u64) -> Result<()> {
    destroy_rest(t, ino, a)?;
    // Positive after a truncation that gave back part of `given` twice: restored without a
    // quota check, as it only undoes that.
    let delta = given as i64 - a.charged_bytes() as i64;
    if delta == 0 {
        return Ok(());
    }
    let mut u = load_usage(t, a.volume)?;
    u.bytes = u.bytes.saturating_add_signed(delta);
    t.put(&keys::usage(a.volume), &enc(&u)?)
}

/// [`destroy`] but for the usage.
fn destroy_rest(t: &mut dyn KvTxn, ino: Ino, a: &Attr) -> Result<()> {
    if a.kind == FileType::File {
        let p = keys::chunk_prefix(ino);
        let end = prefix_end(&p);
        loop {
            let batch = t.scan(&p, &end, 1024)?;
            if batch.is_empty() {
                break;
            }
            for (k, v) in &batch {
                free_chunk(t, a.volume, ino, v)?;
                t.delete(k)?;
            }
        }
    }
    if a.kind == FileType::Symlink {
        t.delete(&keys::symlink(ino))?;
    }
    let xp = keys::xattr_prefix(ino);
    t.delete_range(&xp, &prefix_end(&xp))?;
    t.delete(&keys::attr(ino))?;
    t.delete(&keys::sustained(ino))
}

/// Stores a new volume: its record, name, usage and empty root directory.
pub(crate) fn init_volume(t: &mut dyn KvTxn, vol: &Volume) -> Result<()> {
    let ts = vol.created;
    let attr = Attr {
        kind: FileType::Dir,
        mode: 0o777,
        uid: 0,
        gid: 0,
        rdev: 0,
        nlink: 2,
        size: 0,
        atime: ts,
        mtime: ts,
        ctime: ts,
        parent: vol.root,
        volume: vol.id,
    };
    store_attr(t, vol.root, &attr)?;
    t.put(&keys::volume(vol.id), &serde_json::to_vec(vol).map_err(|e| MetaError::Corrupt(e.to_string()))?)?;
    t.put(&keys::volume_name(&vol.name), &vol.id.to_be_bytes())?;
    t.put(&keys::usage(vol.id), &enc(&Usage { bytes: 0, inodes: 1 })?)
}

/// Shrinks or grows a file's length inside a transaction.
fn set_length(t: &mut dyn KvTxn, ino: Ino, a: &mut Attr, new: u64) -> Result<()> {
    if new > MAX_FILE_SIZE {
        return Err(MetaError::TooBig);
    }
    let old = a.size;
    if new < old {
        let keep = new.div_ceil(CHUNK_SIZE);
        let start = keys::chunk(ino, keep as u32);
        let end = prefix_end(&keys::chunk_prefix(ino));
        loop {
            let batch = t.scan(&start, &end, 1024)?;
            if batch.is_empty() {
                break;
            }
            for (k, v) in &batch {
                free_chunk(t, a.volume, ino, v)?;
                t.delete(k)?;
            }
        }
        if !new.is_multiple_of(CHUNK_SIZE) {
            // Cover the cut-off tail with a hole so a later extension reads zeros.
            let idx = (new / CHUNK_SIZE) as u32;
            let ck = keys::chunk(ino, idx);
            if let Some(mut raw) = t.get(&ck)? {
                let pos = (new % CHUNK_SIZE) as u32;
                let chunk_end = (old - u64::from(idx) * CHUNK_SIZE).min(CHUNK_SIZE) as u32;
                push_slice(&mut raw, &Slice { pos, id: 0, size: 0, off: 0, len: chunk_end - pos });
                t.put(&ck, &raw)?;
            }
        }
    }
    let before = a.charged_bytes() as i64;
    a.size = new;
    charge(t, a.volume, a.charged_bytes() as i64 - before, 0)
}

/// Records one more open of `ino` by `session` (shared state), inside the caller's transaction.
pub(crate) fn add_open(t: &mut dyn KvTxn, session: u64, ino: Ino) -> Result<()> {
    let k = keys::open(ino, session);
    let n: u32 = match t.get(&k)? {
        Some(v) => dec(&v)?,
        None => 0,
    };
    t.put(&k, &enc(&n.saturating_add(1))?)?;
    t.put(&keys::session_open(session, ino), &[])
}

/// Removes every open record of a session (shared state) and returns the inodes it held.
pub(crate) fn drop_session_opens(t: &mut dyn KvTxn, session: u64) -> Result<Vec<Ino>> {
    let p = keys::session_open_prefix(session);
    let mut inos = Vec::new();
    for (k, _) in t.scan(&p, &prefix_end(&p), usize::MAX)? {
        let ino = keys::u64_at(&k, 9).ok_or_else(|| MetaError::Corrupt("session open key".into()))?;
        t.delete(&keys::open(ino, session))?;
        t.delete(&k)?;
        inos.push(ino);
    }
    Ok(inos)
}

impl Meta {
    /// The namespace over an engine, with the state of live clients in this process (one
    /// server per store).
    pub fn new(kv: Arc<dyn KvEngine>) -> Result<Self> {
        Self::with_mode(kv, StateMode::Local)
    }

    /// The namespace over an engine, keeping the state of live clients as `mode` says.
    pub fn with_mode(kv: Arc<dyn KvEngine>, mode: StateMode) -> Result<Self> {
        let m = Meta {
            kv,
            mode,
            opens: Mutex::new(OpenTable::default()),
            local_sessions: Mutex::new(HashMap::new()),
            local_locks: Mutex::new(crate::locks::LockTable::default()),
            touched: Mutex::new(HashMap::new()),
            inos: Mutex::new((0, 0)),
            defer_destroy: std::sync::atomic::AtomicBool::new(false),
            doomed: Mutex::new(Vec::new()),
        };
        m.write(false, |t| {
            if t.get(keys::SCHEMA)?.is_none() {
                t.put(keys::SCHEMA, b"1")?;
            }
            Ok(())
        })?;
        Ok(m)
    }

    /// The engine's name.
    pub fn engine(&self) -> &'static str {
        self.kv.name()
    }

    /// Where the state of live clients is kept.
    pub fn mode(&self) -> StateMode {
        self.mode
    }

    /// Whether the state of live clients is shared through the engine.
    pub fn is_shared(&self) -> bool {
        self.mode == StateMode::Shared
    }

    pub(crate) fn read<R>(&self, mut f: impl FnMut(&mut dyn KvTxn) -> Result<R>) -> Result<R> {
        let mut out = None;
        self.kv.read(&mut |t| {
            out = Some(f(t)?);
            Ok(())
        })?;
        out.ok_or_else(|| MetaError::Engine("transaction produced no result".into()))
    }

    pub(crate) fn write<R>(&self, durable: bool, mut f: impl FnMut(&mut dyn KvTxn) -> Result<R>) -> Result<R> {
        let mut out = None;
        self.kv.write(durable, &mut |t| {
            out = Some(f(t)?);
            Ok(())
        })?;
        out.ok_or_else(|| MetaError::Engine("transaction produced no result".into()))
    }

    fn bump_counter(&self, name: &str, n: u64) -> Result<u64> {
        self.write(false, |t| {
            let k = keys::counter(name);
            let cur: u64 = match t.get(&k)? {
                Some(v) => dec(&v)?,
                None => 1,
            };
            t.put(&k, &enc(&(cur + n))?)?;
            Ok(cur)
        })
    }

    pub(crate) fn alloc_ino(&self) -> Result<Ino> {
        let mut r = self.inos.lock().map_err(|_| MetaError::Engine("inode allocator poisoned".into()))?;
        if r.0 >= r.1 {
            let first = self.bump_counter("inode", IDS_PER_BATCH)?;
            *r = (first, first + IDS_PER_BATCH);
        }
        let ino = r.0;
        r.0 += 1;
        Ok(ino)
    }

    /// Reserves `n` consecutive slice ids and returns the first.
    pub fn alloc_slice_ids(&self, n: u64) -> Result<u64> {
        self.bump_counter("slice", n.max(1))
    }

    /// Makes every earlier commit durable.
    pub fn sync(&self) -> Result<()> {
        self.write(true, |_| Ok(()))
    }

    // ---- volumes ----

    /// Creates a volume with an empty root directory.
    pub fn create_volume(&self, name: &str, opts: &NewVolume) -> Result<Volume> {
        crate::validate_name(name)?;
        let root = self.alloc_ino()?;
        let id = self.alloc_volume_id()?;
        self.write(true, |t| {
            if t.get(&keys::volume_name(name))?.is_some() {
                return Err(MetaError::VolumeExists(name.to_string()));
            }
            let vol = Volume {
                id,
                name: name.to_string(),
                root,
                class: opts.class.clone(),
                capacity: opts.capacity,
                inode_limit: opts.inode_limit,
                block_size: if opts.block_size == 0 { DEFAULT_BLOCK_SIZE } else { opts.block_size },
                store: opts.store.clone(),
                compression: if opts.compression.is_empty() { "none".into() } else { opts.compression.clone() },
                reclaim: opts.reclaim,
                scope: if opts.scope.is_empty() { "cluster".into() } else { opts.scope.clone() },
                created: now(),
                access_mode: crate::control::AccessMode::ReadWriteMany,
            };
            init_volume(t, &vol)?;
            Ok(vol)
        })
    }

    /// Reserves a volume id.
    pub(crate) fn alloc_volume_id(&self) -> Result<u32> {
        let id = self.bump_counter("volume", 1)?;
        u32::try_from(id).map_err(|_| MetaError::Invalid("too many volumes".into()))
    }

    /// A volume by name.
    pub fn volume(&self, name: &str) -> Result<Volume> {
        self.read(|t| {
            let id = t.get(&keys::volume_name(name))?.ok_or_else(|| MetaError::NoVolume(name.to_string()))?;
            let id: [u8; 4] = id.as_slice().try_into().map_err(|_| MetaError::Corrupt("volume index".into()))?;
            load_volume(t, u32::from_be_bytes(id))
        })
    }

    /// A volume by id.
    pub fn volume_by_id(&self, id: u32) -> Result<Volume> {
        self.read(|t| load_volume(t, id))
    }

    /// All volumes with their usage, by name.
    pub fn list_volumes(&self) -> Result<Vec<(Volume, Usage)>> {
        self.read(|t| {
            let mut out = Vec::new();
            for (_, v) in t.scan(keys::VOLUME_PREFIX, &prefix_end(keys::VOLUME_PREFIX), usize::MAX)? {
                let vol: Volume = serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(e.to_string()))?;
                let u = load_usage(t, vol.id)?;
                out.push((vol, u));
            }
            out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
            Ok(out)
        })
    }

    /// Changes a volume's quotas; shrinking below current use is refused.
    pub fn set_volume_quota(&self, name: &str, capacity: Option<u64>, inode_limit: Option<u64>) -> Result<Volume> {
        let id = self.volume(name)?.id;
        self.write(true, |t| {
            let mut v = load_volume(t, id)?;
            let u = load_usage(t, id)?;
            if let Some(c) = capacity {
                if c != 0 && c < u.bytes {
                    return Err(MetaError::Invalid(format!("capacity {c} is below the {} bytes in use", u.bytes)));
                }
                v.capacity = c;
            }
            if let Some(n) = inode_limit {
                if n != 0 && n < u.inodes {
                    return Err(MetaError::Invalid(format!("inode limit {n} is below the {} inodes in use", u.inodes)));
                }
                v.inode_limit = n;
            }
            t.put(&keys::volume(id), &serde_json::to_vec(&v).map_err(|e| MetaError::Corrupt(e.to_string()))?)?;
            Ok(v)
        })
    }

    /// Deletes a volume. With the delete reclaim policy its whole tree goes and its slices are
    /// queued for block deletion; with retain, only the name is released and the data stays.
    pub fn delete_volume(&self, name: &str) -> Result<Volume> {
        let vol = self.volume(name)?;
        let opened = self.open_inodes()?.into_iter().any(|ino| self.getattr(ino).is_ok_and(|a| a.volume == vol.id));
        if opened {
            return Err(MetaError::Busy(format!("volume {name} has open files")));
        }
        self.write(true, |t| {
            t.delete(&keys::volume_name(name))?;
            t.delete(&keys::volume(vol.id))?;
            if vol.reclaim == Reclaim::Retain {
                return Ok(());
            }
            // Depth-first removal of the whole tree.
            let mut stack = vec![vol.root];
            while let Some(dir) = stack.pop() {
                let p = keys::dentry_prefix(dir);
                for (k, v) in t.scan(&p, &prefix_end(&p), usize::MAX)? {
                    let (ino, kind) = dec_entry(&v)?;
                    t.delete(&k)?;
                    if kind == FileType::Dir {
                        stack.push(ino);
                    }
                    if let Ok(mut a) = load_attr(t, ino) {
                        a.nlink = a.nlink.saturating_sub(1);
                        if a.nlink == 0 || kind == FileType::Dir {
                            destroy(t, ino, &a)?;
                        } else {
                            store_attr(t, ino, &a)?;
                        }
                    }
                }
                if let Ok(a) = load_attr(t, dir) {
                    destroy(t, dir, &a)?;
                }
            }
            t.delete(&keys::usage(vol.id))?;
            Ok(())
        })?;
        Ok(vol)
    }

    /// Space and inode use of a volume.
    pub fn usage(&self, vol: u32) -> Result<Usage> {
        self.read(|t| load_usage(t, vol))
    }

    // ---- inodes ----

    /// Attributes of an inode.
    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        self.read(|t| load_attr(t, ino))
    }

    /// Finds `name` in directory `parent`.
    pub fn lookup(&self, ctx: &Ctx, parent: Ino, name: &[u8]) -> Result<(Ino, Attr)> {
        self.read(|t| {
            let p = load_dir(t, parent)?;
            access(ctx, &p, 1)?;
            if name == b"." {
                return Ok((parent, p));
            }
            if name == b".." {
                return Ok((p.parent, load_attr(t, p.parent)?));
            }
            if name.len() > NAME_MAX {
                return Err(MetaError::NameTooLong);
            }
            let (ino, _) = get_entry(t, parent, name)?.ok_or(MetaError::NotFound)?;
            Ok((ino, load_attr(t, ino)?))
        })
    }

    /// Creates a file, directory, symlink or special file. For a regular file without `excl`,
    /// an existing regular file of that name is returned instead (the open-or-create case).
    #[allow(clippy::too_many_arguments)]
    pub fn mknod(
        &self,
        ctx: &Ctx,
        parent: Ino,
        name: &[u8],
        kind: FileType,
        mode: u32,
        umask: u32,
        rdev: u32,
        target: &[u8],
        excl: bool,
    ) -> Result<(Ino, Attr, bool)> {
        check_name(name)?;
        if kind == FileType::Symlink && (target.is_empty() || target.len() > PATH_MAX) {
            return Err(if target.is_empty() { MetaError::NotFound } else { MetaError::NameTooLong });
        }
        let ino = self.alloc_ino()?;
        self.write(false, |t| {
            let mut p = load_dir(t, parent)?;
            if p.nlink == 0 {
                return Err(MetaError::NotFound);
            }
            if let Some((old, okind)) = get_entry(t, parent, name)? {
                if kind == FileType::File && !excl && okind == FileType::File {
                    return Ok((old, load_attr(t, old)?, false));
                }
                return Err(MetaError::Exists);
            }
            access(ctx, &p, 3)?;
            if kind == FileType::Dir && p.nlink >= LINK_MAX {
                return Err(MetaError::TooManyLinks);
            }
            let ts = now();
            let mut perm = if kind == FileType::Symlink { 0o777 } else { mode & 0o7777 & !umask };
            let gid = if p.mode & S_ISGID != 0 {
                if kind == FileType::Dir {
                    perm |= S_ISGID;
                }
                p.gid
            } else {
                ctx.gid
            };
            if ctx.check && perm & S_ISGID != 0 && kind != FileType::Dir && ctx.uid != 0 && !ctx.in_group(gid) {
                perm &= !S_ISGID;
            }
            let attr = Attr {
                kind,
                mode: perm,
                uid: ctx.uid,
                gid,
                rdev,
                nlink: if kind == FileType::Dir { 2 } else { 1 },
                size: if kind == FileType::Symlink { target.len() as u64 } else { 0 },
                atime: ts,
                mtime: ts,
                ctime: ts,
                parent,
                volume: p.volume,
            };
            charge(t, p.volume, 0, 1)?;
            store_attr(t, ino, &attr)?;
            if kind == FileType::Symlink {
                t.put(&keys::symlink(ino), target)?;
            }
            t.put(&keys::dentry(parent, name), &enc_entry(ino, kind))?;
            if kind == FileType::Dir {
                p.nlink += 1;
            }
            p.mtime = ts;
            p.ctime = ts;
            store_attr(t, parent, &p)?;
            Ok((ino, attr, true))
        })
    }

    /// Adds a hard link `newparent/newname` to `ino`.
    pub fn link(&self, ctx: &Ctx, ino: Ino, newparent: Ino, newname: &[u8]) -> Result<Attr> {
        check_name(newname)?;
        self.write(false, |t| {
            let mut a = load_attr(t, ino)?;
            if a.is_dir() {
                return Err(MetaError::Perm);
            }
            let mut p = load_dir(t, newparent)?;
            if p.volume != a.volume {
                return Err(MetaError::CrossDevice);
            }
            if p.nlink == 0 || a.nlink == 0 {
                return Err(MetaError::NotFound);
            }
            if get_entry(t, newparent, newname)?.is_some() {
                return Err(MetaError::Exists);
            }
            access(ctx, &p, 3)?;
            if a.nlink >= LINK_MAX {
                return Err(MetaError::TooManyLinks);
            }
            let ts = now();
            a.nlink += 1;
            a.ctime = ts;
            p.mtime = ts;
            p.ctime = ts;
            t.put(&keys::dentry(newparent, newname), &enc_entry(ino, a.kind))?;
            store_attr(t, ino, &a)?;
            store_attr(t, newparent, &p)?;
            Ok(a)
        })
    }

    /// Drops a link whose count reached zero: kept while open, destroyed otherwise.
    fn release_inode(&self, t: &mut dyn KvTxn, ino: Ino, a: &Attr) -> Result<()> {
        if self.is_open(t, ino)? {
            store_attr(t, ino, a)?;
            t.put(&keys::sustained(ino), &[])
        } else if self.defers_destroy() {
            // The usage goes back now, so quotas see the space at once; the rows go later.
            store_attr(t, ino, a)?;
            t.put(&keys::sustained(ino), &keys::uncharged(a.charged_bytes()))?;
            charge(t, a.volume, -(a.charged_bytes() as i64), -1)?;
            // Pushed before the commit: an entry of a transaction that rolls back finds no
            // sustained record when reaped, and is dropped then.
            self.doomed().push(ino);
            Ok(())
        } else {
            destroy(t, ino, a)
        }
    }

    /// The doomed list; a panic elsewhere cannot leave a list of inode numbers inconsistent,
    /// and every entry is checked again when reaped, so a poisoned lock is simply taken.
    fn doomed(&self) -> std::sync::MutexGuard<'_, Vec<Ino>> {
        self.doomed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn defers_destroy(&self) -> bool {
        self.defer_destroy.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// With local state, makes unlinks of files open nowhere leave the inode's destruction
    /// (its chunk rows, freeing its slices) to [`Meta::reap_doomed`]: a server calls that in
    /// the background, so an unlink's transaction stays as small as when the file is open.
    /// The usage is given back by the unlink either way. No effect with shared state.
    pub fn set_defer_destroy(&self, on: bool) {
        self.defer_destroy.store(on && !self.is_shared(), std::sync::atomic::Ordering::Relaxed);
    }

    /// How many unlinked inodes wait for [`Meta::reap_doomed`].
    pub fn doomed_count(&self) -> usize {
        self.doomed().len()
    }

    /// Destroys the inodes unlinked since the last call that are still open nowhere (an
    /// inode opened meanwhile waits for its last close); returns how many went. A crash
    /// loses nothing: their sustained records stay, for [`Meta::reap_orphans`].
    pub fn reap_doomed(&self) -> Result<usize> {
        const BATCH: usize = 512;
        let inos = std::mem::take(&mut *self.doomed());
        let mut n = 0;
        for (i, batch) in inos.chunks(BATCH).enumerate() {
            let done = self.write(false, |t| {
                let mut k = 0;
                for ino in batch {
                    if self.reap_in(t, *ino)? {
                        k += 1;
                    }
                }
                Ok(k)
            });
            match done {
                Ok(k) => n += k,
                Err(e) => {
                    // Back in the list for the next call.
                    self.doomed().extend_from_slice(&inos[i * BATCH..]);
                    return Err(e);
                }
            }
        }
        Ok(n)
    }

    /// Removes a non-directory entry.
    pub fn unlink(&self, ctx: &Ctx, parent: Ino, name: &[u8]) -> Result<()> {
        if name.len() > NAME_MAX {
            return Err(MetaError::NameTooLong);
        }
        self.write(false, |t| {
            let mut p = load_dir(t, parent)?;
            let (ino, kind) = get_entry(t, parent, name)?.ok_or(MetaError::NotFound)?;
            if kind == FileType::Dir {
                return Err(MetaError::IsDir);
            }
            access(ctx, &p, 3)?;
            let mut a = load_attr(t, ino)?;
            sticky_ok(ctx, &p, &a)?;
            let ts = now();
            t.delete(&keys::dentry(parent, name))?;
            p.mtime = ts;
            p.ctime = ts;
            store_attr(t, parent, &p)?;
            a.nlink = a.nlink.saturating_sub(1);
            a.ctime = ts;
            if a.nlink == 0 { self.release_inode(t, ino, &a) } else { store_attr(t, ino, &a) }
        })
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, ctx: &Ctx, parent: Ino, name: &[u8]) -> Result<()> {
        if name == b"." {
            return Err(MetaError::Invalid("cannot remove '.'".into()));
        }
        if name == b".." {
            return Err(MetaError::NotEmpty);
        }
        if name.len() > NAME_MAX {
            return Err(MetaError::NameTooLong);
        }
        self.write(false, |t| {
            let mut p = load_dir(t, parent)?;
            let (ino, kind) = get_entry(t, parent, name)?.ok_or(MetaError::NotFound)?;
            if kind != FileType::Dir {
                return Err(MetaError::NotDir);
            }
            access(ctx, &p, 3)?;
            let a = load_attr(t, ino)?;
            sticky_ok(ctx, &p, &a)?;
            if !dir_is_empty(t, ino)? {
                return Err(MetaError::NotEmpty);
            }
            let ts = now();
            t.delete(&keys::dentry(parent, name))?;
            p.nlink = p.nlink.saturating_sub(1);
            p.mtime = ts;
            p.ctime = ts;
            store_attr(t, parent, &p)?;
            destroy(t, ino, &a)
        })
    }

    /// Renames `sp/sname` to `dp/dname`, replacing a compatible target atomically.
    pub fn rename(&self, ctx: &Ctx, sp: Ino, sname: &[u8], dp: Ino, dname: &[u8], flags: u32) -> Result<()> {
        check_name(dname)?;
        if sname.len() > NAME_MAX {
            return Err(MetaError::NameTooLong);
        }
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0 || flags == RENAME_NOREPLACE | RENAME_EXCHANGE {
            return Err(MetaError::Invalid("unsupported rename flags".into()));
        }
        self.write(false, |t| {
            // Parent attributes are edited through this map so that sp == dp stays one record.
            let mut dirs: HashMap<Ino, Attr> = HashMap::new();
            dirs.insert(sp, load_dir(t, sp)?);
            if dp != sp {
                dirs.insert(dp, load_dir(t, dp)?);
            }
            let (sino, skind) = get_entry(t, sp, sname)?.ok_or(MetaError::NotFound)?;
            let (spa, dpa) = (dirs[&sp], dirs[&dp]);
            if spa.volume != dpa.volume {
                return Err(MetaError::CrossDevice);
            }
            if dpa.nlink == 0 {
                return Err(MetaError::NotFound);
            }
            access(ctx, &spa, 3)?;
            access(ctx, &dpa, 3)?;
            let mut sa = load_attr(t, sino)?;
            sticky_ok(ctx, &spa, &sa)?;
            let dst = get_entry(t, dp, dname)?;
            if let Some((dino, _)) = dst
                && dino == sino
            {
                // Two names of one inode: nothing to do, unless the caller forbade replacing.
                return if flags & RENAME_NOREPLACE != 0 { Err(MetaError::Exists) } else { Ok(()) };
            }
            if skind == FileType::Dir && sp != dp {
                access(ctx, &sa, 2)?;
                // A directory may not move below itself.
                let mut cur = dp;
                loop {
                    if cur == sino {
                        return Err(MetaError::Invalid("cannot move a directory into itself".into()));
                    }
                    let ca = if let Some(a) = dirs.get(&cur) { *a } else { load_attr(t, cur)? };
                    if ca.parent == cur {
                        break;
                    }
                    cur = ca.parent;
                }
            }
            let ts = now();
            if flags & RENAME_EXCHANGE != 0 {
                let (dino, dkind) = dst.ok_or(MetaError::NotFound)?;
                let mut da = load_attr(t, dino)?;
                sticky_ok(ctx, &dpa, &da)?;
                if dkind == FileType::Dir && sp != dp {
                    access(ctx, &da, 2)?;
                    let mut cur = sp;
                    loop {
                        if cur == dino {
                            return Err(MetaError::Invalid("cannot move a directory into itself".into()));
                        }
                        let ca = if let Some(a) = dirs.get(&cur) { *a } else { load_attr(t, cur)? };
                        if ca.parent == cur {
                            break;
                        }
                        cur = ca.parent;
                    }
                }
                t.put(&keys::dentry(sp, sname), &enc_entry(dino, dkind))?;
                t.put(&keys::dentry(dp, dname), &enc_entry(sino, skind))?;
                if sp != dp {
                    if skind == FileType::Dir {
                        sa.parent = dp;
                        dirs.entry(dp).and_modify(|a| a.nlink += 1);
                        dirs.entry(sp).and_modify(|a| a.nlink -= 1);
                    }
                    if dkind == FileType::Dir {
                        da.parent = sp;
                        dirs.entry(sp).and_modify(|a| a.nlink += 1);
                        dirs.entry(dp).and_modify(|a| a.nlink -= 1);
                    }
                }
                sa.ctime = ts;
                da.ctime = ts;
                store_attr(t, sino, &sa)?;
                store_attr(t, dino, &da)?;
            } else {
                if let Some((dino, dkind)) = dst {
                    if flags & RENAME_NOREPLACE != 0 {
                        return Err(MetaError::Exists);
                    }
                    let mut da = load_attr(t, dino)?;
                    sticky_ok(ctx, &dpa, &da)?;
                    if skind == FileType::Dir {
                        if dkind != FileType::Dir {
                            return Err(MetaError::NotDir);
                        }
                        if !dir_is_empty(t, dino)? {
                            return Err(MetaError::NotEmpty);
                        }
                        dirs.entry(dp).and_modify(|a| a.nlink -= 1);
                        destroy(t, dino, &da)?;
                    } else {
                        if dkind == FileType::Dir {
                            return Err(MetaError::IsDir);
                        }
                        da.nlink = da.nlink.saturating_sub(1);
                        da.ctime = ts;
                        if da.nlink == 0 {
                            self.release_inode(t, dino, &da)?;
                        } else {
                            store_attr(t, dino, &da)?;
                        }
                    }
                }
                t.delete(&keys::dentry(sp, sname))?;
                t.put(&keys::dentry(dp, dname), &enc_entry(sino, skind))?;
                if skind == FileType::Dir && sp != dp {
                    sa.parent = dp;
                    dirs.entry(sp).and_modify(|a| a.nlink -= 1);
                    dirs.entry(dp).and_modify(|a| a.nlink += 1);
                }
                sa.ctime = ts;
                store_attr(t, sino, &sa)?;
            }
            for (ino, mut a) in dirs {
                a.mtime = ts;
                a.ctime = ts;
                // The moved directory may also be one of the parents' records only if it is
                // its own parent, which the loop check above rules out.
                store_attr(t, ino, &a)?;
            }
            Ok(())
        })
    }

    /// Target of a symbolic link.
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        self.read(|t| {
            let a = load_attr(t, ino)?;
            if a.kind != FileType::Symlink {
                return Err(MetaError::Invalid("not a symbolic link".into()));
            }
            t.get(&keys::symlink(ino))?.ok_or_else(|| MetaError::Corrupt(format!("symlink {ino} without target")))
        })
    }

    /// Entries of a directory (without "." and ".."), optionally with their attributes.
    pub fn readdir(&self, ctx: &Ctx, ino: Ino, plus: bool) -> Result<Vec<Entry>> {
        Ok(self.readdir_page(ctx, ino, plus, b"", 0)?.entries)
    }

    /// Entries of a directory in name order: those after the name `after` (all when empty), at
    /// most `limit` of them (0: no limit); with the directory's attributes and whether more
    /// entries follow. A large directory is listed page by page, each page one transaction.
    pub fn readdir_page(&self, ctx: &Ctx, ino: Ino, plus: bool, after: &[u8], limit: usize) -> Result<DirPage> {
        self.read(|t| {
            let dir = load_dir(t, ino)?;
            access(ctx, &dir, 4)?;
            let p = keys::dentry_prefix(ino);
            // The first key after `after`: names never hold a NUL byte, so nothing lies between.
            let start = if after.is_empty() { p.to_vec() } else { [&p[..], after, &[0]].concat() };
            let want = if limit == 0 { usize::MAX } else { limit.saturating_add(1) };
            let mut out = Vec::new();
            for (k, v) in t.scan(&start, &prefix_end(&p), want)? {
                let (child, kind) = dec_entry(&v)?;
                out.push(Entry { name: k[9..].to_vec(), ino: child, kind, attr: None });
            }
            let more = limit != 0 && out.len() > limit;
            if more {
                out.truncate(limit);
            }
            if plus {
                let keys: Vec<Vec<u8>> = out.iter().map(|e| keys::attr(e.ino).to_vec()).collect();
                for (e, v) in out.iter_mut().zip(t.get_many(&keys)?) {
                    e.attr = Some(dec(&v.ok_or(MetaError::NotFound)?)?);
                }
            }
            Ok(DirPage { entries: out, dir, more })
        })
    }

    /// Changes attributes; a size change truncates or extends the file.
    pub fn setattr(&self, ctx: &Ctx, ino: Ino, req: &SetAttr) -> Result<Attr> {
        self.write(false, |t| {
            let mut a = load_attr(t, ino)?;
            let ts = now();
            let owner = !ctx.check || ctx.uid == 0 || ctx.uid == a.uid;
            if let Some(mode) = req.mode {
                if !owner {
                    return Err(MetaError::Perm);
                }
                let mut m = mode & 0o7777;
                if ctx.check && ctx.uid != 0 && !ctx.in_group(req.gid.unwrap_or(a.gid)) {
                    m &= !S_ISGID;
                }
                a.mode = m;
            }
            if req.uid.is_some() || req.gid.is_some() {
                let new_uid = req.uid.unwrap_or(a.uid);
                let new_gid = req.gid.unwrap_or(a.gid);
                if ctx.check && ctx.uid != 0 {
                    if new_uid != a.uid || ctx.uid != a.uid {
                        return Err(MetaError::Perm);
                    }
                    if new_gid != a.gid && !ctx.in_group(new_gid) {
                        return Err(MetaError::Perm);
                    }
                }
                if ctx.check && req.mode.is_none() && !a.is_dir() {
                    a.mode &= !S_ISUID;
                    if a.mode & 0o010 != 0 {
                        a.mode &= !S_ISGID;
                    }
                }
                a.uid = new_uid;
                a.gid = new_gid;
            }
            if let Some(size) = req.size {
                match a.kind {
                    FileType::File => {}
                    FileType::Dir => return Err(MetaError::IsDir),
                    _ => return Err(MetaError::Invalid("truncate of a special file".into())),
                }
                access(ctx, &a, 2)?;
                set_length(t, ino, &mut a, size)?;
                a.mtime = ts;
            }
            let may_touch = owner || access(ctx, &a, 2).is_ok();
            for (want, slot) in [(req.atime, &mut a.atime), (req.mtime, &mut a.mtime)] {
                match want {
                    Some(SetTime::Now) if !may_touch => return Err(MetaError::Access),
                    Some(SetTime::Now) => *slot = ts,
                    Some(SetTime::At(_)) if !owner => return Err(MetaError::Perm),
                    Some(SetTime::At(x)) => *slot = x,
                    None => {}
                }
            }
            a.ctime = ts;
            store_attr(t, ino, &a)?;
            Ok(a)
        })
    }

    /// Records written slices and the new length, in one transaction.
    pub fn commit_writes(&self, ino: Ino, writes: &[(u32, Slice)]) -> Result<Attr> {
        Ok(self.commit_writes_with(ino, writes, &[], false)?.attr)
    }

    /// [`Meta::commit_writes`], where `durable` makes this commit and every one before it durable. `journal` holds blocks of
    /// these slices (key, bytes as stored) that the client wrote to a local block directory but
    /// did not sync: they are kept with the commit, so one sync of the metadata makes the data
    /// durable too, until the server has synced the block files ([`Meta::journaled`],
    /// [`Meta::forget_journaled`]) or, after a crash, rewritten them from here.
    pub fn commit_writes_with(
        &self,
        ino: Ino,
        writes: &[(u32, Slice)],
        journal: &[(String, Vec<u8>)],
        durable: bool,
    ) -> Result<Committed> {
        self.write(durable, |t| {
            for (key, data) in journal {
                t.put(&keys::journal(key), data)?;
            }
            let mut a = load_attr(t, ino)?;
            if a.kind != FileType::File {
                return Err(MetaError::Invalid("write to a non-file".into()));
            }
            let mut end = a.size;
            for (idx, s) in writes {
                if u64::from(s.pos) + u64::from(s.len) > CHUNK_SIZE
                    || s.off.checked_add(s.len).is_none_or(|e| e > s.size)
                {
                    return Err(MetaError::Invalid("slice outside its chunk".into()));
                }
                if s.len > 0 {
                    end = end.max(u64::from(*idx) * CHUNK_SIZE + u64::from(s.pos) + u64::from(s.len));
                }
            }
            if end > MAX_FILE_SIZE {
                return Err(MetaError::TooBig);
            }
            let before = a.charged_bytes() as i64;
            a.size = end;
            charge(t, a.volume, a.charged_bytes() as i64 - before, 0)?;
            let mut chunk_slices: Vec<(u32, usize)> = Vec::new();
            for (idx, s) in writes.iter().filter(|(_, s)| s.len > 0) {
                let ck = keys::chunk(ino, *idx);
                let mut raw = t.get(&ck)?.unwrap_or_default();
                push_slice(&mut raw, s);
                t.put(&ck, &raw)?;
                let n = raw.len() / crate::codec::SLICE_LEN;
                match chunk_slices.iter_mut().find(|(i, _)| i == idx) {
                    Some(e) => e.1 = n,
                    None => chunk_slices.push((*idx, n)),
                }
            }
            let ts = now();
            a.mtime = ts;
            a.ctime = ts;
            store_attr(t, ino, &a)?;
            let used_bytes = load_usage(t, a.volume)?.bytes;
            let capacity = load_volume(t, a.volume)?.capacity;
            Ok(Committed { attr: a, chunk_slices, used_bytes, capacity })
        })
    }

    /// The slice list of one chunk, oldest first.
    pub fn read_chunk(&self, ino: Ino, idx: u32) -> Result<Vec<Slice>> {
        self.read(|t| match t.get(&keys::chunk(ino, idx))? {
            Some(raw) => dec_slices(&raw),
            None => {
                load_attr(t, ino)?;
                Ok(Vec::new())
            }
        })
    }

    /// Replaces the first `replaced` slices of a chunk with one slice holding the same bytes,
    /// if the list still starts with exactly those slices. Returns whether it did.
    pub fn compact_chunk(&self, ino: Ino, idx: u32, replaced: &[Slice], with: Slice) -> Result<bool> {
        self.write(false, |t| {
            let ck = keys::chunk(ino, idx);
            let Some(raw) = t.get(&ck)? else { return Ok(false) };
            let cur = dec_slices(&raw)?;
            if cur.len() < replaced.len() || cur[..replaced.len()] != *replaced {
                return Ok(false);
            }
            let a = load_attr(t, ino)?;
            let mut out = Vec::with_capacity((cur.len() - replaced.len() + 1) * crate::codec::SLICE_LEN);
            push_slice(&mut out, &with);
            for s in &cur[replaced.len()..] {
                push_slice(&mut out, s);
            }
            t.put(&ck, &out)?;
            let still: std::collections::HashSet<u64> = cur[replaced.len()..].iter().map(|s| s.id).collect();
            let mut seen = std::collections::HashSet::new();
            for s in replaced {
                if s.id != 0 && !still.contains(&s.id) && seen.insert(s.id) {
                    free_slice(t, a.volume, ino, s)?;
                }
            }
            Ok(true)
        })
    }

    // ---- extended attributes ----

    /// Value of an extended attribute.
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        if name.len() > XATTR_NAME_MAX {
            return Err(MetaError::Range);
        }
        self.read(|t| {
            load_attr(t, ino)?;
            t.get(&keys::xattr(ino, name))?.ok_or(MetaError::NoAttr)
        })
    }

    /// Names of all extended attributes.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<Vec<u8>>> {
        self.read(|t| {
            load_attr(t, ino)?;
            let p = keys::xattr_prefix(ino);
            Ok(t.scan(&p, &prefix_end(&p), usize::MAX)?.into_iter().map(|(k, _)| k[9..].to_vec()).collect())
        })
    }

    /// Sets an extended attribute (`XATTR_CREATE` / `XATTR_REPLACE` flags).
    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(MetaError::Range);
        }
        if value.len() > XATTR_SIZE_MAX {
            return Err(MetaError::TooBig);
        }
        self.write(false, |t| {
            let mut a = load_attr(t, ino)?;
            let k = keys::xattr(ino, name);
            let exists = t.get(&k)?.is_some();
            if flags & XATTR_CREATE != 0 && exists {
                return Err(MetaError::Exists);
            }
            if flags & XATTR_REPLACE != 0 && !exists {
                return Err(MetaError::NoAttr);
            }
            t.put(&k, value)?;
            a.ctime = now();
            store_attr(t, ino, &a)
        })
    }

    /// Removes an extended attribute.
    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<()> {
        if name.len() > XATTR_NAME_MAX {
            return Err(MetaError::Range);
        }
        self.write(false, |t| {
            let mut a = load_attr(t, ino)?;
            let k = keys::xattr(ino, name);
            if t.get(&k)?.is_none() {
                return Err(MetaError::NoAttr);
            }
            t.delete(&k)?;
            a.ctime = now();
            store_attr(t, ino, &a)
        })
    }

    // ---- open files and collection ----

    fn open_table(&self) -> Result<std::sync::MutexGuard<'_, OpenTable>> {
        self.opens.lock().map_err(|_| MetaError::Engine("open table poisoned".into()))
    }

    /// Whether any session has `ino` open. With shared state this reads the open records in
    /// the caller's transaction, so an open committed by another server is seen (or the two
    /// transactions conflict and one is retried).
    /// [`Meta::is_open`], asked once per inode in one transaction (`seen` remembers answers).
    fn is_open_seen(&self, t: &mut dyn KvTxn, seen: &mut HashMap<Ino, bool>, ino: Ino) -> Result<bool> {
        if let Some(o) = seen.get(&ino) {
            return Ok(*o);
        }
        let o = self.is_open(t, ino)?;
        seen.insert(ino, o);
        Ok(o)
    }

    fn is_open(&self, t: &mut dyn KvTxn, ino: Ino) -> Result<bool> {
        if self.is_shared() {
            let p = keys::open_prefix(ino);
            return Ok(!t.scan(&p, &prefix_end(&p), 1)?.is_empty());
        }
        // A poisoned table counts as open: keeping a file is safe, destroying it is not.
        Ok(self.opens.lock().map(|o| o.by_ino.contains_key(&ino)).unwrap_or(true))
    }

    /// Every inode some session has open.
    fn open_inodes(&self) -> Result<Vec<Ino>> {
        if !self.is_shared() {
            return Ok(self.open_table()?.by_ino.keys().copied().collect());
        }
        let mut out: Vec<Ino> = Vec::new();
        let end = prefix_end(keys::OPEN_PREFIX);
        let mut from = keys::OPEN_PREFIX.to_vec();
        loop {
            let page = self.read(|t| t.scan(&from, &end, 4096))?;
            let Some((last, _)) = page.last() else { break };
            from = last.clone();
            from.push(0);
            for (k, _) in &page {
                if let Some(ino) = keys::u64_at(k, 1)
                    && out.last() != Some(&ino)
                {
                    out.push(ino);
                }
            }
        }
        Ok(out)
    }

    /// Records that `session` opened `ino` and returns its current attributes.
    pub fn open(&self, session: u64, ino: Ino) -> Result<Attr> {
        if self.is_shared() {
            // One transaction: an unlink on another server either sees this open or came first.
            return self.write(false, |t| {
                let a = load_attr(t, ino)?;
                add_open(t, session, ino)?;
                Ok(a)
            });
        }
        self.note_open(session, ino)?;
        match self.getattr(ino) {
            Ok(a) => Ok(a),
            Err(e) => {
                self.close(session, ino)?;
                Err(e)
            }
        }
    }

    /// Records an open without reading attributes (a reconnecting client re-announcing).
    pub fn note_open(&self, session: u64, ino: Ino) -> Result<()> {
        if self.is_shared() {
            return self.write(false, |t| add_open(t, session, ino));
        }
        let mut o = self.open_table()?;
        *o.by_ino.entry(ino).or_insert(0) += 1;
        *o.by_session.entry(session).or_default().entry(ino).or_insert(0) += 1;
        Ok(())
    }

    /// Records a close; the last close of an unlinked inode destroys it.
    pub fn close(&self, session: u64, ino: Ino) -> Result<()> {
        if self.is_shared() {
            // The last close and the destruction are one transaction, so an open through
            // another server cannot slip in between.
            return self.write(false, |t| {
                let k = keys::open(ino, session);
                let Some(v) = t.get(&k)? else { return Ok(()) };
                let n: u32 = dec(&v)?;
                if n > 1 {
                    return t.put(&k, &enc(&(n - 1))?);
                }
                t.delete(&k)?;
                t.delete(&keys::session_open(session, ino))?;
                self.reap_in(t, ino).map(|_| ())
            });
        }
        let last = {
            let mut o = self.open_table()?;
            if let Some(s) = o.by_session.get_mut(&session)
                && let Some(n) = s.get_mut(&ino)
            {
                *n -= 1;
                if *n == 0 {
                    s.remove(&ino);
                }
            } else {
                return Ok(());
            }
            match o.by_ino.get_mut(&ino) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    o.by_ino.remove(&ino);
                    true
                }
            }
        };
        if last {
            self.reap_if_unlinked(ino)?;
        }
        Ok(())
    }

    /// Forgets every open of a session (it closed or expired).
    pub fn close_session(&self, session: u64) -> Result<()> {
        if self.is_shared() {
            for ino in self.write(false, |t| drop_session_opens(t, session))? {
                self.reap_if_unlinked(ino)?;
            }
            return Ok(());
        }
        let inos: Vec<(Ino, u32)> = {
            let o = self.open_table()?;
            o.by_session.get(&session).map(|m| m.iter().map(|(k, v)| (*k, *v)).collect()).unwrap_or_default()
        };
        for (ino, n) in inos {
            for _ in 0..n {
                self.close(session, ino)?;
            }
        }
        if let Ok(mut o) = self.opens.lock() {
            o.by_session.remove(&session);
        }
        Ok(())
    }

    /// Destroys `ino` if it is unlinked and nobody has it open, inside the caller's
    /// transaction. Returns whether a sustained record was settled.
    fn reap_in(&self, t: &mut dyn KvTxn, ino: Ino) -> Result<bool> {
        let Some(mark) = t.get(&keys::sustained(ino))? else { return Ok(false) };
        if self.is_open(t, ino)? {
            return Ok(false);
        }
        match load_attr(t, ino) {
            Ok(a) if a.nlink == 0 => match keys::uncharged_bytes(&mark) {
                Some(given) => destroy_uncharged(t, ino, &a, given)?,
                None => destroy(t, ino, &a)?,
            },
            Ok(_) | Err(MetaError::NotFound) => t.delete(&keys::sustained(ino))?,
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    pub(crate) fn reap_if_unlinked(&self, ino: Ino) -> Result<bool> {
        self.write(false, |t| self.reap_in(t, ino))
    }

    /// Destroys unlinked inodes nobody has open any more (after a restart, once clients had
    /// time to re-announce their open files).
    pub fn reap_orphans(&self) -> Result<usize> {
        let inos: Vec<Ino> = self.read(|t| {
            Ok(t.scan(keys::SUSTAINED_PREFIX, &prefix_end(keys::SUSTAINED_PREFIX), 10_000)?
                .into_iter()
                .filter_map(|(k, _)| keys::u64_at(&k, 1))
                .collect())
        })?;
        let mut n = 0;
        for ino in inos {
            if self.reap_if_unlinked(ino)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Slices whose blocks may be deleted now (their inode is not open anywhere).
    pub fn collectable(&self, limit: usize) -> Result<Vec<(u64, Pending)>> {
        // Page through the pending slices: those of open files are skipped, and must not hide
        // the ones behind them from a collector asking for `limit` at a time.
        let end = prefix_end(keys::PENDING_PREFIX);
        let mut start = keys::PENDING_PREFIX.to_vec();
        let mut out = Vec::new();
        while out.len() < limit {
            // Whether each inode is open is read in the page's own transaction (one lookup per
            // distinct inode).
            let (page, free) = self.read(|t| {
                let page = t.scan(&start, &end, 1024)?;
                let mut open: HashMap<Ino, bool> = HashMap::new();
                let mut free = Vec::with_capacity(page.len());
                for (k, v) in &page {
                    let id = keys::u64_at(k, 1).ok_or_else(|| MetaError::Corrupt("pending key".into()))?;
                    let p: Pending = dec(v)?;
                    if !self.is_open_seen(t, &mut open, p.ino)? {
                        free.push((id, p));
                    }
                }
                Ok((page, free))
            })?;
            let Some((last, _)) = page.last() else { break };
            start = last.clone();
            start.push(0);
            for item in free {
                out.push(item);
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Those of `ids` that are collectable now (see [`Meta::collectable`]): unreferenced, of
    /// an inode open nowhere, so nobody reads their blocks again.
    pub fn collectable_among(&self, ids: &[u64]) -> Result<std::collections::HashSet<u64>> {
        self.read(|t| {
            let mut out = std::collections::HashSet::new();
            let mut open: HashMap<Ino, bool> = HashMap::new();
            for id in ids {
                let Some(v) = t.get(&keys::pending(*id))? else { continue };
                let p: Pending = dec(&v)?;
                if !self.is_open_seen(t, &mut open, p.ino)? {
                    out.insert(*id);
                }
            }
            Ok(out)
        })
    }

    /// Every slice id the namespace still needs: referenced by a chunk, or awaiting collection.
    /// A block whose slice is not in this set was uploaded by a client that never committed it.
    pub fn referenced_slices(&self) -> Result<std::collections::HashSet<u64>> {
        self.read(|t| {
            let mut ids = std::collections::HashSet::new();
            for prefix in [&b"C"[..], keys::PENDING_PREFIX] {
                let end = prefix_end(prefix);
                let mut from = prefix.to_vec();
                loop {
                    let batch = t.scan(&from, &end, 4096)?;
                    let Some((last, _)) = batch.last() else { break };
                    from = last.clone();
                    from.push(0);
                    for (k, v) in &batch {
                        if prefix == keys::PENDING_PREFIX {
                            ids.extend(keys::u64_at(k, 1));
                        } else {
                            ids.extend(dec_slices(v)?.iter().map(|s| s.id).filter(|id| *id != 0));
                        }
                    }
                }
            }
            Ok(ids)
        })
    }

    /// Up to `limit` journaled blocks, in key order after block key `after` (from the first
    /// when `None`): key and bytes as stored.
    pub fn journaled(&self, after: Option<&str>, limit: usize) -> Result<Vec<(String, Vec<u8>)>> {
        let end = prefix_end(keys::JOURNAL_PREFIX);
        let start = match after {
            // The smallest key greater than `after`'s.
            Some(k) => {
                let mut s = keys::journal(k);
                s.push(0);
                s
            }
            None => keys::JOURNAL_PREFIX.to_vec(),
        };
        self.read(|t| {
            t.scan(&start, &end, limit)?
                .into_iter()
                .map(|(k, v)| {
                    let key =
                        String::from_utf8(k[1..].to_vec()).map_err(|_| MetaError::Corrupt("journal key".into()))?;
                    Ok((key, v))
                })
                .collect()
        })
    }

    /// The journaled copy of one block (bytes as stored): what a reader gets while the server
    /// has not yet written the block's file. `None` when the block is not journaled.
    pub fn journaled_block(&self, block_key: &str) -> Result<Option<Vec<u8>>> {
        self.read(|t| t.get(&keys::journal(block_key)))
    }

    /// Those of `block_keys` that are still journaled (their files may not be written yet).
    pub fn journaled_among(&self, block_keys: &[String]) -> Result<Vec<String>> {
        self.read(|t| {
            let mut out = Vec::new();
            for k in block_keys {
                if t.get(&keys::journal(k))?.is_some() {
                    out.push(k.clone());
                }
            }
            Ok(out)
        })
    }

    /// Drops journaled blocks whose files are durable.
    pub fn forget_journaled(&self, keys_done: &[String]) -> Result<()> {
        self.write(false, |t| {
            for k in keys_done {
                t.delete(&keys::journal(k))?;
            }
            Ok(())
        })
    }

    /// Forgets pending slices whose blocks are gone.
    pub fn forget_pending(&self, ids: &[u64]) -> Result<()> {
        self.write(false, |t| {
            for id in ids {
                t.delete(&keys::pending(*id))?;
            }
            Ok(())
        })
    }
}

//! Key layout. Every key starts with a one-byte table tag; numbers are big-endian so that
//! keys of one inode sort together and range scans list a directory or a file's chunks.

use crate::types::Ino;

/// Inode attributes: `A ino`.
pub fn attr(ino: Ino) -> [u8; 9] {
    tagged(b'A', ino)
}

/// Directory entry: `D parent name`.
pub fn dentry(parent: Ino, name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + name.len());
    k.extend_from_slice(&tagged(b'D', parent));
    k.extend_from_slice(name);
    k
}

/// Prefix of all entries of a directory.
pub fn dentry_prefix(parent: Ino) -> [u8; 9] {
    tagged(b'D', parent)
}

/// Slice list of one chunk: `C ino idx`.
pub fn chunk(ino: Ino, idx: u32) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..9].copy_from_slice(&tagged(b'C', ino));
    k[9..].copy_from_slice(&idx.to_be_bytes());
    k
}

/// Prefix of all chunks of a file.
pub fn chunk_prefix(ino: Ino) -> [u8; 9] {
    tagged(b'C', ino)
}

/// Extended attribute: `X ino name`.
pub fn xattr(ino: Ino, name: &[u8]) -> Vec<u8> {
    let mut k = tagged(b'X', ino).to_vec();
    k.extend_from_slice(name);
    k
}

/// Prefix of all xattrs of an inode.
pub fn xattr_prefix(ino: Ino) -> [u8; 9] {
    tagged(b'X', ino)
}

/// Symbolic link target: `L ino`.
pub fn symlink(ino: Ino) -> [u8; 9] {
    tagged(b'L', ino)
}

/// A named counter: `N name`.
pub fn counter(name: &str) -> Vec<u8> {
    let mut k = vec![b'N'];
    k.extend_from_slice(name.as_bytes());
    k
}

/// Volume record by id: `V id`.
pub fn volume(id: u32) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[0] = b'V';
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// Prefix of all volume records.
pub const VOLUME_PREFIX: &[u8] = b"V";

/// Volume name index: `v name` -> id.
pub fn volume_name(name: &str) -> Vec<u8> {
    let mut k = vec![b'v'];
    k.extend_from_slice(name.as_bytes());
    k
}

/// Usage counters of a volume: `U id`.
pub fn usage(vol: u32) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[0] = b'U';
    k[1..].copy_from_slice(&vol.to_be_bytes());
    k
}

/// A volume's own QoS limits, overriding its class's: `Q id` -> postcard
/// `(bytes_per_sec, ops_per_sec)`. Kept apart from the volume record so that records written
/// before it existed still decode.
pub fn volume_qos(vol: u32) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[0] = b'Q';
    k[1..].copy_from_slice(&vol.to_be_bytes());
    k
}

/// Slice awaiting block deletion: `G id`.
pub fn pending(slice: u64) -> [u8; 9] {
    tagged(b'G', slice)
}

/// Prefix of all pending slices.
pub const PENDING_PREFIX: &[u8] = b"G";

/// Extra references to a slice shared by snapshots: `R id` -> count beyond the first.
pub fn slice_refs(slice: u64) -> [u8; 9] {
    tagged(b'R', slice)
}

/// A small block whose durability a commit left to the server: `J block-key` -> its bytes as
/// stored (see `Meta::commit_writes`).
pub fn journal(block_key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + block_key.len());
    k.push(b'J');
    k.extend_from_slice(block_key.as_bytes());
    k
}

/// Prefix of all journaled blocks.
pub const JOURNAL_PREFIX: &[u8] = b"J";

/// Inode unlinked while open, kept until its last close: `O ino`. The value is empty, or
/// [`uncharged`] when the unlink already gave its usage back to the volume.
pub fn sustained(ino: Ino) -> [u8; 9] {
    tagged(b'O', ino)
}

/// Value of a sustained record whose unlink gave `bytes` of usage and the inode back to the
/// volume: `u bytes`.
pub fn uncharged(bytes: u64) -> [u8; 9] {
    tagged(b'u', bytes)
}

/// The bytes an [`uncharged`] value gave back; `None` for any other value.
pub fn uncharged_bytes(v: &[u8]) -> Option<u64> {
    if v.first() == Some(&b'u') { u64_at(v, 1) } else { None }
}

/// Prefix of all sustained inodes.
pub const SUSTAINED_PREFIX: &[u8] = b"O";

/// Shared state only: `session` holds `ino` open this many times: `H ino session` -> count.
/// Keyed by inode first so that "is it open anywhere" is a one-row prefix scan.
pub fn open(ino: Ino, session: u64) -> [u8; 17] {
    pair(b'H', ino, session)
}

/// Prefix of the open records of one inode.
pub fn open_prefix(ino: Ino) -> [u8; 9] {
    tagged(b'H', ino)
}

/// Prefix of all open records.
pub const OPEN_PREFIX: &[u8] = b"H";

/// Shared state only: index of a session's opens, `h session ino` (empty value).
pub fn session_open(session: u64, ino: Ino) -> [u8; 17] {
    pair(b'h', session, ino)
}

/// Prefix of one session's open index.
pub fn session_open_prefix(session: u64) -> [u8; 9] {
    tagged(b'h', session)
}

/// Shared state only: a client session with its last heartbeat: `S id`.
pub fn session(id: u64) -> [u8; 9] {
    tagged(b'S', id)
}

/// Prefix of all session records.
pub const SESSION_PREFIX: &[u8] = b"S";

/// Shared state only: the advisory lock ranges held on an inode: `F ino`.
pub fn locks(ino: Ino) -> [u8; 9] {
    tagged(b'F', ino)
}

/// Shared state only: index of the inodes a session holds locks on, `f session ino`.
pub fn session_lock(session: u64, ino: Ino) -> [u8; 17] {
    pair(b'f', session, ino)
}

/// Prefix of one session's lock index.
pub fn session_lock_prefix(session: u64) -> [u8; 9] {
    tagged(b'f', session)
}

/// Token record by hash: `T sha256`.
pub fn token(hash: &[u8; 32]) -> Vec<u8> {
    let mut k = vec![b'T'];
    k.extend_from_slice(hash);
    k
}

/// Prefix of all token records.
pub const TOKEN_PREFIX: &[u8] = b"T";

/// Storage class by name: `K name`.
pub fn class(name: &str) -> Vec<u8> {
    let mut k = vec![b'K'];
    k.extend_from_slice(name.as_bytes());
    k
}

/// Prefix of all storage classes.
pub const CLASS_PREFIX: &[u8] = b"K";

/// Scope by path: `P path`.
pub fn scope(path: &str) -> Vec<u8> {
    let mut k = vec![b'P'];
    k.extend_from_slice(path.as_bytes());
    k
}

/// Prefix of all scopes.
pub const SCOPE_PREFIX: &[u8] = b"P";

/// A scope's own policy: `Y path`.
pub fn policy(path: &str) -> Vec<u8> {
    let mut k = vec![b'Y'];
    k.extend_from_slice(path.as_bytes());
    k
}

/// A snapshot of volume `vol` taken at `epoch`: `W vol epoch` -> JSON [`crate::Snapshot`].
/// A volume's snapshots sort by epoch, so the latest is the last.
pub fn snapshot(vol: u32, epoch: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[0] = b'W';
    k[1..5].copy_from_slice(&vol.to_be_bytes());
    k[5..].copy_from_slice(&epoch.to_be_bytes());
    k
}

/// Prefix of the snapshots of one volume.
pub fn snapshot_prefix(vol: u32) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[0] = b'W';
    k[1..].copy_from_slice(&vol.to_be_bytes());
    k
}

/// Prefix of every snapshot record.
pub const SNAPSHOT_PREFIX: &[u8] = b"W";

/// The volume a snapshot epoch belongs to: `w epoch` -> volume id (4 bytes).
pub fn snapshot_volume(epoch: u64) -> [u8; 9] {
    tagged(b'w', epoch)
}

/// How many snapshot records exist (any volume, any state): lets writes skip versioning
/// entirely on a store that has none.
pub const SNAPSHOT_COUNT: &[u8] = b"!snapshots";

/// The value a namespace record `key` had when snapshot `epoch` was taken, saved by the first
/// change after it: `Z key epoch` -> `0` (absent) or `1` + value. Names never hold a NUL byte
/// and epochs start with one, so all versions of one record sort together, in record order.
pub fn version(key: &[u8], epoch: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 9);
    k.push(b'Z');
    k.extend_from_slice(key);
    k.extend_from_slice(&epoch.to_be_bytes());
    k
}

/// The record key and epoch of a [`version`] key.
pub fn parse_version(k: &[u8]) -> Option<(&[u8], u64)> {
    if k.len() < 10 || k[0] != b'Z' {
        return None;
    }
    let (key, e) = k[1..].split_at(k.len() - 9);
    Some((key, u64::from_be_bytes(e.try_into().ok()?)))
}

/// Index of the versions a snapshot holds: `z epoch key` (empty value).
pub fn version_index(epoch: u64, key: &[u8]) -> Vec<u8> {
    let mut k = tagged(b'z', epoch).to_vec();
    k.extend_from_slice(key);
    k
}

/// Prefix of one snapshot's version index.
pub fn version_index_prefix(epoch: u64) -> [u8; 9] {
    tagged(b'z', epoch)
}

/// A data volume by name: `E name` -> JSON [`crate::DataVolume`].
pub fn datavolume(name: &str) -> Vec<u8> {
    let mut k = vec![b'E'];
    k.extend_from_slice(name.as_bytes());
    k
}

/// Prefix of all data volumes.
pub const DATAVOLUME_PREFIX: &[u8] = b"E";

/// Schema version marker.
pub const SCHEMA: &[u8] = b"!schema";

fn tagged(tag: u8, n: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = tag;
    k[1..].copy_from_slice(&n.to_be_bytes());
    k
}

fn pair(tag: u8, a: u64, b: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = tag;
    k[1..9].copy_from_slice(&a.to_be_bytes());
    k[9..].copy_from_slice(&b.to_be_bytes());
    k
}

/// Reads the big-endian u64 at `at` in a key.
pub fn u64_at(key: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = key.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

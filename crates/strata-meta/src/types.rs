//! The records the namespace is made of beyond the shared plain types (`strata-types`):
//! directory pages, volumes and their usage, commits and pending slices.

use serde::{Deserialize, Serialize};

pub use strata_types::{
    AccessMode, Attr, CHUNK_SIZE, Ctx, DEFAULT_BLOCK_SIZE, FileIdentity, FileType, Ino, LINK_MAX, MAX_FILE_SIZE,
    MAX_JOURNAL_BYTES, NAME_MAX, PATH_MAX, RenameIf, SetAttr, SetTime, Slice, Timespec, XATTR_NAME_MAX,
};

/// What a commit of writes leaves behind, read in the commit's own transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct Committed {
    /// The file's attributes after the commit.
    pub attr: Attr,
    /// How many slices each written chunk holds now.
    pub chunk_slices: Vec<(u32, usize)>,
    /// Bytes charged to the file's volume.
    pub used_bytes: u64,
    /// The volume's capacity in bytes (0: none).
    pub capacity: u64,
}

/// What a create did, read in its own transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct Created {
    /// The inode the name now leads to: made, or the existing file of an open-or-create.
    pub ino: Ino,
    /// Its attributes.
    pub attr: Attr,
    /// Whether the create made it.
    pub created: bool,
    /// The parent directory's attributes after the create.
    pub parent: Attr,
}

/// One page of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirPage {
    /// The entries, in name order.
    pub entries: Vec<Entry>,
    /// The directory's attributes.
    pub dir: Attr,
    /// Whether entries follow the last one (the page was cut at its limit).
    pub more: bool,
}

/// A directory entry as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Name within the directory.
    pub name: Vec<u8>,
    /// Inode it points to.
    pub ino: Ino,
    /// Its type.
    pub kind: FileType,
    /// Its attributes, when asked for (readdirplus).
    pub attr: Option<Attr>,
}

/// What happens to a volume's data when it is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Reclaim {
    /// Delete metadata and blocks.
    #[default]
    Delete,
    /// Keep everything; only detach the volume from use.
    Retain,
}

/// A volume: a top-level namespace with its own root, quota and storage class.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// Numeric id, used in block keys.
    pub id: u32,
    /// Unique name.
    pub name: String,
    /// Root directory inode.
    pub root: Ino,
    /// Storage class name.
    #[serde(default)]
    pub class: String,
    /// Byte quota; 0 means unlimited.
    #[serde(default)]
    pub capacity: u64,
    /// Inode quota; 0 means unlimited.
    #[serde(default)]
    pub inode_limit: u64,
    /// Block size for new data.
    pub block_size: u32,
    /// Where blocks live, as a URL (`file:///path`).
    pub store: String,
    /// Compression of new blocks ("none", "lz4", "zstd").
    #[serde(default)]
    pub compression: String,
    /// Reclaim policy.
    #[serde(default)]
    pub reclaim: Reclaim,
    /// Owning scope ("cluster" until scopes exist).
    #[serde(default)]
    pub scope: String,
    /// Creation time.
    pub created: Timespec,
    /// How it may be attached.
    #[serde(default = "default_access_mode")]
    pub access_mode: AccessMode,
    /// A clone's sources, nearest first: `(volume, first slice id of the volume after it)`.
    /// Slices numbered below an origin's mark were the origin's, and their blocks are under
    /// its name (see [`Volume::block_volume`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<(u32, u64)>,
    /// A clone still being copied: not usable, deleted if the server restarts before the
    /// copy ends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub building: bool,
    /// Deleted, but kept because clones still read blocks under its name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gone: bool,
    /// Deleted, its tree still being removed (in batches; finished at the next start after a
    /// crash).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removing: bool,
}

impl Volume {
    /// The volume whose block names hold slice `id` of this volume: its own, or an origin's
    /// for slices a clone shares with its source.
    pub fn block_volume(&self, id: u64) -> u32 {
        let mut owner = self.id;
        for (v, mark) in &self.origins {
            if id < *mark {
                owner = *v;
            } else {
                break;
            }
        }
        owner
    }

    /// The description a client attaching this volume gets, with its use.
    pub fn info(&self, usage: &Usage) -> strata_types::VolumeInfo {
        strata_types::VolumeInfo {
            id: self.id,
            name: self.name.clone(),
            root: self.root,
            class: self.class.clone(),
            capacity: self.capacity,
            inode_limit: self.inode_limit,
            block_size: self.block_size,
            store: self.store.clone(),
            compression: self.compression.clone(),
            reclaim: match self.reclaim {
                Reclaim::Delete => "delete".into(),
                Reclaim::Retain => "retain".into(),
            },
            scope: self.scope.clone(),
            created_sec: self.created.sec,
            used_bytes: usage.bytes,
            used_inodes: usage.inodes,
            access_mode: self.access_mode.as_str().to_string(),
            origin_volumes: self.origins.iter().map(|o| o.0).collect(),
            origin_marks: self.origins.iter().map(|o| o.1).collect(),
            ..Default::default()
        }
    }
}

fn default_access_mode() -> AccessMode {
    AccessMode::ReadWriteMany
}

/// Space and inodes a volume uses.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes charged (sizes rounded up to 4 KiB).
    pub bytes: u64,
    /// Inodes in use.
    pub inodes: u64,
}

/// A slice whose last reference went; its blocks are deleted by the collector.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// Volume whose store holds the blocks.
    pub volume: u32,
    /// Stored slice size (names the blocks).
    pub size: u32,
    /// The inode it belonged to: blocks wait while that inode is open anywhere.
    pub ino: Ino,
}

/// What is known of one client session.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session id.
    pub id: u64,
    /// Volume id it mounted.
    pub volume: u32,
    /// Volume name.
    pub volume_name: String,
    /// Client description (host and mount point).
    pub client: String,
    /// When it registered.
    pub since: Timespec,
    /// Last heartbeat or call (wall clock of the server that saw it).
    pub last_seen: Timespec,
    /// The server it registered with or last heartbeat through (its listen address).
    pub server: String,
    /// The client's Strata version (empty for clients that do not say).
    pub version: String,
    /// Where the client serves its block cache to the volume's other clients (empty: nowhere).
    pub peer: String,
}

/// [`SessionInfo`] as servers before peer caches stored it (shared state): still read.
#[derive(Deserialize)]
pub(crate) struct SessionInfoV2 {
    id: u64,
    volume: u32,
    volume_name: String,
    client: String,
    since: Timespec,
    last_seen: Timespec,
    server: String,
    version: String,
}

impl From<SessionInfoV2> for SessionInfo {
    fn from(s: SessionInfoV2) -> Self {
        let SessionInfoV2 { id, volume, volume_name, client, since, last_seen, server, version } = s;
        SessionInfo { id, volume, volume_name, client, since, last_seen, server, version, peer: String::new() }
    }
}

/// [`SessionInfo`] as servers before client versions stored it (shared state): still read,
/// so that servers of both versions can share a database during an upgrade.
#[derive(Deserialize)]
pub(crate) struct SessionInfoV1 {
    id: u64,
    volume: u32,
    volume_name: String,
    client: String,
    since: Timespec,
    last_seen: Timespec,
    server: String,
}

impl From<SessionInfoV1> for SessionInfo {
    fn from(s: SessionInfoV1) -> Self {
        let SessionInfoV1 { id, volume, volume_name, client, since, last_seen, server } = s;
        SessionInfo {
            id,
            volume,
            volume_name,
            client,
            since,
            last_seen,
            server,
            version: String::new(),
            peer: String::new(),
        }
    }
}

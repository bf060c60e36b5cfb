//! A volume as a client attaches it.

/// A volume as the server describes it to a client attaching it: where its blocks go, its
/// quota and use at that moment, and its storage class's per-client settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Numeric id, used in block keys.
    pub id: u32,
    /// Unique name.
    pub name: String,
    /// Root directory inode.
    pub root: u64,
    /// Storage class name.
    pub class: String,
    /// Byte quota (0: none).
    pub capacity: u64,
    /// Inode quota (0: none).
    pub inode_limit: u64,
    /// Bytes per block of new data.
    pub block_size: u32,
    /// Where blocks live, as a URL (`file:///path`, `s3://bucket/prefix`).
    pub store: String,
    /// Compression of new blocks ("none", "lz4", "zstd").
    pub compression: String,
    /// Reclaim policy ("delete" or "retain").
    pub reclaim: String,
    /// Owning scope.
    pub scope: String,
    /// Creation time, in seconds since the epoch.
    pub created_sec: i64,
    /// Bytes charged when the description was made.
    pub used_bytes: u64,
    /// Inodes in use when the description was made.
    pub used_inodes: u64,
    /// Per-client limit on bytes per second (0: none), from the storage class.
    pub qos_bytes_per_sec: u64,
    /// Per-client limit on operations per second (0: none), from the storage class.
    pub qos_ops_per_sec: u64,
    /// The class's memory cache default for clients (0: the client's own default).
    pub cache_mem_bytes: u64,
    /// The class's read-ahead default for clients (0: the client's own default).
    pub readahead_bytes: u64,
    /// How the volume may be attached (an [`crate::AccessMode`] name).
    pub access_mode: String,
    /// A snapshot or a data volume's version: nothing may be written.
    pub read_only: bool,
    /// A clone's sources, nearest first (see [`VolumeInfo::block_volume`]).
    pub origin_volumes: Vec<u32>,
    /// The first slice id each origin did not give (parallel to `origin_volumes`).
    pub origin_marks: Vec<u64>,
    /// What a read-only mount shows (`VOLUME@SNAPSHOT`, `dv:NAME@VERSION`); empty when live.
    pub view: String,
}

impl VolumeInfo {
    /// The volume whose block names hold slice `id`: this one's, or, for a slice a clone
    /// shares with its source, the source's.
    pub fn block_volume(&self, id: u64) -> u32 {
        let mut owner = self.id;
        for (v, mark) in self.origin_volumes.iter().zip(&self.origin_marks) {
            if id < *mark {
                owner = *v;
            } else {
                break;
            }
        }
        owner
    }
}

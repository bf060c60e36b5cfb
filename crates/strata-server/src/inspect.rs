//! `strata info` and `strata summary`: a path's inode with its chunks, slices and blocks (and
//! whether each block is in its store), and a tree of sizes and counts. Anyone whose token
//! sees the volume may ask.

use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use strata_blocks::layout::{block_key, slice_blocks};
use strata_meta::FileType;
use strata_meta::inspect::SummaryNode;

use crate::gc::meta_task;
use crate::state::State;

/// Most blocks whose presence `strata info` checks in the store (one request each).
pub const MAX_CHECKED_BLOCKS: usize = 4096;

/// What `strata info` and `strata summary` ask about.
#[derive(Serialize, Deserialize, Clone, Debug, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PathRequest {
    /// The volume.
    pub volume: String,
    /// The path from the volume's root (`/` for the root).
    pub path: String,
    /// `strata summary`: levels of entries to show (default 1).
    #[serde(default)]
    pub depth: Option<u32>,
    /// `strata summary`: most entries shown per directory, the largest (default 20).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// One inode, as `strata info` shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, utoipa::ToSchema)]
pub struct InfoView {
    /// `VOLUME:/path`.
    pub path: String,
    /// Inode number.
    pub ino: u64,
    /// `file`, `directory`, `symlink` or `special`.
    pub kind: String,
    /// Length in bytes.
    pub size: u64,
    /// Link count.
    pub nlink: u32,
    /// Permission bits (octal).
    pub mode: String,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Extended attributes.
    pub xattrs: u64,
    /// Directories: entries.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub entries: Option<u64>,
    /// Symlinks: the target.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub target: Option<String>,
    /// Files: the block size of the volume and where its blocks are.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub store: Option<String>,
    /// Files: chunks (64 MiB each) with their slices, oldest first (later ones cover
    /// earlier ones where they overlap).
    pub chunks: Vec<ChunkView>,
    /// Whether more blocks than were checked exist (see [`MAX_CHECKED_BLOCKS`]).
    pub unchecked_blocks: u64,
}

/// A chunk of a file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, utoipa::ToSchema)]
pub struct ChunkView {
    /// Index (offset / 64 MiB).
    pub index: u32,
    /// Its slices, oldest first.
    pub slices: Vec<SliceView>,
}

/// A slice: one write's data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, utoipa::ToSchema)]
pub struct SliceView {
    /// Slice id (0: a hole).
    pub id: u64,
    /// Offset in the chunk.
    pub pos: u32,
    /// Bytes of the chunk it covers.
    pub len: u32,
    /// Offset of those bytes in the slice.
    pub off: u32,
    /// Stored length of the slice.
    pub size: u32,
    /// Its blocks.
    pub blocks: Vec<BlockView>,
}

/// A block and where it lives.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, utoipa::ToSchema)]
pub struct BlockView {
    /// Key in the block store.
    pub key: String,
    /// Length the key names.
    pub len: u32,
    /// The file holding it, for stores in a directory.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub file: Option<String>,
    /// Stored length found in the store; absent when missing or not checked.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stored: Option<u64>,
    /// `ok`, `missing`, `journaled` (its file is still to be written), or `unchecked`.
    pub state: String,
}

fn kind_name(k: FileType) -> &'static str {
    match k {
        FileType::File => "file",
        FileType::Dir => "directory",
        FileType::Symlink => "symlink",
        _ => "special",
    }
}

/// `strata info`: the inode at a path, its chunks, slices and blocks.
pub async fn info(st: &State, req: PathRequest) -> Result<InfoView, strata_meta::MetaError> {
    let meta = st.meta.clone();
    let (volume, path) = (req.volume.clone(), req.path.clone());
    let i = tokio::task::spawn_blocking(move || meta.inspect(&volume, &path))
        .await
        .map_err(|e| strata_meta::MetaError::Engine(e.to_string()))??;
    let mut view = InfoView {
        path: format!("{}:/{}", req.volume, req.path.trim_start_matches('/')),
        ino: i.ino,
        kind: kind_name(i.attr.kind).into(),
        size: i.attr.size,
        nlink: i.attr.nlink,
        mode: format!("{:04o}", i.attr.mode),
        uid: i.attr.uid,
        gid: i.attr.gid,
        xattrs: i.xattrs,
        entries: i.entries,
        target: i.target.map(|t| String::from_utf8_lossy(&t).into_owned()),
        store: (i.attr.kind == FileType::File).then(|| i.volume.store.clone()),
        chunks: Vec::new(),
        unchecked_blocks: 0,
    };
    let store = st.store(&i.volume.store).ok();
    // A clone's shared slices are under its source's name, in the source's store.
    let mut all_keys = Vec::new();
    for (index, slices) in &i.chunks {
        let mut cv = ChunkView { index: *index, slices: Vec::new() };
        for s in slices {
            let mut sv = SliceView { id: s.id, pos: s.pos, len: s.len, off: s.off, size: s.size, blocks: Vec::new() };
            if s.id != 0 {
                let owner = i.volume.block_volume(s.id);
                for (bi, len) in slice_blocks(s.size, i.volume.block_size) {
                    let key = block_key(owner, s.id, bi, len);
                    let file = store.as_ref().and_then(|b| b.local_path(&key)).map(|p| p.display().to_string());
                    all_keys.push(key.clone());
                    sv.blocks.push(BlockView { key, len, file, stored: None, state: "unchecked".into() });
                }
            }
            cv.slices.push(sv);
        }
        view.chunks.push(cv);
    }
    let meta = st.meta.clone();
    let keys = all_keys.clone();
    let journaled: std::collections::HashSet<String> =
        meta_task(move || meta.journaled_among(&keys)).await.unwrap_or_default().into_iter().collect();
    let mut checked = 0usize;
    for b in view.chunks.iter_mut().flat_map(|c| c.slices.iter_mut()).flat_map(|s| s.blocks.iter_mut()) {
        if journaled.contains(&b.key) {
            b.state = "journaled".into();
            continue;
        }
        let Some(store) = &store else { continue };
        if checked >= MAX_CHECKED_BLOCKS {
            view.unchecked_blocks += 1;
            continue;
        }
        checked += 1;
        match store.object_store().head(&object_store::path::Path::from(b.key.as_str())).await {
            Ok(m) => {
                b.stored = Some(m.size);
                b.state = "ok".into();
            }
            Err(object_store::Error::NotFound { .. }) => b.state = "missing".into(),
            Err(e) => b.state = format!("unknown: {e}"),
        }
    }
    Ok(view)
}

/// A tree of sizes and counts, as `strata summary` answers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, utoipa::ToSchema)]
pub struct SummaryView {
    /// The entry's name (`VOLUME:/path` at the top).
    pub name: String,
    /// Whether it is a directory.
    pub dir: bool,
    /// Bytes of the files under it.
    pub size: u64,
    /// Non-directories under it (itself included).
    pub files: u64,
    /// Directories under it (itself included).
    pub dirs: u64,
    /// Its largest entries, down to the depth asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(no_recursion)]
    pub children: Vec<SummaryView>,
}

impl From<SummaryNode> for SummaryView {
    fn from(n: SummaryNode) -> Self {
        SummaryView {
            name: n.name,
            dir: n.dir,
            size: n.size,
            files: n.files,
            dirs: n.dirs,
            children: n.children.into_iter().map(Into::into).collect(),
        }
    }
}

/// `strata summary`: sizes and counts of the tree at a path.
pub async fn summary(st: &State, req: PathRequest) -> Result<SummaryView, strata_meta::MetaError> {
    let meta = st.meta.clone();
    let (depth, limit) = (req.depth.unwrap_or(1).min(64), req.limit.unwrap_or(20).clamp(1, 10_000));
    let n = tokio::task::spawn_blocking(move || meta.summarize(&req.volume, &req.path, depth, limit))
        .await
        .map_err(|e| strata_meta::MetaError::Engine(e.to_string()))??;
    Ok(n.into())
}

//! Sizes and limits that the server, the clients and the block layer must agree on.

/// Bytes per chunk: a file is a sequence of chunks, each a list of slices.
pub const CHUNK_SIZE: u64 = 64 << 20;
/// Default bytes per block: slices are stored as blocks of at most this size.
pub const DEFAULT_BLOCK_SIZE: u32 = 4 << 20;
/// Longest file name, in bytes.
pub const NAME_MAX: usize = 255;
/// Longest extended attribute name, in bytes.
pub const XATTR_NAME_MAX: usize = 255;
/// Longest symbolic link target, in bytes.
pub const PATH_MAX: usize = 4096;
/// Largest file: what 64-bit offsets of 64 MiB chunks with 32-bit chunk indexes allow.
pub const MAX_FILE_SIZE: u64 = CHUNK_SIZE * (u32::MAX as u64);
/// Most hard links to one inode.
pub const LINK_MAX: u32 = 65_000;
/// Most bytes of blocks one durable commit may carry in its metadata transaction (the
/// small-block journal): the client sends no more, the server accepts no more.
pub const MAX_JOURNAL_BYTES: usize = 256 << 10;

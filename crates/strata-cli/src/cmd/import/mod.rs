//! `strata import SOURCE VOLUME[:/DIR]`: brings data into a volume from an S3 bucket or prefix,
//! a Git repository or a host path, through the client file system library (no FUSE mount).
//!
//! The source is listed as a stream of entries (a bounded channel: a listing of millions of
//! keys is never held whole); directories are made as they come, files and symbolic links are
//! copied by up to `--threads` tasks, each through a fixed-size buffer. Every file is written
//! under a hidden name in the staging directory `DIR/.strata-import`, verified (size, and the
//! source's checksum where it has one) and renamed over its final name, so a killed import
//! never leaves a partial file under a final name; the next run empties the staging directory
//! and copies only what is missing or changed (`copy.rs`).

mod copy;
mod report;
mod source_git;
mod source_host;
mod source_s3;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use strata_vfs::{Timespec, Vfs};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::client_args::AttachArgs;
use copy::{Dest, FileError};
use report::{Outcome, Stats};

/// Bring data into a volume from an S3 bucket or prefix, a Git repository or a host path.
///
/// SOURCE is one of:
///
///   s3://BUCKET[/PREFIX]   objects of an S3-compatible store (--endpoint, --region); a key
///                          PREFIX/a/b.txt becomes DIR/a/b.txt. Credentials come from
///                          AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, or
///                          from --credentials-file (the AWS shared-credentials INI format,
///                          section --profile); with neither, requests are unsigned (public
///                          buckets).
///
///   git+URL, URL.git, or any URL with --git
///                          the tree of a Git repository at --ref (a branch, a tag or a commit;
///                          default: the remote's HEAD), fetched shallowly with the system `git`
///                          into a temporary directory; `.git` is not imported, submodules are
///                          skipped. Files get the commit's time as their mtime.
///
///   /ABS/PATH or file:///ABS/PATH
///                          a directory (or one file) of this host: regular files, directories,
///                          symbolic links, permission bits and times; sparse files stay sparse;
///                          devices, fifos and sockets are skipped (and reported). Hard links
///                          become separate copies. An NFS export is imported by mounting it on
///                          the host and importing the mount point (there is no built-in NFS
///                          client).
///
/// VOLUME[:/DIR] is the volume and the directory in it (made if missing; default: its root).
/// The import attaches the volume like a gateway does (with --server and the token), so it
/// runs on any host with a token, without a FUSE mount.
///
/// Each file is written under a hidden name in DIR/.strata-import, verified and then renamed
/// over its final name: a killed import never leaves a partial file under a final name. A
/// re-run copies only what is missing or changed (host: size and mtime; S3: size and ETag;
/// Git: the blob id; the source's ETag or blob id is kept in the xattr
/// user.strata.import.etag) and removes the leftovers of a killed run. Files are verified by
/// size, plus the MD5 of S3 objects whose ETag is one (not multipart uploads) and the blob id
/// of Git files; a mismatch fails that file. Files gone from the source are removed from DIR
/// only with --delete. A full volume quota (EDQUOT) stops the import; what was imported
/// before stays intact. The exit status is non-zero when anything failed.
///
/// Examples:
///
///   strata import s3://datasets/imagenet/train imagenet:/train --endpoint http://minio:9000
///
///   strata import s3://corpus corpus --credentials-file ~/.aws/credentials --profile research
///
///   strata import https://github.com/org/model.git models:/model --ref v1.2
///
///   strata import git+file:///srv/git/configs configs --ref 3f2c1e9
///
///   strata import /mnt/nfs/datasets/coco coco:/coco --threads 16 --delete -o json
#[derive(clap::Args, Debug, Clone)]
#[command(verbatim_doc_comment)]
pub struct ImportArgs {
    /// What to import: s3://BUCKET[/PREFIX], git+URL or URL.git (or --git), /ABS/PATH or
    /// file:///ABS/PATH.
    pub source: String,
    /// Where: VOLUME or VOLUME:/DIR (the directory is made if missing).
    #[arg(value_name = "VOLUME[:/DIR]")]
    pub dest: String,
    /// Files copied at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    /// Remove files and directories of DIR that are not in the source.
    #[arg(long)]
    pub delete: bool,
    /// Format of the final report.
    #[arg(short, long, value_enum, default_value_t = ReportFormat::Text)]
    pub output: ReportFormat,
    /// No progress bar (it is shown only on a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// S3: endpoint URL of an S3-compatible store (default: AWS).
    #[arg(long, env = "AWS_ENDPOINT_URL", help_heading = "S3 sources")]
    pub endpoint: Option<String>,
    /// S3: region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1", help_heading = "S3 sources")]
    pub region: String,
    /// S3: shared-credentials file (INI: [PROFILE] with aws_access_key_id,
    /// aws_secret_access_key and optionally aws_session_token) instead of the AWS_* variables.
    #[arg(long, value_name = "FILE", help_heading = "S3 sources")]
    pub credentials_file: Option<PathBuf>,
    /// S3: profile (section) of the credentials file.
    #[arg(long, env = "AWS_PROFILE", default_value = "default", help_heading = "S3 sources")]
    pub profile: String,
    /// Git: the source is a Git repository URL even without git+ or .git.
    #[arg(long, help_heading = "Git sources")]
    pub git: bool,
    /// Git: branch, tag or commit to import [default: the remote's HEAD].
    #[arg(long = "ref", value_name = "REF", help_heading = "Git sources")]
    pub git_ref: Option<String>,
    #[command(flatten)]
    pub attach: AttachArgs,
}

/// The values of `-o`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    /// Lines for people.
    Text,
    /// One JSON object.
    Json,
}

/// What an entry of the source is.
#[derive(Debug, Clone)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link and its target.
    Symlink(Vec<u8>),
    /// Something not imported, and why.
    Special(String),
}

/// A checksum the source gives for a file's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// None: only the size is verified.
    None,
    /// The MD5 of the content (an S3 ETag of a single-part upload).
    Md5([u8; 16]),
    /// A Git blob id: SHA-1 of `blob <len>\0` and the content.
    GitBlob([u8; 20]),
}

/// One entry of a source listing.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the source root, `/`-separated, never empty, no `.` or `..`.
    pub rel: Vec<u8>,
    /// What it is.
    pub kind: Kind,
    /// Size in bytes (files).
    pub size: u64,
    /// Permission bits to give it.
    pub mode: Option<u32>,
    /// Modification time to give it.
    pub mtime: Option<Timespec>,
    /// Access time to give it.
    pub atime: Option<Timespec>,
    /// The source's identity of the content (S3 ETag, Git blob id), recorded on the copy and
    /// compared by re-runs; `None` compares size and mtime.
    pub tag: Option<String>,
    /// What the content is verified against.
    pub checksum: Checksum,
}

impl Entry {
    /// The path for messages.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.rel).into_owned()
    }
}

/// What a listing sends.
#[derive(Debug)]
pub enum Item {
    /// An entry to import.
    Entry(Entry),
    /// An entry that cannot be imported (path, reason); the listing goes on.
    Fail(String, String),
    /// The listing cannot go on.
    Fatal(String),
}

/// Entries a listing may be ahead of the copies.
const LISTING_AHEAD: usize = 1024;

/// A source, once opened and checked.
pub enum Source {
    Host(source_host::HostSource),
    S3(source_s3::S3Source),
    Git(source_git::GitSource),
}

impl Source {
    /// Opens the source `spec` names, failing with a clear message when it cannot be read.
    async fn open(args: &ImportArgs) -> Result<Source> {
        let s = args.source.trim();
        if s.starts_with("s3://") {
            return Ok(Source::S3(source_s3::S3Source::open(s, args).await?));
        }
        if let Some(url) = s.strip_prefix("git+") {
            return Ok(Source::Git(source_git::GitSource::open(url, args.git_ref.as_deref()).await?));
        }
        let path_like = s.starts_with('/') || s.starts_with("file:///");
        if args.git || s.trim_end_matches('/').ends_with(".git") || (!path_like && s.contains("://")) {
            if !args.git && !s.trim_end_matches('/').ends_with(".git") {
                bail!(
                    "{s}: a URL that is neither s3:// nor file:// is taken for a Git repository only with --git or git+URL"
                );
            }
            return Ok(Source::Git(source_git::GitSource::open(s, args.git_ref.as_deref()).await?));
        }
        if args.git_ref.is_some() {
            bail!("--ref applies to Git sources only");
        }
        let path = s.strip_prefix("file://").unwrap_or(s);
        if !path.starts_with('/') {
            bail!("{s}: a host path must be absolute (/ABS/PATH or file:///ABS/PATH)");
        }
        Ok(Source::Host(source_host::HostSource::open(PathBuf::from(path)).await?))
    }

    /// Starts listing into `tx`.
    fn list(&self, tx: mpsc::Sender<Item>) {
        match self {
            Source::Host(h) => h.list(tx),
            Source::S3(s) => s.list(tx),
            Source::Git(g) => g.list(tx),
        }
    }

    /// Opens an entry's content.
    async fn read(&self, e: &Entry) -> std::result::Result<Reader, String> {
        match self {
            Source::Host(h) => h.read(e).await.map(Reader::Host),
            Source::S3(s) => s.read(e).await.map(Reader::S3),
            Source::Git(g) => g.read(e).await.map(Reader::Host),
        }
    }

    /// The names in directory `rel` of the source (for `--delete`); `None` when it is not a
    /// directory there.
    async fn names(&self, rel: &[u8]) -> std::result::Result<Option<std::collections::HashSet<Vec<u8>>>, String> {
        match self {
            Source::Host(h) => h.names(rel).await,
            Source::S3(s) => s.names(rel).await,
            Source::Git(g) => g.names(rel).await,
        }
    }

    /// How the source is shown in the report.
    fn describe(&self) -> String {
        match self {
            Source::Host(h) => h.describe(),
            Source::S3(s) => s.describe(),
            Source::Git(g) => g.describe(),
        }
    }

    /// Removes what opening the source made (a Git checkout).
    async fn close(&self) {
        if let Source::Git(g) = self {
            g.close().await;
        }
    }
}

/// The content of an entry, in pieces at increasing offsets (holes between pieces are zeros).
pub enum Reader {
    Host(source_host::HostReader),
    S3(source_s3::S3Reader),
}

impl Reader {
    /// The next piece: its offset and bytes; `None` at the end.
    async fn next(&mut self) -> std::result::Result<Option<(u64, Bytes)>, String> {
        match self {
            Reader::Host(r) => r.next().await,
            Reader::S3(r) => r.next().await,
        }
    }

    /// Checks that the source did not change while it was read.
    async fn finish(self) -> std::result::Result<(), String> {
        match self {
            Reader::Host(r) => r.finish().await,
            Reader::S3(_) => Ok(()),
        }
    }
}

/// Splits `VOLUME[:/DIR]`.
fn parse_dest(s: &str) -> Result<(String, Vec<String>)> {
    let (vol, dir) = s.split_once(':').unwrap_or((s, ""));
    if vol.is_empty() {
        bail!("{s}: no volume name (VOLUME or VOLUME:/DIR)");
    }
    let mut segs = Vec::new();
    for seg in dir.split('/').filter(|x| !x.is_empty()) {
        if seg == "." || seg == ".." {
            bail!("{s}: the directory may not contain . or ..");
        }
        segs.push(seg.to_string());
    }
    Ok((vol.to_string(), segs))
}

/// Runs `strata import`.
pub fn run(args: ImportArgs) -> Result<()> {
    crate::util::init_logging(false);
    let token = args.attach.token.resolve()?;
    let (volume, dir) = parse_dest(&args.dest)?;
    let rt = crate::runtime()?;
    let report = rt.block_on(async {
        // A long import can be watched like a mount (`--metrics ADDR`).
        args.attach.client.metrics.start().await?;
        let source = Arc::new(Source::open(&args).await?);
        let res = import(&args, &token, &volume, &dir, source.clone()).await;
        source.close().await;
        res
    })?;
    report.print(args.output)?;
    if let Some(why) = report.incomplete() {
        bail!("{why}");
    }
    Ok(())
}

async fn import(
    args: &ImportArgs,
    token: &str,
    volume: &str,
    dir: &[String],
    source: Arc<Source>,
) -> Result<report::Report> {
    let started = Instant::now();
    let client_name = format!("{}:import", strata_vfs::host_name());
    // An import writes what nobody on this host reads back: a disk cache only if asked for.
    let cfg = strata_vfs::VfsConfig {
        disk_cache: args.attach.client.cache_dir.clone().map(|d| (d, args.attach.client.disk_cache_size)),
        ..args.attach.client.vfs_config(true)
    };
    let vfs = Vfs::attach(&args.attach.server.server, token, volume, &client_name, cfg)
        .await
        .with_context(|| format!("cannot attach volume {volume}"))?;
    let res = async {
        let dest = Arc::new(Dest::open(vfs.clone(), dir).await.map_err(|e| anyhow::anyhow!("{}", e.msg))?);
        Ok::<_, anyhow::Error>(run_import(args, source.clone(), dest, started).await)
    }
    .await;
    let detached = vfs.detach().await;
    let mut report = res?;
    report.source = source.describe();
    report.dest = if dir.is_empty() { volume.to_string() } else { format!("{volume}:/{}", dir.join("/")) };
    if let Err(e) = detached {
        report.fatal.get_or_insert(format!("could not commit the last writes: {e}"));
    }
    Ok(report)
}

async fn run_import(args: &ImportArgs, source: Arc<Source>, dest: Arc<Dest>, started: Instant) -> report::Report {
    let stats = Arc::new(Stats::default());
    let progress = report::Progress::start(stats.clone(), args.no_progress || args.output == ReportFormat::Json);
    let (tx, mut rx) = mpsc::channel(LISTING_AHEAD);
    source.list(tx);
    let permits = Arc::new(Semaphore::new(usize::from(args.threads)));
    let mut tasks = JoinSet::new();
    // Directories whose mode and times are set once their entries are in.
    let mut dir_attrs: Vec<(Vec<u8>, Option<u32>, Option<Timespec>)> = Vec::new();
    let mut listing_error = None;
    while let Some(item) = rx.recv().await {
        if stats.stopped() {
            break;
        }
        while tasks.try_join_next().is_some() {}
        let e = match item {
            Item::Entry(e) => e,
            Item::Fail(path, why) => {
                stats.fail(path, why);
                continue;
            }
            Item::Fatal(why) => {
                listing_error = Some(why);
                break;
            }
        };
        match &e.kind {
            Kind::Special(why) => stats.skip(e.display(), why.clone()),
            Kind::Dir => match dest.dir(&e.rel).await {
                Ok(_) => {
                    if e.mode.is_some() || e.mtime.is_some() {
                        dir_attrs.push((e.rel.clone(), e.mode, e.mtime));
                    }
                }
                Err(err) => stats.record(&e, Err(err)),
            },
            Kind::File | Kind::Symlink(_) => {
                stats.listed.fetch_add(1, Ordering::Relaxed);
                stats.listed_bytes.fetch_add(e.size, Ordering::Relaxed);
                let Ok(permit) = permits.clone().acquire_owned().await else { break };
                if stats.stopped() {
                    break;
                }
                let (source, dest, stats) = (source.clone(), dest.clone(), stats.clone());
                tasks.spawn(async move {
                    let res = copy::import_entry(&source, &dest, &e).await;
                    stats.record(&e, res);
                    drop(permit);
                });
            }
        }
    }
    drop(rx);
    stats.listing_done.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    if args.delete
        && listing_error.is_none()
        && !stats.stopped()
        && let Err(err) = delete_vanished(&source, &dest, &stats).await
    {
        stats.fail("(--delete)".into(), err.msg);
    }
    if !stats.stopped() {
        // Deepest first, and after --delete: setting a directory's time must follow every
        // change inside it.
        dir_attrs.sort_by_key(|(rel, _, _)| std::cmp::Reverse(rel.iter().filter(|&&b| b == b'/').count()));
        for (rel, mode, mtime) in dir_attrs {
            if let Err(err) = dest.set_dir_attrs(&rel, mode, mtime).await {
                stats.fail(String::from_utf8_lossy(&rel).into_owned(), err.msg);
            }
        }
    }
    progress.finish().await;
    let mut r = stats.report(started.elapsed());
    if let Some(why) = listing_error {
        r.fatal = Some(format!("listing the source failed: {why}"));
    }
    r
}

/// Removes from the destination what is not in the source, directory by directory (memory:
/// the names of one directory at a time).
async fn delete_vanished(source: &Source, dest: &Dest, stats: &Stats) -> std::result::Result<(), FileError> {
    let mut todo: Vec<(u64, Vec<u8>)> = vec![(dest.root(), Vec::new())];
    while let Some((ino, rel)) = todo.pop() {
        let Some(names) = source.names(&rel).await.map_err(FileError::source)? else { continue };
        for (name, kind, child) in dest.list(ino).await? {
            if rel.is_empty() && name == copy::STAGING.as_bytes() {
                continue;
            }
            let mut path = rel.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            if names.contains(&name) {
                if kind == strata_vfs::FileType::Dir {
                    todo.push((child, path));
                }
                continue;
            }
            let n = dest.remove_tree(ino, &name).await?;
            stats.deleted.fetch_add(n, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// The outcome of importing one entry.
pub type EntryResult = std::result::Result<Outcome, FileError>;

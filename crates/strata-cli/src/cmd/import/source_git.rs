//! Git repositories: the ref is fetched shallowly with the system `git` into a temporary
//! directory and checked out; the listing is `git ls-tree -r` (streamed), and every file is
//! read from the checkout and verified against its blob id.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use sha1::{Digest, Sha1};
use strata_vfs::Timespec;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

use super::source_host::{HostReader, dir_names, open_reader};
use super::{Checksum, Entry, Item, Kind};

/// A checked-out commit of a repository.
pub struct GitSource {
    url: String,
    commit: String,
    /// The checkout (removed by `close`).
    dir: PathBuf,
    /// The commit's time: the mtime of every file.
    time: Timespec,
}

/// Runs git with `args` in `dir`; its stdout, or an error with its stderr.
async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "core.autocrlf=false", "-c", "advice.detachedHead=false", "-c", "core.symlinks=true"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run git (is it installed?): {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether git's message says the repository is missing or unreadable (not the ref).
fn missing_repo(e: &str) -> bool {
    let words = [
        "not found",
        "does not appear to be a git repository",
        "Could not read from remote",
        "unable to access",
        "not a git repository",
        "access denied",
        "not exported",
    ];
    words.iter().any(|w| e.contains(w)) && !e.contains("couldn't find remote ref")
}

fn parse_oid(hex: &str) -> Option<[u8; 20]> {
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl GitSource {
    /// Fetches `git_ref` (default: HEAD) of `url` and checks it out in a temporary directory.
    pub async fn open(url: &str, git_ref: Option<&str>) -> Result<GitSource> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("strata-import-git-{}-{nanos}", std::process::id()));
        tokio::fs::create_dir_all(&dir).await.with_context(|| format!("cannot make {}", dir.display()))?;
        let mut s = GitSource { url: url.to_string(), commit: String::new(), dir, time: Timespec::default() };
        if let Err(e) = s.checkout(git_ref).await {
            s.close().await;
            return Err(e);
        }
        Ok(s)
    }

    async fn checkout(&mut self, git_ref: Option<&str>) -> Result<()> {
        let (url, dir) = (self.url.clone(), self.dir.clone());
        git(&dir, &["init", "-q"]).await.map_err(|e| anyhow::anyhow!("git init: {e}"))?;
        // The bytes of the blobs, whatever the repository's attributes say (no end-of-line
        // conversion or filters), so that every file matches its blob id.
        let attrs = dir.join(".git/info/attributes");
        tokio::fs::create_dir_all(dir.join(".git/info")).await.context("git checkout")?;
        tokio::fs::write(&attrs, "* -text -filter -ident -working-tree-encoding\n").await.context("git checkout")?;
        let r = git_ref.unwrap_or("HEAD");
        let shallow = git(&dir, &["fetch", "-q", "--depth", "1", "--no-tags", &url, r]).await;
        let target = match shallow {
            Ok(_) => "FETCH_HEAD".to_string(),
            Err(e) => {
                if missing_repo(&e) {
                    bail!("Git repository {url} not found or not readable: {e}");
                }
                // The server does not serve this ref shallowly (dumb HTTP, or a commit id it
                // does not advertise): fetch the whole history.
                let full = if r == "HEAD" {
                    git(&dir, &["fetch", "-q", &url, "HEAD"]).await
                } else {
                    git(&dir, &["fetch", "-q", "--tags", &url, "+refs/heads/*:refs/remotes/src/*"]).await
                };
                if let Err(e) = full {
                    if missing_repo(&e) {
                        bail!("Git repository {url} not found or not readable: {e}");
                    }
                    bail!("fetching {url}: {e}");
                }
                let mut found = None;
                let candidates = if r == "HEAD" {
                    vec!["FETCH_HEAD".to_string()]
                } else {
                    vec![format!("refs/remotes/src/{r}"), format!("refs/tags/{r}"), r.to_string()]
                };
                for c in candidates {
                    if let Ok(id) = git(&dir, &["rev-parse", "--verify", "-q", &format!("{c}^{{commit}}")]).await {
                        found = Some(id);
                        break;
                    }
                }
                found.ok_or_else(|| anyhow::anyhow!("Git repository {url} has no branch, tag or commit {r}"))?
            }
        };
        git(&dir, &["checkout", "-q", "--force", &target]).await.map_err(|e| anyhow::anyhow!("git checkout: {e}"))?;
        self.commit = git(&dir, &["rev-parse", "HEAD"]).await.map_err(|e| anyhow::anyhow!("git rev-parse: {e}"))?;
        let t = git(&dir, &["log", "-1", "--format=%ct"]).await.map_err(|e| anyhow::anyhow!("git log: {e}"))?;
        self.time = Timespec { sec: t.parse().unwrap_or(0), nsec: 0 };
        Ok(())
    }

    /// How the report names it.
    pub fn describe(&self) -> String {
        format!("{} at {}", self.url, self.commit)
    }

    /// Removes the checkout.
    pub async fn close(&self) {
        if let Err(e) = tokio::fs::remove_dir_all(&self.dir).await {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove the Git checkout");
        }
    }

    fn path_of(&self, rel: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        self.dir.join(std::ffi::OsStr::from_bytes(rel))
    }

    /// Streams `git ls-tree -r` of the commit into `tx`.
    pub fn list(&self, tx: mpsc::Sender<Item>) {
        let (dir, time) = (self.dir.clone(), self.time);
        tokio::spawn(async move {
            if let Err(e) = list_tree(&dir, time, &tx).await {
                let _ = tx.send(Item::Fatal(e)).await;
            }
        });
    }

    /// Opens a file of the checkout.
    pub async fn read(&self, e: &Entry) -> Result<HostReader, String> {
        open_reader(self.path_of(&e.rel), e, false, false).await
    }

    /// The names in directory `rel` of the checkout (without `.git`).
    pub async fn names(&self, rel: &[u8]) -> Result<Option<HashSet<Vec<u8>>>, String> {
        dir_names(self.path_of(rel), rel.is_empty().then_some(".git")).await
    }
}

async fn list_tree(dir: &Path, time: Timespec, tx: &mpsc::Sender<Item>) -> Result<(), String> {
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["ls-tree", "-r", "-z", "-l", "--full-tree", "HEAD"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run git ls-tree: {e}"))?;
    let out = child.stdout.take().ok_or("git ls-tree: no output")?;
    let mut lines = BufReader::new(out);
    let mut rec = Vec::new();
    loop {
        rec.clear();
        let n = lines.read_until(0, &mut rec).await.map_err(|e| format!("reading git ls-tree: {e}"))?;
        if n == 0 {
            break;
        }
        if rec.last() == Some(&0) {
            rec.pop();
        }
        let item = match parse_record(&rec, time) {
            Ok(mut e) => {
                if let Kind::Symlink(_) = e.kind {
                    e = symlink_entry(dir, e).await;
                }
                Item::Entry(e)
            }
            Err(why) => Item::Fail(String::from_utf8_lossy(&rec).into_owned(), why),
        };
        if tx.send(item).await.is_err() {
            return Ok(());
        }
    }
    let st = child.wait().await.map_err(|e| format!("git ls-tree: {e}"))?;
    if !st.success() {
        return Err(format!("git ls-tree failed: {st}"));
    }
    Ok(())
}

/// Parses `<mode> SP <type> SP <oid> SP+ <size> TAB <path>`.
fn parse_record(rec: &[u8], time: Timespec) -> Result<Entry, String> {
    let tab = rec.iter().position(|&b| b == b'\t').ok_or("no tab in a git ls-tree record")?;
    let head = std::str::from_utf8(&rec[..tab]).map_err(|_| "a git ls-tree record is not text")?;
    let rel = rec[tab + 1..].to_vec();
    let mut f = head.split_whitespace();
    let (mode, kind, oid, size) = (f.next(), f.next(), f.next(), f.next());
    let (Some(mode), Some(kind), Some(oid)) = (mode, kind, oid) else {
        return Err("a short git ls-tree record".into());
    };
    let size = size.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let blob = parse_oid(oid);
    let (kind, mode) = match (mode, kind) {
        ("100644", "blob") => (Kind::File, 0o644),
        ("100755", "blob") => (Kind::File, 0o755),
        ("120000", "blob") => (Kind::Symlink(Vec::new()), 0o777),
        ("160000", "commit") => (Kind::Special(format!("submodule at commit {oid}: not imported")), 0o755),
        _ => (Kind::Special(format!("git entry of mode {mode} and type {kind}: not imported")), 0),
    };
    let checksum = match (&kind, blob) {
        (Kind::File, Some(b)) => Checksum::GitBlob(b),
        (Kind::File, None) => return Err(format!("a blob id that is not SHA-1: {oid}")),
        _ => Checksum::None,
    };
    Ok(Entry {
        rel,
        kind,
        size,
        mode: Some(mode),
        mtime: Some(time),
        atime: None,
        tag: Some(oid.to_string()),
        checksum,
    })
}

/// Reads a link's target from the checkout and checks it against its blob id.
async fn symlink_entry(dir: &Path, mut e: Entry) -> Entry {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let path = dir.join(std::ffi::OsStr::from_bytes(&e.rel));
    match tokio::fs::read_link(&path).await {
        Ok(t) => {
            let t = t.into_os_string().into_vec();
            let mut h = Sha1::new();
            h.update(format!("blob {}\0", t.len()).as_bytes());
            h.update(&t);
            let got: [u8; 20] = h.finalize().into();
            if e.tag.as_deref().and_then(parse_oid) == Some(got) {
                e.kind = Kind::Symlink(t);
            } else {
                e.kind = Kind::Special("symbolic link whose target does not match its blob id".into());
            }
        }
        Err(err) => e.kind = Kind::Special(format!("symbolic link not checked out: {err}")),
    }
    e.size = 0;
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_tree_records() {
        let t = Timespec { sec: 5, nsec: 0 };
        let e = parse_record(b"100755 blob 0123456789abcdef0123456789abcdef01234567     42\tbin/run.sh", t)
            .expect("record");
        assert_eq!(e.rel, b"bin/run.sh");
        assert_eq!((e.size, e.mode), (42, Some(0o755)));
        assert!(matches!(e.checksum, Checksum::GitBlob(b) if b[0] == 0x01));
        let s = parse_record(b"160000 commit 0123456789abcdef0123456789abcdef01234567       -\tvendor/x", t)
            .expect("submodule");
        assert!(matches!(s.kind, Kind::Special(_)));
        assert!(missing_repo("fatal: repository 'http://x/' not found"));
        assert!(!missing_repo("fatal: couldn't find remote ref nope"));
    }
}

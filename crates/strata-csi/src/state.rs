//! The node's records of what it staged and published, kept on disk so that a restarted
//! plugin finds its mounts and workers again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A staged volume: one FUSE mount served by one worker process.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Staged {
    /// The volume.
    pub volume: String,
    /// The staging path the kernel mount is at.
    pub staging: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
    /// Only one pod may publish it.
    pub single_pod: bool,
    /// The worker serving it now.
    pub pid: i32,
    /// The worker's start time (`/proc/PID/stat` field 22), telling it from a reused pid.
    pub start_time: u64,
    /// Whether staging created the directory (unstaging then removes it).
    pub created_dir: bool,
}

/// A published volume: a bind mount of a staged one into a pod.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Published {
    /// The volume.
    pub volume: String,
    /// The pod's target path.
    pub target: PathBuf,
    /// The staging path it binds.
    pub staging: PathBuf,
    /// Read-only.
    pub read_only: bool,
}

/// The directory of records.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

/// The file name for a record about `path`.
fn key(path: &Path) -> String {
    hex::encode(&Sha256::digest(path.as_os_str().as_encoded_bytes())[..12])
}

impl StateDir {
    /// Opens (creating) the state directory.
    pub fn open(root: &Path) -> std::io::Result<StateDir> {
        for sub in ["staged", "published", "logs"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        Ok(StateDir { root: root.to_path_buf() })
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(mode).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    fn staged_path(&self, staging: &Path) -> PathBuf {
        self.root.join("staged").join(format!("{}.json", key(staging)))
    }

    /// Where the token of a staged volume is kept for its replacement workers.
    pub fn token_path(&self, staging: &Path) -> PathBuf {
        self.root.join("staged").join(format!("{}.token", key(staging)))
    }

    /// Where a staged volume's worker records its session id (see `strata mount --session-file`).
    pub fn session_path(&self, staging: &Path) -> PathBuf {
        self.root.join("staged").join(format!("{}.session", key(staging)))
    }

    /// The log file of a staged volume's workers.
    pub fn log_path(&self, staging: &Path) -> PathBuf {
        self.root.join("logs").join(format!("{}.log", key(staging)))
    }

    /// Saves the token a staged volume's workers attach with (mode 0600).
    pub fn save_token(&self, staging: &Path, token: &str) -> std::io::Result<PathBuf> {
        let p = self.token_path(staging);
        self.write_atomic(&p, token.as_bytes(), 0o600)?;
        Ok(p)
    }

    /// Saves a staging record.
    pub fn save_staged(&self, s: &Staged) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?;
        self.write_atomic(&self.staged_path(&s.staging), &bytes, 0o600)
    }

    /// Forgets a staged volume (record and token).
    pub fn remove_staged(&self, staging: &Path) -> std::io::Result<()> {
        for p in [self.staged_path(staging), self.token_path(staging), self.session_path(staging)] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Every staging record (unreadable ones are logged and skipped).
    pub fn all_staged(&self) -> std::io::Result<Vec<Staged>> {
        self.read_all("staged")
    }

    fn published_path(&self, target: &Path) -> PathBuf {
        self.root.join("published").join(format!("{}.json", key(target)))
    }

    /// Saves a publish record.
    pub fn save_published(&self, p: &Published) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(p).map_err(std::io::Error::other)?;
        self.write_atomic(&self.published_path(&p.target), &bytes, 0o600)
    }

    /// The publish record of a target path.
    pub fn published(&self, target: &Path) -> Option<Published> {
        let b = std::fs::read(self.published_path(target)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// Forgets a publish record.
    pub fn remove_published(&self, target: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(self.published_path(target)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Every publish record.
    pub fn all_published(&self) -> std::io::Result<Vec<Published>> {
        self.read_all("published")
    }

    fn read_all<T: serde::de::DeserializeOwned>(&self, sub: &str) -> std::io::Result<Vec<T>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.root.join(sub))? {
            let p = e?.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            match std::fs::read(&p).map(|b| serde_json::from_slice::<T>(&b)) {
                Ok(Ok(v)) => out.push(v),
                Ok(Err(err)) => tracing::warn!(path = %p.display(), error = %err, "unreadable record skipped"),
                Err(err) => tracing::warn!(path = %p.display(), error = %err, "unreadable record skipped"),
            }
        }
        Ok(out)
    }
}

/// A process's start time, field 22 of `/proc/PID/stat` (None if it is gone).
pub fn start_time(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_reopen() {
        let d = tempfile::tempdir().expect("tempdir");
        let st = StateDir::open(d.path()).expect("open");
        let s = Staged {
            volume: "v".into(),
            staging: "/k/staging/v".into(),
            read_only: false,
            single_pod: false,
            pid: 42,
            start_time: 7,
            created_dir: true,
        };
        st.save_staged(&s).expect("save");
        st.save_token(&s.staging, "tok").expect("token");
        let again = StateDir::open(d.path()).expect("reopen");
        assert_eq!(again.all_staged().expect("list"), vec![s.clone()]);
        again.remove_staged(&s.staging).expect("remove");
        assert!(again.all_staged().expect("list").is_empty());
        assert!(!again.token_path(&s.staging).exists());
        assert!(start_time(std::process::id() as i32).is_some());
    }
}

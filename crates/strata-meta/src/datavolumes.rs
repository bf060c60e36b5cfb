//! Data volumes: named, read-only datasets made from a volume, owned by a scope and shared
//! with others. Each version is a snapshot of the source volume owned by the data volume
//! (`datavolume:NAME`), so it costs what a snapshot costs and outlives the source volume.

use serde::{Deserialize, Serialize};

use crate::error::{MetaError, Result};
use crate::keys;
use crate::kv::{KvTxn, prefix_end};
use crate::meta::Meta;
use crate::types::*;

/// One version of a data volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DataVersion {
    /// 1, 2, ... in the order they were made.
    pub number: u32,
    /// The snapshot holding it.
    pub epoch: u64,
    /// The snapshot's name in the source volume.
    pub snapshot: String,
    /// When it was made.
    pub created: Timespec,
    /// Bytes of its files.
    pub bytes: u64,
    /// Its inodes.
    pub inodes: u64,
}

/// A data volume.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DataVolume {
    /// Unique name.
    pub name: String,
    /// The scope that made it and owns it.
    pub scope: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The volume its versions are snapshots of (its id; the volume may since be deleted).
    pub volume: u32,
    /// The source volume's name when the data volume was made.
    pub volume_name: String,
    /// Scopes it is shared with (they and their sub-scopes may mount it read-only).
    #[serde(default)]
    pub shares: Vec<String>,
    /// Its versions, oldest first.
    pub versions: Vec<DataVersion>,
    /// When it was made.
    pub created: Timespec,
}

impl DataVolume {
    /// The version numbered `n`, or the latest when `None`.
    pub fn version(&self, n: Option<u32>) -> Result<&DataVersion> {
        match n {
            None => self.versions.last(),
            Some(n) => self.versions.iter().find(|v| v.number == n),
        }
        .ok_or_else(|| match n {
            Some(n) => MetaError::NoVolume(format!("{} version {n}", self.name)),
            None => MetaError::NoVolume(format!("{} (no versions)", self.name)),
        })
    }

    /// Whether a caller of `scope` may read it: the owner's scope and below, or a scope it is
    /// shared with and below.
    pub fn readable_by(&self, scope: &str) -> bool {
        crate::control::within(scope, &self.scope) || self.shares.iter().any(|s| crate::control::within(scope, s))
    }

    fn owner_tag(&self) -> String {
        owner_tag(&self.name)
    }
}

fn owner_tag(name: &str) -> String {
    format!("datavolume:{name}")
}

fn load(t: &mut dyn KvTxn, name: &str) -> Result<DataVolume> {
    match t.get(&keys::datavolume(name))? {
        Some(v) => serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(format!("data volume: {e}"))),
        None => Err(MetaError::NoVolume(format!("data volume {name}"))),
    }
}

fn store(t: &mut dyn KvTxn, d: &DataVolume) -> Result<()> {
    t.put(&keys::datavolume(&d.name), &serde_json::to_vec(d).map_err(|e| MetaError::Corrupt(e.to_string()))?)
}

impl Meta {
    /// Makes data volume `name`, owned by `scope`, from volume `source` as it is now
    /// (version 1).
    pub fn create_datavolume(&self, name: &str, scope: &str, source: &str, description: &str) -> Result<DataVolume> {
        crate::validate_name(name)?;
        if self.read(|t| t.get(&keys::datavolume(name)))?.is_some() {
            return Err(MetaError::VolumeExists(format!("data volume {name}")));
        }
        let vol = self.volume(source)?;
        let snap = self.create_snapshot(source, &format!("datavolume-{name}-v1"), Some(&owner_tag(name)))?;
        let made = self.write(true, |t| {
            if t.get(&keys::datavolume(name))?.is_some() {
                return Err(MetaError::VolumeExists(format!("data volume {name}")));
            }
            let d = DataVolume {
                name: name.to_string(),
                scope: scope.to_string(),
                description: description.to_string(),
                volume: vol.id,
                volume_name: vol.name.clone(),
                shares: Vec::new(),
                versions: vec![DataVersion {
                    number: 1,
                    epoch: snap.epoch,
                    snapshot: snap.name.clone(),
                    created: snap.created,
                    bytes: snap.bytes,
                    inodes: snap.inodes,
                }],
                created: snap.created,
            };
            store(t, &d)?;
            Ok(d)
        });
        if let Err(e) = &made
            && let Err(d) = self.delete_snapshot(source, &snap.name, Some(&owner_tag(name)))
        {
            return Err(MetaError::Engine(format!(
                "{e}; deleting snapshot {} taken for it failed too: {d}",
                snap.name
            )));
        }
        made
    }

    /// A data volume by name.
    pub fn datavolume(&self, name: &str) -> Result<DataVolume> {
        self.read(|t| load(t, name))
    }

    /// Every data volume, by name.
    pub fn list_datavolumes(&self) -> Result<Vec<DataVolume>> {
        self.read(|t| {
            let p = keys::DATAVOLUME_PREFIX;
            t.scan(p, &prefix_end(p), usize::MAX)?
                .into_iter()
                .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| MetaError::Corrupt(format!("data volume: {e}"))))
                .collect()
        })
    }

    /// Makes a new version from the source volume as it is now.
    pub fn update_datavolume(&self, name: &str) -> Result<DataVolume> {
        let d = self.datavolume(name)?;
        let src = self.volume_by_id(d.volume)?;
        if src.gone {
            return Err(MetaError::Invalid(format!(
                "the source volume {} of data volume {name} was deleted; no new version can be made",
                d.volume_name
            )));
        }
        let n = d.versions.last().map(|v| v.number).unwrap_or(0) + 1;
        let snap = self.create_snapshot(&src.name, &format!("datavolume-{name}-v{n}"), Some(&d.owner_tag()))?;
        self.write(true, |t| {
            let mut d = load(t, name)?;
            d.versions.push(DataVersion {
                number: n,
                epoch: snap.epoch,
                snapshot: snap.name.clone(),
                created: snap.created,
                bytes: snap.bytes,
                inodes: snap.inodes,
            });
            store(t, &d)?;
            Ok(d)
        })
    }

    /// Deletes one version (its snapshot and whatever only it held).
    pub fn delete_datavolume_version(&self, name: &str, number: u32) -> Result<DataVolume> {
        let d = self.datavolume(name)?;
        let v = d.version(Some(number))?.clone();
        let d = self.write(true, |t| {
            let mut d = load(t, name)?;
            d.versions.retain(|x| x.number != number);
            store(t, &d)?;
            Ok(d)
        })?;
        self.drop_version_snapshot(&d, &v)?;
        Ok(d)
    }

    /// Deletes a data volume with every version.
    pub fn delete_datavolume(&self, name: &str) -> Result<DataVolume> {
        let d = self.write(true, |t| {
            let d = load(t, name)?;
            t.delete(&keys::datavolume(name))?;
            Ok(d)
        })?;
        for v in &d.versions {
            self.drop_version_snapshot(&d, v)?;
        }
        Ok(d)
    }

    fn drop_version_snapshot(&self, d: &DataVolume, v: &DataVersion) -> Result<()> {
        // The source volume may have been deleted (its record kept, hidden, for us): delete
        // by record, not by name.
        let vol = self.volume_by_id(d.volume)?;
        self.delete_snapshot_of(vol.id, &v.snapshot, Some(&d.owner_tag()))
    }

    /// Shares a data volume with `scope` (idempotent).
    pub fn share_datavolume(&self, name: &str, scope: &str) -> Result<DataVolume> {
        self.scope(scope)?;
        self.write(true, |t| {
            let mut d = load(t, name)?;
            if !d.shares.iter().any(|s| s == scope) {
                d.shares.push(scope.to_string());
                d.shares.sort();
            }
            store(t, &d)?;
            Ok(d)
        })
    }

    /// Ends a share (idempotent): mounts of that scope fail from their next call on.
    pub fn unshare_datavolume(&self, name: &str, scope: &str) -> Result<DataVolume> {
        self.write(true, |t| {
            let mut d = load(t, name)?;
            d.shares.retain(|s| s != scope);
            store(t, &d)?;
            Ok(d)
        })
    }

    /// The data volume a snapshot epoch is a version of, if any.
    pub fn datavolume_of_epoch(&self, epoch: u64) -> Result<Option<DataVolume>> {
        let Some(s) = self.snapshot_by_epoch(epoch)? else { return Ok(None) };
        let Some(name) = s.owner.as_deref().and_then(|o| o.strip_prefix("datavolume:")) else { return Ok(None) };
        match self.datavolume(name) {
            Ok(d) => Ok(Some(d)),
            Err(MetaError::NoVolume(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

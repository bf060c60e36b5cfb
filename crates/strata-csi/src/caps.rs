//! Volume capabilities: which the driver accepts, and what they mean for a Strata volume.

use strata_types::AccessMode;
use tonic::Status;

use crate::pb::VolumeCapability;
use crate::pb::volume_capability::AccessType;
use crate::pb::volume_capability::access_mode::Mode;

/// File system types a mount capability may name (empty: unspecified).
const FS_TYPES: [&str; 3] = ["", "strata", "fuse.strata"];

/// What a set of capabilities asks of a volume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// The Strata access mode that serves all of them.
    pub mode: AccessMode,
    /// Only one pod may publish it (ReadWriteOncePod).
    pub single_pod: bool,
}

/// The access mode of one capability, or the reason it is refused.
pub fn check(cap: &VolumeCapability) -> Result<Mode, String> {
    match &cap.access_type {
        Some(AccessType::Mount(m)) => {
            if !FS_TYPES.contains(&m.fs_type.as_str()) {
                return Err(format!("fs_type {:?} is not supported: Strata volumes are FUSE file systems", m.fs_type));
            }
            if let Some(f) = m.mount_flags.iter().find(|f| !MOUNT_FLAGS.contains(&f.as_str())) {
                return Err(format!("mount flag {f:?} is not supported (supported: {})", MOUNT_FLAGS.join(", ")));
            }
            if !m.volume_mount_group.is_empty() {
                return Err("volume_mount_group is not supported".into());
            }
        }
        Some(AccessType::Block(_)) => {
            return Err("block access is not supported: Strata volumes are file systems".into());
        }
        None => return Err("a capability must set mount or block access".into()),
    }
    let mode = cap.access_mode.as_ref().map(|a| a.mode()).unwrap_or(Mode::Unknown);
    match mode {
        Mode::Unknown => Err("a capability must set an access mode".into()),
        Mode::MultiNodeSingleWriter => Err("access mode MULTI_NODE_SINGLE_WRITER is not supported".into()),
        m => Ok(m),
    }
}

/// Mount flags the node honours.
pub const MOUNT_FLAGS: [&str; 2] = ["ro", "rw"];

/// Whether a capability asks for a read-only mount.
pub fn read_only(cap: &VolumeCapability) -> bool {
    let ro_mode = matches!(
        cap.access_mode.as_ref().map(|a| a.mode()),
        Some(Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly)
    );
    let ro_flag = matches!(&cap.access_type, Some(AccessType::Mount(m)) if m.mount_flags.iter().any(|f| f == "ro"));
    ro_mode || ro_flag
}

/// The Strata access mode serving every capability in `caps` (INVALID_ARGUMENT if none or one
/// is unsupported).
pub fn access(caps: &[VolumeCapability]) -> Result<Access, Status> {
    if caps.is_empty() {
        return Err(Status::invalid_argument("volume_capabilities is required"));
    }
    let mut modes = Vec::with_capacity(caps.len());
    for c in caps {
        modes.push(check(c).map_err(Status::invalid_argument)?);
    }
    let multi_writer = modes.contains(&Mode::MultiNodeMultiWriter);
    let all_read_only = modes.iter().all(|m| matches!(m, Mode::SingleNodeReaderOnly | Mode::MultiNodeReaderOnly));
    let single_node = modes.iter().all(|m| {
        matches!(
            m,
            Mode::SingleNodeWriter
                | Mode::SingleNodeReaderOnly
                | Mode::SingleNodeSingleWriter
                | Mode::SingleNodeMultiWriter
        )
    });
    let mode = if multi_writer {
        AccessMode::ReadWriteMany
    } else if all_read_only && !single_node {
        AccessMode::ReadOnlyMany
    } else if single_node {
        AccessMode::ReadWriteOnce
    } else {
        // Mixed single-node writers and many-node readers: many nodes may attach.
        AccessMode::ReadWriteMany
    };
    Ok(Access { mode, single_pod: modes.iter().all(|m| *m == Mode::SingleNodeSingleWriter) })
}

/// Whether a volume created with `have` serves `caps` (the reason if not).
pub fn serves(have: AccessMode, caps: &[VolumeCapability]) -> Result<(), String> {
    for c in caps {
        let m = check(c)?;
        let ok = match have {
            AccessMode::ReadWriteMany => true,
            AccessMode::ReadOnlyMany => matches!(m, Mode::MultiNodeReaderOnly | Mode::SingleNodeReaderOnly),
            AccessMode::ReadWriteOnce => matches!(
                m,
                Mode::SingleNodeWriter
                    | Mode::SingleNodeReaderOnly
                    | Mode::SingleNodeSingleWriter
                    | Mode::SingleNodeMultiWriter
            ),
        };
        if !ok {
            return Err(format!("the volume is {} and cannot serve access mode {}", have.as_str(), m.as_str_name()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::volume_capability::{AccessMode as PbMode, MountVolume};

    fn cap(m: Mode) -> VolumeCapability {
        VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume::default())),
            access_mode: Some(PbMode { mode: m as i32 }),
        }
    }

    #[test]
    fn kubernetes_modes_map_to_strata_modes() {
        let a = |ms: &[Mode]| access(&ms.iter().map(|m| cap(*m)).collect::<Vec<_>>()).expect("supported");
        assert_eq!(a(&[Mode::MultiNodeMultiWriter]).mode, AccessMode::ReadWriteMany);
        assert_eq!(a(&[Mode::MultiNodeReaderOnly]).mode, AccessMode::ReadOnlyMany);
        assert_eq!(a(&[Mode::SingleNodeWriter]).mode, AccessMode::ReadWriteOnce);
        let rwop = a(&[Mode::SingleNodeSingleWriter]);
        assert_eq!((rwop.mode, rwop.single_pod), (AccessMode::ReadWriteOnce, true));
        assert!(!a(&[Mode::SingleNodeWriter, Mode::SingleNodeSingleWriter]).single_pod);
    }

    #[test]
    fn unsupported_capabilities_are_refused_with_the_reason() {
        let block = VolumeCapability {
            access_type: Some(AccessType::Block(Default::default())),
            access_mode: Some(PbMode { mode: Mode::MultiNodeMultiWriter as i32 }),
        };
        assert!(access(&[block]).is_err());
        assert!(access(&[]).is_err());
        assert!(access(&[cap(Mode::Unknown)]).is_err());
        let mut ext4 = cap(Mode::SingleNodeWriter);
        ext4.access_type = Some(AccessType::Mount(MountVolume { fs_type: "ext4".into(), ..Default::default() }));
        assert!(access(&[ext4]).is_err());
        assert!(serves(AccessMode::ReadOnlyMany, &[cap(Mode::MultiNodeMultiWriter)]).is_err());
        assert!(serves(AccessMode::ReadWriteOnce, &[cap(Mode::MultiNodeReaderOnly)]).is_err());
        assert!(serves(AccessMode::ReadWriteMany, &[cap(Mode::SingleNodeWriter)]).is_ok());
    }
}

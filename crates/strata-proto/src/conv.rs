//! Conversions between wire messages and the namespace's own types.

use strata_types::{Attr, Ctx, FileIdentity, FileType, SetAttr, SetTime, Slice, Timespec, VolumeInfo};

use crate::pb;

/// Wire attributes of an inode.
pub fn attr_to_pb(ino: u64, a: &Attr) -> pb::Attr {
    pb::Attr {
        ino,
        kind: a.kind.code(),
        mode: a.mode,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        nlink: a.nlink,
        size: a.size,
        atime_sec: a.atime.sec,
        atime_nsec: a.atime.nsec,
        mtime_sec: a.mtime.sec,
        mtime_nsec: a.mtime.nsec,
        ctime_sec: a.ctime.sec,
        ctime_nsec: a.ctime.nsec,
        parent: a.parent,
    }
}

/// Attributes from the wire, with the inode number; `None` for an unknown type code.
pub fn attr_from_pb(p: &pb::Attr) -> Option<(u64, Attr)> {
    Some((
        p.ino,
        Attr {
            kind: FileType::from_code(p.kind)?,
            mode: p.mode,
            uid: p.uid,
            gid: p.gid,
            rdev: p.rdev,
            nlink: p.nlink,
            size: p.size,
            atime: Timespec { sec: p.atime_sec, nsec: p.atime_nsec },
            mtime: Timespec { sec: p.mtime_sec, nsec: p.mtime_nsec },
            ctime: Timespec { sec: p.ctime_sec, nsec: p.ctime_nsec },
            parent: p.parent,
            volume: 0,
        },
    ))
}

/// A file identity to the wire.
pub fn identity_to_pb(i: &FileIdentity) -> pb::FileIdentity {
    pb::FileIdentity { ino: i.ino, size: i.size, mtime_sec: i.mtime.sec, mtime_nsec: i.mtime.nsec }
}

/// A file identity from the wire.
pub fn identity_from_pb(p: &pb::FileIdentity) -> FileIdentity {
    FileIdentity { ino: p.ino, size: p.size, mtime: Timespec { sec: p.mtime_sec, nsec: p.mtime_nsec } }
}

/// Caller identity to the wire.
pub fn ctx_to_pb(c: &Ctx) -> pb::Caller {
    pb::Caller { uid: c.uid, gid: c.gid, groups: c.groups.clone(), check: c.check, origin: 0 }
}

/// Caller identity from the wire (absent means root without checks only for trusted paths,
/// so callers must always send one; an absent caller is treated as nobody with checks on).
pub fn ctx_from_pb(c: Option<&pb::Caller>) -> Ctx {
    match c {
        Some(c) => Ctx { uid: c.uid, gid: c.gid, groups: c.groups.clone(), check: c.check },
        None => Ctx { uid: 65534, gid: 65534, groups: Vec::new(), check: true },
    }
}

/// A slice to the wire.
pub fn slice_to_pb(s: &Slice) -> pb::Slice {
    pb::Slice { pos: s.pos, id: s.id, size: s.size, off: s.off, len: s.len }
}

/// A slice from the wire.
pub fn slice_from_pb(s: &pb::Slice) -> Slice {
    Slice { pos: s.pos, id: s.id, size: s.size, off: s.off, len: s.len }
}

fn time_to_pb(t: Option<SetTime>) -> (u32, i64, u32) {
    match t {
        None => (0, 0, 0),
        Some(SetTime::Now) => (1, 0, 0),
        Some(SetTime::At(ts)) => (2, ts.sec, ts.nsec),
    }
}

fn time_from_pb(how: u32, sec: i64, nsec: u32) -> Option<SetTime> {
    match how {
        1 => Some(SetTime::Now),
        2 => Some(SetTime::At(Timespec { sec, nsec })),
        _ => None,
    }
}

/// A setattr request to the wire.
pub fn setattr_to_pb(ctx: &Ctx, ino: u64, s: &SetAttr) -> pb::SetAttrReq {
    let (ah, asec, ansec) = time_to_pb(s.atime);
    let (mh, msec, mnsec) = time_to_pb(s.mtime);
    pb::SetAttrReq {
        caller: Some(ctx_to_pb(ctx)),
        ino,
        mode: s.mode,
        uid: s.uid,
        gid: s.gid,
        size: s.size,
        atime_how: ah,
        atime_sec: asec,
        atime_nsec: ansec,
        mtime_how: mh,
        mtime_sec: msec,
        mtime_nsec: mnsec,
    }
}

/// A setattr request from the wire.
pub fn setattr_from_pb(r: &pb::SetAttrReq) -> SetAttr {
    SetAttr {
        mode: r.mode,
        uid: r.uid,
        gid: r.gid,
        size: r.size,
        atime: time_from_pb(r.atime_how, r.atime_sec, r.atime_nsec),
        mtime: time_from_pb(r.mtime_how, r.mtime_sec, r.mtime_nsec),
    }
}

/// Builds `$to` from `$v` field by field: the wire's `VolumeInfo` and `strata-types`'
/// `VolumeInfo` have the same fields, named once here.
macro_rules! volume_fields {
    ($($to:ident)::+, $v:ident) => {
        $($to)::+ {
            id: $v.id,
            name: $v.name,
            root: $v.root,
            class: $v.class,
            capacity: $v.capacity,
            inode_limit: $v.inode_limit,
            block_size: $v.block_size,
            store: $v.store,
            compression: $v.compression,
            reclaim: $v.reclaim,
            scope: $v.scope,
            created_sec: $v.created_sec,
            used_bytes: $v.used_bytes,
            used_inodes: $v.used_inodes,
            qos_bytes_per_sec: $v.qos_bytes_per_sec,
            qos_ops_per_sec: $v.qos_ops_per_sec,
            cache_mem_bytes: $v.cache_mem_bytes,
            readahead_bytes: $v.readahead_bytes,
            access_mode: $v.access_mode,
            read_only: $v.read_only,
            origin_volumes: $v.origin_volumes,
            origin_marks: $v.origin_marks,
            view: $v.view,
        }
    };
}

/// A volume's description from the wire.
pub fn volume_from_pb(v: pb::VolumeInfo) -> VolumeInfo {
    volume_fields!(VolumeInfo, v)
}

/// A volume's description to the wire.
pub fn volume_to_pb(v: VolumeInfo) -> pb::VolumeInfo {
    volume_fields!(pb::VolumeInfo, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setattr_round_trips() {
        let s = SetAttr {
            mode: Some(0o4755),
            uid: None,
            gid: Some(7),
            size: Some(1 << 40),
            atime: Some(SetTime::Now),
            mtime: Some(SetTime::At(Timespec { sec: -5, nsec: 7 })),
        };
        assert_eq!(setattr_from_pb(&setattr_to_pb(&Ctx::root(), 3, &s)), s);
    }

    #[test]
    fn volume_round_trips() {
        let v = VolumeInfo {
            id: 7,
            name: "data".into(),
            root: 9,
            class: "fast".into(),
            capacity: 1 << 30,
            inode_limit: 5,
            block_size: 4 << 20,
            store: "file:///x".into(),
            compression: "lz4".into(),
            reclaim: "retain".into(),
            scope: "dept/proj".into(),
            created_sec: -3,
            used_bytes: 4096,
            used_inodes: 2,
            qos_bytes_per_sec: 10,
            qos_ops_per_sec: 11,
            cache_mem_bytes: 12,
            readahead_bytes: 13,
            access_mode: "ReadWriteMany".into(),
            read_only: true,
            origin_volumes: vec![3, 2],
            origin_marks: vec![100, 50],
            view: "data@s1".into(),
        };
        assert_eq!(volume_from_pb(volume_to_pb(v.clone())), v);
    }
}

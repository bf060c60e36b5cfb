//! Volume ids that name read-only views rather than volumes: a snapshot, `VOLUME@SNAPSHOT`
//! (also the driver's snapshot ids), and a data volume's version, `dv:NAME[@VERSION]`. The
//! node stages them like volumes (the worker is `strata mount VIEW`), always read-only; the
//! controller provisions only `dv:NAME@VERSION` (a data-volume StorageClass) and never deletes
//! or expands a view.

/// Prefix of a data volume's id.
pub const DV_PREFIX: &str = "dv:";

/// A read-only view a volume id names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum View {
    /// A snapshot of a volume.
    Snapshot {
        /// The volume.
        volume: String,
        /// The snapshot's name.
        snapshot: String,
    },
    /// A version of a data volume (None: its latest at mount time).
    Data {
        /// The data volume.
        name: String,
        /// The version.
        version: Option<u32>,
    },
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The view `id` names, if it names one (a plain volume name: None).
pub fn view(id: &str) -> Option<View> {
    if let Some(rest) = id.strip_prefix(DV_PREFIX) {
        let (name, version) = match rest.split_once('@') {
            Some((n, v)) => (n, Some(v.parse::<u32>().ok().filter(|v| *v > 0)?)),
            None => (rest, None),
        };
        return valid_name(name).then(|| View::Data { name: name.to_string(), version });
    }
    let (volume, snapshot) = id.split_once('@')?;
    (valid_name(volume) && valid_name(snapshot))
        .then(|| View::Snapshot { volume: volume.to_string(), snapshot: snapshot.to_string() })
}

/// Whether `id` names a read-only view (it need not be well formed: `dv:` or an `@` is enough
/// for the node to mount it read-only).
pub fn is_view(id: &str) -> bool {
    id.starts_with(DV_PREFIX) || id.contains('@')
}

/// The id of a snapshot.
pub fn snapshot_id(volume: &str, snapshot: &str) -> String {
    format!("{volume}@{snapshot}")
}

/// The id of a data volume's version.
pub fn datavolume_id(name: &str, version: u32) -> String {
    format!("{DV_PREFIX}{name}@{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_of_views() {
        assert_eq!(view("pvc-1"), None);
        assert_eq!(view("vol@snap-1"), Some(View::Snapshot { volume: "vol".into(), snapshot: "snap-1".into() }));
        assert_eq!(view("dv:imagenet"), Some(View::Data { name: "imagenet".into(), version: None }));
        assert_eq!(view("dv:imagenet@2"), Some(View::Data { name: "imagenet".into(), version: Some(2) }));
        for bad in ["dv:", "dv:x@", "dv:x@0", "dv:x@two", "@s", "v@", "v@s@t", "v/x@s", "dv:a b"] {
            assert_eq!(view(bad), None, "{bad}");
        }
        assert!(is_view("dv:x") && is_view("a@b") && !is_view("pvc-1"));
        assert_eq!(view(&snapshot_id("v", "s")), Some(View::Snapshot { volume: "v".into(), snapshot: "s".into() }));
        assert_eq!(view(&datavolume_id("d", 3)), Some(View::Data { name: "d".into(), version: Some(3) }));
    }
}

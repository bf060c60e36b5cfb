//! Export rules: which volume (and directory in it) is exported under which path, to which
//! client addresses, read-only or not, and how callers' ids are squashed.

use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use ipnet::IpNet;
use strata_types::Ctx;

use strata_nfs_wire::UnixCred;

/// The uid and gid squashed callers get unless told otherwise (`nobody`/`nogroup`).
pub const NOBODY: u32 = 65534;

/// How callers' ids are mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Squash {
    /// Every id is taken as sent.
    None,
    /// uid 0 (and gid 0 of such callers) becomes the anonymous ids.
    Root,
    /// Every caller becomes the anonymous ids.
    All,
}

/// One exported volume directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSpec {
    /// The path clients mount, e.g. `/data`.
    pub path: String,
    /// The volume exported.
    pub volume: String,
    /// The directory of the volume exported (`/` for the whole volume).
    pub subpath: String,
    /// Client networks allowed to mount and use the export.
    pub allow: Vec<IpNet>,
    /// Refuse every change with NFS3ERR_ROFS.
    pub read_only: bool,
    /// Id squashing.
    pub squash: Squash,
    /// The uid squashed callers act as.
    pub anon_uid: u32,
    /// The gid squashed callers act as.
    pub anon_gid: u32,
    /// Token file the gateway reaches the server with for this export (else the gateway's).
    pub token_file: Option<PathBuf>,
}

/// A malformed `--export` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad export {spec:?}: {why} (expected PATH=VOLUME[:/DIR][,ro][,allow=CIDR]...[,squash=root|all|none][,anonuid=N][,anongid=N][,token-file=FILE])"
)]
pub struct ExportSpecError {
    spec: String,
    why: String,
}

impl FromStr for ExportSpec {
    type Err = ExportSpecError;

    fn from_str<'a>(spec: &'a str) -> Result<Self, Self::Err> {
        let bad = |why: String| ExportSpecError { spec: spec.to_string(), why };
        let mut parts = spec.split(',');
        let head = parts.next().unwrap_or_default();
        let (path, target) = head.split_once('=').ok_or_else(|| bad("missing '=' between path and volume".into()))?;
        let path =
            normalize(path).ok_or_else(|| bad(format!("export path {path:?} must be absolute, without '..'")))?;
        // A data volume (`dv:NAME[@VERSION]`) has a colon of its own before the directory's.
        let (kind, rest) = match target.strip_prefix("dv:") {
            Some(r) => ("dv:", r),
            None => ("", target),
        };
        let (volume, subpath) = match rest.split_once(':') {
            Some((v, d)) => (
                format!("{kind}{v}"),
                normalize(d).ok_or_else(|| bad(format!("directory {d:?} must be absolute, without '..'")))?,
            ),
            None => (format!("{kind}{rest}"), "/".to_string()),
        };
        let volume = volume.as_str();
        if volume.is_empty() || volume == "dv:" {
            return Err(bad("no volume given".into()));
        }
        let mut e = ExportSpec {
            path,
            volume: volume.to_string(),
            subpath,
            allow: Vec::new(),
            read_only: false,
            squash: Squash::Root,
            anon_uid: NOBODY,
            anon_gid: NOBODY,
            token_file: None,
        };
        for opt in parts {
            let (k, v) = opt.split_once('=').map_or((opt, None), |(k, v)| (k, Some(v)));
            let need = |v: Option<&'a str>| -> Result<&'a str, ExportSpecError> {
                v.ok_or_else(|| bad(format!("option {k} needs a value")))
            };
            match k {
                "ro" => e.read_only = true,
                "rw" => e.read_only = false,
                "allow" => {
                    let v = need(v)?;
                    e.allow.push(parse_net(v).ok_or_else(|| bad(format!("{v:?} is not an address or CIDR network")))?);
                }
                "squash" => {
                    e.squash = match need(v)? {
                        "root" => Squash::Root,
                        "all" => Squash::All,
                        "none" => Squash::None,
                        o => return Err(bad(format!("squash must be root, all or none, not {o:?}"))),
                    }
                }
                "anonuid" => e.anon_uid = need(v)?.parse().map_err(|_| bad("anonuid must be a number".into()))?,
                "anongid" => e.anon_gid = need(v)?.parse().map_err(|_| bad("anongid must be a number".into()))?,
                "token-file" => e.token_file = Some(PathBuf::from(need(v)?)),
                "" => {}
                o => return Err(bad(format!("unknown option {o:?}"))),
            }
        }
        if e.allow.is_empty() {
            // Safe by default: only this host, until the administrator names client networks.
            e.allow = ["127.0.0.0/8", "::1"].iter().filter_map(|s| parse_net(s)).collect();
        }
        Ok(e)
    }
}

fn parse_net(s: &str) -> Option<IpNet> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(n.trunc());
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

/// `/a//b/` → `/a/b`; `None` when not absolute or holding `..`.
pub fn normalize(p: &str) -> Option<String> {
    if !p.starts_with('/') {
        return None;
    }
    let mut out = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => out.push(c),
        }
    }
    Some(format!("/{}", out.join("/")))
}

impl ExportSpec {
    /// Whether a client at `addr` may use this export.
    pub fn allows(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        self.allow.iter().any(|n| n.contains(&addr))
    }

    /// The identity a caller acts as, after squashing; permission checks are on.
    pub fn ctx(&self, cred: Option<&UnixCred>) -> Ctx {
        let anon = Ctx { uid: self.anon_uid, gid: self.anon_gid, groups: Vec::new(), check: true };
        let Some(c) = cred else { return anon };
        match self.squash {
            Squash::All => anon,
            Squash::Root if c.uid == 0 => anon,
            Squash::Root => Ctx {
                uid: c.uid,
                gid: c.gid,
                groups: c.gids.iter().copied().filter(|&g| g != 0).collect(),
                check: true,
            },
            Squash::None => Ctx { uid: c.uid, gid: c.gid, groups: c.gids.clone(), check: true },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_views() {
        let e: ExportSpec = "/ds=dv:imagenet@2:/train,ro".parse().expect("data volume");
        assert_eq!((e.volume.as_str(), e.subpath.as_str()), ("dv:imagenet@2", "/train"));
        let e: ExportSpec = "/s=ml@nightly".parse().expect("snapshot");
        assert_eq!((e.volume.as_str(), e.subpath.as_str()), ("ml@nightly", "/"));
        assert!("/x=dv:".parse::<ExportSpec>().is_err());
    }

    #[test]
    fn parses_full_specs() {
        let e: ExportSpec =
            "/data=ml:/train/,ro,allow=10.0.0.0/8,allow=192.168.1.7,squash=all,anonuid=7,anongid=8".parse().unwrap();
        assert_eq!(e.path, "/data");
        assert_eq!(e.volume, "ml");
        assert_eq!(e.subpath, "/train");
        assert!(e.read_only);
        assert_eq!(e.squash, Squash::All);
        assert_eq!((e.anon_uid, e.anon_gid), (7, 8));
        assert!(e.allows("10.1.2.3".parse().unwrap()));
        assert!(e.allows("192.168.1.7".parse().unwrap()));
        assert!(e.allows("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!e.allows("192.168.1.8".parse().unwrap()));
        assert!(!e.allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn defaults_are_loopback_and_root_squash() {
        let e: ExportSpec = "/v=vol".parse().unwrap();
        assert_eq!(e.subpath, "/");
        assert!(!e.read_only);
        assert_eq!(e.squash, Squash::Root);
        assert!(e.allows("127.0.0.1".parse().unwrap()));
        assert!(e.allows("::1".parse().unwrap()));
        assert!(!e.allows("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn refuses_bad_specs() {
        for s in
            ["data=v", "/d", "/d=", "/d=v:rel", "/d=v,allow=300.1.1.1", "/d=v,squash=some", "/d=v,bogus", "/../x=v"]
        {
            assert!(s.parse::<ExportSpec>().is_err(), "{s}");
        }
    }

    #[test]
    fn squashing() {
        let root = UnixCred { uid: 0, gid: 0, gids: vec![0, 5] };
        let user = UnixCred { uid: 1000, gid: 100, gids: vec![0, 5] };
        let mut e: ExportSpec = "/v=vol".parse().unwrap();
        assert_eq!(e.ctx(Some(&root)).uid, NOBODY);
        assert_eq!(e.ctx(Some(&user)).uid, 1000);
        assert_eq!(e.ctx(Some(&user)).groups, vec![5]);
        assert_eq!(e.ctx(None).uid, NOBODY);
        e.squash = Squash::None;
        assert_eq!(e.ctx(Some(&root)).uid, 0);
        e.squash = Squash::All;
        assert_eq!(e.ctx(Some(&user)).uid, NOBODY);
    }
}

//! The servers using this metadata store: each writes a record (`I address`) when it starts
//! and again every few seconds, so `strata status` lists the servers of a shared database and
//! tells the live ones from those gone quiet. Records are not namespace data: they go straight
//! to the engine (no snapshot versions) and a dump may leave them out.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::kv::prefix_end;
use crate::meta::Meta;
use crate::types::Timespec;

/// How old a server's last report may be for it to count as alive when destruction asks
/// whether every open is known ([`Meta::opens_accounted`]); servers report every 5 s.
pub const SERVER_FRESH: std::time::Duration = std::time::Duration::from_secs(8);

/// Tag of server records.
const PREFIX: &[u8] = b"I";

fn key(addr: &str) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(addr.as_bytes());
    k
}

/// What a server says of itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ServerRecord {
    /// Its listen address (how clients reach it).
    pub addr: String,
    /// Its version.
    pub version: String,
    /// When it started.
    pub started: Timespec,
    /// Its last report.
    pub last_seen: Timespec,
}

impl Meta {
    /// Records (or refreshes) the record of server `addr`.
    pub fn report_server(&self, addr: &str, version: &str, started: Timespec) -> Result<()> {
        let rec = ServerRecord {
            addr: addr.to_string(),
            version: version.to_string(),
            started,
            last_seen: crate::txn::now(),
        };
        let v = serde_json::to_vec(&rec).map_err(|e| crate::error::MetaError::Corrupt(e.to_string()))?;
        let k = key(addr);
        self.kv.write(false, &mut |t| t.put(&k, &v))
    }

    /// Every server record, by address.
    pub fn servers(&self) -> Result<Vec<ServerRecord>> {
        let mut out = Vec::new();
        self.kv.read(&mut |t| {
            out = t
                .scan(PREFIX, &prefix_end(PREFIX), 10_000)?
                .into_iter()
                .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
                .collect();
            Ok(())
        })?;
        Ok(out)
    }

    /// With unrecorded opens (`open.rs`): whether every session's opens are known to a live
    /// server, so that destruction may trust the records and the servers' doom notes. A
    /// session is not accounted for while the server it last named has no report within
    /// [`SERVER_FRESH`] (it died, or stopped), or started after the session was last heard
    /// through it (it restarted): its unrecorded opens went with that server, until the
    /// client announces them to a server (its next call) or the session expires.
    pub fn opens_accounted(&self) -> Result<bool> {
        let servers = self.servers()?;
        let now = Timespec::now();
        let fresh = |t: Timespec| {
            let age =
                (i128::from(now.sec) - i128::from(t.sec)) * 1_000_000_000 + i128::from(now.nsec) - i128::from(t.nsec);
            age <= SERVER_FRESH.as_nanos() as i128
        };
        for s in self.sessions()? {
            let Some(r) = servers.iter().find(|r| r.addr == s.server) else { return Ok(false) };
            if !fresh(r.last_seen) || s.last_seen < r.started {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Forgets server `addr` (it stopped cleanly).
    pub fn forget_server(&self, addr: &str) -> Result<()> {
        let k = key(addr);
        self.kv.write(false, &mut |t| t.delete(&k))
    }
}

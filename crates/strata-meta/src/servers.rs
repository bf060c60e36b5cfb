//! The servers using this metadata store: each writes a record (`I address`) when it starts
//! and again every few seconds, so `strata status` lists the servers of a shared database and
//! tells the live ones from those gone quiet. Records are not namespace data: they go straight
//! to the engine (no snapshot versions) and a dump may leave them out.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::kv::prefix_end;
use crate::meta::Meta;
use crate::types::Timespec;

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

    /// Forgets server `addr` (it stopped cleanly).
    pub fn forget_server(&self, addr: &str) -> Result<()> {
        let k = key(addr);
        self.kv.write(false, &mut |t| t.delete(&k))
    }
}
